"""Importers of public data sets, on hand-written rows in each data set's published format."""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from fraudstream import lake, schemas
from fraudstream.data import importers
from jobs import import_public as import_job

SALT = "test-salt"

# --- Fraud Detection Handbook -------------------------------------------------------
# Two daily files, as the handbook ships them: each day's frame keeps the index of the
# whole simulation. Row 1 has an amount of 0.00 (the simulator rounds some amounts down)
# and is fraud: the row and its label must both be dropped.

HANDBOOK_COLUMNS = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
]
HANDBOOK_DAY_1 = pd.DataFrame(
    [
        [0, pd.Timestamp("2018-04-01 00:00:31"), 596, 3156, 57.16, 31, 0, 0, 0],
        [1, pd.Timestamp("2018-04-01 00:02:10"), 4961, 3412, 0.00, 130, 0, 1, 2],
        [2, pd.Timestamp("2018-04-01 07:19:05"), 596, 3156, 283.41, 26345, 0, 1, 1],
    ],
    columns=HANDBOOK_COLUMNS,
    index=[0, 1, 2],
)
HANDBOOK_DAY_2 = pd.DataFrame(
    [
        [3, pd.Timestamp("2018-04-02 09:33:58"), 2, 3412, 81.51, 120838, 1, 1, 2],
        [4, pd.Timestamp("2018-04-02 15:46:51"), 2, 1365, 317.95, 143211, 1, 1, 3],
    ],
    columns=HANDBOOK_COLUMNS,
    index=[3, 4],
)

CARD_596 = "card_60bc3145185be4ec"  # "card_" + sha256("test-salt" + "596")[:16]
CARD_2 = "card_4d8b05df3e4e397f"
HANDBOOK_NULLS = {
    "merchant_category": None,
    "currency": None,
    "channel": None,
    "lat": None,
    "lon": None,
    "country": None,
}
HANDBOOK_PAYMENTS = [
    {
        "transaction_id": "hb_0",
        "event_time": datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC),
        "card_id": CARD_596,
        "customer_id": "cust_60bc3145185be4ec",
        "merchant_id": "term_3156",
        "amount": 57.16,
        "schema_version": 1,
        **HANDBOOK_NULLS,
    },
    {
        "transaction_id": "hb_2",
        "event_time": datetime(2018, 4, 1, 7, 19, 5, tzinfo=UTC),
        "card_id": CARD_596,
        "customer_id": "cust_60bc3145185be4ec",
        "merchant_id": "term_3156",
        "amount": 283.41,
        "schema_version": 1,
        **HANDBOOK_NULLS,
    },
    {
        "transaction_id": "hb_3",
        "event_time": datetime(2018, 4, 2, 9, 33, 58, tzinfo=UTC),
        "card_id": CARD_2,
        "customer_id": "cust_4d8b05df3e4e397f",
        "merchant_id": "term_3412",
        "amount": 81.51,
        "schema_version": 1,
        **HANDBOOK_NULLS,
    },
    {
        "transaction_id": "hb_4",
        "event_time": datetime(2018, 4, 2, 15, 46, 51, tzinfo=UTC),
        "card_id": CARD_2,
        "customer_id": "cust_4d8b05df3e4e397f",
        "merchant_id": "term_1365",
        "amount": 317.95,
        "schema_version": 1,
        **HANDBOOK_NULLS,
    },
]
HANDBOOK_LABELS = [
    {
        "transaction_id": "hb_2",
        "card_id": CARD_596,
        "label": "fraud",
        "source": "simulator",
        "reported_time": datetime(2018, 4, 8, 7, 19, 5, tzinfo=UTC),
        "scenario": "amount_threshold",
        "schema_version": 1,
    },
    {
        "transaction_id": "hb_3",
        "card_id": CARD_2,
        "label": "fraud",
        "source": "simulator",
        "reported_time": datetime(2018, 4, 9, 9, 33, 58, tzinfo=UTC),
        "scenario": "compromised_terminal",
        "schema_version": 1,
    },
    {
        "transaction_id": "hb_4",
        "card_id": CARD_2,
        "label": "fraud",
        "source": "simulator",
        "reported_time": datetime(2018, 4, 9, 15, 46, 51, tzinfo=UTC),
        "scenario": "leaked_card",
        "schema_version": 1,
    },
]

# --- Sparkov (Kaggle fraudTrain.csv / fraudTest.csv) ----------------------------------
# The header of the Kaggle files, with its unnamed index column; the people are made up.

