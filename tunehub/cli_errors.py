"""What the CLI tells a person when a command fails: one or two lines, what happened and what to do.

``explain`` maps the one error tree (``common.errors``, as ``common.client``
raises it), file errors and Ctrl-C to those lines; ``tunehub.cli`` prints them,
adds the traceback only under ``--debug`` and picks the exit code.
"""

from __future__ import annotations

from common import errors


def explain(exc: BaseException) -> list[str]:
    """One or two lines for a person: what happened, then what to do about it (no traceback)."""
    if isinstance(exc, KeyboardInterrupt):
        return ["interrupted."]
    if isinstance(exc, errors.Unreachable):
        return [f"error: cannot reach the tunehub service at {exc.server or 'the configured URL'}.",
                "Start it with `tunehub serve`, or point at a running one with --server URL or TUNEHUB_SERVER."]
    if isinstance(exc, errors.Unauthorized):
        return [f"error: the service refused the token ({exc.detail}).",
                "Pass a valid one with --token or TUNEHUB_TOKEN (an admin makes one: `tunehub token create NAME --role user`)."]
    if isinstance(exc, errors.Forbidden):
        return [f"error: the token may not do this ({exc.detail}).",
                "Use a token with the needed role (--token or TUNEHUB_TOKEN)."]
    if isinstance(exc, errors.Unavailable):
        return [f"error: the service failed to answer ({exc.detail}).", "Try again shortly; the service's log says more."]
    if isinstance(exc, errors.TunehubError):
        return [f"error: {exc.detail}"]
    if isinstance(exc, OSError) and exc.filename is not None:
        return [f"error: {exc.strerror or exc}: {exc.filename}"]
    first_line = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, (OSError, ValueError, RuntimeError, TimeoutError)):
        return [f"error: {first_line}"]
    return [f"error: unexpected {type(exc).__name__}: {first_line}", "Run again with --debug for the traceback."]
