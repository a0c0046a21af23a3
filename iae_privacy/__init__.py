"""iae-privacy: keyed, exactly invertible autoencoders for sensitive tables.

The package reads as the pipeline: :mod:`iae_privacy.codec` (Parquet rows to integer features and
back, losslessly) → :mod:`iae_privacy.network` (the keyed exactly invertible network) →
:mod:`iae_privacy.keyring` and :mod:`iae_privacy.bundle` (keys, sealed models) →
:mod:`iae_privacy.tokens` (identifier tokens) → :mod:`iae_privacy.rowids` (keyed row ids and
order) → :mod:`iae_privacy.store` (encoded datasets) → :mod:`iae_privacy.access` and
:mod:`iae_privacy.audit` (who may restore what) → :mod:`iae_privacy.query`,
:mod:`iae_privacy.attacks`, :mod:`iae_privacy.evaluate` (analysts) → :mod:`iae_privacy.cli`.
Shared by all: :mod:`iae_privacy.errors`, :mod:`iae_privacy.files` (the one atomic write),
:mod:`iae_privacy.documents` (JSON from files anyone can write). Nothing in this package imports Prefect; the flows in ``flows/`` call it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
