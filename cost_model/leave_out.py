"""Leave-one-model-out: does the fleet's model rank a *new* model's candidates better than MetaSchedule's?

``evaluate_leave_out`` (``tunehub cost-model eval --leave-out MODEL``) hides
every workload of the held-out model's tasks (``db.training_data.model_workload_ids``),
wherever they were measured: a workload shared with another model is hidden
under that model's jobs too, so nothing of the held-out operators leaks into
training. Training is every other training row of the key; the test is the
held-out model's own measured candidates, per workload in measurement order:
the earlier half is what a job has seen, the later half what it must rank.
Four rankers, all scored on the later half's valid measurements:

- ``tunehub``: the ensemble trained on the fleet only (what a job's first batch gets);
- ``tunehub-job``: ``XGBCostModel`` as a job runs it: that ensemble, updated with
  the earlier half (online trees, MetaSchedule fallback when unsure, blend);
- ``metaschedule-fleet``: MetaSchedule's ``XGBModel`` trained on the same fleet rows;
- ``metaschedule-job``: MetaSchedule's ``XGBModel`` as a MetaSchedule job has it:
  trained only on the earlier half of that workload.

``all_measured`` also scores the two fleet-only models on every held-out
measurement. The verdict ``tunehub_wins`` (``tunehub-job`` ranks the later half
better than ``metaschedule-job`` by pairwise accuracy) is what ``auto``
(``tuner.cost_models``) reads once ``record`` has stored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from common.errors import BadInput, NotFound
from cost_model import ensemble
from cost_model.evaluate import ModelScores, metaschedule_model, runner_results, score
from db import training_data
from db.cost_models import record_evaluation
from db.engine import session_scope

JOB_MODEL = "tunehub-job"
BASELINE = "metaschedule-job"


@dataclass(frozen=True)
class Split:
    """Training and test records of one leave-out (``cost_model.store.WorkloadRecords``)."""

    target_key: str
    model_id: int
    model_name: str
    held_out_workloads: list[int]
    train: list[Any]
    test: list[Any]

    @property
    def train_measurement_ids(self) -> list[int]:
        return sorted(m for r in self.train for m in r.measurement_ids)


@dataclass(frozen=True)
class LeaveOutScores:
    """The four rankers on the held-out model's later half, the fleet-only two on all of it, and the verdict."""

    target_key: str
    model_id: int
    model_name: str
    k: int
    objective: str
    held_out_workloads: list[int]
    later_half: list[ModelScores]
    all_measured: list[ModelScores]
    tunehub_wins: bool
    fallback_workloads: int = 0  # held-out workloads the job model ranked with MetaSchedule's (unsure)
    train_measurement_ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("train_measurement_ids")
        return out

    def later(self, name: str) -> ModelScores:
        return next(m for m in self.later_half if m.model == name)


def split(
    factory: sessionmaker[Session], *, model: str, target_key: str | None = None,
    target: dict[str, Any] | str | None = None, records: list[Any] | None = None,
) -> Split:
    """The training and test records when ``model`` (id, name or sha256 prefix) is left out.

    ``records``: every record of the key, replayed once (``load_records``) for several leave-outs.
    """
    from cost_model.store import WorkloadRecords, load_records

    with session_scope(factory) as session:
        model_id, name = training_data.resolve_model(session, ref=model)
        held = training_data.model_workload_ids(session, model_id=model_id)
        target_key = target_key or training_data.busiest_target_key(session)
        if target_key is None:
            raise NotFound("no measurements in the database")
        target = target or training_data.target_of_key(session, target_key=target_key)
    if not held:
        raise BadInput(f"model {name!r} (id {model_id}) has no tasks: nothing to leave out")
    if records is None:
        train = load_records(factory, target_key=target_key, target=target, exclude_workload_ids=held)
        test = load_records(factory, target_key=target_key, target=target, workload_ids=held, model_id=model_id)
        return Split(target_key, model_id, name, held, train, test)
    with session_scope(factory) as session:
        mine = {r.measurement_id for r in training_data.training_rows(
            session, target_key=target_key, workload_ids=held, model_id=model_id)}
    train = [r for r in records if r.workload_id not in held]
    test = []
    for r in records:
        keep = [i for i, m in enumerate(r.measurement_ids) if m in mine]
        if r.workload_id in held and keep:
            test.append(WorkloadRecords(r.workload_id, r.context, [r.candidates[i] for i in keep],
                                        [r.measurement_ids[i] for i in keep], [r.mean_secs[i] for i in keep]))
    return Split(target_key, model_id, name, held, train, test)


def fleet_ensemble(
    sp: Split, *, nthread: int = 2, seed: int = 0, objective: str = ensemble.OBJECTIVE,
) -> tuple[list[Any], int]:
    """(members, training rows) of the ensemble trained on the split's training records only.

    No members when the rows cannot be ranked (none, or all one label): a job then ranks with MetaSchedule's model.
    """
    from cost_model.store import featurise

    train = featurise(sp.train)
    if len(np.unique(train.y)) < 2:
        return [], len(train)
    return (ensemble.train_ensemble(train.x, train.y, train.workload_ids, nthread=nthread, seed=seed,
                                    objective=objective), len(train))


