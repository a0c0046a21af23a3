"""The ``iae-privacy`` command line.

Every command prints a clear message and exits with status 2 for a mistake the user can fix (a
missing file, a malformed config, schema drift); a traceback means a bug in iae-privacy.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from iae_privacy.codec import CodecConfig, TableCodec
from iae_privacy.model.verify import verify_roundtrip
from iae_privacy.errors import IaeError

__all__ = ["app", "main", "printable"]


def printable(text: str) -> str:
    """``text`` with control characters (and other unprintables) shown as escapes, so that what a
    request's author wrote cannot move the cursor, clear the screen or fake lines on a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)

app = typer.Typer(
    help="iae-privacy: turn sensitive Parquet tables into latent tables analysts can use, "
    "restorable bit for bit only through an audited decode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line, for logs and grep
keys_app = typer.Typer(help="Create, inspect, rotate and retire the keyring under HOME/keys.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
policy_app = typer.Typer(help="Show and change who may restore what (every change is audited).",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")
audit_app = typer.Typer(help="Check and read the audit log of restores, policy changes and key events.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
_state: dict[str, Path | None] = {"home": None}


server_app = typer.Typer(help="A long-lived Prefect server for this workspace, so that commands do not each "
                          "start a temporary one (13-18 s, and it can time out on a busy machine).",
                          no_args_is_help=True)
app.add_typer(server_app, name="server")


@app.callback()
def _main_options(
    home: Annotated[Optional[Path], typer.Option(
        "--home", envvar="IAE_HOME",
        help="Workspace folder holding keys/ and models/ (default: the current folder).")] = None,
) -> None:
    import os

    _state["home"] = home
    if not os.environ.get("PREFECT_API_URL"):  # the workspace's own server, if one runs (before Prefect loads)
        from iae_privacy.server import WorkspaceServer

        running = WorkspaceServer(_workspace().home).state()
        if running is not None:
            os.environ["PREFECT_API_URL"] = running.url


def _workspace():
    from iae_privacy.workspace import Workspace

    return Workspace.at(_state["home"])


def _ask_passphrase() -> str:
    if not sys.stdin.isatty():
        raise IaeError("the master key is passphrase-protected; set IAE_PASSPHRASE")
    return typer.prompt("Passphrase for the master key", hide_input=True)


def _keyring():
    return _workspace().keyring(_ask_passphrase)


def _access():
    from iae_privacy.access.control import AccessControl

    return AccessControl(_workspace(), _keyring())

REPO_DATA = Path(__file__).resolve().parent.parent / "data"

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Dataset config (TOML): role overrides and codec settings. "
                 "Default: NAME.toml beside DATA.parquet, if there is one."),
]


def _config_path(data: Path, config: Path | None) -> str | None:
    """The config to use: the one given, else NAME.toml beside NAME.parquet if there is one."""
    if config is not None:
        return str(config)
    beside = data.with_suffix(".toml")
    return str(beside) if beside.exists() else None


def _config_for(data: Path, config: Path | None) -> CodecConfig:
    path = _config_path(data, config)
    return CodecConfig.load(path) if path else CodecConfig()


def _rows(path: Path) -> int:
    from iae_privacy.codec import parquet_rows

    return parquet_rows(path)


def _bars() -> Progress:
    """Rich bars: what, bar, done/total, unit (a task field), time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"), TimeRemainingColumn(), console=console)


@contextmanager
def progress(description: str, total: int) -> Iterator:
    """A rich progress bar in a terminal; a few plain lines when output goes to a file or CI."""
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
            console.print(f"{description}: {done:,}/{total:,} rows", highlight=False)
            next_report += 0.25

    yield advance


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


@app.command("profile")
def profile_command(
    data: Annotated[Path, typer.Argument(help="A Parquet file.")],
    config: ConfigOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the fitted profile (JSON) here.")] = None,
) -> None:
    """Show how each column of DATA would be treated: its role, why, and its network features.

    Roles: feature (through the network), identifier (keyed token; value sealed in the vault),
    passthrough (declared non-sensitive; copied), vault (a type the network cannot take; sealed whole).
    Override any of them in a config file:  [columns]  region = "passthrough"
    """
    codec = TableCodec.fit(data, _config_for(data, config))
    table = Table(title=f"{data.name}: {len(codec.schema)} columns, fitted on {codec.fit_rows:,} rows")
    for heading in ("column", "type", "role", "why", "features"):
        table.add_column(heading)
    for spec in codec.columns:
        features = "" if spec.feature is None else ", ".join(
            f"{n} [0,{lv})" for n, lv in zip(spec.feature.feature_names, spec.feature.feature_levels))
        table.add_row(spec.name, str(codec.schema.field(spec.name).type), spec.role.value, spec.reason, features)
    console.print(table)
    if out is not None:  # category labels and bucket edges: data, so owner-only like the rest
        from iae_privacy.files import write_private

        write_private(out, codec.to_json().encode())
        console.print(f"profile written to {out} (readable by you only: it holds category labels and "
                      "bucket edges)")


@app.command("roundtrip")
def roundtrip_command(
    data: Annotated[Path, typer.Argument(help="A Parquet file.")],
    config: ConfigOption = None,
    batch_size: Annotated[int, typer.Option(help="Rows per record batch.")] = 65_536,
) -> None:
    """Fit the codec on DATA, then encode and decode every batch, checking the result bit for bit."""
    codec = TableCodec.fit(data, _config_for(data, config))
    with progress(f"round trip {data.name}", _rows(data)) as advance:
        report = verify_roundtrip(data, codec.encode, codec.decode, batch_size, on_batch=advance)
    if not report.exact:
        raise IaeError(f"{data}: round trip is NOT bit-identical at {report.difference}")
    console.print(f"{data.name}: {report.rows:,} rows restored bit-identical "
                  f"(encode {report.rate(report.encode_seconds):,.0f} rows/s, "
                  f"decode {report.rate(report.decode_seconds):,.0f} rows/s)")


@app.command("generate-patients")
def generate_patients_command(
    out: Annotated[Path, typer.Option(help="Parquet file to write.")] = Path("data/patients.parquet"),
    rows: Annotated[int, typer.Option(help="Number of records.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same file.")] = 0,
) -> None:
    """Write the synthetic patients table (names, e-mails, national IDs, diagnoses, money, notes...)."""
    from iae_privacy.samples import write_synthetic_patients

    write_synthetic_patients(out, rows, seed)
    console.print(f"wrote {rows:,} synthetic patients to {out}")


@app.command("demo")
def demo_command(
    data_dir: Annotated[Path, typer.Option("--data", help="Folder of sample Parquet files.")] = REPO_DATA,
    work: Annotated[Path, typer.Option(help="Workspace for what the demo writes.")] = Path("work/demo"),
    patients: Annotated[int, typer.Option(help="Rows of synthetic patients to generate.")] = 100_000,
    epochs: Annotated[int, typer.Option(help="Training epochs per dataset (early stopping may end sooner).")] = 30,
    seconds: Annotated[float, typer.Option(help="Training time limit per dataset.")] = 20.0,
) -> None:
    """The main job, end to end on the bundled samples and a synthetic patients table.

    In the workspace WORK (a keyring is created there on the first run), through the Prefect flows:
    for each dataset, train and seal a model (iae-train), encode the file into an encoded dataset
    (iae-encode: latent table, sealed vault, signed manifest), restore it (iae-decode), and check
    that every bit came back. Shows what an analyst's latent table looks like. (Queries and the
    access-controlled decode join as they land.)
    """
    import pyarrow.parquet as pq

    from flows.decode import run_decode
    from flows.encode import run_encode
    from flows.train import train_flow
    from iae_privacy.access.control import ADMIN, AccessControl, make_request
    from iae_privacy.arrow.exactness import first_difference
    from iae_privacy.files import write_private
    from iae_privacy.keys.keyring import Keyring
    from iae_privacy.samples import sample_datasets, write_synthetic_patients
    from iae_privacy.workspace import Workspace

    datasets = sample_datasets(data_dir)
    if not datasets:
        raise IaeError(f"{data_dir}: no sample Parquet files found")
    workspace = Workspace.at(work)
    if (workspace.keys / "keyring.json").exists():
        keyring = workspace.keyring(_ask_passphrase)
    else:
        keyring = Keyring.init(workspace.keys)
        console.print(f"created a keyring in {workspace.keys}")
    access = AccessControl(workspace, keyring)
    if not access.initialised:
        access.initialise()
        console.print("started the audit log; principal 'admin' may restore everything")
    admin_key = workspace.home / "principals" / "admin.key"
    home = str(workspace.home)
    datasets["patients"] = write_synthetic_patients(workspace.home / "landing" / "patients.parquet", patients, seed=0)
    summary = Table(title="train → seal → encode → decode: every bit back?")
    for heading in ("dataset", "rows", "feat", "public", "epochs", "R2", "PCA R2", "model", "exact"):
        summary.add_column(heading, justify="left" if heading in ("dataset", "model") else "right")
    failures, encoded_by_name = [], {}
    for name, path in datasets.items():
        console.print(f"[bold]{name}[/]", highlight=False)
        with flow_progress():
            trained = train_flow(data=str(path), model=name, home=home, epochs=epochs,
                                 config=_config_path(path, None), seconds=seconds)
        spec = f"{name}:v{trained['version']}"
        encoded, restored = workspace.home / "encoded" / f"{name}-v{trained['version']}", \
            workspace.home / "restored" / f"{name}-v{trained['version']}.parquet"
        with flow_progress():
            run_encode(str(path), spec, str(encoded), home)
        encoded_by_name[name] = encoded
        request = workspace.home / "requests" / f"{name}-whole.json"
        request.parent.mkdir(exist_ok=True)
        write_private(request, make_request(encoded, ADMIN, admin_key, purpose="demo: whole-dataset check"))
        with flow_progress():
            run_decode(encoded=str(encoded), request=str(request), out=str(restored), home=home)
        difference = first_difference(pq.read_table(path), pq.read_table(restored))
        r2 = sum(max(f["r2"], 0.0) for f in trained["features"]) / max(len(trained["features"]), 1)
        summary.add_row(name, f"{pq.ParquetFile(restored).metadata.num_rows:,}", str(len(trained["features"])),
                        str(trained["public_dims"]), str(trained["epochs"]), f"{r2:.2f}",
                        "-" if trained["pca_r2"] is None else f"{trained['pca_r2']:.2f}", spec,
                        "yes" if difference is None else "NO")
        if difference is not None:
            failures.append(f"{name}: {difference}")
    console.print(summary)
    console.print("feat: network features; public: z_public columns; R2: mean over features of how well "
                  "z_public alone (z_detail at its prior mean) reconstructs each feature's code, clipped at 0; "
                  "PCA R2: the same for a PCA with as many components (unclipped), the bar to clear.",
                  highlight=False)
    latent = pq.read_table(encoded_by_name["patients"] / "latent" / "part-00001.parquet")
    peek = Table(title=f"what an analyst gets: patients latent table, {latent.num_columns} columns "
                 "(a few shown; tokens cut short)")
    shown = latent.column_names[:3] + [n for n in latent.column_names if n.startswith("z_public_")][:3]
    for column in shown:
        peek.add_column(column, no_wrap=True)
    for row in latent.select(shown).slice(0, 3).to_pylist():
        peek.add_row(*(v[:10] + "…" if isinstance(v, str) else str(v) for v in row.values()))
    console.print(peek)
    from iae_privacy.analysts.query import query_arrow

    sql = ("SELECT count(*) AS records, count(DISTINCT email) AS distinct_email_tokens, "
           "round(avg(z_public_0), 1) AS mean_z0, round(corr(z_public_0, z_public_1), 3) AS corr_z0_z1 FROM patients")
    answer = query_arrow(sql, {"patients": encoded_by_name["patients"]}).to_pylist()[0]
    console.print(f"an analyst's DuckDB query (latent table only, no key): {sql}\n  → {answer}", highlight=False)
    _demo_one_record(access, encoded_by_name["patients"], latent.column("email")[2].as_py())
    report = access.audit.verify()
    console.print(f"audit log {workspace.audit_log}: {report.entries} entries, "
                  + ("chain and checkpoint verified" if report.ok else f"PROBLEMS: {report.problems}"), highlight=False)
    if failures:
        raise IaeError("round trip not bit-identical:\n  " + "\n  ".join(failures))
    console.print(f"demo finished: every dataset restored bit for bit; workspace {workspace.home}")


def _demo_one_record(access, encoded: Path, token: str) -> None:
    """The common restore: one person's record, found by token, by a least-privilege principal;
    then a request outside that role, refused; then synthetic records, sampled by admin."""
    import json

    import pyarrow.parquet as pq

    from flows.decode import run_decode
    from iae_privacy.access.control import AccessRefused, AccessRole, make_request
    from iae_privacy.files import write_private

    home, folder = access.workspace.home, access.workspace.home / "requests"
    if "clinician" not in access.policy().roles:
        access.set_role("clinician", AccessRole(("patients*",), ("full_name", "email", "diagnosis_code"), 5, False))
    if "demo-clinician" not in access.policy().principals:
        access.add_principal("demo-clinician", "clinician")
    key = home / "principals" / "demo-clinician.key"
    one, refused = folder / "patients-one.json", folder / "patients-national-id.json"
    write_private(one, make_request(encoded, "demo-clinician", key, columns=["full_name", "diagnosis_code"],
                                    where_token=("email", token), purpose="demo: follow-up call", ttl_seconds=600))
    write_private(refused, make_request(encoded, "demo-clinician", key, columns=["national_id"],
                                        where_token=("email", token), purpose="demo: out of role", ttl_seconds=600))
    out = home / "restored" / "patients-one-record.parquet"
    run_decode(encoded=str(encoded), request=str(one), out=str(out), home=str(home))
    console.print(f"demo-clinician (role clinician) restored the record with e-mail token {token[:10]}…: "
                  f"{pq.read_table(out).num_rows} row, columns {pq.read_table(out).column_names}", highlight=False)
    try:
        run_decode(encoded=str(encoded), request=str(refused), out=str(home / "restored" / "refused.parquet"),
                   home=str(home))
        raise IaeError("a request outside the clinician role was granted")
    except AccessRefused as exc:
        console.print(f"and asking for national_id was refused: {exc}", highlight=False)
    synthetic, request = home / "synthetic" / "patients.parquet", folder / "patients-synthetic.json"
    write_private(request, make_request(encoded, "admin", home / "principals" / "admin.key", synthesize=2_000,
                                        purpose="demo: synthetic sample", ttl_seconds=600))
    run_decode(encoded=str(encoded), request=str(request), out=str(synthetic), home=str(home))
    report = json.loads(synthetic.with_name(synthetic.name + ".fidelity.json").read_text())
    tvd = report["total_variation_distance"]
    console.print(f"admin sampled {report['rows']:,} synthetic patients ({synthetic}): none equals a real record "
                  f"({report['replaced_for_equalling_a_real_record']} replaced); mean per-column total variation "
                  f"distance to the real data {sum(tvd.values()) / len(tvd):.2f}, largest correlation difference "
                  f"{report['correlation_max_difference']:.2f} (details in {synthetic.name}.fidelity.json)",
                  highlight=False)


@keys_app.command("init")
def keys_init_command(
    passphrase: Annotated[bool, typer.Option(
        "--passphrase/--no-passphrase",
        help="Wrap the master key with a passphrase (scrypt); asked for, or read from IAE_PASSPHRASE.")] = False,
    admin_key_out: Annotated[Optional[Path], typer.Option(
        help="Where to write the private key of the first principal, 'admin' (default HOME/principals/admin.key).")] = None,
) -> None:
    """Create a keyring (a 256-bit master key, version 1, and a root secret), the audit log, and
    the access policy with a first principal 'admin' whose role may restore everything.

    Set IAE_MASTER_KEY_V1 (base64 of 32 bytes) beforehand to take the master key from the
    environment instead of a key file. In a workspace whose keyring predates access control, this
    adds the audit log, the policy and 'admin' to it.
    """
    from iae_privacy.access.control import AccessControl
    from iae_privacy.keys.keyring import Keyring, env_passphrase

    workspace = _workspace()
    if (workspace.keys / "keyring.json").exists() and not (workspace.keys / "policy.json").exists():
        keyring = workspace.keyring(_ask_passphrase)
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
    name: Annotated[str, typer.Argument(help="The person's name (letters, digits, '_', '.', '@', '-').")],
    role: Annotated[str, typer.Option(help="A role defined in the policy (see 'policy show').")],
    key_out: Annotated[Optional[Path], typer.Option(
        help="Where to write the private key (default HOME/principals/NAME.key).")] = None,
) -> None:
    """Create an Ed25519 key pair for a person who may sign decode requests.

    The private half is written owner-only for that person to keep; the public half goes into the
    policy with the role. The change is audited.
    """
    path = _access().add_principal(name, role, key_out)
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
def keys_status_command(datasets: DatasetsOption = None) -> None:
    """Show the key versions, what each still protects, and warnings (datasets that cannot be found
    are named: what they hold is not counted)."""
    import os

    from iae_privacy.keys.keyring import ENV_MASTER_KEY

    workspace = _workspace()
    keyring = _keyring()
    protected, missing = _protected_by_version(workspace, datasets)
    table = Table(title=f"keyring {keyring.folder}")
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
    console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


@keys_app.command("rotate")
def keys_rotate_command(datasets: DatasetsOption = None) -> None:
    """Add a new key version, make it current, and re-wrap every sealed model bundle and the vault
    parts of every encoded dataset of this workspace under it.

    Encoded data and the latent transform are untouched: only the data keys are re-wrapped.
    Retire the old version afterwards with 'keys retire N'.
    """
    from iae_privacy.keys.keyring import env_passphrase
    from iae_privacy.dataset.store import EncodedDataset

    workspace = _workspace()
    keyring = _keyring()
    _, missing = _protected_by_version(workspace, datasets)
    passphrase = None
    if keyring.version(keyring.current).passphrase:
        passphrase = env_passphrase() or _ask_passphrase()
    number = keyring.rotate(passphrase)
    changed = workspace.models.rewrap_all(keyring)
    parts = sum(EncodedDataset(folder).rewrap_all(keyring) for folder in workspace.datasets())
    _record_key_event(workspace, keyring, "rotated", key_version=number, bundles=changed, vault_parts=parts,
                      missing_datasets=[str(p) for p in missing])
    console.print(f"key version {number} is now current; {changed} model bundle(s) and {parts} vault "
                  "part(s) re-wrapped")
    if missing:
        console.print(f"[yellow]warning:[/] {escape(_missing_hint(missing))}; they were not re-wrapped",
                      highlight=False)


@keys_app.command("retire")
def keys_retire_command(
    version: Annotated[int, typer.Argument(help="The key version to retire.")],
    datasets: DatasetsOption = None,
    force: Annotated[bool, typer.Option(
        help="Retire even if something is, or could be, still sealed under it (it is then lost).")] = False,
) -> None:
    """Retire a key version: its key is deleted, and anything still sealed under it is refused.

    Refused while anything found is still sealed under it, or while a dataset this workspace
    encoded cannot be found (it could need the version): name moved ones with --dataset, forget
    deleted ones with 'keys forget-dataset', or pass --force to accept the loss."""
    workspace = _workspace()
    keyring = _keyring()
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
    folder: Annotated[Path, typer.Argument(help="A registered dataset folder that no longer exists.")],
) -> None:
    """Stop counting a deleted encoded dataset (so that an old key version can be retired). Only a
    folder that no longer exists can be forgotten; the change is audited."""
    workspace = _workspace()
    keyring = _keyring()
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
    name: Annotated[str, typer.Argument(help="The principal to remove.")],
) -> None:
    """Remove a principal from the policy: requests signed with their key are refused from now on
    (a lost or leaked private key, someone who left). The change is audited."""
    _access().remove_principal(name)
    console.print(f"principal {name!r} removed")


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@policy_app.command("show")
def policy_show_command() -> None:
    """List the roles (datasets, columns, row limit, whole-dataset restores) and the principals."""
    policy = _access().policy()
    roles = Table(title="roles")
    for heading in ("role", "datasets", "columns", "max rows per request", "whole dataset"):
        roles.add_column(heading)
    for name, role in sorted(policy.roles.items()):
        roles.add_row(name, ", ".join(role.datasets), ", ".join(role.columns),
                      "no limit" if role.max_rows is None else f"{role.max_rows:,}", "yes" if role.whole_dataset else "no")
    principals = Table(title="principals")
    for heading in ("principal", "role", "added", "public key"):
        principals.add_column(heading)
    for name, principal in sorted(policy.principals.items()):
        principals.add_row(name, principal.role, principal.added, principal.public_key[:16] + "…")
    console.print(roles)
    console.print(principals)


@policy_app.command("set-role")
def policy_set_role_command(
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
    _access().set_role(role, AccessRole(_split(datasets), _split(columns), max_rows, whole_dataset, lifetime))
    console.print(f"role {role!r} set (audited)")


@audit_app.command("verify")
def audit_verify_command() -> None:
    """Check every entry's MAC, the hash chain, the log's end against the checkpoint kept under
    keys/, and that keys/policy.json is the policy the log last recorded (not an older copy put
    back). Says which line is wrong; exits with status 1 if anything is."""
    from iae_privacy.access.control import AccessRefused

    access = _access()
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
    last: Annotated[int, typer.Option(help="How many of the latest entries to show (0: all).")] = 20,
) -> None:
    """List audit entries readably (run 'audit verify' to know they are genuine)."""
    entries = _access().audit.entries()
    table = Table(title=f"audit log: {len(entries)} entries")
    for heading in ("#", "time (UTC)", "event", "outcome", "who", "dataset", "rows", "what / why"):
        table.add_column(heading, no_wrap=heading in ("#", "time (UTC)"))
    for entry in entries[-last:] if last else entries:
        what = [f"{k}={entry[k]}" for k in ("scope", "columns", "role", "token_column", "key_version")
                if entry.get(k) is not None]
        why = str(entry.get("reason") or entry.get("purpose") or "")
        cells = (str(entry.get("seq")), str(entry.get("time", ""))[:19].replace("T", " "), str(entry.get("event")),
                 str(entry.get("outcome", "")), str(entry.get("principal") or ""), str(entry.get("dataset") or ""),
                 str(entry.get("rows", "")), "; ".join(what + [why] if why else what))
        table.add_row(*(Text(printable(cell)) for cell in cells))  # Text: no markup is interpreted either
    console.print(table)


@audit_app.command("repair")
def audit_repair_command(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a torn last line (an append cut short by a full disk or a crash), and nothing else.

    Refused unless the last line is torn and every other entry passes 'audit verify'. The repair
    itself is recorded in the log. Make room on the disk first."""
    access = _access()
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


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="The Parquet file to learn from.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name; each run adds a version.")],
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping may end sooner).")] = 30,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")] = "auto",
    public_dims: Annotated[Optional[int], typer.Option(
        help="Latent columns analysts get (z_public); default half the features.")] = None,
    seconds: Annotated[float, typer.Option(
        help="Training time limit in seconds, honoured within an epoch (the epochs adapt to it).")] = 600.0,
    config: ConfigOption = None,
) -> None:
    """Fit the codec and train the keyed network on DATA, then seal the model as NAME:vN.

    Runs the Prefect flow 'iae-train'. The model must restore its validation rows and the file's
    first rows bit for bit before it is sealed. The report (per-feature reconstruction from
    z_public) is also a Prefect artifact.
    """
    from flows.train import train_flow

    from iae_privacy.network.train import resolve_device

    _rows(data)  # a clear error for a missing or unreadable file, before Prefect starts
    resolve_device(device)  # and for a GPU this machine does not have
    workspace = _workspace()
    workspace.keyring(_ask_passphrase)  # fail early, with the keyring's own message
    with flow_progress():
        result = train_flow(data=str(data), model=model, home=str(workspace.home), epochs=epochs, device=device,
                            public_dims=public_dims, config=_config_path(data, config), seconds=seconds)
    table = Table(title=f"{model}:v{result['version']}: what z_public ({result['public_dims']} columns) "
                  "alone gives back")
    for heading in ("feature", "levels", "exact match", "R2"):
        table.add_column(heading, justify="left" if heading == "feature" else "right")
    for f in result["features"]:
        table.add_row(f["name"], str(f["levels"]), f"{f['exact_match']:.1%}", f"{f['r2']:.2f}")
    console.print(table)
    console.print(f"sealed {model}:v{result['version']} to {result['path']} (device {result['device']}, "
                  f"{result['threads']} thread(s), best epoch {result['best_epoch']} of {result['epochs']}); loss "
                  f"curve {result['loss_curve']}")
    if result["pca_r2"] is not None:
        console.print(f"mean R2 from z_public {result['mean_r2']:.2f}; PCA with the same k on the same rows "
                      f"{result['pca_r2']:.2f}", highlight=False)
    if result["worse_than_pca"]:
        console.print("[yellow]warning:[/] z_public gives the features back worse than PCA would at the same k: "
                      "train longer (--seconds, --epochs) or choose another --public-dims before handing the "
                      "latent table over (see docs/threat-model.md)", highlight=False)


