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
from fraudstream.cli import options
from fraudstream.cli.services import Service, add_home, add_service, from_flags
from fraudstream.ops import connect as local_connect
from fraudstream.ops import postgres as local_postgres
from fraudstream.ops.process import port_in_use

_postgres_from = from_flags(local_postgres.LocalPostgres)


POSTGRES = Service(
    title="PostgreSQL",
    settings=_postgres_from,
    start=local_postgres.start,
    stop=local_postgres.stop,
    running_pid=local_postgres.running_pid,
    address=lambda postgres: f"{postgres.host}:{postgres.port}",
    after_start=lambda postgres, _: print(f"Database {postgres.database} ready."),
)


def _bank_book(args: argparse.Namespace) -> int:
    import psycopg

    from fraudstream.data import bank

    postgres = local_postgres.LocalPostgres(port=args.port)
    if args.data and not (Path(args.data) / "events").is_dir():
        raise local_postgres.PostgresError(f"No events folder at {Path(args.data) / 'events'}.")
    if not port_in_use(postgres.host, postgres.port):
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


def _connector_status(connect: local_connect.LocalConnect) -> None:
    status = local_connect.connector_status(connect) or {}
    tasks = ", ".join(task["state"] for task in status.get("tasks", [])) or "none"
    state = status.get("connector", {}).get("state", "not answering")
    print(f"{connect.connector_name}: {state}, tasks: {tasks}.")


CONNECT = Service(
    title="Kafka Connect",
    settings=_connect_from,
    start=local_connect.start,
    stop=local_connect.stop,
    running_pid=local_connect.running_pid,
    address=lambda connect: f"REST {connect.rest_url}",
    after_start=lambda connect, _: print(
        f"{connect.postgres.database} card_payments -> {connect.topic} "
        f"on {connect.bootstrap_servers}."
    ),
    details=_connector_status,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``postgres``, ``bank`` and ``connect`` to the ``fraudstream`` command's subcommands."""

    def postgres_options(action: argparse.ArgumentParser, _: str) -> None:
        add_home(action, str(config.VAR_DIR / "postgres"), "the cluster's data and log")
        action.add_argument("--port", type=int, default=5433, help="port (default: 5433)")

    add_service(
        commands,
        "postgres",
        "start, stop or inspect the local bank database",
        POSTGRES,
        (
            "start PostgreSQL (if needed) and create the bank database",
            "stop the PostgreSQL that start started",
            "say whether PostgreSQL runs",
        ),
        postgres_options,
    )

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

    def connect_options(action: argparse.ArgumentParser, _: str) -> None:
        add_home(action, str(config.VAR_DIR / "connect"), "config, offsets, log and PID")
        action.add_argument("--rest-port", type=int, default=8083, help="REST port (default: 8083)")
        options.add_kafka(action, "payments", flag="--topic")
        action.add_argument(
            "--postgres-port", type=int, default=5433, help="bank database port (default: 5433)"
        )

    add_service(
        commands,
        "connect",
        "start, stop or inspect Kafka Connect capturing the bank's payments",
        CONNECT,
        (
            "start Kafka Connect with Debezium (if needed)",
            "stop the Kafka Connect that start started",
            "say whether Kafka Connect and its connector run",
        ),
        connect_options,
    )
