"""The Typer application and its command groups; the options every command shares (``--home``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from iae_privacy.cli.common import Session

__all__ = ["app", "keys_app", "policy_app", "audit_app", "server_app"]

app = typer.Typer(
    help="iae-privacy: turn sensitive Parquet tables into latent tables analysts can use, "
    "restorable bit for bit only through an audited decode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, inspect, rotate and retire the keyring under HOME/keys.",
                       no_args_is_help=True)
policy_app = typer.Typer(help="Show and change who may restore what (every change is audited).",
                         no_args_is_help=True)
audit_app = typer.Typer(help="Check and read the audit log of restores, policy changes and key events.",
                        no_args_is_help=True)
server_app = typer.Typer(help="A long-lived Prefect server for this workspace, so that commands do not each "
                          "start a temporary one (13-18 s, and it can time out on a busy machine).",
                          no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(server_app, name="server")


@app.callback()
def _main_options(
    ctx: typer.Context,
    home: Annotated[Optional[Path], typer.Option(
        "--home", envvar="IAE_HOME",
        help="Workspace folder holding keys/ and models/ (default: the current folder).")] = None,
) -> None:
    ctx.obj = session = Session(home)  # what every command reaches through iae_privacy.cli.common.session()
    if not os.environ.get("PREFECT_API_URL"):  # the workspace's own server, if one runs (before Prefect loads)
        from iae_privacy.server import WorkspaceServer

        running = WorkspaceServer(session.workspace().home).state()
        if running is not None:
            os.environ["PREFECT_API_URL"] = running.url
