"""Python Kafka clients (kafka-python and librdkafka) with the properties file applied."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from contextlib import contextmanager

from fraudstream.kafka.propfile import (
    KafkaSetupError,
    librdkafka_settings,
    python_settings,
    resolve_properties,
)


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
    bootstrap_servers: str, error: Exception, log: Sequence[str] = (), sasl: bool = False
) -> str:
    """One sentence for a client that could not connect, naming the cause users can fix.

    Parameters
    ----------
    bootstrap_servers : str
        What the client was given.
    error : Exception
        What the client raised.
    log : sequence of str
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

#: How long the pre-flight check waits for a TCP connection to a bootstrap address.
CONNECT_TIMEOUT_S = 2.0


def _all_refuse(bootstrap_servers: str) -> bool:
    """Whether every bootstrap address refuses a TCP connection: nothing listens there.

    A refusal is final, where a silence (a firewall, a host still booting) may end: the
    check says so at once rather than after the client's bootstrap timeout. Anything but
    a refusal at every address leaves the answer to the client.
    """
    from kafka.cluster import collect_hosts

    try:
        hosts = collect_hosts(bootstrap_servers, randomize=False)
    except ValueError:  # an address the client will reject in its own words
        return False
    for host, port, _ in hosts:
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except ConnectionRefusedError:
            continue
        except OSError:
            return False
        return False
    return bool(hosts)


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
    does not show up a minute later as a timeout deep in a client library. Where every
    bootstrap address refuses the connection (nothing listens), it fails at once; else the
    client has ``BOOTSTRAP_TIMEOUT_MS`` to get a first answer.
    """
    from kafka.errors import KafkaError

    sasl = resolve_properties(client_properties).get("security.protocol", "").startswith("SASL")
    if _all_refuse(bootstrap_servers):
        failure = describe_failure(bootstrap_servers, ConnectionRefusedError())
        raise KafkaSetupError(failure)
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