def evaluate_leave_out(
    factory: sessionmaker[Session], *, model: str, target_key: str | None = None,
    target: dict[str, Any] | str | None = None, k: int = 5, nthread: int = 2, seed: int = 0,
    objective: str = ensemble.OBJECTIVE, records: list[Any] | None = None,
) -> LeaveOutScores:
    """Train on everything but ``model``'s workloads and score the four rankers on its candidates.

    BadInput when the model has no measured candidates on the key. ``records`` as in ``split``.
    """
    from cost_model.model import XGBCostModel
    from cost_model.store import featurise

    sp = split(factory, model=model, target_key=target_key, target=target, records=records)
    if not sp.test:
        raise BadInput(f"model {sp.model_name!r} has no measured candidates on {sp.target_key!r}")
    members, n_train = fleet_ensemble(sp, nthread=nthread, seed=seed, objective=objective)
    fleet_ms = metaschedule_model(nthread)
    for r in sp.train:
        fleet_ms.update(r.context, r.candidates, runner_results(r.mean_secs))
    trained_ms = bool(sp.train)

    later: dict[str, dict[int, np.ndarray]] = {n: {} for n in ("tunehub", JOB_MODEL, "metaschedule-fleet", BASELINE)}
    whole: dict[str, dict[int, np.ndarray]] = {"tunehub": {}, "metaschedule-fleet": {}}
    later_secs, all_secs = {}, {}
    fallbacks = 0
    test = featurise(sp.test)
    at = 0
    for r in sp.test:
        x = test.x[at: at + len(r.candidates)]
        at += len(r.candidates)
        n_first = len(r.candidates) // 2
        first = list(range(n_first))
        late = [i for i in range(n_first, len(r.candidates)) if r.mean_secs[i]]
        every = [i for i in range(len(r.candidates)) if r.mean_secs[i]]
        wid = r.workload_id
        all_secs[wid] = np.asarray([r.mean_secs[i] for i in every], np.float64)
        if members:
            whole["tunehub"][wid] = ensemble.predict(members, x[every]).score
        if trained_ms:
            whole["metaschedule-fleet"][wid] = np.asarray(fleet_ms.predict(r.context, [r.candidates[i] for i in every]))
        if len(late) < 2:
            continue
        later_secs[wid] = np.asarray([r.mean_secs[i] for i in late], np.float64)
        late_cands = [r.candidates[i] for i in late]
        first_results = runner_results([r.mean_secs[i] for i in first])
        if members:
            later["tunehub"][wid] = ensemble.predict(members, x[late]).score
        if trained_ms:
            later["metaschedule-fleet"][wid] = np.asarray(fleet_ms.predict(r.context, late_cands))
        job = XGBCostModel(members=members, fallback=metaschedule_model(nthread), num_threads=nthread, seed=seed)
        job.update(r.context, [r.candidates[i] for i in first], first_results)
        later[JOB_MODEL][wid] = np.asarray(job.predict(r.context, late_cands))
        fallbacks += job.sources["metaschedule"] > 0
        per_job = metaschedule_model(nthread)
        per_job.update(r.context, [r.candidates[i] for i in first], first_results)
        later[BASELINE][wid] = np.asarray(per_job.predict(r.context, late_cands))

    later_scores = [score(n, p, {w: s for w, s in later_secs.items() if w in p}, k=k, train_samples=n_train)
                    for n, p in later.items()]
    all_scores = [score(n, p, {w: s for w, s in all_secs.items() if w in p}, k=k, train_samples=n_train)
                  for n, p in whole.items()]
    ours, theirs = (next(s for s in later_scores if s.model == n) for n in (JOB_MODEL, BASELINE))
    wins = bool(ours.pairwise_accuracy > theirs.pairwise_accuracy)  # NaN compares False: no evidence, no win
    return LeaveOutScores(sp.target_key, sp.model_id, sp.model_name, k, objective, sp.held_out_workloads,
                          later_scores, all_scores, wins, fallbacks, sp.train_measurement_ids)


def aggregate(results: Sequence[LeaveOutScores]) -> dict[str, Any]:
    """Per ranker, the workload-weighted mean of its later-half scores over several leave-outs, and the verdict."""
    out: dict[str, Any] = {}
    for name in ("tunehub", JOB_MODEL, "metaschedule-fleet", BASELINE):
        rows = [r.later(name) for r in results]
        out[name] = {metric: _weighted([(getattr(m, metric), m.workloads) for m in rows])
                     for metric in ("pairwise_accuracy", "top_k_recall")}
        out[name]["workloads"] = sum(m.workloads for m in rows)
    out["tunehub_wins"] = bool(out[JOB_MODEL]["pairwise_accuracy"] > out[BASELINE]["pairwise_accuracy"])
    out["models"] = len(results)
    return out


def _weighted(pairs: list[tuple[float, int]]) -> float:
    pairs = [(v, w) for v, w in pairs if w and not np.isnan(v)]
    total = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / total) if total else float("nan")


def record(factory: sessionmaker[Session], *, target_key: str, tunehub_wins: bool, report: dict[str, Any]) -> None:
    """Store a verdict for the key: the newest one decides ``auto`` (``tuner.cost_models``)."""
    with session_scope(factory) as session:
        record_evaluation(session, target_key=target_key, tunehub_wins=tunehub_wins,
                          report=_json_safe(report))


def _json_safe(value: Any) -> Any:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return None if np.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def markdown(result: LeaveOutScores) -> str:
    """One leave-out as a markdown table: later half for all four, every held-out measurement for the fleet-only two."""
    lines = [(f"held out: model {result.model_id} ({result.model_name}), {len(result.held_out_workloads)} workloads; "
              f"objective {result.objective}; tunehub wins: {'yes' if result.tunehub_wins else 'no'}"),
             "", f"| ranker | test | pairwise accuracy | top-{result.k} recall | workloads | train | tested |",
             "|---|---|---|---|---|---|---|"]
    for part, rows in (("later half", result.later_half), ("all", result.all_measured)):
        for s in rows:
            lines.append(f"| {s.model} | {part} | {s.pairwise_accuracy:.3f} | {s.top_k_recall:.3f} | {s.workloads} | "
                         f"{s.train_samples} | {s.test_samples} |")
    return "\n".join(lines)
