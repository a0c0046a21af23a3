"""Codec and network together: fit a model on a Parquet file, encode batches to latents, restore.

This is the library call the train and encode flows make; it imports nothing from Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from iae_privacy.codec import CodecConfig, EncodedBatch, TableCodec, read_batches
from iae_privacy.errors import IaeError
from iae_privacy.network import ExactINN, NetworkConfig
from iae_privacy.network.train import EpochStats, TrainConfig, TrainReport, train

__all__ = ["LatentBatch", "Model", "fit_model", "default_public_dims"]


@dataclass(frozen=True)
class LatentBatch:
    """One record batch after codec and network: ``z_public`` for analysts, the rest for the vault."""

    z_public: np.ndarray
    z_detail: np.ndarray
    encoded: EncodedBatch
    """The codec's output; its ``features`` are not kept once ``z`` exists."""


@dataclass
class Model:
    codec: TableCodec
    network: ExactINN

    def encode(self, batch: pa.RecordBatch, source: str | None = None) -> LatentBatch:
        encoded = self.codec.encode(batch, source)
        z = self.network.encode(torch.from_numpy(encoded.features)).numpy()
        k = self.network.config.public_dims
        return LatentBatch(z[:, :k], z[:, k:], encoded)

    def decode(self, latent: LatentBatch) -> pa.RecordBatch:
        z = torch.from_numpy(np.concatenate([latent.z_public, latent.z_detail], axis=1))
        features = self.network.decode(z).numpy()
        e = latent.encoded
        return self.codec.decode(EncodedBatch(features, e.passthrough, e.identifiers, e.detail))


def default_public_dims(features: int) -> int:
    """Half the features, at least one: a middle point of the utility/privacy curve."""
    return max(1, features // 2)


def fit_model(path: str | Path, key: bytes, codec_config: CodecConfig | None = None,
              train_config: TrainConfig | None = None, public_dims: int | None = None,
              on_epoch: Callable[[EpochStats], None] | None = None,
              on_rows: Callable[[int, int], None] | None = None) -> tuple[Model, TrainReport]:
    """Fit the codec on ``path``, then train the keyed network on its features (a sample of up to
    ``codec_config.sample_rows`` rows)."""
    codec = TableCodec.fit(path, codec_config)
    rows, features = 0, []
    for batch in read_batches(path):
        features.append(codec.encode(batch, source=str(path)).features)
        rows += batch.num_rows
        if rows >= codec.config.sample_rows:
            break
    x = np.concatenate(features)[: codec.config.sample_rows]
    levels = tuple(codec.feature_levels)
    if not levels:
        raise IaeError(f"{path}: no feature columns for the network; every column is an identifier, "
                         "passthrough or vault column")
    network = NetworkConfig(levels=levels, public_dims=public_dims or default_public_dims(len(levels)))
    model, report = train(x, network, key, train_config or TrainConfig(), codec.feature_names, on_epoch, on_rows)
    return Model(codec, model), report
