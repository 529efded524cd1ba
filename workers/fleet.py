"""One worker process, several devices: a daemon per device, each its own worker.

``tunehub worker --device cuda:0 --device cuda:1`` (or ``--all-gpus``) serves
each GPU with its own registration (name ``<host>-cuda<N>``), its own sandboxes
(``CUDA_VISIBLE_DEVICES`` names that GPU alone, the runner is pinned to a core of
its own) and its own lease loop thread. The CPU, when served, registers under
the plain name. A daemon that fails stops the others and the process exits
with its error: a half-serving worker would look healthy and measure less.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from common.errors import BadInput
from workers.daemon import WorkerDaemon
from workers.detect import (
    NO_CUDA_COMPILER,
    Device,
    GpuInfo,
    available_cores,
    cuda_target,
    detect_cpu_target,
    detect_gpus,
    detect_hardware,
    find_cuda_compiler,
    parse_device,
)
from workers.options import WorkerOptions, default_build_workers

log = logging.getLogger("workers.fleet")


@dataclass
class DevicePlan:
    """Everything one device's daemon needs that detection decides."""

    device: Device
    name: str
    target: dict[str, Any]
    hardware: dict[str, Any]
    cpus: list[int] | None = None
    sandbox_env: dict[str, str] = field(default_factory=dict)
    cuda_compiler: str | None = None


def plan_devices(
    devices: list[str] | None = None,
    *,
    all_gpus: bool = False,
    target: dict[str, Any] | None = None,
    name: str | None = None,
    cpus: list[int] | None = None,
    cuda_compiler: str = "auto",
    gpus: list[GpuInfo] | None = None,
) -> list[DevicePlan]:
    """Resolve ``--device``/``--all-gpus``/``--target``/``--cpus`` into one plan per device.

    No device named means the CPU. ``target`` overrides detection for every
    device (its kind must fit them). Raises ``BadInput`` with what to do for a
    GPU that is not there or a CUDA device without a CUDA compiler.
    """
    specs = [parse_device(d) for d in devices or []]
    if all_gpus or any(s.kind == "cuda" for s in specs):
        gpus = detect_gpus() if gpus is None else gpus
    if all_gpus:
        if not gpus:
            raise BadInput("--all-gpus: nvidia-smi and the CUDA driver report no NVIDIA GPU on this machine")
        specs += [Device("cuda", g.index) for g in gpus]
    unique: list[Device] = []
    for spec in specs or [Device("cpu")]:
        if spec not in unique:
            unique.append(spec)
    base = name or socket.gethostname()
    cores = cpus or available_cores()
    plans = []
    for spec in unique:
        if spec.kind == "cpu":
            tgt = dict(target) if target else detect_cpu_target(len(cpus) if cpus else None)
            if tgt.get("kind") != "llvm":
                raise BadInput(f"--target {tgt.get('kind')!r} does not fit the CPU device; use a kind llvm target")
            plans.append(DevicePlan(spec, base, tgt, detect_hardware(), cpus=cpus))
            continue
        gpu = next((g for g in gpus or [] if g.index == spec.index), None)
        if gpu is None and target is None:
            found = ", ".join(f"cuda:{g.index} {g.name}" for g in gpus or []) or "none"
            raise BadInput(f"{spec}: no such NVIDIA GPU here (found: {found})")
        tgt = dict(target) if target else cuda_target(gpu.compute_cap)  # type: ignore[union-attr]
        if tgt.get("kind") != "cuda":
            raise BadInput(f"--target {tgt.get('kind')!r} does not fit {spec}; use a kind cuda target")
        compiler = find_cuda_compiler(cuda_compiler)
        if compiler is None:
            raise BadInput(f"{spec}: {NO_CUDA_COMPILER}")
        visible = gpu.uuid if gpu is not None and gpu.uuid else str(spec.index)
        plans.append(
            DevicePlan(
                spec,
                f"{base}-cuda{spec.index}",
                tgt,
                detect_hardware(gpu),
                cpus=[cores[spec.index % len(cores)]],
                sandbox_env={"CUDA_VISIBLE_DEVICES": visible},
                cuda_compiler=compiler.mode,
            )
        )
        log.info("%s: %s (%s), CUDA compiler %s (%s)", spec, tgt.get("arch"), gpu.name if gpu else "?", compiler.mode, compiler.detail)
    return plans


def daemons_for(plans: list[DevicePlan], server: str, token: str, options: WorkerOptions | None = None) -> list[WorkerDaemon]:
    """One daemon per plan, all with ``options`` (builders default to the cores shared among the devices)."""
    options = options or WorkerOptions()
    if options.build_workers is None:
        options = options.replace(build_workers=default_build_workers(len(plans)))
    return [
        WorkerDaemon(
            server,
            token,
            options,
            target=p.target,
            name=p.name,
            hardware=p.hardware,
            cpus=p.cpus,
            sandbox_env=p.sandbox_env,
            cuda_compiler=p.cuda_compiler,
        )
        for p in plans
    ]


class WorkerFleet:
    """Runs several daemons, one thread each, until ``stop()`` or until one fails."""

    def __init__(self, daemons: list[WorkerDaemon], names: list[str] | None = None):
        if not daemons:
            raise ValueError("a fleet needs at least one daemon")
        self.daemons = daemons
        self.names = names or [d.name for d in daemons]
        self._errors: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Stop every daemon; idempotent and safe from a signal handler."""
        for d in self.daemons:
            d.stop()

    def run(self) -> None:
        """Block until every daemon returned; re-raise the first failure (after stopping the rest)."""
        if len(self.daemons) == 1:
            self.daemons[0].run()
            return
        threads = [
            threading.Thread(target=self._serve, args=(d, n), name=f"worker-{n}", daemon=True)
            for d, n in zip(self.daemons, self.names)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)  # short joins: the main thread must stay free for signals
        if self._errors:
            name, exc = self._errors[0]
            log.error("worker %s failed: %s", name, exc)
            raise exc

    def _serve(self, daemon: WorkerDaemon, name: str) -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 - one failing device stops them all, loudly
            log.error("worker %s stopped with %s: %s; stopping the others", name, type(exc).__name__, exc)
            with self._lock:
                self._errors.append((name, exc))
            self.stop()