SPARKOV_HEADER = (
    ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,"
    "state,zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud\n"
)
SPARKOV_TRAIN = SPARKOV_HEADER + (
    '0,2019-01-01 00:00:18,4613314721966,"fraud_Hollow, Pine and Reed",misc_net,4.97,'
    "Alma,Quistgaard,F,914 Larkspur Row,Fennimore,WI,53809,42.9836,-90.6554,2491,"
    "Beekeeper,1961-07-14,5d1c0e6f3a9b47c2a8e1f0b6d4c3a2b1,1325376018,43.150704,-90.168311,0\n"
    "1,2019-01-01 23:41:07,4613314721966,fraud_Quill-Barrow,grocery_pos,281.06,"
    "Alma,Quistgaard,F,914 Larkspur Row,Fennimore,WI,53809,42.9836,-90.6554,2491,"
    "Beekeeper,1961-07-14,9f8e7d6c5b4a39281706f5e4d3c2b1a0,1325461267,42.471982,-91.093545,1\n"
)
SPARKOV_TEST = SPARKOV_HEADER + (
    "0,2019-01-02 08:15:33,3560725013359375,fraud_Quill-Barrow,gas_transport,63.12,"
    'Rudolph,Vantongeren,M,77 Old Mill Lane,Kettle Falls,WA,99141,48.6102,-118.0553,1590,"'
    'Surveyor, land",1975-02-03,0a1b2c3d4e5f60718293a4b5c6d7e8f9,1325492133,48.213447,'
    "-117.63419,0\n"
    '1,2019-01-02 21:02:59,3560725013359375,"fraud_Hollow, Pine and Reed",shopping_net,'
    "917.42,Rudolph,Vantongeren,M,77 Old Mill Lane,Kettle Falls,WA,99141,48.6102,-118.0553,"
    '1590,"Surveyor, land",1975-02-03,e4d3c2b1a09f8e7d6c5b4a3928170615,1325538179,'
    "48.92187,-118.566502,1\n"
)
#: What must never appear in any output: card numbers, names, address, job, birth date,
#: and the cardholders' home coordinates.
SPARKOV_PERSONAL = [
    "4613314721966",
    "3560725013359375",
    "Alma",
    "Quistgaard",
    "Rudolph",
    "Vantongeren",
    "914 Larkspur Row",
    "77 Old Mill Lane",
    "Fennimore",
    "Kettle Falls",
    "53809",
    "99141",
    "Beekeeper",
    "Surveyor",
    "1961-07-14",
    "1975-02-03",
    "42.9836",
    "-90.6554",
    "48.6102",
    "-118.0553",
]

CARD_A = "card_3319cc8811c21ff2"  # "card_" + sha256("test-salt" + "4613314721966")[:16]
CARD_B = "card_5e11c2cdef2e4538"  # "card_" + sha256("test-salt" + "3560725013359375")[:16]
HOLLOW = "m_68f944989dc797f5"  # "m_" + sha256("test-salt" + "Hollow, Pine and Reed")[:16]
QUILL = "m_c63e428cbb5d387e"  # "m_" + sha256("test-salt" + "Quill-Barrow")[:16]
SPARKOV_PAYMENTS = [
    {
        "transaction_id": "sp_5d1c0e6f3a9b47c2a8e1f0b6d4c3a2b1",
        "event_time": datetime(2019, 1, 1, 0, 0, 18, tzinfo=UTC),
        "card_id": CARD_A,
        "customer_id": "cust_3319cc8811c21ff2",
        "merchant_id": HOLLOW,
        "merchant_category": "misc_net",
        "amount": 4.97,
        "currency": "USD",
        "channel": "ecom",
        "lat": 43.150704,
        "lon": -90.168311,
        "country": "US",
        "schema_version": 1,
    },
    {
        "transaction_id": "sp_9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "event_time": datetime(2019, 1, 1, 23, 41, 7, tzinfo=UTC),
        "card_id": CARD_A,
        "customer_id": "cust_3319cc8811c21ff2",
        "merchant_id": QUILL,
        "merchant_category": "grocery_pos",
        "amount": 281.06,
        "currency": "USD",
        "channel": "pos",
        "lat": 42.471982,
        "lon": -91.093545,
        "country": "US",
        "schema_version": 1,
    },
    {
        "transaction_id": "sp_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "event_time": datetime(2019, 1, 2, 8, 15, 33, tzinfo=UTC),
        "card_id": CARD_B,
        "customer_id": "cust_5e11c2cdef2e4538",
        "merchant_id": QUILL,
        "merchant_category": "gas_transport",
        "amount": 63.12,
        "currency": "USD",
        "channel": "pos",
        "lat": 48.213447,
        "lon": -117.63419,
        "country": "US",
        "schema_version": 1,
    },
    {
        "transaction_id": "sp_e4d3c2b1a09f8e7d6c5b4a3928170615",
        "event_time": datetime(2019, 1, 2, 21, 2, 59, tzinfo=UTC),
        "card_id": CARD_B,
        "customer_id": "cust_5e11c2cdef2e4538",
        "merchant_id": HOLLOW,
        "merchant_category": "shopping_net",
        "amount": 917.42,
        "currency": "USD",
        "channel": "ecom",
        "lat": 48.92187,
        "lon": -118.566502,
        "country": "US",
        "schema_version": 1,
    },
]
SPARKOV_LABELS = [
    {
        "transaction_id": "sp_9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "card_id": CARD_A,
        "label": "fraud",
        "source": "chargeback",
        "reported_time": datetime(2019, 1, 8, 23, 41, 7, tzinfo=UTC),
        "scenario": None,
        "schema_version": 1,
    },
    {
        "transaction_id": "sp_e4d3c2b1a09f8e7d6c5b4a3928170615",
        "card_id": CARD_B,
        "label": "fraud",
        "source": "chargeback",
        "reported_time": datetime(2019, 1, 9, 21, 2, 59, tzinfo=UTC),
        "scenario": None,
        "schema_version": 1,
    },
]


