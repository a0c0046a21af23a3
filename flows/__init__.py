"""Prefect flows for iae-privacy: thin runbooks over the library.

``train.py`` (iae-train), ``encode.py`` (iae-encode, local threads or Dask), ``decode.py``
(iae-decode), ``serve.py`` (scheduled deployments). The library in ``iae_privacy`` never imports
Prefect; these modules do the orchestration and nothing else. Installed, this folder is the
package ``iae_privacy_flows`` (``package-dir`` in pyproject.toml): import it by that name.
"""
