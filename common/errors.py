"""One error tree for tunehub; each class knows its HTTP status.

    TunehubError                 500 internal
    ├── BadInput                 422 bad_input        (malformed model, bad shapes, unknown target)
    ├── NotFound                 404 not_found
    ├── TooLarge                 413 too_large        (an upload over the configured limit)
    ├── Unauthorized             401 unauthorized     (missing or unknown token)
    ├── Forbidden                403 forbidden        (token lacks the role)
    ├── Conflict                 409 conflict         (state does not allow the action)
    ├── LeaseLost                409 lease_lost       (lease expired or owned by another worker)
    └── Unavailable              503 unavailable      (service failing: worth retrying)
        └── Unreachable          503 unreachable      (no answer at all: nothing listens, DNS, timeout; client side only)

The service maps these in one handler to ``{"error": code, "detail": message}``.
db/, tuner/, workers/ raise them and never import FastAPI.
"""

from __future__ import annotations


class TunehubError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadInput(TunehubError):
    status_code = 422
    code = "bad_input"


class NotFound(TunehubError):
    status_code = 404
    code = "not_found"


class TooLarge(TunehubError):
    status_code = 413
    code = "too_large"


class Unauthorized(TunehubError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TunehubError):
    status_code = 403
    code = "forbidden"


class Conflict(TunehubError):
    status_code = 409
    code = "conflict"


class LeaseLost(Conflict):
    code = "lease_lost"


class Unavailable(TunehubError):
    """The service could not be reached or failed on its side (5xx, 408, 429); worth retrying."""

    status_code = 503
    code = "unavailable"


class Unreachable(Unavailable):
    """No answer from the service at all (refused, unresolvable, timed out); raised by the client, never sent.

    ``server`` is the URL that was tried, so a person can be told which one and how to change it.
    """

    code = "unreachable"

    def __init__(self, detail: str, *, server: str = ""):
        super().__init__(detail)
        self.server = server