@pytest.fixture()
def handbook_dir(tmp_path):
    """The handbook's layout: simulated-data-raw/data/YYYY-MM-DD.pkl, one frame per day."""
    folder = tmp_path / "simulated-data-raw" / "data"
    folder.mkdir(parents=True)
    HANDBOOK_DAY_1.to_pickle(folder / "2018-04-01.pkl")
    HANDBOOK_DAY_2.to_pickle(folder / "2018-04-02.pkl")
    return folder


@pytest.fixture()
def sparkov_dir(tmp_path):
    """Kaggle's two Sparkov files side by side."""
    folder = tmp_path / "sparkov"
    folder.mkdir()
    (folder / "fraudTrain.csv").write_text(SPARKOV_TRAIN)
    (folder / "fraudTest.csv").write_text(SPARKOV_TEST)
    return folder


# --- tokenize -----------------------------------------------------------------------


def test_tokenize_is_prefix_and_16_hex_of_salted_sha256():
    tokens = importers.tokenize(["4613314721966", "3560725013359375"], salt=SALT)
    expected = [
        "card_" + hashlib.sha256(f"{SALT}{number}".encode()).hexdigest()[:16]
        for number in ("4613314721966", "3560725013359375")
    ]
    assert tokens.tolist() == expected == [CARD_A, CARD_B]


def test_tokenize_gives_one_token_per_identifier_whatever_its_type():
    # 596 as int, as a float (a column with a gap), as text; a missing value stays missing.
    tokens = importers.tokenize(pd.Series([596, 596.0, None, 2]), salt=SALT)
    assert tokens.tolist() == [CARD_596, CARD_596, None, CARD_2]
    assert importers.tokenize(["596", "2"], salt=SALT).tolist() == [CARD_596, CARD_2]
    assert importers.tokenize(pa.array([596, None]), salt=SALT).tolist() == [CARD_596, None]


def test_tokenize_depends_on_salt_and_prefix():
    assert importers.tokenize([596], salt="other-salt").tolist() != [CARD_596]
    assert importers.tokenize([596], salt=SALT, prefix="cust_").tolist() == [
        "cust_60bc3145185be4ec"
    ]


# --- handbook -----------------------------------------------------------------------


def test_from_handbook_maps_rows_and_drops_zero_amounts(caplog):
    frame = pd.concat([HANDBOOK_DAY_1, HANDBOOK_DAY_2])
    with caplog.at_level(logging.WARNING, logger="fraudstream.data.importers"):
        payments, labels = importers.from_handbook(frame, salt=SALT)
    assert payments.schema == schemas.PAYMENT_ARROW_SCHEMA
    assert labels.schema == schemas.LABEL_ARROW_SCHEMA
    assert payments.to_pylist() == HANDBOOK_PAYMENTS
    assert labels.to_pylist() == HANDBOOK_LABELS
    assert caplog.messages == [
        "handbook: dropped 1 of 5 rows that the payment contract cannot hold "
        "(amount must be > 0: 1)."
    ]


def test_from_handbook_uses_the_label_delay():
    _, labels = importers.from_handbook(HANDBOOK_DAY_1, label_delay=timedelta(hours=36), salt=SALT)
    assert labels.column("reported_time").to_pylist() == [
        datetime(2018, 4, 2, 19, 19, 5, tzinfo=UTC)
    ]


