"""Emulated workers: detected from what the process sees, stored on the worker's row, never "best".

Fast: pure detection on recorded /proc text, and the ranking on real database rows
(both backends, through ``session_factory``). The emulated worker itself runs in
``test_emulated_worker.py`` (slow).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus, WorkerRegister
from db import ranking, workers
from db.engine import session_scope
from factories import add_job, add_measurement, add_task, add_worker, add_workload
from workers.detect import cpu_target_from, emulation_from

X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx2\n"
ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"


def test_qemu_user_is_detected_from_proc() -> None:
    # qemu-user without binfmt_misc: the kernel names the process after the emulator.
    assert "qemu-aarch64-st" in emulation_from(machine="aarch64", cpuinfo=X86_CPUINFO, comm="qemu-aarch64-st\n")
    # With binfmt_misc the name is the guest's, but the host's x86 /proc/cpuinfo shows through.
    assert "x86" in emulation_from(machine="aarch64", cpuinfo=X86_CPUINFO, comm="python3.11")
    # Real hardware: an ARM board, an x86 machine.
    assert emulation_from(machine="aarch64", cpuinfo=ARM_CPUINFO, comm="python3.11") is None
    assert emulation_from(machine="x86_64", cpuinfo=X86_CPUINFO, comm="python3.11") is None
    # The emulated aarch64 target is still an aarch64 target (NEON, the real triple).
    target = cpu_target_from(machine="aarch64", cpuinfo=X86_CPUINFO, num_cores=2, mcpu="generic")
    assert target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 2}


def test_registration_carries_the_flag() -> None:
    body = WorkerRegister.model_validate({"name": "w", "target": {"kind": "llvm"}})
    assert body.emulated is False, "old workers that do not send it are real hardware"


def test_emulated_measurements_are_stored_but_never_best(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        wl, only_emulated = add_workload(s), add_workload(s)
        job = add_job(s, status=JobStatus.done)
        key = job.target_key
        board = add_worker(s, target_key=key, name="board")
        qemu = workers.register_worker(s, name="qemu", token_id=None, hardware={"emulated": "qemu"},
                                       target_json="{}", target_key=key, emulated=True)
        task, other = add_task(s, job=job, workload=wl), add_task(s, job=job, workload=only_emulated)
        real = add_measurement(s, task=task, worker=board, trace_json='["real"]', run_secs=[3e-4])
        fast = add_measurement(s, task=task, worker=s.get(type(board), qemu.id), trace_json='["emu"]', run_secs=[1e-6])
        add_measurement(s, task=other, worker=s.get(type(board), qemu.id), trace_json='["emu2"]', run_secs=[1e-6])
        ids = (wl.id, only_emulated.id, real.candidate_id, fast.id)

    wl_id, only_id, real_candidate, fast_id = ids
    with session_scope(session_factory) as s:
        assert workers.get_worker(s, worker_id=qemu.id).emulated
        assert [w.emulated for w in workers.list_workers(s)] == [False, True]
        ranked = ranking.ranked_measurements(s, target_key=key, workload_ids=[wl_id, only_id], per_workload=10)
        assert [r.candidate_id for r in ranked[wl_id]] == [real_candidate], "the emulated 1 µs never ranks"
        assert only_id not in ranked, "a workload measured only under emulation has no best"
        assert [r.workload_id for r in ranking.best_records(s, target_key=key, workload_ids=[wl_id, only_id])] == [wl_id]
        assert s.get(type(real), fast_id) is not None, "stored all the same"
