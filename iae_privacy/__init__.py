"""iae-privacy: keyed, exactly invertible autoencoders for sensitive tables.

The package reads as the pipeline: :mod:`iae_privacy.codec` (Parquet rows to integer features and
back, losslessly), then the network, sealing and storage layers as they land. Nothing in this
package imports Prefect; the flows in ``flows/`` call it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
