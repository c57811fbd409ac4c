"""Champion against shadow challenger on live traffic (``fraudstream.ml.compare``) and
``fraudstream model compare`` / ``model promote --live``: synthetic scored views and
labels, no Spark, no Kafka."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream import schemas
from fraudstream.ml import compare, evaluate
from fraudstream.scoring import views

from .helpers import (
    SHADOW_DECLINE,
    SHADOW_THRESHOLD,
    cli,
    register_champion_and_challenger,
    synthetic_view,
    write_lake,
)

#: The challenger's bands given to compare: those of the synthetic view's champion.
THRESHOLD, DECLINE = SHADOW_THRESHOLD, SHADOW_DECLINE


def _expected(scored, labels, as_of, first: date, last: date, column: str, k: int = 100):
    """AP and CP@k of one score column, computed straight from evaluate on the same rows."""
    day = scored["event_time"].dt.date
    rows = scored[(day >= first) & (day <= last) & scored["challenger_score"].notna()]
    known = labels.loc[(labels["label"] == "fraud") & (labels["reported_time"] <= as_of)]
    y = rows["transaction_id"].isin(known["transaction_id"]).astype(int).to_numpy()
    ap = evaluate.average_precision(y, rows[column])
    cp, _ = evaluate.card_precision_at_k(
        rows["event_time"].dt.date, rows["card_id"], y, rows[column], k
    )
    return ap, cp, rows


def test_metrics_equal_evaluate_on_the_matured_days():
    scored, labels = synthetic_view()
    result = compare.compare(scored, labels, THRESHOLD, DECLINE, days=7, delay_days=7)
    # The newest payment is on day 21 (Nov 21): the window is the 7 days that end 7
    # whole days before it, Nov 7..13; Nov 14..21 are immature.
    assert result.days == [date(2026, 11, 7) + timedelta(days=i) for i in range(7)]
    assert result.immature_days == [date(2026, 11, 14) + timedelta(days=i) for i in range(8)]
    as_of = scored["event_time"].max()
    assert result.as_of == as_of
    for model, column in ((result.champion, "score"), (result.challenger, "challenger_score")):
        ap, cp, rows = _expected(
            scored, labels, as_of, date(2026, 11, 7), date(2026, 11, 13), column
        )
        assert model.average_precision == pytest.approx(ap, abs=1e-12)
        assert model.card_precision == pytest.approx(cp, abs=1e-12)
    assert result.payments == len(rows) == 7 * 400
    assert result.champion.version == "1" and result.challenger.version == "2"


def test_decisions_per_day_by_tier():
    scored, labels = synthetic_view()
    result = compare.compare(scored, labels, THRESHOLD, DECLINE, days=7, delay_days=7)
    day = scored["event_time"].dt.date
    rows = scored[(day >= date(2026, 11, 7)) & (day <= date(2026, 11, 13))]
    champion = rows["decision"].value_counts() / 7
    assert result.champion.decisions_per_day == {
        tier: pytest.approx(champion.get(tier, 0.0)) for tier in schemas.DECISIONS
    }
    shadow = rows["challenger_score"]
    expected = {
        "decline": (shadow >= DECLINE).sum() / 7,
        "review": ((shadow >= THRESHOLD) & (shadow < DECLINE)).sum() / 7,
        "approve": (shadow < THRESHOLD).sum() / 7,
    }
    assert result.challenger.decisions_per_day == pytest.approx(expected)
    assert sum(result.challenger.decisions_per_day.values()) == pytest.approx(400)
    # Without a decline band the challenger never declines.
    alone = compare.compare(scored, labels, THRESHOLD, None, days=7, delay_days=7)
    assert alone.challenger.decisions_per_day["decline"] == 0


def test_immature_days_and_late_labels_do_not_count():
    scored, labels = synthetic_view()
    as_of = scored["event_time"].max()
    base = compare.compare(scored, labels, THRESHOLD, DECLINE, days=7, delay_days=7)
    # A fraud on an immature day (Nov 15), reported before as_of: its payment is out.
    young = scored.index[scored["event_time"].dt.date == date(2026, 11, 15)][0]
    # A fraud in the window whose label came after as_of: genuine, as known at as_of.
    late = scored.index[scored["event_time"].dt.date == date(2026, 11, 10)][0]
    assert not labels["transaction_id"].isin(scored.loc[[young, late], "transaction_id"]).any()
    extra = pd.DataFrame(
        {
            "transaction_id": scored.loc[[young, late], "transaction_id"].to_numpy(),
            "label": "fraud",
            "reported_time": [as_of - pd.Timedelta(hours=1), as_of + pd.Timedelta(minutes=1)],
        }
    )
    result = compare.compare(
        scored, pd.concat([labels, extra]), THRESHOLD, DECLINE, days=7, delay_days=7
    )
    assert result.frauds == base.frauds
    assert result.payments == base.payments
    assert result.champion.average_precision == base.champion.average_precision
    assert result.challenger.card_precision == base.challenger.card_precision
    # A later as_of (the same day: the same window) takes the late label, known by then.
    assert (as_of + pd.Timedelta(minutes=2)).date() == as_of.date()
    later = compare.compare(
        scored,
        pd.concat([labels, extra]),
        THRESHOLD,
        DECLINE,
        as_of=as_of + pd.Timedelta(minutes=2),
        days=7,
        delay_days=7,
    )
    assert later.frauds == base.frauds + 1


def test_the_window_moves_with_the_delay():
    scored, labels = synthetic_view()
    result = compare.compare(scored, labels, THRESHOLD, DECLINE, days=3, delay_days=2)
    assert result.days == [date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18)]
    assert result.immature_days == [date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)]


def test_a_clearly_better_challenger_wins():
    scored, labels = synthetic_view(challenger="better")
    result = compare.compare(scored, labels, THRESHOLD, DECLINE)
    assert result.challenger.card_precision > result.champion.card_precision
    assert result.challenger.average_precision > result.champion.average_precision
    assert result.challenger_wins and result.winner == "challenger"
    assert result.reason.startswith("challenger version 2 wins over champion version 1 (")


def test_a_worse_challenger_loses():
    scored, labels = synthetic_view(challenger="worse")
    result = compare.compare(scored, labels, THRESHOLD, DECLINE)
    assert result.challenger.card_precision < result.champion.card_precision
    assert not result.challenger_wins and result.winner == "champion"
    assert "does not win: its CP@100 is not higher" in result.reason


def _with(result, champion=None, challenger=None):
    """``result`` with the two models' AP and CP@k set to (ap, cp) pairs."""
    from dataclasses import replace

    def metrics(model, pair):
        return replace(model, average_precision=pair[0], card_precision=pair[1])

    return replace(
        result,
        champion=metrics(result.champion, champion),
        challenger=metrics(result.challenger, challenger),
    )


