"""The `charter` command line. Thin: parses arguments, calls dsl/ and interpreter/, formats output.

Imports of the front and back end happen inside the commands so that `charter --version` starts fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from dsl import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        """Ctrl-C or SIGTERM: exit 128 + the signal's number (not click's "Aborted!" and exit 1, which a
        script cannot tell from a failed run), naming the run it stopped and how to continue it. A
        closed output pipe: exit 141 quietly."""
        import signal

        _runs_seen.clear()
        _db_given.clear()
        _json_refusal.clear()
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `charter ... | head`: the reader left; the run itself is unaffected
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(141)  # 128 + SIGPIPE, as a shell tool would
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)  # interpreter.loop.Interrupted says which
            name = signal.Signals(signum).name
            click.echo(f"\ninterrupted ({name}){_how_to_continue()}", err=True)
            if _json_refusal and _runs_seen:  # --json: stdout still says which run to continue
                _interrupted_json(_runs_seen[0], f"the run was interrupted ({name}){_how_to_continue()}")
            sys.exit(128 + signum)


# The first run this command started or continued, and the --db it was given: named with how to
# continue the run when it is interrupted.
_runs_seen: list[str] = []
_db_given: list[str] = []
# Set by `run`, `resume` and `approve` given --json: a refusal (exit 2 or 4) is then a JSON document on
# stdout too, as every outcome of theirs is, so that a script reading stdout never finds it empty.
_json_refusal: dict[str, Any] = {}


def _interrupted_json(run_id: str, message: str) -> None:
    import json

    error = {"code": "interrupted", "message": message}
    out = {"run_id": run_id, "status": "interrupted", "output": None, "error": error}
    with contextlib.suppress(OSError):  # stdout may be gone too (a closed pipe)
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))


def _how_to_continue() -> str:
    """': run R stopped; continue it with: charter resume R [--db P]', or '' before any run started."""
    import shlex

    if not _runs_seen:
        return ""
    run, db = _runs_seen[0], f" --db {shlex.quote(_db_given[0])}" if _db_given else ""
    return f": run {run} stopped; continue it with: charter resume {shlex.quote(run)}{db}"


@click.group(cls=_Commands, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="charter")
def main() -> None:
    """Charter: declarative YAML workflows for AI agents, run durably and explainably.

    \b
    Examples:
      charter validate examples/
      charter graph examples/routing.yaml --format mermaid
      charter run examples/tools_pipeline.yaml --allow-module 'examples.*'
      charter runs
      charter replay RUN

    RUN is a run id as `charter runs` lists it, or any prefix of it that no other run's id starts
    with (at least 4 characters, any case), as git takes a commit hash.
    """


@main.command(short_help="Check workflow files; every problem with file:line:col.")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github", "sarif"]),
    default="text",
    show_default=True,
    help="How to print the diagnostics.",
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) on warnings too.")
def validate(paths: tuple[str, ...], output_format: str, strict: bool) -> None:
    """Check workflow files and report every problem with file:line:col.

    PATHS may be files, directories (searched for *.yaml / *.yml files that declare
    `charter:`) or glob patterns. Exit status: 0 clean, 1 invalid, 2 usage error.

    \b
    Examples:
      charter validate flow.yaml
      charter validate workflows/ --format github
      charter validate 'flows/**/*.yaml' --format sarif > charter.sarif
    """
    from dsl import diagnostics
    from dsl.frontend import check_files, find_workflow_files

    files, missing = find_workflow_files(paths)
    if missing:
        raise click.UsageError(
            "no workflow file (a YAML file that declares `charter:`) in: " + ", ".join(missing)
        )
    diags = check_files(files)
    formatter = {
        "text": diagnostics.format_text,
        "json": diagnostics.format_json,
        "github": diagnostics.format_github,
        "sarif": diagnostics.format_sarif,
    }[output_format]
    text = formatter(diags)
    if text:
        click.echo(text)
    errors = sum(d.severity == diagnostics.Severity.ERROR for d in diags)
    warnings = len(diags) - errors
    if output_format == "text":
        summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
        click.echo(summary, err=True)
    sys.exit(1 if errors or (strict and warnings) else 0)


@main.command()
def schema() -> None:
    """Print the JSON Schema (2020-12) of a workflow file.

    \b
    Example:
      charter schema > charter.schema.json
    """
    import json

    from dsl.schema import generate_schema

    click.echo(json.dumps(generate_schema(), indent=2))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["mermaid", "dot", "json"]),
    default="mermaid",
    show_default=True,
)
def graph(file: str, output_format: str) -> None:
    """Render the execution graph of a workflow.

    Exit status: 0 rendered, 1 invalid file (its diagnostics on stderr), 2 usage error.

    \b
    Examples:
      charter graph examples/routing.yaml
      charter graph examples/parallel.yaml --format dot | dot -Tsvg > flow.svg
    """
    from dsl import diagnostics
    from dsl.frontend import compile_file
    from dsl.render import render

    graph_, diags = compile_file(file)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    if graph_ is None or errors:
        click.echo(diagnostics.format_text(diags), err=True)
        sys.exit(1)
    click.echo(render(graph_, output_format))


# --------------------------------------------------------------------------------------------------
# Running workflows (issue 4). Exit codes of run/resume/approve: 0 completed, 1 failed, 2 invalid file,
# input or usage, 3 waiting for approval, 4 another process is in the way: it executes the run (its
# lease) or kept the log locked too long.

_EXIT = {"completed": 0, "failed": 1, "cancelled": 1, "waiting": 3, "running": 1}
EXIT_LEASED = 4


def _db_option(fn):  # type: ignore[no-untyped-def]
    return click.option(
        "--db",
        "db",
        default=None,
        metavar="PATH",
        help="Event log file (default: $CHARTER_DB or ./charter.db).",
    )(fn)


def _open_store(db: str | None, durability: str = "normal", create: bool = False):  # type: ignore[no-untyped-def]
    """The event log; only `run` and `wake --watch` may create it (elsewhere a missing file is a
    mistyped --db)."""
    from interpreter.store import StoreError, StoreLockedError, open_store

    if db:
        _db_given[:] = [db]
    try:
        return open_store(db, durability=durability, create=create)  # type: ignore[arg-type]
    except StoreLockedError as exc:  # another process is in the way, as for a lock met later (exit 4)
        _die(str(exc), EXIT_LEASED)
    except StoreError as exc:
        _die(str(exc))


def _die(message: str, code: int = 2, diagnostics: list[dict[str, Any]] | None = None) -> NoReturn:
    """Refuse the command: the message on stderr, with --json also the result document on stdout
    (status "refused"; error code "invalid" for exit 2, "busy" for exit 4: another process is in the
    way)."""
    click.echo(f"error: {message}" if diagnostics is None else message, err=True)
    if _json_refusal:
        import json

        error: dict[str, Any] = {"code": "busy" if code == EXIT_LEASED else "invalid", "message": message}
        if diagnostics is not None:
            error["diagnostics"] = diagnostics
        out = {"run_id": _json_refusal.get("run_id"), "status": "refused", "output": None, "error": error}
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    sys.exit(code)


def _refusals_as_json(as_json: bool, run_id: str | None = None) -> None:
    if as_json:
        _json_refusal.update(run_id=run_id)


def _full_run_id(store, text: str) -> str:  # type: ignore[no-untyped-def]
    """The full id of the run RUN names (its id, or a unique prefix of it: `store.resolve_run_id`), which
    the command uses, prints and records from then on; exit 2 when no run or several runs match."""
    run_id: str = _guarded(lambda: store.resolve_run_id(text))
    if _json_refusal:  # a later refusal's --json document names the run, not what was typed
        _json_refusal.update(run_id=run_id)
    return run_id


def _progress_printer():  # type: ignore[no-untyped-def]
    """Live progress on stderr: which step runs, finishes, fails; a counter for for_each items."""
    tty = sys.stderr.isatty()
    marks = {"started": "▶", "completed": "✓", "failed": "✗", "skipped": "–", "retrying": "↻", "reused": "≡"}
    leaves = ("tool", "llm", "agent", "approval", "workflow")  # the steps whose start is shown (▶)

    def show(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "run":
            _runs_seen.append(event.detail)
            return
        if event.kind == "item":
            done, total = event.detail
            width = 20
            bar = "#" * (width * done // max(total, 1))
            line = f"  {event.node_path} [{bar:<{width}}] {done}/{total}"
            if tty:
                click.echo("\r" + line + ("\n" if done == total else ""), err=True, nl=False)
            elif done == total:
                click.echo(line, err=True)
            return
        if event.kind == "started" and event.step_kind not in leaves:
            return  # composite steps: their children tell the story
        if event.kind == "waiting" and event.node_path:
            click.echo(f"⏸ {event.node_path}: waiting for approval: {event.detail}", err=True)
            return
        if event.kind == "held":
            click.echo(f"⏸ {event.node_path}: waiting: {event.detail}", err=True)
            return
        mark = marks.get(event.kind)
        if mark is None or not event.node_path:
            return
        extra = ""
        if event.kind == "completed" and isinstance(event.detail, float):
            extra = f" ({event.detail * 1000:.1f} ms)"
        elif event.kind in ("failed", "retrying") and event.detail:
            extra = f": {event.detail}"
        click.echo(f"{mark} {event.node_path}{extra}", err=True)

    return show


def _report(result, as_json: bool, store=None, decision=None, resumed=None) -> None:  # type: ignore[no-untyped-def]
    """The outcome of a run on stdout (its output, or with --json the whole result) and stderr, and exit
    with its code. A waiting run names each approval it waits for with the `charter approve` that
    decides it, also one in a child run (`store`). `decision`: what `charter approve` recorded, when
    that was in another run than the one reported (a child run of it). `resumed`: the outcome of the
    child run `charter resume` continued, when the run reported is its top-level run."""
    import json

    from interpreter.runtime import error_text

    approvals = _approvals(store, result)
    resumed = resumed if resumed is not None and resumed.run_id != result.run_id else None
    if as_json:
        out = result.to_dict()
        if approvals is not None:
            out["approvals"] = [p.to_dict() for p in approvals]
        if decision is not None:
            out["decided"] = decision.to_dict()
        if resumed is not None:
            out["resumed"] = resumed.to_dict()
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    elif result.status == "completed":
        click.echo(json.dumps(result.output, indent=2, ensure_ascii=False))
    if resumed is not None:
        click.echo(f"child run {resumed.run_id} {resumed.status}; its top-level run:", err=True)
    if decision is not None and decision.run_id != result.run_id and decision.lineage:
        from interpreter.approvals import route

        click.echo(
            f"{decision.decision} {decision.node_path} in child run {decision.run_id} (of "
            f"{decision.lineage[0][0]}'s step {route(decision.lineage)}) as {decision.by}; "
            f"run {decision.run_id} {decision.decided.status}",
            err=True,
        )
    if result.status == "failed" and result.error:
        where = result.error.get("node_path") or ""
        click.echo(
            f"run {result.run_id} failed{' at ' + where if where else ''}: {error_text(result.error)}",
            err=True,
        )
    elif result.status == "waiting":
        click.echo(_waiting_text(result, approvals or []), err=True)
    elif result.status == "running":
        holder = _live_holder(store, result.run_id)
        if holder is not None:  # another process executes it: in the way, as for resume (exit 4)
            click.echo(f"run {result.run_id} is executed by {holder}", err=True)
            sys.exit(EXIT_LEASED)
        click.echo(  # e.g. its process died while a child run waited
            f"run {result.run_id} is running, not waiting: if no process executes it any more, "
            f"continue it with: charter resume {_q(result.run_id)}{_db_hint()}",
            err=True,
        )
    else:
        click.echo(f"run {result.run_id} {result.status}", err=True)
    sys.exit(_EXIT.get(result.status, 1))


def _live_holder(store, run_id: str) -> str | None:  # type: ignore[no-untyped-def]
    """Who executes the run now (its lease's live holder, described), or None."""
    from interpreter.store import StoreError

    try:
        lease = _executing(store, run_id) if store is not None else None
    except StoreError:
        return None
    return lease.describe() if lease is not None else None


def _approvals(store, result):  # type: ignore[no-untyped-def]
    """The approval requests a waiting run waits for, its own and its child runs' (None: not waiting,
    or they cannot be read: the hint then names the run's own pending nodes)."""
    if store is None or result.status != "waiting":
        return None
    from interpreter.approvals import pending_approvals

    try:
        return pending_approvals(store, result.run_id)
    except Exception:  # noqa: BLE001 - a hint must never turn a waiting run into an error
        return None


def _db_hint() -> str:
    return f" --db {_q(_db_given[0])}" if _db_given else ""


def _q(arg: str) -> str:
    """An argument of a command printed for the user to paste, quoted for the shell where it needs it
    (a node path `each[0]/body/ok`: zsh and bash would expand its brackets as a pattern)."""
    import shlex

    return shlex.quote(arg)


def _waiting_text(result, approvals) -> str:  # type: ignore[no-untyped-def]
    """'run R is waiting for approval at N; decide with: charter approve R N --as NAME', naming the
    child run and its node for a request in a child run, one line per request when there are several."""
    db = _db_hint()
    run_id = result.run_id
    if not approvals:
        node = _q(result.pending[0]) if len(result.pending) == 1 else "NODE"
        return (
            f"run {run_id} is waiting for approval at {', '.join(result.pending) or '?'}; "
            f"decide with: charter approve {_q(run_id)} {node} --as NAME{db}"
        )
    if len(approvals) == 1:
        (p,) = approvals
        where = f"{p.node_path} in child run {p.run_id} (of step {p.route()})" if p.via else p.node_path
        return f"run {run_id} is waiting for approval at {where}; decide with: {p.command()}{db}"
    lines = [f"run {run_id} is waiting for {len(approvals)} approvals; decide each with:"]
    commands = [f"{p.command()}{db}" for p in approvals]
    width = max(map(len, commands))
    for p, command in zip(approvals, commands, strict=True):
        lines.append(f"  {command:<{width}}  # child run of {p.route()}" if p.via else f"  {command}")
    return "\n".join(lines)


def _options(principal, claims_file, allow_modules, durability, quiet=False, models=()):  # type: ignore[no-untyped-def]
    import json

    from interpreter import RunOptions

    if principal is not None and not principal.strip():
        _die("--as needs a name (an empty one would silently mean your user name)")
    claims = None
    if claims_file:
        try:
            with open(claims_file, encoding="utf-8") as handle:
                claims = json.load(handle)
        except (OSError, ValueError) as exc:
            _die(f"cannot read claims from {claims_file}: {exc}")
        if not isinstance(claims, dict):
            _die(f'claims in {claims_file} must be a JSON object, e.g. {{"roles": ["finance"]}}')
    return RunOptions(
        principal=principal,
        claims=claims,
        allow_modules=tuple(allow_modules),
        durability=durability,
        progress=None if quiet else _progress_printer(),
        model_overrides=_model_overrides(models),
    )


def _model_overrides(models: tuple[str, ...]) -> dict[str, str]:
    """`--model NAME=PROVIDER:MODEL[@BASE_URL]` / `NAME=scripted:FILE` options as {NAME: spec}."""
    from interpreter.providers import ModelOverrideError, parse_model_override

    out: dict[str, str] = {}
    for text in models:
        try:
            name, _ = parse_model_override(text)
        except ModelOverrideError as exc:
            raise click.UsageError(str(exc)) from None
        spec = text.partition("=")[2].strip()
        if spec.startswith("scripted:"):  # a responses file named on the command line: from the cwd
            spec = "scripted:" + os.path.abspath(spec.removeprefix("scripted:"))
        out[name] = spec
    return out


def _result_json_option(fn):  # type: ignore[no-untyped-def]
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print {run_id, status, output, error}; when waiting also pending (the run's nodes) and "
        "approvals (each request to decide: run_id, node_path, also in child runs); when refused (exit "
        "2 or 4) status 'refused', error.code 'invalid' or 'busy', and a file's error.diagnostics.",
    )(fn)


def _model_option(fn):  # type: ignore[no-untyped-def]
    return click.option(
        "--model",
        "models",
        multiple=True,
        metavar="NAME=PROVIDER:MODEL[@URL]",
        help="Use another model for the workflow's model NAME: openai:MODEL, openai:MODEL@BASE_URL "
        "(any OpenAI-compatible server), anthropic:MODEL or scripted:FILE. Repeatable.",
    )(fn)


def _show_usage(store, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """One stderr line of model usage (calls, tokens, cost, latency) when the run called models."""
    from interpreter.agent import usage_of_events

    try:
        usage = usage_of_events(store.events(run_id)).to_dict()
    except Exception:  # noqa: BLE001 - a summary must never turn a finished run into an error
        return
    if usage["model_calls"]:
        click.echo(_usage_text(usage), err=True)


def _usage_text(usage: dict) -> str:  # type: ignore[type-arg]
    cost = f", cost {usage['cost']:.6f}" if usage["cost"] is not None else ""
    return (
        f"model usage: {usage['model_calls']} calls, {usage['input_tokens']} input + "
        f"{usage['output_tokens']} output tokens{cost}, {usage['latency_ms']:.1f} ms in model calls"
    )


def _code_output_to_stderr() -> None:
    """From now on, what a workflow's code writes to file descriptor 1 (a python tool's `print`, its
    `os.write(1, ...)`, a program it starts that inherits the descriptor) goes to stderr, while the
    command's own stdout (`sys.stdout`, which click.echo writes to: the output or --json result) stays
    the real one: fd 1 becomes a copy of fd 2 and `sys.stdout` writes to a saved copy of the original
    fd 1. For the rest of the process, so that what the code leaves behind (a thread, an atexit
    handler) cannot write into the result either. Once; nothing when stdout is not fd 1 (e.g. under
    click's CliRunner) or is closed."""
    if _stdout_saved:
        return
    out = sys.stdout
    try:
        if out is None or out.fileno() != 1:
            return
        out.flush()
        saved = os.dup(1)  # not inherited by the programs the workflow starts
    except (AttributeError, OSError, ValueError):  # no real fd 1 (closed, or a stream without one)
        return
    os.dup2(2, 1)
    _stdout_saved.append(saved)
    sys.stdout = open(  # noqa: SIM115 - the process's stdout from now on, closed at exit
        saved,
        "w",
        encoding=getattr(out, "encoding", None) or "utf-8",
        errors=getattr(out, "errors", None) or "strict",
        buffering=1 if getattr(out, "line_buffering", False) else -1,  # 1: line-buffered, as a tty's
    )


# The descriptor the command's stdout was saved to by `_code_output_to_stderr` (empty: not moved).
_stdout_saved: list[int] = []


def _guarded(action, runs_code: bool = False):  # type: ignore[no-untyped-def]
    """Run an interpreter call; setup problems (bad input, policy, unknown run) exit 2 with a message.
    `runs_code`: the call executes a workflow, and what its code prints (a python tool's `print`, a
    program it runs) goes to stderr, since stdout is the run's output, which scripts read (`--json`)."""
    import contextlib

    from interpreter import PolicyError, RunSetupError
    from interpreter.store import LeaseLost, RunLeased, StoreError, StoreLockedError

    if runs_code:
        _code_output_to_stderr()
    try:
        with contextlib.redirect_stdout(sys.stderr) if runs_code else contextlib.nullcontext():
            return action()
    except (RunLeased, LeaseLost) as exc:  # not an error of the request: another process has the run
        _die(str(exc), EXIT_LEASED)
    except StoreLockedError as exc:  # another process kept the log locked: try again later
        _die(f"{exc}{_how_to_continue()}", EXIT_LEASED)
    except (RunSetupError, PolicyError, StoreError) as exc:
        _die(str(exc))


def _allow_option(fn):  # type: ignore[no-untyped-def]
    return click.option(
        "--allow-module",
        "allow_modules",
        multiple=True,
        metavar="M",
        help="Allow python tools from module M (and its submodules) or a glob like 'pkg.*'. Repeatable.",
    )(fn)


@main.command(short_help="Validate and run a workflow.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "input_json", metavar="JSON", help="The run input as JSON text.")
@click.option(
    "--input-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the run input from a JSON file ('-': standard input).",
)
@click.option(
    "--as", "principal", metavar="PRINCIPAL", help="Principal the run acts for (default: your user name)."
)
@click.option(
    "--claims", "claims_file", type=click.Path(dir_okay=False), help="JSON file of the principal's claims."
)
@_db_option
@click.option(
    "--durability",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="full: fsync every commit.",
)
@_allow_option
@_model_option
@_result_json_option
@click.option(
    "--from",
    "fork_from",
    metavar="RUN@NODE_PATH",
    help="Fork: a new run of FILE, RUN's workflow edited or not (the same name), reusing RUN's input "
    "and its results recorded before NODE_PATH (a step of FILE).",
)
def run(
    file: str,
    input_json: str | None,
    input_file: str | None,
    principal: str | None,
    claims_file: str | None,
    db: str | None,
    durability: str,
    allow_modules: tuple[str, ...],
    models: tuple[str, ...],
    as_json: bool,
    fork_from: str | None,
) -> None:
    """Validate and run a workflow; progress on stderr, the output JSON on stdout.

    Exit status: 0 completed, 1 failed, 2 invalid file or input (or a tool that does not load, a
    model that cannot be set up), 3 waiting for approval, 4 the event log stayed locked by another
    process (the run stops resumable), 130/143 stopped by Ctrl-C/SIGTERM (`charter resume` continues).

    \b
    Examples:
      charter run flow.yaml --input '{"order_id": "ORD-7"}' --allow-module 'examples.*'
      charter run flow.yaml --from 01JC...@priced
    """
    import json

    from dsl import diagnostics
    from dsl.frontend import compile_file

    _refusals_as_json(as_json, fork_from.partition("@")[0] if fork_from else None)
    graph_, diags = compile_file(file)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    if graph_ is None or errors:
        shown = errors or diags
        _die(diagnostics.format_text(shown), diagnostics=[diagnostics.as_json(d) for d in shown])
    if input_json is not None and input_file is not None:
        raise click.UsageError("give --input or --input-file, not both")
    inputs = {}
    try:
        if input_file == "-":
            inputs = json.load(sys.stdin)
        elif input_file is not None:
            with open(input_file, encoding="utf-8") as handle:
                inputs = json.load(handle)
        elif input_json is not None:
            inputs = json.loads(input_json)
    except (OSError, ValueError) as exc:
        _die(f"invalid input: {exc}")
    options = _options(principal, claims_file, allow_modules, durability, models=models)
    _check_model_names(graph_, options.model_overrides)
    _check_mcp(graph_, allow_modules)
    from interpreter.store import resolve_db_path

    new_log = not resolve_db_path(db).exists()
    store = _open_store(db, durability, create=True)
    if new_log:  # a run refused before it starts (exit 2) leaves no empty log behind
        atexit.register(_remove_if_empty, store)
    from interpreter import fork_run, run_workflow

    if fork_from:
        if input_json is not None or input_file is not None:
            raise click.UsageError("--from reuses the original run's input; do not combine it with --input")
        run_id, sep, node_path = fork_from.partition("@")
        if not sep or not run_id or not node_path:
            raise click.UsageError("--from takes RUN@NODE_PATH, e.g. 01JC...@priced")
        run_id = _full_run_id(store, run_id)
        result = _guarded(
            lambda: fork_run(run_id, node_path, store=store, options=options, graph=graph_), runs_code=True
        )
    else:
        result = _guarded(lambda: run_workflow(graph_, inputs, store=store, options=options), runs_code=True)
    _show_usage(store, result.run_id)
    _report(result, as_json, store)


def _remove_if_empty(store) -> None:  # type: ignore[no-untyped-def]
    """The log this command created, when no run was written to it."""
    try:
        if store.runs(limit=1):
            return
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - tidying up must never turn an exit into a traceback
        return


def _check_model_names(graph_, overrides: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """A `--model NAME=...` for a model the workflow does not declare is a typo, not a no-op."""
    from dsl.diagnostics import closest

    declared = list(graph_.workflow.models)
    for name in overrides:
        if name not in declared:
            guess = closest(name, declared)
            hint = (
                f"; did you mean '{guess}'?"
                if guess
                else f"; the workflow declares: {', '.join(declared) or 'none'}"
            )
            raise click.UsageError(f"--model {name}=...: the workflow has no model '{name}'{hint}")


def _check_mcp(graph_, allow_modules: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """A stdio MCP server the allow-list does not permit is refused before the run starts (exit 2)."""
    from interpreter.engine import _file_of
    from interpreter.policy import PolicyError, build_policy
    from interpreter.tools import check_mcp_commands

    try:
        check_mcp_commands(graph_, build_policy(allow_modules, _file_of(graph_)))
    except PolicyError as exc:
        _die(str(exc))


@main.command()
@_db_option
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="How many runs (at least 1)."
)
@click.option(
    "--status",
    type=click.Choice(["running", "waiting", "completed", "failed", "cancelled"]),
    help="Only runs with this status.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the runs.")
def runs(db: str | None, limit: int, status: str | None, as_json: bool) -> None:
    """List runs, newest first.

    \b
    Examples:
      charter runs
      charter runs --status waiting --json
    """
    import json

    from interpreter.explain import forked_from
    from interpreter.records import last_pending
    from interpreter.store import RUN_WAITING

    store = _open_store(db)
    rows = _guarded(lambda: store.runs(limit=limit, status=status))
    # which runs are forks (`run --from`): only their run.started says so, not the runs table
    forks = _guarded(lambda: {r.run_id: forked_from(store, r.run_id) for r in rows})
    stopped = _guarded(
        lambda: {r.run_id for r in rows if r.status == "running" and not _executing(store, r.run_id)}
    )
    waits = _guarded(
        lambda: {
            r.run_id: last_pending(store.events(r.run_id, kinds=(RUN_WAITING,))) or []
            for r in rows
            if r.status == "waiting"
        }
    )
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "run_id": r.run_id,
                        "workflow": r.workflow_name,
                        "status": r.status,
                        "created_at": r.created_at,
                        "updated_at": r.updated_at,
                        "parent_run_id": r.parent_run_id,
                        "events": r.head_seq,
                        "forked_from": forks[r.run_id],  # {"run_id", "node_path"} or null
                        # running, but no live process executes it (a crash): `charter resume` it
                        "interrupted": r.run_id in stopped,
                        "waiting_at": waits.get(r.run_id),  # the nodes a waiting run waits at
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("no runs", err=True)
        return
    click.echo(f"{'RUN':<26}  {'STATUS':<9}  {'WORKFLOW':<24}  {'EVENTS':>6}  CREATED")
    for r in rows:
        child = f"  (child of {r.parent_run_id})" if r.parent_run_id else ""
        fork = forks[r.run_id]
        # as `charter run --from` takes it, so the line names what to explain or fork again
        forked = (
            f"  (forked from {_q(str(fork['run_id']) + '@' + str(fork.get('node_path')))})" if fork else ""
        )
        forked += "  (interrupted: no process executes it; charter resume it)" if r.run_id in stopped else ""
        forked += f"  (waits at {', '.join(waits[r.run_id])})" if waits.get(r.run_id) else ""
        click.echo(
            f"{r.run_id:<26}  {r.status:<9}  {r.workflow_name[:24]:<24}  {r.head_seq:>6}  {r.created_at}{child}{forked}"
        )


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (JSON lines).")
def log(run_id: str, db: str | None, as_json: bool) -> None:
    """Show the timeline of a run's events.

    \b
    Examples:
      charter log 01JC...
      charter log 01JC... --json | jq 'select(.kind == "tool.called")'
    """
    import json

    store = _open_store(db)
    given, run_id = run_id, _full_run_id(store, run_id)

    def show() -> None:
        if run_id != given and not as_json:  # a prefix: say which run it named (--json: every line does)
            click.echo(f"run {run_id}")
        for e in store.events(run_id):
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "run_id": run_id,
                            "seq": e.seq,
                            "ts": e.ts,
                            "node_path": e.node_path,
                            "kind": e.kind,
                            "actor": e.actor,
                            "payload": e.payload,
                            "hash": e.hash,
                        },
                        ensure_ascii=False,
                    )
                )
                continue
            text = (
                json.dumps(e.payload, ensure_ascii=False, separators=(",", ":"))
                if e.payload is not None
                else ""
            )
            if len(text) > 120:
                text = text[:117] + "..."
            who = f" [{e.actor.get('sub')}]" if e.actor else ""
            click.echo(f"{e.seq:>5}  {e.ts}  {e.kind:<19} {e.node_path or '-'}{who}  {text}")
        if not as_json:
            from interpreter.agent import usage_of_events

            usage = usage_of_events(store.events(run_id)).to_dict()
            if usage["model_calls"]:
                click.echo(_usage_text(usage))

    _guarded(show)


@main.command(short_help="Continue an interrupted or waiting run.")
@click.argument("run_id", metavar="RUN")
@_db_option
@_allow_option
@_model_option
@_result_json_option
def resume(
    run_id: str, db: str | None, allow_modules: tuple[str, ...], models: tuple[str, ...], as_json: bool
) -> None:
    """Continue an interrupted or waiting run from its log (finished work is not repeated; recorded
    model answers are reused, so only the calls still to make need the model).

    One process executes a run at a time: exit 4 (and nothing is done) when another live process
    is executing it. A run whose process died can be resumed at once. Otherwise as `charter run`:
    0 completed, 1 failed, 2 unknown run or setup problem, 3 waiting for approval; 130/143 when
    stopped by Ctrl-C/SIGTERM. A child run's parents that waited for it continue after it: then the
    top-level run is reported (as `approve`). A finished run is not run again: its outcome is shown
    with how to run it again from a step (`charter run FILE --from RUN@STEP`). The run continues the
    workflow as its log recorded it, also when its file was edited since (a line on stderr says so:
    `charter run FILE --from RUN@STEP` runs the edited file).

    \b
    Example:
      charter resume 01JC...
    """
    from interpreter import resume_run
    from interpreter.store import TERMINAL_STATUSES

    _refusals_as_json(as_json, run_id)
    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    options = _options(None, None, allow_modules, "normal", models=models)
    row = _guarded(lambda: store.run(run_id))
    if row.status in TERMINAL_STATUSES:
        where = (row.error or {}).get("node_path") if row.status == "failed" else None
        again = (
            f"; to run it again from a step: charter run FILE --from {_q(run_id + '@' + (where or 'STEP'))}"
        )
        click.echo(f"run {run_id} already {row.status}: nothing to continue{again}", err=True)
    else:
        _guarded(lambda: _warn_if_file_changed(store, row))
    result = _guarded(lambda: resume_run(run_id, store=store, options=options), runs_code=True)
    _show_usage(store, result.run_id)
    _report(_top_level(store, result), as_json, store, resumed=result)


def _warn_if_file_changed(store, row) -> None:  # type: ignore[no-untyped-def]
    """One stderr line when the workflow file the run started from (its run.started `file`) now differs
    from the source the log keeps: resume continues the recorded workflow, not the edited file."""
    from interpreter.store import RUN_STARTED

    started = next(iter(store.events(row.run_id, kinds=(RUN_STARTED,))), None)
    file = started.payload.get("file") if started is not None and isinstance(started.payload, dict) else None
    if not file or row.workflow_source is None:
        return
    try:
        text = Path(file).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):  # gone or unreadable: nothing to compare with
        return
    if text.removeprefix("\ufeff") == row.workflow_source.removeprefix("\ufeff"):
        return
    relative = os.path.relpath(file)
    shown = file if relative.startswith("..") else relative
    click.echo(
        f"note: {shown} changed since run {row.run_id} started; the run continues as recorded (the "
        f"workflow as it was then); to run the edited file: charter run {_q(shown)} "
        f"--from {_q(row.run_id + '@STEP')}",
        err=True,
    )


