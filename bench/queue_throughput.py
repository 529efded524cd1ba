"""Queue throughput: lease + report round trips per second, and their latency.

(Over 400 lines on purpose: one benchmark, its load generator and its report in one script.)

    python bench/queue_throughput.py [--workers 1,10,50,200] [--backends sqlite,postgresql]
                                     [--replicas 1,2] [--duration 4] [--batch 1] [--profile DIR]

For each backend (SQLite file, PostgreSQL at 127.0.0.1:5432; skipped with the
reason where no server answers) and each replica count, real ``tunehub serve
--no-tuner`` processes are started on loopback ports against one fresh
database; the example MLP is uploaded and a job created through the API (no
tuner runs, so the job's tasks only receive what the bench enqueues with
``db.queue.enqueue_candidates``). Then 1, 10, 50 and 200 measuring stubs
(``bench/stub_workers.py``: asyncio, one keep-alive connection each, in this
process, spread round-robin over the replicas) lease one candidate at a time
and report it at once (``--batch N``: N per lease, reported in one call). It is
a closed loop with no think time, so this is the service's ceiling, and by
Little's law latency ~ workers / throughput once it saturates.

Printed: one markdown table, every configuration side by side in this run,
with ratios to SQLite / 1 replica at the same worker count, and where the CPU
went (the replicas, PostgreSQL's backends for this database, this load
generator; per round trip). Written: ``bench/results/queue_throughput.json``.

``--profile DIR`` also samples the replicas with py-spy (``pip install
py-spy``; GIL-holding samples) during the last backend's most-replicas,
most-workers run, and prints the share of CPU per layer (SQLAlchemy, the HTTP
framework, thread hand-offs, the driver...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from stub_workers import StubFleet, percentile  # noqa: E402

from db import queue  # noqa: E402
from db.engine import make_engine, make_sessionmaker, session_scope  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from common.client import TunehubClient  # noqa: E402

PG_ADMIN_URL = os.environ.get("TUNEHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET = {"kind": "llvm", "num-cores": 2}
# A trace of typical size (real MetaSchedule traces for these workloads are 2-6 KB of JSON).
TRACE = json.dumps(
    [[["GetSBlock", [], ["root", "main"], [f"b{i}"]] for i in range(30)] + [["Parallel", ["l5"], [], []]], [[3, [2, 4, 8]]]]
)


@dataclass
class Row:
    backend: str
    replicas: int
    workers: int
    round_trips_per_s: float
    p50_ms: float
    p99_ms: float
    lease_p50_ms: float
    lease_p99_ms: float
    report_p50_ms: float
    report_p99_ms: float
    round_trips: int
    window_s: float
    transient_errors: int
    double_leased: int
    empty_leases: int
    failed_workers: int
    cpu_service_s: float
    cpu_postgres_s: float
    cpu_loadgen_s: float
    cpu_ms_per_round_trip: float  # service + PostgreSQL CPU over the whole run, per round trip


def _cpu_s(pid: int) -> float:
    """utime + stime of one process, seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pids(db_url: str) -> list[int]:
    """PostgreSQL server processes serving this database now (none for SQLite)."""
    if not db_url.startswith("postgresql"):
        return []
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            ).scalars())
    finally:
        engine.dispose()


class CpuMeter:
    """CPU seconds spent by the replicas, by PostgreSQL for this database, and by this process.

    PostgreSQL's share counts the backends alive at the end (pool connections
    persist; one closed meanwhile is missed, so it is a floor).
    """

    def __init__(self, service_pids: list[int], db_url: str) -> None:
        self.service_pids, self.db_url = service_pids, db_url

    def __enter__(self) -> CpuMeter:
        self._service0 = sum(_cpu_s(p) for p in self.service_pids)
        self._pg0 = {p: _cpu_s(p) for p in _backend_pids(self.db_url)}
        self._self0 = sum(os.times()[:2])
        return self

    def __exit__(self, *exc: object) -> None:
        self.service_s = sum(_cpu_s(p) for p in self.service_pids) - self._service0
        self.postgres_s = sum(_cpu_s(p) - self._pg0.get(p, 0.0) for p in _backend_pids(self.db_url))
        self.loadgen_s = sum(os.times()[:2]) - self._self0


def postgres_answers() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        engine = create_engine(PG_ADMIN_URL, poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).splitlines()[0]


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database URL for one backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(url)
        yield url
        return
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tunehub_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def replicas(count: int, db_url: str, tmp: Path, admin: str, extra_env: dict[str, str]) -> Iterator[list[Any]]:
    """``count`` API-only services on one database; yields [(proc, url)]."""
    from tunehub.harness import Harness

    overrides = {"TUNEHUB_LEASE_TTL_S": "120", "TUNEHUB_LOG_LEVEL": "WARNING", **extra_env}
    with Harness(tmp, database_url=db_url, admin=admin, overrides=overrides) as stack:
        urls = [stack.start_replica(f"replica-{i}") for i in range(count)]
        yield [(stack.procs[f"replica-{i}"], url) for i, url in enumerate(urls)]


