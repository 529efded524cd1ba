"""tunehub's cost model: an ensemble of XGBoost rankers learned from the whole database.

- ``cost_model.features``: a candidate's ``PerStoreFeature`` rows pooled, plus its workload's
  features (family, FLOPs, bytes, intensity, anchor extents); per-workload rank labels.
- ``cost_model.ensemble``: rankers on by-workload bootstraps; their disagreement is the uncertainty.
- ``cost_model.model``: ``XGBCostModel``, a MetaSchedule ``PyCostModel`` over the stored ensemble
  that learns online from the job and falls back to MetaSchedule's ``XGBModel`` when unsure.
- ``cost_model.store``: training from every stored measurement of a target key,
  versioned in the ``cost_models`` table (XGBoost's UBJSON bytes, never pickle).
- ``cost_model.evaluate``: ranking metrics, and a random per-workload holdout.
- ``cost_model.leave_out``: leave-one-model-out against MetaSchedule's fleet and per-job models;
  its stored verdict drives ``cost_model=auto``.

Imports ``common`` and ``db`` only (its SQL is in ``db.cost_models`` / ``db.training_data``); TVM and XGBoost are imported where used.
"""
