"""Leave-one-model-out searches: tunehub's cost model against MetaSchedule's, at equal trials, measured here.

    python bench/cost_model_search.py --db sqlite:///path/tunehub.db [--leave-out MODEL ...] [--trials 256]
        [--per-round 16] [--tasks 4] [--target-key KEY] [--population 512] [--seed 0]
        [--out bench/results/cost_model_search.json]
    python bench/cost_model_search.py --db URL --quick      # 16 trials, 8 per round, 1 task, population 64

Part (b) of issue 14 (part (a), ranking on measured candidates, is ``bench/cost_model_eval.py``).
For each left-out model of the target key (default: every model measured on it),
the ensemble is trained on every training row of the key except that model's
workloads (``cost_model.leave_out.split`` + ``fleet_ensemble``, the same as
part (a)); then for its ``--tasks`` heaviest tasks (weight × FLOPs) two
``TaskSearch``es run in lock-step, round by round, with the same seed and
search settings: one ranked by ``XGBCostModel`` over that ensemble (its real
fallback and blend, MetaSchedule's ``XGBModel`` inside), one by MetaSchedule's
``XGBModel`` alone (``tuner.cost_models.make_cost_model``). Neither gets warm
starts or family transfers: only the cost model differs. Candidates are built by
MetaSchedule's ``LocalBuilder`` (``_ms_build.fast_build``) and timed by its
``LocalRunner`` with search_quality's settings; alternating the two searches
per round gives both the same machine load.

Per task: MetaSchedule's best after all trials (``ms_best_secs``), the trials
each search needed to reach 95 % of its performance (latency ≤ best / 0.95;
None: never), their ratio tunehub/MetaSchedule, the ratio of final bests, and
which source ranked tunehub's ``predict`` calls (``XGBCostModel.sources``).
Summary: the median trials ratio (a task tunehub never reached counts as
infinitely slow) and the tasks where tunehub ended more than 5 % slower.
Issue 14's target: median ≤ 0.5 and no such task. Written: JSON at ``--out``
(rewritten after every task, so a long run keeps what it measured), the
markdown table beside it (``.md``), also printed. Reads the database only.
Time on a 2-core CPU: a 16-trial round of a 128×1024×1024 dense with
population 512 took about 40 s per search under load ~6 (building dominates),
so expect 10–20 min per task at 256 trials (both searches).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

from common.errors import TunehubError
from common.protocol import ErrorKind, MeasurementOutcome

GOAL = 0.95
"""A search reaches the goal when its best latency is at most MetaSchedule's final best / GOAL."""
WORSE = 1.05
"""tunehub ends worse than MetaSchedule on a task when its final best is above this ratio of MetaSchedule's."""
STUB_SECS = 1e9
"""Times at or above this are TVM's failed-run stub (1e10), not a measurement."""
ARMS = ("metaschedule", "tunehub")


@dataclass(frozen=True)
class TaskPick:
    """One task of the left-out model: its workload and how much of the model it is."""

    workload_id: int
    name: str
    weight: int
    flops: float | None
    mod_json: str

    @property
    def heft(self) -> float:
        return self.weight * (self.flops or 0.0)


@dataclass
class Arm:
    """One search of a task: its cost model, its best latency after each round, and time spent."""

    name: str
    search: Any  # tuner.search.TaskSearch
    cost_model: Any
    curve: list[tuple[int, float | None]] = field(default_factory=list)  # (trials so far, best mean secs)
    by_trial: list[float | None] = field(default_factory=list)  # best after each trial, in measurement order
    wall_s: float = 0.0

    @property
    def trials(self) -> int:
        return len(self.by_trial)

    @property
    def best(self) -> float | None:
        return self.by_trial[-1] if self.by_trial else None


def heaviest_tasks(factory: Any, *, model_id: int, target_key: str, limit: int) -> list[TaskPick]:
    """The model's tasks on the key (over all its jobs, one per workload), by weight × FLOPs, at most ``limit``."""
    from db.engine import session_scope
    from db.job_claims import load_job
    from db.jobs import list_jobs

    picks: dict[int, TaskPick] = {}
    with session_scope(factory) as session:
        for job in list_jobs(session, model_id=model_id, limit=10_000):
            if job.target_key != target_key:
                continue
            for t in load_job(session, job_id=job.id).tasks:
                if t.workload_id not in picks or t.weight > picks[t.workload_id].weight:
                    picks[t.workload_id] = TaskPick(t.workload_id, t.name, t.weight, t.flops, t.mod_json)
    return sorted(picks.values(), key=lambda p: (-p.heft, p.workload_id))[:limit]


