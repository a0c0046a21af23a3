"""Arrow helpers shared by the pipeline: cells as fixed-width bytes (:mod:`.cells`) and the exact,
bit-level comparison and canonical digests of record batches (:mod:`.exactness`)."""
