"""What else an analyst could be handed with k columns: the baselines the latent table is judged by.

* :class:`PCABaseline`: the top-k principal component scores of the standardised feature codes,
  the bar ``z_public`` must clear ("give them PCA");
* :class:`AutoencoderBaseline`: the k-unit bottleneck of a plain (non-invertible) MLP autoencoder
  trained on the same standardised codes, the ceiling to aim at.

Both are fitted on training rows and applied to held-out ones, so that utility and attacks are
measured on them exactly as on the latent table (:mod:`iae_privacy.analysts.evaluate`,
``bench/privacy.py``). Neither is exact or keyed: they exist to be compared against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["PCABaseline", "AutoencoderBaseline", "BASELINES"]


@dataclass
class _Standardised:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray) -> _Standardised:
        x = codes.astype(np.float64)
        return cls(x.mean(0), x.std(0) + 1e-12)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return (codes.astype(np.float64) - self.mean) / self.scale


class PCABaseline:
    """Top-k principal component scores of the standardised codes."""

    name = "PCA"

    def __init__(self, train_codes: np.ndarray, k: int) -> None:
        from sklearn.decomposition import PCA

        self._standardised = _Standardised.of(train_codes)
        self._pca = PCA(n_components=min(k, train_codes.shape[1]), random_state=0)
        self._pca.fit(self._standardised(train_codes))

    def latent(self, codes: np.ndarray) -> np.ndarray:
        return self._pca.transform(self._standardised(codes))

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """The codes rebuilt from the k scores (in code units)."""
        s = self._standardised
        return self._pca.inverse_transform(self.latent(codes)) * s.scale + s.mean


class AutoencoderBaseline:
    """A plain MLP autoencoder (d → 64 → 64 → k → 64 → 64 → d, ReLU) on the standardised codes,
    trained with Adam on the reconstruction error for at most ``seconds`` or ``epochs``."""

    name = "autoencoder"

    def __init__(self, train_codes: np.ndarray, k: int, seconds: float = 20.0, epochs: int = 60,
                 seed: int = 0) -> None:
        import torch
        from torch import nn

        self._standardised = _Standardised.of(train_codes)
        x = torch.as_tensor(self._standardised(train_codes), dtype=torch.float32)
        d = x.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, k))
            self.decoder = nn.Sequential(nn.Linear(k, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, d))
            optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=2e-3)
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                for batch in torch.randperm(len(x), generator=generator).split(256):
                    loss = ((self.decoder(self.encoder(x[batch])) - x[batch]) ** 2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                if time.perf_counter() - started > seconds:
                    break

    def latent(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(self._standardised(codes), dtype=torch.float32)
            return self.encoder(x).numpy().astype(np.float64)

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(self._standardised(codes), dtype=torch.float32)
            rebuilt = self.decoder(self.encoder(x)).numpy().astype(np.float64)
        s = self._standardised
        return rebuilt * s.scale + s.mean


BASELINES = {"pca": PCABaseline, "autoencoder": AutoencoderBaseline}
"""The baselines by the name ``evaluate --baselines`` takes."""
