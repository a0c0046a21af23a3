"""iae-privacy: keyed, exactly invertible autoencoders for sensitive tables.

The folders read as the pipeline, bottom-up (a test keeps this list whole)::

    codec/      Parquet rows to integer network features and back, losslessly; column roles
    network/    the keyed, exactly invertible network and its training
    model/      codec + network as one artefact: fit, round-trip check, sealed bundles, registry
    keys/       primitives (crypto: the one module touching them), the keyring, sealed files
    arrow/      cells as fixed-width bytes; exact comparison and canonical digests of batches
    dataset/    encoded datasets: layout, signed manifest, writer, reader, lookup, tokens, row ids
    access/     who may restore what: policy, requests, authorize -> Grant, restore, audit
    analysts/   read-only SQL, synthetic records, the attacks and the evaluation, its report
    compression/ lossless compression of a table: the codes entropy-coded, the .iaez file, vault segments
    cli/        the ``iae-privacy`` command, one module per command group (the only part that
                reaches the Prefect flows, and only inside commands)

and beside them, shared by all: ``errors`` (every error a user can act on), ``files`` (the one
atomic write), ``documents`` (canonical JSON, and JSON from files anyone can write),
``workspace`` (every path under a workspace), ``server`` (the workspace's own Prefect server and
its flow worker), ``machine`` (cores, load, and how many batches an encode runs at once),
``progress`` (progress reports from the flows), ``samples`` (the bundled sample data). Nothing in
this package imports Prefect; the flows in ``flows/`` (installed as ``iae_privacy_flows``) call it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
