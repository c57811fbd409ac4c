"""A local PostgreSQL cluster holding a small core-banking database, for change data capture.

``fraudstream postgres start`` creates the cluster on first use (Debian's ``initdb``
from ``/usr/lib/postgresql/<version>/bin``), starts it in the background on 127.0.0.1
with ``wal_level=logical`` so Debezium can read its commit log, and creates the
``bank`` database: ``cards``, ``merchants`` and ``card_payments``, two login roles
(``bank_app`` books payments, ``cdc_reader`` replicates them) and a publication of
the inserts into ``card_payments``. ``stop`` stops only the cluster in its folder.

Everything lives under one folder (``var/postgres`` by default): ``data/`` (the
cluster, owned by the user that runs the server), ``logs/postgres.log`` and the
server's socket. PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` system user of Debian's package (``runuser -u postgres``).

Authentication is ``trust`` on 127.0.0.1, as the local Kafka broker has none: this is
a development cluster that listens only on the loopback interface.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fraudstream import config
from fraudstream.errors import FraudstreamError
from fraudstream.ops.process import log_tail, recorded_pid, require_free_ports

#: The system user that runs the server when we are root (Debian's package creates it).
SERVER_USER = "postgres"
#: Superuser created by ``initdb``, whatever system user runs the server.
SUPERUSER = "postgres"
#: Role the payments application books with, and role Debezium replicates with.
APP_ROLE = "bank_app"
CDC_ROLE = "cdc_reader"
#: Publication of the inserts into ``card_payments``: what Debezium captures.
PUBLICATION = "fraudstream_payments"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

#: Where Debian installs each major version's server programs.
DEBIAN_LIB_DIR = Path("/usr/lib/postgresql")

#: The core-banking schema. Cards are tokens issued by the card vault, never card
#: numbers. A payment carries, as booked, every field of the payment contract
#: (``fraudstream.schemas``) except ``schema_version``, in the contract's order, so
#: that its captured row maps onto the contract without renaming: ``event_time``
#: keeps milliseconds, the contract's precision. ``booked_at`` is the bank's own.
BANK_SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS cards (
    card_id     text PRIMARY KEY,
    customer_id text
);
CREATE TABLE IF NOT EXISTS merchants (
    merchant_id       text PRIMARY KEY,
    merchant_category text
);
CREATE TABLE IF NOT EXISTS card_payments (
    transaction_id    text PRIMARY KEY,
    event_time        timestamptz(3) NOT NULL,
    card_id           text NOT NULL REFERENCES cards,
    customer_id       text,
    merchant_id       text NOT NULL REFERENCES merchants,
    merchant_category text,
    amount            numeric(12, 2) NOT NULL CHECK (amount > 0),
    currency          text,
    channel           text CHECK (channel IN ('pos', 'ecom', 'atm')),
    lat               double precision CHECK (lat BETWEEN -90 AND 90),
    lon               double precision CHECK (lon BETWEEN -180 AND 180),
    country           text,
    -- The ledger's own bookkeeping, not part of the payment contract: not published.
    booked_at         timestamptz(3) NOT NULL DEFAULT now()
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CDC_ROLE}') THEN
        CREATE ROLE {CDC_ROLE} LOGIN REPLICATION;
    END IF;
    -- Only inserts: a booked card payment is a fact; a correction in the bank's
    -- tables is not a new payment on the stream.
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN
        CREATE PUBLICATION {PUBLICATION} FOR TABLE card_payments WITH (publish = 'insert');
    END IF;
END $$;
GRANT SELECT, INSERT ON cards, merchants, card_payments TO {APP_ROLE};
GRANT SELECT ON card_payments TO {CDC_ROLE};
"""


class PostgresError(FraudstreamError):
    """A PostgreSQL command could not do what was asked; the message is one sentence."""


