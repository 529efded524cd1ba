"""Dashboard sign-in: a token posted once, then carried in a cookie.

The login form posts a tunehub token (admin or user role); the service checks
it the way the API does (``service.deps.authenticate``) and sets it in an
HttpOnly, SameSite=Strict cookie, Secure when the request came over https.
Pages and the dashboard's JSON endpoints accept that cookie (the JSON ones a
Bearer header too). A page without a valid cookie redirects to the login form;
a JSON endpoint answers 401 like the rest of the API. Logout clears the cookie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from common.errors import Forbidden, TunehubError, Unauthorized
from common.protocol import Role
from service.deps import AuthToken, SessionDep, authenticate

COOKIE = "tunehub_token"
PREFIX = "/dashboard"
VIEWER_ROLES = (Role.admin, Role.user)

# Same-origin only: no CDN, no inline script; inline styles are uPlot's own (set by its script).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(prefix=PREFIX, include_in_schema=False)


class LoginRequired(Exception):
    """A page was asked for without a valid cookie; answered with a redirect to the login form."""

    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


def _viewer(session: SessionDep, raw: str) -> AuthToken:
    """The token's holder if it may view the dashboard; Unauthorized or Forbidden otherwise."""
    token = authenticate(session, raw)
    if token.role not in VIEWER_ROLES:
        raise Forbidden(f"the dashboard needs an admin or user token; this one has role {token.role.value}")
    return token


def api_viewer(request: Request, session: SessionDep) -> AuthToken:
    """For JSON endpoints: the cookie, else ``Authorization: Bearer``; 401/403 as JSON."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        raw = value.strip() if scheme.lower() == "bearer" else ""
    if not raw:
        raise Unauthorized("sign in at /dashboard/login, or send 'Authorization: Bearer <token>'")
    return _viewer(session, raw)


def page_viewer(request: Request, session: SessionDep) -> AuthToken:
    """For pages: the cookie's holder; anything else goes to the login form."""
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            return _viewer(session, raw)
        except (Unauthorized, Forbidden):
            pass
    raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


ApiViewer = Annotated[AuthToken, Depends(api_viewer)]
PageViewer = Annotated[AuthToken, Depends(page_viewer)]


def login_redirect(_request: Request, exc: LoginRequired) -> Response:
    return RedirectResponse(f"{PREFIX}/login?next={quote(exc.next_path, safe='')}", status_code=303)


def _safe_next(next_path: str) -> str:
    """Only paths inside the dashboard: a login link cannot send a user elsewhere."""
    inside = next_path.startswith(PREFIX + "/") and not next_path.startswith("//") and "\\" not in next_path
    return next_path if inside else f"{PREFIX}/jobs"


def _login_page(request: Request, next_path: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    context = {"next": _safe_next(next_path), "error": error, "page": "login"}
    return templates.TemplateResponse(request, "login.html", context, status_code=status, headers=PAGE_HEADERS)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = f"{PREFIX}/jobs") -> HTMLResponse:
    return _login_page(request, next)


@router.post("/login", response_model=None)
def login(
    request: Request, session: SessionDep, token: Annotated[str, Form()], next: Annotated[str, Form()] = ""
) -> Response:
    """303 to ``next`` with the cookie set; the form again with the reason (401/403) when the token fails."""
    raw = token.strip()
    try:
        _viewer(session, raw)
    except TunehubError as exc:
        return _login_page(request, next, exc.detail, exc.status_code)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        raw,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    return response


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
