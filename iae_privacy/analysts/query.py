"""Analysts' SQL over latent tables: DuckDB views of encoded datasets, and nothing else.

Each encoded dataset is a view of the latent Parquet parts its manifest lists (row id,
passthrough columns, identifier tokens, ``z_public_*``), scanned through Arrow. The connection is
then closed around them: ``enable_external_access`` is off with no allowed directory at all, no
temporary directory, and ``lock_configuration`` on. So SQL cannot read a file (a vault part, a
source, another latent part), write one (``COPY TO``, ``EXPORT DATABASE``, ``ATTACH``), list a
folder, or undo those settings; a file in ``latent/`` that the manifest does not list is not in
the view. Nothing the connection shows (settings, view definitions) holds a path.

From Python::

    con = connect({"patients": "encoded/patients"})
    con.sql("SELECT sex, count(*) FROM patients GROUP BY sex").df()
    query("SELECT * FROM patients LIMIT 10", {"patients": "encoded/patients"})   # a DataFrame
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from iae_privacy.errors import QueryError

__all__ = ["connect", "query", "query_arrow", "write_result", "QueryError"]

_VIEW = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _latent_parts(folder: str | Path) -> list[Path]:
    from iae_privacy.dataset.store import EncodedDataset, StoreError

    try:
        parts = EncodedDataset(folder).listed_latent_parts()
    except StoreError as exc:
        raise QueryError(str(exc)) from None
    missing = [p for p in parts if not p.is_file()]
    if not parts or missing:
        raise QueryError(f"{folder} is not an encoded dataset with latent parts "
                         + (f"({missing[0]} is missing)" if missing else "(its manifest lists none)"))
    return parts


def view_name(folder: str | Path) -> str:
    """A view name for a dataset folder: its name, with anything but letters, digits and _ as _."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(folder).resolve().name)
    return name if _VIEW.match(name) else f"d_{name}"[:63]


def connect(datasets: dict[str, str | Path]):
    """A DuckDB connection with one view per encoded dataset (``{view name: dataset folder}``),
    reading only the latent tables."""
    import duckdb
    import pyarrow.dataset as ds

    latent = {}
    for name, folder in datasets.items():
        if not _VIEW.match(name):
            raise QueryError(f"view name {name!r}: use letters, digits and _ (not starting with a digit)")
        latent[name] = _latent_parts(folder)
    con = duckdb.connect(config={"temp_directory": ""})  # no spilling: nothing is ever written
    for name, parts in latent.items():
        con.register(name, ds.dataset([str(p) for p in parts], format="parquet"))
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query_arrow(sql: str, datasets: dict[str, str | Path]) -> pa.Table:
    """Run ``sql`` over the datasets' views; the result as an Arrow table."""
    import duckdb

    con = connect(datasets)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from None
    except AttributeError:  # a statement with no result (e.g. SET): nothing to return
        return pa.table({})
    finally:
        con.close()


def query(sql: str, datasets: dict[str, str | Path]):
    """Run ``sql`` over the datasets' views; the result as a pandas DataFrame."""
    return query_arrow(sql, datasets).to_pandas()


def write_result(table: pa.Table, out: Path) -> None:
    """Write a query result to ``.parquet`` or ``.csv``."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    elif out.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    else:
        raise QueryError(f"{out}: --out must end in .parquet or .csv")
