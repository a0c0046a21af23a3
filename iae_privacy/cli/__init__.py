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

__all__ = ["app", "main", "printable"]


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


PREFECT_STARTUP = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


PREFECT_STARTUP_SECONDS = 180
"""How long a command waits for Prefect's temporary server, unless the user set it."""


def _fail(exc: IaeError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    sys.exit(2)
