"""The ground floor every room builds on: settings, the wire protocol, errors,
targets, the one HTTP client, logging, process helpers and TVM set-up.

It imports nothing of the rooms (db, service, tuner, cost_model, workers) nor of
the entry points in ``tunehub`` (CLI, demo).
"""

__version__ = "0.1.0"
