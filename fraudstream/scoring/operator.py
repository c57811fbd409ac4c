"""The per-card operator: one Java ``StatefulProcessor`` for training and scoring.

The operator (``jvm/card-operator``, built by ``scripts/build-operator.sh``) keeps each
card's payments of its last 30 days in Spark's state store (RocksDB, changelog
checkpointing) and emits, for every payment, integer aggregates over the card's earlier
payments. The same operator runs in a batch query over a history (training) and in a
streaming query (scoring), so both see the same integers; ``features.
card_features_from_aggregates`` makes the features from them with one formula.

Output columns (integers unless said; "earlier" is a smaller ``(time_ms, transaction_id)``
and window w is ``(t - w, t]``, the payment itself excluded):

==========================================  ============================================
transaction_id, card_id                      the payment
n_1h, n_1d, n_7d, n_30d                      earlier payments of the card in the window
cents_1d, cents_7d, cents_30d                their amounts in cents
prev_time_ms                                 the last earlier payment within 30 days
                                             (null if none)
prev_loc_time_ms, prev_loc_lat_e6,           the last earlier card-present ("located")
prev_loc_lon_e6, prev_loc_country            payment within 30 days (nulls if none)
loc_n_30d, loc_lat_sum_30d, loc_lon_sum_30d  count and coordinate sums of the earlier
                                             located payments within 30 days
duplicate                                    the card already had this transaction_id
                                             (in its state or earlier in the same input)
late                                         the input's optional ``late`` flag: the row
                                             was checked, not added to the card's state
fact_merchant_id, fact_tx_ms, fact_report_ms  a fraud fact this row completed (nulls if
                                             none): the reported payment's merchant and
                                             time, and the report's time
==========================================  ============================================

Fraud reports: an input row with a non-null ``report_ms`` is a fraud report of the
card's payment ``transaction_id`` (its aggregates are null). The operator keeps each
payment's ``merchant_id`` and whether it was reported, for ``keep_days`` after the card's
newest payment, and emits a fact at the payment's first report: on the report's row if
the payment is held, else on the payment's row when it comes. A micro-batch's payments
are placed before its reports. This is the scoring job's label side input, kept on the
executors: the driver holds no index of payments to join labels to.

A duplicate is not added to the state again; its row carries the aggregates of the held
payments before its own ``(time_ms, transaction_id)``, which for a copy delivered in the
same input are those of its first copy. Callers drop duplicate rows, or score them once.

State: the card's payments newer than the card's own newest payment minus 30 days
(never a global horizon), in a compact binary form (about 23 bytes a payment with the
simulator's ids; see ``CardHistory.java``). A card that stops paying keeps its last
state until its next payment: Spark's state TTL needs processing time, which a replay
would not reproduce (``CardAggregates.java`` says more).
"""

from __future__ import annotations

from py4j.java_gateway import JavaClass
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from fraudstream import config
from fraudstream.errors import FraudstreamError

DEFAULT_PROVIDER = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
PROVIDER_CONF = "spark.sql.streaming.stateStore.providerClass"
CHANGELOG_CONF = "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"
TRACK_ROWS_CONF = "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows"
OPERATOR_CLASS = "fraudstream.CardAggregates"

#: The operator's input columns, in order (``features._card_rows`` makes the same).
INPUT_COLUMNS = [
    "card_id",
    "transaction_id",
    "time_ms",
    "cents",
    "lat_e6",
    "lon_e6",
    "located",
    "country",
]

#: Days a card's payments are kept after its newest without fraud reports: the card windows.
KEEP_DAYS = 30
#: The output columns of a fraud fact (nulls on rows that complete none).
FACT_COLUMNS = ["fact_merchant_id", "fact_tx_ms", "fact_report_ms"]

#: Channels whose coordinates say where the card is (``features`` calls them card-present).
_PRESENT_CHANNELS = ["pos", "atm"]
_CENTS_PER_UNIT = 100.0
_MICRO = 1e6


