"""The ``tunehub`` command line: serve, tuner, worker, submit, status, configs, compile, demo.

(Over 500 lines on purpose: one typer app, a short function per command; the work is in the rooms,
and what a failure tells a person is in ``tunehub.cli_errors``.)

Every room is imported inside the command that needs it, so ``tunehub --help``
and a worker's start stay fast (no TVM, FastAPI or SQLAlchemy at import).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from common.logs import setup_logging
from tunehub.cli_errors import explain
from common.settings import get_settings

app = typer.Typer(help="tunehub: an autotuning service for TVM over your lab's hardware.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
console = Console()
err_console = Console(stderr=True)

ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Service URL (env TUNEHUB_SERVER).")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="API token (env TUNEHUB_TOKEN).")]
TARGET_HELP = 'Target JSON like \'{"kind":"llvm","num-cores":8}\', a .json file holding it, or "local" (this CPU).'
SHAPE_HELP = "Input shape for symbolic dims: name=d0,d1,... or a JSON object; repeat per input."

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT
_debug = False  # set by the global --debug option: errors show their traceback
_reported = False  # an error has been explained already (main() must not explain it twice)


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    global _debug
    _debug = debug


def _client(server: str | None, token: str | None):  # type: ignore[no-untyped-def]
    from common.client import TunehubClient

    settings = get_settings()
    token = token or settings.token
    if token is None:
        path = settings.data_dir / "admin_token"
        if path.exists():  # on the service's own machine the admin token is at hand
            token = path.read_text().strip()
    return TunehubClient(server or settings.server, token)


def _report(exc: BaseException, *, hint: str | None = None) -> int:
    """Print ``exc`` for a person (its traceback too with --debug); returns the exit code it deserves."""
    global _reported
    _reported = True
    if _debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    lines = explain(exc)
    if hint:
        lines = [lines[0], hint]
    for line in lines:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_ERROR


INTERRUPT_GRACE_S = 5.0
"""After Ctrl-C, how long the CLI may take to unwind (close connections, the live table) before it exits anyway."""


def _on_interrupt(_signum: int, _frame: object) -> None:
    """Ctrl-C: raise KeyboardInterrupt as Python does, and make sure the process ends even if unwinding hangs.

    A KeyboardInterrupt can land inside a library's lock (an HTTP connection
    pool's, seen once on a busy machine), and the library's own cleanup then
    waits on that lock forever; a person pressing Ctrl-C must get their shell back.
    """
    def force_exit() -> None:
        if not _reported:
            for line in explain(KeyboardInterrupt()):
                err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        os._exit(EXIT_INTERRUPTED)

    timer = threading.Timer(INTERRUPT_GRACE_S, force_exit)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _fail(exc: BaseException) -> NoReturn:
    raise typer.Exit(_report(exc))


def _follow(client: Any, job_id: int) -> None:
    """Follow a job until it ends; Ctrl-C stops following (the job goes on) and says how to look again."""
    from tunehub.views import follow_job

    try:
        follow_job(console, client, job_id)
    except KeyboardInterrupt as exc:
        raise typer.Exit(_report(exc, hint=f"Job {job_id} keeps running on the service: "
                                           f"`tunehub status {job_id} --watch` follows it again.")) from None


def _on_sigterm(stop: Any) -> None:
    """Route SIGTERM/SIGINT to a daemon's idempotent stop(); main thread only."""

    def handler(_signum: int, _frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _parse_shapes(shapes: list[str] | None) -> dict[str, list[int]] | None:
    """``--shape`` values (``x=1,3,32,32`` or JSON) → ``{"x": [1, 3, 32, 32]}``; BadInput says what is wrong."""
    from common.shapes import parse_shapes

    return parse_shapes(shapes, what="--shape")


def _local_target() -> dict[str, Any]:
    from workers.detect import detect_cpu_target

    return detect_cpu_target()


def _target(target: str) -> dict[str, Any]:
    """``--target``: JSON, a .json file, a kind, or 'local' for this machine's CPU; BadInput says what is wrong."""
    from common.targets import parse_target

    return parse_target(target, local=_local_target, what="--target")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (env TUNEHUB_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (env TUNEHUB_PORT).")] = None,
    tuner: Annotated[bool, typer.Option("--tuner/--no-tuner", help="Also run a tuner process (embedded mode).")] = True,
) -> None:
    """Run the API (and, by default, a tuner process beside it)."""
    import uvicorn

    from service.app import create_app
    from common.processes import spawn, stop

    setup_logging()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api = create_app(settings)
    child = None
    if tuner:
        child = spawn(["tuner"], die_with_parent=True)
    try:
        # log_config=None: uvicorn's lines go through setup_logging's handler (text or JSON) like ours.
        uvicorn.run(api, host=host or settings.host, port=port or settings.port, log_level="info", log_config=None)
    finally:
        if child is not None:
            stop(child)


@app.command("tuner")
def tuner_cmd() -> None:
    """Run search loops: claim queued jobs from the database and drive their searches."""
    import os

    # XGBoost's OpenMP threads busy-wait by default and starve a worker or the
    # API sharing the machine; set before xgboost loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tuner.daemon import TunerDaemon

    setup_logging()
    settings = get_settings()
    if settings.tuner_nice:
        os.nice(settings.tuner_nice)  # before TVM's and XGBoost's threads exist: they inherit it
    daemon = TunerDaemon(settings)
    _on_sigterm(daemon.stop)
    daemon.run()


@app.command()
def worker(
    server: ServerOpt = None,
    token: TokenOpt = None,
    target: Annotated[Optional[str], typer.Option(help="Target JSON to serve instead of the detected one.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Worker name (default: hostname; GPUs add -cudaN).")] = None,
    max_candidates: Annotated[int, typer.Option(help="Candidates per lease.")] = 8,
    device: Annotated[
        Optional[list[str]], typer.Option(help="Device to serve: cpu, cuda:N (repeat for several; default cpu).")
    ] = None,
    all_gpus: Annotated[bool, typer.Option("--all-gpus", help="Serve every NVIDIA GPU, one worker each.")] = False,
    cpus: Annotated[Optional[str], typer.Option(help="CPUs to measure on, e.g. 0-7 (default: all this process may use).")] = None,
    build_workers: Annotated[Optional[int], typer.Option(help="Builder processes per device; 0 builds in the runner.")] = None,
    build_timeout_s: Annotated[Optional[float], typer.Option(help="Kill a candidate's build after this long.")] = None,
    run_timeout_s: Annotated[Optional[float], typer.Option(help="Kill a candidate's check and timing after this long.")] = None,
    number: Annotated[Optional[int], typer.Option(help="time_evaluator number.")] = None,
    repeat: Annotated[Optional[int], typer.Option(help="Repeats per candidate (all reported).")] = None,
    min_repeat_ms: Annotated[Optional[int], typer.Option(help="time_evaluator min_repeat_ms.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed runs before timing.")] = None,
    cache_flush: Annotated[Optional[bool], typer.Option("--cache-flush/--no-cache-flush", help="Flush CPU caches before each repeat.")] = None,
    pin: Annotated[Optional[bool], typer.Option("--pin/--no-pin", help="Pin measuring threads to cores.")] = None,
    calibrate_every_s: Annotated[Optional[float], typer.Option(help="Re-calibrate before a batch this often; 0: off.")] = None,
    cuda_compiler: Annotated[Optional[str], typer.Option(help="auto, nvcc or nvrtc.")] = None,
    emulated: Annotated[
        bool, typer.Option("--emulated", help="Mark timings as emulated (kept out of best) where detection misses it.")
    ] = False,
) -> None:
    """Serve as a measuring worker: lease candidates, build, check, time, report.

    Settings not given here come from TUNEHUB_WORKER_* (see common/settings.py).
    """
    from common.errors import BadInput
    from workers.detect import parse_cpu_list
    from workers.fleet import WorkerFleet, daemons_for, plan_devices
    from workers.options import WorkerOptions

    setup_logging()
    settings = get_settings()
    if not (token or settings.token):
        _fail(RuntimeError("a worker needs a token: --token or TUNEHUB_TOKEN (make one with `tunehub token create`)"))

    try:
        cpu_list = parse_cpu_list(cpus) if cpus else None
        plans = plan_devices(
            device,
            all_gpus=all_gpus,
            target=_target(target) if target else None,
            name=name,
            cpus=cpu_list,
            cuda_compiler=cuda_compiler or settings.worker_cuda_compiler,
        )
        for plan in plans if emulated else []:
            plan.hardware.setdefault("emulated", "--emulated")
        options = WorkerOptions.from_settings(
            settings,
            max_candidates=max_candidates,
            build_workers=build_workers,
            build_timeout_s=build_timeout_s,
            run_timeout_s=run_timeout_s,
            number=number,
            repeat=repeat,
            min_repeat_ms=min_repeat_ms,
            warmup=warmup,
            cache_flush=cache_flush,
            pin=pin,
            calibrate_every_s=calibrate_every_s,
        )
        daemons = daemons_for(plans, server or settings.server, token or settings.token, options)
    except (BadInput, ValueError) as exc:
        _fail(exc)
    fleet = WorkerFleet(daemons)
    _on_sigterm(fleet.stop)
    fleet.run()


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, user or worker.")] = "worker",
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a token (needs an admin token); prints it once."""
    from common.client import ApiError

    try:
        with _client(server, token) as client:
            created = client.create_token(name, role)
    except ApiError as exc:
        _fail(exc)
    console.print(created.token)


@app.command()
def submit(
    model: Annotated[Path, typer.Argument(help="An ONNX file.")],
    target: Annotated[str, typer.Option(help=TARGET_HELP)] = "local",
    trials: Annotated[Optional[int], typer.Option(
        help="Measurement budget across the model's tasks (default 64, or unbounded with --time-budget alone).")] = None,
    time_budget: Annotated[Optional[str], typer.Option(
        "--time-budget", help="Wall-clock budget, e.g. 90s, 30m, 2h (a plain number is seconds); "
        "the job ends at it with the best found so far.")] = None,
    shape: Annotated[Optional[list[str]], typer.Option(help=SHAPE_HELP)] = None,
    wait: Annotated[bool, typer.Option(help="Follow progress until the job ends.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Upload a model and start a tuning job for a target (a trial budget, a time budget, or both)."""
    from common.client import ApiError
    from common.errors import TunehubError

    try:
        budget_s = parse_duration(time_budget) if time_budget is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--time-budget") from None
    try:
        with _client(server, token) as client:
            uploaded = client.upload_model(model, input_shapes=_parse_shapes(shape))
            job = client.create_job(uploaded.id, _target(target), trials, time_budget_s=budget_s)
            console.print(f"model {uploaded.id} ({uploaded.sha256[:12]}), job {job.id}: {len(job.tasks)} tasks")
            if wait:
                _follow(client, job.id)
    except (ApiError, TunehubError, OSError) as exc:
        _fail(exc)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``"90"``/``"90s"`` → 90, ``"30m"`` → 1800, ``"1.5h"`` → 5400 seconds; ValueError otherwise."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _DURATION_UNITS else "s"
    number = raw[:-1] if raw[-1:] in _DURATION_UNITS else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: use a number with s, m or h, e.g. 30m") from None
    if not value > 0:
        raise ValueError(f"{text!r}: a time budget must be positive")
    return value * _DURATION_UNITS[unit]


@app.command()
def status(
    job: int,
    watch: Annotated[bool, typer.Option(help="Follow until the job ends.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show a job's progress: per task its share of model time, trials, best latency and why."""
    from common.client import ApiError
    from tunehub.views import job_table

    try:
        with _client(server, token) as client:
            if watch:
                _follow(client, job)
            else:
                console.print(job_table(client.job(job)))
    except ApiError as exc:
        _fail(exc)


@app.command()
def configs(
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to extract the MetaSchedule database into.")],
    job: Annotated[Optional[int], typer.Option(help="Best configs for this job's tasks.")] = None,
    model: Annotated[Optional[int], typer.Option(help="Best configs for this model ...")] = None,
    target: Annotated[Optional[str], typer.Option(help="... on this target (JSON, a .json file, or 'local').")] = None,
    best_known: Annotated[bool, typer.Option(
        "--best-known", help="The best config of every workload measured on --target, whatever the model.")] = False,
    include_other_tvm: Annotated[bool, typer.Option(
        "--include-other-tvm", help="Also take records measured under another TVM version.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Download the best configs as a MetaSchedule JSON database (loadable by ms.database.JSONDatabase).

    manifest.json beside it says, per record, which workers measured it, their
    calibration and TVM version, the trial counts and dates.
    """
    from common.client import ApiError
    from common.errors import TunehubError
    from tuner.configs import extract_config_zip

    if best_known and not target:
        raise typer.BadParameter("--best-known needs --target", param_hint="--target")
    try:
        with _client(server, token) as client:
            data = client.download_configs(job=job, model=model, target=_target(target) if target else None,
                                           best_known=best_known, include_other_tvm=include_other_tvm)
        path = extract_config_zip(data, out)
    except (ApiError, TunehubError, OSError) as exc:
        _fail(exc)
    console.print(f"configs written to {path}")


@app.command("compile")
def compile_cmd(
    model: Annotated[Path, typer.Argument(dir_okay=False, help="An ONNX file.")],
    target: Annotated[str, typer.Option(help=TARGET_HELP)] = "local",
    configs_dir: Annotated[Optional[Path], typer.Option("--configs", help="Folder from `tunehub configs`.")] = None,
    shape: Annotated[Optional[list[str]], typer.Option(help=SHAPE_HELP)] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write the compiled library (.so).")] = None,
    measure: Annotated[bool, typer.Option(help="Time the compiled model and print its median latency.")] = True,
    repeat: Annotated[int, typer.Option(help="Timing samples.")] = 10,
    min_repeat_ms: Annotated[int, typer.Option(help="Shortest length of one timing sample.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON line (latency, tuned functions, compile time); errors too.")
    ] = False,
) -> None:
    """Compile a model with downloaded configs (or untuned without them) and time it.

    With --json, stdout carries exactly one JSON line (on bad input an error and
    its detail, exit code 2), so a script can time a model in a fresh process.
    """
    from common.errors import TunehubError
    from common.targets import canonical_target
    from tunehub.model_latency import compile_and_time

    try:
        result = compile_and_time(
            model,
            canonical_target(_target(target))[0],
            configs=configs_dir,
            shapes=_parse_shapes(shape),
            out=out,
            measure=measure,
            repeat=repeat,
            min_repeat_ms=min_repeat_ms,
        )
    except TunehubError as exc:
        if not as_json:
            _fail(exc)
        print(json.dumps({"error": exc.code, "detail": exc.detail}), flush=True)
        print(f"error: {exc.detail}", file=sys.stderr)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if out:
        console.print(f"library written to {out}")
    if measure:
        console.print_json(json.dumps({k: result[k] for k in ("median_ms", "mean_ms", "min_ms", "runs_ms", "num_threads")}))


@app.command()
def demo(
    trials: Annotated[int, typer.Option(help="Trial budget per model.")] = 96,
    model: Annotated[Optional[list[str]], typer.Option(help="Example model(s): mlp, convnet (default both).")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its data and configs.")] = Path("tunehub-demo"),
) -> None:
    """Start a service and a worker here, tune the example models, and compare latency."""
    from tunehub.demo import run_demo

    setup_logging("WARNING")
    code = run_demo(console, workdir=workdir, trials=trials, models=model or ["mlp", "convnet"])
    raise typer.Exit(code)


cost_model_app = typer.Typer(help="The XGBoost cost model learned from the database.", no_args_is_help=True)
app.add_typer(cost_model_app, name="cost-model")


@cost_model_app.command("eval")
def cost_model_eval(
    target_key: Annotated[str | None, typer.Option(help="Target key (default: the one with most measurements).")] = None,
    database_url: Annotated[str | None, typer.Option(help="Default: TUNEHUB_DATABASE_URL or the data dir's SQLite.")] = None,
    leave_out: Annotated[str | None, typer.Option(
        "--leave-out", help="Hold out this model (id, name or sha256 prefix): train on every other workload, "
        "score on its candidates.")] = None,
    holdout: Annotated[float, typer.Option(help="Without --leave-out: share of each workload's measurements held out.")] = 0.3,
    k: Annotated[int, typer.Option("-k", help="k of top-k recall.")] = 5,
    objective: Annotated[str | None, typer.Option(
        help="XGBoost objective of tunehub's ensemble (default: rank:pairwise; e.g. rank:ndcg, reg:squarederror).")] = None,
    record: Annotated[bool, typer.Option(
        "--record", help="With --leave-out: store the verdict; the key's newest one decides cost_model=auto.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Pairwise ranking accuracy and top-k recall of tunehub's model beside MetaSchedule's XGBModel."""
    from common.errors import TunehubError
    from cost_model import ensemble, evaluate
    from cost_model import leave_out as lo
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url or get_settings().resolved_database_url(), null_pool=True)
    factory = make_sessionmaker(engine)
    try:
        if leave_out is None:
            scores: Any = evaluate.evaluate(factory, target_key=target_key, holdout=holdout, k=k,
                                            objective=objective or ensemble.OBJECTIVE)
        else:
            scores = lo.evaluate_leave_out(factory, model=leave_out, target_key=target_key, k=k,
                                           objective=objective or ensemble.OBJECTIVE)
            if record:
                lo.record(factory, target_key=scores.target_key, tunehub_wins=scores.tunehub_wins,
                          report=scores.as_dict())
    except TunehubError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(lo._json_safe(scores.as_dict()) if leave_out else scores.as_dict(), indent=2))
    elif leave_out is None:
        typer.echo(f"target key {scores.target_key}\n\n{evaluate.markdown(scores)}")
    else:
        typer.echo(f"target key {scores.target_key}\n\n{lo.markdown(scores)}")


records_app = typer.Typer(help="Your own MetaSchedule records in tunehub (tunehub.metaschedule.Database).",
                           no_args_is_help=True)
app.add_typer(records_app, name="records")
DatabaseOpt = Annotated[Optional[str], typer.Option(
    "--database", help="A tunehub database URL to use directly (default: the service at --server, with --token).")]


def _user_database(target: str, database: str | None, server: str | None, token: str | None) -> Any:
    """A ``tunehub.metaschedule.Database`` on a database URL, or on the service with a token."""
    from tunehub.metaschedule import Database

    settings = get_settings()
    if database:
        return Database(database, target=_target(target))
    # Errors raised inside TVM's database callbacks come back as bare RuntimeErrors:
    # ask the service once here, so an unreachable one is told as such.
    with _client(server, token) as client:
        client.health()
    return Database(server or settings.server, target=_target(target), token=token or settings.token)


@records_app.command("import")
def records_import(
    work_dir: Annotated[Path, typer.Argument(help="A MetaSchedule work dir (database_workload.json, ...).")],
    target: Annotated[str, typer.Option(help="The target the records were measured on. " + TARGET_HELP)],
    database: DatabaseOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Load a MetaSchedule JSON database into tunehub as your records for TARGET."""
    from tvm.target import Target

    from common.errors import TunehubError
    from tunehub.records_io import import_workdir

    try:
        db = _user_database(target, database, server, token)
        moved = import_workdir(work_dir, db, target=Target(_target(target)))
    except (TunehubError, ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"imported {moved.records} records of {moved.workloads} workloads")


@records_app.command("export")
def records_export(
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the MetaSchedule JSON database.")],
    target: Annotated[str, typer.Option(help="Records of this target. " + TARGET_HELP)],
    top: Annotated[Optional[int], typer.Option(help="Only the best N valid records per workload.")] = None,
    database: DatabaseOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Write your records for TARGET (all, or the best --top per workload) as a MetaSchedule JSON database."""
    from common.errors import TunehubError
    from tunehub.records_io import export_workdir

    try:
        moved = export_workdir(_user_database(target, database, server, token), out, top_k=top)
    except (TunehubError, ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"exported {moved.records} records of {moved.workloads} workloads to {out}")


def main(argv: list[str] | None = None) -> int:
    """The console-script entry: every failure becomes one or two lines and a non-zero exit code.

    Commands turn the errors they expect into lines themselves (``_fail``); this
    catches the rest (Ctrl-C anywhere, an unreadable file, a bug) so no person
    sees a traceback unless they asked with ``--debug``.
    """
    command = typer.main.get_command(app)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)  # daemons (serve, worker) install their own stop handler
    try:
        code = int(command.main(args=argv, prog_name="tunehub", standalone_mode=False) or 0)
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _report(KeyboardInterrupt())
    except typer.exceptions.TyperException as exc:  # usage errors: typer's own message and code 2
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:  # noqa: BLE001  (the last line of defence for a person at a terminal)
        return _report(exc)
    if code == EXIT_INTERRUPTED and not _reported:  # typer turns Ctrl-C into a silent exit 130
        return _report(KeyboardInterrupt())
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
