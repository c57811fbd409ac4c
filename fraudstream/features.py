"""The one feature definition, shared by training and scoring.

:func:`compute` turns payment events into model features, as of each payment: a
payment's features use that payment and earlier ones of the same card or merchant,
never a later one, and fraud labels only once they were reported. It works on a whole
history at once: it is the definition, which training uses and against which the
tests hold the scoring job's executors (the card operator's aggregates through
:func:`card_features_from_aggregates`, the per-day merchant tables) to 1e-9.

Order and ties. Events are ordered by ``(event_time, transaction_id)``: of two
payments at the same millisecond, the one with the smaller ``transaction_id`` comes
first and is in the other's windows, not the reverse. Input order does not matter.

Features (all float64, never null):

=================================  ==================================================
card_tx_count_{1,7,30}d            payments of the card in the last 1/7/30 days,
                                   this one included (window ``(t - w, t]``)
card_mean_amount_{1,7,30}d         their mean amount
card_tx_count_1h                   payments of the card in the last hour (velocity)
seconds_since_prev                 seconds since the card's previous payment (capped
                                   at 30 days; 30 days when there is none)
amount_to_card_mean                amount / mean amount of the card's earlier payments
                                   of the last 30 days (1 when there are none)
km_from_prev, speed_kmh_from_prev  distance to the card's previous card-present
                                   payment and the speed it implies (time floored at
                                   10 minutes); 0 when either is not card-present
km_from_usual                      distance to the mean location of the card's earlier
                                   card-present payments of the last 30 days
country_changed                    1 if the country differs from the previous
                                   card-present payment's
merchant_tx_count_{1,7,30}d        the merchant's payments on the 1/7/30 whole days
                                   (UTC) that end ``label_delay_days`` before the
                                   payment's day
merchant_fraud_rate_{1,7,30}d      the share of those that were reported as fraud
                                   before the payment's day began (0 if none)
merchant_recent_fraud_rate_{7,30}d the same share over the 7/30 whole days just
                                   before the payment's day: no delay shift, only
                                   the frauds already reported (few, for recent days)
card_known_frauds_30d              the card's payments of the 30 whole days before
                                   the payment's day reported as fraud before it
is_night, is_weekend               hour < 6 UTC; Saturday or Sunday (UTC)
is_ecom, is_atm                    the payment's channel
amount                             the amount itself
=================================  ==================================================

"Card-present" means channel ``pos`` or ``atm`` with coordinates; web payments carry
their shop's seat, which says nothing about where the card is.

State and its size, in the scoring job. A card needs its payments of the last 30
days; the card operator keeps them in Spark's state store, in integer cents and
micro-degrees. A merchant needs its payment count per day for the last
``label_delay_days + 30`` days and its reported frauds of those days: the scoring
query's per-day tables (:mod:`fraudstream.scoring.daytables`).

Exactness. Amounts are summed in integer cents and coordinates in integer
micro-degrees, so a window's sum does not depend on how the history was cut into
batches; means and distances are then computed from identical integers.

On Spark's executors. The JVM card operator (``fraudstream.scoring.operator``) keeps the
card part of the state in Spark's state store and emits integer aggregates over each
payment's earlier payments; :func:`card_features_from_aggregates` makes the card
features from them with this module's formulas, equal to :func:`compute`'s to 1e-9
(``tests/test_operator.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EARTH_RADIUS_KM = 6371.0088
CARD_WINDOWS_DAYS = (1, 7, 30)
MERCHANT_WINDOWS_DAYS = (1, 7, 30)
RECENT_WINDOWS_DAYS = (7, 30)
HISTORY_DAYS = max(CARD_WINDOWS_DAYS)
SPEED_TIME_FLOOR_H = 10 / 60
NIGHT_END_HOUR = 6
DEFAULT_LABEL_DELAY_DAYS = 7

FEATURE_COLUMNS = [
    *(f"card_tx_count_{w}d" for w in CARD_WINDOWS_DAYS),
    *(f"card_mean_amount_{w}d" for w in CARD_WINDOWS_DAYS),
    "card_tx_count_1h",
    "seconds_since_prev",
    "amount_to_card_mean",
    "km_from_prev",
    "speed_kmh_from_prev",
    "km_from_usual",
    "country_changed",
    *(f"merchant_tx_count_{w}d" for w in MERCHANT_WINDOWS_DAYS),
    *(f"merchant_fraud_rate_{w}d" for w in MERCHANT_WINDOWS_DAYS),
    *(f"merchant_recent_fraud_rate_{w}d" for w in RECENT_WINDOWS_DAYS),
    "card_known_frauds_30d",
    "is_night",
    "is_weekend",
    "is_ecom",
    "is_atm",
    "amount",
]

#: The features made from the card's own history (:func:`card_features_from_aggregates`).
CARD_FEATURE_COLUMNS = FEATURE_COLUMNS[: FEATURE_COLUMNS.index("country_changed") + 1]

#: The features that are functions of a merchant (or card) and a UTC day alone: the
#: merchant windows and the card's known frauds (:mod:`fraudstream.scoring.daytables`).
DAY_COLUMNS = FEATURE_COLUMNS[
    FEATURE_COLUMNS.index("merchant_tx_count_1d") : FEATURE_COLUMNS.index("card_known_frauds_30d")
    + 1
]

#: The Fraud Detection Handbook's 15 features, named as here, for comparison runs.
HANDBOOK_FEATURES = [
    "amount",
    "is_weekend",
    "is_night",
    *(f"card_tx_count_{w}d" for w in CARD_WINDOWS_DAYS),
    *(f"card_mean_amount_{w}d" for w in CARD_WINDOWS_DAYS),
    *(f"merchant_tx_count_{w}d" for w in MERCHANT_WINDOWS_DAYS),
    *(f"merchant_fraud_rate_{w}d" for w in MERCHANT_WINDOWS_DAYS),
]

#: Columns of the payment events the features read.
EVENT_COLUMNS = [
    "transaction_id",
    "event_time",
    "card_id",
    "merchant_id",
    "amount",
    "channel",
    "lat",
    "lon",
    "country",
]


def _empty_frauds() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": pd.Series(dtype=object),
            "merchant_id": pd.Series(dtype=object),
            "tx_day": pd.Series(dtype=np.int64),
            "report_day": pd.Series(dtype=np.int64),
        }
    )


# --- inputs ---------------------------------------------------------------------------


def _time_ms(values: pd.Series) -> np.ndarray:
    """Event times as integer milliseconds since the epoch, whatever the pandas unit."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.array.as_unit("ms").asi8.copy()
    times = pd.to_datetime(values, utc=True)
    array = times.array if isinstance(times, pd.Series) else pd.DatetimeIndex(times).array
    # Integer nanoseconds (or whatever the unit) straight from the array: going through
    # numpy datetime objects costs a Python object per value.
    return array.as_unit("ms").asi8.copy()


