"""Progress of long steps, for whoever shows it: counts only, never data.

Flows and library code call :func:`report` as work advances; a front end (the CLI's rich bars)
listens with :func:`listening` for as long as it runs a flow. Tasks on the local task runner run
in this process, so their progress reaches the listener; tasks on Dask workers report to nobody
here and are seen through their log lines instead. Listeners are called from task threads.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["report", "listening", "Listener"]

Listener = Callable[[str, int, int, str], None]
"""``listener(what, done, total, unit)``: ``done`` of ``total`` ``unit`` (rows, epochs) of ``what``."""

_listeners: list[Listener] = []
_lock = threading.Lock()


def report(what: str, done: int, total: int, unit: str = "rows") -> None:
    """Tell every listener that ``done`` of ``total`` ``unit`` of ``what`` are done."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(what, done, total, unit)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` for every report made while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
