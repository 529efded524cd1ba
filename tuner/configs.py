"""Best configs out as a MetaSchedule ``JSONDatabase`` in a zip, and safely back in.

The two database files are written by TVM itself (``ms.database.JSONDatabase``),
so ``JSONDatabase(work_dir=...)`` loads them unchanged (TVM_NOTES §3). Each
record's trace is replayed on a fresh schedule of its workload before it is
committed: a trace that does not apply is left out and named in the manifest
rather than shipped broken.

Zip layout::

    database_workload.json
    database_tuning_record.json
    manifest.json     # target, TVM version, counts, skipped records, and per record its provenance
    README.txt        # how to use the files

The manifest's ``provenance`` maps each shipped workload hash to where its
record comes from (``db.provenance``): the worker that measured it and any that
re-measured it (hardware, TVM version, calibration as last reported), the job
and round, whether the schedule was transferred from another workload of its
family, the workload's trial counts and dates. ``other_tvm_excluded`` counts
the valid measurements left out because workers of another TVM version made
them (``include_other_tvm`` says whether they were allowed in).
"""

from __future__ import annotations

import io
import json
import logging
import stat
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from db.provenance import RecordProvenance
from db.records import BestRecord
from common.errors import BadInput

log = logging.getLogger(__name__)

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
MANIFEST_FILE = "manifest.json"
README_FILE = "README.txt"
_ALLOWED = {WORKLOAD_FILE, RECORD_FILE, MANIFEST_FILE, README_FILE}
# A fixed timestamp keeps the zip's bytes a function of its content.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
MAX_EXTRACT_BYTES = 1 << 30

_README = """\
MetaSchedule tuning database from tunehub
=========================================

Target: {target}
Workloads: {workloads}, tuning records: {records}

These are the best schedules measured for this target, in TVM MetaSchedule's
JSONDatabase format. Use them with TVM directly:

    from tvm.s_tir import meta_schedule as ms
    db = ms.database.JSONDatabase(work_dir="<this folder>", allow_missing=False)
    exe = ms.relax_integration.compile_relax(db, relax_mod, target, params=None)

or with tunehub:

    tunehub compile model.onnx --target '<target JSON>' --configs <this folder>

Functions of the model without a record here are compiled unscheduled.
"""


def _record_entry(record: BestRecord, reason: str) -> dict[str, Any]:
    return {"workload_id": record.workload_id, "shash": record.shash, "candidate_id": record.candidate_id, "reason": reason}


def _write_database(records: Sequence[BestRecord], target: Any, work_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """Commit ``records`` into a JSONDatabase under ``work_dir``; returns (workloads committed, skipped)."""
    from tvm.s_tir import meta_schedule as ms

    from common.tvm_json import apply_trace, workload_from_json

    database = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=True)
    committed: set[str] = set()
    skipped: list[dict[str, Any]] = []
    for record in records:
        try:
            mod = workload_from_json(record.mod_json)
            sch = apply_trace(mod, record.trace_json)
            args_info = [ms.arg_info.ArgInfo.from_json(item) for item in json.loads(record.args_info_json)]
            run_secs = [float(s) for s in record.run_secs] or [float(record.mean_secs)]
            if not all(s > 0 for s in run_secs):
                raise ValueError(f"run_secs must be positive, got {run_secs}")
        except Exception as exc:  # noqa: BLE001  (one bad record must not spoil the download)
            reason = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            log.warning("config zip: skipping workload %s (candidate %s): %s", record.shash, record.candidate_id, reason)
            skipped.append(_record_entry(record, reason))
            continue
        workload = database.commit_workload(mod)
        database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, workload, run_secs=run_secs, target=target, args_info=args_info)
        )
        committed.add(record.shash)
    return len(committed), skipped


def current_tvm_version() -> str:
    """The TVM version of this process: the one bundles are made for and stamped with."""
    import tvm

    return str(tvm.__version__)


