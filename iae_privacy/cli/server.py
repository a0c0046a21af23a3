"""``iae-privacy serve`` (scheduled deployments) and ``iae-privacy server`` (the workspace's own
Prefect server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from iae_privacy.cli.app import app, server_app
from iae_privacy.cli.common import (
    console,
    session,
)
from iae_privacy.errors import IaeError


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    landing: Annotated[Path, typer.Argument(help="The landing folder new Parquet files arrive in.")],
    model: Annotated[str, typer.Option("--model", "-m", help=(
        "NAME: its latest version for a new dataset, the dataset's own version once it has parts; or "
        "NAME:vN, pinned."))],
    out: Annotated[Path, typer.Option(help="The encoded dataset folder the landing folder feeds.")],
    cron: Annotated[str, typer.Option(help="When to encode new files (cron, server time zone).")] = "*/15 * * * *",
    retrain_cron: Annotated[Optional[str], typer.Option(help="When to retrain, if at all (cron).")] = None,
    retrain_data: Annotated[Optional[Path], typer.Option(help="The file to retrain from.")] = None,
) -> None:
    """Serve scheduled deployments: encode LANDING on a cron schedule (each new file once), and
    optionally retrain the model. Needs a Prefect server: run 'prefect server start' and set
    PREFECT_API_URL first. Runs until interrupted (Ctrl-C)."""
    import os

    from prefect import serve

    from iae_privacy_flows.serve import build_deployments

    if not os.environ.get("PREFECT_API_URL"):
        raise IaeError("schedules need a Prefect server: run 'iae-privacy server start' (or 'prefect server "
                       "start' and set PREFECT_API_URL)")
    if retrain_cron and retrain_data is None:
        raise IaeError("--retrain-cron needs --retrain-data")
    workspace = session(ctx).workspace()
    session(ctx).keyring()
    workspace.models.resolve(model)
    deployments = build_deployments(str(landing), model, str(out), str(workspace.home), cron, retrain_cron,
                                    str(retrain_data) if retrain_data else None)
    serve(*deployments)


@server_app.command("start")
def server_start_command(ctx: typer.Context) -> None:
    """Start this workspace's Prefect server in the background (loopback; its database under
    HOME/server/prefect), and its flow worker (a process with Prefect and the flows imported, which
    runs decode's flow when asked: a one-record decode from the shell then takes about a second).
    Later commands in the workspace use them without any setting; the UI shows every flow run. Stop
    both with 'iae-privacy server stop'."""
    from iae_privacy.server import START_SECONDS, WorkspaceServer

    server = WorkspaceServer(session(ctx).workspace().home)
    if server.running() is None:
        console.print(f"starting the Prefect server (up to {START_SECONDS} s on a busy machine) ...")
    state = server.start()
    console.print(f"Prefect server running for {session(ctx).workspace().home}: API {state.url}, UI {state.ui} "
                  f"(process {state.pid}, log {server.log})", highlight=False)
    console.print(_worker_line(server, state), highlight=False)


def _worker_line(server, state) -> str:
    if state.worker_pid:
        return (f"flow worker running (process {state.worker_pid}, log {server.worker_log}): decode runs its flow "
                "there, without importing Prefect each time")
    return (f"flow worker not running (see {server.worker_log}): commands run their flows in their own process; "
            "'iae-privacy server start' tries again")


@server_app.command("stop")
def server_stop_command(ctx: typer.Context) -> None:
    """Stop this workspace's Prefect server and flow worker (flow runs already recorded stay in its
    database)."""
    from iae_privacy.server import WorkspaceServer

    stopped = WorkspaceServer(session(ctx).workspace().home).stop()
    console.print("Prefect server stopped" if stopped else "no Prefect server was running for this workspace")


@server_app.command("status")
def server_status_command(ctx: typer.Context) -> None:
    """Show whether this workspace's Prefect server runs, its API address and its UI, and whether
    its flow worker answers."""
    from dataclasses import replace

    from iae_privacy.server import WorkspaceServer

    server = WorkspaceServer(session(ctx).workspace().home)
    state = server.running()
    if state is None:
        console.print("no Prefect server is running for this workspace: 'iae-privacy server start' starts one "
                      "(without it, each command starts a temporary one)")
        raise typer.Exit(1)
    console.print(f"running since {state.started}: API {state.url}, UI {state.ui} (process {state.pid})",
                  highlight=False)
    console.print(_worker_line(server, state if server.worker_answers() else replace(state, worker_pid=0)),
                  highlight=False)
