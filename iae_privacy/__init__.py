"""iae-privacy: keyed, exactly invertible autoencoders for sensitive tables.

The package reads as the pipeline: :mod:`iae_privacy.codec` (Parquet rows to integer features and
back, losslessly) → :mod:`iae_privacy.network` (the keyed exactly invertible network) →
:mod:`iae_privacy.keys.keyring` and :mod:`iae_privacy.model.bundle` (keys, sealed models) →
:mod:`iae_privacy.dataset.tokens` (identifier tokens) → :mod:`iae_privacy.dataset.rowids` (keyed row ids and
order) → :mod:`iae_privacy.dataset.store` (encoded datasets) → :mod:`iae_privacy.access.control` and
:mod:`iae_privacy.access.audit` (who may restore what) → :mod:`iae_privacy.analysts.query`,
:mod:`iae_privacy.analysts.attacks`, :mod:`iae_privacy.analysts.evaluate` (analysts) → :mod:`iae_privacy.cli`.
Shared by all: :mod:`iae_privacy.errors`, :mod:`iae_privacy.files` (the one atomic write),
:mod:`iae_privacy.documents` (JSON from files anyone can write). Nothing in this package imports Prefect; the flows in ``flows/`` call it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
