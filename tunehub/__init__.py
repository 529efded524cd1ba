"""tunehub: an autotuning service for TVM, run over a team's lab hardware.

This package is the face: CLI, settings, the wire protocol, errors. It imports
none of the rooms (db, service, tuner, workers) at module level.
"""

__version__ = "0.1.0"
