"""A synthetic "patients" table with the columns a real sensitive dataset has.

Seeded and reproducible: the same ``rows`` and ``seed`` give the same bytes. Every value is made
up; names and places are drawn from short lists (with non-ASCII spellings on purpose).
Generation is vectorised, so a million rows take a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iae_privacy.files import atomic_file

__all__ = ["synthetic_patients", "write_synthetic_patients", "sample_datasets"]

_FIRST = ["Anna", "José", "Zoë", "Łukasz", "Mia", "Noah", "Aiko", "Olumide", "Søren", "Fatima",
          "Chloé", "Mateo", "Priya", "Björn", "Ines", "Yusuf", "Émile", "Hana", "Liam", "Dvořák"]
_LAST = ["Smith", "García", "Müller", "Kowalski", "Nguyen", "O'Brien", "Rossi", "Sørensen",
         "Okafor", "Tanaka", "Dubois", "Kim", "Ivanović", "Papadopoulos", "Silva", "李", "Öztürk"]
_DOMAINS = ["example.org", "mail.test", "post.example", "correo.example"]
_DIAGNOSES = ["E11.9", "I10", "J45.909", "M54.5", "F32.9", "K21.9", "N39.0", "J06.9", "R51",
              "E78.5", "G43.909", "L40.0", "C50.911", "I25.10", "Z00.00", "S93.401A"]
_NOTE_OPENERS = ["Patient reports", "Follow-up for", "Referred with", "Seen today for",
                 "Telephone consult:", "Résumé:"]
_NOTE_FINDINGS = ["persistent cough", "lower back pain", "elevated blood pressure", "fatigue",
                  "headache ≥ 3 days", "rash on forearm", "dizziness", "chest tightness"]
_NOTE_PLANS = ["review in 2 weeks.", "bloods ordered.", "no change to medication.",
               "referred to specialist.", "advised rest; return if worse.", "🩺 recheck vitals."]


def _pick(rng: np.random.Generator, choices: list[str], n: int) -> pa.Array:
    return pa.array(choices).take(pa.array(rng.integers(0, len(choices), n)))


def _digits(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    values = rng.integers(0, 10**width, n)
    return pc.utf8_lpad(pa.array(values).cast(pa.string()), width, "0")


def _with_nulls(rng: np.random.Generator, array: pa.Array, fraction: float) -> pa.Array:
    missing = rng.random(len(array)) < fraction
    return pc.if_else(pa.array(missing), pa.nulls(len(array), array.type), array)


def synthetic_patients(rows: int, seed: int = 0) -> pa.Table:
    """A reproducible synthetic patients table of ``rows`` records."""
    rng = np.random.default_rng(seed)
    n = rows
    first, last = _pick(rng, _FIRST, n), _pick(rng, _LAST, n)
    serial = pa.array(np.arange(n, dtype=np.int64)).cast(pa.string())
    email = pc.binary_join_element_wise(
        pc.utf8_lower(first), ".", pc.utf8_lower(pc.replace_substring(last, "'", "")), serial, "@",
        _pick(rng, _DOMAINS, n), "")
    national_id = pc.binary_join_element_wise(
        _digits(rng, n, 3), _digits(rng, n, 2), _digits(rng, n, 4), "-")
    birth_days = rng.integers(-25_000, 18_000, n)  # days since 1970: 1901 to 2019
    admitted_ns = (1_600_000_000 + rng.integers(0, 150_000_000, n)) * 1_000_000_000 + rng.integers(0, 10**9, n)
    amount_cents = np.round(rng.lognormal(8.5, 1.2, n) * 100).astype(np.int64)
    copay = np.round(rng.gamma(2.0, 15.0, n), 2)
    diagnosis = rng.integers(0, len(_DIAGNOSES), n)
    notes = pc.binary_join_element_wise(
        _pick(rng, _NOTE_OPENERS, n), _pick(rng, _NOTE_FINDINGS, n), _pick(rng, _NOTE_PLANS, n), " ")
    # money with cents: a decimal128(12, 2) whose unscaled value is the amount in cents
    billed_amount = pa.Array.from_buffers(
        pa.decimal128(12, 2), n,
        [None, pa.py_buffer(np.stack([amount_cents, amount_cents >> 63], axis=1).ravel())])
    columns = {
        "patient_id": pc.binary_join_element_wise("P", _digits(rng, n, 9), "-"),
        "full_name": pc.binary_join_element_wise(first, last, " "),
        "email": _with_nulls(rng, email, 0.05),
        "national_id": national_id,
        "birth_date": pa.array(birth_days.astype(np.int32), type=pa.date32()),
        "postcode": _digits(rng, n, 5),
        "sex": _with_nulls(rng, _pick(rng, ["F", "M", "X"], n), 0.02),
        "diagnosis_code": pa.DictionaryArray.from_arrays(
            pa.array(diagnosis.astype(np.int32)), pa.array(_DIAGNOSES)),
        "admitted_at": pa.array(admitted_ns, type=pa.timestamp("ns", tz="Europe/Paris")),
        "length_of_stay": pa.array(rng.integers(3_600, 30 * 86_400, n), type=pa.duration("s")),
        "billed_amount": billed_amount,
        "copay": _with_nulls(rng, pa.array(copay), 0.1),
        "weight_kg": _with_nulls(rng, pa.array(rng.normal(75, 15, n).astype(np.float32)), 0.08),
        "smoker": _with_nulls(rng, pa.array(rng.random(n) < 0.2), 0.05),
        "insured": pa.array(rng.random(n) < 0.85),
        "visits": pa.array(rng.poisson(3, n).astype(np.int16)),
        "notes": _with_nulls(rng, notes, 0.3),
    }
    metadata = {"source": "iae-privacy synthetic patients", "seed": str(seed), "rows": str(rows)}
    return pa.table(columns).replace_schema_metadata(metadata)


def write_synthetic_patients(path: str | Path, rows: int, seed: int = 0,
                             row_group_size: int = 100_000) -> Path:
    """Write the synthetic table to Parquet, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as sink:
        pq.write_table(synthetic_patients(rows, seed), sink, row_group_size=row_group_size)
    return path


def sample_datasets(data_dir: str | Path) -> dict[str, Path]:
    """The bundled real sample tables, by name."""
    data_dir = Path(data_dir)
    return {p.stem: p for p in sorted(data_dir.glob("*.parquet")) if not p.stem.startswith("patients")}
