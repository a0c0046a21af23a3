"""Prefect flows for iae-privacy: thin runbooks over the library (train, encode, decode).

They land with the flows issue; the library in ``iae_privacy`` never imports Prefect.
"""
