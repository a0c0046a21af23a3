"""``iae-privacy policy`` and ``iae-privacy audit``: who may restore what, and the record of it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from iae_privacy.cli.app import audit_app, policy_app
from iae_privacy.cli.common import (
    JsonOption,
    console,
    err_console,
    print_json,
    printable,
    session,
    split_list,
)
from iae_privacy.errors import IaeError


@policy_app.command("show")
def policy_show_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the roles (datasets, columns, row limit, whole-dataset restores) and the principals."""
    policy = session(ctx).access().policy()
    if as_json:
        print_json({"roles": {name: {"datasets": list(r.datasets), "columns": list(r.columns), "max_rows": r.max_rows,
                                     "whole_dataset": r.whole_dataset} for name, r in policy.roles.items()},
                    "principals": {name: {"role": p.role, "added": p.added, "public_key": p.public_key}
                                   for name, p in policy.principals.items()}})
        return
    roles = Table(title="roles")
    for heading in ("role", "datasets", "columns", "max rows per request", "whole dataset"):
        roles.add_column(heading)
    for name, role in sorted(policy.roles.items()):
        roles.add_row(name, ", ".join(role.datasets), ", ".join(role.columns),
                      "no limit" if role.max_rows is None else f"{role.max_rows:,}",
                      "yes" if role.whole_dataset else "no")
    principals = Table(title="principals")
    for heading in ("principal", "role", "added", "public key"):
        principals.add_column(heading)
    for name, principal in sorted(policy.principals.items()):
        principals.add_row(name, principal.role, principal.added, principal.public_key[:16] + "…")
    console.print(roles)
    console.print(principals)


@policy_app.command("set-role")
def policy_set_role_command(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The role to create or replace.")],
    datasets: Annotated[str, typer.Option(help="Comma-separated dataset names or patterns ('*': all).")] = "*",
    columns: Annotated[str, typer.Option(help="Comma-separated columns or patterns it may restore ('*': all).")] = "*",
    max_rows: Annotated[Optional[int], typer.Option(help="Most rows per request (default: no limit).")] = None,
    whole_dataset: Annotated[bool, typer.Option(
        "--whole-dataset/--no-whole-dataset", help="May it restore whole datasets?")] = False,
    max_lifetime: Annotated[Optional[str], typer.Option(
        help="Longest a request may stay valid (expiry minus creation): 90s, 30m, 12h, 7d. Default 24h.")] = None,
) -> None:
    """Create or replace a role. Example, a clinician who may restore one person's contact details:

        iae-privacy policy set-role clinician --datasets patients --columns full_name,email --max-rows 5
    """
    from iae_privacy.access.control import AccessRole, parse_ttl

    if max_rows is not None and max_rows < 1:
        raise IaeError("--max-rows must be at least 1")
    lifetime = None if max_lifetime is None else parse_ttl(max_lifetime)
    role_ = AccessRole(split_list(datasets), split_list(columns), max_rows, whole_dataset, lifetime)
    session(ctx).access().set_role(role, role_)
    console.print(f"role {role!r} set (audited)")


@audit_app.command("verify")
def audit_verify_command(ctx: typer.Context) -> None:
    """Check every entry's MAC, the hash chain, the log's end against the checkpoint kept under
    keys/, and that keys/policy.json is the policy the log last recorded (not an older copy put
    back). Says which line is wrong; exits with status 1 if anything is."""
    from iae_privacy.access.control import AccessRefused

    access = session(ctx).access()
    report = access.audit.verify()
    if report.ok:
        try:
            access.policy()  # and the policy in force is the one the log last recorded
        except AccessRefused as exc:
            report.problems.append(str(exc))
    if report.ok:
        console.print(f"audit log intact: {report.entries} entries, chain and checkpoint verified; the policy "
                      "is the one it last recorded")
        return
    for problem in report.problems:
        err_console.print(f"[bold red]audit:[/] {problem}", highlight=False)
    raise typer.Exit(1)


