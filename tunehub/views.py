"""How a job looks on a terminal: its progress table, and following it live until it ends.

Shared by ``tunehub submit --wait``, ``tunehub status`` and the demo.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from common.protocol import JobStatus

ACTIVE = (JobStatus.queued, JobStatus.running)


def _fmt_s(secs: float) -> str:
    return f"{secs / 3600:g}h" if secs >= 3600 else f"{secs / 60:g}m" if secs >= 60 else f"{secs:g}s"


def job_table(job: Any) -> Table:
    """Progress of a job (a ``JobPublic``): per task its share of the model's time, trials, best latency and
    the scheduler's reason."""
    from rich.markup import escape

    from common.protocol import MAX_TRIALS

    budget = f", time budget {_fmt_s(job.time_budget_s)}" if job.time_budget_s else ""
    of = "" if job.time_budget_s and job.trials >= MAX_TRIALS else f"/{job.trials}"  # the time budget decides
    title = f"job {job.id} [{job.status.value}] {job.trials_done}{of} trials{budget}"
    if job.estimated_latency_s:
        title += f", model ≈ {job.estimated_latency_s * 1e6:.1f} µs"
    if job.end_reason is not None:
        title += f" ({job.end_reason.value})"
    table = Table(title=escape(title))  # "[done]" is not rich markup
    for col in ("task", "weight", "share", "trials", "valid", "best (µs)", "why"):
        table.add_column(col, justify="left" if col in ("task", "why") else "right")
    for t in job.tasks:
        best = f"{t.best_latency_s * 1e6:.2f}" if t.best_latency_s is not None else "-"
        share = f"{t.share * 100:.1f} %" if t.share is not None else "-"
        why = t.why.value if t.why is not None else "-"
        table.add_row(t.name, str(t.weight), share, str(t.trials_done), str(t.trials_valid), best, why)
    return table


def follow_job(
    console: Console, client: Any, job_id: int, *, poll_s: float = 2.0, timeout_s: float | None = None
) -> Any:
    """Show live progress until the job is done, failed or cancelled; returns the final ``JobPublic``.

    On a terminal the table redraws in place; elsewhere (a log, a pipe) only the
    final table is printed. Raises TimeoutError after ``timeout_s``.
    """
    from rich.live import Live

    deadline = time.monotonic() + timeout_s if timeout_s else None
    job = client.job(job_id)
    with Live(job_table(job), console=console, refresh_per_second=2, transient=not console.is_terminal) as live:
        while job.status in ACTIVE:
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout_s:.0f} s")
            time.sleep(poll_s)
            job = client.job(job_id)
            live.update(job_table(job))
    if not console.is_terminal:
        console.print(job_table(job))
    return job
