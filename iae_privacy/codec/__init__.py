"""The lossless, Arrow-native tabular codec: Parquet rows to integer network features and back."""

from iae_privacy.codec.roles import CodecConfig, Role
from iae_privacy.codec.table import EncodedBatch, TableCodec, parquet_rows, read_batches

__all__ = ["CodecConfig", "EncodedBatch", "Role", "TableCodec", "parquet_rows", "read_batches"]
