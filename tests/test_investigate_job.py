"""The investigate job: the simulated analysts' verdicts on what the score job scored.

The scored view is the committed sample's, written by the score job's own row and file
writers (``views.score_history``) with a toy model; the truth is the sample's labels.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstream import config, lake, schemas
from fraudstream.data import investigators
from fraudstream.features import DAY_MS
from fraudstream.scoring import views
from jobs import investigate

from .helpers import read_topic, toy_model

#: Cards investigated a day: few, so that frauds found on one day block cards that would
#: rank in a later day's top k.
K = 5


@pytest.fixture(scope="module")
def scored_lake(history, tmp_path_factory):
    """An output root whose scored view holds the sample, scored by a toy model."""
    out = tmp_path_factory.mktemp("investigate") / "lake"
    views.score_history(history["events"], history["labels"], toy_model(history["dataset"]), out)
    return out


def _expected(scored: pd.DataFrame, frauds: set, k: int) -> tuple[set, int]:
    """The payments the analysts should see, day by day, and how often blocking mattered.

    Each day: every card's highest score, its cards sorted by score (highest first, ties
    by card id), cards found defrauded on an earlier day left out, the first ``k`` taken.
    """
    scored = scored.assign(
        day=scored["event_time"].astype("datetime64[ms, UTC]").astype("int64") // DAY_MS,
        fraud=scored["transaction_id"].isin(frauds),
    )
    chosen, blocked, skipped = set(), set(), 0
    for _, day in scored.groupby("day", sort=True):
        best = day.groupby("card_id")["score"].max().reset_index()
        best = best.sort_values(["score", "card_id"], ascending=[False, True])
        skipped += best.head(k)["card_id"].isin(blocked).sum()
        top = set(best.loc[~best["card_id"].isin(blocked), "card_id"].head(k))
        seen = day.loc[day["card_id"].isin(top)]
        chosen |= set(seen["transaction_id"])
        blocked |= set(seen.loc[seen["fraud"], "card_id"])
    return chosen, skipped


def test_investigate_gives_each_days_top_k_cards_their_true_verdicts(
    scored_lake, history, tmp_path, capsys
):
    verdicts = tmp_path / "verdicts"
    args = ["--out", str(scored_lake), "--data", str(config.SAMPLE_DIR)]
    code = investigate.main([*args, "--verdicts", str(verdicts), "--k", str(K), "--seed", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err

    # The folder reads back in the label contract, laid out by reported date.
    raw = pq.read_table(verdicts / lake.LABELS)
    assert raw.drop_columns(["date"]).schema.equals(schemas.LABEL_ARROW_SCHEMA)
    got = lake.read_labels(verdicts).to_pandas()
    dates = pd.Series(raw["date"].to_pylist(), index=raw["transaction_id"].to_pylist())
    reported_dates = got["reported_time"].dt.strftime("%Y-%m-%d").to_numpy()
    assert (dates.loc[got["transaction_id"]].to_numpy() == reported_dates).all()

    # The payments of each day's top-k cards, blocked cards left out, and no others.
    scored = views.read_view(scored_lake, views.SCORED)
    labels = history["labels"]
    frauds = set(labels.loc[labels["label"] == "fraud", "transaction_id"])
    expected, skipped = _expected(scored, frauds, K)
    assert set(got["transaction_id"]) == expected and got["transaction_id"].is_unique
    assert skipped > 0  # blocking changed some day's choice: the test covers it

    # Each verdict is the truth, from an analyst, hours after the payment, within its day.
    assert list(got["label"]) == [
        "fraud" if t in frauds else "genuine" for t in got["transaction_id"]
    ]
    assert 0 < (got["label"] == "fraud").sum() < len(got)
    assert set(got["source"]) == {"analyst"}
    paid = scored.set_index("transaction_id").loc[got["transaction_id"], "event_time"]
    paid_ms = paid.astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    reported_ms = got["reported_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    assert (reported_ms > paid_ms).all()
    assert (reported_ms // DAY_MS == paid_ms // DAY_MS).all()
    assert (reported_ms - paid_ms <= investigators.VERDICT_DELAY_HOURS[1] * 3_600_000).all()

    # The summary and the log give counts, never a card.
    assert f"{len(got):,} analyst verdicts" in out
    assert not any(card in out + err for card in scored["card_id"].unique())


def test_investigate_says_in_one_sentence_what_is_missing(scored_lake, tmp_path, capsys):
    def run(*args: str) -> str:
        code = investigate.main(["--verdicts", str(tmp_path / "verdicts"), *args])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        return err

    sample = ["--data", str(config.SAMPLE_DIR)]
    missing = tmp_path / "nowhere"
    assert run("--out", str(missing), *sample) == (
        f"investigate: No scored view at {missing / views.SCORED}: give --out the score "
        "job's output root.\n"
    )
    (tmp_path / "empty" / views.SCORED).mkdir(parents=True)
    assert run("--out", str(tmp_path / "empty"), *sample) == (
        f"investigate: The scored view at {tmp_path / 'empty' / views.SCORED} holds no "
        "payment yet: run the score job first.\n"
    )
    assert run("--out", str(scored_lake), "--data", str(missing)) == (
        f"investigate: No label events at {missing / lake.LABELS}: give --data the folder "
        "written by ./spark-submit.sh generate whose payments the score job scored.\n"
    )
    assert not (tmp_path / "verdicts").exists()


def test_investigate_refuses_payments_that_are_not_the_simulators(
    scored_lake, history, tmp_path, capsys
):
    """Verdicts on payments the truth does not hold would call every one of them genuine."""
    data = tmp_path / "data"
    shutil.copytree(config.SAMPLE_DIR / lake.LABELS, data / lake.LABELS)
    events = lake.read_events(config.SAMPLE_DIR)
    lake.write_events(events.slice(0, events.num_rows - 10), data)
    code = investigate.main(
        ["--out", str(scored_lake), "--data", str(data), "--verdicts", str(tmp_path / "v")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"investigate: 10 of the {events.num_rows:,} scored payments are not in "
        f"{data / lake.EVENTS}: give --data the folder whose payments the score job scored.\n"
    )


def test_investigate_never_replaces_the_truth(scored_lake, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(config.SAMPLE_DIR, data)
    before = sorted(p.name for p in (data / lake.LABELS).rglob("*.parquet"))
    code = investigate.main(
        ["--out", str(scored_lake), "--data", str(data), "--verdicts", str(data)]
    )
    assert code == 2
    assert "would replace the label events in" in capsys.readouterr().err
    assert sorted(p.name for p in (data / lake.LABELS).rglob("*.parquet")) == before


def test_investigate_rejects_a_k_below_one(capsys):
    with pytest.raises(SystemExit) as stopped:
        investigate.main(["--k", "0"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "./spark-submit.sh investigate: error: --k must be 1 or more"


def test_investigate_publishes_the_verdicts_the_labels_job_reads(
    scored_lake, tmp_path, topics, kafka_bootstrap, capsys
):
    """``--publish`` sends the written verdicts, in reported order, keyed by card."""
    verdicts = tmp_path / "verdicts"
    code = investigate.main(
        [
            "--out", str(scored_lake),
            "--data", str(config.SAMPLE_DIR),
            "--verdicts", str(verdicts),
            "--k", str(K),
            "--publish",
            "--brokers", kafka_bootstrap,
            "--labels-topic", topics["labels"],
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    written = lake.read_labels(verdicts)
    assert f"Published {written.num_rows:,} label events to {topics['labels']}." in out
    records = read_topic(kafka_bootstrap, topics["labels"])
    decoded = [schemas.decode_label(r.value) for r in records]
    assert [r.key.decode() for r in records] == [d["card_id"] for d in decoded]
    expected = written.to_pylist()
    for record in decoded + expected:
        record["reported_time"] = pd.Timestamp(record["reported_time"]).value // 1_000_000
    key = ("transaction_id", "card_id", "label", "source", "reported_time", "scenario")
    published = sorted(tuple(d[c] for c in key) for d in decoded)
    assert published == sorted(tuple(e[c] for c in key) for e in expected)
    assert len(decoded) == written.num_rows


def test_read_scores_reads_times_in_any_unit(scored_lake, tmp_path):
    """A view written with Spark's default unit (microseconds) reads as the job's (ms)."""
    micro = tmp_path / "lake"
    for path in (scored_lake / views.SCORED).rglob("*.parquet"):
        table = pq.read_table(path)
        index = table.schema.get_field_index("event_time")
        table = table.set_column(
            index, "event_time", table["event_time"].cast(pa.timestamp("us", tz="UTC"))
        )
        target = micro / path.relative_to(scored_lake)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
    got = investigators.read_scores(micro)
    assert got.schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert got.equals(investigators.read_scores(scored_lake))


def test_investigate_from_a_day_keeps_that_days_verdicts_on_and_the_same_choice(
    scored_lake, tmp_path, capsys
):
    """A daily run with ``--from`` writes the verdicts a full run gives those days: the
    earlier days are still investigated, so the cards they blocked stay blocked."""
    args = ["--out", str(scored_lake), "--data", str(config.SAMPLE_DIR), "--k", str(K)]
    assert investigate.main([*args, "--verdicts", str(tmp_path / "all")]) == 0
    assert (
        investigate.main([*args, "--verdicts", str(tmp_path / "day"), "--from", "2018-04-11"]) == 0
    )
    assert "verdicts from 2018-04-11" in capsys.readouterr().out
    everything = lake.read_labels(tmp_path / "all").to_pandas()
    later = everything.loc[everything["reported_time"] >= pd.Timestamp("2018-04-11", tz="UTC")]
    got = lake.read_labels(tmp_path / "day").to_pandas()
    assert 0 < len(got) < len(everything)
    pd.testing.assert_frame_equal(
        got.sort_values("transaction_id", ignore_index=True),
        later.sort_values("transaction_id", ignore_index=True),
    )
