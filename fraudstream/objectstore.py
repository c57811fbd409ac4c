"""S3-compatible object stores: the Hadoop S3A settings that let Spark use ``s3a://`` paths.

Spark reads and writes an object store through Hadoop's S3A connector (``hadoop-aws``
with the AWS SDK bundle: ``jvm/jars/s3a/``, fetched by ``scripts/fetch-jars.sh`` and put
on the class path by :func:`fraudstream.spark.get_session` and ``./spark-submit.sh``).
On AWS S3 itself S3A needs nothing but credentials. Any other S3-compatible store
(MinIO, Ceph, a cloud vendor's, the local server of the tests) needs its endpoint and a
few settings that follow from it; :func:`s3a_settings` is the one place that says which.

The settings are Hadoop keys (``fs.s3a.endpoint`` and so on). Give them to Spark

- at launch, as ``--conf spark.hadoop.KEY=VALUE`` (``./spark-submit.sh --conf ...``) or
  through :func:`spark_conf` on a session builder: every bucket then uses them;
- on a running session, with :func:`configure`: for one bucket only, through
  :func:`for_bucket` (S3A's per-bucket keys, ``fs.s3a.bucket.BUCKET.endpoint``).

Credentials: without ``access_key`` and ``secret_key``, S3A takes them from its default
chain (``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` in the environment, then the
instance's role), which keeps secrets off command lines. Spark hides both keys in its UI
and logs (``spark.redaction.regex``, ``conf/spark/spark-defaults.conf``).

Checksums need no setting: Hadoop 3.5.0 keeps the AWS SDK's newer checksum headers off
by default (``fs.s3a.checksum.generation=false``, ``fs.s3a.create.checksum.algorithm=NONE``,
``fs.s3a.checksum.validation=false``; MD5 headers on), which third-party stores accept.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pyspark.sql import SparkSession

from fraudstream.errors import DataError

#: The region S3A signs requests for when the store has none of its own; most
#: self-hosted stores (MinIO's default among them) accept it.
DEFAULT_REGION = "us-east-1"

_PREFIX = "fs.s3a."


def s3a_settings(
    endpoint: str,
    *,
    region: str = DEFAULT_REGION,
    access_key: str | None = None,
    secret_key: str | None = None,
    path_style_access: bool = True,
) -> dict[str, str]:
    """Return the Hadoop settings for an S3-compatible store at ``endpoint``.

    Parameters
    ----------
    endpoint : str
        The store's URL with its scheme, ``http://host:port`` or ``https://host``; the
        scheme decides whether S3A uses TLS.
    region : str
        The region requests are signed for.
    access_key, secret_key : str, optional
        Credentials, both or neither; without them S3A uses its default chain (the
        ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` environment variables, ...).
    path_style_access : bool
        Address buckets as ``endpoint/bucket/key`` (the default; self-hosted stores
        rarely have a DNS name per bucket) rather than ``bucket.endpoint/key``.

    Returns
    -------
    dict of str to str
        ``fs.s3a.*`` keys and their values.

    Raises
    ------
    DataError
        If ``endpoint`` has no ``http`` or ``https`` scheme and host, or only one of the
        two credentials is given.
    """
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise DataError(f"The S3 endpoint {endpoint!r} is not an http:// or https:// URL.")
    if (access_key is None) != (secret_key is None):
        raise DataError("Give both the S3 access key and the secret key, or neither.")
    settings = {
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": region,
        "fs.s3a.path.style.access": str(path_style_access).lower(),
        "fs.s3a.connection.ssl.enabled": str(url.scheme == "https").lower(),
    }
    if access_key is not None and secret_key is not None:  # both or neither, checked above
        settings["fs.s3a.access.key"] = access_key
        settings["fs.s3a.secret.key"] = secret_key
    return settings


def for_bucket(settings: dict[str, str], bucket: str) -> dict[str, str]:
    """Narrow S3A settings to one bucket: ``fs.s3a.KEY`` becomes ``fs.s3a.bucket.BUCKET.KEY``.

    S3A uses a bucket's own keys before the general ones, so a job can read one bucket
    on AWS S3 and write another on a self-hosted store.
    """
    return {
        f"{_PREFIX}bucket.{bucket}.{key.removeprefix(_PREFIX)}": value
        for key, value in settings.items()
    }


def spark_conf(settings: dict[str, str]) -> dict[str, str]:
    """Return Hadoop settings as Spark configuration (``spark.hadoop.`` before each key)."""
    return {f"spark.hadoop.{key}": value for key, value in settings.items()}


def configure(spark: SparkSession, settings: dict[str, str]) -> None:
    """Set Hadoop settings on a running session, for the reads and writes that follow.

    Hadoop caches one S3A file system per bucket for the life of the JVM, made with the
    settings of the moment: set a bucket's before Spark first touches that bucket.
    """
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in settings.items():
        hadoop_conf.set(key, value)
