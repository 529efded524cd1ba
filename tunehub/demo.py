"""``tunehub demo``: the whole path on one machine, real at every step.

Starts the service (SQLite under ``workdir``) with its tuner, one local worker,
uploads the example ONNX models, tunes them for this CPU, downloads the best
configs, and compiles each model untuned and tuned in fresh processes to
compare latency (thread pools of two TVM runtimes in one process interfere,
TVM_NOTES §2).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.processes import free_port, spawn, stop, wait_healthy

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


def _wait_for_worker(client: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = client.workers()
        if workers:
            return workers[0]
        time.sleep(0.5)
    raise RuntimeError(f"no worker registered within {timeout_s:.0f} s (see the worker log)")


def run_demo(console: Console, *, workdir: Path, trials: int, models: list[str]) -> int:
    from tuner.configs import extract_config_zip
    from tunehub.views import follow_job
    from common.client import TunehubClient

    started = time.monotonic()
    workdir = workdir.resolve()
    data_dir, logs = workdir / "data", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    admin = secrets.token_urlsafe(32)
    env = {
        "TUNEHUB_DATA_DIR": str(data_dir),
        "TUNEHUB_ADMIN_TOKEN": admin,
        "TUNEHUB_PORT": str(port),
        "TUNEHUB_DATABASE_URL": "",  # the embedded SQLite default, even if the shell names another
        "TUNEHUB_LOG_LEVEL": "INFO",
    }
    console.print(f"[bold]tunehub demo[/bold]: service on {server}, data in {data_dir}, logs in {logs}")
    service = spawn(["serve"], env=env, log=logs / "service.log")
    worker = None
    try:
        wait_healthy(server, timeout_s=120, proc=service)
        client = TunehubClient(server, admin)
        worker_token = client.create_token("demo-worker", "worker").token
        worker = spawn(["worker", "--server", server, "--token", worker_token, "--name", "demo-worker"],
                       env=env, log=logs / "worker.log")
        registered = _wait_for_worker(client)
        target = registered.target
        console.print(f"worker {registered.id} registered for target {json.dumps(target)}")

        rows = []
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
    finally:
        if worker is not None:
            stop(worker)
        stop(service)
