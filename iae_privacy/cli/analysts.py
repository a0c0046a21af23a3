"""The analysts' commands: synthetic records, SQL over latent tables, and the privacy evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from iae_privacy.cli.app import app
from iae_privacy.cli.common import (
    ConfigOption,
    ask_passphrase,
    config_path,
    console,
    session,
    source_rows,
    split_list,
)
from iae_privacy.cli.data import decode_command
from iae_privacy.errors import IaeError


@app.command("synthesize")
def synthesize_command(
    ctx: typer.Context,
    encoded: Annotated[Path, typer.Argument(help="An encoded dataset folder: its model is sampled.")],
    request: Annotated[Path, typer.Option(help="A signed synthesis request ('request --synthesize N').")],
    out: Annotated[Path, typer.Option(help="SYNTHETIC.parquet (a fidelity report is written beside it).")],
) -> None:
    """Sample synthetic records from the dataset's model, authorised and audited like a decode.

    A Gaussian mixture is fitted over the latent of the real records, drawn from and decoded
    exactly by the network; categories are brought to their real shares, pairs of related columns
    to their real joint shares and numbers to their real distributions, and a target declared at
    training (train --target) is drawn given the other columns (docs/synthesis.md). Any
    synthetic record whose modelled columns equal a real record's is replaced. Identifier,
    passthrough and vault columns are null, except a passthrough column the request conditions
    on. OUT.fidelity.json compares synthetic and real columns, beside a Gaussian copula and
    independent marginals; OUT.fidelity.png draws those scores.

        iae-privacy request encoded/patients --as admin --synthesize 10000 --out synth.json
        iae-privacy synthesize encoded/patients --request synth.json --out synthetic.parquet

    Records of one group (a category, boolean or passthrough column; the group's real records
    alone are fitted, and at least 100 must have the value):

        iae-privacy request encoded/patients --as admin --synthesize 2000 --where sex=F --out f.json
    """
    decode_command(ctx, encoded, request, out)


@app.command("query")
def query_command(
    ctx: typer.Context,
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
        datasets = {view_name(folder): str(folder) for folder in session(ctx).workspace().datasets()}
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
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A Parquet file (a sample of it is used).")],
    target: Annotated[str, typer.Option(help="The column analysts would predict (kept as passthrough).")],
    out: Annotated[Path, typer.Option(
        help="Folder for report.md, evaluation.json and the plots.")] = Path("evaluation"),
    sensitive: Annotated[Optional[str], typer.Option(
        help="Feature column for attribute inference (default: the first categorical one).")] = None,
    qi: Annotated[Optional[str], typer.Option(
        help="Comma-separated quasi-identifier columns (default: the first three features).")] = None,
    ks: Annotated[Optional[str], typer.Option(help="Comma-separated k to sweep (default: about five).")] = None,
    rows: Annotated[int, typer.Option(help="Rows sampled from DATA (60 % train, 40 % attacked).")] = 20_000,
    epochs: Annotated[int, typer.Option(
        help="Training epochs per k. 0 (the default) is enough: training changes z_detail only, so z_public "
        "is what `train` would seal from these rows.")] = 0,
    leaked: Annotated[str, typer.Option(
        help="Comma-separated numbers of leaked rows for the attacks.")] = "10,100,1000",
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="A sealed model (NAME or NAME:vN): the sweep uses its roles and codec settings, "
        "and the model itself is attacked as one more point (needs the keyring).")] = None,
    declare_target: Annotated[bool, typer.Option(
        help="Train the sweep's models with --target declared as their analysis target, as 'train --target' "
        "does (its best predictors get public columns of their own); --no-declare-target: as plain 'train'.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Measure, for each k (z_public columns), what analysts can do with the latent table and what
    attackers recover from it: utility (latent vs raw), known-plaintext inversion with 10, 100 and
    1,000 leaked rows, linkage both ways, quasi-identifier recovery, attribute inference, the twin
    lookup and the zero-leak ranking attack, each beside a naive baseline; and all of it again for
    PCA-k and a plain autoencoder-k fitted on the same rows (where z_public stands between "give
    them nothing" and "give them PCA"). Runs the Prefect flow 'iae-evaluate' (the report is also an
    artifact).

        iae-privacy evaluate data/cps1988_wages.parquet --target wage --qi education,experience,ethnicity

        iae-privacy evaluate data/cps1988_wages.parquet --target wage --model wages   # and the sealed wages model
    """
    from iae_privacy_flows.evaluate import evaluate_flow

    source_rows(data)
    if model is not None:
        session(ctx).workspace().keyring(ask_passphrase)
    try:
        k_values = [int(k) for k in ks.split(",")] if ks else None
        leaked_rows = sorted(int(m) for m in leaked.split(","))
    except ValueError:
        raise IaeError("--ks and --leaked: expected comma-separated integers") from None
    result = evaluate_flow(data=str(data), out=str(out), target=target, sensitive=sensitive,
                           quasi_identifiers=list(split_list(qi)) if qi else None, ks=k_values, rows=rows,
                           epochs=epochs, leaked=leaked_rows, config=config_path(data, config) if config or
                           model is None else None, model=model, home=str(session(ctx).workspace().home),
                           declare_target=declare_target)
    table = Table(title=f"{data.name}: utility against attacks (details in {result.report})")
    for heading in ("k", "utility latent/raw", f"inversion exact ({leaked_rows[-1]:,} leaked)", "linkage"):
        table.add_column(heading, justify="right")
    for p in result.points:
        label = str(p.k) if p.label.startswith("k=") else f"{p.k} ({p.label})"
        table.add_row(label, f"{p.utility_ratio:.2f}", f"{p.inversion_exact:.1%}", f"{p.linkage:.1%}")
    console.print(table)