@dataclass(frozen=True)
class LocalPostgres:
    """Where a local PostgreSQL cluster lives and listens.

    Parameters
    ----------
    home : Path
        Folder for the cluster's data, its log and its socket.
    port : int
        Port on 127.0.0.1 (not PostgreSQL's default 5432, which a system cluster may hold).
    database : str
        The core-banking database created by ``start``.
    """

    home: Path = config.VAR_DIR / "postgres"
    port: int = 5433
    database: str = "bank"
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (``initdb``'s ``-D``)."""
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.home / "logs" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's Unix socket, inside ``home``."""
        return self.home / "run"

    def conninfo(self, user: str = APP_ROLE, database: str | None = None) -> str:
        """Return a libpq connection string for ``user`` on this cluster."""
        return (
            f"host={self.host} port={self.port} dbname={database or self.database} "
            f"user={user} connect_timeout=5"
        )


def bin_dir() -> Path:
    """Return the folder of the newest installed PostgreSQL's server programs.

    Raises
    ------
    PostgresError
        If no ``initdb`` is installed, with a sentence that says how to install it.
    """
    versions = sorted(
        (path.parent for path in DEBIAN_LIB_DIR.glob("*/bin/initdb")),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    if versions:
        return versions[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresError(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH): "
        "run scripts/setup.sh as root, or apt-get install postgresql."
    )


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; an unprivileged user runs it unchanged.
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVER_USER, "--", *command]


def _give_to_server_user(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresError(
            f"There is no '{SERVER_USER}' system user to run PostgreSQL as (it refuses to "
            "run as root): install Debian's postgresql package or run as another user."
        ) from None
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def _init_cluster(postgres: LocalPostgres, programs: Path) -> None:
    if (postgres.data_dir / "PG_VERSION").exists():
        return
    for folder in (postgres.home, postgres.data_dir, postgres.log_file.parent, postgres.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
    # The server user must reach its folders through ours: a checkout under a private
    # home folder cannot hold a cluster run as another user.
    postgres.home.chmod(0o755)
    _give_to_server_user(postgres.data_dir, postgres.log_file.parent, postgres.socket_dir)
    postgres.data_dir.chmod(0o700)
    reachable = subprocess.run(_as_server_user(["test", "-w", str(postgres.data_dir)]))
    if reachable.returncode != 0:
        shutil.rmtree(postgres.data_dir, ignore_errors=True)
        raise PostgresError(
            f"The {SERVER_USER} user cannot reach {postgres.data_dir} (a folder above it is "
            "private): choose a --home it can reach, e.g. under /tmp or /srv."
        )
    result = subprocess.run(
        _as_server_user(
            [
                str(programs / "initdb"),
                "-D",
                str(postgres.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        shutil.rmtree(postgres.data_dir, ignore_errors=True)
        raise PostgresError(f"initdb failed for {postgres.data_dir}: {detail}")
    # Settings that belong to the cluster, not to one start: logical decoding for CDC.
    with open(postgres.data_dir / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# fraudstream: a local cluster for change data capture\n"
            "wal_level = logical\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            "timezone = 'UTC'\n"
        )


def running_pid(postgres: LocalPostgres) -> int | None:
    """Return the PID of the server running on this cluster's data folder, if any."""
    # A stale postmaster.pid may name a recycled PID: never take it for our server.
    return recorded_pid(postgres.data_dir / "postmaster.pid", "postgres", str(postgres.data_dir))


def start(postgres: LocalPostgres) -> tuple[int, bool]:
    """Create the cluster if needed, start it unless it runs, and create the bank database.

    Returns
    -------
    (int, bool)
        The server's PID, and whether this call started it.

    Raises
    ------
    PostgresError
        If PostgreSQL is not installed, the port is taken by another program, or the
        server does not come up.
    """
    pid = running_pid(postgres)
    started = False
    if pid is None:
        require_free_ports(
            postgres.host,
            [postgres.port],
            "stop it or choose another port with --port.",
            PostgresError,
        )
        programs = bin_dir()
        _init_cluster(postgres, programs)
        options = f"-c listen_addresses={postgres.host} -p {postgres.port} -k {postgres.socket_dir}"
        result = subprocess.run(
            _as_server_user(
                [
                    str(programs / "pg_ctl"),
                    "start",
                    "-D",
                    str(postgres.data_dir),
                    "-l",
                    str(postgres.log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                ]
            ),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        pid = running_pid(postgres)
        if result.returncode != 0 or pid is None:
            raise PostgresError(
                f"PostgreSQL did not start on {postgres.host}:{postgres.port}; last lines of "
                f"{postgres.log_file}:\n{log_tail(postgres.log_file)}"
            )
        started = True
    create_bank_database(postgres)
    return pid, started


def create_bank_database(postgres: LocalPostgres) -> None:
    """Create the bank database, its tables, roles and publication, where missing."""
    import psycopg

    with psycopg.connect(
        postgres.conninfo(SUPERUSER, database="postgres"), autocommit=True
    ) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (postgres.database,)
        ).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{postgres.database}"')
    with psycopg.connect(postgres.conninfo(SUPERUSER)) as bank:
        bank.execute(BANK_SCHEMA_SQL)


def stop(postgres: LocalPostgres, mode: str = "fast") -> int | None:
    """Stop the server running on this cluster's data folder; return its PID, or None.

    Parameters
    ----------
    postgres : LocalPostgres
        The cluster.
    mode : str
        ``pg_ctl``'s shutdown mode. "fast" rolls back open transactions and stops now,
        after a checkpoint: committed work is on disk. "immediate" skips the checkpoint
        (a few seconds), for a cluster deleted right after; its next start would recover.
    """
    pid = running_pid(postgres)
    if pid is None:
        return None
    result = subprocess.run(
        _as_server_user(
            [
                str(bin_dir() / "pg_ctl"),
                "stop",
                "-D",
                str(postgres.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise PostgresError(
            f"PostgreSQL (pid {pid}) did not stop within {STOP_TIMEOUT_S} s: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running_pid(postgres) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid
