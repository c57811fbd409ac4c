"""Where things live: one place for paths, topic names and service addresses.

Every default here can be overridden by a command-line option or by the standard
environment variable named beside it, so the same code runs against a laptop's
local stack and against a real cluster.
"""

from __future__ import annotations

import os
from pathlib import Path


def _project_root() -> Path:
    """The checkout that local defaults (``data/``, ``var/``, ``jvm/jars``) live under.

    ``$FRAUDSTREAM_HOME`` when set (``spark-submit.sh`` sets it: under spark-submit the
    package is imported from a zip, so its own path says nothing); else the folder
    above the package when that holds ``pyproject.toml``; else the working directory.
    """
    explicit = os.environ.get("FRAUDSTREAM_HOME")
    if explicit:
        return Path(explicit).resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


#: The repository root (the folder holding ``pyproject.toml``).
PROJECT_ROOT = _project_root()

#: Generated data: the lake of Parquet views and the streaming checkpoints.
DATA_DIR = PROJECT_ROOT / "data"
LAKE_DIR = DATA_DIR / "lake"
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
SAMPLE_DIR = DATA_DIR / "sample"

#: Local services' state (broker data and logs, the MLflow store); git-ignored.
VAR_DIR = PROJECT_ROOT / "var"

#: JVM jars resolved from Maven Central by ``scripts/fetch-jars.sh``; git-ignored.
JARS_DIR = PROJECT_ROOT / "jvm" / "jars"
SPARK_KAFKA_JARS_DIR = JARS_DIR / "spark-kafka"
KAFKA_BROKER_JARS_DIR = JARS_DIR / "kafka-broker"
#: Hadoop's S3A connector with the AWS SDK bundle, for ``s3a://`` paths (fraudstream.objectstore).
S3A_JARS_DIR = JARS_DIR / "s3a"

#: The per-card operator, compiled by ``scripts/build-operator.sh``; git-ignored.
CARD_OPERATOR_JAR = JARS_DIR / "card-operator" / "fraudstream-card-operator.jar"

#: Kafka bootstrap servers: ``KAFKA_BOOTSTRAP_SERVERS`` or the local broker.
DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"

#: The design's topics, their keys and retention: ``docs/architecture.md``, "Topics".
TOPIC_PAYMENTS = "payments"
TOPIC_ALERTS = "fraud-alerts"
TOPIC_LABELS = "fraud-labels"
TOPIC_DEAD_LETTERS = "payments-dlq"
#: Fraud-ops rules, compacted by rule id (``fraudstream.scoring.rules``).
TOPIC_RULES = "fraud-rules"
#: The rule sets each scoring job applied, and from which offsets, kept forever
#: (``fraudstream.scoring.rulelog``).
TOPIC_RULES_APPLIED = "fraud-rules-applied"
#: Model-health events of the monitor job (``fraudstream.ml.monitor``): drift, alert
#: volume, live precision.
TOPIC_MODEL_HEALTH = "model-health"

#: The model scoring uses unless told: the registry's champion.
DEFAULT_MODEL_URI = "models:/fraudstream@champion"

#: The MLflow store used when ``MLFLOW_TRACKING_URI`` is not set.
MLFLOW_DB = VAR_DIR / "mlflow" / "mlflow.db"
MLFLOW_ARTIFACTS_DIR = VAR_DIR / "mlflow" / "artifacts"


def bootstrap_servers(explicit: str | None = None) -> str:
    """Return the Kafka bootstrap servers to use.

    Parameters
    ----------
    explicit : str, optional
        A value given on the command line; wins over the environment.

    Returns
    -------
    str
        ``explicit``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else the local broker.
    """
    return explicit or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS


def spark_kafka_jars() -> list[Path]:
    """Return the jars of Spark's Kafka connector, sorted by name.

    Raises
    ------
    FileNotFoundError
        If ``scripts/fetch-jars.sh`` has not been run, with a sentence that says so.
    """
    jars = sorted(SPARK_KAFKA_JARS_DIR.glob("*.jar"))
    if not any(jar.name.startswith("spark-sql-kafka") for jar in jars):
        raise FileNotFoundError(
            f"Spark's Kafka connector is missing from {SPARK_KAFKA_JARS_DIR}: "
            "run scripts/fetch-jars.sh (or scripts/setup.sh) first."
        )
    return jars


def s3a_jars() -> list[Path]:
    """Return the jars of Hadoop's S3A connector, sorted by name; empty if not fetched.

    Only ``s3a://`` paths need them, so their absence is not an error here: Spark then
    says ``Class org.apache.hadoop.fs.s3a.S3AFileSystem not found`` at the first such path.
    """
    return sorted(S3A_JARS_DIR.glob("*.jar"))
