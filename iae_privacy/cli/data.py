"""The data commands: profile and round-trip a file, train a model, encode, request and decode,
and list the sealed models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from iae_privacy.cli.app import app
from iae_privacy.cli.common import (
    ConfigOption,
    JsonOption,
    config_for,
    config_path,
    console,
    flow_progress,
    in_flow_worker,
    print_json,
    progress,
    session,
    source_rows,
    split_list,
)
from iae_privacy.codec import TableCodec
from iae_privacy.errors import IaeError
from iae_privacy.model.verify import verify_roundtrip


@app.command("profile")
def profile_command(
    data: Annotated[Path, typer.Argument(help="A Parquet file.")],
    config: ConfigOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the fitted profile (JSON) here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show how each column of DATA would be treated: its role, why, and its network features.

    Roles: feature (through the network), identifier (keyed token; value sealed in the vault),
    passthrough (declared non-sensitive; copied), vault (a type the network cannot take; sealed whole).
    Override any of them in a config file (DATA's name with .toml beside it is read by itself, or
    give --config), for example rand_hie.toml:

        \\[columns]
        zper = "identifier"     # a person number its name does not give away
        region = "passthrough"  # declared non-sensitive: analysts get it as it is
        female = "protected"    # the latent table must not give it away (train --protect)
        \\[codec]
        vault_compression = "entropy"  # before sealing: entropy (default), lz4, zstd, or none (hides lengths)
        public_bits = 8         # z_public rounded to about 2^8 steps a column (default: exact integers)
        \\[analysis]
        target = "meddol"       # what analysts will model (train --target)
    """
    codec = TableCodec.fit(data, config_for(data, config))
    if as_json:  # names, types, roles and reasons only: no category label or bucket edge
        print_json([{"column": spec.name, "type": str(codec.schema.field(spec.name).type), "role": spec.role.value,
                     "why": spec.reason,
                     "features": [] if spec.feature is None else [
                         {"name": n, "levels": lv}
                         for n, lv in zip(spec.feature.feature_names, spec.feature.feature_levels)]}
                    for spec in codec.columns])
        return
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
    codec = TableCodec.fit(data, config_for(data, config))
    with progress(f"round trip {data.name}", source_rows(data)) as advance:
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


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="The Parquet file to learn from.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name; each run adds a version.")],
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping may end sooner).")] = 30,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")] = "auto",
    public_dims: Annotated[Optional[int], typer.Option(
        help="Latent columns analysts get (z_public); default half the features.")] = None,
    seconds: Annotated[float, typer.Option(
        help="Training time limit in seconds, honoured within an epoch (the epochs adapt to it).")] = 600.0,
    config: ConfigOption = None,
    protect: Annotated[Optional[str], typer.Option(
        help="Comma-separated columns the latent table must not give away (with any the config marks "
        "\"protected\"): analysts get z_public released so that these cannot be told apart, and the report "
        "says what attacks still recover.")] = None,
    target: Annotated[Optional[str], typer.Option(
        help="The column analysts will model (or \\[analysis] target in the config): its best predictors get "
        "z_public columns of their own (a target the network models: itself, as it is, even with --protect; the "
        "report says what it tells of each protected column), and the report compares the latent table's score "
        "for it with the raw features'.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the codec and train the keyed network on DATA, then seal the model as NAME:vN.

    Runs the Prefect flow 'iae-train'. The model must restore its validation rows and the file's
    first rows bit for bit before it is sealed. The report (per-feature reconstruction from
    z_public) is also a Prefect artifact.
    """
    from iae_privacy.network.train import resolve_device
    from iae_privacy_flows.train import train_flow

    source_rows(data)  # a clear error for a missing or unreadable file, before Prefect starts
    resolve_device(device)  # and for a GPU this machine does not have
    if protect or target:  # and for a column the file lacks or the config declares otherwise
        import dataclasses

        import pyarrow.parquet as pq

        wanted = split_list(protect) if protect else []
        missing = [c for c in [*wanted, *([target] if target else [])] if c not in pq.read_schema(data).names]
        if missing:
            raise IaeError(f"--protect/--target: {data} has no column(s) {', '.join(map(repr, missing))}")
        declared = config_for(data, config)
        dataclasses.replace(declared, protected=(*declared.protected, *wanted), target=target or declared.target)
    workspace = session(ctx).workspace()
    session(ctx).keyring()  # fail early, with the keyring's own message
    with flow_progress():
        result = train_flow(data=str(data), model=model, home=str(workspace.home), epochs=epochs, device=device,
                            public_dims=public_dims, config=config_path(data, config), seconds=seconds,
                            protect=list(split_list(protect)) if protect else None, target=target)
    if as_json:  # the whole train report: names, counts and measured figures, never a value
        import dataclasses

        print_json(dataclasses.asdict(result))
        return
    table = Table(title=f"{model}:v{result.version}: what z_public ({result.public_dims} columns) "
                  "alone gives back")
    for heading in ("feature", "levels", "exact match", "R2"):
        table.add_column(heading, justify="left" if heading == "feature" else "right")
    for f in result.features:
        table.add_row(f.name, str(f.levels), f"{f.exact_match:.1%}", f"{f.r2:.2f}")
    console.print(table)
    console.print(f"sealed {model}:v{result.version} to {result.path} (device {result.device}, "
                  f"{result.threads} thread(s), best epoch {result.best_epoch} of {result.epochs}); loss "
                  f"curve {result.loss_curve}")
    if result.pca_r2 is not None:
        console.print(f"mean R2 from z_public {result.mean_r2:.2f}; PCA with the same k on the same rows "
                      f"{result.pca_r2:.2f}", highlight=False)
    if result.worse_than_pca:
        console.print("[yellow]warning:[/] z_public gives the features back worse than PCA would at the same k: "
                      "train longer (--seconds, --epochs) or choose another --public-dims before handing the "
                      "latent table over (see docs/threat-model.md)", highlight=False)
    if result.protection:
        from iae_privacy_flows.train import protection_rows

        shown = Table(title="protected columns: what attacks recover (held-out rows; the analysts' latent table "
                      "holds the release)")
        rows = protection_rows(result.protection)
        for heading in rows[0]:
            shown.add_column(heading, justify="left" if heading in ("column", "attack") else "right")
        for row in rows:
            shown.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(shown)
        utility = result.protection["utility"]
        console.print(f"utility cost: gradient boosting reads the other features back from the release with mean "
                      f"R2 {utility['readout_r2_released']:.2f} (from the exact z_public "
                      f"{utility['readout_r2_exact']:.2f}). The per-feature table above is the exact z_public's; "
                      "analysts' latent tables hold the release", highlight=False)
        from iae_privacy_flows.train import protection_warnings

        for warning in protection_warnings(result.protection):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if result.protection.get("proxies"):
            console.print("proxies of the protected columns, given no weight in z_public (they restore from the "
                          f"vault): {', '.join(result.protection['proxies'])}", highlight=False)
    if result.target:
        t = result.target
        console.print(f"analysis target {t['column']}: gradient boosting predicts it from the latent table analysts "
                      f"get with {t['score']} {t['latent']:.3f}, from the raw features (less the protected ones"
                      + (" and the target itself, which z_public carries" if t.get("in_latent") else "")
                      + f") {t['raw']:.3f}; given z_public columns of their own: "
                      f"{', '.join(t['favoured']) or 'none (nothing predicts it well)'}", highlight=False)


@app.command("encode")
def encode_command(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A Parquet file, or a folder of them.")],
    model: Annotated[str, typer.Option("--model", "-m", help=(
        "NAME or NAME:vN. NAME is its latest version for a new --out, and the version an existing --out was "
        "encoded with (a retrain does not break it; use a new --out for the new version)."))],
    out: Annotated[Path, typer.Option(help="The encoded dataset folder (created or extended).")],
    runner: Annotated[str, typer.Option(help="local (threads) or dask (prefect-dask).")] = "local",
    dask_address: Annotated[Optional[str], typer.Option(
        help="Scheduler address of a running Dask cluster; default a temporary local one.")] = None,
    split: Annotated[Optional[int], typer.Option(
        min=1, help="Encode each source of at least N x 65,536 rows as N parts, one task each (Dask workers "
        "sharing one big file); its rows are dealt to them by a keyed draw, and a restore gives the file back "
        "whole. Default: the temporary Dask cluster's 2 workers; 1 otherwise (a part already uses every core "
        "of its machine).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Encode SOURCE into an encoded dataset: latent/ for analysts, vault/ sealed, manifest.json signed.

    Runs the Prefect flow 'iae-encode'. Sources already encoded with the same model version are
    skipped; a run killed at any point leaves nothing half-written, and the next run finishes the job.

        iae-privacy encode landing/ --model wages --out encoded/wages
        iae-privacy encode big.parquet -m wages --out encoded/big --runner dask --dask-address HOST:8786 --split 8
    """
    from iae_privacy_flows.encode import run_encode, sources_of

    sources_of(str(source))  # one line naming any file that cannot be encoded, before Prefect starts
    workspace = session(ctx).workspace()
    session(ctx).keyring()
    with flow_progress():
        result = run_encode(str(source), model, str(out), str(workspace.home), runner=runner,
                            dask_address=dask_address, split=split)
    if as_json:
        import dataclasses

        print_json({"out": str(out), **dataclasses.asdict(result)})
        return
    console.print(f"encoded {result.encoded_rows:,} rows in {result.encoded_parts} new part(s), "
                  f"skipped {result.skipped_sources} source(s) already encoded; {out} now holds "
                  f"{result.parts} part(s), {result.rows:,} rows")


@app.command("request")
def request_command(
    ctx: typer.Context,
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
    where: Annotated[Optional[str], typer.Option(
        help="COLUMN=VALUE, with --synthesize: synthetic records of one group (a category, boolean or passthrough "
        "column, e.g. region=north), fitted on that group's real records; at least 100 of them.")] = None,
) -> None:
    """Write a signed decode request: who, which dataset (and the parts it has now: parts encoded
    later do not invalidate it), which columns and rows, why, until when. It works once, through
    'iae-privacy decode --request'.

    Without --rows or --where-token the request is for the whole dataset (if your role allows it).
    """
    from iae_privacy.access.control import make_request, parse_ttl

    condition = None
    if where is not None:
        column, sep, value = where.partition("=")
        if not sep or not column:
            raise IaeError("--where: expected COLUMN=VALUE")
        if synthesize is None:
            raise IaeError("--where conditions synthetic records: give --synthesize N with it (to restore the rows "
                           "of one person, use --where-token)")
        condition = (column, value)
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
    data = make_request(encoded, principal, key or session(ctx).workspace().home / "principals" / f"{principal}.key",
                        columns=None if columns is None else [c.strip() for c in columns.split(",") if c.strip()],
                        rows=row_ids, where_token=token, purpose=purpose, ttl_seconds=parse_ttl(ttl),
                        synthesize=synthesize, synthesize_where=condition)
    from iae_privacy.files import write_private

    write_private(out, data)
    console.print(f"request written to {out}; valid for {ttl}, once")


@app.command("token")
def token_command(
    ctx: typer.Context,
    encoded: Annotated[Path, typer.Argument(help="The encoded dataset folder.")],
    column: Annotated[str, typer.Argument(help="An identifier column of the dataset (e.g. email).")],
    value: Annotated[str, typer.Argument(
        help="The value whose token you want, as text; - reads it from standard input (out of shell history).")],
    as_json: JsonOption = False,
) -> None:
    """The token of a known value (an e-mail, a patient id) in an identifier column, and the row ids
    that hold it: what the latent table, decode requests and the audit log use instead of the value.
    Needs the keyring; audited (the token and a row count, never the value).

        iae-privacy token encoded/patients email - < known-address.txt
        iae-privacy audit show --token TOKEN        # who restored that person's record, by token
        iae-privacy audit show --row-id ROW_ID      # ... or by row id, whole-dataset restores included
    """
    import sys

    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise IaeError("no value given (an empty argument, or nothing on standard input)")
    token, ids = session(ctx).access().look_up_token(encoded, column, value)
    if as_json:
        print_json({"column": column, "token": token, "row_ids": [int(i) for i in ids]})
        return
    console.print(f"token {token} ({column}); {len(ids)} row(s): "
                  + (", ".join(str(int(i)) for i in ids) or "none in this dataset"), highlight=False, soft_wrap=True)


@app.command("decode")
def decode_command(
    ctx: typer.Context,
    encoded: Annotated[Path, typer.Argument(help="An encoded dataset folder.")],
    request: Annotated[Path, typer.Option(help="A signed request file (from 'iae-privacy request').")],
    out: Annotated[Path, typer.Option(
        help="RESTORED.parquet; a folder for a whole dataset of several parts.")],
    with_row_id: Annotated[bool, typer.Option(
        "--with-row-id", help="Add each row's row_id (as in the latent table) as a last column, to match the "
        "rows to a request; one .parquet file. Without it the restore is the source, bit for bit.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore original records, bit for bit, as a signed request allows.

    Runs the Prefect flow 'iae-decode': checks the request's signature, principal, policy, scope,
    expiry and single use; writes the audit entry (no entry, no restore); only then opens the model
    and the vault, checks the parts against the signed manifest, and restores exactly the permitted
    rows and columns, readable by its owner only. A refusal leaves no output and is audited.
    """
    if not request.is_file():
        raise IaeError(f"{request}: no such request file")
    workspace = session(ctx).workspace()
    session(ctx).keyring()
    with flow_progress():
        # the workspace's flow worker, when one runs: Prefect and the flows are imported there already
        result = in_flow_worker(ctx, "decode", {"encoded": str(encoded.resolve()), "request": str(request.resolve()),
                                                "out": str(out.resolve()), "with_row_id": with_row_id})
        if result is None:
            from dataclasses import asdict

            from iae_privacy_flows.decode import run_decode

            result = asdict(run_decode(encoded=str(encoded), request=str(request), out=str(out),
                                       home=str(workspace.home), with_row_id=with_row_id))
    rows, audit_entry, synthetic = int(result["restored_rows"]), int(result["audit_entry"]), bool(result["synthetic"])
    if as_json:
        print_json({"out": str(out), "rows": rows, "audit_entry": audit_entry, "synthetic": synthetic})
        return
    what = "synthetic records written" if synthetic else "rows restored"
    console.print(f"{rows:,} {what} to {out} (audit entry {audit_entry})")
    if synthetic:
        import json

        from iae_privacy.analysts.synthesize import report_paths

        report = json.loads(report_paths(out)[0].read_text())
        compared, scored = report.get("beside_baselines", {}), report.get("sdmetrics_beside_baselines", {})
        if compared:
            console.print("mean total variation distance to real records (lower is closer): "
                          + ", ".join(f"{name} {figures['mean_total_variation_distance']:.4f}"
                                      for name, figures in compared.items())
                          + f" (details: {out}.fidelity.json, pictured in {out}.fidelity.png)", highlight=False)
        if scored and "skipped" not in scored:
            console.print("SDMetrics quality score (higher is closer): "
                          + ", ".join(f"{name} {scored[name]['quality_score']:.3f}"
                                      for name in ("iae-privacy", "gaussian_copula", "independent_marginals")),
                          highlight=False)


@app.command("models")
def models_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the sealed models in the workspace (reads headers only: no key needed)."""
    rows = session(ctx).workspace().models.headers()
    if as_json:
        print_json([{"model": h.model, "version": h.model_version, "sealed": h.created, "key_version": h.key_version,
                     "file": str(path)} for path, h in rows])
        return
    table = Table(title="models")
    for heading in ("model", "version", "sealed", "key version", "file"):
        table.add_column(heading)
    for path, header in rows:
        table.add_row(header.model, f"v{header.model_version}", header.created, f"v{header.key_version}", str(path))
    console.print(table)


@app.command("check")
def check_command(
    ctx: typer.Context,
    encoded: Annotated[Path, typer.Argument(help="An encoded dataset folder (the --out of encode).")],
    as_json: JsonOption = False,
) -> None:
    """Verify an encoded dataset without restoring anything: the manifest's signature, every part's
    hashes, each vault part's header, every vault segment's authentication, the batches and rows
    against the manifest, and no file in latent/ or vault/ that the manifest does not list. Needs
    the keyring; writes and removes nothing. Exit status 0 when all is well, 1 when something fails
    (each problem named, by part), 2 for an error such as a folder that is no encoded dataset.

        iae-privacy check encoded/patients      # after an encode, from a schedule, before a handover
    """
    from iae_privacy.dataset.store import EncodedDataset

    keyring = session(ctx).keyring()
    dataset = EncodedDataset(encoded)
    parts = dataset.read_manifest(keyring).parts  # what the bar counts; check reads and verifies it again
    total = sum(p.rows for p in parts)
    with progress(f"checking {encoded}", max(total, 1)) as advance:
        problems = dataset.check(keyring, lambda record: advance(record.rows))
    if as_json:
        print_json({"dataset": str(encoded), "parts": len(parts), "rows": total, "ok": not problems,
                    "problems": problems})
        if problems:
            raise typer.Exit(1)
        return
    for problem in problems:
        console.print(problem, style="red", highlight=False, soft_wrap=True)
    if problems:
        console.print(f"{encoded}: {len(problems)} problem(s) found; do not hand it over or restore from it "
                      "before they are understood", highlight=False)
        raise typer.Exit(1)
    console.print(f"{encoded}: manifest signature, {len(parts)} part(s) and {total:,} rows verified "
                  "(hashes, vault headers, every vault segment)", highlight=False, soft_wrap=True)
