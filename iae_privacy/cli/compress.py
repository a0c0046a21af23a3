"""``iae-privacy compress`` and ``decompress``: a Parquet table to a smaller file and back, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iae_privacy.cli.app import app
from iae_privacy.cli.common import JsonOption, console, print_json, progress, session, source_rows
from iae_privacy.errors import IaeError


def _advance(bar):
    """An ``on_rows(done, total)`` for a progress bar that takes increments."""
    seen = [0]

    def on_rows(done: int, total: int) -> None:
        bar(done - seen[0])
        seen[0] = done

    return on_rows


@app.command("compress")
def compress_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="The Parquet file to compress.")],
    out: Annotated[Path, typer.Option(help="The compressed file to write (FILE.iaez).")],
    seal: Annotated[bool, typer.Option(
        help="Seal it with the workspace keyring's vault key: only that keyring opens it. Unsealed, the file "
        "is plain data to anyone with iae-privacy, as with any compressor.")] = False,
    level: Annotated[int, typer.Option(
        min=1, max=22, help="zstd level for the parts that are not entropy-coded (identifiers, text): 19 is "
        "the smallest, 3 to 9 several times faster.")] = 19,
    levels: Annotated[int, typer.Option(
        min=2, max=65_536, help="Quantile buckets per number column (their edges are stored in the file).")] = 256,
    as_json: JsonOption = False,
) -> None:
    """Compress DATA losslessly: the codec's integer codes entropy-coded with models of how columns
    depend on each other, numbers' exact remainders as per-bucket dictionaries where values repeat,
    identifiers and text with zstd. 'decompress' gives back the table bit for bit (schema,
    metadata, nulls, NaN payloads). Streams in chunks of 262,144 rows: memory does not grow with the file.

        iae-privacy compress data/cps1988_wages.parquet --out wages.iaez
        iae-privacy decompress wages.iaez --out wages.parquet
    """
    from iae_privacy.compression.container import compress

    if out.suffix != ".iaez":
        raise IaeError(f"{out}: a compressed file is named FILE.iaez")
    if out.resolve() == data.resolve():
        raise IaeError(f"{out}: the compressed file would replace its source")
    total = source_rows(data)  # a clear error for a missing or unreadable file
    keyring = session(ctx).keyring() if seal else None
    with progress(f"compressing {data.name}", total) as bar:
        report = compress(data, out, keyring=keyring, levels=levels, zstd_level=level, on_rows=_advance(bar))
    source = data.stat().st_size
    if as_json:
        print_json({"source": str(data), "out": str(out), "rows": report.rows, "chunks": report.chunks,
                    "bytes": report.bytes, "source_bytes": source, "bits_per_row": report.bits_per_row,
                    "sealed": report.sealed, "seconds": report.seconds})
        return
    console.print(f"compressed {report.rows:,} rows to {out}: {report.bytes:,} bytes ({report.bits_per_row:.1f} bits "
                  f"per row; {report.bytes / max(source, 1):.2f}x the source file) in {report.seconds:.1f} s"
                  + ("; sealed" if report.sealed else "; not sealed: anyone with iae-privacy can read it"),
                  highlight=False)


@app.command("decompress")
def decompress_command(
    ctx: typer.Context,
    compressed: Annotated[Path, typer.Argument(help="A file made by 'iae-privacy compress' (FILE.iaez).")],
    out: Annotated[Path, typer.Option(help="The Parquet file to write.")],
    as_json: JsonOption = False,
) -> None:
    """Give back the table compressed in COMPRESSED, bit for bit, as a Parquet file (owner-only).
    A sealed file needs the workspace's keyring. A damaged, truncated or altered file fails and
    writes nothing."""
    from iae_privacy.compression.container import compressed_rows, decompress, is_sealed

    if out.suffix != ".parquet":
        raise IaeError(f"{out}: the table is written to FILE.parquet")
    keyring = session(ctx).keyring() if is_sealed(compressed) else None
    with progress(f"decompressing {compressed.name}", compressed_rows(compressed, keyring)) as bar:
        rows = decompress(compressed, out, keyring=keyring, on_rows=_advance(bar))
    if as_json:
        print_json({"compressed": str(compressed), "out": str(out), "rows": rows})
        return
    console.print(f"{rows:,} rows written to {out}", highlight=False)
