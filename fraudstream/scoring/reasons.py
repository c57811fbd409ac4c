"""Why a payment was alerted, in words an analyst reads; and the alert's stable id."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from fraudstream import features

#: How many reasons an alert carries.
TOP_REASONS = 3


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe(
    feature: str, value: float, delay_days: int = features.DEFAULT_LABEL_DELAY_DAYS
) -> str:
    """One feature's value in plain words, for an analyst."""
    parts = feature.rsplit("_", 1)
    window = parts[1] if len(parts) == 2 and parts[1].endswith(("d", "h")) else ""
    span = {"1h": "hour", "1d": "day"}.get(window, f"{window[:-1]} days" if window else "")
    if feature == "speed_kmh_from_prev":
        return f"{value:,.0f} km/h travel from the card's previous card-present payment"
    if feature == "km_from_prev":
        return f"{value:,.0f} km from the card's previous card-present payment"
    if feature == "km_from_usual":
        return f"{value:,.0f} km from where the card is usually used"
    if feature == "country_changed":
        return "country differs from the card's previous payment" if value else "same country"
    if feature == "seconds_since_prev":
        return f"{_duration(value)} since the card's previous payment"
    if feature == "amount_to_card_mean":
        return f"amount is {value:,.1f}x the card's usual amount"
    if feature == "amount":
        return f"amount {value:,.2f}"
    if feature.startswith("card_tx_count_"):
        return f"{value:,.0f} payments on the card in the last {span}"
    if feature.startswith("card_mean_amount_"):
        return f"card's mean amount {value:,.2f} over the last {span}"
    if feature.startswith("merchant_tx_count_"):
        return f"merchant had {value:,.0f} payments over {span} ending {delay_days} days ago"
    if feature.startswith("merchant_recent_fraud_rate_"):
        return f"{value:.1%} of the merchant's payments of the last {span} reported as fraud so far"
    if feature.startswith("merchant_fraud_rate_"):
        return f"merchant fraud rate {value:.1%} over {span} ending {delay_days} days ago"
    if feature == "card_known_frauds_30d":
        return f"{value:,.0f} of the card's payments of the last 30 days reported as fraud"
    if feature == "is_night":
        return "at night (before 06:00 UTC)" if value else "in the daytime"
    if feature == "is_weekend":
        return "at the weekend" if value else "on a weekday"
    if feature == "is_ecom":
        return "online payment" if value else "not an online payment"
    if feature == "is_atm":
        return "cash withdrawal" if value else "not a cash withdrawal"
    return f"{feature} = {value:g}"


def explain(
    model, rows: pd.DataFrame, scores: np.ndarray, reference: dict[str, float]
) -> list[list[str]]:
    """The top contributing features of each row, in words.

    ``model`` is a :class:`~fraudstream.scoring.model.LoadedModel`.

    A feature's contribution is how much the score drops when that feature alone is
    set to its reference value (the typical genuine payment's, from training): the
    model is asked, not guessed at, whatever kind of model it is.
    """
    if rows.empty:
        return []
    columns = model.feature_columns
    n, m = len(rows), len(columns)
    base = rows[columns].to_numpy(dtype=float)
    ref = np.array([reference.get(c, 0.0) for c in columns], dtype=float)
    # A feature already at its reference value contributes nothing: ask the model only
    # about the others, all in one call.
    rows_i, cols_j = np.nonzero(base != ref)
    variants = base[rows_i]
    variants[np.arange(len(rows_i)), cols_j] = ref[cols_j]
    occluded = np.repeat(scores[:, None].astype(float), m, axis=1)
    occluded[rows_i, cols_j] = model.score(pd.DataFrame(variants, columns=columns))
    contribution = scores[:, None] - occluded
    order = np.argsort(-contribution, axis=1, kind="stable")[:, :TOP_REASONS]
    reasons = []
    for i in range(n):
        top = [j for j in order[i] if contribution[i, j] > 0] or [order[i, 0]]
        reasons.append(
            [
                f"{describe(columns[j], base[i, j], model.label_delay_days)} "
                f"(+{max(contribution[i, j], 0):.2f})"
                for j in top
            ]
        )
    return reasons


def alert_id(transaction_id: str, model_name: str, model_version: str) -> str:
    """The same id for the same transaction scored by the same model version."""
    text = f"{transaction_id}\x1f{model_name}\x1f{model_version}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
