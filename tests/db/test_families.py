"""Workload families in the database: lazy labels and the members' bests, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from db.engine import db_now, session_scope
from db.families import family_bests, label, member_measurements, unlabelled
from db.models import Candidate, Job, Measurement, Model, Task, Worker, Workload

KEY = '{"kind":"llvm","test":"families"}'


def _measured(factory: sessionmaker[Session], results: dict[str, list[tuple[float | None, bool]]],
              flops: dict[str, float | None]) -> dict[str, int]:
    """One workload per name with measurements (mean seconds or None for an error, flagged) on KEY."""
    ids = {}
    with session_scope(factory) as s:
        now = db_now(s)
        model = Model(name="m", sha256=f"{time.monotonic_ns():064x}"[-64:], format="onnx", content=b"",
                      size_bytes=0, input_shapes_json="{}", created_at=now)
        worker = Worker(name="w", target_json="{}", target_key=KEY, registered_at=now, last_seen_at=now)
        s.add_all([model, worker])
        s.flush()
        job = Job(model_id=model.id, target_json="{}", target_key=KEY, trials=8, trials_per_round=4,
                  status="done", created_at=now)
        s.add(job)
        s.flush()
        for name, rows in results.items():
            wl = Workload(shash=f"{name}-{time.monotonic_ns()}"[-24:], mod_json=f'"{name}"', args_info_json="[]",
                          flops=flops.get(name), created_at=now)
            s.add(wl)
            s.flush()
            task = Task(job_id=job.id, workload_id=wl.id, name=name, weight=1)
            s.add(task)
            s.flush()
            for i, (secs, flagged) in enumerate(rows):
                c = Candidate(task_id=task.id, workload_id=wl.id, target_key=KEY, trace_json=f'"{name}-{i}"',
                              round=1, state="done", attempts=1, created_at=now)
                s.add(c)
                s.flush()
                s.add(Measurement(candidate_id=c.id, worker_id=worker.id, workload_id=wl.id, target_key=KEY,
                                  run_secs_json=None if secs is None else f"[{secs}]", mean_secs=secs,
                                  error=None if secs is not None else "crash", flagged=flagged, created_at=now))
            ids[name] = wl.id
    return ids


def test_labels_and_bests(session_factory: sessionmaker[Session]) -> None:
    """Unlabelled measured workloads are listed once; bests come nearest-FLOPs first, unflagged first,
    errors and other families left out."""
    ids = _measured(
        session_factory,
        {"mm384": [(3e-3, False), (2e-3, False), (None, False)],
         "mm640": [(9e-3, False), (1e-3, True), (8e-3, False)],
         "mm2048": [(0.5, False)],
         "mm_err": [(None, False)],
         "dense": [(1e-4, False)],
         "target": []},
        flops={"mm384": 2 * 384**3, "mm640": 2 * 640**3, "mm2048": 2 * 2048**3, "dense": 1e6, "target": 2 * 512**3},
    )
    with session_scope(session_factory) as s:
        todo = dict(unlabelled(s, target_key=KEY))
        # Only workloads measured on the key need a label ("target" has no measurement yet).
        assert set(todo) == {ids[n] for n in ("mm384", "mm640", "mm2048", "mm_err", "dense")}
        assert todo[ids["mm384"]] == '"mm384"'
        label(s, {ids[n]: "matmul" for n in ("mm384", "mm640", "mm2048", "mm_err", "target")} | {ids["dense"]: "dense"})
    with session_scope(session_factory) as s:
        assert unlabelled(s, target_key=KEY) == []
        bests = family_bests(s, family="matmul", target_key=KEY, exclude_workload_id=ids["target"],
                             flops=2 * 512**3, max_workloads=2, per_workload=2)
    # 640 (1.95× the FLOPs) is nearer 512 than 384 (0.42×), both nearer than 2048; mm_err has no valid
    # measurement; dense is another family.
    assert [b.workload_id for b in bests] == [ids["mm640"], ids["mm384"]]
    assert bests[0].traces == ['"mm640-2"', '"mm640-0"']  # the flagged 1 ms ranks after unflagged ones
    assert bests[1].traces == ['"mm384-1"', '"mm384-0"']
    assert bests[1].mod_json == '"mm384"' and bests[1].flops == 2 * 384**3
    with session_scope(session_factory) as s:
        unknown_flops = family_bests(s, family="matmul", target_key=KEY, exclude_workload_id=ids["mm384"],
                                     flops=None, max_workloads=5)
        other_key = family_bests(s, family="matmul", target_key='{"kind":"cuda"}', exclude_workload_id=0, flops=None)
    assert {b.workload_id for b in unknown_flops} == {ids["mm640"], ids["mm2048"]}
    assert other_key == []


def test_member_measurements_are_the_newest_valid_unflagged(session_factory: sessionmaker[Session]) -> None:
    ids = _measured(session_factory, {"mm": [(3e-3, False), (None, False), (1e-3, True), (2e-3, False), (4e-3, False)]},
                    flops={})
    with session_scope(session_factory) as s:
        rows = member_measurements(s, workload_id=ids["mm"], target_key=KEY, limit=2)
        everything = member_measurements(s, workload_id=ids["mm"], target_key=KEY)
    assert rows == [('"mm-4"', (4e-3,)), ('"mm-3"', (2e-3,))]
    assert [t for t, _ in everything] == ['"mm-4"', '"mm-3"', '"mm-0"']  # no error, nothing flagged