class OperatorMissingError(FraudstreamError):
    """The session's JVM does not have the card operator's jar; one sentence."""


def _is_finite(value: Column) -> Column:
    return value.isNotNull() & ~F.isnan(value) & (F.abs(value) != F.lit(float("inf")))


def _rounded(value: Column) -> Column:
    """``np.round(value)`` for doubles: ``rint`` rounds half to even on the exact double."""
    return F.rint(value).cast("long")


def cents(amount: Column) -> Column:
    """Integer cents of an amount, rounded as ``features._card_rows`` rounds them."""
    return _rounded(amount * _CENTS_PER_UNIT)


def card_rows(payments: DataFrame, keep: list[str] | tuple[str, ...] = ()) -> DataFrame:
    """Payment events (``schemas.PAYMENT_SCHEMA``) as the operator's input columns.

    Integer cents and micro-degrees rounded exactly as ``features._card_rows`` does
    (``np.round``, half to even, of ``amount * 100`` and ``lat * 1e6``); a payment is
    located when it is card-present (``pos`` or ``atm``) with finite coordinates, and only
    then carries coordinates (else 0) and a country (else null). ``keep``: columns of
    ``payments`` to carry after those.
    """
    located = (
        _is_finite(F.col("lat"))
        & _is_finite(F.col("lon"))
        & F.col("channel").isin(_PRESENT_CHANNELS)
    )
    located = F.coalesce(located, F.lit(False))
    return payments.select(
        F.col("card_id").cast("string").alias("card_id"),
        F.col("transaction_id").cast("string").alias("transaction_id"),
        F.unix_millis(F.col("event_time")).alias("time_ms"),
        cents(F.col("amount")).alias("cents"),
        F.when(located, _rounded(F.col("lat") * _MICRO)).otherwise(F.lit(0)).alias("lat_e6"),
        F.when(located, _rounded(F.col("lon") * _MICRO)).otherwise(F.lit(0)).alias("lon_e6"),
        located.alias("located"),
        F.when(located, F.col("country")).alias("country"),
        *keep,
    )


def require_state_store(spark: SparkSession) -> None:
    """Make the session ready for the operator: RocksDB state store, changelog checkpoints.

    Sets the provider (in place of Spark's default, which transformWithState refuses) and
    changelog checkpointing; a query records both in its checkpoint at its first batch.
    Turns off RocksDB's count of rows (unless set): it reads every key before writing it,
    about a sixth of the time of loading 10 M cards' states (the progress reports' state
    row count is then 0).
    Refuses a third-party provider. Starts the session's streaming manager, without which
    a batch query's state store finds no coordinator
    (``CANNOT_LOAD_STATE_STORE ... StateStoreCoordinator``).
    """
    provider = spark.conf.get(PROVIDER_CONF)
    if provider != ROCKSDB_PROVIDER:
        if provider != DEFAULT_PROVIDER:
            raise ValueError(
                f"The card operator needs {PROVIDER_CONF}={ROCKSDB_PROVIDER}, not {provider}."
            )
        spark.conf.set(PROVIDER_CONF, ROCKSDB_PROVIDER)
    spark.conf.set(CHANGELOG_CONF, "true")
    if not spark.sparkContext.getConf().contains(TRACK_ROWS_CONF):
        spark.conf.set(TRACK_ROWS_CONF, "false")
    spark.streams.active  # noqa: B018 (the call starts the StateStoreCoordinator endpoint)


def _operator_class(spark: SparkSession) -> JavaClass:
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic (not Spark Connect) session
    operator = jvm.fraudstream.CardAggregates
    # py4j answers a class it cannot load with a package object, not an error.
    if not isinstance(operator, JavaClass):
        raise OperatorMissingError(
            f"The card operator ({OPERATOR_CLASS}) is not on Spark's classpath: run "
            f"scripts/build-operator.sh and start the session with {config.CARD_OPERATOR_JAR} "
            "in spark.jars (fraudstream.spark.get_session and ./spark-submit.sh do)."
        )
    return operator