def test_the_winner_rule():
    scored, labels = synthetic_view()
    result = compare.compare(scored, labels, THRESHOLD, DECLINE)
    # Higher CP@k and the same AP: wins.
    assert _with(result, champion=(0.5, 0.2), challenger=(0.5, 0.3)).challenger_wins
    # Higher CP@k but a lower AP: loses, and says so.
    lower_ap = _with(result, champion=(0.5, 0.2), challenger=(0.49, 0.3))
    assert not lower_ap.challenger_wins
    assert "its average precision is lower" in lower_ap.reason
    # The same CP@k and a higher AP: loses (CP@k must be higher).
    assert not _with(result, champion=(0.5, 0.2), challenger=(0.9, 0.2)).challenger_wins


def test_several_challenger_versions_compare_one_on_its_rows():
    scored, labels = synthetic_view()
    # Version 3 scored the first 100 payments of each day: version 2 is the most common.
    first = scored.groupby(scored["event_time"].dt.date).cumcount() < 100
    scored.loc[first, "challenger_version"] = "3"
    result = compare.compare(scored, labels, THRESHOLD, DECLINE)
    assert result.challenger.version == "2" and result.payments == 7 * 300
    only = compare.compare(scored, labels, THRESHOLD, DECLINE, challenger_version="3")
    assert only.challenger.version == "3" and only.payments == 7 * 100
    with pytest.raises(compare.CompareError, match=r"^Challenger version 9 scored no payment"):
        compare.compare(scored, labels, THRESHOLD, DECLINE, challenger_version="9")


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.endswith(".") and text[0].isupper()
    return text


def test_errors_say_why_in_one_sentence():
    scored, labels = synthetic_view()
    none = scored.assign(challenger_score=np.nan, challenger_version=None)
    with pytest.raises(compare.CompareError) as error:
        compare.compare(none, labels, THRESHOLD, DECLINE)
    assert _one_sentence(error).startswith("No payment of the scored view")
    with pytest.raises(compare.CompareError) as error:
        compare.compare(pd.DataFrame(), labels, THRESHOLD, DECLINE)
    assert "set the registry alias challenger" in _one_sentence(error)
    # The challenger began on Nov 18: with a 7-day delay none of its days has matured.
    recent = scored.assign(
        challenger_score=scored["challenger_score"].where(
            scored["event_time"].dt.date >= date(2026, 11, 18)
        )
    )
    with pytest.raises(compare.CompareError) as error:
        compare.compare(recent, labels, THRESHOLD, DECLINE)
    assert _one_sentence(error).startswith("No payment of 2026-11-07..2026-11-13")
    # Labels that have not arrived yet: nothing to compare on.
    with pytest.raises(compare.CompareError) as error:
        compare.compare(scored, labels.iloc[0:0], THRESHOLD, DECLINE)
    assert "nothing to compare on yet" in _one_sentence(error)
    with pytest.raises(compare.CompareError) as error:
        compare.compare(scored, labels, THRESHOLD, DECLINE, days=0)
    _one_sentence(error)


