"""What every command shares: the consoles, the session (workspace and keyring, opened once per
command, carried in Typer's context object), dataset config lookup, and progress display."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from iae_privacy.codec import CodecConfig
from iae_privacy.errors import IaeError

if TYPE_CHECKING:
    from iae_privacy.access.control import AccessControl
    from iae_privacy.keys.keyring import Keyring
    from iae_privacy.workspace import Workspace

__all__ = ["console", "err_console", "JsonOption", "print_json", "printable", "Session", "session",
           "ask_passphrase", "REPO_DATA", "ConfigOption", "config_path", "config_for", "source_rows", "progress",
           "flow_progress", "split_list", "in_flow_worker"]

PIPED_WIDTH = 4096
"""Columns of output when standard output is not a terminal: wide enough that nothing is cut."""
console = Console()
if not console.is_terminal:  # piped or redirected: never cut a path or a cell at 80 columns
    console.width = PIPED_WIDTH
err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line, for logs and grep
JsonOption = Annotated[bool, typer.Option("--json", help="The result as JSON on standard output, nothing cut: "
                                          "for scripts.")]


def print_json(value: Any) -> None:
    """``value`` as one line of JSON on standard output (keys sorted, ASCII)."""
    import json

    typer.echo(json.dumps(value, sort_keys=True, ensure_ascii=True))
REPO_DATA = Path(__file__).resolve().parent.parent.parent / "data"


def printable(text: str) -> str:
    """``text`` with control characters (and other unprintables) shown as escapes, so that what a
    request's author wrote cannot move the cursor, clear the screen or fake lines on a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def ask_passphrase() -> str:
    if not sys.stdin.isatty():
        raise IaeError("the master key is passphrase-protected; set IAE_PASSPHRASE")
    return typer.prompt("Passphrase for the master key", hide_input=True)


class Session:
    """One command's workspace (``--home``) and, once asked for, its keyring: opened once, so that a
    passphrase is asked for at most once per command."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._workspace: Workspace | None = None
        self._keyring: Keyring | None = None

    def workspace(self) -> Workspace:
        if self._workspace is None:
            from iae_privacy.workspace import Workspace

            self._workspace = Workspace.at(self.home)
        return self._workspace

    def keyring(self) -> Keyring:
        """The workspace's keyring (a clear error if there is none, or it does not open). A passphrase
        asked for is held in this process (:func:`~iae_privacy.keys.keyring.hold_passphrase`), for
        the flows this command runs."""
        if self._keyring is None:
            from iae_privacy.keys.keyring import hold_passphrase

            def ask() -> str:
                value = ask_passphrase()
                hold_passphrase(value)
                return value

            self._keyring = self.workspace().keyring(ask)
        return self._keyring

    def access(self) -> AccessControl:
        from iae_privacy.access.control import AccessControl

        return AccessControl(self.workspace(), self.keyring())


def session(ctx: typer.Context) -> Session:
    """The running command's session, which the ``--home`` callback put in Typer's context object."""
    obj = ctx.find_root().obj
    if not isinstance(obj, Session):
        raise RuntimeError("session() outside a running iae-privacy command")
    return obj


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Dataset config (TOML): role overrides and codec settings. "
                 "Default: NAME.toml beside DATA.parquet, if there is one."),
]


def config_path(data: Path, config: Path | None) -> str | None:
    """The config to use: the one given, else NAME.toml beside NAME.parquet if there is one."""
    if config is not None:
        return str(config)
    beside = data.with_suffix(".toml")
    return str(beside) if beside.exists() else None


def config_for(data: Path, config: Path | None) -> CodecConfig:
    path = config_path(data, config)
    return CodecConfig.load(path) if path else CodecConfig()


def source_rows(path: Path) -> int:
    """Rows of a Parquet file (a clear error for a missing or unreadable one, before Prefect starts)."""
    from iae_privacy.codec import parquet_rows

    return parquet_rows(path)


def split_list(text: str) -> tuple[str, ...]:
    """The items of a comma-separated option."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _bars() -> Progress:
    """Rich bars: what, bar, done/total, unit (a task field), time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"), TimeRemainingColumn(), console=console)


@contextmanager
def progress(description: str, total: int) -> Iterator:
    """A rich progress bar in a terminal; a few plain lines on standard error when output goes to a
    file or CI (standard output carries the results, --json ones included)."""
    if console.is_terminal:
        with _bars() as bar:
            task = bar.add_task(description, total=total, unit="rows")
            yield lambda rows: bar.advance(task, rows)
        return
    done, next_report = 0, 0.0

    def advance(rows: int) -> None:
        nonlocal done, next_report
        done += rows
        if done >= next_report * total or done == total:
            err_console.print(f"{description}: {done:,}/{total:,} rows", highlight=False)  # stdout: results
            next_report += 0.25

    yield advance


def in_flow_worker(ctx: typer.Context, command: str, args: dict) -> dict | None:
    """Run ``command``'s flow in the workspace's flow worker (:mod:`iae_privacy.server`), when one
    runs for the Prefect server this command reports to: its result, or None (then the command
    runs the flow itself). Not with master keys from the environment, which the worker does not
    have. Open the keyring first (:meth:`Session.keyring`): a passphrase asked for goes with the
    command. Progress goes to :func:`flow_progress`'s bars; the run's log lines to standard error,
    as Prefect's own console shows them (in a terminal, its warnings and errors only, below the bars)."""
    import logging
    import os

    from iae_privacy import progress as reports
    from iae_privacy.keys.keyring import ENV_MASTER_KEY_PREFIX, env_passphrase
    from iae_privacy.server import WorkspaceServer

    if any(name.startswith(ENV_MASTER_KEY_PREFIX) for name in os.environ):
        return None
    server = WorkspaceServer(session(ctx).workspace().home)
    state = server.state()
    if state is None or os.environ.get("PREFECT_API_URL") != state.url:
        return None

    def show(level: int, line: str) -> None:
        if level >= logging.WARNING or not console.is_terminal:
            err_console.print(escape(printable(line)), highlight=False)

    return server.run_flow(command, args, env_passphrase(), on_progress=reports.report, on_log=show)


@contextmanager
def flow_progress() -> Iterator[None]:
    """Rich progress bars, in a terminal, for what the flow run inside the block reports (encode and
    restore rows, training epochs); elsewhere the flows' own log lines are the progress."""
    if not console.is_terminal:
        yield
        return
    import logging
    import os

    from iae_privacy import progress as reports

    # The bars take the place of Prefect's INFO lines on the console (its lines would break them);
    # its warnings and errors still show, and nothing changes where the user set the level.
    quieted = [] if "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" in os.environ else \
        [(h, h.level) for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    for handler, _ in quieted:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        with _bars() as bar:
            tasks: dict[str, int] = {}

            def show(what: str, done: int, total: int, unit: str) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=total, unit=unit)
                bar.update(tasks[what], completed=done, total=total)

            with reports.listening(show):
                yield
    finally:
        for handler, level in quieted:
            handler.setLevel(level)
