"""Encoded datasets on disk. :mod:`.store` is the facade (:class:`~.store.EncodedDataset`); under it
the folder's layout and record layouts (:mod:`.layout`), the signed manifest (:mod:`.manifest`),
encoding (:mod:`.writer`), restoring (:mod:`.reader`) and finding rows (:mod:`.lookup`), with the
keyed identifier tokens (:mod:`.tokens`), keyed row ids and order (:mod:`.rowids`) and the
write-behind thread both directions use (:mod:`.overlap`)."""
