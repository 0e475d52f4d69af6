"""`ernie-sm start`, `watch` and `ls`: run pretraining executions of the deployed stack.

    ernie-sm start --dataset datasets/wiki-zh --instance-type ml.p4d.24xlarge --hp batch_size=4096
    ernie-sm watch wiki-zh-20250101-120000
    ernie-sm ls

The stack (--stack, default ErniePretraining) is found through its CloudFormation outputs
in the region of --region or the profile. `start` checks the input against the same
contract the state machine's Prepare step applies (pipeline/parsing.py) before it calls
AWS. `watch` follows an execution to its end and exits 0 when it succeeded, 1 otherwise.
Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ernie_sm.operations import executions
from ernie_sm.operations.executions import Clients, Progress
from ernie_sm.operations.stack import (
    DEFAULT_STACK,
    OperationsError,
    client,
    make_session,
    state_machine_arn,
)
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_WIDE = 250  # columns of a table written to a pipe or file, where nothing should wrap
_CAUSE_MAX = 160
_STYLES = {
    "SUCCEEDED": "green",
    "RUNNING": "cyan",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "ABORTED": "yellow",
}


# ---------------------------------------------------------------------------------------
# The commands


def run_start(args: argparse.Namespace) -> int:
    """Validate the input locally, then start an execution; print its ARN and console URL."""
    base = executions.read_input_file(args.input) if args.input else {}
    raw = executions.build_input(
        base,
        dataset=args.dataset,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        spot=args.spot,
        hyperparameters=executions.parse_assignments(args.hp or []),
    )
    name = args.name or executions.default_execution_name(raw, datetime.now(timezone.utc))
    session = make_session(args.region, args.profile)
    machine = state_machine_arn(args.stack, session)
    arn = executions.start_execution(client(session, "stepfunctions"), machine, raw, name)
    print(f"started execution {name}")
    print(f"arn: {arn}")
    print(f"console: {executions.console_url(arn)}")
    if args.watch:
        return _follow(_clients(session), arn, args.interval, once=False)
    print(f"follow it: ernie-sm watch {name} --stack {args.stack} --region {arn.split(':')[3]}")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """Follow an execution until it ends: 0 if it succeeded, 1 if it did not."""
    session = make_session(args.region, args.profile)
    if args.execution.startswith("arn:"):
        arn = executions.execution_arn("", args.execution)
    else:
        arn = executions.execution_arn(state_machine_arn(args.stack, session), args.execution)
    return _follow(_clients(session), arn, args.interval, once=args.once)


def run_ls(args: argparse.Namespace) -> int:
    """A table of the newest executions of the stack's state machine."""
    session = make_session(args.region, args.profile)
    machine = state_machine_arn(args.stack, session)
    found = executions.recent_executions(_clients(session), machine, args.max)
    console = _console()
    if not found:
        console.print(f"no executions of {machine} yet: start one with `ernie-sm start`")
        return 0
    console.print(f"executions of {machine}", highlight=False)
    table = Table()
    for column in ("execution", "status", "started", "stopped", "training job"):
        table.add_column(column, no_wrap=True)
    table.add_column("model / error", overflow="fold")
    for progress in found:
        table.add_row(
            progress.name,
            _status(progress.status),
            _time(progress.started),
            _time(progress.stopped),
            progress.training_job or "-",
            progress.model or _failure(progress, _CAUSE_MAX) or "-",
        )
    console.print(table)
    return 0


# ---------------------------------------------------------------------------------------
# Following an execution


def _follow(clients: Clients, arn: str, interval: float, once: bool) -> int:
    console = _console()
    read: Callable[[], Progress] = lambda: executions.progress_of(clients, arn)  # noqa: E731
    try:
        if once:
            progress = read()
            if console.is_terminal:
                console.print(_panel(progress))
            else:
                print(_line(progress))
        elif console.is_terminal:
            progress = read()
            with Live(_panel(progress), console=console, auto_refresh=False) as live:
                while not progress.ended:
                    time.sleep(interval)
                    progress = read()
                    live.update(_panel(progress), refresh=True)
        else:
            progress = _follow_plain(read, interval)
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; the execution goes on: {executions.console_url(arn)}",
            file=sys.stderr,
        )
        return 130
    if progress.ended:
        print(_outcome(progress))
    return 1 if progress.ended and not progress.succeeded else 0


def _follow_plain(read: Callable[[], Progress], interval: float) -> Progress:
    """One line per change, for logs and pipes."""
    last = None
    while True:
        progress = read()
        line = _line(progress)
        if line != last:
            print(f"{datetime.now():%H:%M:%S} {line}", flush=True)
            last = line
        if progress.ended:
            return progress
        time.sleep(interval)


def _line(p: Progress) -> str:
    parts = [f"{p.name}: {p.status}"]
    if p.training_job:
        job = f"job {p.training_job}"
        if p.job_status:
            job += f" {p.job_status}"
            if p.secondary_status:
                job += f"/{p.secondary_status}"
        parts.append(job)
    if p.loss is not None:
        parts.append(f"{executions.LOSS_METRIC} {p.loss:.4f} at {_time(p.loss_time)}")
    return ", ".join(parts)


