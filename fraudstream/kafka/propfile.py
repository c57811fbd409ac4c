"""The Kafka client properties file, read once and translated for each client."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fraudstream.errors import FraudstreamError


class KafkaSetupError(FraudstreamError):
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
