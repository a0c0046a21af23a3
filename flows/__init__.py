"""Prefect flows for iae-privacy: thin runbooks over the library.

``train.py`` (iae-train), ``encode.py`` (iae-encode, local threads or Dask), ``decode.py``
(iae-decode), ``serve.py`` (scheduled deployments), ``worker.py`` (the workspace's flow worker,
which runs a command's flow in a process that has imported Prefect already). The library in
``iae_privacy`` never imports Prefect; these modules do the orchestration and nothing else.
Installed, this folder is the package ``iae_privacy_flows`` (``package-dir`` in pyproject.toml):
import it by that name.
"""
