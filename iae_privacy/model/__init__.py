"""The model: codec and network as one artefact (:mod:`.pipeline`: fit, encode, decode), its
round-trip check (:mod:`.verify`), sealed model bundles (:mod:`.bundle`) and the registry of
named, versioned models (:mod:`.registry`).

Nothing is imported here: torch loads only where a model is fitted, opened or run."""
