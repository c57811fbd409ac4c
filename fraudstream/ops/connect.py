"""Kafka Connect (standalone) with Debezium's PostgreSQL connector: the bank's payments to Kafka.

``fraudstream connect start`` writes a worker configuration and a connector
configuration, starts ``ConnectStandalone`` in the background and waits until the
connector streams from the bank database's replication slot. Each card payment
committed in ``card_payments`` then arrives on the payments topic as a payment event
of the contract (``fraudstream.schemas``): keyed by ``card_id``, a JSON value with
``schema_version``. The mapping is configuration only, Kafka Connect's and Debezium's
built-in transforms (see :func:`connector_properties`).

Everything lives under one folder (``var/connect`` by default): ``worker.properties``,
``<connector>.properties``, ``offsets.dat`` (the last captured position in the
database's commit log, so a restart resumes where the last run stopped),
``logs/connect.log`` and ``connect.pid``. Delivery is at least once: after an unclean
stop, the payments since the last offset flush are published again (the scoring job
drops a repeated ``transaction_id``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fraudstream import config, schemas
from fraudstream.errors import FraudstreamError
from fraudstream.kafka import clients, propfile
from fraudstream.ops.postgres import CDC_ROLE, PUBLICATION, LocalPostgres
from fraudstream.ops.process import (
    abandon,
    java,
    launch,
    port_in_use,
    recorded_pid,
    require_free_ports,
    terminate,
    wait_until_ready,
)

CONNECT_JARS_DIR = config.JARS_DIR / "kafka-connect"
CONNECT_HEAP = "512m"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
#: How often the worker records its position: the most an unclean stop republishes.
OFFSET_FLUSH_INTERVAL_MS = 1000
MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectStandalone"


class ConnectError(FraudstreamError):
    """A Connect command could not do what was asked; the message is one sentence."""


@dataclass(frozen=True)
class LocalConnect:
    """Where a standalone Connect worker lives, what it captures and where it publishes.

    Parameters
    ----------
    home : Path
        Folder for configuration, offsets, logs and the PID file.
    rest_port : int
        Port of Connect's REST API on 127.0.0.1.
    bootstrap_servers : str
        Kafka brokers the payments are published to.
    topic : str
        The payments topic (it must exist: the broker does not create topics).
    postgres : LocalPostgres
        The bank database captured.
    connector_name : str
        Name of the connector; also the name of its replication slot.
    """

    home: Path = config.VAR_DIR / "connect"
    rest_port: int = 8083
    bootstrap_servers: str = config.DEFAULT_BOOTSTRAP_SERVERS
    topic: str = config.TOPIC_PAYMENTS
    postgres: LocalPostgres = field(default_factory=LocalPostgres)
    connector_name: str = "bank-payments"
    host: str = "127.0.0.1"

    @property
    def pid_file(self) -> Path:
        """Where ``start`` records the worker's PID."""
        return self.home / "connect.pid"

    @property
    def log_file(self) -> Path:
        """The worker's log."""
        return self.home / "logs" / "connect.log"

    @property
    def worker_file(self) -> Path:
        """The standalone worker's properties (:func:`worker_properties`)."""
        return self.home / "worker.properties"

    @property
    def connector_file(self) -> Path:
        """The connector's properties (:func:`connector_properties`)."""
        return self.home / f"{self.connector_name}.properties"

    @property
    def offsets_file(self) -> Path:
        """Where the standalone worker keeps the connector's source offsets."""
        return self.home / "offsets.dat"

    @property
    def slot_name(self) -> str:
        """The connector's PostgreSQL replication slot, named after the connector."""
        # Replication slot names allow lower-case letters, digits and underscores only.
        return self.connector_name.lower().replace("-", "_")

    @property
    def rest_url(self) -> str:
        """The base URL of Connect's REST API."""
        return f"http://{self.host}:{self.rest_port}"


