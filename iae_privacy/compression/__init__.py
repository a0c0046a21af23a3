"""Lossless compression of Parquet tables (issue 19): the codec's integer codes entropy-coded with
conditional models over ``constriction`` (:mod:`.entropy`), one batch of the codec's output coded
whole (:mod:`.batch`: a ``.iaez`` chunk, and an encoded dataset's vault segment), and the ``.iaez``
file that streams them, framed and checked or sealed (:mod:`.container`)."""
