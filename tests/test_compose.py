"""docker-compose.yml and the Dockerfile agree with the CLI, the settings and the packages.

No Docker engine runs here, so the file is checked for what breaks a deployment
silently: a command or option the CLI does not have (typer's own parser reads
every ``tunehub ...`` command line), a ``TUNEHUB_*`` variable no setting reads,
a database URL that does not point at the compose PostgreSQL, replicas that
would clash on a port, a GPU worker that would not get a GPU, and an image
that leaves out one of the packages pyproject.toml installs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from sqlalchemy import make_url

from tunehub.cli import app
from common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(a) for a in command]


def _rest(ctx: Any) -> list[str]:
    """What a group's parse left for its subcommand (click keeps the name in protected args)."""
    protected = getattr(ctx, "protected_args", None)
    if protected is None:
        protected = getattr(ctx, "_protected_args", [])
    return list(protected) + list(ctx.args)


def _parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a ``tunehub ...`` command line with the CLI's own parser: (command path, its params).

    Unknown commands, unknown options and bad values raise click's usage errors.
    """
    assert argv[:1] == ["tunehub"], argv
    group = typer.main.get_command(app)
    ctx = group.make_context("tunehub", list(argv[1:]), resilient_parsing=False)
    path, rest = [], _rest(ctx)
    command: Any = group
    while hasattr(command, "get_command") and rest:
        name, rest = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`tunehub {' '.join(path + [name])}` is not a tunehub command"
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command, rest = sub, _rest(ctx)
    assert not rest, f"unused arguments {rest} in {argv}"
    return " ".join(path), dict(ctx.params)


def test_the_stack_has_its_services(services: dict[str, Any]) -> None:
    assert {"postgres", "api-1", "api-2", "tuner", "worker", "gpu-worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert "healthcheck" in services["postgres"]


def test_every_command_line_is_a_real_tunehub_command(services: dict[str, Any]) -> None:
    parsed = {name: _parse(_argv(svc)) for name, svc in services.items() if _argv(svc)}
    assert parsed["api-1"][0] == parsed["api-2"][0] == "serve"
    assert parsed["tuner"][0] == "tuner"
    assert parsed["worker"][0] == parsed["gpu-worker"][0] == "worker"
    for name in ("api-1", "api-2"):
        params = parsed[name][1]
        assert params["tuner"] is False, f"{name}: replicas run the API only; search loops live in `tunehub tuner`"
        assert params["host"] == "0.0.0.0", f"{name} must listen beyond the container's loopback"
    assert parsed["gpu-worker"][1]["all_gpus"] or parsed["gpu-worker"][1]["device"]


def test_the_parser_would_catch_a_wrong_option() -> None:
    with pytest.raises(Exception, match="No such option"):
        _parse(["tunehub", "serve", "--replicas", "2"])
    with pytest.raises(AssertionError, match="not a tunehub command"):
        _parse(["tunehub", "srve"])


def test_every_tunehub_variable_is_a_setting(services: dict[str, Any]) -> None:
    fields = {f"TUNEHUB_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for name, svc in services.items():
        env = svc.get("environment") or {}
        keys = [e.split("=", 1)[0] for e in env] if isinstance(env, list) else list(env)
        for key in keys:
            if key.startswith("TUNEHUB_"):
                assert key in fields, f"{name}: {key} is not a field of common.settings.Settings"
                used.add(key)
    assert {"TUNEHUB_DATABASE_URL", "TUNEHUB_ADMIN_TOKEN", "TUNEHUB_TOKEN"} <= used


def test_the_service_side_shares_the_compose_postgresql(services: dict[str, Any]) -> None:
    pg = services["postgres"]["environment"]
    for name in ("api-1", "api-2", "tuner"):
        svc = services[name]
        url = make_url(svc["environment"]["TUNEHUB_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.username, url.password, url.database) == (
            "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
        ), name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_workers_reach_an_api_replica_over_http_only(services: dict[str, Any]) -> None:
    for name in ("worker", "gpu-worker"):
        svc = services[name]
        server = _parse(_argv(svc))[1]["server"]
        host = re.match(r"http://([^:/]+):(\d+)$", server)
        assert host and host[1] in ("api-1", "api-2"), f"{name} talks to {server}"
        assert "healthcheck" in services[host[1]]
        env = svc.get("environment") or {}
        assert "TUNEHUB_DATABASE_URL" not in env, f"{name}: a worker never talks to the database"
        assert "TUNEHUB_TOKEN" in env


def test_replicas_publish_distinct_host_ports(services: dict[str, Any]) -> None:
    host_ports = []
    for name in ("api-1", "api-2"):
        (mapping,) = services[name]["ports"]
        host, container = str(mapping).split(":")[-2:]
        assert int(container) == _parse(_argv(services[name]))[1]["port"]
        host_ports.append(int(host))
    assert len(set(host_ports)) == 2, host_ports


def test_the_gpu_worker_is_a_profile_with_an_nvidia_device(services: dict[str, Any]) -> None:
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "nvidia/cuda" in gpu["build"]["args"]["BASE"]
    assert all("profiles" not in services[n] for n in ("postgres", "api-1", "api-2", "tuner", "worker"))


def test_the_image_holds_every_installed_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=", dockerfile, re.M) and re.search(r"^FROM \$\{BASE\}", dockerfile, re.M)
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.M))
    missing = {pkg.rstrip("*") for pkg in include} - copied
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {pkg.rstrip("*") for pkg in include} & set(ignored)