def build_config_zip(
    records: Sequence[BestRecord],
    target: Mapping[str, Any],
    *,
    provenance: Mapping[int, RecordProvenance] | None = None,
    scope: Mapping[str, Any] | None = None,
) -> bytes:
    """A zip of MetaSchedule JSONDatabase files holding ``records`` for ``target``.

    Records whose workload or trace cannot be loaded are left out and listed
    under ``skipped`` in ``manifest.json``. ``provenance`` (by measurement id)
    is stamped per shipped record; ``scope`` (what the bundle covers, which TVM
    versions it admits) goes into the manifest as given. Raises BadInput for an
    invalid target.
    """
    from common.targets import canonical_target
    from common.tvm_env import prepare_tvm

    canonical, key = canonical_target(dict(target))
    prepare_tvm((str(canonical.get("kind", "llvm")),))  # tensorize traces need the target's intrinsics
    import tvm
    from tvm.target import Target

    with tempfile.TemporaryDirectory(prefix="tunehub-configs-") as tmp:
        work_dir = Path(tmp)
        workloads, skipped = _write_database(records, Target(dict(target)), work_dir)
        committed = len(records) - len(skipped)
        shipped = [r for r in records if r.shash not in {s["shash"] for s in skipped}]
        provenance = provenance or {}
        manifest: dict[str, Any] = {
            **(scope or {}),
            "format": "tvm.s_tir.meta_schedule.JSONDatabase",
            "target": canonical,
            "target_key": key,
            "workloads": workloads,
            "records": committed,
            "skipped": skipped,
            # workload hash -> re-measured on a second worker and agreed (db.confirmation); false: unconfirmed
            "confirmed": {r.shash: r.confirmed for r in shipped},
            "tvm_version": str(tvm.__version__),
            "files": [WORKLOAD_FILE, RECORD_FILE],
            "provenance": {
                r.shash: provenance[r.measurement_id].as_dict()
                for r in shipped
                if r.measurement_id is not None and r.measurement_id in provenance
            },
        }
        readme = _README.format(target=json.dumps(canonical, sort_keys=True), workloads=workloads, records=committed)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in (WORKLOAD_FILE, RECORD_FILE):
                path = work_dir / name
                _write_member(zf, name, path.read_bytes() if path.exists() else b"")
            _write_member(zf, MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            _write_member(zf, README_FILE, readme.encode())
    return buffer.getvalue()


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _safe_name(name: str) -> str:
    """The member's path if it is a plain relative file path, else BadInput."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or ":" in name or name.startswith("/"):
        raise BadInput(f"config zip member {name!r} has an unsafe path (absolute or '..'); refusing to extract")
    return str(path)


def extract_config_zip(data: bytes, dest: Path, *, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract a config zip into ``dest`` (created) and return the database folder.

    Refuses path traversal, absolute paths, links, members other than the four
    files above, and archives that would unpack past ``max_bytes``. Raises
    BadInput for a broken zip or one without both database files.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BadInput(f"not a valid config zip: {exc}") from None
    with zf:
        infos = zf.infolist()
        names = []
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            name = _safe_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BadInput(f"config zip member {name!r} is a symbolic link; refusing to extract")
            if name not in _ALLOWED:
                raise BadInput(f"config zip member {name!r} is not one of {sorted(_ALLOWED)}")
            total += info.file_size
            if total > max_bytes:
                raise BadInput(f"config zip unpacks to more than {max_bytes} bytes; refusing to extract")
            names.append((info, name))
        missing = {WORKLOAD_FILE, RECORD_FILE} - {name for _, name in names}
        if missing:
            raise BadInput(f"config zip lacks {sorted(missing)}; it is not a MetaSchedule JSONDatabase")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info, name in names:
            target = (root / name).resolve()
            if root not in target.parents:
                raise BadInput(f"config zip member {name!r} would land outside {root}; refusing to extract")
            try:
                payload = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC error, truncated member
                raise BadInput(f"config zip member {name!r} is damaged: {exc}") from None
            target.write_bytes(payload)
    return dest
