"""Kafka at the edges: the one place that holds Kafka options, for Spark and for Python clients.

Spark reads and writes Kafka through its official connector (``format("kafka")``);
the bulk producer (``fraudstream produce``) uses librdkafka through confluent-kafka,
because kafka-python tops out near 10,000 records/s; the other Python tools (tail,
label reader, tests) use kafka-python. Security settings (SASL, TLS)
pass through as client properties: ``security.protocol=SASL_SSL`` and so on, written
the Java way, in one properties file (``--kafka-properties FILE`` or
``$FRAUDSTREAM_KAFKA_PROPERTIES``), read here and translated for each client: Spark's
connector takes them as they are (``kafka.``-prefixed), librdkafka and kafka-python
under their own names (see :func:`librdkafka_settings` and :func:`python_settings`).
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812


class KafkaSetupError(RuntimeError):
    """Kafka is not there as a command needs it; the message is one sentence for the user."""


#: The environment variable naming the client properties file; ``--kafka-properties``
#: sets it, so that every client a process (and its children) opens reads the same file.
PROPERTIES_ENV = "FRAUDSTREAM_KAFKA_PROPERTIES"

_JAAS_FIELD = re.compile(r'\b(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')


def read_properties(path: str | Path) -> dict[str, str]:
    """Read a Java-style ``.properties`` file (``key=value`` or ``key: value``, ``#`` comments).

    Raises
    ------
    KafkaSetupError
        If the file does not exist, in one sentence.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KafkaSetupError(f"The Kafka properties file {path} does not exist.") from None
    properties: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        # A trailing backslash continues the value on the next line, as in Java.
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        parts = re.split(r"\s*[=:]\s*", logical, maxsplit=1)
        properties[parts[0]] = parts[1] if len(parts) > 1 else ""
        logical = ""
    return properties


def add_properties_option(parser) -> None:
    """Add ``--kafka-properties FILE`` to an argparse parser (commands and jobs alike)."""
    parser.add_argument(
        "--kafka-properties",
        metavar="FILE",
        help=f"Java-style Kafka client properties (SASL, TLS); default: ${PROPERTIES_ENV}, "
        "else none",
    )


def use_properties_file(path: str | Path | None) -> None:
    """Make ``path`` the client properties of this process and its children (None: no change).

    The file is read when a client is made: a missing file is reported, in one sentence,
    by the first Kafka check of the command (:func:`require_topics`).
    """
    if path is not None:
        os.environ[PROPERTIES_ENV] = str(Path(path).resolve())


def resolve_properties(explicit: dict[str, str] | None = None) -> dict[str, str]:
    """The Java-style client properties to use: ``explicit``, else the file in the environment."""
    if explicit is not None:
        return dict(explicit)
    path = os.environ.get(PROPERTIES_ENV)
    return read_properties(path) if path else {}


def sasl_credentials(properties: dict[str, str]) -> tuple[str | None, str | None]:
    """User and password from ``sasl.jaas.config`` (Java) or ``sasl.username``/``password``."""
    fields = {
        name: re.sub(r"\\(.)", r"\1", value)
        for name, value in _JAAS_FIELD.findall(properties.get("sasl.jaas.config", ""))
    }
    return (
        properties.get("sasl.username", fields.get("username")),
        properties.get("sasl.password", fields.get("password")),
    )


def _pem_ca(properties: dict[str, str]) -> str | None:
    """The CA file in PEM, which librdkafka and kafka-python need (they cannot read JKS)."""
    if "ssl.ca.location" in properties:
        return properties["ssl.ca.location"]
    location = properties.get("ssl.truststore.location")
    if location is None:
        return None
    if properties.get("ssl.truststore.type", "JKS").upper() != "PEM":
        raise KafkaSetupError(
            "Python Kafka clients cannot read a JKS truststore: add ssl.ca.location=CA.pem to "
            "the properties file (scripts/make-certs.sh writes ca.pem beside truststore.jks)."
        )
    return location


#: Java names that librdkafka does not know (it reads PEM files and plain credentials).
_JAVA_ONLY = {
    "sasl.jaas.config",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.keystore.type",
}


def librdkafka_settings(properties: dict[str, str]) -> dict[str, str]:
    """Translate Java-style client properties to librdkafka's (confluent-kafka) names."""
    settings = {key: value for key, value in properties.items() if key not in _JAVA_ONLY}
    if "sasl.mechanism" in settings:
        settings["sasl.mechanisms"] = settings.pop("sasl.mechanism")
    user, password = sasl_credentials(properties)
    if user is not None:
        settings["sasl.username"] = user
    if password is not None:
        settings["sasl.password"] = password
    ca = _pem_ca(properties)
    if ca is not None:
        settings["ssl.ca.location"] = ca
    return settings


def python_settings(properties: dict[str, str], known: set[str] | None = None) -> dict:
    """Translate Java-style client properties to kafka-python's keyword arguments.

    Parameters
    ----------
    properties : dict
        Java-style names (``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``,
        ``ssl.truststore.location`` of type PEM or ``ssl.ca.location``).
    known : set, optional
        The client class's settings; other names (Java-only ones) are left out.
    """
    settings: dict = {}
    special = {"sasl.jaas.config", "sasl.username", "sasl.password", "sasl.mechanisms"}
    for key, value in properties.items():
        name = key.replace(".", "_")
        if key not in special and (known is None or name in known):
            settings[name] = value
    if "sasl.mechanisms" in properties:
        settings["sasl_mechanism"] = properties["sasl.mechanisms"]
    user, password = sasl_credentials(properties)
    if user is not None:
        settings["sasl_plain_username"] = user
    if password is not None:
        settings["sasl_plain_password"] = password
    ca = _pem_ca(properties)
    if ca is not None:
        settings["ssl_cafile"] = ca
    if properties.get("ssl.endpoint.identification.algorithm", "https") == "":
        settings["ssl_check_hostname"] = False
    return settings


def java_settings(properties: dict[str, str]) -> dict[str, str]:
    """Java client properties (Spark's connector), from names librdkafka users may write."""
    settings = dict(properties)
    if "ssl.ca.location" in settings and "ssl.truststore.location" not in settings:
        settings["ssl.truststore.type"] = "PEM"
        settings["ssl.truststore.location"] = settings.pop("ssl.ca.location")
    settings.pop("ssl.ca.location", None)
    if "sasl.mechanisms" in settings:
        settings.setdefault("sasl.mechanism", settings.pop("sasl.mechanisms"))
    user, password = settings.pop("sasl.username", None), settings.pop("sasl.password", None)
    if user is not None and "sasl.jaas.config" not in settings:
        settings["sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";'
        )
    return settings


def _python_options(cls, bootstrap_servers: str, client_props, defaults: dict, settings: dict):
    properties = resolve_properties(client_props)
    options = {"bootstrap_servers": bootstrap_servers, **defaults}
    options.update(python_settings(properties, set(cls.DEFAULT_CONFIG)))
    options.update(settings)
    return options


def admin(bootstrap_servers: str, client_properties: dict[str, str] | None = None, **settings):
    """Return a kafka-python admin client with the client properties applied."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        **_python_options(KafkaAdminClient, bootstrap_servers, client_properties, {}, settings)
    )


def describe_failure(
    bootstrap_servers: str, error: Exception, log: list[str] = (), sasl: bool = False
) -> str:
    """One sentence for a client that could not connect, naming the cause users can fix.

    Parameters
    ----------
    bootstrap_servers : str
        What the client was given.
    error : Exception
        What the client raised.
    log : list of str
        The client's log messages meanwhile, which may name the cause.
    sasl : bool
        Whether the client logged in with SASL.
    """
    from kafka.errors import SaslAuthenticationFailedError, UnsupportedSaslMechanismError

    text = " ".join([f"{error.__class__.__name__}: {error}", *log])
    tls_failed = "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text
    # A broker that refuses a login answers with an error and then closes the connection;
    # kafka-python (3.0) often sees only the close. After a good TLS handshake, on a
    # SASL listener, nothing else closes a new connection: it is the same refusal.
    refused = "SaslAuthenticationFailed" in text or (
        sasl and not tls_failed and "socket disconnected" in text
    )
    if isinstance(error, SaslAuthenticationFailedError) or refused:
        return (
            f"Kafka at {bootstrap_servers} refused the credentials (SASL authentication "
            "failed); check the user and password in the Kafka properties file."
        )
    if isinstance(error, UnsupportedSaslMechanismError) or "UnsupportedSaslMechanism" in text:
        return (
            f"Kafka at {bootstrap_servers} does not offer the SASL mechanism of the Kafka "
            "properties file (sasl.mechanism)."
        )
    if tls_failed:
        return (
            f"The TLS handshake with Kafka at {bootstrap_servers} failed; check the CA file "
            "(ssl.ca.location or ssl.truststore.location) and the listener's port."
        )
    return (
        f"Cannot reach Kafka at {bootstrap_servers} ({error.__class__.__name__}); "
        "is the broker running (fraudstream kafka start)?"
    )


#: How long the pre-flight check waits for the brokers' first answer.
BOOTSTRAP_TIMEOUT_MS = 10_000


class _Recorder(logging.Handler):
    """Keeps kafka-python's log records of one check, instead of printing them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _client_log_recorded():
    """Record kafka-python's log meanwhile: its errors name the cause its exceptions hide.

    kafka-python reports a refused login or a failed TLS handshake only in its log, then
    times out; the log is kept from the terminal, where it would be a screen of retries.
    """
    logger = logging.getLogger("kafka")
    recorder = _Recorder()
    saved = logger.propagate, logger.level
    logger.addHandler(recorder)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)
        logger.propagate, logger.level = saved