def test_from_handbook_reads_daily_pickles_through_read_input(handbook_dir):
    frame = importers.read_input(handbook_dir, "handbook")
    assert frame["TRANSACTION_ID"].tolist() == [0, 1, 2, 3, 4]
    payments, labels = importers.from_handbook(frame, salt=SALT)
    assert payments.to_pylist() == HANDBOOK_PAYMENTS
    assert labels.to_pylist() == HANDBOOK_LABELS


def test_from_handbook_round_trips_through_the_lake(tmp_path):
    payments, labels = importers.from_handbook(
        pd.concat([HANDBOOK_DAY_1, HANDBOOK_DAY_2]), salt=SALT
    )
    assert lake.write_events(payments, tmp_path) == 4
    assert lake.write_labels(labels, tmp_path) == 3
    assert lake.read_events(tmp_path).equals(payments.sort_by("event_time"))
    assert lake.read_labels(tmp_path).equals(labels.sort_by("reported_time"))


def test_from_handbook_names_missing_columns():
    with pytest.raises(importers.InputError) as error:
        importers.from_handbook(HANDBOOK_DAY_1.drop(columns=["TX_FRAUD", "TERMINAL_ID"]))
    assert str(error.value) == "The handbook data lacks the column(s) TERMINAL_ID, TX_FRAUD."


# --- Sparkov ------------------------------------------------------------------------


def test_from_sparkov_maps_rows(sparkov_dir):
    frame = importers.read_input(sparkov_dir / "fraudTrain.csv", "sparkov")
    payments, labels = importers.from_sparkov(frame, salt=SALT)
    assert payments.schema == schemas.PAYMENT_ARROW_SCHEMA
    assert labels.schema == schemas.LABEL_ARROW_SCHEMA
    assert payments.to_pylist() == SPARKOV_PAYMENTS[:2]
    assert labels.to_pylist() == SPARKOV_LABELS[:1]


def test_from_sparkov_maps_a_frame_with_all_kaggle_columns():
    # A frame as pandas reads the Kaggle file with no options: cc_num as int64 and
    # the personal columns present; they must not change the result or reach it.
    frame = pd.read_csv(io.StringIO(SPARKOV_TEST))
    assert frame["cc_num"].dtype == "int64"
    assert "first" in frame.columns
    payments, labels = importers.from_sparkov(frame, salt=SALT)
    assert payments.to_pylist() == SPARKOV_PAYMENTS[2:]
    assert labels.to_pylist() == SPARKOV_LABELS[1:]


def test_from_sparkov_round_trips_through_the_lake(sparkov_dir, tmp_path):
    payments, labels = importers.from_sparkov(
        importers.read_input(sparkov_dir, "sparkov"), salt=SALT
    )
    lake.write_events(payments, tmp_path / "lake")
    lake.write_labels(labels, tmp_path / "lake")
    assert lake.read_events(tmp_path / "lake").equals(payments.sort_by("event_time"))
    assert lake.read_labels(tmp_path / "lake").equals(labels.sort_by("reported_time"))


@pytest.mark.parametrize("path", ["import_dataset", "frame_with_all_columns"])
def test_from_sparkov_keeps_personal_data_out_of_tables_and_files(path, sparkov_dir, tmp_path):
    out = tmp_path / "lake"
    if path == "import_dataset":
        importers.import_dataset("sparkov", sparkov_dir, out)
    else:
        frame = pd.concat(
            [pd.read_csv(io.StringIO(text)) for text in (SPARKOV_TRAIN, SPARKOV_TEST)]
        )
        payments, labels = importers.from_sparkov(frame)
        lake.write_events(payments, out)
        lake.write_labels(labels, out)
    events, labels = lake.read_events(out), lake.read_labels(out)
    cells = [
        value
        for table in (events, labels)
        for column in table.columns
        if pa.types.is_string(column.type)
        for value in column.to_pylist()
        if value is not None
    ]
    assert cells, "no strings to search"
    for secret in SPARKOV_PERSONAL:
        assert not [cell for cell in cells if secret in cell], secret
    assert not set(events.column("lat").to_pylist()) & {42.9836, 48.6102}
    assert not set(events.column("lon").to_pylist()) & {-90.6554, -118.0553}

    files = sorted(out.rglob("*.parquet"))
    assert len(files) == 4  # two days of events, two of labels
    raw = b"".join(file.read_bytes() for file in files)
    # The search can see text in these files: a transaction's ID is found in them.
    assert b"sp_5d1c0e6f3a9b47c2a8e1f0b6d4c3a2b1" in raw
    for secret in SPARKOV_PERSONAL:
        assert secret.encode() not in raw, secret


