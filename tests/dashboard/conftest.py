"""Fixtures for the dashboard tests: a live service, real tuning data in it, headless Chromium.

``seeded`` is a live service (uvicorn on loopback, SQLite) holding real
measurements (``dashboard_seed``), shared by a test module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for extra in (TESTS_DIR, TESTS_DIR / "service", TESTS_DIR / "workers"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from dashboard_seed import Seeded, seeded_service  # noqa: E402
from live_server import Live, running  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A fresh service on SQLite, no data."""
    with running(f"sqlite:///{tmp_path / 'tunehub.db'}", tmp_path) as svc:
        yield svc


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with seeded_service(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