def worker_properties(connect: LocalConnect) -> dict[str, str]:
    """Return the standalone worker's configuration.

    The Kafka client properties (``--kafka-properties``: SASL, TLS) apply to the worker
    and to the producer, consumer and admin clients it makes, which Connect configures
    apart (``producer.``, ``consumer.``, ``admin.`` prefixes).
    """
    security = {}
    for key, value in propfile.resolve_properties().items():
        for prefix in ("", "producer.", "consumer.", "admin."):
            security[prefix + key] = value
    return security | {
        "bootstrap.servers": connect.bootstrap_servers,
        # The key is the card token as plain UTF-8, as `fraudstream produce` writes it
        # (the JSON converter would quote it), so a card keeps its partition.
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(connect.offsets_file),
        "offset.flush.interval.ms": str(OFFSET_FLUSH_INTERVAL_MS),
        "listeners": f"http://{connect.host}:{connect.rest_port}",
        # No plugin.path: Debezium is on the worker's classpath (jvm/jars/kafka-connect),
        # and an empty plugin.path would make the worker scan the working directory.
        # Every plugin used declares itself in a service manifest: finding them there
        # instead of scanning every class of the classpath saves 6-8 s of each start.
        "plugin.discovery": "service_load",
        # The payments topic holds the system of record: acknowledged by every replica.
        "producer.acks": "all",
    }


def connector_properties(connect: LocalConnect) -> dict[str, str]:
    """Return Debezium's connector configuration, with the mapping to the payment contract.

    The transforms, in order: ``unwrap`` keeps the row as committed (Debezium's change
    envelope dropped); ``fields`` keeps the contract's columns; ``version`` adds
    ``schema_version`` (as text, the only type ``InsertField`` inserts) and
    ``version_type`` makes it an integer; ``key`` and ``key_field`` key the record by
    the card token; ``route`` sends it to the payments topic. ``amount`` (``numeric``)
    becomes a JSON number; ``event_time`` (``timestamptz(3)``) arrives as Debezium's
    ISO-8601 UTC text.
    """
    postgres = connect.postgres
    contract_columns = [name for name in schemas.PAYMENT_COLUMNS if name != "schema_version"]
    return {
        "name": connect.connector_name,
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": postgres.host,
        "database.port": str(postgres.port),
        "database.user": CDC_ROLE,
        "database.dbname": postgres.database,
        "topic.prefix": "bank",
        "table.include.list": "public.card_payments",
        # The publication (inserts into card_payments only) is made with the database.
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "slot.name": connect.slot_name,
        # Payments booked before the first start are read once, then the commit log.
        "snapshot.mode": "initial",
        "decimal.handling.mode": "double",
        # Debezium waits this long for changes when its queue is empty (default 500 ms):
        # the main part of the capture latency of a quiet database.
        "poll.interval.ms": "100",
        "transforms": "unwrap,fields,version,version_type,key,key_field,route",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.delete.tombstone.handling.mode": "drop",
        "transforms.fields.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.fields.include": ",".join(contract_columns),
        "transforms.version.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.version.static.field": "schema_version",
        "transforms.version.static.value": str(schemas.SCHEMA_VERSION),
        "transforms.version_type.type": "org.apache.kafka.connect.transforms.Cast$Value",
        "transforms.version_type.spec": "schema_version:int32",
        "transforms.key.type": "org.apache.kafka.connect.transforms.ValueToKey",
        "transforms.key.fields": "card_id",
        "transforms.key_field.type": "org.apache.kafka.connect.transforms.ExtractField$Key",
        "transforms.key_field.field": "card_id",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        # Only the payments table's topic: anything else Debezium may emit (heartbeats,
        # if enabled) must not land on the payments topic.
        "transforms.route.regex": r"bank\.public\.card_payments",
        "transforms.route.replacement": connect.topic,
    }


def _write_properties(path: Path, properties: dict[str, str]) -> None:
    # Java properties files read a backslash as an escape: double it (regexes have some).
    lines = (f"{key}={value.replace(chr(92), chr(92) * 2)}\n" for key, value in properties.items())
    path.write_text("".join(lines))
    # The worker's file may hold a Kafka password: readable by its owner only.
    path.chmod(0o600)


def _write_config(connect: LocalConnect) -> None:
    (connect.home / "logs").mkdir(parents=True, exist_ok=True)
    _write_properties(connect.worker_file, worker_properties(connect))
    _write_properties(connect.connector_file, connector_properties(connect))
    (connect.home / "log4j2.properties").write_text(
        "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {connect.log_file}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                # The clients' configuration dumps and metrics chatter bury what matters.
                "logger.clients.name = org.apache.kafka.clients",
                "logger.clients.level = WARN",
                "logger.reflections.name = org.reflections",
                "logger.reflections.level = ERROR",
                "",
            ]
        )
    )