def _card_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The events in the state's form: integer cents and micro-degrees."""
    lat = pd.to_numeric(events["lat"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    lon = pd.to_numeric(events["lon"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    channel = events["channel"].astype(object).to_numpy()
    located = np.isfinite(lat) & np.isfinite(lon) & np.isin(channel, ["pos", "atm"])
    amount = pd.to_numeric(events["amount"]).to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "card_id": events["card_id"].astype(object).to_numpy(),
            "time_ms": _time_ms(events["event_time"]),
            "transaction_id": events["transaction_id"].astype(object).to_numpy(),
            "cents": np.round(amount * 100).astype(np.int64),
            "lat_e6": np.where(located, np.round(np.nan_to_num(lat) * 1e6), 0).astype(np.int64),
            "lon_e6": np.where(located, np.round(np.nan_to_num(lon) * 1e6), 0).astype(np.int64),
            "located": located,
            # None is a valid object for np.where; numpy's stubs do not list it.
            "country": np.where(located, events["country"].astype(object).to_numpy(), None),  # type: ignore[call-overload]
        }
    )


def fraud_facts(events: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Join fraud labels to their payments: ``card_id, merchant_id, tx_day, report_day``.

    Labels of payments not in ``events`` are left out; a payment labelled more than
    once counts once, at its first fraud report (a later "genuine" verdict does not
    undo a chargeback here); a payment delivered twice is one payment, and one fact.
    """
    fraud = labels.loc[labels["label"] == "fraud", ["transaction_id", "reported_time"]]
    fraud = fraud.assign(report_ms=_time_ms(fraud["reported_time"]))
    first = fraud.groupby("transaction_id", sort=False)["report_ms"].min()
    payments = events[["transaction_id", "card_id", "merchant_id", "event_time"]]
    payments = payments.drop_duplicates("transaction_id", keep="first")
    joined = payments.merge(first, left_on="transaction_id", right_index=True, how="inner")
    return pd.DataFrame(
        {
            "card_id": joined["card_id"].astype(object).to_numpy(),
            "merchant_id": joined["merchant_id"].astype(object).to_numpy(),
            "tx_day": _time_ms(joined["event_time"]) // DAY_MS,
            "report_day": joined["report_ms"].to_numpy() // DAY_MS,
        }
    )


# --- the computation ------------------------------------------------------------------


def compute(
    events: pd.DataFrame,
    frauds: pd.DataFrame | None = None,
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
    new_only: bool = False,
    card_aggregates: pd.DataFrame | None = None,
    day_values: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Compute the features of ``events``, as of each event.

    Parameters
    ----------
    events : DataFrame
        Payment events with at least :data:`EVENT_COLUMNS`.
    frauds : DataFrame, optional
        The fraud facts (:func:`fraud_facts`) of the history.
    label_delay_days : int
        How many whole days back the merchant windows end.
    new_only : bool
        The caller vouches that no event is a copy of another (the scoring job sets
        duplicates aside before): skip looking for copies.
    card_aggregates : DataFrame, optional
        The card operator's aggregates of ``events``, row for row (the scoring job's
        operator keeps the cards' state in Spark): the card features come from them
        (:func:`card_features_from_aggregates`), and ``events`` may be any payments.
    day_values : DataFrame, optional
        :data:`DAY_COLUMNS` of ``events``, row for row, read from the scoring query's
        per-day tables (:mod:`fraudstream.scoring.daytables`); then ``frauds`` is not read.

    Returns
    -------
    DataFrame
        ``transaction_id`` and :data:`FEATURE_COLUMNS`, one row per event in the input
        order.
    """
    frauds = _empty_frauds() if frauds is None else frauds
    if len(events) == 0:
        return pd.DataFrame(
            {"transaction_id": pd.Series(dtype=object)}
            | {name: pd.Series(dtype=np.float64) for name in FEATURE_COLUMNS}
        )
    new_rows = _card_rows(events)
    if card_aggregates is None:
        card_features, repeated = _card_features(new_rows, new_only)
    else:
        from_operator = card_features_from_aggregates(
            card_aggregates.reset_index(drop=True), new_rows
        )
        card_features = {name: from_operator[name].to_numpy() for name in CARD_FEATURE_COLUMNS}
        repeated = np.zeros(len(new_rows), dtype=bool)
    if day_values is None:
        merchant_features = _merchant_features(
            events, new_rows["time_ms"], ~repeated, frauds, label_delay_days
        )
    else:
        merchant_features = {name: day_values[name].to_numpy() for name in DAY_COLUMNS}
    time_ms = new_rows["time_ms"].to_numpy()
    channel = events["channel"].astype(object).to_numpy()
    moment = pd.to_datetime(time_ms, unit="ms")
    features = pd.DataFrame(
        {
            "transaction_id": new_rows["transaction_id"].to_numpy(),
            **card_features,
            **merchant_features,
            "is_night": (moment.hour < NIGHT_END_HOUR).astype(np.int64),
            "is_weekend": (moment.dayofweek >= 5).astype(np.int64),
            "is_ecom": (channel == "ecom").astype(np.int64),
            "is_atm": (channel == "atm").astype(np.int64),
            "amount": new_rows["cents"].to_numpy() / 100.0,
        }
    )[["transaction_id", *FEATURE_COLUMNS]]
    # One dtype for every feature: models and their signatures see plain doubles.
    return features.astype(dict.fromkeys(FEATURE_COLUMNS, np.float64))


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (vectorised)."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2)
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _event_order(card: np.ndarray, time: np.ndarray, transaction_id: np.ndarray) -> np.ndarray:
    """The sort order by card, then ``(event_time, transaction_id)``.

    Sorting by the string ids is slow, and ties in time are rare: sort by integers,
    then order each run of equal (card, time) by id.
    """
    order = np.lexsort((time, card))
    card, time = card[order], time[order]
    tied = np.flatnonzero((card[1:] == card[:-1]) & (time[1:] == time[:-1]))
    if tied.size:
        starts = tied[np.concatenate([[True], np.diff(tied) > 1])]
        ends = tied[np.concatenate([np.diff(tied) > 1, [True]])] + 2
        for start, end in zip(starts, ends, strict=True):
            run = order[start:end]
            order[start:end] = run[np.argsort(transaction_id[run].astype(str), kind="stable")]
    return order


def _card_features(new_rows: pd.DataFrame, new_only: bool = False):
    """Card windows over the payments; the features of each, and which are repeats."""
    # A payment seen before (a duplicate delivery) is one payment: keep its first copy.
    if new_only:
        repeated = np.zeros(len(new_rows), dtype=bool)
    else:
        repeated = new_rows["transaction_id"].duplicated().to_numpy()
    rows = new_rows.copy()
    rows["_position"] = np.arange(len(rows))
    if repeated.any():
        rows = rows.loc[~repeated]
    # Cards are numbered in order of appearance, not sorted by name: sorting strings is
    # slow, and any order of cards gives the same per-card windows.
    codes = pd.factorize(rows["card_id"], sort=False)[0].astype(np.int64)
    order = _event_order(codes, rows["time_ms"].to_numpy(), rows["transaction_id"].to_numpy())
    rows = rows.iloc[order].reset_index(drop=True)
    card = codes[order]
    time = rows["time_ms"].to_numpy()
    n = len(rows)
    index = np.arange(n)
    # One sorted key across cards: card rank times a span larger than any time gap.
    base = time.min() if n else 0
    span = np.int64(time.max(initial=0) - base + 2 * HISTORY_DAYS * DAY_MS + 1)
    key = card * span + (time - base)

    # The row of each payment, and for a payment given twice, its first copy's row.
    position = rows.pop("_position").to_numpy()
    take = np.full(len(new_rows), -1, dtype=np.int64)
    take[position] = np.arange(n)
    copies = np.flatnonzero(take < 0)
    if copies.size:
        first = pd.Series(np.arange(n), index=rows["transaction_id"].to_numpy())
        take[copies] = first.reindex(new_rows["transaction_id"].to_numpy()[copies]).to_numpy()
    at, back = np.unique(take, return_inverse=True)

    def window_start(width_ms: int) -> np.ndarray:
        return np.searchsorted(key, key[at] - width_ms, side="right")

    cents = rows["cents"].to_numpy()
    cents_cum = np.concatenate([[0], np.cumsum(cents)])
    out: dict[str, np.ndarray] = {}
    start_30d = window_start(HISTORY_DAYS * DAY_MS)
    for w in CARD_WINDOWS_DAYS:
        start = start_30d if w == HISTORY_DAYS else window_start(w * DAY_MS)
        count = at - start + 1
        out[f"card_tx_count_{w}d"] = count
        out[f"card_mean_amount_{w}d"] = (cents_cum[at + 1] - cents_cum[start]) / count / 100.0
    out["card_tx_count_1h"] = at - window_start(HOUR_MS) + 1

    has_prev = start_30d < at
    prev = np.maximum(at - 1, 0)
    out["seconds_since_prev"] = np.where(
        has_prev, (time[at] - time[prev]) / 1000.0, HISTORY_DAYS * DAY_MS / 1000.0
    )
    earlier = at - start_30d  # earlier payments in the last 30 days
    earlier_cents = cents_cum[at] - cents_cum[start_30d]
    usual = np.divide(earlier_cents, earlier, out=np.zeros(len(at)), where=earlier > 0)
    out["amount_to_card_mean"] = np.where(
        earlier > 0, cents[at] / np.where(usual > 0, usual, 1), 1.0
    )

    located = rows["located"].to_numpy(dtype=bool)
    lat_e6, lon_e6 = rows["lat_e6"].to_numpy(), rows["lon_e6"].to_numpy()
    last_located = np.maximum.accumulate(np.where(located, index, -1))
    prev_located = np.concatenate([[-1], last_located[:-1]])[at]
    here = located[at]
    prev_ok = (prev_located >= start_30d) & here
    p = np.maximum(prev_located, 0)
    km_prev = np.where(
        prev_ok,
        haversine_km(lat_e6[p] / 1e6, lon_e6[p] / 1e6, lat_e6[at] / 1e6, lon_e6[at] / 1e6),
        0.0,
    )
    hours = (time[at] - time[p]) / HOUR_MS
    out["km_from_prev"] = km_prev
    out["speed_kmh_from_prev"] = np.where(
        prev_ok, km_prev / np.maximum(hours, SPEED_TIME_FLOOR_H), 0.0
    )
    country = rows["country"].to_numpy(dtype=object)
    out["country_changed"] = (prev_ok & (country[at] != country[p])).astype(np.int64)

    located_cum = np.concatenate([[0], np.cumsum(located)])
    lat_cum = np.concatenate([[0], np.cumsum(np.where(located, lat_e6, 0))])
    lon_cum = np.concatenate([[0], np.cumsum(np.where(located, lon_e6, 0))])
    seen = located_cum[at] - located_cum[start_30d]
    has_usual = here & (seen > 0)
    safe = np.where(seen > 0, seen, 1)
    usual_lat = (lat_cum[at] - lat_cum[start_30d]) / safe / 1e6
    usual_lon = (lon_cum[at] - lon_cum[start_30d]) / safe / 1e6
    out["km_from_usual"] = np.where(
        has_usual, haversine_km(usual_lat, usual_lon, lat_e6[at] / 1e6, lon_e6[at] / 1e6), 0.0
    )

    features = {name: np.asarray(values)[back] for name, values in out.items()}
    return features, repeated


def card_features_from_aggregates(aggregates: pd.DataFrame, own: pd.DataFrame) -> pd.DataFrame:
    """The card features of payments from the card operator's aggregates.

    The JVM card operator (``fraudstream.scoring.operator``) gives, per payment,
    integer aggregates over the card's earlier payments; this adds the payment itself with
    the same formulas, in the same order of operations, as :func:`compute`, so both give
    the same doubles for the same history.

    Parameters
    ----------
    aggregates : DataFrame
        The operator's output columns (``n_1h`` ... ``loc_lon_sum_30d``); nullable
        integer columns may arrive as floats with NaN.
    own : DataFrame
        The same payments, row for row, in the operator's input form (``time_ms, cents,
        lat_e6, lon_e6, located, country``, as :func:`_card_rows` makes them).

    Returns
    -------
    DataFrame
        :data:`CARD_FEATURE_COLUMNS` as float64, with ``aggregates``' index.
    """

    def ints(frame: pd.DataFrame, name: str) -> np.ndarray:
        return pd.to_numeric(frame[name]).to_numpy(dtype=np.int64)

    def nullable(name: str) -> tuple[np.ndarray, np.ndarray]:
        values = pd.to_numeric(aggregates[name]).astype("Int64")
        present = values.notna().to_numpy()
        return values.fillna(0).to_numpy(dtype=np.int64), present

    time, cents = ints(own, "time_ms"), ints(own, "cents")
    lat_e6, lon_e6 = ints(own, "lat_e6"), ints(own, "lon_e6")
    here = own["located"].fillna(False).to_numpy(dtype=bool)
    out: dict[str, np.ndarray] = {}
    for w in CARD_WINDOWS_DAYS:
        count = ints(aggregates, f"n_{w}d") + 1
        out[f"card_tx_count_{w}d"] = count
        out[f"card_mean_amount_{w}d"] = (ints(aggregates, f"cents_{w}d") + cents) / count / 100.0
    out["card_tx_count_1h"] = ints(aggregates, "n_1h") + 1

    prev_time, has_prev = nullable("prev_time_ms")
    out["seconds_since_prev"] = np.where(
        has_prev, (time - prev_time) / 1000.0, HISTORY_DAYS * DAY_MS / 1000.0
    )
    earlier = ints(aggregates, "n_30d")
    earlier_cents = ints(aggregates, "cents_30d")
    usual = np.divide(earlier_cents, earlier, out=np.zeros(len(earlier)), where=earlier > 0)
    out["amount_to_card_mean"] = np.where(earlier > 0, cents / np.where(usual > 0, usual, 1), 1.0)

    prev_loc_time, has_prev_loc = nullable("prev_loc_time_ms")
    prev_lat, _ = nullable("prev_loc_lat_e6")
    prev_lon, _ = nullable("prev_loc_lon_e6")
    prev_ok = has_prev_loc & here
    km_prev = np.where(
        prev_ok,
        haversine_km(prev_lat / 1e6, prev_lon / 1e6, lat_e6 / 1e6, lon_e6 / 1e6),
        0.0,
    )
    hours = (time - prev_loc_time) / HOUR_MS
    out["km_from_prev"] = km_prev
    out["speed_kmh_from_prev"] = np.where(
        prev_ok, km_prev / np.maximum(hours, SPEED_TIME_FLOOR_H), 0.0
    )
    # A missing country is None on both sides (Spark's null, pandas' NA alike).
    country = own["country"].astype(object).where(own["country"].notna(), None).to_numpy()
    prev_country = aggregates["prev_loc_country"].astype(object)
    prev_country = prev_country.where(prev_country.notna(), None).to_numpy()
    out["country_changed"] = (prev_ok & (country != prev_country)).astype(np.int64)

    seen = ints(aggregates, "loc_n_30d")
    has_usual = here & (seen > 0)
    safe = np.where(seen > 0, seen, 1)
    usual_lat = ints(aggregates, "loc_lat_sum_30d") / safe / 1e6
    usual_lon = ints(aggregates, "loc_lon_sum_30d") / safe / 1e6
    out["km_from_usual"] = np.where(
        has_usual, haversine_km(usual_lat, usual_lon, lat_e6 / 1e6, lon_e6 / 1e6), 0.0
    )
    return pd.DataFrame(
        {name: np.asarray(out[name], dtype=np.float64) for name in CARD_FEATURE_COLUMNS},
        index=aggregates.index,
    )


def _add_at(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray, values) -> None:
    """``np.add.at(matrix, (rows, cols), values)``, through bincount (much faster)."""
    flat = rows.astype(np.int64) * matrix.shape[1] + cols.astype(np.int64)
    weights = np.broadcast_to(np.asarray(values), flat.shape).astype(np.float64)
    matrix += (
        np.bincount(flat, weights=weights, minlength=matrix.size)
        .reshape(matrix.shape)
        .astype(matrix.dtype)
    )


def _known_frauds(codes, d, fact_codes, fact_tx_day, fact_report_day, n_keys, width, shift, w):
    """Per payment: frauds of its key from days ``[D - shift - w, D - shift)`` reported before D.

    A fraud of day x reported on day r counts for the days D with
    ``x + shift < D <= x + shift + w`` and ``r < D``: a +1 on that range of D, added
    up with a running sum over days. ``d`` and the fact days are relative to the
    matrix's first day.
    """
    known = np.zeros((n_keys, width + 1), dtype=np.int64)
    lo = np.maximum(fact_tx_day + shift + 1, fact_report_day + 1)
    hi = fact_tx_day + shift + w
    ok = (lo <= hi) & (fact_codes >= 0)
    _add_at(known, fact_codes[ok], np.clip(lo[ok], 0, width), 1)
    _add_at(known, fact_codes[ok], np.clip(hi[ok] + 1, 0, width), -1)
    return np.cumsum(known, axis=1)[codes, d]


def _merchant_features(events, time_ms, unique, frauds, label_delay_days):
    """Merchant and card counts of known frauds over whole-day windows.

    ``unique`` marks the payments not seen before: a payment counts once, however often
    it is delivered.
    """
    day = time_ms.to_numpy() // DAY_MS
    merchant = events["merchant_id"].astype(object).to_numpy()
    merchant_days = (
        pd.DataFrame({"merchant_id": merchant[unique], "day": day[unique]})
        .groupby(["merchant_id", "day"], sort=False)
        .size()
        .rename("tx_count")
        .reset_index()
    )
    # Facts made by hand may lack a column (a card's, say): it then matches nothing.
    all_frauds = pd.concat([_empty_frauds(), frauds], ignore_index=True)

    longest = max(MERCHANT_WINDOWS_DAYS)
    first_day = (int(day.min()) if day.size else 0) - label_delay_days - longest
    last_day = int(day.max()) if day.size else first_day
    width = last_day - first_day + 2
    codes, names = pd.factorize(merchant)
    m = len(names)
    lookup = pd.Index(names)

    counts = np.zeros((m, width), dtype=np.int64)
    md = merchant_days[merchant_days["merchant_id"].isin(lookup)]
    md_day = md["day"].to_numpy() - first_day
    keep = (md_day >= 0) & (md_day < width)
    _add_at(
        counts,
        lookup.get_indexer(md["merchant_id"].to_numpy())[keep],
        md_day[keep],
        md["tx_count"].to_numpy()[keep],
    )
    before = np.concatenate([np.zeros((m, 1), dtype=np.int64), np.cumsum(counts, axis=1)], axis=1)

    f_merchant = lookup.get_indexer(all_frauds["merchant_id"].to_numpy())
    f_tx_day = all_frauds["tx_day"].to_numpy() - first_day
    f_report_day = all_frauds["report_day"].to_numpy() - first_day
    d = day - first_day

    def rate(fraud, count):
        return np.divide(fraud, count, out=np.zeros(len(count)), where=count > 0)

    out = {}
    for w in MERCHANT_WINDOWS_DAYS:
        # Payments of days [D - delay - w, D - delay): prefix sums over days.
        hi = d - label_delay_days
        count = before[codes, hi] - before[codes, hi - w]
        fraud = _known_frauds(
            codes, d, f_merchant, f_tx_day, f_report_day, m, width, label_delay_days, w
        )
        out[f"merchant_tx_count_{w}d"] = count
        out[f"merchant_fraud_rate_{w}d"] = rate(fraud, count)
    for w in RECENT_WINDOWS_DAYS:
        count = before[codes, d] - before[codes, d - w]
        fraud = _known_frauds(codes, d, f_merchant, f_tx_day, f_report_day, m, width, 0, w)
        out[f"merchant_recent_fraud_rate_{w}d"] = rate(fraud, count)

    card_codes, card_names = pd.factorize(events["card_id"].astype(object).to_numpy())
    f_card = pd.Index(card_names).get_indexer(all_frauds["card_id"].to_numpy())
    out["card_known_frauds_30d"] = _known_frauds(
        card_codes, d, f_card, f_tx_day, f_report_day, len(card_names), width, 0, HISTORY_DAYS
    )
    return out
