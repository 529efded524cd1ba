"""``tunehub submit --time-budget`` parsing and the job table ``tunehub status`` prints."""

from __future__ import annotations

from datetime import datetime

import pytest
from rich.console import Console

from common.protocol import MAX_TRIALS, JobEndReason, JobPublic, JobStatus, TaskPublic, TaskReason
from tunehub.cli import parse_duration
from tunehub.views import job_table


@pytest.mark.parametrize("text, secs", [("90", 90), ("90s", 90), ("30m", 1800), ("1.5h", 5400), (" 2H ", 7200)])
def test_durations_take_seconds_minutes_and_hours(text: str, secs: float) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize("text", ["", "m", "soon", "-5m", "0s", "10d"])
def test_a_bad_duration_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="duration|positive"):
        parse_duration(text)


def _render(job: JobPublic) -> str:
    console = Console(width=160, record=True)
    console.print(job_table(job))
    return console.export_text()


def test_the_job_table_shows_share_trials_and_why() -> None:
    task = dict(workload_hash="1", weight=1, trials_valid=3, best_latency_s=1e-4)
    job = JobPublic(
        id=7, model_id=1, status=JobStatus.done, target={"kind": "llvm"}, target_key="llvm", trials=MAX_TRIALS,
        trials_done=9, time_budget_s=1800, end_reason=JobEndReason.time_budget, estimated_latency_s=2.5e-4,
        created_at=datetime(2026, 1, 1),
        tasks=[TaskPublic(id=1, name="conv", trials_done=8, share=0.962, why=TaskReason.largest_gain, **task),
               TaskPublic(id=2, name="softmax", trials_done=1, share=0.004, why=TaskReason.negligible, **task)],
    )
    text = _render(job)
    assert "job 7 [done] 9 trials, time budget 30m, model ≈ 250.0 µs (time budget reached)" in text
    assert "96.2 %" in text and "largest expected gain" in text
    assert "0.4 %" in text and "under 1 % of model" in text
    trials_only = job.model_copy(update={"trials": 64, "time_budget_s": None, "end_reason": None})
    assert "9/64 trials" in _render(trials_only)
