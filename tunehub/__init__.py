"""tunehub: an autotuning service for TVM, run over a team's lab hardware.

This package is the top layer, what a person or a script calls: the CLI
(``tunehub.cli``), the demo and the service+worker harness. It drives the rooms
(db, service, tuner, cost_model, workers), which build on ``common``; nothing
below imports it.
"""

from common import __version__

__all__ = ["__version__"]