@audit_app.command("show")
def audit_show_command(
    ctx: typer.Context,
    last: Annotated[int, typer.Option(help="How many of the latest matching entries to show (0: all).")] = 20,
    principal: Annotated[Optional[str], typer.Option(help="Only this principal's entries.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Only the entries about this dataset (its name).")] = None,
    since: Annotated[Optional[str], typer.Option(
        help="Only entries at or after this time, UTC unless it says otherwise: 2026-11-01 or 2026-11-01T09:30.")]
    = None,
    token: Annotated[Optional[str], typer.Option(
        help="Only entries about this token (a request by token; 'iae-privacy token' looks one up).")] = None,
    row_id: Annotated[Optional[int], typer.Option(
        help="Only entries that covered this row id: grants by row id or token that named it, and "
        "whole-dataset grants (which cover every row).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Every field of each entry, one JSON object per line, nothing cut: for scripts.")] = False,
) -> None:
    """List audit entries readably (run 'audit verify' to know they are genuine), or as JSON lines.

        iae-privacy audit show --principal ana --dataset wages --since 2026-11-01
        iae-privacy audit show --dataset patients --row-id 81234567 --since 2026-11-01   # who saw this record
        iae-privacy audit show --last 0 --json | jq 'select(.outcome == "refused")'
    """
    import datetime
    import json

    start = None
    if since is not None:
        try:
            start = datetime.datetime.fromisoformat(since)
        except ValueError:
            raise IaeError(f"--since {since!r}: expected a date or time such as 2026-11-01 or 2026-11-01T09:30") \
                from None
        start = start if start.tzinfo else start.replace(tzinfo=datetime.timezone.utc)

    def wanted(entry: dict) -> bool:
        if principal is not None and entry.get("principal") != principal:
            return False
        if dataset is not None and entry.get("dataset") != dataset:
            return False
        if token is not None and entry.get("token") != token:
            return False
        if row_id is not None and not (row_id in (entry.get("row_ids") or ()) or entry.get("scope") == "whole"):
            return False
        if start is not None:
            try:
                return datetime.datetime.fromisoformat(str(entry.get("time", ""))) >= start
            except ValueError:
                return False
        return True

    everything = session(ctx).access().audit.entries()
    entries = [entry for entry in everything if wanted(entry)]
    if as_json:
        for entry in entries[-last:] if last else entries:
            typer.echo(json.dumps(entry, sort_keys=True, ensure_ascii=True))
        return
    table = Table(title=f"audit log: {len(entries)} of {len(everything)} entries")
    for heading in ("#", "time (UTC)", "event", "outcome", "who", "dataset", "rows", "what / why"):
        table.add_column(heading, no_wrap=heading in ("#", "time (UTC)"))
    for entry in entries[-last:] if last else entries:
        what = [f"{k}={entry[k]}" for k in ("scope", "columns", "role", "token_column", "key_version")
                if entry.get(k) is not None]
        why = str(entry.get("reason") or entry.get("purpose") or "")
        cells = (str(entry.get("seq")), str(entry.get("time", ""))[:19].replace("T", " "), str(entry.get("event")),
                 str(entry.get("outcome", "")), str(entry.get("principal") or entry.get("operator") or ""),
                 str(entry.get("dataset") or ""),
                 str(entry.get("rows", "")), "; ".join(what + [why] if why else what))
        table.add_row(*(Text(printable(cell)) for cell in cells))  # Text: no markup is interpreted either
    console.print(table)


@audit_app.command("repair")
def audit_repair_command(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a torn last line (an append cut short by a full disk or a crash), and nothing else.

    Refused unless the last line is torn and every other entry passes 'audit verify'. The repair
    itself is recorded in the log. Make room on the disk first."""
    access = session(ctx).access()
    report = access.audit.verify()
    torn = [p for p in report.problems if "is torn" in p]
    if not torn:
        raise IaeError("the audit log has no torn last line: nothing to repair"
                       + (f" (its problems: {report.problems[0]})" if report.problems else ""))
    console.print(printable(torn[0]), highlight=False, markup=False)
    if not yes and not typer.confirm("Remove that torn line?", default=False):
        raise typer.Exit(1)
    removed = access.audit.repair()
    console.print(f"removed the torn last line ({removed} bytes); the repair is recorded in the audit log")
