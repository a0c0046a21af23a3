"""The keyed, exactly invertible autoencoder (integer additive couplings with quantized shifts)."""

from iae_privacy.network.model import ExactINN, NetworkConfig, NetworkError

__all__ = ["ExactINN", "NetworkConfig", "NetworkError"]
