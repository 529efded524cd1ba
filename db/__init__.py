"""Persistence: SQLAlchemy models, sessions, migrations, the queue, and one module per stored concept.

The database is the queue (DESIGN.md). Modules: ``tokens``, ``uploads`` (model
files), ``workloads``, ``jobs``, ``workers``, ``leases`` (the wire view of
``queue``), ``ranking`` (the one definition of "best"), ``job_claims`` (the
tuner's side of jobs), ``families``, ``cost_models``, ``training_data`` and
``ms_database``. Their functions return ``common.protocol`` models or plain
records (``db.records`` and the dataclasses beside them), never ORM objects;
workers never import this package.
"""
