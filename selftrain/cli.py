"""`selftrain` command line: run, status, rerun, show, grade (and `model`: selftrain.model_cli). User-facing
output goes to stdout here; library code only logs. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from selftrain.config_docs import add_config_commands
from selftrain.logs import setup_logging
from selftrain.model_cli import add_model_commands
from selftrain.procs import sigterm_as_interrupt
from selftrain.spec import STAGES, kind

DEFAULT_RECIPE = "configs/tiny-digits.yaml"


# Where command results go: the real stdout, kept aside while library code runs with sys.stdout pointed at
# stderr (TRL's loss dicts, tqdm.write, DeepSpeed's console handler would otherwise land in the results).
_results = sys.stdout


def _out(text: str = "") -> None:
    _results.write(text + "\n")
    _results.flush()


def _user_errors() -> tuple[type[BaseException], ...]:
    from selftrain.recipes import USER_ERRORS  # imported late: `selftrain --help` stays fast

    return USER_ERRORS


def _orchestrate(args: argparse.Namespace, store_root: str):
    """The iteration runner: the Prefect flow, or the plain loop with --no-prefect."""
    if args.no_prefect:
        from selftrain.runner import run_iteration

        return run_iteration
    from flows import configure_prefect

    configure_prefect(store_root)
    from flows.iteration import iteration

    return lambda run, it, rebuild: iteration(run, it, rebuild)


def _run_folder(path: str):
    """The RunStore of an existing run folder (one with a config.yaml)."""
    from selftrain.store import RunStore, StoreError

    store = RunStore(path)
    if not store.config_path.exists():
        raise StoreError(f"{path} is not a run folder (no config.yaml)")
    return store


def _open_run(path: str):
    """An existing run folder's store and its config."""
    from selftrain.recipes import load_config

    store = _run_folder(path)
    return store, load_config(store.config_path)


