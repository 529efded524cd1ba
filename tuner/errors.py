"""The exceptions tuner/ expects from the layers below, named once.

``CONNECTION_LOST``: the database went away mid-query (a restart, a failover, a
dropped connection). db/ is to convert these into an error of ``common.errors``;
until it does, this tuple is the one place tuner/ names SQLAlchemy's classes.

``TVM_ERRORS``: what TVM's FFI raises for its own errors (it maps them onto
Python's built-in exceptions); XGBoost's ``XGBoostError`` is a ``ValueError``.
"""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError

CONNECTION_LOST: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
TVM_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError)