@app.command("encode")
def encode_command(
    source: Annotated[Path, typer.Argument(help="A Parquet file, or a folder of them.")],
    model: Annotated[str, typer.Option("--model", "-m", help="NAME (latest version) or NAME:vN.")],
    out: Annotated[Path, typer.Option(help="The encoded dataset folder (created or extended).")],
    runner: Annotated[str, typer.Option(help="local (threads) or dask (prefect-dask).")] = "local",
    dask_address: Annotated[Optional[str], typer.Option(
        help="Scheduler address of a running Dask cluster; default a temporary local one.")] = None,
) -> None:
    """Encode SOURCE into an encoded dataset: latent/ for analysts, vault/ sealed, manifest.json signed.

    Runs the Prefect flow 'iae-encode'. Sources already encoded with the same model version are
    skipped; a run killed at any point leaves nothing half-written, and the next run finishes the job.
    """
    from flows.encode import run_encode, sources_of

    sources_of(str(source))  # one line naming any file that cannot be encoded, before Prefect starts
    workspace = _workspace()
    workspace.keyring(_ask_passphrase)
    with flow_progress():
        result = run_encode(str(source), model, str(out), str(workspace.home), runner=runner,
                            dask_address=dask_address)
    console.print(f"encoded {result['encoded_rows']:,} rows in {result['encoded_parts']} new part(s), "
                  f"skipped {result['skipped_sources']} source(s) already encoded; {out} now holds "
                  f"{result['parts']} part(s), {result['rows']:,} rows")