@contextmanager
def measuring_env(threads: int) -> Iterator[None]:
    """PYTHONPATH for LocalBuilder's workers (they unpickle ``_ms_build.fast_build``) and TVM's thread count."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TVM_NUM_THREADS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), str(ROOT), saved["PYTHONPATH"]]))
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalMeasurer:
    """MetaSchedule's LocalBuilder and LocalRunner, as ``bench/sq_children.py`` runs ``tune_tir``."""

    def __init__(self, threads: int) -> None:
        from _ms_build import fast_build
        from sq_suite import TIMING
        from tvm.s_tir import meta_schedule as ms

        self.builder = ms.builder.LocalBuilder(max_workers=threads, f_build=fast_build, timeout_sec=120)
        self.runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(**TIMING))

    def measure(self, target: Any, proposals: Sequence[Any]) -> list[MeasurementOutcome]:
        """Build every proposal, then run the built ones one at a time; one outcome per proposal."""
        import tvm
        from tvm.s_tir import meta_schedule as ms
        from tvm.s_tir.meta_schedule.utils import remove_build_dir

        device_type = str(tvm.runtime.device(target.get_target_device_type(), 0)).split(":")[0]  # llvm → "cpu"
        built = self.builder.build([ms.builder.BuilderInput(p.candidate.sch.mod, target) for p in proposals])
        outcomes: list[MeasurementOutcome | None] = [None] * len(proposals)
        runs: list[tuple[int, Any]] = []
        for i, (p, b) in enumerate(zip(proposals, built)):
            if b.error_msg:
                outcomes[i] = MeasurementOutcome.failed(ErrorKind.build, str(b.error_msg)[:2000])
            else:
                runs.append((i, ms.runner.RunnerInput(b.artifact_path, device_type, p.candidate.args_info)))
        for (i, inp), future in zip(runs, self.runner.run([inp for _, inp in runs])):
            r = future.result()
            secs = [float(s) for s in r.run_secs] if r.run_secs else []
            if r.error_msg or not secs or max(secs) >= STUB_SECS:
                outcomes[i] = MeasurementOutcome.failed(ErrorKind.run, str(r.error_msg or "no time")[:2000])
            else:
                outcomes[i] = MeasurementOutcome(run_secs=secs)
            remove_build_dir(inp.artifact_path)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]


def search_pair(
    pick: TaskPick, *, target: str, members: list[Any], measurer: LocalMeasurer, trials: int, per_round: int,
    config: Any, threads: int, seed: int,
) -> dict[str, Arm]:
    """Both searches of one task, round by round, ``trials`` each (fewer if a search space runs dry)."""
    from common.tvm_json import workload_from_json
    from cost_model.model import XGBCostModel
    from tuner.cost_models import make_cost_model
    from tuner.search import TaskSearch

    mod = workload_from_json(pick.mod_json)

    def fresh_ms() -> Any:
        return make_cost_model(num_tuning_cores=threads, num_warmup_samples=config.num_warmup_samples)

    models = {"metaschedule": fresh_ms(),
              "tunehub": XGBCostModel(members=members, fallback=fresh_ms(), num_threads=threads, seed=seed)}
    arms = {name: Arm(name, TaskSearch(mod, target, max_trials=trials, num_trials_per_iter=per_round,
                                       cost_model=cm, num_threads=threads, seed=seed, config=config,
                                       task_name=f"{pick.name}[{name}]"), cm)
            for name, cm in models.items()}
    live = set(ARMS)
    while live:
        for name in ARMS:
            arm = arms[name]
            if name not in live:
                continue
            started = time.monotonic()
            props = arm.search.propose(min(per_round, trials - arm.trials))
            if props:
                outcomes = measurer.measure(arm.search.target, props)
                arm.search.observe(props, outcomes)
                for o in outcomes:
                    prev = arm.best
                    mean = o.mean_secs
                    arm.by_trial.append(mean if prev is None or (mean is not None and mean < prev) else prev)
                arm.curve.append((arm.trials, arm.best))
            took = time.monotonic() - started
            arm.wall_s += took
            if props:
                print(f"    {pick.name} [{name}]: {arm.trials} trials, best {arm.best}, round {took:.1f} s",
                      file=sys.stderr, flush=True)
            if arm.trials >= trials or arm.search.exhausted:
                live.discard(name)
                arm.search.close()
    return arms


def trials_to(by_trial: Sequence[float | None], goal_secs: float) -> int | None:
    """The first trial (1-based) whose best so far is at most ``goal_secs``; None if none is."""
    return next((i + 1 for i, b in enumerate(by_trial) if b is not None and b <= goal_secs), None)


