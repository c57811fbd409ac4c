"""Change data capture from the bank database: real PostgreSQL, real Kafka Connect, real broker.

The module starts its own PostgreSQL cluster (in a temporary folder, on a free port)
and stops it at the end; each test books into a database of its own and captures
into a fresh topic, so tests never see each other's payments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka.partitioner.default import murmur2

from fraudstream import schemas
from fraudstream.cli import main as cli
from fraudstream.data import bank
from fraudstream.ops import connect as local_connect
from fraudstream.ops import postgres as local_postgres
from fraudstream.ops import process

from .helpers import busy_port, free_port

#: How long to wait for the expected payments, and then for any unexpected extra one.
DELIVERY_TIMEOUT_S = 30.0
QUIET_PERIOD_S = 3.0


@pytest.fixture(scope="module")
def postgres_cluster():
    """A PostgreSQL cluster of this module's own, stopped and deleted at the end."""
    # Not pytest's tmp_path: its folders are private to us, and as root the server runs
    # as the postgres user, which must reach the cluster's folder.
    home = Path(tempfile.mkdtemp(prefix="fraudstream-pg-"))
    cluster = local_postgres.LocalPostgres(home=home, port=free_port())
    started_at = time.monotonic()
    local_postgres.start(cluster)
    print(f"PostgreSQL started in {time.monotonic() - started_at:.1f} s")
    yield cluster
    local_postgres.stop(cluster, mode="immediate")
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture()
def bank_db(postgres_cluster):
    """A fresh bank database (tables, roles, publication) on the module's cluster."""
    database = local_postgres.LocalPostgres(
        home=postgres_cluster.home,
        port=postgres_cluster.port,
        database=f"bank_{uuid.uuid4().hex[:8]}",
    )
    local_postgres.create_bank_database(database)
    return database


@pytest.fixture()
def capture(bank_db, kafka_bootstrap, fresh_topic, tmp_path):
    """A Connect worker capturing ``bank_db`` into ``fresh_topic``; stopped after the test."""
    worker = local_connect.LocalConnect(
        home=tmp_path / "connect",
        rest_port=free_port(),
        bootstrap_servers=kafka_bootstrap,
        topic=fresh_topic,
        postgres=bank_db,
        connector_name=f"test_{uuid.uuid4().hex[:8]}",
    )
    yield worker
    local_connect.stop(worker)


