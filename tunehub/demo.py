"""``tunehub demo``: the whole path on one machine, real at every step.

Starts the service (SQLite under ``workdir``) with its tuner and one local
worker (``tunehub.harness``), uploads the example ONNX models, tunes them for
this CPU, downloads the best configs, and compiles each model untuned and tuned,
each in a fresh process (``tunehub compile --json``): two TVM runtimes' thread
pools in one process slow each other down and would skew the comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _measure(model: Path, target: dict[str, Any], configs: Path | None, log: Path) -> dict[str, Any]:
    """Compile and time a model with ``tunehub compile --json`` in a fresh process; returns its JSON line."""
    cmd = [sys.executable, "-m", "tunehub", "compile", str(model), "--target", json.dumps(target), "--json"]
    if configs is not None:
        cmd += ["--configs", str(configs)]
    with log.open("ab") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, check=False, timeout=600)
    lines = proc.stdout.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"detail": f"no output (exit code {proc.returncode}); see {log}"}
    if proc.returncode != 0 or "error" in result:
        raise RuntimeError(f"compiling {model.name} failed: {result.get('detail')}")
    return result


def run_demo(console: Console, *, workdir: Path, trials: int, models: list[str]) -> int:
    """Tune ``models`` (names of examples/*.onnx) with ``trials`` each; prints the latency table. Exit code."""
    from tuner.configs import extract_config_zip
    from tunehub.harness import running
    from tunehub.views import follow_job

    started = time.monotonic()
    workdir = workdir.resolve()
    logs = workdir / "logs"
    console.print(f"[bold]tunehub demo[/bold]: data in {workdir / 'data'}, logs in {logs}")
    with running(workdir, log_dir=logs, overrides={"TUNEHUB_LOG_LEVEL": "INFO"}, name="demo-worker") as stack:
        registered = stack.wait_for_workers()[0]
        target = registered.target
        console.print(f"service on {stack.server}; worker {registered.id} registered for target {json.dumps(target)}")
        rows = []
        with stack.client() as client:
            for name in models:
                path = EXAMPLES / f"{name}.onnx"
                uploaded = client.upload_model(path, name=name)
                job = client.create_job(uploaded.id, target, trials)
                console.print(f"\n[bold]{name}[/bold]: model {uploaded.id}, job {job.id}, "
                              f"{len(job.tasks)} tasks, {trials} trials")
                job = follow_job(console, client, job.id, timeout_s=1800)
                if job.status.value != "done":
                    console.print(f"[red]job {job.id} ended {job.status.value}: {job.error}[/red]")
                    return 1
                out = workdir / "configs" / name
                extract_config_zip(client.download_configs(job=job.id), out)
                console.print(f"best configs for {name}: {out}")
                untuned = _measure(path, target, None, logs / "compile.log")
                tuned = _measure(path, target, out, logs / "compile.log")
                rows.append((name, untuned["median_ms"], tuned["median_ms"]))

    table = Table(title="model latency on this CPU (median, fresh process each)")
    for col in ("model", "untuned (ms)", "tuned (ms)", "speedup"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, before, after in rows:
        table.add_row(name, f"{before:.3f}", f"{after:.3f}", f"{before / after:.2f}x")
    console.print(table)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0
