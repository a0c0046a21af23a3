"""Lossless compression of Parquet tables (issue 19): the codec's integer codes entropy-coded with
conditional models over ``constriction`` (:mod:`.entropy`), and the ``.iaez`` file that streams
them, framed and checked or sealed (:mod:`.container`)."""