@app.command("request")
def request_command(
    encoded: Annotated[Path, typer.Argument(help="The encoded dataset folder.")],
    principal: Annotated[str, typer.Option("--as", help="Your principal name.")],
    out: Annotated[Path, typer.Option(help="The request file to write (REQUEST.json).")],
    key: Annotated[Optional[Path], typer.Option(
        help="Your private key (default HOME/principals/NAME.key).")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated columns (default: all).")] = None,
    rows: Annotated[Optional[str], typer.Option(help="Comma-separated row ids (the latent table's row_id).")] = None,
    where_token: Annotated[Optional[str], typer.Option(
        help="COL=TOKEN: the rows whose identifier column COL has this token (e.g. one person's record).")] = None,
    purpose: Annotated[str, typer.Option(help="Why: recorded in the audit log.")] = "",
    ttl: Annotated[str, typer.Option(help="How long the request stays valid: 90s, 30m, 1h, 7d.")] = "1h",
    synthesize: Annotated[Optional[int], typer.Option(
        help="Ask for this many synthetic records from the dataset's model instead of a restore.")] = None,
) -> None:
    """Write a signed decode request: who, which dataset (by its manifest's hash), which columns and
    rows, why, until when. It works once, through 'iae-privacy decode --request'.

    Without --rows or --where-token the request is for the whole dataset (if your role allows it).
    """
    from iae_privacy.access.control import make_request, parse_ttl

    token = None
    if where_token is not None:
        column, sep, value = where_token.partition("=")
        if not sep or not column or not value:
            raise IaeError(f"--where-token {where_token!r}: expected COL=TOKEN")
        token = (column, value)
    try:
        row_ids = None if rows is None else [int(r) for r in rows.split(",") if r.strip()]
    except ValueError:
        raise IaeError("--rows: expected comma-separated integers (row ids)") from None
    data = make_request(encoded, principal, key or _workspace().home / "principals" / f"{principal}.key",
                        columns=None if columns is None else [c.strip() for c in columns.split(",") if c.strip()],
                        rows=row_ids, where_token=token, purpose=purpose, ttl_seconds=parse_ttl(ttl),
                        synthesize=synthesize)
    from iae_privacy.files import write_private

    write_private(out, data)
    console.print(f"request written to {out}; valid for {ttl}, once")


@app.command("decode")
def decode_command(
    encoded: Annotated[Path, typer.Argument(help="An encoded dataset folder.")],
    request: Annotated[Path, typer.Option(help="A signed request file (from 'iae-privacy request').")],
    out: Annotated[Path, typer.Option(
        help="RESTORED.parquet; a folder for a whole dataset of several parts.")],
) -> None:
    """Restore original records, bit for bit, as a signed request allows.

    Runs the Prefect flow 'iae-decode': checks the request's signature, principal, policy, scope,
    expiry and single use; writes the audit entry (no entry, no restore); only then opens the model
    and the vault, checks the parts against the signed manifest, and restores exactly the permitted
    rows and columns, readable by its owner only. A refusal leaves no output and is audited.
    """
    from flows.decode import run_decode

    if not request.is_file():
        raise IaeError(f"{request}: no such request file")
    workspace = _workspace()
    workspace.keyring(_ask_passphrase)
    with flow_progress():
        result = run_decode(encoded=str(encoded), request=str(request), out=str(out), home=str(workspace.home))
    what = "synthetic records written" if result["synthetic"] else "rows restored"
    console.print(f"{result['restored_rows']:,} {what} to {out} (audit entry {result['audit_entry']})")


@app.command("synthesize")
def synthesize_command(
    encoded: Annotated[Path, typer.Argument(help="An encoded dataset folder: its model is sampled.")],
    request: Annotated[Path, typer.Option(help="A signed synthesis request ('request --synthesize N').")],
    out: Annotated[Path, typer.Option(help="SYNTHETIC.parquet (a fidelity report is written beside it).")],
) -> None:
    """Sample synthetic records from the dataset's model, authorised and audited like a decode.

    Latent rows are drawn from the Gaussian the model recorded at training time and decoded. Any
    synthetic record whose modelled columns equal a real record's is replaced. Identifier,
    passthrough and vault columns are null. OUT.fidelity.json compares synthetic and real columns.

        iae-privacy request encoded/patients --as admin --synthesize 10000 --out synth.json
        iae-privacy synthesize encoded/patients --request synth.json --out synthetic.parquet
    """
    decode_command(encoded, request, out)


@app.command("query")
def query_command(
    sql: Annotated[str, typer.Argument(help="SQL over the datasets' latent tables, each a view by name.")],
    dataset: Annotated[Optional[list[str]], typer.Option(
        help="NAME=ENCODED_DIR, repeatable. Default: every encoded dataset of the workspace, named after "
        "its folder.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the result to FILE.parquet or FILE.csv.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show in the terminal.")] = 20,
) -> None:
    """Query latent tables with DuckDB SQL. No key needed: only latent/ is read, never the vault.

    Each view has row_id, the passthrough columns, identifier tokens (same value, same token:
    joins and counts work) and z_public_0.. columns. Examples:

        iae-privacy query "SELECT sex, count(*) AS n, avg(z_public_0) FROM patients GROUP BY sex"

        iae-privacy query "SELECT email, count(*) AS visits FROM patients GROUP BY email ORDER BY visits DESC LIMIT 5"
    """
    from iae_privacy.analysts.query import query_arrow, view_name, write_result

    datasets: dict[str, str] = {}
    for item in dataset or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise IaeError(f"--dataset {item!r}: expected NAME=ENCODED_DIR")
        datasets[name] = folder
    if not datasets:
        datasets = {view_name(folder): str(folder) for folder in _workspace().datasets()}
    if not datasets:
        raise IaeError("no encoded datasets: give --dataset NAME=ENCODED_DIR (or encode one in this workspace)")
    result = query_arrow(sql, datasets)
    if out is not None:
        write_result(result, out)
        console.print(f"{result.num_rows:,} rows written to {out}")
        return
    table = Table(title=f"{result.num_rows:,} rows" + (f" (first {limit} shown)" if result.num_rows > limit else ""))
    for name in result.column_names:
        table.add_column(name)
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)


