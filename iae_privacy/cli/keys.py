"""``iae-privacy keys``: the keyring's versions and what each protects, and the principals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from iae_privacy.cli.app import keys_app
from iae_privacy.cli.common import (
    JsonOption,
    ask_passphrase,
    console,
    err_console,
    print_json,
    session,
)
from iae_privacy.errors import IaeError


@keys_app.command("init")
def keys_init_command(
    ctx: typer.Context,
    passphrase: Annotated[bool, typer.Option(
        "--passphrase/--no-passphrase",
        help="Wrap the master key with a passphrase (scrypt); asked for, or read from IAE_PASSPHRASE.")] = False,
    admin_key_out: Annotated[Optional[Path], typer.Option(
        help="Where to write the private key of the first principal, 'admin' "
        "(default HOME/principals/admin.key).")] = None,
) -> None:
    """Create a keyring (a 256-bit master key, version 1, and a root secret), the audit log, and
    the access policy with a first principal 'admin' whose role may restore everything.

    Set IAE_MASTER_KEY_V1 (base64 of 32 bytes) beforehand to take the master key from the
    environment instead of a key file. In a workspace whose keyring predates access control, this
    adds the audit log, the policy and 'admin' to it.
    """
    from iae_privacy.access.control import AccessControl
    from iae_privacy.keys.keyring import Keyring, env_passphrase

    workspace = session(ctx).workspace()
    if (workspace.keys / "keyring.json").exists() and not (workspace.keys / "policy.json").exists():
        keyring = session(ctx).keyring()
        console.print(f"keyring {keyring.folder} exists; adding the audit log and the access policy")
    else:
        secret = None
        if passphrase:
            secret = env_passphrase() or typer.prompt(
                "Passphrase for the new master key", hide_input=True, confirmation_prompt=True)
        keyring = Keyring.init(workspace.keys, secret)
        console.print(f"keyring created in {keyring.folder} (key version {keyring.current}); "
                      "keep a backup of this folder: without it nothing sealed can be opened")
    admin_key = AccessControl(workspace, keyring).initialise(admin_key_out)
    console.print(f"audit log started at {workspace.audit_log}; principal 'admin' (may restore everything): "
                  f"private key {admin_key}. Hand it to its owner and keep no other copy.")


@keys_app.command("add-principal")
def keys_add_principal_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The person's name (letters, digits, '_', '.', '@', '-').")],
    role: Annotated[str, typer.Option(help="A role defined in the policy (see 'policy show').")],
    key_out: Annotated[Optional[Path], typer.Option(
        help="Where to write the private key (default HOME/principals/NAME.key).")] = None,
) -> None:
    """Create an Ed25519 key pair for a person who may sign decode requests.

    The private half is written owner-only for that person to keep; the public half goes into the
    policy with the role. The change is audited.
    """
    path = session(ctx).access().add_principal(name, role, key_out)
    console.print(f"principal {name!r} (role {role!r}) added; private key {path}. Hand it to its owner "
                  "and keep no other copy.")


DatasetsOption = Annotated[Optional[list[Path]], typer.Option(
    "--dataset", help="An encoded dataset folder this workspace made that is no longer where it was "
    "encoded (moved or copied): it is registered here and counted. Repeatable.")]


def _protected_by_version(workspace, extra: list[Path] | None = None) -> tuple[dict[int, int], list[Path]]:
    """Sealed files (model bundles and vault parts) per key version, and the registered dataset
    folders that could not be found (whatever they hold is not counted)."""
    from iae_privacy.dataset.store import EncodedDataset

    for folder in extra or []:
        EncodedDataset(folder).manifest_identity()  # refuses a folder that is not an encoded dataset
        workspace.register_dataset(folder)
    counts: dict[int, int] = {}
    for _, header in workspace.models.headers():
        counts[header.key_version] = counts.get(header.key_version, 0) + 1
    for folder in workspace.datasets():
        for version, n in EncodedDataset(folder).vault_key_versions().items():
            counts[version] = counts.get(version, 0) + n
    return counts, workspace.missing_datasets()


def _missing_hint(missing: list[Path]) -> str:
    return (f"{len(missing)} registered dataset folder(s) cannot be found: {', '.join(map(str, missing))}. "
            "If one moved, name its new place with --dataset NEW; if it was deleted, "
            "'iae-privacy keys forget-dataset OLD'")


@keys_app.command("status")
def keys_status_command(ctx: typer.Context, datasets: DatasetsOption = None, as_json: JsonOption = False) -> None:
    """Show the key versions, what each still protects, and warnings (datasets that cannot be found
    are named: what they hold is not counted)."""
    import os

    from iae_privacy.keys.keyring import ENV_MASTER_KEY

    workspace = session(ctx).workspace()
    keyring = session(ctx).keyring()
    protected, missing = _protected_by_version(workspace, datasets)
    table = Table(title="key versions")
    for heading in ("version", "status", "created", "source", "passphrase", "protects"):
        table.add_column(heading)
    warnings = [_missing_hint(missing)] if missing else []
    for v in keyring.versions:
        count = protected.get(v.number, 0)
        source = "environment" if os.environ.get(ENV_MASTER_KEY.format(version=v.number)) else "file"
        status = v.status + (" (current)" if v.number == keyring.current else "")
        table.add_row(f"v{v.number}", status, v.created, "-" if v.status == "retired" else source,
                      "yes" if v.passphrase else "no", f"{count} sealed file(s)" + (" found" if missing else ""))
        if v.status == "retired" and count:
            warnings.append(f"{count} sealed file(s) are under retired key version {v.number} "
                            "and can no longer be opened")
        elif v.number != keyring.current and count:
            warnings.append(f"{count} sealed file(s) are still under key version {v.number}; "
                            "'keys rotate' re-wraps everything under a new current version")
    if as_json:
        print_json({"keyring": str(keyring.folder), "current": keyring.current, "warnings": warnings,
                    "versions": [{"version": v.number, "status": v.status, "created": v.created,
                                  "passphrase": bool(v.passphrase), "sealed_files": protected.get(v.number, 0)}
                                 for v in keyring.versions]})
        return
    console.print(f"keyring {keyring.folder}", soft_wrap=True, highlight=False)  # a title wraps with the table
    console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


@keys_app.command("rotate")
def keys_rotate_command(ctx: typer.Context, datasets: DatasetsOption = None) -> None:
    """Add a new key version, make it current, and re-wrap every sealed model bundle and the vault
    parts of every encoded dataset of this workspace under it.

    Encoded data and the latent transform are untouched: only the data keys are re-wrapped.
    Retire the old version afterwards with 'keys retire N'.
    """
    from iae_privacy.dataset.store import EncodedDataset
    from iae_privacy.keys.keyring import env_passphrase

    workspace = session(ctx).workspace()
    keyring = session(ctx).keyring()
    _, missing = _protected_by_version(workspace, datasets)
    passphrase = None
    if keyring.version(keyring.current).passphrase:
        passphrase = env_passphrase() or ask_passphrase()
    number = keyring.rotate(passphrase)
    changed = workspace.models.rewrap_all(keyring)
    parts = 0
    for folder in workspace.datasets():
        dataset = EncodedDataset(folder)
        with dataset.exclusive(lambda at=folder: console.print(f"waiting for the encode writing {at} to finish")):
            parts += dataset.rewrap_all(keyring)
    _record_key_event(workspace, keyring, "rotated", key_version=number, bundles=changed, vault_parts=parts,
                      missing_datasets=[str(p) for p in missing])
    console.print(f"key version {number} is now current; {changed} model bundle(s) and {parts} vault "
                  "part(s) re-wrapped")
    if missing:
        console.print(f"[yellow]warning:[/] {escape(_missing_hint(missing))}; they were not re-wrapped",
                      highlight=False)


@keys_app.command("retire")
def keys_retire_command(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="The key version to retire.")],
    datasets: DatasetsOption = None,
    force: Annotated[bool, typer.Option(
        help="Retire even if something is, or could be, still sealed under it (it is then lost).")] = False,
) -> None:
    """Retire a key version: its key is deleted, and anything still sealed under it is refused.

    Refused while anything found is still sealed under it, or while a dataset this workspace
    encoded cannot be found (it could need the version): name moved ones with --dataset, forget
    deleted ones with 'keys forget-dataset', or pass --force to accept the loss."""
    workspace = session(ctx).workspace()
    keyring = session(ctx).keyring()
    if version == keyring.current or keyring.version(version).status == "retired":
        keyring.retire(version)  # refuses, saying why
    protected, missing = _protected_by_version(workspace, datasets)
    count = protected.get(version, 0)
    if (count or missing) and not force:
        why = [f"{count} sealed file(s) (model bundles, vault parts) are still under key version {version}; run "
               "'iae-privacy keys rotate' first to re-wrap them"] if count else []
        raise IaeError("; ".join(why + ([_missing_hint(missing)] if missing else []))
                       + "; or pass --force to retire it anyway and lose what it protects")
    if count or missing:
        err_console.print(f"[bold yellow]warning:[/] retiring key version {version} by force: {count} sealed "
                          f"file(s) found under it and {len(missing)} dataset folder(s) not found can no longer "
                          "be opened if they need it", highlight=False)
    keyring.retire(version)
    _record_key_event(workspace, keyring, "retired", key_version=version, forced=bool(count or missing),
                      lost_files=count, missing_datasets=[str(p) for p in missing])
    console.print(f"key version {version} retired")


@keys_app.command("forget-dataset")
def keys_forget_dataset_command(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A registered dataset folder that no longer exists.")],
) -> None:
    """Stop counting a deleted encoded dataset (so that an old key version can be retired). Only a
    folder that no longer exists can be forgotten; the change is audited."""
    workspace = session(ctx).workspace()
    keyring = session(ctx).keyring()
    workspace.forget_dataset(folder)
    _record_key_event(workspace, keyring, "dataset-forgotten", folder=str(folder))
    console.print(f"{folder} is no longer counted")


def _record_key_event(workspace, keyring, change: str, **details) -> None:
    from iae_privacy.access.control import AccessControl

    access = AccessControl(workspace, keyring)
    if not access.initialised:
        console.print("[yellow]warning:[/] this workspace has no audit log yet, so this key event is not "
                      "recorded; start one with 'iae-privacy keys init'", highlight=False)
        return
    access.record_key_event(change, **details)


@keys_app.command("remove-principal")
def keys_remove_principal_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The principal to remove.")],
) -> None:
    """Remove a principal from the policy: requests signed with their key are refused from now on
    (a lost or leaked private key, someone who left). The change is audited."""
    session(ctx).access().remove_principal(name)
    console.print(f"principal {name!r} removed")
