"""``iae-privacy demo``: the main job, end to end on the bundled samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from iae_privacy.cli.app import app
from iae_privacy.cli.common import (
    REPO_DATA,
    ask_passphrase,
    config_path,
    console,
    flow_progress,
)
from iae_privacy.errors import IaeError

DEMO_PROTECTED = {"cps1988_wages": ["ethnicity"], "health_insurance": ["gender"], "rand_hie": ["female"],
                  "patients": ["sex"]}
"""The column each sample table's model protects in the demo (a sensitive attribute of each)."""
DEMO_TARGETS = {"cps1988_wages": "wage", "health_insurance": "insurance", "rand_hie": "meddol"}
"""The analysis target each sample table's model is trained for (the synthetic patients' columns are
independent: nothing there predicts anything)."""


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
    for each dataset, train and seal a model with one sensitive column protected (iae-train),
    encode the file into an encoded dataset (iae-encode: latent table, sealed vault, signed
    manifest), restore it through a signed admin request (iae-decode), and check that every bit
    came back. Then what an analyst's latent table looks like, a DuckDB query on it, one record
    restored by a least-privilege principal, a request outside its role refused, synthetic
    records, and the audit log verified.
    """
    import pyarrow.parquet as pq

    from iae_privacy.access.control import ADMIN, AccessControl, make_request
    from iae_privacy.arrow.exactness import first_difference
    from iae_privacy.files import write_private
    from iae_privacy.keys.keyring import Keyring
    from iae_privacy.samples import sample_datasets, write_synthetic_patients
    from iae_privacy.workspace import Workspace
    from iae_privacy_flows.decode import run_decode
    from iae_privacy_flows.encode import run_encode
    from iae_privacy_flows.train import train_flow

    datasets = sample_datasets(data_dir)
    if not datasets:
        raise IaeError(f"{data_dir}: no sample Parquet files found")
    workspace = Workspace.at(work)
    if (workspace.keys / "keyring.json").exists():
        keyring = workspace.keyring(ask_passphrase)
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
    for heading in ("dataset", "rows", "feat", "public", "epochs", "R2", "PCA R2", "protected: attack / base",
                    "target: latent / raw", "model", "exact"):
        summary.add_column(heading, justify="left" if heading in ("dataset", "model") else "right")
    failures, encoded_by_name = [], {}
    for name, path in datasets.items():
        console.print(f"[bold]{name}[/]", highlight=False)
        with flow_progress():
            trained = train_flow(data=str(path), model=name, home=home, epochs=epochs,
                                 config=config_path(path, None), seconds=seconds, protect=DEMO_PROTECTED.get(name),
                                 target=DEMO_TARGETS.get(name))
        spec = f"{name}:v{trained.version}"
        encoded, restored = workspace.home / "encoded" / f"{name}-v{trained.version}", \
            workspace.home / "restored" / f"{name}-v{trained.version}.parquet"
        with flow_progress():
            run_encode(str(path), spec, str(encoded), home)
        encoded_by_name[name] = encoded
        request = workspace.home / "requests" / f"{name}-whole.json"
        request.parent.mkdir(exist_ok=True)
        write_private(request, make_request(encoded, ADMIN, admin_key, purpose="demo: whole-dataset check"))
        with flow_progress():
            run_decode(encoded=str(encoded), request=str(request), out=str(restored), home=home)
        difference = first_difference(pq.read_table(path), pq.read_table(restored))
        r2 = sum(max(f.r2, 0.0) for f in trained.features) / max(len(trained.features), 1)
        summary.add_row(name, f"{pq.ParquetFile(restored).metadata.num_rows:,}", str(len(trained.features)),
                        str(trained.public_dims), str(trained.epochs), f"{r2:.2f}",
                        "-" if trained.pca_r2 is None else f"{trained.pca_r2:.2f}",
                        ", ".join(f"{c['column']} {c['known_plaintext_released']:.0%} / {c['baseline']:.0%}"
                                  for c in trained.protection.get("columns", [])) or "-",
                        f"{trained.target['column']} {trained.target['latent']:.2f} / {trained.target['raw']:.2f}"
                        if trained.target else "-", spec,
                        "yes" if difference is None else "NO")
        if difference is not None:
            failures.append(f"{name}: {difference}")
    console.print(summary)
    console.print("feat: network features; public: z_public columns; R2: mean over features of how well "
                  "z_public alone (z_detail at its prior mean) reconstructs each feature's code, clipped at 0; "
                  "PCA R2: the same for a PCA with as many components (unclipped), the bar to clear; protected: "
                  "the column the demo protects, and what an attacker with 1,000 leaked rows gets of it from the "
                  "analysts' latent table, beside the majority baseline (R2 is the exact z_public's; analysts get "
                  "its release, which hides the protected column); target: the column the model is trained for, "
                  "and gradient boosting's held-out score for it (R2 or accuracy) from the analysts' latent table "
                  "and from the other raw columns less the protected one.",
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
    _demo_one_record(access, encoded_by_name["patients"], _a_unique_token(latent.column("email")))
    report = access.audit.verify()
    console.print(f"audit log {workspace.audit_log}: {report.entries} entries, "
                  + ("chain and checkpoint verified" if report.ok else f"PROBLEMS: {report.problems}"), highlight=False)
    if failures:
        raise IaeError("round trip not bit-identical:\n  " + "\n  ".join(failures))
    console.print(f"demo finished: every dataset restored bit for bit; workspace {workspace.home}")


def _a_unique_token(tokens) -> str:
    """A token that stands for exactly one record: the latent rows are in keyed order, so any fixed
    row may hold a null or a shared e-mail, whatever the key."""
    import pyarrow.compute as pc

    counts = pc.value_counts(tokens.drop_null())
    once = counts.filter(pc.equal(counts.field("counts"), 1))
    if len(once) == 0:
        raise IaeError("the demo's patients sample has no e-mail that belongs to one record only")
    return once.field("values")[0].as_py()


def _demo_one_record(access, encoded: Path, token: str) -> None:
    """The common restore: one person's record, found by token, by a least-privilege principal;
    then a request outside that role, refused; then synthetic records, sampled by admin."""
    import json

    import pyarrow.parquet as pq

    from iae_privacy.access.control import AccessRefused, AccessRole, make_request
    from iae_privacy.files import write_private
    from iae_privacy_flows.decode import run_decode

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
    scored = report.get("sdmetrics_beside_baselines", {})
    sdmetrics = "" if "iae-privacy" not in scored else \
        f"; SDMetrics quality score {scored['iae-privacy']['quality_score']:.3f} (a Gaussian copula fitted on " \
        f"half the real records: {scored['gaussian_copula']['quality_score']:.3f})"
    console.print(f"admin sampled {report['rows']:,} synthetic patients ({synthetic}): none equals a real record "
                  f"({report['replaced_for_equalling_a_real_record']} replaced); mean per-column total variation "
                  f"distance to the real data {sum(tvd.values()) / len(tvd):.2f}, largest correlation difference "
                  f"{report['correlation_max_difference']:.2f}{sdmetrics} (details in {synthetic.name}.fidelity.json, "
                  f"pictured in {synthetic.name}.fidelity.png)",
                  highlight=False)