def _recipe(args: argparse.Namespace):
    """The recipe `args.config` with the --set and --iterations overrides."""
    from selftrain.recipes import load_config

    overrides = list(args.set or [])
    if args.iterations is not None:
        overrides.append(f"run.iterations={args.iterations}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from selftrain.console import accuracy_lines, by_iteration_lines, judge_lines, method_report_lines
    from selftrain.runner import accuracy_table, judge_table, run

    cfg = _recipe(args)
    store = run(cfg, rebuild_stale=args.rebuild_stale, iteration_fn=_orchestrate(args, cfg.store.root))
    _out(f"run folder: {store.run_dir}")
    table = accuracy_table(store)
    lines = [*accuracy_lines(table), *by_iteration_lines(table), *judge_lines(judge_table(store))]
    for line in [*lines, *method_report_lines(store)]:
        _out(line)
    _out(f"report: {_write_report(store.run_dir)}")
    return 0


def _write_report(run_dir: Path) -> Path:
    from selftrain.report import build_report

    return build_report(run_dir).html.resolve()


def cmd_init(args: argparse.Namespace) -> int:
    from selftrain.runner import init_run

    cfg = _recipe(args)
    store = init_run(cfg)
    _out(f"run folder ready: {store.run_dir} (config {store.config_path})")
    _out("start it from a deployment with:")
    _out(
        f"  prefect deployment run 'self-training/selftrain' --param run={store.run_dir} "
        f"--param iterations={cfg.run.iterations}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from selftrain.console import (
        accuracy_lines,
        method_report_lines,
        shard_lines,
        shard_progress,
        status_json,
    )
    from selftrain.plan import method_stages, stage_state

    store, cfg = _open_run(args.run)
    iterations = sorted(set(range(cfg.run.iterations)) | set(store.iterations_on_disk()))
    if getattr(args, "json", False):
        _out(json.dumps(status_json(cfg, store, iterations), indent=2))
        return 0
    _out(f"run {store.run_dir}  ({cfg.run.iterations} iterations configured)")
    stages = method_stages(cfg)
    _out("iteration  " + "  ".join(f"{s:<9}" for s in stages))
    notes = []
    for it in iterations:
        cells = []
        for stage in stages:
            st = stage_state(cfg, store, it, stage)
            cells.append(f"{st.status:<9}")
            if st.status in ("stale", "failed", "damaged"):
                notes.append(f"  iter-{it:03d}/{stage} {st.status}: {'; '.join(st.reasons)}")
            working = st.status in ("partial", "failed")  # a data-parallel stage may be mid-way
            progress = shard_progress(store, it, stage, cfg.store.lease_seconds) if working else None
            if progress:
                lines = shard_lines(progress)
                notes.append(f"  iter-{it:03d}/{stage} {lines[0]}")
                notes += lines[1:]
        _out(f"{it:>9}  " + "  ".join(cells))
    for n in notes:
        _out(n)
    if any(" damaged: " in n for n in notes):
        _out(
            f"  (sizes checked; `selftrain verify {store.run_dir}` checks every sha256 and says what to rerun)"
        )
    from selftrain.console import judge_lines
    from selftrain.runner import accuracy_table, judge_table

    lines = [*accuracy_lines(accuracy_table(store)), *judge_lines(judge_table(store))]
    for line in [*lines, *method_report_lines(store)]:
        _out(line)
    return 0


def cmd_work(args: argparse.Namespace) -> int:
    from selftrain.plan import stage_state
    from selftrain.stages.worker import work
    from selftrain.store import StoreError

    store, cfg = _open_run(args.run)
    iteration = args.iteration
    if iteration is None:  # the first iteration whose stage is not done
        iteration = next(
            (i for i in range(cfg.run.iterations) if stage_state(cfg, store, i, args.stage).status != "done"),
            None,
        )
        if iteration is None:
            raise StoreError(f"{args.run}: {args.stage} is done in every iteration")
    state = stage_state(cfg, store, iteration, args.stage)
    if state.status == "done":
        _out(f"iter-{iteration:03d}/{args.stage} is complete: nothing to do")
        return 0
    if state.status in ("blocked", "stale", "damaged"):
        raise StoreError(f"iter-{iteration:03d}/{args.stage} is {state.status}: the run must handle it first")
    manifest = work(store, iteration, args.stage)
    who = "this worker wrote the manifest" if manifest else "another worker writes the manifest"
    _out(f"iter-{iteration:03d}/{args.stage}: no shard left to claim; {who}")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from selftrain.runner import rerun
    from selftrain.store import StoreError

    store, cfg = _open_run(args.run)
    if args.iteration not in store.iterations_on_disk():
        raise StoreError(f"{args.run} has no iteration {args.iteration} (have {store.iterations_on_disk()})")
    stale = rerun(store, args.iteration, args.stage, iteration_fn=_orchestrate(args, cfg.store.root))
    _out(f"redid iter-{args.iteration:03d} from {args.stage} on")
    if stale:
        _out("now stale (later iterations used the old output): " + ", ".join(stale))
        _out(f"  redo them with: selftrain run {store.config_path} --rebuild-stale")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from selftrain.verify import repairs, verify_run

    store = _run_folder(args.run)
    checked, damaged = verify_run(store)
    for it, stage, problems in damaged:
        _out(f"iter-{it:03d}/{stage} damaged: {'; '.join(problems)}")
    _out(
        f"checked {checked.stages} complete stage(s), {checked.files} file(s), {checked.bytes / 2**20:.1f} MiB: "
        f"{len(damaged)} damaged"
    )
    fixes = repairs(store, damaged)
    if fixes:
        _out("to repair, run in this order:")
        for command in fixes:
            _out(f"  {command}")
    return 1 if damaged else 0


def cmd_export(args: argparse.Namespace) -> int:
    from selftrain.plan import policy_stage
    from selftrain.store import StoreError
    from selftrain.training.export import export_adapter, export_merged

    store, cfg = _open_run(args.run)
    policy = policy_stage(cfg)
    if store.manifest(args.iteration, policy) is None:
        raise StoreError(f"{args.run}: iteration {args.iteration} has no complete policy to export")
    adapter = store.stage_dir(args.iteration, policy)
    out = Path(args.output)
    if out.exists():
        raise StoreError(f"--output {out} already exists")
    if args.merge:
        export_merged(cfg.model.path, adapter, out)
    else:
        export_adapter(adapter, out)
    _out(f"exported {'merged model' if args.merge else 'adapter'} of iteration {args.iteration} to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from selftrain.report import build_report

    report = build_report(args.run, args.output)
    if report.missing:
        _out(f"not in the store (yet): {len(report.missing)}; listed at the top of the report")
    _out(f"report: {report.html.resolve()}  (open it in a browser: file://{report.html.resolve()})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from selftrain.show import describe

    _out(describe(Path(args.path), head=args.head))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from selftrain.grading.grade import grade_rows, read_rows, write_rows

    rows = read_rows(Path(args.file))
    summary, graded = grade_rows(
        args.task, rows, args.completion_field, args.reference_field, args.choices_field
    )
    if args.output:
        write_rows(Path(args.output), graded)
        summary["output"] = args.output
    _out(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selftrain", description="Offline self-training for LLM reasoning.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="start or resume a run")
    r.add_argument(
        "config", nargs="?", default=DEFAULT_RECIPE, help=f"YAML recipe (default {DEFAULT_RECIPE})"
    )
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    r.add_argument("--iterations", type=int, help="shorthand for --set run.iterations=N")
    r.add_argument("--rebuild-stale", action="store_true", help="move stale outputs aside and redo them")
    r.add_argument("--no-prefect", action="store_true", help="run the stages without Prefect")
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("init", help="create the run folder (config.yaml, model) for a Prefect deployment")
    i.add_argument(
        "config", nargs="?", default=DEFAULT_RECIPE, help=f"YAML recipe (default {DEFAULT_RECIPE})"
    )
    i.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    i.add_argument("--iterations", type=int, help="shorthand for --set run.iterations=N")
    i.set_defaults(fn=cmd_init)

    s = sub.add_parser(
        "status", help="iterations x stages: done / damaged / stale / partial / failed / missing"
    )
    s.add_argument("run", help="run folder, e.g. artifacts/runs/tiny-cpu")
    s.add_argument("--json", action="store_true", help="run state and evaluation rows as JSON")
    s.set_defaults(fn=cmd_status)

    v = sub.add_parser("verify", help="check every file of every complete stage against its sha256")
    v.add_argument("run", help="run folder")
    v.set_defaults(fn=cmd_verify)

    w = sub.add_parser(
        "work",
        help="one more worker on a data-parallel stage of a running run (any machine sharing the store)",
    )
    w.add_argument("run", help="run folder on the shared filesystem")
    w.add_argument("--stage", required=True, choices=[n for n in STAGES if kind(n).parallel])
    w.add_argument("--iteration", type=int, help="default: the first iteration whose stage is not done")
    w.set_defaults(fn=cmd_work)

    rr = sub.add_parser("rerun", help="redo one stage of one iteration and what depends on it")
    rr.add_argument("run")
    rr.add_argument("--iteration", type=int, required=True)
    rr.add_argument("--stage", required=True, choices=list(STAGES))
    rr.add_argument("--no-prefect", action="store_true", help="run the stages without Prefect")
    rr.set_defaults(fn=cmd_rerun)

    sh = sub.add_parser("show", help="schema, rows, head and stats of a stage folder or shard")
    sh.add_argument("path")
    sh.add_argument("--head", type=int, default=3, help="rows to print")
    sh.set_defaults(fn=cmd_show)

    ex = sub.add_parser("export", help="copy a trained adapter out, or merge it into the base weights")
    ex.add_argument("run")
    ex.add_argument("--iteration", type=int, required=True)
    ex.add_argument("--output", required=True, help="new folder to write")
    ex.add_argument("--merge", action="store_true", help="merge into the base model (in a separate process)")
    ex.set_defaults(fn=cmd_export)

    rp = sub.add_parser("report", help="HTML report with plots of a run (finished or not)")
    rp.add_argument("run", help="run folder, e.g. artifacts/runs/tiny-cpu")
    rp.add_argument("--output", help="folder for report.html and the PNGs (default RUN/report)")
    rp.set_defaults(fn=cmd_report)

    g = sub.add_parser("grade", help="grade a jsonl/parquet file of generations")
    g.add_argument("task", help="gsm8k, math, arithmetic, numeric, choice, arc_challenge, gpqa")
    g.add_argument("file")
    g.add_argument("--completion-field", required=True, help="field with the generation (a.b for nested)")
    g.add_argument("--reference-field", required=True, help="field with the reference answer or solution")
    g.add_argument("--choices-field", help="field with the options list (multiple choice)")
    g.add_argument("--output", help="write each row with answer/correct added (.jsonl or .parquet)")
    g.set_defaults(fn=cmd_grade)
    add_model_commands(sub, _out)
    add_config_commands(sub, _out)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    global _results
    _results = sys.stdout
    try:
        with sigterm_as_interrupt(), contextlib.redirect_stdout(sys.stderr):
            return args.fn(args)
    except KeyboardInterrupt:
        _err("interrupted; rerun the same command to resume")
        return 130
    except BrokenPipeError:
        # `selftrain status RUN | head`: the reader left, as with any Unix filter; no traceback, no message
        # (stdout points at /dev/null so that the interpreter's final flush does not fail again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as e:  # noqa: BLE001 - the CLI boundary
        from selftrain.faults import environment_error_line

        if isinstance(e, _user_errors()) or _is_user_error(e):
            _err(str(e).splitlines()[0] if str(e) else type(e).__name__)
            return 2
        line = environment_error_line(e)  # disk full, read-only folder: the machine, not a bug
        if line is not None:
            _err(line)
            return 2
        raise


def _is_user_error(e: BaseException) -> bool:
    # Prefect re-raises task exceptions unchanged, but keep a guard for wrapped ones
    cause = e.__cause__ or e.__context__
    return cause is not None and isinstance(cause, _user_errors())


def _err(msg: str) -> None:
    sys.stderr.write(f"selftrain: error: {msg}\n")


if __name__ == "__main__":
    sys.exit(main())