def _consume(bootstrap: str, topic: str, expected: int) -> tuple[list, int]:
    """Read ``topic`` from the start until ``expected`` records and a quiet period.

    Returns the records and the topic's partition count.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    records = []
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            records.extend(consumer)
            if len(records) >= expected and quiet_until is None:
                quiet_until = time.monotonic() + QUIET_PERIOD_S
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
        partitions = len(consumer.partitions_for_topic(topic))
    finally:
        consumer.close()
    return records, partitions


def _started(worker) -> float:
    started_at = time.monotonic()
    local_connect.start(worker)
    seconds = time.monotonic() - started_at
    print(f"Kafka Connect streaming after {seconds:.1f} s")
    return seconds


def test_connect_delivers_each_committed_payment_once_across_a_restart(capture, bank_db):
    import psycopg

    payments = bank.generate_payments(22, seed=6, start=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    # Edge cases of the mapping: a whole second (".000Z"), a whole amount, no coordinates.
    payments[0]["event_time"] = payments[0]["event_time"].replace(microsecond=0)
    payments[1]["amount"] = 10.0
    payments[2]["lat"] = payments[2]["lon"] = None
    committed, rolled_back = payments[:18], payments[18:]

    # Booked before the connector's first start: read by its initial snapshot.
    bank.book_payments(bank_db, committed[0:3])
    _started(capture)
    bank.book_payments(bank_db, committed[3:6])
    assert bank.book_payments(bank_db, rolled_back, commit=False) == 0
    bank.book_payments(bank_db, committed[6:10])
    local_connect.stop(capture)
    bank.book_payments(bank_db, committed[10:15])
    _started(capture)
    bank.book_payments(bank_db, committed[15:18])
    # A correction in the bank's table is not a new payment: it must not be published.
    with psycopg.connect(bank_db.conninfo(local_postgres.SUPERUSER)) as connection:
        connection.execute(
            "UPDATE card_payments SET amount = amount + 1 WHERE transaction_id = %s",
            (committed[4]["transaction_id"],),
        )

    records, partitions = _consume(capture.bootstrap_servers, capture.topic, len(committed))

    published = [record.value for record in records]
    assert sorted(json.loads(value)["transaction_id"] for value in published) == sorted(
        payment["transaction_id"] for payment in committed
    ), "each committed payment exactly once, no rolled-back one"
    expected_by_id = {payment["transaction_id"]: payment for payment in committed}
    for record in records:
        event = schemas.decode_payment(record.value)
        assert record.key == event["card_id"].encode("utf-8")
        # The partition the project's Python producers pick for the card (Java's murmur2):
        # a card's payments from the bank and from a replay share one partition.
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
        # The whole value, field for field and type for type, as the contract encodes it.
        assert json.loads(record.value) == json.loads(
            schemas.encode_payment(expected_by_id[event["transaction_id"]])
        )
    commit_order = [payment["transaction_id"] for payment in committed]
    by_partition = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[record.partition].append(json.loads(record.value)["transaction_id"])
    for partition, ids in by_partition.items():
        assert ids == [tid for tid in commit_order if tid in set(ids)], (
            f"partition {partition} out of commit order"
        )


def test_book_payments_rolled_back_leaves_no_row(bank_db):
    import psycopg

    payments = bank.generate_payments(3, seed=7)
    assert bank.book_payments(bank_db, payments, commit=False) == 0
    assert bank.book_payments(bank_db, payments[:2]) == 2
    with psycopg.connect(bank_db.conninfo()) as connection:
        booked = connection.execute(
            "SELECT transaction_id FROM card_payments ORDER BY transaction_id"
        ).fetchall()
    assert [row[0] for row in booked] == sorted(p["transaction_id"] for p in payments[:2])


def test_unbooked_skips_the_payments_already_booked(bank_db):
    payments = bank.generate_payments(5, seed=8)
    bank.book_payments(bank_db, [payments[1], payments[3]])
    assert bank.unbooked(bank_db, payments) == [payments[0], payments[2], payments[4]]


def _one_sentence_exit(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_postgres_start_busy_port_exits_with_one_sentence(tmp_path, capsys):
    with busy_port() as port:
        err = _one_sentence_exit(
            ["postgres", "start", "--home", str(tmp_path / "pg"), "--port", str(port)], capsys
        )
    assert f"Port {port} on 127.0.0.1 is already in use" in err
    assert not (tmp_path / "pg").exists()


def test_postgres_start_without_install_exits_with_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local_postgres, "DEBIAN_LIB_DIR", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    err = _one_sentence_exit(
        ["postgres", "start", "--home", str(tmp_path / "pg"), "--port", str(free_port())],
        capsys,
    )
    assert "PostgreSQL is not installed" in err


def test_connect_start_busy_rest_port_exits_with_one_sentence(
    postgres_cluster, kafka_bootstrap, fresh_topic, tmp_path, capsys
):
    with busy_port() as port:
        err = _one_sentence_exit(
            [
                "connect",
                "start",
                "--home",
                str(tmp_path / "connect"),
                "--rest-port",
                str(port),
                "--brokers",
                kafka_bootstrap,
                "--topic",
                fresh_topic,
                "--postgres-port",
                str(postgres_cluster.port),
            ],
            capsys,
        )
    assert f"Port {port} on 127.0.0.1 is already in use" in err


def test_postgres_start_twice_is_harmless_and_stop_stops_only_its_own(capsys):
    home = Path(tempfile.mkdtemp(prefix="fraudstream-pg-"))
    args = ["--home", str(home), "--port", str(free_port())]
    try:
        assert cli.main(["postgres", "start", *args]) == 0
        pid = local_postgres.running_pid(local_postgres.LocalPostgres(home=home))
        assert "PostgreSQL started on 127.0.0.1:" in capsys.readouterr().out
        assert cli.main(["postgres", "start", *args]) == 0
        assert f"already running on 127.0.0.1:{args[-1]} (pid {pid}," in capsys.readouterr().out
        assert cli.main(["postgres", "status", *args]) == 0
    finally:
        assert cli.main(["postgres", "stop", *args]) == 0
        shutil.rmtree(home, ignore_errors=True)
    assert capsys.readouterr().out.splitlines()[-1] == f"PostgreSQL stopped (pid {pid})."
    assert not process.port_in_use("127.0.0.1", int(args[-1]))
    assert cli.main(["postgres", "status", *args]) == 1


def test_stop_ignores_pid_files_of_another_program(tmp_path, capsys):
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "connect").mkdir()
        (tmp_path / "connect" / "connect.pid").write_text(f"{other.pid}\n")
        (tmp_path / "pg" / "data").mkdir(parents=True)
        (tmp_path / "pg" / "data" / "postmaster.pid").write_text(f"{other.pid}\n")
        assert cli.main(["connect", "stop", "--home", str(tmp_path / "connect")]) == 0
        assert cli.main(["postgres", "stop", "--home", str(tmp_path / "pg")]) == 0
        out = capsys.readouterr().out
        assert "No Kafka Connect started from" in out
        assert "No PostgreSQL started from" in out
        assert other.poll() is None, "stop signalled a process that is not its server"
    finally:
        other.kill()