def card_aggregates(
    payments: DataFrame,
    passing: list[str] | tuple[str, ...] = (),
    keep_days: int = KEEP_DAYS,
    initial_states: DataFrame | None = None,
) -> DataFrame:
    """Apply the card operator: one row of aggregates over earlier payments per payment.

    Parameters
    ----------
    payments : DataFrame
        :data:`INPUT_COLUMNS` (from :func:`card_rows`), batch or streaming, and
        optionally a boolean ``late``: a late row gets its aggregates and duplicate
        flag but is not added to its card's state; optionally ``merchant_id`` and
        ``report_ms`` (fraud reports, see the module's docstring).
    passing : list of str
        Other columns of ``payments`` to carry through, after the operator's. With them,
        a row whose ``transaction_id`` is null is not a payment: it comes through with
        null aggregates and touches no state (a streaming query keeps its invalid
        records in the same stream this way).

    Returns
    -------
    DataFrame
        The columns described in this module's docstring, one row per input row, then
        ``passing``.
    keep_days : int
        How long after a card's newest payment its payments are kept (at least 30): as
        long as a fraud report can still make a fact that a feature reads.
    initial_states : DataFrame, optional
        The cards' states to start from (:func:`card_states`' rows), a stream if
        ``payments`` is one (:func:`read_card_states`): they go through the operator as
        input rows, each before its card's payments, and emit nothing. A file stream
        reads them once, at the query's first micro-batch; a restart from the checkpoint
        does not read them again. (Not Spark's initial state of ``transformWithState``:
        Spark 4.2 builds two deserializers per key of an initial state, which took 100 s
        for a million cards on two cores, against 25 s this way.)
    """
    spark = payments.sparkSession
    require_state_store(spark)
    operator = _operator_class(spark)
    context = spark.sparkContext
    assert context._gateway is not None and context._jvm is not None  # a classic session
    names = context._gateway.new_array(context._jvm.String, len(passing))
    for i, name in enumerate(passing):
        names[i] = name
    initial = None if initial_states is None else initial_states._jdf
    return DataFrame(operator.apply(payments._jdf, names, int(keep_days), initial), spark)


def card_states(payments: DataFrame, keep_days: int = KEEP_DAYS) -> DataFrame:
    """The cards' states after a history, by a batch query: ``card_id, state`` (binary).

    The same bytes the streaming operator would hold had it read ``payments`` (the
    operator's input columns, fraud reports included); a scoring query starts from them
    with :func:`card_aggregates`' ``initial_states`` instead of replaying the history
    through the stream. Cards whose state would be empty are left out.
    """
    spark = payments.sparkSession
    operator = _operator_class(spark)
    return DataFrame(operator.states(payments._jdf, int(keep_days)), spark)


def read_card_states(spark: SparkSession, path) -> DataFrame:
    """The cards' states in ``path`` (Parquet of :func:`card_states`) as a file stream.

    It is :func:`card_aggregates`' ``initial_states``: read once, at the first micro-batch.
    """
    schema = T.StructType(
        [T.StructField("card_id", T.StringType()), T.StructField("state", T.BinaryType())]
    )
    return spark.readStream.schema(schema).parquet(str(path))


#: The operator's output columns after ``transaction_id, card_id``: what the scoring
#: job's micro-batches carry beside each Kafka record.
AGGREGATE_COLUMNS = [
    "n_1h",
    "n_1d",
    "n_7d",
    "n_30d",
    "cents_1d",
    "cents_7d",
    "cents_30d",
    "prev_time_ms",
    "prev_loc_time_ms",
    "prev_loc_lat_e6",
    "prev_loc_lon_e6",
    "prev_loc_country",
    "loc_n_30d",
    "loc_lat_sum_30d",
    "loc_lon_sum_30d",
    "duplicate",
    "late",
]