def require_topics(
    bootstrap_servers: str, topics: list[str], client_properties: dict[str, str] | None = None
) -> None:
    """Fail with one clear sentence if the brokers cannot be reached or a topic is missing.

    Called before long work starts, so that a typo, a stopped broker or a wrong password
    does not show up a minute later as a timeout deep in a client library.
    """
    from kafka.errors import KafkaError

    sasl = resolve_properties(client_properties).get("security.protocol", "").startswith("SASL")
    with _client_log_recorded() as messages:
        try:
            # The consumer bootstraps as it is made, retrying a refused login until the
            # deadline: a short one, since this check runs before a user's eyes.
            client = consumer(
                bootstrap_servers,
                client_properties,
                request_timeout_ms=10000,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
            try:
                existing = client.topics()
            finally:
                client.close()
        except KafkaError as error:
            failure = describe_failure(bootstrap_servers, error, messages, sasl)
            raise KafkaSetupError(failure) from None
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        raise KafkaSetupError(
            f"Topic(s) {', '.join(missing)} do not exist on {bootstrap_servers}; "
            "create them (fraudstream kafka start creates the design's topics)."
        )


def spark_options(bootstrap_servers: str, client_properties: dict[str, str] | None = None) -> dict:
    """Return the options of Spark's Kafka source or sink.

    Parameters
    ----------
    bootstrap_servers : str
        ``host:port[,host:port...]``.
    client_properties : dict, optional
        Kafka client properties (``security.protocol``, ``sasl.mechanism``, ...),
        passed with the ``kafka.`` prefix Spark expects.
    """
    options = {"kafka.bootstrap.servers": bootstrap_servers}
    for key, value in java_settings(resolve_properties(client_properties)).items():
        options[f"kafka.{key}"] = value
    return options


def read_stream(
    spark: SparkSession,
    bootstrap_servers: str,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
    client_properties: dict[str, str] | None = None,
) -> DataFrame:
    """Open a streaming read of ``topic`` with Spark's Kafka source.

    ``starting_offsets`` applies only to a new checkpoint: a query restarted on its
    checkpoint resumes where it was. Missing offsets (data deleted by retention) fail
    the query rather than skip silently.
    """
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(bootstrap_servers, client_properties))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def kafka_timestamp_date() -> Column:
    """The UTC date of a Kafka record's timestamp, for partitioning."""
    return F.to_date(F.col("kafka_timestamp"))


