"""Public models, tuned by the real service within a time budget, against onnxruntime on the same CPU.

For each model of :mod:`bench.model_zoo` (exported once to ONNX into ``--cache``):
the task count, then one tuning job on a real service + one local worker (as
``tunehub demo`` starts them) whose configs are downloaded at each checkpoint
(minutes of tuning), then, with the service stopped, every variant timed side by
side in its own process, rounds alternated (:mod:`bench.model_timing`): TVM
untuned with each compile fallback of :mod:`tuner.default_schedule` (naive loops as
TVM 0.27's ``compile_relax`` leaves them on CPU; the default design-space schedule;
the measured choice), TVM tuned at each checkpoint (default fallback; the last one
also with the naive and measured fallbacks), and onnxruntime (2 threads). Ratios
are latency/ORT latency (below 1: TVM wins); outputs are compared to ORT's.

    python bench/models.py --cache /tmp/models                          # full: 6 models, 5/10/20 min (~2.5 h)
    python bench/models.py --cache /tmp/models --models small_cnn,ds_cnn_kws --budget-min 2 --checkpoints 1,2
    python bench/models.py --cache /tmp/models --profile resnet18_112 [--configs DIR]
    python bench/models.py --cache /tmp/models --resume                 # go on after an interrupted run

Results: ``bench/results/models.json`` (``models_quick.json`` when the budget
is under the default; ``models_profile_MODEL.json`` for ``--profile``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from model_timing import Variant, profile, time_side_by_side  # noqa: E402
from model_zoo import ZOO, export_onnx  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_CHECKPOINTS = (5.0, 10.0, 20.0)
TRIALS_PER_MIN = 400  # more than a 2-core worker measures: the wall clock, not trials, ends a job


@contextmanager
def local_service(workdir: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The service (SQLite) and one local worker from :mod:`tunehub.harness`; yields (client, worker's target)."""
    from tunehub.harness import running

    with running(workdir, timeout_s=180, name="bench-worker") as harness, harness.client() as client:
        yield client, client.workers()[0].target


def tune_with_checkpoints(client: Any, model: Path, target: dict[str, Any], checkpoints: list[float],
                          out: Path, trials_per_round: int | None = None) -> list[dict[str, Any]]:
    """One job for ``model``; at each checkpoint (minutes since the job started running) save its configs."""
    from common.errors import TunehubError
    from tuner.configs import extract_config_zip

    uploaded = client.upload_model(model, name=model.stem)
    job = client.create_job(uploaded.id, target, int(TRIALS_PER_MIN * max(checkpoints)) + 64,
                            trials_per_round=trials_per_round)
    while (job := client.job(job.id)).started_at is None and job.status.value not in ("failed", "cancelled", "done"):
        time.sleep(1)
    started = time.monotonic()
    rows = []
    for minute in checkpoints:
        while time.monotonic() - started < minute * 60 and client.job(job.id).status.value == "running":
            time.sleep(2)
        job = client.job(job.id)
        row: dict[str, Any] = {"minute": minute, "tuning_s": round(time.monotonic() - started, 1),
                               "trials_done": job.trials_done, "status": job.status.value, "configs": None}
        try:
            row["configs"] = str(extract_config_zip(client.download_configs(job=job.id), out / f"min{minute:g}"))
        except (TunehubError, Exception) as exc:  # noqa: BLE001  (no configs yet is a result, not a crash)
            row["error"] = str(exc)[:300]
        rows.append(row)
        print(f"  {model.stem} @ {minute:g} min: {job.trials_done} trials, configs {'ok' if row['configs'] else 'none'}",
              flush=True)
    if client.job(job.id).status.value in ("running", "queued"):
        client.cancel_job(job.id)
    return rows


def _task_count(model: Path, target: dict[str, Any]) -> int:
    from tuner.intake import extract_workloads

    return len(extract_workloads(model.read_bytes(), None, target))


def tune_model(name: str, cache: Path, workdir: Path, checkpoints: list[float],
               service: tuple[Any, dict[str, Any]], trials_per_round: int | None = None) -> dict[str, Any]:
    """Export, count tasks and tune one model within the budget; configs saved per checkpoint."""
    client, target = service
    model = export_onnx(name, cache)
    result: dict[str, Any] = {"model": name, "description": ZOO[name].description, "family": ZOO[name].family,
                              "onnx": str(model), "tasks": _task_count(model, target), "target": target}
    print(f"{name}: {result['tasks']} tasks; tuning {checkpoints[-1]:g} min", flush=True)
    result["checkpoints"] = tune_with_checkpoints(client, model, target, checkpoints, workdir / name,
                                                 trials_per_round)
    result["trials_per_round"] = trials_per_round
    return result


