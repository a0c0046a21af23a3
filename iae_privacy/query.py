"""Analysts' SQL over latent tables: DuckDB views of encoded datasets, and nothing else.

Each encoded dataset is a view of its ``latent/`` Parquet parts (row id, passthrough columns,
identifier tokens, ``z_public_*``). The connection is then closed around them with DuckDB's own
settings: ``allowed_directories`` lists only the latent folders, ``enable_external_access`` is off
and ``lock_configuration`` on, so SQL cannot read a vault part, a source file or anything else on
disk, nor write a file, nor undo those settings. The vault holds no Parquet anyway: it is sealed.

From Python::

    con = connect({"patients": "encoded/patients"})
    con.sql("SELECT sex, count(*) FROM patients GROUP BY sex").df()
    query("SELECT * FROM patients LIMIT 10", {"patients": "encoded/patients"})   # a DataFrame
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from iae_privacy.errors import IaeError

__all__ = ["connect", "query", "query_arrow", "write_result", "QueryError"]

_VIEW = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class QueryError(IaeError):
    """A dataset cannot be registered, or the SQL failed."""


def _latent_folder(folder: str | Path) -> Path:
    latent = Path(folder).resolve() / "latent"
    if not (Path(folder) / "manifest.json").exists() or not any(latent.glob("part-*.parquet")):
        raise QueryError(f"{folder} is not an encoded dataset with latent parts (no manifest.json or latent/)")
    return latent


def view_name(folder: str | Path) -> str:
    """A view name for a dataset folder: its name, with anything but letters, digits and _ as _."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(folder).resolve().name)
    return name if _VIEW.match(name) else f"d_{name}"[:63]


def connect(datasets: dict[str, str | Path]):
    """A DuckDB connection with one view per encoded dataset (``{view name: dataset folder}``),
    reading only the latent tables."""
    import duckdb

    latent = {}
    for name, folder in datasets.items():
        if not _VIEW.match(name):
            raise QueryError(f"view name {name!r}: use letters, digits and _ (not starting with a digit)")
        latent[name] = _latent_folder(folder)
    con = duckdb.connect()
    allowed = sorted({f"{p}/" for p in latent.values()})
    con.execute("SET allowed_directories = $dirs", {"dirs": allowed})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    for name, folder in latent.items():
        pattern = str(folder / "part-*.parquet").replace("'", "''")
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{pattern}\')')
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