def record_columns(kafka_rows: DataFrame) -> DataFrame:
    """Rows of Spark's Kafka source as the columns the jobs' batch functions take:
    ``key, value`` (bytes), ``topic, partition, offset`` and ``timestamp_ms``."""
    return kafka_rows.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_millis("timestamp").alias("timestamp_ms"),
    )


def raw_records(kafka_rows: DataFrame) -> DataFrame:
    """Keep a Kafka record as it came: key and value as text, and where it came from.

    Parameters
    ----------
    kafka_rows : DataFrame
        Rows of Spark's Kafka source.

    Returns
    -------
    DataFrame
        ``key``, ``value`` (UTF-8 text), ``topic``, ``partition``, ``offset``,
        ``kafka_timestamp`` and ``date`` (of the timestamp, UTC).
    """
    return (
        kafka_rows.withColumnRenamed("timestamp", "kafka_timestamp")
        .withColumn("date", kafka_timestamp_date())
        .select(
            F.col("key").cast("string").alias("key"),
            F.col("value").cast("string").alias("value"),
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "date",
        )
    )


def producer(bootstrap_servers: str, client_properties: dict[str, str] | None = None, **settings):
    """Return a kafka-python producer that does not lose or duplicate what it sends.

    ``acks=all`` and the idempotent producer: a retried send is written once.
    ``client_properties`` take Java-style names (``security.protocol``).
    """
    from kafka import KafkaProducer

    defaults = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "compression_type": None,
    }
    return KafkaProducer(
        **_python_options(KafkaProducer, bootstrap_servers, client_properties, defaults, settings)
    )


