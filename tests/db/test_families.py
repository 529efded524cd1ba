"""Workload families in the database: lazy labels and the members' bests, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from common.protocol import JobStatus
from db.engine import session_scope
from db.families import family_bests, label, member_measurements, unlabelled
from factories import add_job, add_measurement, add_task, add_worker, add_workload

KEY = '{"kind":"llvm","test":"families"}'


def _measured(factory: sessionmaker[Session], results: dict[str, list[tuple[float | None, bool]]],
              flops: dict[str, float | None]) -> dict[str, int]:
    """One workload per name with measurements (mean seconds or None for an error, flagged) on KEY."""
    ids = {}
    with session_scope(factory) as s:
        job = add_job(s, key=KEY, status=JobStatus.done)
        worker = add_worker(s, target_key=KEY)
        for name, rows in results.items():
            wl = add_workload(s, shash=name, flops=flops.get(name))  # its mod_json is '"<name>"'
            task = add_task(s, job=job, workload=wl, name=name)
            for i, (secs, flagged) in enumerate(rows):
                add_measurement(s, task=task, worker=worker, trace_json=f'"{name}-{i}"',
                                run_secs=None if secs is None else [secs], error=None if secs is not None else "crash",
                                flagged=flagged)
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
