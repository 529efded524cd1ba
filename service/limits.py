"""Admission control: at most ``limit`` requests inside the app at once; the rest wait their turn.

Why it matters: every endpoint and most dependencies are sync functions that
FastAPI runs one after another on a shared thread pool (anyio's, 40 threads by
default), and a request holds its database transaction across those hops (the
session commits in the dependency's exit). On SQLite that transaction holds
the write lock; on PostgreSQL it holds a pooled connection. With more requests
in flight than threads, every thread can end up blocked waiting for the lock
(or a connection) while the request that holds it waits for a thread to run
its next step: nothing moves until the busy or pool timeout fires (measured:
50 stub workers on SQLite, 0 round trips/s and "database is locked"). Keeping
in-flight requests below the pool's thread count guarantees the holder always
finds a thread. Waiting requests queue in the event loop, in arrival order,
at no thread's cost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread

# Threads left free beyond the admitted requests (file reads of uploads, TVM
# imports started by a request run on the same pool).
SPARE_THREADS = 8


class ConcurrencyLimit:
    """Pure ASGI middleware; lifespan and websocket scopes pass straight through."""

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # one per serving loop, made on its first request
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.limit + SPARE_THREADS)
            self._slots = (loop, asyncio.Semaphore(self.limit))
        return self._slots[1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._semaphore():
            await self.app(scope, receive, send)