@app.command("evaluate")
def evaluate_command(
    data: Annotated[Path, typer.Argument(help="A Parquet file (a sample of it is used).")],
    target: Annotated[str, typer.Option(help="The column analysts would predict (kept as passthrough).")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, evaluation.json and the plots.")] = Path("evaluation"),
    sensitive: Annotated[Optional[str], typer.Option(
        help="Feature column for attribute inference (default: the first categorical one).")] = None,
    qi: Annotated[Optional[str], typer.Option(
        help="Comma-separated quasi-identifier columns (default: the first three features).")] = None,
    ks: Annotated[Optional[str], typer.Option(help="Comma-separated k to sweep (default: about five).")] = None,
    rows: Annotated[int, typer.Option(help="Rows sampled from DATA (60 % train, 40 % attacked).")] = 20_000,
    epochs: Annotated[int, typer.Option(help="Training epochs per k.")] = 5,
    leaked: Annotated[str, typer.Option(help="Comma-separated numbers of leaked rows for the attacks.")] = "10,100,1000",
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="A sealed model (NAME or NAME:vN): the sweep uses its roles and codec settings, "
        "and the model itself is attacked as one more point (needs the keyring).")] = None,
    config: ConfigOption = None,
) -> None:
    """Measure, for each k (z_public columns), what analysts can do with the latent table and what
    attackers recover from it: utility (latent vs raw), known-plaintext inversion with 10, 100 and
    1,000 leaked rows, linkage, quasi-identifier recovery and attribute inference, each beside a
    naive baseline. Runs the Prefect flow 'iae-evaluate' (the report is also an artifact).

        iae-privacy evaluate data/cps1988_wages.parquet --target wage --qi education,experience,ethnicity

        iae-privacy evaluate data/cps1988_wages.parquet --target wage --model wages   # and the sealed wages model
    """
    from flows.evaluate import evaluate_flow

    _rows(data)
    if model is not None:
        _workspace().keyring(_ask_passphrase)
    try:
        k_values = [int(k) for k in ks.split(",")] if ks else None
        leaked_rows = sorted(int(m) for m in leaked.split(","))
    except ValueError:
        raise IaeError("--ks and --leaked: expected comma-separated integers") from None
    result = evaluate_flow(data=str(data), out=str(out), target=target, sensitive=sensitive,
                           quasi_identifiers=list(_split(qi)) if qi else None, ks=k_values, rows=rows,
                           epochs=epochs, leaked=leaked_rows, config=_config_path(data, config) if config or
                           model is None else None, model=model, home=str(_workspace().home))
    table = Table(title=f"{data.name}: utility against attacks (details in {result['report']})")
    for heading in ("k", "utility latent/raw", f"inversion exact ({leaked_rows[-1]:,} leaked)", "linkage"):
        table.add_column(heading, justify="right")
    for p in result["points"]:
        label = str(p["k"]) if p["label"].startswith("k=") else f"{p['k']} ({p['label']})"
        table.add_row(label, f"{p['utility_ratio']:.2f}", f"{p['inversion_exact']:.1%}", f"{p['linkage']:.1%}")
    console.print(table)


