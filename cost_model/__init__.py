"""tunehub's cost model: XGBoost over MetaSchedule's per-store features, learned from the whole database.

- ``cost_model.features``: a candidate's ``PerStoreFeature`` rows pooled into one fixed vector.
- ``cost_model.model``: ``XGBCostModel``, a MetaSchedule ``PyCostModel`` that starts
  from the target key's stored booster and keeps learning from the job's own measurements.
- ``cost_model.store``: training from every stored measurement of a target key,
  versioned boosters in the ``cost_models`` table (XGBoost's UBJSON bytes, never pickle).
- ``cost_model.evaluate``: ranking accuracy on held-out measurements beside MetaSchedule's ``XGBModel``.

Imports ``common`` and ``db`` only (its SQL is in ``db.cost_models`` / ``db.training_data``); TVM and XGBoost are imported where used.
"""
