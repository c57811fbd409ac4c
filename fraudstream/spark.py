"""The one way a fraudstream process gets its SparkSession.

Under ``spark-submit`` the session's master, jars and configuration come from the
submit command (``./spark-submit.sh``); this module only adds what is missing. From
plain Python (tests, notebooks) it adds Spark's Kafka connector, the per-card
operator (when built) and Hadoop's S3A connector (when fetched) from ``jvm/jars`` and
settings that suit a small local machine.
"""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from fraudstream import config
from fraudstream.errors import FraudstreamError

_LOG = logging.getLogger(__name__)

#: Shuffle partitions for local runs: the default (200) makes stateful queries on two
#: cores crawl, and the value is frozen into a stateful query's checkpoint.
LOCAL_SHUFFLE_PARTITIONS = 4

#: Packages whose versions executors must share with the driver: pyspark itself and
#: those whose objects cross between them (Arrow batches, pickled arrays and frames), and
#: those the registered model loads with (its estimator's library and skops).
SHARED_PACKAGES = (
    "pyspark",
    "pyarrow",
    "pandas",
    "numpy",
    "scikit-learn",
    "lightgbm",
    "xgboost-cpu",
    "skops",
)


class ExecutorEnvironmentError(FraudstreamError):
    """Executors run another Python environment than the driver; one sentence."""


def get_session(
    app_name: str = "fraudstream", master: str | None = None, settings: dict | None = None
) -> SparkSession:
    """Return the active SparkSession, or build one for local use.

    Parameters
    ----------
    app_name : str
        Application name shown in the Spark UI and logs.
    master : str, optional
        Master URL for a session built here; ``local[*]`` by default. Ignored when a
        session already exists (for example under ``spark-submit``).
    settings : dict, optional
        More Spark settings for a session built here.

    Returns
    -------
    SparkSession
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if os.environ.get("SPARK_ENV_LOADED") or os.environ.get("SPARK_SUBMIT_PYFILES"):
        # Launched by spark-submit: its configuration is the whole truth.
        session = SparkSession.builder.appName(app_name).getOrCreate()
        master = session.sparkContext.master
        if master is not None and not master.startswith("local"):
            _LOG.info(check_executors(session))
        return session
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python UDFs run in worker processes: the driver's interpreter (the project's
    # environment), not whatever python3 is first on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_CONF_DIR", str(config.PROJECT_ROOT / "conf" / "spark"))
    jars = [*config.spark_kafka_jars()]
    if config.CARD_OPERATOR_JAR.is_file():
        # Only the jobs that use it need it (fraudstream.scoring.operator says when missing).
        jars.append(config.CARD_OPERATOR_JAR)
    builder = (
        SparkSession.builder.master(master or "local[*]")
        .appName(app_name)
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
    )
    for key, value in (settings or {}).items():
        builder = builder.config(key, value)
    s3a_jars = config.s3a_jars()
    if s3a_jars:
        # On the class path as they are, not in spark.jars: Spark copies every spark.jars
        # file into each session's temporary folder, 690 MB a session for the SDK bundle.
        class_path = os.pathsep.join(str(jar) for jar in s3a_jars)
        builder = builder.config("spark.driver.extraClassPath", class_path).config(
            "spark.executor.extraClassPath", class_path
        )
    return builder.getOrCreate()


def python_environment() -> dict[str, str]:
    """Describe the Python running this code: interpreter, version and shared packages."""
    from importlib import metadata

    return {
        "executable": sys.executable,
        "python": sys.version.split()[0],
        **{name: metadata.version(name) for name in SHARED_PACKAGES},
    }


def check_executors(spark: SparkSession) -> str:
    """Run a little Python on every executor core and compare its environment with the driver's.

    On a cluster nothing else in the jobs may run Python on executors (the Kafka source,
    Parquet and Spark ML are JVM code; the feature work runs in the driver), so a wrong
    environment would only show at the first Python UDF. This fails at start instead.

    Parameters
    ----------
    spark : SparkSession
        A session on a cluster.

    Returns
    -------
    str
        One line: the executors' interpreters and the versions they share with the driver.

    Raises
    ------
    ExecutorEnvironmentError
        If an executor's Python or one of :data:`SHARED_PACKAGES` differs from the driver's.
    """
    context = spark.sparkContext
    tasks = max(context.defaultParallelism, 1)
    seen = context.parallelize(range(tasks), tasks).map(lambda _: python_environment()).collect()
    driver = python_environment()
    for executor in seen:
        different = [
            f"{key} {executor[key]} (driver {driver[key]})"
            for key in ("python", *SHARED_PACKAGES)
            if executor[key] != driver[key]
        ]
        if different:
            raise ExecutorEnvironmentError(
                f"Executors run {executor['executable']} with {', '.join(different)}: ship the "
                "driver's environment (./spark-submit.sh does for a non-local --master)."
            )
    interpreters = sorted({executor["executable"] for executor in seen})
    shared = ", ".join(f"{name} {driver[name]}" for name in SHARED_PACKAGES)
    return (
        f"executors: Python {driver['python']} from {', '.join(interpreters)}; "
        f"same {shared} as the driver"
    )
