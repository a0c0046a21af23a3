"""Keys: the cryptographic primitives (:mod:`.crypto`, the one module that touches them), the master
key and keyring with its derived subkeys (:mod:`.keyring`), and the sealed file format every sealed
object uses (:mod:`.sealed`).

Nothing is imported here, so that importing one part does not load the others."""