def test_report_lists_both_models_and_the_verdict():
    scored, labels = synthetic_view()
    result = compare.compare(scored, labels, THRESHOLD, DECLINE)
    text = compare.report(result)
    lines = text.splitlines()
    assert lines[0].startswith(f"Compared on {result.payments:,} payments of 7 days")
    assert "Left out as immature (labels take 7 days): 2026-11-14..2026-11-21 (8 days)." in text
    table = [line for line in lines if line.startswith(("model", "champion", "challenger"))]
    assert table[0].split() == [
        "model",
        "version",
        "AP",
        "CP@100",
        *(f"{t}/day" for t in schemas.DECISIONS),
    ]
    assert table[1].split()[:4] == [
        "champion", "1", f"{result.champion.average_precision:.4f}",
        f"{result.champion.card_precision:.4f}",
    ]  # fmt: skip
    assert lines[-1] == f"Verdict: {result.reason}."


# --- the commands, on a real registry and the score job's layout ------------------------


def test_read_view_keeps_the_challenger_columns_of_later_files(tmp_path):
    scored, labels = synthetic_view()
    write_lake(tmp_path, scored, labels, old_days=3)
    read = views.read_view(tmp_path, views.SCORED).sort_values("event_time", ignore_index=True)
    assert len(read) == len(scored)
    early = read["event_time"].dt.date < date(2026, 11, 4)
    assert read.loc[early, "challenger_score"].isna().all()
    np.testing.assert_allclose(
        read.loc[~early, "challenger_score"], scored.loc[~early, "challenger_score"]
    )
    assert (read.loc[~early, "challenger_version"] == "2").all()


def _champion(name: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(name, "champion").version)


def test_promote_live_moves_champion_only_when_the_challenger_wins(tmp_path, mlflow_store, capsys):

    name = "fraudstream-live"
    register_champion_and_challenger(name)
    worse, better = tmp_path / "worse", tmp_path / "better"
    write_lake(worse, *synthetic_view(challenger="worse"), old_days=3)
    write_lake(better, *synthetic_view(challenger="better"), old_days=3)
    live = ["--model-name", name]

    compared = cli(capsys, "model", "compare", "--out", str(better), *live)
    assert compared.returncode == 0, compared.stderr
    assert "challenger  2 " in compared.stdout and "champion    1 " in compared.stdout
    assert "Verdict: challenger version 2 wins over champion" in compared.stdout
    assert _champion(name) == "1"  # compare never moves the alias

    kept = cli(capsys, "model", "promote", "--live", "--out", str(worse), *live)
    assert kept.returncode == 0, kept.stderr
    assert "Not promoted: challenger version 2 does not win" in kept.stdout
    assert "@champion stays at version 1." in kept.stdout
    assert _champion(name) == "1"

    moved = cli(capsys, "model", "promote", "--live", "--out", str(better), *live)
    assert moved.returncode == 0, moved.stderr
    assert "Promoted: @champion moved from version 1 to 2" in moved.stdout
    assert moved.stdout.rstrip().endswith("@challenger removed.")
    assert _champion(name) == "2"
    from mlflow import MlflowClient

    assert "challenger" not in MlflowClient().get_registered_model(name).aliases


def test_model_commands_report_user_errors(tmp_path, mlflow_store, capsys):
    from fraudstream.cli import main as cli

    name = "fraudstream-live"
    register_champion_and_challenger(name)
    both = ["model", "promote", "--live", "--version", "2", "--out", str(tmp_path)]
    assert cli.main(both) == 2
    assert capsys.readouterr().err.strip().endswith("--live or --version and --data, not both.")
    assert cli.main(["model", "promote", "--out", str(tmp_path)]) == 2
    assert "needs --version N and --data DIR, or --live" in capsys.readouterr().err
    assert cli.main(["model", "compare", "--out", str(tmp_path / "none")]) == 2
    assert "No scored view at" in capsys.readouterr().err
    # A view the challenger never scored: one sentence, exit 2, the alias as it was.
    scored, labels = synthetic_view()
    write_lake(tmp_path, scored.assign(challenger_score=np.nan, challenger_version=None), labels)
    live = ["--out", str(tmp_path), "--model-name", name]
    assert cli.main(["model", "promote", "--live", *live]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fraudstream: No payment of the scored view") and "\n" not in error
    assert _champion(name) == "1"