def _classpath() -> str:
    if not any(CONNECT_JARS_DIR.glob("debezium-connector-postgres-*.jar")):
        raise ConnectError(
            f"The Kafka Connect and Debezium jars are missing from {CONNECT_JARS_DIR}: "
            "run scripts/fetch-jars.sh (or scripts/setup.sh) first."
        )
    return str(CONNECT_JARS_DIR / "*")


def running_pid(connect: LocalConnect) -> int | None:
    """Return the PID of the worker that ``start`` recorded, if it is still that worker."""
    return recorded_pid(connect.pid_file, MAIN_CLASS, str(connect.worker_file))


def connector_status(connect: LocalConnect) -> dict | None:
    """Return the connector's status from Connect's REST API, or None if it does not answer."""
    url = f"{connect.rest_url}/connectors/{connect.connector_name}/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def slot_active(connect: LocalConnect) -> bool:
    """Return True if the connector's replication slot exists and a reader streams from it."""
    import psycopg

    postgres = connect.postgres
    with psycopg.connect(postgres.conninfo(CDC_ROLE)) as connection:
        row = connection.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (connect.slot_name,)
        ).fetchone()
    return bool(row and row[0])


def _streaming(connect: LocalConnect) -> bool:
    status = connector_status(connect)
    if status is None:
        return False
    states = [status["connector"]["state"]] + [t["state"] for t in status["tasks"]]
    if "FAILED" in states:
        traces = [t.get("trace", "") for t in status["tasks"]] + [
            status["connector"].get("trace", "")
        ]
        first = next((t.splitlines()[0] for t in traces if t), "no trace")
        raise ConnectError(f"The connector {connect.connector_name} failed: {first}")
    # RUNNING is reported before Debezium opens the slot: wait for the stream.
    return bool(status["tasks"]) and set(states) == {"RUNNING"} and slot_active(connect)


def _wait_until_streaming(connect: LocalConnect, process: subprocess.Popen) -> None:
    wait_until_ready(
        lambda: _streaming(connect),
        {"Kafka Connect": (process, connect.log_file)},
        START_TIMEOUT_S,
        f"The connector {connect.connector_name} was not streaming",
        ConnectError,
    )


def start(connect: LocalConnect) -> tuple[int, bool]:
    """Start the worker in the background unless it already runs; wait until it streams.

    Returns
    -------
    (int, bool)
        The worker's PID, and whether this call started it.

    Raises
    ------
    ConnectError
        If the REST port is taken by another program, the jars are missing, or the
        connector does not stream.
    KafkaSetupError
        If Kafka cannot be reached or the payments topic is missing.
    """
    pid = running_pid(connect)
    if pid is not None:
        return pid, False
    require_free_ports(
        connect.host,
        [connect.rest_port],
        "stop it or choose another port with --rest-port.",
        ConnectError,
    )
    clients.require_topics(connect.bootstrap_servers, [connect.topic])
    if not port_in_use(connect.postgres.host, connect.postgres.port):
        raise ConnectError(
            f"No PostgreSQL answers on {connect.postgres.host}:{connect.postgres.port}: "
            "run fraudstream postgres start first."
        )
    classpath = _classpath()
    connect.home.mkdir(parents=True, exist_ok=True)
    _write_config(connect)
    command = [
        java(),
        f"-Xmx{CONNECT_HEAP}",
        f"-Dlog4j2.configurationFile={connect.home / 'log4j2.properties'}",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(connect.worker_file),
        str(connect.connector_file),
    ]
    process = launch(command, connect.home / "logs" / "stdout.log", connect.pid_file)
    try:
        _wait_until_streaming(connect, process)
    except ConnectError:
        abandon(process, connect.pid_file)
        raise
    return process.pid, True


def stop(connect: LocalConnect) -> int | None:
    """Stop the worker that ``start`` recorded; return its PID, or None if none ran.

    A clean stop: the worker stops its task and records its position before it exits,
    so the next start resumes after the last payment published.
    """
    pid = running_pid(connect)
    if pid is not None:
        terminate(pid, STOP_TIMEOUT_S)
    connect.pid_file.unlink(missing_ok=True)
    return pid