def task_report(pick: TaskPick, arms: dict[str, Arm]) -> dict[str, Any]:
    """One task's row: bests, trials to the goal, ratios, curves, sources."""
    ms_arm, th_arm = arms["metaschedule"], arms["tunehub"]
    ms_best = ms_arm.best
    row: dict[str, Any] = {"workload_id": pick.workload_id, "task": pick.name, "weight": pick.weight,
                           "flops": pick.flops, "ms_best_secs": ms_best, "tunehub_best_secs": th_arm.best}
    goal = ms_best / GOAL if ms_best else None
    row["goal_secs"] = goal
    for arm in (ms_arm, th_arm):
        row[f"{arm.name}_trials"] = arm.trials
        row[f"{arm.name}_trials_to_goal"] = trials_to(arm.by_trial, goal) if goal else None
        row[f"{arm.name}_curve"] = [list(p) for p in arm.curve]
        row[f"{arm.name}_wall_s"] = round(arm.wall_s, 2)
    ms_t, th_t = row["metaschedule_trials_to_goal"], row["tunehub_trials_to_goal"]
    row["trials_ratio"] = th_t / ms_t if ms_t and th_t else None
    row["final_ratio"] = th_arm.best / ms_best if ms_best and th_arm.best else None
    row["sources"] = dict(th_arm.cost_model.sources)
    return row


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median trials ratio (never reached: infinite) and the tasks tunehub ended more than 5 % worse on."""
    scored = [r for r in rows if r["metaschedule_trials_to_goal"]]
    ratios = [r["trials_ratio"] if r["trials_ratio"] is not None else math.inf for r in scored]
    median = statistics.median(ratios) if ratios else None
    worse = [r["task"] for r in rows if r["ms_best_secs"] and (r["tunehub_best_secs"] is None
                                                               or r["final_ratio"] > WORSE)]
    out = {"tasks": len(rows), "tasks_scored": len(scored),
           "median_trials_ratio": None if median is None or math.isinf(median) else median,
           "median_is_never": median is not None and math.isinf(median),
           "tunehub_never_reached": sum(1 for r in scored if r["tunehub_trials_to_goal"] is None),
           "tunehub_worse_by_5pct": len(worse), "worse_tasks": worse}
    out["target_met"] = bool(out["median_trials_ratio"] is not None and out["median_trials_ratio"] <= 0.5
                             and not worse and scored)
    return out


def run(db_url: str, *, leave_out: Sequence[str], target_key: str | None, trials: int, per_round: int,
        tasks: int, population: int, threads: int, seed: int,
        checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every left-out model's heaviest tasks searched with both cost models; the report as a dict.

    ``checkpoint`` gets the report so far after each task (a long run keeps what it measured).
    """
    from common.tvm_env import prepare_tvm
    from cost_model import leave_out as lo
    from cost_model.store import load_records
    from db import training_data
    from db.engine import make_engine, make_sessionmaker, session_scope
    from tuner.search import SearchConfig

    config = SearchConfig(population_size=population,
                          init_min_unmeasured=min(SearchConfig.init_min_unmeasured, population // 4))
    engine = make_engine(db_url, null_pool=True)
    factory = make_sessionmaker(engine)
    out: dict[str, Any] = {"db": db_url, "trials": trials, "per_round": per_round, "tasks_per_model": tasks,
                           "population": population, "seed": seed, "goal": GOAL, "models": [], "skipped": []}
    try:
        with session_scope(factory) as s:
            key = target_key or training_data.busiest_target_key(s)
            if key is None:
                raise SystemExit("no measurements in the database")
            target = training_data.target_of_key(s, target_key=key)
            models = ([training_data.resolve_model(s, ref=m) for m in leave_out] if leave_out
                      else training_data.models_measured_on(s, target_key=key))
        out["target_key"], out["target"] = key, json.loads(target)
        prepare_tvm((str(out["target"]["kind"]),), num_threads=threads)
        records = load_records(factory, target_key=key, target=target)  # replayed once for every leave-out
        with measuring_env(threads):
            measurer = LocalMeasurer(threads)
            for model_id, name in models:
                try:
                    sp = lo.split(factory, model=str(model_id), target_key=key, target=target, records=records)
                except TunehubError as exc:
                    out["skipped"].append({"model_id": model_id, "model_name": name, "why": str(exc)})
                    continue
                started = time.monotonic()
                members, n_train = lo.fleet_ensemble(sp, nthread=threads, seed=seed)
                entry: dict[str, Any] = {"model_id": model_id, "model_name": name, "train_rows": n_train,
                                         "members": len(members), "train_s": round(time.monotonic() - started, 1),
                                         "tasks": []}
                for pick in heaviest_tasks(factory, model_id=model_id, target_key=key, limit=tasks):
                    load = os.getloadavg()[0]
                    arms = search_pair(pick, target=target, members=members, measurer=measurer, trials=trials,
                                       per_round=per_round, config=config, threads=threads, seed=seed)
                    row = task_report(pick, arms)
                    row["loadavg_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
                    entry["tasks"].append(row)
                    if checkpoint is not None:
                        checkpoint({**out, "models": [*out["models"], entry],
                                    "summary": summary([*_rows(out), *entry["tasks"]])})
                    print(f"  {name}: {pick.name}: ms {row['ms_best_secs']}, tunehub {row['tunehub_best_secs']}, "
                          f"trials to goal {row['metaschedule_trials_to_goal']} / {row['tunehub_trials_to_goal']}",
                          file=sys.stderr, flush=True)
                out["models"].append(entry)
    finally:
        engine.dispose()
    out["summary"] = summary(_rows(out))
    return out


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for m in report["models"] for r in m["tasks"]]


def markdown(report: dict[str, Any]) -> str:
    """One row per task: MetaSchedule's best, trials to 95 % of it for both, ratios, tunehub's sources."""
    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "–" if v is None else fmt.format(v)

    lines = [(f"Leave-one-model-out searches on {report['target_key'][:100]}: {report['trials']} trials, "
             f"{report['per_round']} per round, population {report['population']}, seed {report['seed']}."), "",
             ("| left out | task | weight×GFLOP | MS best (ms) | MS trials→95 % | tunehub trials→95 % | trials ratio "
             "| final ratio | tunehub sources |"), "|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        for r in m["tasks"]:
            src = ", ".join(f"{k} {v}" for k, v in sorted(r["sources"].items()))
            lines.append(f"| {m['model_name']} | {r['task']} | {f(r['weight'] * (r['flops'] or 0) / 1e9, '{:.3g}')} | "
                         f"{f(r['ms_best_secs'] and r['ms_best_secs'] * 1e3, '{:.4f}')} | "
                         f"{f(r['metaschedule_trials_to_goal'], '{}')} | {f(r['tunehub_trials_to_goal'], '{}')} | "
                         f"{f(r['trials_ratio'], '{:.2f}')} | {f(r['final_ratio'])} | {src} |")
    s = report["summary"]
    median = "∞ (tunehub never reached 95 % on half the tasks or more)" if s["median_is_never"] else f(s["median_trials_ratio"], "{:.2f}")
    lines += ["", (f"Median trials ratio (tunehub / MetaSchedule) over {s['tasks_scored']} tasks: {median}; "
              f"tunehub never reached 95 %: {s['tunehub_never_reached']}; ended > 5 % worse: "
              f"{s['tunehub_worse_by_5pct']}; issue 14's target met: {'yes' if s['target_met'] else 'no'}.")]
    for sk in report["skipped"]:
        lines.append(f"\nskipped {sk['model_name']} ({sk['model_id']}): {sk['why']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="Database URL, e.g. sqlite:///path/tunehub.db")
    ap.add_argument("--leave-out", action="append", default=[], metavar="MODEL",
                    help="A model (id, name or sha256 prefix) to leave out; repeatable (default: every measured one).")
    ap.add_argument("--target-key", default=None, help="The target key (default: the busiest).")
    ap.add_argument("--trials", type=int, default=None, help="Trials per search (default 256; --quick 16).")
    ap.add_argument("--per-round", type=int, default=None, help="Candidates per round (default 16; --quick 8).")
    ap.add_argument("--tasks", type=int, default=None, help="Heaviest tasks per left-out model (default 4; --quick 1).")
    ap.add_argument("--population", type=int, default=None,
                    help="Evolutionary population (default MetaSchedule's 512; --quick 64).")
    ap.add_argument("--threads", type=int, default=2, help="Search, build and run threads.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="A smoke run: 16 trials, 8 per round, 1 task, population 64.")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cost_model_search.json")
    args = ap.parse_args(argv)
    quick = {"trials": 16, "per_round": 8, "tasks": 1, "population": 64}
    full = {"trials": 256, "per_round": 16, "tasks": 4, "population": 512}
    knobs = {k: getattr(args, k) if getattr(args, k) is not None else (quick if args.quick else full)[k] for k in full}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(report: dict[str, Any]) -> str:
        report["quick"] = args.quick
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        table = markdown(report)
        args.out.with_suffix(".md").write_text(table + "\n")
        return table

    try:
        report = run(args.db, leave_out=args.leave_out, target_key=args.target_key, threads=args.threads,
                     seed=args.seed, checkpoint=write, **knobs)
    except TunehubError as exc:  # an unknown model, a model without tasks: one line, not a traceback
        raise SystemExit(f"cost_model_search: {exc}") from exc
    print(write(report))
    return report


if __name__ == "__main__":
    main()
