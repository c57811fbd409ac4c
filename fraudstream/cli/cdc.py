"""The ``fraudstream`` subcommands of change data capture from the bank database.

Wired into ``fraudstream`` by :func:`add_commands`; the logic lives in
``fraudstream.ops.postgres``, ``fraudstream.data.bank`` and ``fraudstream.ops.connect``::

    fraudstream postgres start|stop|status [--port 5433]
    fraudstream bank book [--limit N] [--data DIR] [--rollback]
    fraudstream connect start|stop|status [--topic payments] [--rest-port 8083]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fraudstream import config
from fraudstream.kafka import clients, propfile
from fraudstream.ops import connect as local_connect
from fraudstream.ops import postgres as local_postgres

#: The errors whose message ``fraudstream`` prints as one sentence, with exit code 2.
ERRORS = (local_postgres.PostgresError, local_connect.ConnectError)


def _postgres_from(args: argparse.Namespace) -> local_postgres.LocalPostgres:
    return local_postgres.LocalPostgres(home=Path(args.home), port=args.port)


def _postgres_start(args: argparse.Namespace) -> int:
    postgres = _postgres_from(args)
    pid, started = local_postgres.start(postgres)
    verb = "started" if started else "already running"
    print(
        f"PostgreSQL {verb} on {postgres.host}:{postgres.port} (pid {pid}, home {postgres.home}); "
        f"database {postgres.database} ready."
    )
    return 0


def _postgres_stop(args: argparse.Namespace) -> int:
    postgres = _postgres_from(args)
    pid = local_postgres.stop(postgres)
    if pid is None:
        print(f"No PostgreSQL of {postgres.home} is running.")
    else:
        print(f"PostgreSQL stopped (pid {pid}).")
    return 0


def _postgres_status(args: argparse.Namespace) -> int:
    postgres = _postgres_from(args)
    pid = local_postgres.running_pid(postgres)
    if pid is None:
        print(f"No PostgreSQL of {postgres.home} is running.")
        return 1
    print(f"PostgreSQL running on {postgres.host}:{postgres.port} (pid {pid}).")
    return 0


def _bank_book(args: argparse.Namespace) -> int:
    import psycopg

    from fraudstream.data import bank

    postgres = local_postgres.LocalPostgres(port=args.port)
    if args.data and not (Path(args.data) / "events").is_dir():
        raise local_postgres.PostgresError(f"No events folder at {Path(args.data) / 'events'}.")
    if not local_postgres.port_in_use(postgres.host, postgres.port):
        raise local_postgres.PostgresError(
            f"No PostgreSQL answers on {postgres.host}:{postgres.port}: "
            "run fraudstream postgres start first."
        )
    if args.data:
        # The next payments of the folder: a second run continues after the first.
        payments = bank.unbooked(postgres, bank.payments_from_parquet(Path(args.data)))
        payments = payments[: args.limit]
    else:
        payments = bank.generate_payments(args.limit, seed=args.seed)
    booked = 0
    try:
        for first in range(0, len(payments), args.batch_size):
            batch = payments[first : first + args.batch_size]
            booked += bank.book_payments(postgres, batch, commit=not args.rollback)
    except psycopg.IntegrityError as error:
        reason = str(error).splitlines()[0]
        raise local_postgres.PostgresError(
            f"The bank database refused a payment after {booked:,} were booked ({reason})."
        ) from None
    verb = "Rolled back" if args.rollback else "Booked"
    print(f"{verb} {len(payments):,} payments ({booked:,} committed) in {postgres.database}.")
    return 0


def _connect_from(args: argparse.Namespace) -> local_connect.LocalConnect:
    return local_connect.LocalConnect(
        home=Path(args.home),
        rest_port=args.rest_port,
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        topic=args.topic,
        postgres=local_postgres.LocalPostgres(port=args.postgres_port),
    )


def _connect_start(args: argparse.Namespace) -> int:

    connect = _connect_from(args)
    clients.require_topics(connect.bootstrap_servers, [connect.topic])
    pid, started = local_connect.start(connect)
    verb = "started" if started else "already running"
    print(
        f"Kafka Connect {verb} (pid {pid}, REST {connect.rest_url}): {connect.postgres.database} "
        f"card_payments -> {connect.topic} on {connect.bootstrap_servers}."
    )
    return 0


def _connect_stop(args: argparse.Namespace) -> int:
    connect = _connect_from(args)
    pid = local_connect.stop(connect)
    if pid is None:
        print(f"No Kafka Connect started from {connect.home} is running.")
    else:
        print(f"Kafka Connect stopped (pid {pid}).")
    return 0


def _connect_status(args: argparse.Namespace) -> int:
    connect = _connect_from(args)
    pid = local_connect.running_pid(connect)
    if pid is None:
        print(f"No Kafka Connect started from {connect.home} is running.")
        return 1
    status = local_connect.connector_status(connect) or {}
    tasks = ", ".join(task["state"] for task in status.get("tasks", [])) or "none"
    state = status.get("connector", {}).get("state", "not answering")
    print(f"Kafka Connect running (pid {pid}); {connect.connector_name}: {state}, tasks: {tasks}.")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``postgres``, ``bank`` and ``connect`` to the ``fraudstream`` command's subcommands."""
    pg = commands.add_parser("postgres", help="start, stop or inspect the local bank database")
    pg_actions = pg.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in [
        ("start", _postgres_start, "start PostgreSQL (if needed) and create the bank database"),
        ("stop", _postgres_stop, "stop the PostgreSQL that start started"),
        ("status", _postgres_status, "say whether PostgreSQL runs"),
    ]:
        action = pg_actions.add_parser(name, help=text, description=text)
        action.set_defaults(handler=handler)
        action.add_argument(
            "--home",
            default=str(config.VAR_DIR / "postgres"),
            help="folder for the cluster's data and log (default: %(default)s)",
        )
        action.add_argument("--port", type=int, default=5433, help="port (default: 5433)")

    bank = commands.add_parser("bank", help="the payments application of the bank database")
    bank_actions = bank.add_subparsers(dest="action", required=True, metavar="ACTION")
    book = bank_actions.add_parser(
        "book",
        help="book card payments in the bank database",
        description="Insert card payments into the bank database, in transactions of "
        "--batch-size payments: generated ones, or the next --limit of a Parquet folder "
        "(oldest first, skipping those already booked).",
    )
    book.set_defaults(handler=_bank_book)
    book.add_argument("--limit", type=int, default=100, help="how many payments (default: 100)")
    book.add_argument("--data", help="folder with events/ to book (default: generated payments)")
    book.add_argument("--seed", type=int, help="seed of generated payments (default: fresh)")
    book.add_argument("--batch-size", type=int, default=10, help="payments per transaction")
    book.add_argument("--rollback", action="store_true", help="roll each transaction back")
    book.add_argument("--port", type=int, default=5433, help="PostgreSQL port (default: 5433)")

    connect = commands.add_parser(
        "connect", help="start, stop or inspect Kafka Connect capturing the bank's payments"
    )
    connect_actions = connect.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in [
        ("start", _connect_start, "start Kafka Connect with Debezium (if needed)"),
        ("stop", _connect_stop, "stop the Kafka Connect that start started"),
        ("status", _connect_status, "say whether Kafka Connect and its connector run"),
    ]:
        action = connect_actions.add_parser(name, help=text, description=text)
        action.set_defaults(handler=handler)
        action.add_argument(
            "--home",
            default=str(config.VAR_DIR / "connect"),
            help="folder for config, offsets, log and PID (default: %(default)s)",
        )
        action.add_argument("--rest-port", type=int, default=8083, help="REST port (default: 8083)")
        action.add_argument(
            "--brokers",
            help="bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
        )
        action.add_argument("--topic", default=config.TOPIC_PAYMENTS, help="payments topic")
        propfile.add_properties_option(action)
        action.add_argument(
            "--postgres-port", type=int, default=5433, help="bank database port (default: 5433)"
        )
