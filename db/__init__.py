"""Persistence: SQLAlchemy models, sessions, migrations and the queue operations.

The database is the queue (DESIGN.md). ORM objects never leave this package's
callers in db/, service/ and tuner/; workers never import it.
"""
