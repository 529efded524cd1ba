"""Leave-one-model-out evaluation of the cost model for every model in a database.

    python bench/cost_model_eval.py --db sqlite:///path/tunehub.db [--target-key KEY] [-k 5]
                                    [--objective rank:pairwise] [--no-record] [--out bench/results/cost_model_eval.json]

For each target key (default: every key with measurements, the busiest first)
and each model with measured candidates on it, ``cost_model.leave_out.evaluate_leave_out``
trains on every other workload of the key and scores four rankers on the held-out
model's later half of candidates (tunehub's fleet ensemble, tunehub as a job runs
it, MetaSchedule's XGBModel trained on the same fleet rows, and MetaSchedule's
per-job model trained on the earlier half). Per key, a workload-weighted
aggregate gives the verdict, stored (unless ``--no-record``) as the key's newest
evaluation: the one ``cost_model=auto`` follows. Written: the JSON at ``--out``
and a markdown table beside it (``.md``), also printed. Traces are replayed once
per key; features and MetaSchedule's model are rebuilt per held-out model, so
on a big database give it time (about 20 s per model for 192 measurements here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.errors import TunehubError
from cost_model import ensemble
from cost_model import leave_out as lo
from cost_model.store import load_records
from db import training_data
from db.engine import make_engine, make_sessionmaker, session_scope

RANKERS = ("tunehub", lo.JOB_MODEL, "metaschedule-fleet", lo.BASELINE)


def run(db_url: str, *, target_key: str | None, k: int, objective: str, record: bool) -> dict[str, Any]:
    """Every model of every key (or ``target_key``) left out in turn; per key the aggregate and verdict."""
    engine = make_engine(db_url, null_pool=True)
    factory = make_sessionmaker(engine)
    out: dict[str, Any] = {"db": db_url, "k": k, "objective": objective, "keys": []}
    try:
        with session_scope(factory) as s:
            keys = [target_key] if target_key else training_data.target_keys(s)
        for key in keys:
            with session_scope(factory) as s:
                models = training_data.models_measured_on(s, target_key=key)
                target = training_data.target_of_key(s, target_key=key)
            records = load_records(factory, target_key=key, target=target)  # replayed once for every leave-out
            results, skipped = [], []
            for model_id, name in models:
                started = time.monotonic()
                try:
                    r = lo.evaluate_leave_out(factory, model=str(model_id), target_key=key, target=target, k=k,
                                              objective=objective, records=records)
                except TunehubError as exc:
                    skipped.append({"model_id": model_id, "model_name": name, "why": str(exc)})
                    continue
                results.append(r)
                print(f"  {name} (id {model_id}): {time.monotonic() - started:.1f} s", file=sys.stderr)
            entry: dict[str, Any] = {"target_key": key, "models": [r.as_dict() for r in results], "skipped": skipped}
            if results:
                entry["aggregate"] = lo.aggregate(results)
                if record:
                    lo.record(factory, target_key=key, tunehub_wins=entry["aggregate"]["tunehub_wins"],
                              report={"aggregate": entry["aggregate"], "bench": "cost_model_eval", "k": k,
                                      "objective": objective})
            out["keys"].append(entry)
    finally:
        engine.dispose()
    return lo._json_safe(out)


def markdown(report: dict[str, Any]) -> str:
    """Per key: pairwise accuracy / top-k recall on each held-out model's later half, and the aggregate."""
    k = report["k"]
    lines = []
    for entry in report["keys"]:
        lines += [f"### {entry['target_key'][:120]}", "",
                  (f"Pairwise accuracy / top-{k} recall on the later half of each held-out model's candidates "
                   f"(objective {report['objective']})."), "",
                  "| held-out model | workloads | " + " | ".join(RANKERS) + " | tunehub wins |",
                  "|---|---|" + "---|" * len(RANKERS) + "---|"]
        for m in entry["models"]:
            cells = {s["model"]: s for s in m["later_half"]}
            lines.append(f"| {m['model_name']} ({m['model_id']}) | {cells[lo.BASELINE]['workloads']} | "
                         + " | ".join(_cell(cells[n]) for n in RANKERS) + f" | {'yes' if m['tunehub_wins'] else 'no'} |")
        if "aggregate" in entry:
            agg = entry["aggregate"]
            lines.append(f"| **all ({agg['models']} models)** | {agg[lo.BASELINE]['workloads']} | "
                         + " | ".join(_cell(agg[n]) for n in RANKERS)
                         + f" | **{'yes' if agg['tunehub_wins'] else 'no'}** |")
        for s in entry["skipped"]:
            lines.append(f"\nskipped {s['model_name']} ({s['model_id']}): {s['why']}")
        lines.append("")
    return "\n".join(lines)


def _cell(s: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    return f"{f(s.get('pairwise_accuracy'))} / {f(s.get('top_k_recall'))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="Database URL, e.g. sqlite:///path/tunehub.db")
    ap.add_argument("--target-key", default=None, help="Only this key (default: every key with measurements).")
    ap.add_argument("-k", type=int, default=5, help="k of top-k recall.")
    ap.add_argument("--objective", default=ensemble.OBJECTIVE, help="XGBoost objective of tunehub's ensemble.")
    ap.add_argument("--no-record", dest="record", action="store_false",
                    help="Do not store the verdicts (cost_model=auto reads the newest per key).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cost_model_eval.json")
    args = ap.parse_args()
    report = run(args.db, target_key=args.target_key, k=args.k, objective=args.objective, record=args.record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