def _top_level(store, result):  # type: ignore[no-untyped-def]
    """The outcome of the top-level run above a child run (its parents continued after it)."""
    from interpreter.approvals import lineage, result_of

    hops = lineage(store, result.run_id)
    return result_of(store, hops[0][0]) if hops else result


@main.command(short_help="Re-execute a run offline; report the first divergence.")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--file", "file", type=click.Path(dir_okay=False), help="Replay against this (edited) workflow."
)
@_db_option
@_allow_option
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, ok, events_checked, divergence}.")
def replay(
    run_id: str, file: str | None, db: str | None, allow_modules: tuple[str, ...], as_json: bool
) -> None:
    """Re-execute a run offline from its recorded results (no tool is called).

    Exit 0 when the run is reproduced, 1 with the first divergence (node, expected, got).

    \b
    Examples:
      charter replay 01JC...
      charter replay 01JC... --file flow-edited.yaml    # does the edited workflow still reproduce it?
    """
    import json

    from interpreter import RunOptions, replay_run

    graph_ = None
    if file is not None:
        from dsl import diagnostics
        from dsl.frontend import compile_file

        graph_, diags = compile_file(file)
        errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
        if graph_ is None or errors:
            click.echo(diagnostics.format_text(errors or diags), err=True)
            sys.exit(2)
    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    result = _guarded(
        lambda: replay_run(
            run_id, store=store, graph=graph_, options=RunOptions(allow_modules=allow_modules)
        ),
        runs_code=True,  # tool modules are loaded (their code is compared): what they print is not output
    )
    d = result.divergence
    # A divergence from an edited log reads like an edited workflow: say which it may be.
    tampered = None if d is None else _guarded(lambda: store.verify(run_id))
    if tampered is not None and not tampered.ok:
        at = f" at seq {tampered.first_bad_seq}" if tampered.first_bad_seq is not None else ""
        click.echo(
            f"WARNING: this run's log fails verification{at}: {tampered.reason}; the divergence may come "
            "from the edited log, not from the workflow (see: charter verify)",
            err=True,
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_id": run_id,
                    "ok": result.ok,
                    "events_checked": result.events_checked,
                    "divergence": None
                    if d is None
                    else {"node_path": d.node_path, "expected": d.expected, "got": d.got, "reason": d.reason},
                    "log_intact": None if tampered is None else tampered.ok,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    elif d is None:
        click.echo(f"run {run_id} reproduced ({result.events_checked} events)")
    else:
        click.echo(f"divergence at {d.node_path or '<run>'}: {d.reason}")
        click.echo(f"  expected: {_excerpt(json.dumps(d.expected, ensure_ascii=False))}")
        click.echo(f"  got:      {_excerpt(json.dumps(d.got, ensure_ascii=False))}")
    sys.exit(0 if result.ok else 1)


def _excerpt(text: str, limit: int = 400) -> str:
    """A long value cut for a terminal; `--json` has it whole."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters; --json shows all)"


def _executing(store, run_id: str):  # type: ignore[no-untyped-def]
    """The run's lease when a live process holds it (it is being executed now), else None."""
    from interpreter.leases import holder_alive
    from interpreter.store import utc_now

    held = store.lease(run_id)
    alive = held is not None and holder_alive(
        held.node, held.pid, held.proc_start, held.expires_at, utc_now(), held.owner
    )
    return held if alive else None


@main.command()
@click.argument("run_id", metavar="RUN")
@click.argument("node_path")
@click.option("--as", "person", required=True, metavar="PERSON", help="Who decides.")
@click.option("--deny", is_flag=True, help="Deny instead of approve.")
@click.option("--reason", help="Why.")
@click.option(
    "--claims", "claims_file", type=click.Path(dir_okay=False), help="JSON claims of the person (roles)."
)
@_db_option
@_allow_option
@_model_option
@_result_json_option
def approve(
    run_id: str,
    node_path: str,
    person: str,
    deny: bool,
    reason: str | None,
    claims_file: str | None,
    db: str | None,
    allow_modules: tuple[str, ...],
    models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Record a decision on a pending approval and resume the run.

    The person's roles must be known (--claims, or an identity with roles in the workflow). An
    approval in a child run is decided with the child's run id and node (`charter run` names them);
    NODE may also be a step of RUN whose child run waits for exactly one approval.

    The decided run is continued, then every run above it that waits for it; what is reported is the
    top-level run: its output, and its exit status as `charter resume` (0 completed, 1 failed, 3 still
    waiting); 4: another process is in the way -- either the decision was recorded and the process
    executing the run (or a run above it) right now continues with it, or the log was kept locked and
    nothing was recorded (--json: status "refused", error code "busy"; approve again); 130/143 stopped
    by Ctrl-C/SIGTERM (`charter resume` continues).

    \b
    Examples:
      charter approve 01JC... finance_ok --as carol --claims carol.json --reason "receipts ok"
      charter approve 01JC... finance_ok --as carol --claims carol.json --deny
    """
    from interpreter.approvals import decide

    _refusals_as_json(as_json, run_id)
    if not person.strip():
        _die("--as needs the name of the person who decides")
    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    options = _options(None, claims_file, allow_modules, "normal", models=models)
    decision = _guarded(
        lambda: decide(
            run_id, node_path, store=store, person=person, approved=not deny, reason=reason, options=options
        ),
        runs_code=True,
    )
    _report(decision.result, as_json, store, decision)


@main.command(short_help="Resume runs whose approvals timed out.")
@_db_option
@click.option("--watch", is_flag=True, help="Keep looking until interrupted (Ctrl-C or SIGTERM).")
@click.option(
    "--interval",
    default="5s",
    show_default=True,
    metavar="DURATION",
    help="With --watch: the pause between two looks, e.g. 5s, 1m.",
)
@_allow_option
@_model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run woken (JSON lines).")
def wake(
    db: str | None,
    watch: bool,
    interval: str,
    allow_modules: tuple[str, ...],
    models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Resume the waiting runs whose approvals have timed out, so that the timeout's decision
    (`on_timeout`, or deny for an escalation) is taken; runs not yet expired are left alone.

    Exit 0 when every such run was resumed (or another process holds it), 1 when one could not be
    resumed, 2 for bad usage. With --watch it runs until interrupted, e.g. as a service or from cron.

    \b
    Examples:
      charter wake
      charter wake --db runs.db --watch --interval 30s --json
    """
    from dsl.model import parse_duration

    try:
        pause = parse_duration(interval)
    except ValueError:
        pause = 0.0
    if pause <= 0:
        raise click.BadParameter(
            f"not a positive duration: {interval!r} (e.g. 5s, 1m)", param_hint="--interval"
        ) from None
    # Once, a missing file is a mistyped --db. A watching service may start before the first run.
    store = _open_store(db, create=watch)
    options = _options(None, None, allow_modules, "normal", quiet=True, models=models)
    if not watch:
        woken = _guarded(lambda: _wake_once(store, options, as_json))
        if not woken and not as_json:
            click.echo("no waiting run has an expired approval", err=True)
        sys.exit(1 if any(w.action == "error" for w in woken) else 0)
    _wake_watch(store, options, as_json, pause)


def _wake_once(store, options, as_json: bool):  # type: ignore[no-untyped-def]
    import contextlib
    import json

    from interpreter.wake import wake_due

    _code_output_to_stderr()
    out = sys.stdout  # the report's: what the runs' code prints goes to stderr (as in `_guarded`)

    def show(w) -> None:  # type: ignore[no-untyped-def]
        if as_json:
            click.echo(json.dumps(w.to_dict(), ensure_ascii=False), nl=True, file=out)
            return
        what = {"resumed": f"resumed: {w.status}", "skipped": "skipped", "error": "not resumed"}[w.action]
        why = f": {w.message}" if w.message else ""
        expired = f"expired {', '.join(w.expired)}; " if w.expired else ""  # none: its log cannot be read
        above = f"; its top-level run {w.top[0]} is {w.top[1]}" if w.top else ""
        click.echo(f"run {w.run_id} ({w.workflow}): {expired}{what}{why}{above}", file=out)

    with contextlib.redirect_stdout(sys.stderr):
        return wake_due(store, options, report=show)


def _wake_watch(store, options, as_json: bool, pause: float) -> None:  # type: ignore[no-untyped-def]
    """Look every `pause` seconds until SIGINT/SIGTERM. A signal while a run is being resumed lets that
    resume finish first (a second one stops at once; the run is then recovered by its next resume)."""
    import signal
    import threading

    from interpreter.store import StoreError

    state = {"idle": True, "stop": False}

    def on_signal(signum, frame) -> None:  # type: ignore[no-untyped-def]
        if state["idle"] or state["stop"]:
            # KeyboardInterrupt, not another exception: the engine lets it through rather than
            # recording it as the run's failure.
            raise KeyboardInterrupt
        state["stop"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pause_event = threading.Event()
    try:
        while not state["stop"]:
            state["idle"] = False
            try:
                _wake_once(store, options, as_json)
            except StoreError as exc:  # e.g. the database stayed locked: try again at the next look
                click.echo(f"warning: {exc}", err=True)
            state["idle"] = True
            if not state["stop"]:
                pause_event.wait(pause)
    except KeyboardInterrupt:
        pass
    click.echo("charter wake: stopped", err=True)
    sys.exit(0)


@main.command(short_help="Cancel a waiting or interrupted run and the runs it started.")
@click.argument("run_id", metavar="RUN")
@click.option("--as", "person", metavar="PERSON", help="Who cancels it (default: your user name).")
@click.option("--reason", metavar="TEXT", help="Why, for the log.")
@_db_option
def cancel(run_id: str, person: str | None, reason: str | None, db: str | None) -> None:
    """End a run that is not finished -- one waiting for an approval nobody will give, or one whose
    process died -- as `cancelled`, with every unfinished run it started. Nothing continues a cancelled
    run afterwards: `resume`, `approve` and `wake` refuse it.

    Exit status: 0 cancelled, 2 a finished run, a child run whose parent waits for it (cancel the
    parent), an unknown run, 4 another process is in the way: a live process executes the run (stop
    it first), or the log was kept locked (nothing was recorded; cancel again).

    \b
    Example:
      charter cancel 01JC... --reason "the customer withdrew the request"
    """
    import getpass

    from interpreter.cancel import cancel as cancel_run

    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    who = person if person is not None else getpass.getuser()
    done = _guarded(lambda: cancel_run(run_id, store=store, person=who, reason=reason))
    children = f" and {len(done) - 1} run(s) it started" if len(done) > 1 else ""
    click.echo(f"cancelled run {run_id}{children}", err=True)


@main.command(short_help="Check a run's hash chain and tool authorizations.")
@click.argument("run_id", metavar="RUN")
@_db_option
def verify(run_id: str, db: str | None) -> None:
    """Check a run's hash chain and checkpoint, and that every tool call was authorized first.

    Exit 0 intact, 1 with the first bad sequence number, 2 when there is no such run.

    \b
    Example:
      charter verify 01JC...
    """
    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    result = _guarded(lambda: store.verify(run_id))
    if not result.ok:
        where = (
            "cannot be verified" if result.first_bad_seq is None else f"broken at seq {result.first_bad_seq}"
        )
        click.echo(f"run {run_id}: {where}: {result.reason}")
        sys.exit(1)
    from interpreter.audit import audit_authz

    problems = audit_authz(store.events(run_id))  # every tool call was authorized before it ran
    if problems:
        click.echo(f"run {run_id}: hash chain intact, but the authorization audit failed:")
        for problem in problems:
            click.echo(f"  {problem}")
        sys.exit(1)
    click.echo(f"run {run_id}: intact ({result.events_checked} events; every tool call authorized)")
    sys.exit(0)


@main.command(short_help="Why a run did what it did, decision by decision.")
@click.argument("run_id", metavar="RUN")
@click.option("--node", "node", metavar="PATH", help="Only this node and what ran inside it.")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="The complete trace as JSON.")
def explain(run_id: str, node: str | None, db: str | None, as_json: bool) -> None:
    """The decisions of a run in order: routes, authorizations, guardrails, tool and model calls,
    approvals, budgets used.

    \b
    Examples:
      charter explain 01JC...
      charter explain 01JC... --node route --json
    """
    import json

    from interpreter.explain import build_trace, format_text

    store = _open_store(db)
    run_id = _full_run_id(store, run_id)
    trace = _guarded(lambda: build_trace(store, run_id, node))
    if node is not None and not trace["trace"]:
        _die(f"run {run_id} has no events at node '{node}'; nodes that ran: {_nodes_that_ran(store, run_id)}")
    if as_json:
        click.echo(json.dumps(trace, indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(trace))


def _nodes_that_ran(store, run_id: str, most: int = 20) -> str:  # type: ignore[no-untyped-def]
    """The node paths a run started (for-each items with their index), for a mistyped --node."""
    paths = sorted({e.node_path for e in store.events(run_id, kinds=("step.started",))})
    more = f" ... ({len(paths) - most} more)" if len(paths) > most else ""
    return ", ".join(paths[:most]) + more


if __name__ == "__main__":
    main()
