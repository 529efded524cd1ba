"""bench/cost_model_search.py --quick on a small real database: both searches run, measured here, and report sanely.

Real TVM end to end: candidates measured once (``test_cost_model.store_measurements``)
fill the database of two models; leaving one out trains the ensemble on the
other's rows, then each cost model drives its own MetaSchedule search of the
left-out model's task, built and timed by MetaSchedule's LocalBuilder/LocalRunner.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from measured_records import store_measurements


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_quick_leave_out_search_reports_both_curves(db_url: str, session_factory: sessionmaker[Session],
                                                    tmp_path: Path) -> None:
    import cost_model_search as bench

    store_measurements(session_factory, 32, 0, model="resnet")
    store_measurements(session_factory, 16, 0, model="bert")
    out = tmp_path / "search.json"
    bench.main(["--db", db_url, "--quick", "--leave-out", "resnet", "--out", str(out)])

    report = json.loads(out.read_text())
    assert (report["trials"], report["per_round"], report["tasks_per_model"]) == (16, 8, 1)
    assert [m["model_name"] for m in report["models"]] == ["resnet"] and not report["skipped"]
    entry = report["models"][0]
    assert entry["train_rows"] == 16 and entry["members"] > 0, "trained on bert's 16³ rows only"
    (row,) = entry["tasks"]
    assert row["task"] == "matmul32"
    for arm in ("metaschedule", "tunehub"):
        curve = row[f"{arm}_curve"]
        trials = [t for t, _ in curve]
        bests = [b for _, b in curve if b is not None]
        assert trials == sorted(trials) and 0 < trials[-1] == row[f"{arm}_trials"] <= 16
        assert all(a >= b for a, b in itertools.pairwise(bests)), f"{arm}'s best never gets worse"
        reached = row[f"{arm}_trials_to_goal"]
        assert reached is None or 1 <= reached <= row[f"{arm}_trials"]
    ms_bests = [b for _, b in row["metaschedule_curve"] if b is not None]
    assert row["ms_best_secs"] == min(ms_bests) > 0
    assert row["goal_secs"] == pytest.approx(row["ms_best_secs"] / bench.GOAL)
    assert row["metaschedule_trials_to_goal"] is not None, "MetaSchedule reaches its own best"
    if row["tunehub_trials_to_goal"] is not None:
        assert row["trials_ratio"] == pytest.approx(row["tunehub_trials_to_goal"] / row["metaschedule_trials_to_goal"])
    assert row["final_ratio"] == pytest.approx(row["tunehub_best_secs"] / row["ms_best_secs"])
    assert sum(row["sources"].values()) > 0 and set(row["sources"]) <= {"tunehub", "blend", "metaschedule"}
    s = report["summary"]
    assert s["tasks"] == s["tasks_scored"] == 1
    assert s["tunehub_worse_by_5pct"] == (row["final_ratio"] > bench.WORSE)
    md = out.with_suffix(".md").read_text()
    assert "| resnet | matmul32 |" in md and "Median trials ratio" in md


def test_summary_counts_a_never_reached_goal_as_infinitely_slow_and_flags_worse_endings() -> None:
    import cost_model_search as bench

    assert bench.trials_to([None, 3.0, 2.0, 2.0, 1.0], 2.0) == 3 and bench.trials_to([None, 3.0], 2.0) is None

    def row(task: str, ms_t: int, th_t: int | None, final: float) -> dict[str, object]:
        return {"task": task, "ms_best_secs": 1.0, "tunehub_best_secs": final, "final_ratio": final,
                "metaschedule_trials_to_goal": ms_t, "tunehub_trials_to_goal": th_t,
                "trials_ratio": th_t / ms_t if th_t else None}

    fast = [row("a", 100, 20, 0.98), row("b", 200, 50, 1.0), row("c", 64, None, 1.2)]
    s = bench.summary(fast)
    assert s["median_trials_ratio"] == 0.25 and s["tunehub_never_reached"] == 1
    assert s["tunehub_worse_by_5pct"] == 1 and s["worse_tasks"] == ["c"] and not s["target_met"]
    assert bench.summary(fast[:2])["target_met"], "median 0.225 ≤ 0.5, none worse"
    never = bench.summary([row("a", 100, None, 1.0), row("b", 100, None, 1.0), row("c", 100, 10, 1.0)])
    assert never["median_trials_ratio"] is None and never["median_is_never"] and not never["target_met"]
    assert bench.summary([])["tasks_scored"] == 0 and not bench.summary([])["target_met"]
