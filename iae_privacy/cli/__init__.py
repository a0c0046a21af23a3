"""The ``iae-privacy`` command line: one module per command group, the demo apart.

Every command prints a clear message and exits with status 2 for a mistake the user can fix (a
missing file, a malformed config, schema drift); a traceback means a bug in iae-privacy. This is
the only part of the package that reaches the Prefect flows, and only inside commands.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from iae_privacy.cli import analysts, compress, data, demo, keys, policy, server  # noqa: F401  (they register their commands)
from iae_privacy.cli.app import app
from iae_privacy.cli.common import err_console, printable
from iae_privacy.errors import IaeError

__all__ = ["app", "main", "entry", "printable"]


def main() -> None:
    import os

    # Prefect's embedded server would phone home; nothing of ours needs it (set before Prefect loads)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # and its SDK would too, after printing a first-run notice: DO_NOT_TRACK is the switch it reads
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # its temporary server gets 20 s to start by default, which a busy 2-core machine can miss
    os.environ.setdefault(PREFECT_STARTUP, str(PREFECT_STARTUP_SECONDS))
    from iae_privacy.errors import DEBUG, withheld

    # the passphrase stays in this process: no server, worker or tool we start inherits it
    from iae_privacy.keys.keyring import ENV_PASSPHRASE, hold_passphrase

    hold_passphrase(os.environ.pop(ENV_PASSPHRASE, None))
    try:
        app()
    except IaeError as exc:
        _fail(exc)
    except Exception as exc:  # a bug, or a library's error: its message may quote a cell
        if os.environ.get(DEBUG) == "1":
            raise
        if "ephemeral Prefect API server" in str(exc):
            _fail(IaeError(f"Prefect's temporary server did not start within {os.environ[PREFECT_STARTUP]} s "
                           "(a busy machine?): start the workspace's own with 'iae-privacy server start' (or "
                           f"'prefect server start' and set PREFECT_API_URL), or give it longer with "
                           f"{PREFECT_STARTUP}"))
        _fail(withheld(exc, "the command"))


def entry() -> None:
    """The ``iae-privacy`` command: :func:`main`, then out without the interpreter's teardown.

    Once a command is done, its other threads are joined and the exit handlers run (Prefect
    flushes its logs and events to its API there, and stops a temporary server); what Python
    does after that (freeing every module and object Prefect and pyarrow loaded) took 0.5 s of
    a 4.2 s one-record ``decode`` from the shell, and writes nothing: every file the commands
    write is closed before they return. A traceback (``IAE_DEBUG=1``) or an interruption leaves
    the usual way."""
    import atexit
    import os
    import threading

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if isinstance(code, str):  # as sys.exit does with a message
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


PREFECT_STARTUP = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


PREFECT_STARTUP_SECONDS = 180
"""How long a command waits for Prefect's temporary server, unless the user set it."""


def _fail(exc: IaeError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    sys.exit(2)
