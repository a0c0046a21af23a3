"""iae-privacy: keyed, exactly invertible autoencoders for sensitive tables.

The package reads as the pipeline: :mod:`iae_privacy.codec` (Parquet rows to integer features and
back, losslessly) → :mod:`iae_privacy.network` (the keyed exactly invertible network) →
:mod:`iae_privacy.keyring` and :mod:`iae_privacy.bundle` (keys, sealed models) →
:mod:`iae_privacy.tokens` (identifier tokens) → :mod:`iae_privacy.store` (encoded datasets) →
:mod:`iae_privacy.cli`. Nothing in this package imports Prefect; the flows in ``flows/`` call it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