def time_model(result: dict[str, Any], workdir: Path, rounds: int) -> dict[str, Any]:
    """Every variant of a tuned model timed side by side (service stopped); ratios to ORT."""
    model, target, ckpts = result["onnx"], result["target"], result["checkpoints"]
    variants = [Variant("untuned_naive", "tvm", model, target, fallback="naive"),
                Variant("untuned_default", "tvm", model, target, fallback="default"),
                Variant("untuned_measured", "tvm", model, target, fallback="measured")]
    variants += [Variant(f"tuned_{c['minute']:g}min", "tvm", model, target, configs=c["configs"])
                 for c in ckpts if c["configs"]]
    if ckpts and ckpts[-1]["configs"]:  # the compile-side fallbacks, side by side, on the final configs
        variants += [Variant(f"tuned_{ckpts[-1]['minute']:g}min_{fb}_fallback", "tvm", model, target,
                             configs=ckpts[-1]["configs"], fallback=fb) for fb in ("naive", "measured")]
    variants.append(Variant("ort", "ort", model, target))
    result["loadavg_before"] = os.getloadavg()  # 2-core box shared with others: read ratios with this in mind
    timed = time_side_by_side(variants, workdir / result["model"] / "timing", rounds=rounds)
    result["loadavg_after"] = os.getloadavg()
    result["latency"] = timed
    result.update(ratios_vs_ort(timed))
    print(f"{result['model']}: " + ", ".join(f"{k} {v['median_ms']:.3f} ms ({result['ratio_vs_ort'][k]:.2f}x ORT)"
                                          for k, v in timed.items()), flush=True)
    return result


