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
from factories import SCHEDULE_TRACE, add_job, add_measurement, add_task, add_worker, add_workload
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
        from db.training_data import training_rows

        assert [r.measurement_id for r in training_rows(s, target_key=key)] == [real.id], "no cost-model label from emulation"


def test_emulated_workers_neither_trigger_nor_take_confirmations(session_factory: sessionmaker[Session]) -> None:
    """An emulated peer is no second opinion: with only it beside the winner's worker nothing is
    asked, and when a real peer exists the emulated worker is never leased the re-measurement."""
    from common.protocol import CandidateResult
    from db import jobs, leases, queue, uploads
    from db.confirmation import ConfirmPolicy
    from db.models import Candidate
    from db.workloads import upsert_workloads
    from sqlalchemy import select

    from types import SimpleNamespace

    key = '{"keys":["cpu"],"kind":"llvm","num-cores":2}'
    wl = SimpleNamespace(shash="6161", mod_json="{}", args_info_json="[]", flops=None)
    policy = ConfirmPolicy(enabled=True, tolerance=1.5, peer_seen_s=600.0)
    with session_scope(session_factory) as s:
        model, _ = uploads.store_model(s, name="m", content=b"onnx-emulated", input_shapes={})
        wid = upsert_workloads(s, extracted=[wl])["6161"]
        job = jobs.create_job(s, model_id=model.id, target_json={"kind": "llvm"}, target_key=key, trials=8,
                              trials_per_round=8, tasks=[("t", 1, wid)])
        task = jobs.job_public(s, job_id=job).tasks[0].id
        board, qemu = (workers.register_worker(s, name=n, token_id=None, hardware={}, target_json={"kind": "llvm"},
                                               target_key=key, emulated=n == "qemu").id for n in ("board", "qemu"))
        queue.enqueue_candidates(s, task_id=task, workload_id=wid, target_key=key,
                                 traces=[SCHEDULE_TRACE.replace("b0", "b10")], round=0)

    def measure(worker: int, secs: float = 1e-3) -> None:
        with session_scope(session_factory) as s:
            lease, cands = queue.lease_candidates(s, worker_id=worker, target_key=key, max_count=8, ttl_s=60)
            assert lease is not None
            queue.complete(s, lease_id=lease.id, worker_id=worker, confirm=policy,
                           results=[CandidateResult(candidate_id=c.id, run_secs=[secs]) for c in cands])

    def confirmations() -> list[int]:
        with session_scope(session_factory) as s:
            return list(s.scalars(select(Candidate.id).where(Candidate.confirms_measurement_id.is_not(None))))

    measure(board)
    assert confirmations() == [], "the only peer is emulated: no confirmation is asked"

    with session_scope(session_factory) as s:
        peer = workers.register_worker(s, name="board-2", token_id=None, hardware={}, target_json={"kind": "llvm"},
                                       target_key=key).id
        queue.enqueue_candidates(s, task_id=task, workload_id=wid, target_key=key,
                                 traces=[SCHEDULE_TRACE.replace("b0", "b11")], round=0)
    measure(board, 1e-4)  # a new winner, with a real peer to re-measure it
    queued = confirmations()
    assert queued, "a real peer exists: the winner is re-measured"
    with session_scope(session_factory) as s:
        offered = leases.lease_batch(s, worker=workers.get_worker(s, worker_id=qemu), max_count=8, ttl_s=60)
        assert not offered.candidates, "the emulated worker is not leased the re-measurement"
        offered = leases.lease_batch(s, worker=workers.get_worker(s, worker_id=peer), max_count=8, ttl_s=60)
        assert [c.id for c in offered.candidates] == queued
