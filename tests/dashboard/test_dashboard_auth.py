"""Dashboard sign-in over real HTTP: the cookie's flags, redirects, roles, logout, no CDN."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from live_server import Live

from service.dashboard.auth import COOKIE

STATIC = Path(__file__).resolve().parents[2] / "service" / "dashboard"


def _web(live: Live) -> httpx.Client:
    return httpx.Client(base_url=live.base_url, follow_redirects=False, timeout=60)


def test_pages_redirect_to_login_and_json_answers_401(live: Live) -> None:
    with _web(live) as web:
        for path in ("/dashboard/jobs", "/dashboard/jobs/1", "/dashboard/workers", "/dashboard/workloads?target=x"):
            r = web.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2F"), r.headers["location"]
        r = web.get("/dashboard/api/jobs")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        web.cookies.set(COOKIE, "forged", domain="127.0.0.1", path="/dashboard")
        assert web.get("/dashboard/workers").status_code == 303
        assert web.get("/dashboard/api/workers").status_code == 401
        login = web.get("/dashboard/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        assert "default-src 'self'" in login.headers["content-security-policy"]


def test_login_sets_a_strict_cookie_and_logout_clears_it(live: Live) -> None:
    user = live.token("user")
    with _web(live) as web:
        r = web.post("/dashboard/login", data={"token": user, "next": "/dashboard/workers"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/workers"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={user};")
        assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
        assert not re.search(r"(?i);\s*secure", cookie)  # plain http on loopback; https requests get Secure
        assert web.get("/dashboard/workers").status_code == 200
        assert web.get("/dashboard/api/workers").json() == []
        r = web.post("/dashboard/logout")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
        assert f'{COOKIE}=""' in r.headers["set-cookie"] and "max-age=0" in r.headers["set-cookie"].lower()
        assert web.get("/dashboard/workers").status_code == 303
        assert web.get("/dashboard/api/workers").status_code == 401


def test_https_gets_a_secure_cookie(live: Live) -> None:
    """Behind a TLS proxy that says so (uvicorn trusts X-Forwarded-Proto from loopback)."""
    with _web(live) as web:
        r = web.post("/dashboard/login", data={"token": live.admin_token}, headers={"X-Forwarded-Proto": "https"})
        assert r.status_code == 303
        assert re.search(r"(?i);\s*secure", r.headers["set-cookie"])


def test_wrong_tokens_and_roles_are_refused_with_a_reason(live: Live) -> None:
    worker = live.token("worker")
    with _web(live) as web:
        r = web.post("/dashboard/login", data={"token": "nope"})
        assert r.status_code == 401 and "unknown or revoked token" in r.text and "set-cookie" not in r.headers
        r = web.post("/dashboard/login", data={"token": worker})
        assert r.status_code == 403 and "admin or user token" in r.text
        r = web.get("/dashboard/api/jobs", headers={"Authorization": f"Bearer {worker}"})
        assert r.status_code == 403
        r = web.get("/dashboard/api/jobs", headers={"Authorization": f"Bearer {live.admin_token}"})
        assert r.status_code == 200 and r.json() == []


def test_login_never_redirects_outside_the_dashboard(live: Live) -> None:
    with _web(live) as web:
        for evil in ("https://evil.example/", "//evil.example/x", "/dashboard/\\evil", "/api/v1/jobs"):
            r = web.post("/dashboard/login", data={"token": live.admin_token, "next": evil})
            assert r.headers["location"] == "/dashboard/jobs", evil


def test_unknown_job_page_data_is_404(live: Live) -> None:
    with _web(live) as web:
        web.post("/dashboard/login", data={"token": live.admin_token})
        r = web.get("/dashboard/api/jobs/12345")
        assert r.status_code == 404 and "job 12345 does not exist" in r.json()["detail"]


def test_everything_ships_in_the_package() -> None:
    """No page or script loads from another origin: templates and our script name only /dashboard/ paths."""
    texts = [p.read_text() for p in (STATIC / "templates").glob("*.html")]
    texts.append((STATIC / "static" / "dashboard.js").read_text())
    for text in texts:
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
        assert not re.search(r"""fetch\(\s*["'`]https?:""", text)
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "dashboard.css"):
        assert (STATIC / "static" / name).stat().st_size > 0