class DeliveryError(KafkaSetupError):
    """A record could not be written (after the client's own retries)."""


class BulkProducer:
    """A librdkafka producer for hundreds of thousands of records a second.

    ``acks=all`` and the idempotent producer, as ``producer``; records are batched
    (``linger.ms=20``) and lz4-compressed, which on a machine shared with the broker
    triples the rate (see ``bench/bench_produce.py``). Delivery reports come only for
    failures, and ``flush`` raises the first. ``client_properties`` use the Java names,
    which librdkafka shares (``security.protocol``, ``sasl.mechanism``, ...).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        client_properties: dict[str, str] | None = None,
        linger_ms: int = 20,
    ):
        from confluent_kafka import Producer

        self.failures: list[str] = []
        options = {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            # Java's partitioner (murmur2), not librdkafka's default (crc32): a card's
            # payments land on the partition every other producer (Java clients,
            # kafka-python, Kafka Connect) picks, so its order holds across sources.
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        options.update(librdkafka_settings(resolve_properties(client_properties)))
        self._producer = Producer(options)

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error.str()}")

    def send_all(self, topic: str, keys: list, values: list) -> None:
        """Queue one record per (key, value); waits only while the local queue is full."""
        produce = self._producer.produce
        for key, value in zip(keys, values, strict=True):
            try:
                produce(topic, value, key)
            except BufferError:
                # The local queue is full: let librdkafka send, then retry this record.
                while True:
                    self._producer.poll(0.05)
                    try:
                        produce(topic, value, key)
                        break
                    except BufferError:
                        continue
        self._producer.poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every record is acknowledged; raise ``DeliveryError`` if one was not."""
        left = self._producer.flush(timeout)
        if self.failures:
            raise DeliveryError(f"Kafka refused a record ({self.failures[0]}).")
        if left:
            raise DeliveryError(
                f"{left:,} records were not acknowledged within {timeout:.0f} s; is the broker up?"
            )


def consumer(bootstrap_servers: str, client_properties: dict[str, str] | None = None, **settings):
    """Return a kafka-python consumer in no group: it reads what it is told, commits nothing."""
    from kafka import KafkaConsumer

    defaults = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": 30000,
    }
    return KafkaConsumer(
        **_python_options(KafkaConsumer, bootstrap_servers, client_properties, defaults, settings)
    )
