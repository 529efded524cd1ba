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


def job_table(job: Any) -> Table:
    """Progress of a job (a ``JobPublic``): trials per task and the best latency found so far."""
    table = Table(title=f"job {job.id} [{job.status.value}] {job.trials_done}/{job.trials} trials")
    for col in ("task", "weight", "trials", "valid", "best (µs)"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for t in job.tasks:
        best = f"{t.best_latency_s * 1e6:.2f}" if t.best_latency_s is not None else "-"
        table.add_row(t.name, str(t.weight), str(t.trials_done), str(t.trials_valid), best)
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
