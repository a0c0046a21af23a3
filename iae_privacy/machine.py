"""How much of this machine a step may use: its cores, whether it is busy, and the settings that
override both. Nothing here imports PyTorch."""

from __future__ import annotations

import os

__all__ = ["usable_cores", "busy", "encode_workers", "chunk_workers", "ENV_ENCODE_WORKERS"]

ENV_ENCODE_WORKERS = "IAE_ENCODE_WORKERS"

MAX_ENCODE_WORKERS = 8
"""At most this many batches of one part are encoded at once: beyond, reading and writing (one
thread each) are what the part waits for."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system says; else all)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy() -> bool:
    """Whether other work already takes the machine: a 1-minute load average of at least its cores
    less one (threads that wait for each other's core then lose more than they gain)."""
    try:
        return os.getloadavg()[0] >= max(usable_cores() - 1, 1)
    except OSError:
        return False


def encode_workers() -> int:
    """How many batches of one part are encoded at once (codec, network and tokens, each batch with
    one PyTorch thread): ``IAE_ENCODE_WORKERS`` if set, else the usable cores (at most
    :data:`MAX_ENCODE_WORKERS`). Not fewer on a busy machine: single-threaded work does not spin
    waiting for a core as PyTorch's threads of one product do (which is what :func:`busy` is for)."""
    from iae_privacy.errors import IaeError

    if os.environ.get(ENV_ENCODE_WORKERS):
        try:
            return max(1, int(os.environ[ENV_ENCODE_WORKERS]))
        except ValueError:
            raise IaeError(f"{ENV_ENCODE_WORKERS} must be a whole number of batches") from None
    return min(usable_cores(), MAX_ENCODE_WORKERS)


MAX_CHUNK_WORKERS = 4
"""At most this many chunks of a compressed file are coded or decoded at once (memory: each is
``CHUNK_ROWS`` records)."""


def chunk_workers() -> int:
    """How many chunks of a compressed file are coded or decoded at once: the usable cores, at
    most :data:`MAX_CHUNK_WORKERS`."""
    return min(usable_cores(), MAX_CHUNK_WORKERS)