def _panel(p: Progress) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("execution", p.name)
    grid.add_row("status", _status(p.status))
    grid.add_row("started", _time(p.started))
    if p.stopped:
        grid.add_row("stopped", _time(p.stopped))
    grid.add_row("training job", p.training_job or "(not created yet)")
    if p.job_status:
        grid.add_row("job status", f"{p.job_status} / {p.secondary_status or '-'}")
    if p.loss is not None:
        grid.add_row(executions.LOSS_METRIC, f"{p.loss:.4f} at {_time(p.loss_time)}")
    return Group(grid, Text(executions.console_url(p.arn), style="dim"))


def _outcome(p: Progress) -> str:
    if p.succeeded:
        attempts = f", {p.attempts} attempt(s)" if p.attempts else ""
        return f"{p.status}: model {p.model or '(no model in the output)'} (training job {p.training_job or '-'}{attempts})"
    text = f"{p.status}: {_failure(p) or 'no error recorded'}"
    if p.failure_reason and p.failure_reason not in text:
        text += f" (training job {p.training_job}: {p.failure_reason})"
    return text


def _failure(p: Progress, limit: int | None = None) -> str | None:
    if not (p.error or p.cause):
        return None
    text = ": ".join(part for part in (p.error, p.cause) if part)
    text = " ".join(text.split())
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _status(status: str) -> Text:
    return Text(status, style=_STYLES.get(status, ""))


def _time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=_WIDE)


def _clients(session: Any) -> Clients:
    return Clients(
        sfn=client(session, "stepfunctions"),
        sagemaker=client(session, "sagemaker"),
        cloudwatch=client(session, "cloudwatch"),
    )


# ---------------------------------------------------------------------------------------
# The command line


def _guarded(command: str, run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except OperationsError as e:
            print(f"ernie-sm {command}: error: {e}", file=sys.stderr)
            return 2

    return guarded


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack", default=DEFAULT_STACK, help=f"the deployed stack (default: {DEFAULT_STACK})"
    )
    parser.add_argument("--region", help="its AWS region (default: from the profile)")
    parser.add_argument("--profile", help="AWS named profile (default: the credential chain)")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `start`, `watch` and `ls` on the CLI's subcommands."""
    start = commands.add_parser(
        "start",
        help="start a pretraining execution of the deployed stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_stack_arguments(start)
    start.add_argument(
        "--input",
        metavar="FILE.json",
        help="execution input (docs/execution-input.md); - for stdin (default: {}, the flags alone)",
    )
    start.add_argument(
        "--dataset",
        help="dataset key prefix in the stack's bucket, e.g. datasets/x "
        "(default: the input's; one of the two is needed)",
    )
    start.add_argument(
        "--instance-type",
        help="SageMaker instance type, e.g. ml.g5.12xlarge (default: the input's, else the "
        "stack's default)",
    )
    # A string: the contract names a bad value ("instance_count: expected an integer ...").
    start.add_argument(
        "--instance-count",
        type=_int_or_text,
        help="hosts, 1 to 16 (default: the input's, else the stack's default)",
    )
    start.add_argument(
        "--spot",
        action=argparse.BooleanOptionalAction,
        help="managed spot training (default: the input's, else spot)",
    )
    start.add_argument(
        "--hp",
        action="append",
        metavar="NAME=VALUE",
        help="hyperparameter override, over the input's (repeatable; `ernie-sm "
        "hyperparameters` lists them with their defaults)",
    )
    start.add_argument("--name", help="execution name (default: <dataset>-<UTC time>)")
    start.add_argument("--watch", action="store_true", help="then follow it, as `watch` does")
    start.add_argument(
        "--interval", type=_positive, default=30.0, help="seconds between polls with --watch"
    )
    start.set_defaults(run=_guarded("start", run_start))

    watch = commands.add_parser(
        "watch",
        help="follow an execution: status, training job, Training-loss, then model or error",
        description="Follow an execution of the deployed stack's state machine until it ends:\n"
        "its status, training job and Training-loss as they change, then the model's S3 URI\n"
        "or the error. Exits 0 when the execution succeeded, 1 when it did not; other errors\n"
        "print one line and exit 2 (operations/commands.py).",
    )
    watch.add_argument(
        "execution",
        metavar="EXECUTION_ARN_OR_NAME",
        help="its ARN, or its name (an execution of --stack's state machine)",
    )
    _add_stack_arguments(watch)
    watch.add_argument("--interval", type=_positive, default=30.0, help="seconds between polls")
    watch.add_argument("--once", action="store_true", help="print the status once and exit")
    watch.set_defaults(run=_guarded("watch", run_watch))

    ls = commands.add_parser(
        "ls",
        help="list the newest executions of the stack's state machine",
        description="A table of the newest executions of the deployed stack's state machine:\n"
        "name, status, start and stop times, training job, and the model or the error\n"
        "(operations/commands.py). Errors print one line and exit 2.",
    )
    _add_stack_arguments(ls)
    ls.add_argument("--max", type=_count, default=20, help="how many")
    ls.set_defaults(run=_guarded("ls", run_ls))


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text
