package fraudstream;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One card's recent payments, sorted by (time_ms, transaction_id), with the aggregates of
 * the payments before a given one, the card's fraud reports, and the compact binary form
 * kept in the state store.
 *
 * <p>Payments are kept for a given number of days after the card's newest (30 for the
 * aggregates alone; the label delay plus 30 when fraud reports are resolved here, as long
 * as a report can still matter to a feature), each with its merchant and whether it was
 * reported as fraud. Aggregates only ever look 30 days back. A fraud report whose payment
 * is not held yet waits (pending) until the payment comes or the card moves past it.
 *
 * <p>Pure Java, no Spark: {@link CardAggregates} wires it into a StatefulProcessor.
 *
 * <h2>Binary form (version 2)</h2>
 *
 * <pre>
 *   byte    version (2)
 *   varint  number of payments n
 *   varint  zigzag(time_ms of the first payment)
 *   varint  number of distinct merchants m, then m strings (varint length, UTF-8)
 *   n times:
 *     varint  time_ms minus the previous payment's (0 for the first; never negative)
 *     varint  zigzag(cents) &lt;&lt; 4 | flags   (bit 0 located, bit 1 country as the
 *             previous located payment's, bit 2 country null, bit 3 reported as fraud)
 *     varint  merchant: its place in the table plus one, 0 for none
 *     if located: zigzag varint lat_e6 and lon_e6 minus the previous located payment's
 *     if located, country neither null nor repeated: varint length, UTF-8 bytes
 *     transaction_id: varint (length &lt;&lt; 1 | packed), then either its UTF-8 bytes, or
 *             (packed) its prefix's UTF-8 bytes, a varint byte count and the trailing
 *             lowercase hex digits two to a byte
 *   varint  number of pending fraud reports p, then p times: transaction_id (as above),
 *           zigzag varint report time (ms)
 * </pre>
 *
 * <p>The whole transaction id is kept, not a hash: ties at the same millisecond are
 * ordered by id (as {@code features.compute} does), and a payment of a later micro-batch
 * tied with one in the state can only be placed exactly by comparing the ids. Packing
 * hex ids makes a simulator id ("t" + 16 hex digits) cost 11 bytes instead of 18.
 */
public final class CardHistory {
  public static final long HOUR_MS = 3_600_000L;
  public static final long DAY_MS = 86_400_000L;
  public static final long HISTORY_MS = 30 * DAY_MS;
  private static final byte VERSION = 2;
  private static final int LOCATED = 1;
  private static final int SAME_COUNTRY = 2;
  private static final int NULL_COUNTRY = 4;
  private static final int REPORTED = 8;
  private static final int FLAG_BITS = 4;
  /** Shortest hex tail worth packing (shorter ones save nothing). */
  private static final int MIN_PACKED_HEX = 8;

  long[] time = new long[8];
  long[] cents = new long[8];
  long[] lat = new long[8];
  long[] lon = new long[8];
  boolean[] located = new boolean[8];
  String[] country = new String[8];
  String[] id = new String[8];
  String[] merchant = new String[8];
  boolean[] reported = new boolean[8];
  int size;
  private Set<String> ids;
  /** Fraud reports whose payment is not held: transaction ids and report times. */
  final List<String> pendingId = new ArrayList<>();
  final List<Long> pendingMs = new ArrayList<>();

  /** A payment of the card reported as fraud: what the features need of it. */
  public static final class Fact {
    public final String merchantId;
    public final long timeMs;
    public final long reportMs;

    Fact(String merchantId, long timeMs, long reportMs) {
      this.merchantId = merchantId;
      this.timeMs = timeMs;
      this.reportMs = reportMs;
    }
  }

  /** The aggregates of the payments before one payment, within 30 days of it. */
  public static final class Aggregates {
    public int n1h;
    public int n1d;
    public int n7d;
    public int n30d;
    public long cents1d;
    public long cents7d;
    public long cents30d;
    public Long prevTimeMs;
    public Long prevLocTimeMs;
    public Long prevLocLatE6;
    public Long prevLocLonE6;
    public String prevLocCountry;
    public int locN30d;
    public long locLatSum30d;
    public long locLonSum30d;
  }

  public int size() {
    return size;
  }

  /** Nothing held: no payment and no pending report. */
  public boolean isEmpty() {
    return size == 0 && pendingId.isEmpty();
  }

  public long newestTime() {
    return time[size - 1];
  }

  /** Whether a payment with this id is held. */
  public boolean contains(String transactionId) {
    if (ids == null) {
      ids = new HashSet<>(Math.max(16, size * 2));
      for (int i = 0; i < size; i++) {
        ids.add(id[i]);
      }
    }
    return ids.contains(transactionId);
  }

  /** Where a payment goes in the order: the number of held payments before it. */
  public int position(long timeMs, String transactionId) {
    int lo = 0;
    int hi = size;
    while (lo < hi) {
      int mid = (lo + hi) >>> 1;
      if (compare(time[mid], id[mid], timeMs, transactionId) < 0) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  static int compare(long timeA, String idA, long timeB, String idB) {
    int byTime = Long.compare(timeA, timeB);
    return byTime != 0 ? byTime : idA.compareTo(idB);
  }

  /**
   * The aggregates of the payments before position {@code at} whose time is in
   * {@code (timeMs - w, timeMs]} for each window w.
   */
  public Aggregates before(int at, long timeMs) {
    Aggregates out = new Aggregates();
    for (int j = at - 1; j >= 0 && time[j] > timeMs - HISTORY_MS; j--) {
      long t = time[j];
      if (out.prevTimeMs == null) {
        out.prevTimeMs = t;
      }
      out.n30d++;
      out.cents30d += cents[j];
      if (t > timeMs - 7 * DAY_MS) {
        out.n7d++;
        out.cents7d += cents[j];
        if (t > timeMs - DAY_MS) {
          out.n1d++;
          out.cents1d += cents[j];
          if (t > timeMs - HOUR_MS) {
            out.n1h++;
          }
        }
      }
      if (located[j]) {
        if (out.prevLocTimeMs == null) {
          out.prevLocTimeMs = t;
          out.prevLocLatE6 = lat[j];
          out.prevLocLonE6 = lon[j];
          out.prevLocCountry = country[j];
        }
        out.locN30d++;
        out.locLatSum30d += lat[j];
        out.locLonSum30d += lon[j];
      }
    }
    return out;
  }

  /** Insert a payment at {@code at} (from {@link #position}). */
  public void insert(
      int at,
      long timeMs,
      String transactionId,
      long centsValue,
      boolean isLocated,
      long latE6,
      long lonE6,
      String countryValue,
      String merchantId,
      boolean isReported) {
    if (size == time.length) {
      int grown = size * 2;
      time = Arrays.copyOf(time, grown);
      cents = Arrays.copyOf(cents, grown);
      lat = Arrays.copyOf(lat, grown);
      lon = Arrays.copyOf(lon, grown);
      located = Arrays.copyOf(located, grown);
      country = Arrays.copyOf(country, grown);
      id = Arrays.copyOf(id, grown);
      merchant = Arrays.copyOf(merchant, grown);
      reported = Arrays.copyOf(reported, grown);
    }
    int tail = size - at;
    if (tail > 0) {
      System.arraycopy(time, at, time, at + 1, tail);
      System.arraycopy(cents, at, cents, at + 1, tail);
      System.arraycopy(lat, at, lat, at + 1, tail);
      System.arraycopy(lon, at, lon, at + 1, tail);
      System.arraycopy(located, at, located, at + 1, tail);
      System.arraycopy(country, at, country, at + 1, tail);
      System.arraycopy(id, at, id, at + 1, tail);
      System.arraycopy(merchant, at, merchant, at + 1, tail);
      System.arraycopy(reported, at, reported, at + 1, tail);
    }
    time[at] = timeMs;
    cents[at] = centsValue;
    located[at] = isLocated;
    // Only located payments carry a place: the features never read another's.
    lat[at] = isLocated ? latE6 : 0;
    lon[at] = isLocated ? lonE6 : 0;
    country[at] = isLocated ? countryValue : null;
    id[at] = transactionId;
    merchant[at] = merchantId;
    reported[at] = isReported;
    size++;
    if (ids != null) {
      ids.add(transactionId);
    }
  }

  /** {@link #expire(long)} with the aggregates' 30 days. */
  public void expire() {
    expire(HISTORY_MS);
  }

  /**
   * Drop what no later payment or report of this card can need: payments and pending
   * reports at or before the card's newest payment minus {@code keepMs}.
   */
  public void expire(long keepMs) {
    if (size == 0) {
      return;
    }
    long horizon = newestTime() - keepMs;
    for (int i = pendingId.size() - 1; i >= 0; i--) {
      if (pendingMs.get(i) <= horizon) {
        pendingId.remove(i);
        pendingMs.remove(i);
      }
    }
    int drop = 0;
    while (drop < size && time[drop] <= horizon) {
      drop++;
    }
    if (drop == 0) {
      return;
    }
    int keep = size - drop;
    System.arraycopy(time, drop, time, 0, keep);
    System.arraycopy(cents, drop, cents, 0, keep);
    System.arraycopy(lat, drop, lat, 0, keep);
    System.arraycopy(lon, drop, lon, 0, keep);
    System.arraycopy(located, drop, located, 0, keep);
    System.arraycopy(country, drop, country, 0, keep);
    System.arraycopy(id, drop, id, 0, keep);
    System.arraycopy(merchant, drop, merchant, 0, keep);
    System.arraycopy(reported, drop, reported, 0, keep);
    Arrays.fill(country, keep, size, null);
    Arrays.fill(id, keep, size, null);
    Arrays.fill(merchant, keep, size, null);
    size = keep;
    ids = null;
  }

  // --- fraud reports ---------------------------------------------------------------------

  /**
   * A fraud report of one of the card's payments. If the payment is held and not
   * reported yet, it is marked reported and its fact returned; if it is held and was
   * reported already, null (a payment counts once, at its first report seen); if it is
   * not held, the report waits (the earliest report of a payment is kept) and null.
   */
  public Fact report(String transactionId, long reportMs) {
    for (int i = size - 1; i >= 0; i--) {
      if (id[i].equals(transactionId)) {
        if (reported[i]) {
          return null;
        }
        reported[i] = true;
        return new Fact(merchant[i], time[i], reportMs);
      }
    }
    int waiting = pendingId.indexOf(transactionId);
    if (waiting < 0) {
      pendingId.add(transactionId);
      pendingMs.add(reportMs);
    } else if (reportMs < pendingMs.get(waiting)) {
      pendingMs.set(waiting, reportMs);
    }
    return null;
  }

  /**
   * After a payment was inserted at {@code at}: if a report was waiting for it, mark the
   * payment reported and return its fact.
   */
  public Fact claimPending(int at) {
    if (pendingId.isEmpty()) {
      return null;
    }
    int waiting = pendingId.indexOf(id[at]);
    if (waiting < 0) {
      return null;
    }
    long reportMs = pendingMs.remove(waiting);
    pendingId.remove(waiting);
    reported[at] = true;
    return new Fact(merchant[at], time[at], reportMs);
  }

  // --- binary form -----------------------------------------------------------------------

  public byte[] encode() {
    ByteArrayOutputStream out = new ByteArrayOutputStream(16 + size * 24);
    out.write(VERSION);
    writeVarint(out, size);
    writeVarint(out, size == 0 ? 0 : zigzag(time[0]));
    Map<String, Integer> merchants = new HashMap<>();
    List<String> table = new ArrayList<>();
    for (int i = 0; i < size; i++) {
      if (merchant[i] != null && !merchants.containsKey(merchant[i])) {
        merchants.put(merchant[i], table.size());
        table.add(merchant[i]);
      }
    }
    writeVarint(out, table.size());
    for (String name : table) {
      writeString(out, name);
    }
    long previousTime = size == 0 ? 0 : time[0];
    long previousLat = 0;
    long previousLon = 0;
    String previousCountry = null;
    for (int i = 0; i < size; i++) {
      writeVarint(out, time[i] - previousTime);
      previousTime = time[i];
      int flags = 0;
      boolean writeCountry = false;
      if (located[i]) {
        flags |= LOCATED;
        if (country[i] == null) {
          flags |= NULL_COUNTRY;
        } else if (country[i].equals(previousCountry)) {
          flags |= SAME_COUNTRY;
        } else {
          writeCountry = true;
        }
      }
      if (reported[i]) {
        flags |= REPORTED;
      }
      writeVarint(out, (zigzag(cents[i]) << FLAG_BITS) | flags);
      writeVarint(out, merchant[i] == null ? 0 : merchants.get(merchant[i]) + 1);
      if (located[i]) {
        writeVarint(out, zigzag(lat[i] - previousLat));
        writeVarint(out, zigzag(lon[i] - previousLon));
        previousLat = lat[i];
        previousLon = lon[i];
        if (writeCountry) {
          writeString(out, country[i]);
        }
        previousCountry = country[i];
      }
      writeId(out, id[i]);
    }
    writeVarint(out, pendingId.size());
    for (int i = 0; i < pendingId.size(); i++) {
      writeId(out, pendingId.get(i));
      writeVarint(out, zigzag(pendingMs.get(i)));
    }
    return out.toByteArray();
  }

  public static CardHistory decode(byte[] bytes) {
    CardHistory history = new CardHistory();
    if (bytes == null || bytes.length == 0) {
      return history;
    }
    int[] at = {0};
    if (bytes[at[0]++] != VERSION) {
      throw new IllegalStateException(
          "Card state of version " + bytes[0] + ", this operator reads version " + VERSION
              + ": start the job on a new checkpoint (or rebuild the views from the topic).");
    }
    int n = (int) readVarint(bytes, at);
    long previousTime = unzigzag(readVarint(bytes, at));
    String[] table = new String[(int) readVarint(bytes, at)];
    for (int i = 0; i < table.length; i++) {
      table[i] = readString(bytes, at);
    }
    long previousLat = 0;
    long previousLon = 0;
    String previousCountry = null;
    for (int i = 0; i < n; i++) {
      long t = previousTime + readVarint(bytes, at);
      previousTime = t;
      long packed = readVarint(bytes, at);
      int flags = (int) (packed & ((1 << FLAG_BITS) - 1));
      long centsValue = unzigzag(packed >>> FLAG_BITS);
      int merchantAt = (int) readVarint(bytes, at);
      boolean isLocated = (flags & LOCATED) != 0;
      long latE6 = 0;
      long lonE6 = 0;
      String countryValue = null;
      if (isLocated) {
        latE6 = previousLat + unzigzag(readVarint(bytes, at));
        lonE6 = previousLon + unzigzag(readVarint(bytes, at));
        previousLat = latE6;
        previousLon = lonE6;
        if ((flags & NULL_COUNTRY) != 0) {
          countryValue = null;
        } else if ((flags & SAME_COUNTRY) != 0) {
          countryValue = previousCountry;
        } else {
          countryValue = readString(bytes, at);
        }
        previousCountry = countryValue;
      }
      String transactionId = readId(bytes, at);
      history.insert(
          i,
          t,
          transactionId,
          centsValue,
          isLocated,
          latE6,
          lonE6,
          countryValue,
          merchantAt == 0 ? null : table[merchantAt - 1],
          (flags & REPORTED) != 0);
    }
    int pending = (int) readVarint(bytes, at);
    for (int i = 0; i < pending; i++) {
      history.pendingId.add(readId(bytes, at));
      history.pendingMs.add(unzigzag(readVarint(bytes, at)));
    }
    return history;
  }

  private static void writeId(ByteArrayOutputStream out, String value) {
    int hexStart = value.length();
    while (hexStart > 0 && isLowerHex(value.charAt(hexStart - 1))) {
      hexStart--;
    }
    int hexLength = value.length() - hexStart;
    if (hexLength % 2 == 1) {
      hexStart++;
      hexLength--;
    }
    if (hexLength < MIN_PACKED_HEX) {
      byte[] raw = value.getBytes(StandardCharsets.UTF_8);
      writeVarint(out, (long) raw.length << 1);
      out.write(raw, 0, raw.length);
      return;
    }
    byte[] prefix = value.substring(0, hexStart).getBytes(StandardCharsets.UTF_8);
    writeVarint(out, ((long) prefix.length << 1) | 1);
    out.write(prefix, 0, prefix.length);
    writeVarint(out, hexLength / 2);
    for (int i = hexStart; i < value.length(); i += 2) {
      out.write((Character.digit(value.charAt(i), 16) << 4) | Character.digit(value.charAt(i + 1), 16));
    }
  }

  private static String readId(byte[] bytes, int[] at) {
    long header = readVarint(bytes, at);
    int length = (int) (header >>> 1);
    String head = new String(bytes, at[0], length, StandardCharsets.UTF_8);
    at[0] += length;
    if ((header & 1) == 0) {
      return head;
    }
    int packedBytes = (int) readVarint(bytes, at);
    StringBuilder text = new StringBuilder(head.length() + 2 * packedBytes).append(head);
    for (int i = 0; i < packedBytes; i++) {
      int b = bytes[at[0]++] & 0xff;
      text.append(Character.forDigit(b >>> 4, 16)).append(Character.forDigit(b & 15, 16));
    }
    return text.toString();
  }

  private static boolean isLowerHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }

  private static void writeString(ByteArrayOutputStream out, String value) {
    byte[] raw = value.getBytes(StandardCharsets.UTF_8);
    writeVarint(out, raw.length);
    out.write(raw, 0, raw.length);
  }

  private static String readString(byte[] bytes, int[] at) {
    int length = (int) readVarint(bytes, at);
    String value = new String(bytes, at[0], length, StandardCharsets.UTF_8);
    at[0] += length;
    return value;
  }

  static long zigzag(long value) {
    return (value << 1) ^ (value >> 63);
  }

  static long unzigzag(long value) {
    return (value >>> 1) ^ -(value & 1);
  }

  static void writeVarint(ByteArrayOutputStream out, long value) {
    while ((value & ~0x7FL) != 0) {
      out.write((int) ((value & 0x7F) | 0x80));
      value >>>= 7;
    }
    out.write((int) value);
  }

  static long readVarint(byte[] bytes, int[] at) {
    long value = 0;
    int shift = 0;
    while (true) {
      byte b = bytes[at[0]++];
      value |= (long) (b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        return value;
      }
      shift += 7;
    }
  }
}
