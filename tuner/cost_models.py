"""Which cost model a job's searches share: ``CostModelKind``, ``resolve_kind`` and ``job_cost_model``.

Three choices. ``metaschedule``: MetaSchedule's own ``XGBModel``, cold, as
``tune_tir`` builds it. ``tunehub``: ``cost_model.XGBCostModel``, an ensemble
warm from the target key's model stored in the database (retrained from every
stored measurement at a job's start and end when the data has grown enough,
``cost_model.store.refresh``), wrapping MetaSchedule's model for the workloads
it is unsure of. ``auto``: the evidence decides per target key: ``tunehub``
only when the key's newest leave-one-model-out evaluation
(``cost_model.leave_out``, stored by ``tunehub cost-model eval --record`` or
``bench/cost_model_eval.py``) says it ranks better, else ``metaschedule``.
The default is the settings' (``Settings.cost_model``). The choice a job
ended up with is recorded on the job (``jobs.cost_model``).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from common.settings import Settings
from db.cost_models import latest_evaluation, set_job_cost_model
from db.engine import session_scope
from tuner.errors import CONNECTION_LOST, TVM_ERRORS

if TYPE_CHECKING:
    from db.job_claims import JobSpec

log = logging.getLogger(__name__)

# MetaSchedule's XGBModel returns random scores below this many samples (its default).
DEFAULT_WARMUP_SAMPLES = 100


class CostModelKind(str, Enum):
    metaschedule = "metaschedule"
    tunehub = "tunehub"
    auto = "auto"


DEFAULT_COST_MODEL = CostModelKind(Settings.model_fields["cost_model"].default)
"""The one default: the settings' own."""


def make_cost_model(*, num_tuning_cores: int, num_warmup_samples: int = DEFAULT_WARMUP_SAMPLES) -> Any:
    """MetaSchedule's XGBoost cost model, as ``tune_tir`` builds it. One may serve several tasks."""
    from tvm.s_tir import meta_schedule as ms

    return ms.cost_model.XGBModel(
        num_warmup_samples=num_warmup_samples, num_tuning_cores=num_tuning_cores, tree_method="auto"
    )


def resolve_kind(kind: CostModelKind, *, factory: sessionmaker[Session], target_key: str) -> CostModelKind:
    """``auto`` → ``tunehub`` when the key's newest evaluation says it wins, else ``metaschedule``; others as given."""
    if kind is not CostModelKind.auto:
        return kind
    with session_scope(factory) as session:
        evaluation = latest_evaluation(session, target_key=target_key)
    return CostModelKind.tunehub if evaluation is not None and evaluation.tunehub_wins else CostModelKind.metaschedule


def job_cost_model(kind: CostModelKind, spec: JobSpec, *, factory: sessionmaker[Session], settings: Settings,
                   num_warmup_samples: int) -> Any:
    """The cost model a job's tasks share, recorded on the job; MetaSchedule's when the stored one cannot be loaded."""
    threads = settings.search_threads
    chosen = resolve_kind(kind, factory=factory, target_key=spec.target_key)
    model = None
    if chosen is CostModelKind.tunehub:
        try:
            from cost_model.store import load_cost_model

            refresh_cost_model(chosen, spec, factory=factory, settings=settings)
            model = load_cost_model(factory, target_key=spec.target_key, num_threads=threads, fallback=make_cost_model(
                num_tuning_cores=threads, num_warmup_samples=num_warmup_samples))
        except TVM_ERRORS:  # a broken stored model: the job still tunes, with MetaSchedule's model
            log.exception("job %d: could not load the stored cost model; using MetaSchedule's", spec.id)
            chosen = CostModelKind.metaschedule
        else:
            log.info("job %d: cost model %s", spec.id,
                     f"version {model.base_version} from the database" if model.base_version
                     else "tunehub with no stored model yet (MetaSchedule's ranks every workload)")
    if model is None:
        model = make_cost_model(num_tuning_cores=threads, num_warmup_samples=num_warmup_samples)
    with session_scope(factory) as session:
        set_job_cost_model(session, job_id=spec.id, kind=chosen.value)
    if kind is CostModelKind.auto:
        log.info("job %d: cost model auto → %s (the key's latest evaluation)", spec.id, chosen.value)
    return model


def refresh_cost_model(kind: CostModelKind, spec: JobSpec, *, factory: sessionmaker[Session],
                       settings: Settings) -> None:
    """Retrain the target key's stored model if the data grew enough; never fails the job (a stale model is still a model).

    ``auto`` trains too, so the key has a model for the next evaluation to judge.
    """
    if kind is CostModelKind.metaschedule:
        return
    from cost_model.store import refresh

    try:
        refresh(factory, target_key=spec.target_key, target=spec.target_json, nthread=settings.search_threads)
    except (*TVM_ERRORS, *CONNECTION_LOST):
        log.exception("job %d: retraining the cost model failed", spec.id)