def setup_job(server: str, admin: str) -> tuple[str, list[int], str]:
    """(worker token, task ids, target key) of a job on the example MLP, made through the API."""
    with TunehubClient(server, admin) as client:
        token = client.create_token("bench-stubs", "worker").token
        model = client.upload_model(ROOT / "examples" / "mlp.onnx", name="mlp")
        job = client.create_job(model.id, TARGET, trials=100_000)
    return token, [t.id for t in job.tasks], job.target_key


def enqueue(db_url: str, task_ids: list[int], target_key: str, count: int) -> None:
    from db.models import Task

    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        tasks = [(t.id, t.workload_id) for t in s.query(Task).filter(Task.id.in_(task_ids))]
        per = -(-count // len(tasks))
        for task_id, workload_id in tasks:
            queue.enqueue_candidates(
                s, task_id=task_id, workload_id=workload_id, target_key=target_key, traces=[TRACE] * per, round=1
            )
    engine.dispose()


def withdraw(db_url: str, task_ids: list[int]) -> None:
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as s:
        queue.cancel_candidates(s, task_ids=task_ids)
    engine.dispose()


@contextmanager
def py_spy(pids: list[int], out_dir: Path | None, seconds: float) -> Iterator[None]:
    procs = []
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if out_dir is not None and Path(exe).exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            procs.append(
                subprocess.Popen(
                    [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                     "--format", "raw", "--gil", "--output", str(out_dir / f"replica-{pid}.txt"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield
    finally:
        for p in procs:
            try:
                p.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                p.kill()
        # py-spy may still be flushing its output after the wait: until each file stops growing (bounded).
        deadline = time.monotonic() + 30
        files = list(out_dir.glob("replica-*.txt")) if out_dir is not None else []
        sizes: list[int] = []
        while files and time.monotonic() < deadline:
            now = [f.stat().st_size for f in files]
            if now == sizes and all(now):
                break
            sizes = now
            time.sleep(1)


# Where a sampled frame's time goes, by the package of the innermost frame (first match wins).
_CATEGORIES = (
    ("database driver (psycopg / sqlite3)", ("psycopg", "sqlite3", "do_execute")),
    ("SQLAlchemy (ORM, Core, pool)", ("sqlalchemy",)),
    ("validation and JSON (pydantic, json)", ("pydantic", "json/")),
    ("HTTP framework (uvicorn, starlette, fastapi)", ("uvicorn", "starlette", "fastapi", "httptools", "h11")),
    ("thread pool and event loop (anyio, asyncio, threading)", ("anyio", "asyncio", "threading.py", "queue.py", "selectors")),
    ("tunehub code (db/, service/)", ("/db/", "/service/", "/tunehub/", "(db/", "(service/")),
)


def summarize_profile(out_dir: Path) -> dict[str, float]:
    """Share of GIL-holding samples per category, from py-spy's raw (collapsed) output."""
    shares: dict[str, float] = {}
    total = 0
    for path in out_dir.glob("replica-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            name = next((cat for cat, keys in _CATEGORIES if any(k in leaf for k in keys)), "other")
            shares[name] = shares.get(name, 0) + int(count)
            total += int(count)
    return {k: round(100.0 * v / total, 1) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])} if total else {}


def run_one(
    backend: str, n_replicas: int, workers: int, servers: list[Any], token: str, db_url: str, task_ids: list[int],
    target_key: str, args: argparse.Namespace,
) -> Row:
    guess_rate = 3000.0  # round trips/s; enough queued that the stubs never run dry
    enqueue(db_url, task_ids, target_key, int(guess_rate * args.batch * (args.warmup + args.duration + 1)))
    pids = [p.pid for p, _ in servers]
    fleet = StubFleet(
        servers=[u for _, u in servers], token=token, target=TARGET, workers=workers, batch=args.batch,
        deadline_s=args.warmup + args.duration, name_prefix=f"stub-{backend}-{n_replicas}",
    )
    profile_dir = (
        args.profile if args.profile and backend == args.backends[-1] and n_replicas == max(args.replicas)
        and workers == max(args.workers) else None
    )
    fleet.register()  # outside what is timed: the first registration makes a replica import TVM
    with CpuMeter(pids, db_url) as cpu, py_spy(pids, profile_dir, args.warmup + args.duration):
        report = fleet.run()
    withdraw(db_url, task_ids)
    n, lease, rep, rt = report.window(args.warmup, args.warmup + args.duration)
    window = min(args.duration, max(report.elapsed_s - args.warmup, 1e-9))
    ms = lambda xs, q: round(percentile(xs, q) * 1e3, 2)  # noqa: E731
    return Row(
        backend=backend, replicas=n_replicas, workers=workers,
        round_trips_per_s=round(n / window, 1),
        p50_ms=ms(rt, 50), p99_ms=ms(rt, 99),
        lease_p50_ms=ms(lease, 50), lease_p99_ms=ms(lease, 99),
        report_p50_ms=ms(rep, 50), report_p99_ms=ms(rep, 99),
        round_trips=n, window_s=round(window, 2),
        transient_errors=sum(report.transient.values()),
        double_leased=len(report.double_leased), empty_leases=report.empty_leases,
        failed_workers=len(report.failed_workers),
        cpu_service_s=round(cpu.service_s, 2), cpu_postgres_s=round(cpu.postgres_s, 2),
        cpu_loadgen_s=round(cpu.loadgen_s, 2),
        cpu_ms_per_round_trip=round(
            1e3 * (cpu.service_s + cpu.postgres_s) / report.round_trips, 2) if report.round_trips else float("nan"),
    )


def table(rows: list[Row]) -> str:
    base = {r.workers: r.round_trips_per_s for r in rows if r.backend == "sqlite" and r.replicas == 1}
    lines = [
        "| backend | replicas | workers | round trips/s | × sqlite/1 | p50 ms | p99 ms | lease p99 ms | report p99 ms "
        "| CPU s: service / postgres / load gen | CPU ms per round trip | errors | double leases |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.round_trips_per_s / base[r.workers]:.2f}" if base.get(r.workers) else "-"
        lines.append(
            f"| {r.backend} | {r.replicas} | {r.workers} | {r.round_trips_per_s:.0f} | {ratio} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.lease_p99_ms:.1f} | {r.report_p99_ms:.1f} | "
            f"{r.cpu_service_s:.1f} / {r.cpu_postgres_s:.1f} / {r.cpu_loadgen_s:.1f} | {r.cpu_ms_per_round_trip:.1f} | "
            f"{r.transient_errors + r.failed_workers} | {r.double_leased} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--workers", type=ints, default=[1, 10, 50, 200])
    ap.add_argument("--backends", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    ap.add_argument("--replicas", type=ints, default=[1, 2])
    ap.add_argument("--duration", type=float, default=4.0, help="measured seconds per configuration")
    ap.add_argument("--batch", type=int, default=1, help="candidates per lease (each reported in one call)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds per configuration before measuring")
    ap.add_argument("--pool-size", type=int, default=24,
                    help="TUNEHUB_DB_POOL_SIZE and TUNEHUB_API_MAX_CONCURRENCY of each replica")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy raw samples of the replicas go here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (replica logs)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "queue_throughput.json")
    args = ap.parse_args(argv)

    # A pool as large as the requests a replica admits: connections persist (and are counted).
    extra_env = {"TUNEHUB_DB_POOL_SIZE": str(args.pool_size), "TUNEHUB_DB_MAX_OVERFLOW": "0",
                 "TUNEHUB_API_MAX_CONCURRENCY": str(args.pool_size)}
    if "postgresql" in args.backends and (why := postgres_answers()):
        print(f"skipping PostgreSQL: no server answers at {PG_ADMIN_URL}: {why}")
        args.backends = [b for b in args.backends if b != "postgresql"]
    rows: list[Row] = []
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="tunehub-bench-"))
    try:
        for backend in args.backends:
            sub = tmp / backend
            sub.mkdir()
            with database(backend, sub) as db_url:
                admin = secrets.token_urlsafe(24)
                job = None
                for n_replicas in args.replicas:
                    with replicas(n_replicas, db_url, sub, admin, extra_env) as servers:
                        if job is None:
                            job = setup_job(servers[0][1], admin)
                        token, task_ids, target_key = job
                        for workers in args.workers:
                            row = run_one(backend, n_replicas, workers, servers, token, db_url, task_ids, target_key, args)
                            rows.append(row)
                            print(
                                f"{backend:10s} replicas={n_replicas} workers={workers:3d}: "
                                f"{row.round_trips_per_s:7.0f} rt/s  p50 {row.p50_ms:6.1f} ms  p99 {row.p99_ms:6.1f} ms",
                                flush=True,
                            )
    finally:
        if args.keep:
            print(f"replica logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(rows))
    profile: dict[str, float] = {}
    if args.profile:
        profile = summarize_profile(args.profile)
        print(f"\nwhere the replicas' CPU went ({args.backends[-1]}, {max(args.replicas)} replicas, "
              f"{max(args.workers)} workers; py-spy, GIL-holding samples by innermost frame):")
        for name, share in profile.items():
            print(f"  {share:5.1f} %  {name}")
    result = {
        "bench": "queue_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "note": f"closed loop, {args.batch} candidate(s) per lease, no think time; latency = lease + report, ms",
        "wall_s": round(time.monotonic() - started, 1),
        "rows": [asdict(r) for r in rows],
        "profile_shares_percent": profile,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