@app.command("serve")
def serve_command(
    landing: Annotated[Path, typer.Argument(help="The landing folder new Parquet files arrive in.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (its latest version is used).")],
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

    from flows.serve import build_deployments

    if not os.environ.get("PREFECT_API_URL"):
        raise IaeError("schedules need a Prefect server: run 'iae-privacy server start' (or 'prefect server "
                       "start' and set PREFECT_API_URL)")
    if retrain_cron and retrain_data is None:
        raise IaeError("--retrain-cron needs --retrain-data")
    workspace = _workspace()
    workspace.keyring(_ask_passphrase)
    workspace.models.resolve(model)
    deployments = build_deployments(str(landing), model, str(out), str(workspace.home), cron, retrain_cron,
                                    str(retrain_data) if retrain_data else None)
    serve(*deployments)


@server_app.command("start")
def server_start_command() -> None:
    """Start this workspace's Prefect server in the background (loopback; its database under
    HOME/server/prefect). Later commands in the workspace use it without any setting; the UI shows
    every flow run. Stop it with 'iae-privacy server stop'."""
    from iae_privacy.server import START_SECONDS, WorkspaceServer

    server = WorkspaceServer(_workspace().home)
    if server.running() is None:
        console.print(f"starting the Prefect server (up to {START_SECONDS} s on a busy machine) ...")
    state = server.start()
    console.print(f"Prefect server running for {_workspace().home}: API {state.url}, UI {state.ui} "
                  f"(process {state.pid}, log {server.log})", highlight=False)


@server_app.command("stop")
def server_stop_command() -> None:
    """Stop this workspace's Prefect server (flow runs already recorded stay in its database)."""
    from iae_privacy.server import WorkspaceServer

    stopped = WorkspaceServer(_workspace().home).stop()
    console.print("Prefect server stopped" if stopped else "no Prefect server was running for this workspace")


@server_app.command("status")
def server_status_command() -> None:
    """Show whether this workspace's Prefect server runs, its API address and its UI."""
    from iae_privacy.server import WorkspaceServer

    server = WorkspaceServer(_workspace().home)
    state = server.running()
    if state is None:
        console.print("no Prefect server is running for this workspace: 'iae-privacy server start' starts one "
                      "(without it, each command starts a temporary one)")
        raise typer.Exit(1)
    console.print(f"running since {state.started}: API {state.url}, UI {state.ui} (process {state.pid})",
                  highlight=False)


@app.command("models")
def models_command() -> None:
    """List the sealed models in the workspace (reads headers only: no key needed)."""
    rows = _workspace().models.headers()
    table = Table(title="models")
    for heading in ("model", "version", "sealed", "key version", "file"):
        table.add_column(heading)
    for path, header in rows:
        table.add_row(header.model, f"v{header.model_version}", header.created, f"v{header.key_version}", str(path))
    console.print(table)


def main() -> None:
    import os

    # Prefect's embedded server would phone home; nothing of ours needs it (set before Prefect loads)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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
                           f"'prefect server start' and set PREFECT_API_URL), or give it longer with {PREFECT_STARTUP}"))
        _fail(withheld(exc, "the command"))


PREFECT_STARTUP = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
PREFECT_STARTUP_SECONDS = 180
"""How long a command waits for Prefect's temporary server, unless the user set it."""


def _fail(exc: IaeError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    sys.exit(2)