def test_from_sparkov_names_missing_columns():
    frame = pd.read_csv(io.StringIO(SPARKOV_TRAIN)).drop(columns=["merch_lat"])
    with pytest.raises(importers.InputError) as error:
        importers.from_sparkov(frame)
    assert str(error.value) == "The sparkov data lacks the column(s) merch_lat."


# --- read_input ---------------------------------------------------------------------


def test_read_input_sparkov_reads_a_folder_without_personal_columns(sparkov_dir):
    frame = importers.read_input(sparkov_dir, "sparkov")
    # fraudTest.csv sorts before fraudTrain.csv.
    assert frame["trans_num"].tolist() == [
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "e4d3c2b1a09f8e7d6c5b4a3928170615",
        "5d1c0e6f3a9b47c2a8e1f0b6d4c3a2b1",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    ]
    assert sorted(frame.columns) == sorted(importers.SPARKOV_COLUMNS)


def test_read_input_handbook_reads_parquet_like_pickles(handbook_dir, tmp_path):
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    HANDBOOK_DAY_1.to_parquet(parquet_dir / "2018-04-01.parquet")
    HANDBOOK_DAY_2.to_parquet(parquet_dir / "2018-04-02.parquet")
    from_parquet = importers.read_input(parquet_dir, "handbook")
    from_pickles = importers.read_input(handbook_dir, "handbook")
    pd.testing.assert_frame_equal(from_parquet, from_pickles)
    single = importers.read_input(handbook_dir / "2018-04-02.pkl", "handbook")
    assert single["TRANSACTION_ID"].tolist() == [3, 4]


def test_read_input_missing_path_raises_one_sentence(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(importers.InputError) as error:
        importers.read_input(missing, "sparkov")
    assert str(error.value) == f"The sparkov input {missing} does not exist."


def test_read_input_folder_without_data_files_raises(tmp_path):
    (tmp_path / "README.md").write_text("not data")
    with pytest.raises(importers.InputError) as error:
        importers.read_input(tmp_path, "handbook")
    assert str(error.value) == (
        f"The handbook input folder {tmp_path} holds no .pkl or .parquet files."
    )


def test_read_input_refuses_a_folder_mixing_pickles_and_parquet(handbook_dir):
    HANDBOOK_DAY_1.to_parquet(handbook_dir / "2018-04-01.parquet")
    with pytest.raises(importers.InputError) as error:
        importers.read_input(handbook_dir, "handbook")
    assert str(error.value) == (
        f"The handbook input folder {handbook_dir} holds both .pkl and .parquet files; "
        "keep one kind."
    )


# --- import_dataset and the job -----------------------------------------------------


def test_import_dataset_writes_events_and_labels_and_counts_drops(handbook_dir, tmp_path):
    out = tmp_path / "lake"
    counts = importers.import_dataset("handbook", handbook_dir, out)
    assert counts == {"events": 4, "labels": 3, "dropped": 1}
    assert lake.read_events(out).column("transaction_id").to_pylist() == [
        "hb_0",
        "hb_2",
        "hb_3",
        "hb_4",
    ]
    assert sorted(path.name for path in (out / "labels").iterdir()) == [
        "date=2018-04-08",
        "date=2018-04-09",
    ]


def test_main_prints_counts(sparkov_dir, tmp_path, capsys):
    out = tmp_path / "lake"
    argv = ["--format", "sparkov", "--input", str(sparkov_dir), "--out", str(out)]
    assert import_job.main([*argv, "--label-delay-days", "1.5"]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"Imported sparkov data from {sparkov_dir} into {out}: "
        "4 payment events, 2 fraud labels, 0 rows dropped.\n"
    )
    assert captured.err == ""
    assert lake.read_labels(out).column("reported_time").to_pylist() == [
        datetime(2019, 1, 3, 11, 41, 7, tzinfo=UTC),
        datetime(2019, 1, 4, 9, 2, 59, tzinfo=UTC),
    ]


def test_main_missing_input_exits_2_with_one_sentence(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    out = tmp_path / "lake"
    argv = ["--format", "handbook", "--input", str(missing), "--out", str(out)]
    assert import_job.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"import: The handbook input {missing} does not exist.\n"
    assert captured.out == ""
    assert not out.exists()


def test_parse_args_defaults_label_delay_to_seven_days():
    cfg = import_job.parse_args(["--format", "handbook", "--input", "in", "--out", "out"])
    assert cfg == import_job.ImportConfig(
        fmt="handbook", input_path="in", out="out", label_delay_days=7.0
    )
