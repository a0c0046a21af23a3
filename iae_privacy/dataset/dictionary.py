"""The analysts' data dictionary: ``latent/DICTIONARY.md``, written beside the latent parts at each
commit, so that the folder analysts are handed explains itself.

It says what each latent column is, which source columns are not in the table (and why), what
``z_public`` carries about each source column (the train report's per-feature R², aggregates), what
attacks recovered of each protected column, and the declared analysis target's scores. It holds
column names and measured figures only: no value, category label, bucket edge, path or digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iae_privacy.codec import Role
from iae_privacy.dataset.layout import DICTIONARY_NAME

if TYPE_CHECKING:
    from iae_privacy.model.registry import LoadedModel

__all__ = ["DICTIONARY", "dictionary_text"]

DICTIONARY = DICTIONARY_NAME


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _scorer(column: dict):
    """How a protected column's attack figure reads: a share for a category, R² for a number."""
    return _percent if column["kind"] == "category" else (lambda v: f"R² {v:.2f}")


def dictionary_text(dataset: str, loaded: LoadedModel) -> str:
    """The dictionary of an encoded dataset whose parts come from the model ``loaded``."""
    codec, network = loaded.model.codec, loaded.model.network
    k = network.config.public_dims
    training: dict[str, Any] = loaded.training or {}
    protection = training.get("protection") or {}
    released = loaded.model.protection is not None
    steps = codec.config.public_steps
    coarse = (f" (integers, rounded to steps of {', '.join(f'{s:,}' for s in steps)}: about "
              f"2^{codec.config.public_bits} steps across each column)") if steps else ""
    lines = [f"# {dataset}: the latent table", "",
             f"Encoded with model {loaded.header.model}:v{loaded.header.model_version}. One row per source record, "
             "in a keyed pseudorandom order. Written by iae-privacy at each encode; it holds names and measured "
             "figures, never a value.", "", "## Columns", "", "| column | what it is |", "| --- | --- |",
             "| `row_id` | a keyed record id, unrelated to the record's place in its source (`part << 32` plus the "
             "record's keyed pseudorandom position among the part's rows; in datasets of format 2, a keyed "
             "pseudorandom 63-bit number): name rows with it in a restore request |"]
    for spec in codec.columns:
        kind = codec.schema.field(spec.name).type
        if spec.role is Role.PASSTHROUGH:
            lines.append(f"| `{spec.name}` | the source column as it is ({kind}), declared non-sensitive |")
        elif spec.role is Role.IDENTIFIER:
            domain = codec.config.join_domains.get(spec.name)
            shared = f"shared with every column of join domain `{domain}`" if domain else "this dataset's column only"
            lines.append(f"| `{spec.name}` | a 32-hex keyed token of the source value (same value, same token; "
                         f"{shared}); the value is sealed |")
    lines.append(f"| `z_public_0` .. `z_public_{k - 1}` | the public latent: {k} columns computed from the feature "
                 "columns below" + (", released with calibrated noise (floating point, 2 decimals)" if released
                                    else coarse or " (integers)") + "; their order and scale carry no meaning |")
    sealed = [spec.name for spec in codec.columns if spec.role is Role.VAULT]
    if sealed:
        lines += ["", "Not in the table (sealed whole in the vault; restored only through an authorised request): "
                  + ", ".join(f"`{name}`" for name in sealed) + "."]
    lines += ["", "## What z_public carries about each source column", "",
              "How well the source feature's code is rebuilt from z_public alone (R², on the model's validation "
              "rows; 1 = entirely, 0 = nothing beyond its mean). Features: the network's inputs, a column's null "
              "flag (`#null`) apart.", "", "| feature | R² from z_public |", "| --- | ---: |"]
    protected = {c["column"] for c in protection.get("columns", [])}
    features = training.get("features", [])
    for feature in features:
        name = feature["name"]
        note = " (protected: given no weight)" if name.split("#")[0] in protected else \
            " (a proxy of a protected column: given no weight)" if name in protection.get("proxies", []) else ""
        lines.append(f"| `{name}`{note} | {feature['r2']:.2f} |")
    if training.get("pca_r2") is not None and features:
        mean = sum(f["r2"] for f in features) / len(features)
        lines += ["", f"Mean over the features: {mean:.2f}; a PCA with the same {k} components: "
                  f"{training['pca_r2']:.2f}."]
    if protection.get("columns"):
        lines += ["", "## Protected columns", "",
                  "Not in the table in any form. What attacks recovered of each from this table (held-out rows), "
                  "beside always guessing the most common value:", "",
                  "| column | known plaintext, 1,000 leaked rows | zero-leak ranking | baseline | "
                  "known plaintext with the passthrough columns (them alone) | with the identifier tokens too |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for c in protection["columns"]:
            ranking = _percent(c["ranking_released"]) if "ranking_released" in c else "n/a"
            score = _scorer(c)
            beside = (f"{score(c['known_plaintext_released_with_passthrough'])} "
                      f"({score(c['known_plaintext_passthrough'])})") if "known_plaintext_passthrough" in c else "n/a"
            tokens = score(c["known_plaintext_released_with_tokens"]) if "token_rows" in c else "n/a"
            lines.append(f"| `{c['column']}` | {score(c['known_plaintext_released'])} | {ranking} | "
                         f"{score(c['baseline'])} | {beside} | {tokens} |")
        for c in protection["columns"]:
            if "known_plaintext_target" in c:
                score = _scorer(c)
                lines += ["", f"The analysis target `{c['target']}` is a z_public column as it is (you model it). On "
                          f"its own it tells `{c['column']}`: {score(c['known_plaintext_target'])} (known plaintext; "
                          f"baseline {score(c['baseline'])}); the table was calibrated to add little to that."]
    target = training.get("target") or {}
    if target:
        favoured = ", ".join(f"`{name}`" for name in target.get("favoured", [])) or "none"
        lines += ["", "## The analysis target", "",
                  f"The model was trained for analysts modelling `{target['column']}`: gradient boosting predicts it "
                  f"from this table with {target['score']} {target['latent']:.2f}, from the "
                  + ("other " if target.get("in_latent") else "") + f"raw source columns {target['raw']:.2f}"
                  + (" (the target is itself a feature: z_public carries it)" if target.get("in_latent") else "")
                  + f". Given a z_public column of their own: {favoured}."]
    lines += ["", "What an attacker can and cannot learn from this table, and how it was measured: the product's "
              "docs/threat-model.md.", ""]
    return "\n".join(lines)
