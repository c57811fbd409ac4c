package fraudstream;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapGroupsFunction;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.KeyValueGroupedDataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Per-card aggregates over each card's earlier payments, with the card's last 30 days
 * kept in Spark's state store: one operator for a batch query over a history (training)
 * and a streaming query (scoring).
 *
 * <p>For every input row it emits the aggregates of the card's payments before it
 * (earlier = smaller (time_ms, transaction_id)) whose time is in (t - w, t] for w = 1 h,
 * 1 d, 7 d, 30 d; the payment itself is not included. A row whose transaction_id the card
 * already holds (in the state, or earlier in the same input) is a duplicate: it is emitted
 * with {@code duplicate = true}, is not added to the state, and carries the aggregates of
 * the held payments before its own (time_ms, transaction_id) (for a copy delivered in the
 * same input, those of the first copy).
 *
 * <p>An optional boolean input column {@code late} marks payments that the caller sets
 * aside as late: such a row is checked against the card (its aggregates and its duplicate
 * flag are emitted as for any row) but is never added to the state, so the card's later
 * payments do not count it. Output column {@code late} says which rows those were.
 *
 * <p><b>Fraud reports.</b> A row with a non-null {@code report_ms} is not a payment but a
 * fraud report of the card's payment {@code transaction_id}, reported at that time. The
 * operator keeps each payment's {@code merchant_id} and whether it was reported, for the
 * given retention (the label delay plus 30 days, say), and turns reports into fraud facts:
 * the first report of a held payment emits {@code fact_merchant_id, fact_tx_ms,
 * fact_report_ms} on the report's row; a report of a payment not held yet waits, and the
 * payment's row emits the fact when it comes. A micro-batch's payments are placed before
 * its reports, so a report may name a payment of the same batch. Report rows carry null
 * aggregates.
 *
 * <p>State: one {@code ValueState<byte[]>} per card ({@link CardHistory}'s binary form),
 * holding the card's payments newer than its own newest payment minus 30 days. A card
 * whose state would be empty is cleared. A card that stops paying keeps its last state
 * (at most 30 days of payments) until its next payment: Spark's state TTL needs
 * TimeMode.ProcessingTime, under which an availableNow query kept running no-data
 * batches, and a processing-time expiry would make a replay differ from the live run.
 */
public final class CardAggregates {
  private CardAggregates() {}

  /**
   * The input columns, in this order; {@code late} (then false), {@code merchant_id} and
   * {@code report_ms} (then null) may be absent.
   */
  public static final String[] INPUT_COLUMNS = {
    "card_id", "transaction_id", "time_ms", "cents", "lat_e6", "lon_e6", "located", "country",
    "late", "merchant_id", "report_ms", "state"
  };

  private static final int LATE = 8;
  private static final int MERCHANT = 9;
  private static final int REPORT = 10;
  private static final int STATE = 11;
  private static final int DEFAULT_KEEP_DAYS = 30;

  public static final StructType OUTPUT_SCHEMA =
      new StructType()
          .add("transaction_id", DataTypes.StringType, false)
          .add("card_id", DataTypes.StringType, false)
          .add("n_1h", DataTypes.IntegerType, false)
          .add("n_1d", DataTypes.IntegerType, false)
          .add("n_7d", DataTypes.IntegerType, false)
          .add("n_30d", DataTypes.IntegerType, false)
          .add("cents_1d", DataTypes.LongType, false)
          .add("cents_7d", DataTypes.LongType, false)
          .add("cents_30d", DataTypes.LongType, false)
          .add("prev_time_ms", DataTypes.LongType, true)
          .add("prev_loc_time_ms", DataTypes.LongType, true)
          .add("prev_loc_lat_e6", DataTypes.LongType, true)
          .add("prev_loc_lon_e6", DataTypes.LongType, true)
          .add("prev_loc_country", DataTypes.StringType, true)
          .add("loc_n_30d", DataTypes.IntegerType, false)
          .add("loc_lat_sum_30d", DataTypes.LongType, false)
          .add("loc_lon_sum_30d", DataTypes.LongType, false)
          .add("duplicate", DataTypes.BooleanType, false)
          .add("late", DataTypes.BooleanType, false)
          .add("fact_merchant_id", DataTypes.StringType, true)
          .add("fact_tx_ms", DataTypes.LongType, true)
          .add("fact_report_ms", DataTypes.LongType, true);

  /**
   * Apply the operator.
   *
   * @param payments rows with {@link #INPUT_COLUMNS} (more columns are ignored), batch or
   *     streaming
   */
  public static Dataset<Row> apply(Dataset<Row> payments) {
    return apply(payments, new String[0]);
  }

  /**
   * Apply the operator and carry other columns of each row through it.
   *
   * <p>Output: the {@link #OUTPUT_SCHEMA} columns, all nullable, then the {@code passing}
   * columns as they came in. A row with a null {@code transaction_id} is not a payment (a
   * record that failed validation, say): it goes through with null aggregates and touches
   * no state. This lets a streaming query keep every record of a micro-batch in one
   * stream, so that its {@code foreachBatch} sees the records and their aggregates
   * together.
   *
   * @param payments rows with {@link #INPUT_COLUMNS} and the {@code passing} columns
   * @param passing names of the columns to carry through, in output order
   */
  public static Dataset<Row> apply(Dataset<Row> payments, String[] passing) {
    return apply(payments, passing, DEFAULT_KEEP_DAYS);
  }

  /**
   * Apply the operator, keeping each card's payments for {@code keepDays} days after its
   * newest (at least 30, the aggregates' longest window): as long as a fraud report of a
   * payment can still be turned into a fact.
   */
  public static Dataset<Row> apply(Dataset<Row> payments, String[] passing, int keepDays) {
    return apply(payments, passing, keepDays, null);
  }

  /**
   * Apply the operator, starting from the cards' states that {@link #states} built from a
   * history.
   *
   * <p>The states are input rows like the payments (a union), not Spark's initial state
   * of {@code transformWithState}: Spark 4.2 generates and compiles-or-caches two
   * deserializers for every key of an initial state, about 0.2 ms a card, so a million
   * cards' states took 100 s to load on two cores. Given as a stream (a file source of
   * the states' folder), they are read once, at the query's first micro-batch, and a
   * restart from the checkpoint does not read them again: the file source remembers the
   * files it has read.
   *
   * @param initialStates rows of {@code card_id} (string) and {@code state} (binary), one
   *     per card, streaming if {@code payments} is, or null for none
   */
  public static Dataset<Row> apply(
      Dataset<Row> payments, String[] passing, int keepDays, Dataset<Row> initialStates) {
    if (keepDays < DEFAULT_KEEP_DAYS) {
      throw new IllegalArgumentException(
          "The card operator keeps at least " + DEFAULT_KEEP_DAYS + " days, not " + keepDays);
    }
    boolean reports = Arrays.asList(payments.schema().fieldNames()).contains("report_ms");
    StructType schema = OUTPUT_SCHEMA;
    if (passing.length > 0 || reports) {
      schema = new StructType();
      for (org.apache.spark.sql.types.StructField field : OUTPUT_SCHEMA.fields()) {
        schema = schema.add(field.name(), field.dataType(), true);
      }
      StructType input = payments.schema();
      for (String name : passing) {
        org.apache.spark.sql.types.StructField field = input.apply(name);
        schema = schema.add(field.name(), field.dataType(), true);
      }
    }
    Column[] columns = new Column[INPUT_COLUMNS.length + passing.length];
    Column[] operatorColumns = operatorColumns(payments.schema());
    System.arraycopy(operatorColumns, 0, columns, 0, operatorColumns.length);
    for (int i = 0; i < passing.length; i++) {
      columns[operatorColumns.length + i] = functions.col(passing[i]);
    }
    Dataset<Row> input = payments.select(columns);
    if (initialStates != null) {
      // A state row: the card and its state, every other column null.
      StructType inputSchema = input.schema();
      Column[] stateColumns = new Column[inputSchema.size()];
      for (int i = 0; i < stateColumns.length; i++) {
        org.apache.spark.sql.types.StructField field = inputSchema.fields()[i];
        Column value =
            i == 0
                ? functions.col("card_id").cast("string")
                : i == STATE
                    ? functions.col("state").cast("binary")
                    : functions.lit(null).cast(field.dataType());
        stateColumns[i] = value.alias(field.name());
      }
      input = input.union(initialStates.select(stateColumns));
    }
    KeyValueGroupedDataset<String, Row> grouped =
        input
            .groupByKey(
                (MapFunction<Row, String>) row -> row.isNullAt(0) ? "" : row.getString(0),
                Encoders.STRING());
    Processor processor = new Processor(passing.length, keepDays * CardHistory.DAY_MS);
    return grouped.transformWithState(
        processor, TimeMode.None(), OutputMode.Append(), Encoders.row(schema));
  }

  /** The schema of {@link #states}' output: one row per card. */
  public static final StructType STATE_SCHEMA =
      new StructType()
          .add("card_id", DataTypes.StringType, false)
          .add("state", DataTypes.BinaryType, false);

  /**
   * The cards' states after a history, built by a batch query: what the streaming
   * operator would hold had it read the history, in the same binary form. A scoring query
   * can start from them ({@link #apply(Dataset, String[], int, Dataset)}) instead of
   * replaying the history through the stream.
   *
   * @param payments the history's rows with {@link #INPUT_COLUMNS} (reports included)
   * @param keepDays as for {@link #apply(Dataset, String[], int)}
   */
  public static Dataset<Row> states(Dataset<Row> payments, int keepDays) {
    if (keepDays < DEFAULT_KEEP_DAYS) {
      throw new IllegalArgumentException(
          "The card operator keeps at least " + DEFAULT_KEEP_DAYS + " days, not " + keepDays);
    }
    long keepMs = keepDays * CardHistory.DAY_MS;
    return payments
        .select(operatorColumns(payments.schema()))
        .filter(functions.col("card_id").isNotNull().and(functions.col("transaction_id").isNotNull()))
        .groupByKey((MapFunction<Row, String>) row -> row.getString(0), Encoders.STRING())
        .flatMapGroups(
            (FlatMapGroupsFunction<String, Row, Row>)
                (cardId, rows) -> {
                  CardHistory card =
                      advance(
                          cardId,
                          CardHistory.decode(null),
                          CollectionConverters.asScala(rows),
                          0,
                          keepMs,
                          new ArrayList<>());
                  List<Row> state = new ArrayList<>();
                  if (card != null && !card.isEmpty()) {
                    state.add(RowFactory.create(cardId, card.encode()));
                  }
                  return state.iterator();
                },
            Encoders.row(STATE_SCHEMA));
  }

  private static Column[] operatorColumns(StructType input) {
    List<String> names = Arrays.asList(input.fieldNames());
    Column late =
        names.contains("late")
            ? functions.coalesce(functions.col("late").cast("boolean"), functions.lit(false))
            : functions.lit(false);
    Column merchant =
        names.contains("merchant_id")
            ? functions.col("merchant_id").cast("string")
            : functions.lit(null).cast("string");
    Column report =
        names.contains("report_ms")
            ? functions.col("report_ms").cast("long")
            : functions.lit(null).cast("long");
    Column[] columns = {
      functions.col("card_id").cast("string"),
      functions.col("transaction_id").cast("string"),
      functions.col("time_ms").cast("long"),
      functions.col("cents").cast("long"),
      functions.col("lat_e6").cast("long"),
      functions.col("lon_e6").cast("long"),
      functions.col("located").cast("boolean"),
      functions.col("country").cast("string"),
      late.alias("late"),
      merchant.alias("merchant_id"),
      report.alias("report_ms"),
      functions.lit(null).cast("binary").alias("state"),
    };
    return columns;
  }

  /** The StatefulProcessor; input rows have {@link #INPUT_COLUMNS} in order. */
  public static final class Processor extends StatefulProcessor<String, Row, Row> {
    private static final long serialVersionUID = 1L;
    private final int passing;
    private final long keepMs;
    private transient ValueState<byte[]> history;

    public Processor() {
      this(0, DEFAULT_KEEP_DAYS * CardHistory.DAY_MS);
    }

    /**
     * @param passing how many columns after the operator's own to carry through
     * @param keepMs how long after the card's newest payment its payments are kept
     */
    public Processor(int passing, long keepMs) {
      this.passing = passing;
      this.keepMs = keepMs;
    }

    @Override
    public void init(OutputMode outputMode, TimeMode timeMode) {
      history = getHandle().getValueState("history", Encoders.BINARY(), TTLConfig.NONE());
    }

    @Override
    public scala.collection.Iterator<Row> handleInputRows(
        String cardId, scala.collection.Iterator<Row> inputRows, TimerValues timerValues) {
      // get() is null for a card without state: one lookup, not exists() and get().
      CardHistory card = CardHistory.decode(history.get());
      List<Row> out = new ArrayList<>();
      CardHistory after = advance(cardId, card, inputRows, passing, keepMs, out);
      if (after != null) {
        if (after.isEmpty()) {
          history.clear();
        } else {
          history.update(after.encode());
        }
      }
      return CollectionConverters.asScala(out.iterator());
    }
  }

  /**
   * One card's step: its input rows (of one micro-batch, or its whole history in a batch
   * query) against its state, which is updated in place (or replaced by the state a state
   * row brings) and expired.
   *
   * <p>A row with a non-null {@code state} is not a payment but the card's state as
   * {@link #states} built it from a history: it is taken before the card's payments, emits
   * nothing, and is refused if the card holds anything already (initial states come once,
   * before the card's first payment of the stream).
   *
   * @param out receives one output row per input row, except state rows
   * @return the card's state after the rows, or null if it did not change
   */
  static CardHistory advance(
      String cardId,
      CardHistory card,
      scala.collection.Iterator<Row> inputRows,
      int passing,
      long keepMs,
      List<Row> out) {
    List<Row> rows = new ArrayList<>();
    List<Row> reports = new ArrayList<>();
    byte[] initial = null;
    while (inputRows.hasNext()) {
      Row row = inputRows.next();
      if (!row.isNullAt(STATE)) {
        if (initial != null || !card.isEmpty()) {
          throw new IllegalStateException(
              "Card " + cardId + " was given an initial state while it holds one already: "
                  + "initial states are read once, at a new checkpoint's first micro-batch, "
                  + "one per card.");
        }
        initial = (byte[]) row.get(STATE);
      } else if (row.isNullAt(1) || row.isNullAt(0)) {
        // Not a payment: through with null aggregates, no state touched.
        out.add(withPassing(row, new Object[OUTPUT_SCHEMA.size()], passing));
      } else if (!row.isNullAt(REPORT)) {
        reports.add(row);
      } else {
        rows.add(row);
      }
    }
    boolean changed = false;
    if (initial != null) {
      card = CardHistory.decode(initial);
      changed = true;
    }
    if (rows.isEmpty() && reports.isEmpty()) {
      return changed ? card : null;
    }
    // Batch queries hand over a card's whole history at once, in no particular order;
    // streaming ones a micro-batch's rows. Either way: in event order. List.sort is
    // stable, so of two copies of one payment the first given stays first.
    rows.sort(
        (a, b) -> CardHistory.compare(a.getLong(2), a.getString(1), b.getLong(2), b.getString(1)));
    for (Row row : rows) {
      String transactionId = row.getString(1);
      long timeMs = row.getLong(2);
      int at = card.position(timeMs, transactionId);
      CardHistory.Aggregates agg = card.before(at, timeMs);
      boolean duplicate = card.contains(transactionId);
      boolean late = row.getBoolean(LATE);
      CardHistory.Fact fact = null;
      if (!duplicate && !late) {
        boolean located = !row.isNullAt(6) && row.getBoolean(6);
        card.insert(
            at,
            timeMs,
            transactionId,
            row.isNullAt(3) ? 0L : row.getLong(3),
            located,
            row.isNullAt(4) ? 0L : row.getLong(4),
            row.isNullAt(5) ? 0L : row.getLong(5),
            row.isNullAt(7) ? null : row.getString(7),
            row.isNullAt(MERCHANT) ? null : row.getString(MERCHANT),
            false);
        fact = card.claimPending(at);
        changed = true;
      }
      out.add(
          withPassing(
              row,
              new Object[] {
                transactionId,
                cardId,
                agg.n1h,
                agg.n1d,
                agg.n7d,
                agg.n30d,
                agg.cents1d,
                agg.cents7d,
                agg.cents30d,
                agg.prevTimeMs,
                agg.prevLocTimeMs,
                agg.prevLocLatE6,
                agg.prevLocLonE6,
                agg.prevLocCountry,
                agg.locN30d,
                agg.locLatSum30d,
                agg.locLonSum30d,
                duplicate,
                late,
                fact == null ? null : fact.merchantId,
                fact == null ? null : fact.timeMs,
                fact == null ? null : fact.reportMs
              },
              passing));
    }
    // Reports after the payments (one may name a payment of this batch), earliest
    // first: a payment reported twice counts once, at its earliest report.
    reports.sort((a, b) -> Long.compare(a.getLong(REPORT), b.getLong(REPORT)));
    for (Row row : reports) {
      CardHistory.Fact fact = card.report(row.getString(1), row.getLong(REPORT));
      Object[] values = new Object[OUTPUT_SCHEMA.size()];
      values[0] = row.getString(1);
      values[1] = cardId;
      if (fact != null) {
        values[values.length - 3] = fact.merchantId;
        values[values.length - 2] = fact.timeMs;
        values[values.length - 1] = fact.reportMs;
      }
      out.add(withPassing(row, values, passing));
      changed = true;
    }
    if (!changed) {
      return null;
    }
    card.expire(keepMs);
    return card;
  }

  /** The operator's output values followed by the row's carried columns. */
  private static Row withPassing(Row row, Object[] values, int passing) {
    if (passing == 0) {
      return RowFactory.create(values);
    }
    Object[] all = new Object[values.length + passing];
    System.arraycopy(values, 0, all, 0, values.length);
    for (int i = 0; i < passing; i++) {
      all[values.length + i] = row.get(INPUT_COLUMNS.length + i);
    }
    return RowFactory.create(all);
  }
}
