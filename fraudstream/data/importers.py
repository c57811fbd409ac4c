"""Importers: public fraud data sets mapped into the payment and label event contracts.

Two public, synthetic data sets stand in for a live payment stream, so the training job
can run on data anyone can download:

* ``handbook``: the simulated transactions of the Fraud Detection Handbook (Le Borgne et
  al.), shipped as one pandas pickle per day (``simulated-data-raw/data/2018-04-01.pkl``).
* ``sparkov``: the Sparkov-generated Kaggle files ``fraudTrain.csv`` and ``fraudTest.csv``.

Each importer returns payment events and label events as Arrow tables in the contract's
schemas (:mod:`fraudstream.schemas`); :func:`import_dataset` writes them with
:mod:`fraudstream.lake`. Identifiers become salted SHA-256 tokens, so no card number
reaches the output, and the Sparkov cardholder's personal data (name, address, date of
birth, job, home coordinates) is not even read from the CSV files. Only fraud gets a
label event: a transaction without one is genuine, as everywhere in the project.

Rows the contract cannot hold (an amount of 0, a missing time) are dropped, logged with
their count and reason, and counted in what :func:`import_dataset` returns.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudstream import lake, schemas
from fraudstream.errors import DataError

FORMATS = ("handbook", "sparkov")

#: Labels become known some time after the payment (a chargeback takes days to weeks);
#: the handbook assumes a delay of 7 days, and so does training unless told otherwise.
DEFAULT_LABEL_DELAY = timedelta(days=7)

#: Salt of the tokens. Public on purpose: the data sets are synthetic, and the same salt
#: keeps tokens equal across imports (fraudTrain and fraudTest share cards). Real card
#: numbers need a secret salt: a 16-digit number behind a known salt is found by brute force.
DEFAULT_SALT = "fraudstream-public-data"

#: Hex characters of SHA-256 kept in a token: 64 bits, no collision among millions of cards.
TOKEN_HEX_CHARS = 16

HANDBOOK_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
HANDBOOK_SCENARIOS = {1: "amount_threshold", 2: "compromised_terminal", 3: "leaked_card"}

#: The only Sparkov columns read: everything else in the files is the cardholder's
#: personal data (name, address, job, date of birth, home coordinates).
SPARKOV_COLUMNS = (
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "trans_num",
    "merch_lat",
    "merch_long",
    "is_fraud",
)

_LOG = logging.getLogger(__name__)


class InputError(DataError):
    """The input is not the data set it was said to be (columns missing, files mixed)."""


# --- tokens -----------------------------------------------------------------------


def tokenize(values, salt: str, prefix: str = "card_") -> np.ndarray:
    """Replace identifiers by tokens: ``prefix`` + 16 hex characters of SHA-256(salt + value).

    Parameters
    ----------
    values : array-like
        Identifiers (card numbers, customer IDs, names), as numbers or text; ``596``,
        ``596.0`` and ``"596"`` are the same identifier. Missing values stay missing.
    salt : str
        Prepended to each value before hashing; the same salt gives the same tokens.
    prefix : str
        Says what kind of identifier the token stands for (``card_``, ``cust_``, ``m_``).

    Returns
    -------
    numpy.ndarray
        Object array of ``str`` tokens (None where a value is missing), one per value.
    """
    text = _id_text(_as_series(values))
    codes, uniques = pd.factorize(text)
    # Each distinct value is hashed once (a data set has far fewer cards than payments).
    # The extra last entry is what code -1, factorize's code for a missing value, picks.
    tokens = [
        prefix + hashlib.sha256((salt + value).encode("utf-8")).hexdigest()[:TOKEN_HEX_CHARS]
        for value in uniques
    ]
    return np.array([*tokens, None], dtype=object)[codes]


def _as_series(values) -> pd.Series:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.to_pandas()
    return pd.Series(values)


def _id_text(values: pd.Series) -> pd.Series:
    """Identifiers as text, with integral floats written as integers.

    A column with a gap turns integers into floats; without this, card 596 read as
    596.0 would get another token and its history would split in two.
    """
    if pd.api.types.infer_dtype(values, skipna=True) in (
        "integer",
        "floating",
        "mixed-integer-float",
    ):
        numbers = pd.to_numeric(values)
        if pd.api.types.is_float_dtype(numbers) and (numbers.dropna() % 1 == 0).all():
            numbers = numbers.astype("Int64")
        values = numbers
    return values.astype("string")


# --- the data sets ----------------------------------------------------------------


def from_handbook(
    frame: pd.DataFrame,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
    salt: str = DEFAULT_SALT,
) -> tuple[pa.Table, pa.Table]:
    """Map the Fraud Detection Handbook's simulated transactions to events.

    Parameters
    ----------
    frame : pandas.DataFrame
        The handbook's columns (``TRANSACTION_ID``, ``TX_DATETIME``, ``CUSTOMER_ID``,
        ``TERMINAL_ID``, ``TX_AMOUNT``, ``TX_FRAUD``, ``TX_FRAUD_SCENARIO``; others ignored).
    label_delay : datetime.timedelta
        Time from a payment to its fraud label's ``reported_time``.
    salt : str
        Salt of the card and customer tokens.

    Returns
    -------
    tuple of pyarrow.Table
        Payment events (``PAYMENT_ARROW_SCHEMA``) in input order, and one label event per
        fraudulent payment kept (``LABEL_ARROW_SCHEMA``), source ``simulator``.

    Raises
    ------
    InputError
        If a column is missing.

    Notes
    -----
    The handbook has one card per customer, so the card and the customer are tokens of
    the same ``CUSTOMER_ID``; it has no merchant category, currency, channel or place,
    which stay null. Rows with an amount of 0 (the simulator rounds some amounts down to
    0.00) are dropped, as are their labels. A fraud scenario other than 1, 2 or 3 gives
    a null ``scenario``.
    """
    frame = _checked(frame, HANDBOOK_COLUMNS, "handbook")
    customers = frame["CUSTOMER_ID"]
    payments = pd.DataFrame(
        {
            "transaction_id": "hb_" + _id_text(frame["TRANSACTION_ID"]),
            "event_time": _utc_ms(frame["TX_DATETIME"]),
            "card_id": tokenize(customers, salt, prefix="card_"),
            "customer_id": tokenize(customers, salt, prefix="cust_"),
            "merchant_id": "term_" + _id_text(frame["TERMINAL_ID"]),
            "merchant_category": None,
            "amount": pd.to_numeric(frame["TX_AMOUNT"], errors="coerce"),
            "currency": None,
            "channel": None,
            "lat": None,
            "lon": None,
            "country": None,
            "schema_version": schemas.SCHEMA_VERSION,
        }
    )
    keep = _valid_rows(payments, "handbook")
    fraud = keep & (frame["TX_FRAUD"].to_numpy() == 1)
    labels = _fraud_labels(
        payments[fraud],
        source="simulator",
        scenario=frame.loc[fraud, "TX_FRAUD_SCENARIO"].map(HANDBOOK_SCENARIOS),
        label_delay=label_delay,
    )
    return (
        _to_arrow(payments[keep], schemas.PAYMENT_ARROW_SCHEMA),
        _to_arrow(labels, schemas.LABEL_ARROW_SCHEMA),
    )


def from_sparkov(
    frame: pd.DataFrame,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
    salt: str = DEFAULT_SALT,
) -> tuple[pa.Table, pa.Table]:
    """Map Sparkov's transactions (Kaggle's ``fraudTrain.csv``, ``fraudTest.csv``) to events.

    Parameters
    ----------
    frame : pandas.DataFrame
        Sparkov's columns; those of :data:`SPARKOV_COLUMNS` are used, the rest ignored.
    label_delay : datetime.timedelta
        Time from a payment to its fraud label's ``reported_time``.
    salt : str
        Salt of the card, customer and merchant tokens.

    Returns
    -------
    tuple of pyarrow.Table
        Payment events (``PAYMENT_ARROW_SCHEMA``) in input order, and one label event per
        fraudulent payment kept (``LABEL_ARROW_SCHEMA``), source ``chargeback``.

    Raises
    ------
    InputError
        If a column is missing.

    Notes
    -----
    ``trans_date_trans_time`` is taken as UTC (``unix_time`` is not used: in the Kaggle
    files it is years off the date). The place of a payment is the merchant's
    (``merch_lat``, ``merch_long``), never the cardholder's home. Categories ending in
    ``_net`` are online (``ecom``), the others in person (``pos``). Each card is its own
    customer.
    """
    frame = _checked(frame, SPARKOV_COLUMNS, "sparkov")
    cards = frame["cc_num"]
    category = frame["category"].astype("string")
    # Sparkov puts "fraud_" before every merchant's name, fraudulent or not.
    merchants = frame["merchant"].astype("string").str.removeprefix("fraud_")
    payments = pd.DataFrame(
        {
            "transaction_id": "sp_" + frame["trans_num"].astype("string"),
            "event_time": _utc_ms(frame["trans_date_trans_time"]),
            "card_id": tokenize(cards, salt, prefix="card_"),
            "customer_id": tokenize(cards, salt, prefix="cust_"),
            "merchant_id": tokenize(merchants, salt, prefix="m_"),
            "merchant_category": category,
            "amount": pd.to_numeric(frame["amt"], errors="coerce"),
            "currency": "USD",
            "channel": category.str.endswith("_net").map({True: "ecom", False: "pos"}),
            "lat": pd.to_numeric(frame["merch_lat"], errors="coerce"),
            "lon": pd.to_numeric(frame["merch_long"], errors="coerce"),
            "country": "US",
            "schema_version": schemas.SCHEMA_VERSION,
        }
    )
    keep = _valid_rows(payments, "sparkov")
    fraud = keep & (frame["is_fraud"].to_numpy() == 1)
    labels = _fraud_labels(
        payments[fraud], source="chargeback", scenario=None, label_delay=label_delay
    )
    return (
        _to_arrow(payments[keep], schemas.PAYMENT_ARROW_SCHEMA),
        _to_arrow(labels, schemas.LABEL_ARROW_SCHEMA),
    )


_MAPPERS: dict[str, Callable[..., tuple[pa.Table, pa.Table]]] = {
    "handbook": from_handbook,
    "sparkov": from_sparkov,
}


def _checked(frame: pd.DataFrame, columns: tuple[str, ...], fmt: str) -> pd.DataFrame:
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise InputError(f"The {fmt} data lacks the column(s) {', '.join(missing)}.")
    # Daily files concatenated keep their own indexes; columns built below must align.
    return frame.reset_index(drop=True)


def _utc_ms(values: pd.Series) -> pd.Series:
    """Times as UTC, to the millisecond; a time without a zone is taken as UTC."""
    times = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    # Truncated to the contract's milliseconds, as schemas.format_time does.
    return times.dt.floor("ms")


def _valid_rows(payments: pd.DataFrame, source: str) -> np.ndarray:
    """Mark the rows the payment contract can hold; log how many others there are, and why."""
    amount = payments["amount"].to_numpy(dtype=float, na_value=np.nan)
    lat = payments["lat"].to_numpy(dtype=float, na_value=np.nan)
    lon = payments["lon"].to_numpy(dtype=float, na_value=np.nan)
    # The checks of schemas.payment_invalid_reason, in its order; NaN compares False, so
    # a missing (optional) coordinate passes.
    checks = [
        (payments[name].isna().to_numpy(), schemas.REASON_MISSING.format(name))
        for name in schemas.PAYMENT_REQUIRED
    ]
    checks += [
        (~(amount > 0) | np.isinf(amount), schemas.REASON_AMOUNT),
        (np.abs(lat) > 90, schemas.REASON_LAT),
        (np.abs(lon) > 180, schemas.REASON_LON),
    ]
    reasons = np.select([mask for mask, _ in checks], [reason for _, reason in checks], "")
    keep = reasons == ""
    if not keep.all():
        counts = [(reason, int((reasons == reason).sum())) for _, reason in checks]
        details = "; ".join(f"{reason}: {count}" for reason, count in counts if count)
        _LOG.warning(
            "%s: dropped %d of %d rows that the payment contract cannot hold (%s).",
            source,
            (~keep).sum(),
            len(keep),
            details,
        )
    return keep


def _fraud_labels(
    fraud: pd.DataFrame, source: str, scenario: pd.Series | None, label_delay: timedelta
) -> pd.DataFrame:
    """One fraud label event per payment event of ``fraud``."""
    return pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"],
            "card_id": fraud["card_id"],
            "label": "fraud",
            "source": source,
            "reported_time": fraud["event_time"] + pd.Timedelta(label_delay),
            "scenario": scenario,
            "schema_version": schemas.SCHEMA_VERSION,
        },
        index=fraud.index,
    )


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    # pandas' metadata describes the frame, not the events; the contract has none.
    return table.replace_schema_metadata(None)


# --- files ------------------------------------------------------------------------


def _read_sparkov_csv(path: Path) -> pd.DataFrame:
    # Only the mapped columns are read, so the cardholder's personal data never enters
    # memory; cc_num is read as text, so a 19-digit card number is never rounded.
    return pd.read_csv(
        path,
        usecols=lambda name: name in SPARKOV_COLUMNS,
        dtype={name: "string" for name in ("cc_num", "trans_num", "merchant", "category")},
    )


#: Readers by file suffix. Pickles run code when loaded: read only the handbook's own.
_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".pkl": pd.read_pickle,
    ".parquet": pd.read_parquet,
    ".csv": _read_sparkov_csv,
}
_SUFFIXES = {"handbook": (".pkl", ".parquet"), "sparkov": (".csv",)}


def read_input(path: str | Path, fmt: str) -> pd.DataFrame:
    """Read a data set's files into one frame, in file-name order.

    Parameters
    ----------
    path : str or Path
        ``handbook``: a folder of daily ``.pkl`` files (as the handbook ships them) or of
        ``.parquet`` files, or one such file. ``sparkov``: a ``.csv`` file or a folder of
        them (e.g. ``fraudTrain.csv`` and ``fraudTest.csv``). Sub-folders are not read.
    fmt : str
        ``handbook`` or ``sparkov``.

    Returns
    -------
    pandas.DataFrame
        The rows of all files, with a fresh index.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or is a folder without files of the format.
    InputError
        If a file is not of the format, or a folder mixes ``.pkl`` and ``.parquet``.
    ValueError
        If ``fmt`` is not a known format.
    """
    if fmt not in FORMATS:
        raise DataError(f"Unknown format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {fmt} input {path} does not exist.")
    suffixes = _SUFFIXES[fmt]
    expected = " or ".join(suffixes)
    if path.is_dir():
        files = sorted(
            file for file in path.iterdir() if file.suffix in suffixes and file.is_file()
        )
        if not files:
            raise InputError(f"The {fmt} input folder {path} holds no {expected} files.")
    elif path.suffix not in suffixes:
        raise InputError(f"The {fmt} input {path} is not a {expected} file.")
    else:
        files = [path]
    if len({file.suffix for file in files}) > 1:
        # Most likely the same days twice (pickles and their Parquet copies).
        raise InputError(
            f"The {fmt} input folder {path} holds both {' and '.join(suffixes)} files; "
            "keep one kind."
        )
    return pd.concat([_READERS[file.suffix](file) for file in files], ignore_index=True)


def import_dataset(
    fmt: str,
    input_path: str | Path,
    out: str | Path,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
    salt: str = DEFAULT_SALT,
) -> dict[str, int]:
    """Read a data set, map it to events and write them to ``out/events`` and ``out/labels``.

    What those folders held before is replaced (see :mod:`fraudstream.lake`), so import
    files that belong together (``fraudTrain.csv`` and ``fraudTest.csv``) in one call,
    from one folder.

    Parameters
    ----------
    fmt : str
        ``handbook`` or ``sparkov``.
    input_path : str or Path
        What :func:`read_input` reads.
    out : str or Path
        Output root.
    label_delay : datetime.timedelta
        Time from a payment to its fraud label's ``reported_time``.
    salt : str
        Salt of the tokens.

    Returns
    -------
    dict
        ``events`` and ``labels`` written, and input rows ``dropped`` because the
        contract cannot hold them.
    """
    frame = read_input(input_path, fmt)
    payments, labels = _MAPPERS[fmt](frame, label_delay=label_delay, salt=salt)
    return {
        "events": lake.write_events(payments, Path(out)),
        "labels": lake.write_labels(labels, Path(out)),
        "dropped": len(frame) - payments.num_rows,
    }


@dataclass(frozen=True)
class ImportConfig:
    """Which public data set the import job reads, from where, and where it writes."""

    fmt: str
    input_path: str
    out: str
    label_delay_days: float = DEFAULT_LABEL_DELAY / timedelta(days=1)


#: Real card numbers need a secret salt for their tokens; it is read from the
#: environment so that it never shows in a process list or a shell history.
SALT_VARIABLE = "FRAUDSTREAM_TOKEN_SALT"


def run_import(cfg: ImportConfig) -> dict[str, int]:
    """Import the data set; return the events and labels written and the rows dropped."""
    return import_dataset(
        cfg.fmt,
        Path(cfg.input_path),
        Path(cfg.out),
        label_delay=timedelta(days=cfg.label_delay_days),
        salt=os.environ.get(SALT_VARIABLE) or DEFAULT_SALT,
    )
