"""Which cost model a job's searches share: ``CostModelKind`` and ``job_cost_model``.

Two choices. ``metaschedule``: MetaSchedule's own ``XGBModel``, cold, as
``tune_tir`` builds it. ``tunehub``: ``cost_model.XGBCostModel``, warm from the
target key's model stored in the database, which is retrained from every stored
measurement at a job's start and end when the data has grown enough
(``cost_model.store.refresh``). The default is the settings' (``Settings.cost_model``).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from common.settings import Settings
from tuner.errors import CONNECTION_LOST, TVM_ERRORS

if TYPE_CHECKING:
    from db.job_claims import JobSpec

log = logging.getLogger(__name__)

# MetaSchedule's XGBModel returns random scores below this many samples (its default).
DEFAULT_WARMUP_SAMPLES = 100


class CostModelKind(str, Enum):
    metaschedule = "metaschedule"
    tunehub = "tunehub"


DEFAULT_COST_MODEL = CostModelKind(Settings.model_fields["cost_model"].default)
"""The one default: the settings' own."""


def make_cost_model(*, num_tuning_cores: int, num_warmup_samples: int = DEFAULT_WARMUP_SAMPLES) -> Any:
    """MetaSchedule's XGBoost cost model, as ``tune_tir`` builds it. One may serve several tasks."""
    from tvm.s_tir import meta_schedule as ms

    return ms.cost_model.XGBModel(
        num_warmup_samples=num_warmup_samples, num_tuning_cores=num_tuning_cores, tree_method="auto"
    )


def job_cost_model(kind: CostModelKind, spec: JobSpec, *, factory: sessionmaker[Session], settings: Settings,
                   num_warmup_samples: int) -> Any:
    """The cost model a job's tasks share; MetaSchedule's when the stored one cannot be loaded."""
    threads = settings.search_threads
    if kind is CostModelKind.tunehub:
        try:
            from cost_model.store import load_cost_model

            refresh_cost_model(kind, spec, factory=factory, settings=settings)
            model = load_cost_model(factory, target_key=spec.target_key, num_threads=threads)
        except TVM_ERRORS:  # a broken stored booster: the job still tunes, with MetaSchedule's model
            log.exception("job %d: could not load the stored cost model; using MetaSchedule's", spec.id)
        else:
            log.info("job %d: cost model %s", spec.id,
                     f"version {model.base_version} from the database" if model.base_version else "new (no stored model yet)")
            return model
    return make_cost_model(num_tuning_cores=threads, num_warmup_samples=num_warmup_samples)


def refresh_cost_model(kind: CostModelKind, spec: JobSpec, *, factory: sessionmaker[Session],
                       settings: Settings) -> None:
    """Retrain the target key's stored model if the data grew enough; never fails the job (a stale model is still a model)."""
    if kind is not CostModelKind.tunehub:
        return
    from cost_model.store import refresh

    try:
        refresh(factory, target_key=spec.target_key, target=spec.target_json, nthread=settings.search_threads)
    except (*TVM_ERRORS, *CONNECTION_LOST):
        log.exception("job %d: retraining the cost model failed", spec.id)