def ratios_vs_ort(timed: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Latency / onnxruntime's, per variant: of the median rounds, and of the best rounds.

    Both, because on a shared box interference is not symmetric: a spell of load
    can land on a few of one variant's rounds (onnxruntime's were seen at 3.5 ms
    in two rounds and 15 ms in three), and the median then hides what the
    variant does when it has the cores. Read the two together.
    """
    ort, ort_best = timed["ort"]["median_ms"], min(timed["ort"]["runs_ms"])
    return {"ratio_vs_ort": {label: round(v["median_ms"] / ort, 3) for label, v in timed.items()},
            "ratio_vs_ort_best_round": {label: round(min(v["runs_ms"]) / ort_best, 3) for label, v in timed.items()}}


def _speedup_share(result: dict[str, Any], first: float, last: float) -> float | None:
    """How much of the final speedup over untuned (default schedules) the first checkpoint already had."""
    lat = result.get("latency", {})
    base, a, b = (lat.get(k, {}).get("median_ms") for k in ("untuned_default", f"tuned_{first:g}min", f"tuned_{last:g}min"))
    if not (base and a and b) or base / b <= 1.0:
        return None
    return round((base / a - 1.0) / (base / b - 1.0), 3)


def summarize(results: list[dict[str, Any]], checkpoints: list[float]) -> dict[str, Any]:
    def gmean(values: list[float]) -> float | None:
        return round(math.exp(sum(math.log(v) for v in values) / len(values)), 3) if values else None

    labels = {label for r in results for label in r.get("ratio_vs_ort", {})}

    def geomeans(key: str) -> dict[str, float | None]:
        return {label: gmean([r[key][label] for r in results if label in r.get(key, {})]) for label in sorted(labels)}

    return {
        "geomean_ratio_vs_ort": geomeans("ratio_vs_ort"),
        "geomean_ratio_vs_ort_best_round": geomeans("ratio_vs_ort_best_round"),
        "speedup_share_first_vs_last": {r["model"]: _speedup_share(r, checkpoints[0], checkpoints[-1])
                                        for r in results},
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The README's table of a run: latencies in ms as median round / best round, ratios to onnxruntime likewise."""
    cps = result["checkpoints_min"]

    def ms(v: dict[str, Any] | None) -> str:
        return "–" if v is None else f"{v['median_ms']:.3g} / {min(v['runs_ms']):.3g}"

    head = (["model", "tasks", f"trials at {', '.join(f'{c:g}' for c in cps)} min", "untuned"]
            + [f"tuned {c:g} min" for c in cps] + ["onnxruntime", f"tuned {cps[-1]:g} min / ORT", "max rel. error"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = f"tuned_{cps[-1]:g}min"
    for m in result["models"]:
        lat = m["latency"]
        trials = ", ".join(str(c["trials_done"]) for c in m["checkpoints"])
        ratio = f"{m['ratio_vs_ort'].get(last, float('nan')):.2f} / {m['ratio_vs_ort_best_round'].get(last, float('nan')):.2f}"
        err = max(v["max_rel_err_vs_ref"] for v in lat.values())
        rows.append("| " + " | ".join([m["model"], str(m["tasks"]), trials, ms(lat.get("untuned_default"))]
                                      + [ms(lat.get(f"tuned_{c:g}min")) for c in cps]
                                      + [ms(lat.get("ort")), ratio, f"{err:.1e}"]) + " |")
    summary = result["summary"]
    rows.append("")
    rows.append(f"Geometric mean of tuned {cps[-1]:g} min / onnxruntime: "
                f"{summary['geomean_ratio_vs_ort'].get(last)} by median rounds, "
                f"{summary['geomean_ratio_vs_ort_best_round'].get(last)} by best rounds.")
    return "\n".join(rows)


def run_profile(name: str, cache: Path, configs: Path | None, target: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Top operators by time, TVM (VM call instrument) beside onnxruntime (its profiler)."""
    model = str(export_onnx(name, cache))
    tvm_rows = profile(Variant("tvm", "tvm", model, target, configs=str(configs) if configs else None), workdir)
    ort_rows = profile(Variant("ort", "ort", model, target), workdir)
    by_type: dict[str, float] = {}
    for row in ort_rows["rows"]:
        by_type[row["op_type"]] = by_type.get(row["op_type"], 0.0) + row["us"]
    out = {"model": name, "configs": str(configs) if configs else None, "tvm": tvm_rows,
           "ort": ort_rows, "ort_by_op_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}
    print(f"TVM total {sum(r['us'] for r in tvm_rows['rows']):.0f} us; top:")
    for r in tvm_rows["rows"][:12]:
        print(f"  {r['us']:9.1f} us  {r['op']}")
    print(f"ORT total {sum(by_type.values()):.0f} us; by op type:")
    for op, us in list(out["ort_by_op_type"].items())[:12]:
        print(f"  {us:9.1f} us  {op}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path("/tmp/models"), help="folder for the exported ONNX models")
    p.add_argument("--workdir", type=Path, default=None, help="service data, configs, logs (default CACHE/run)")
    p.add_argument("--models", default=",".join(ZOO), help=f"comma-separated, from {', '.join(ZOO)}")
    p.add_argument("--budget-min", type=float, default=None, help="tuning minutes per model (default: last checkpoint)")
    p.add_argument("--checkpoints", default=None, help="minutes, comma-separated (default 5,10,20)")
    p.add_argument("--rounds", type=int, default=7, help="alternated timing rounds per variant (median)")
    p.add_argument("--profile", metavar="MODEL", default=None, help="per-operator TVM vs ORT profile of one model")
    p.add_argument("--configs", type=Path, default=None, help="with --profile: a config folder for TVM")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default under bench/results)")
    p.add_argument("--trials-per-round", type=int, default=None,
                   help="candidates per task per search round (default: the service's)")
    p.add_argument("--table", type=Path, default=None, metavar="JSON", help="print a result JSON as a markdown table")
    p.add_argument("--resume", action="store_true", help="skip models WORKDIR/tuned.json has from a cut-short run")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0

    checkpoints = [float(c) for c in args.checkpoints.split(",")] if args.checkpoints else list(DEFAULT_CHECKPOINTS)
    if args.budget_min is not None:
        checkpoints = [c for c in checkpoints if c <= args.budget_min] or [args.budget_min]
    workdir = (args.workdir or args.cache / "run").resolve()
    if args.profile:
        from workers.detect import detect_cpu_target

        profiled = run_profile(args.profile, args.cache, args.configs, detect_cpu_target(), workdir / "profile")
        _write(args.out or RESULTS / f"models_profile_{args.profile}.json", profiled)
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in ZOO]
    if unknown or not names:
        p.error(f"unknown models {unknown or names}; choose from {list(ZOO)}")
    quick = checkpoints[-1] < DEFAULT_CHECKPOINTS[-1]
    out = args.out or RESULTS / ("models_quick.json" if quick else "models.json")
    tuned = tune_all(names, args.cache, workdir, checkpoints, resume=args.resume,
                     trials_per_round=args.trials_per_round)
    results: list[dict[str, Any]] = []
    for r in tuned:  # the JSON is rewritten after each model, so an interrupted run keeps what it timed
        results.append(time_model(r, workdir, args.rounds))
        _write(out, {"checkpoints_min": checkpoints, "complete": len(results) == len(tuned), "models": results,
                     "summary": summarize(results, checkpoints)})
    print(json.dumps(summarize(results, checkpoints), indent=1))
    return 0


def _write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out}", flush=True)


def tune_all(names: list[str], cache: Path, workdir: Path, checkpoints: list[float],
             resume: bool, trials_per_round: int | None = None) -> list[dict[str, Any]]:
    """Tune each model in turn on one service; ``WORKDIR/tuned.json`` records each as it finishes.

    With ``resume``, models already in that file are not tuned again (the
    service restarts on the same database), so a run cut short goes on.
    """
    record = workdir / "tuned.json"
    done: list[dict[str, Any]] = json.loads(record.read_text()) if resume and record.exists() else []
    todo = [n for n in names if n not in {r["model"] for r in done}]
    print(f"{len(todo)} models x {checkpoints[-1]:g} min tuning (+ ~3 min timing each); "
          f"{len(names) - len(todo)} already tuned", flush=True)
    if todo:
        with local_service(workdir) as service:  # tune everything first, then time on a quieter box
            for name in todo:
                done.append(tune_model(name, cache, workdir, checkpoints, service, trials_per_round))
                record.write_text(json.dumps(done, indent=1, default=str) + "\n")
    return [r for name in names for r in done if r["model"] == name]


if __name__ == "__main__":
    raise SystemExit(main())
