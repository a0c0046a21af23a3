"""What every flow shares: task settings that keep data out of Prefect, and opening the workspace.

Tasks take and return paths, names, hashes and counts; the keyring is opened inside each task
from the workspace (never passed as a parameter), and no task result is persisted or cached.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, TypeVar

from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from iae_privacy import progress
from iae_privacy.errors import DEBUG, IaeError, withheld
from iae_privacy.keys.keyring import Keyring
from iae_privacy.workspace import Workspace

SAFE_TASK = {"persist_result": False, "cache_policy": NO_CACHE}
"""Settings for every task: results stay in memory, never in Prefect's storage or database."""

F = TypeVar("F", bound=Callable)


def _no_empty_traceback(record: logging.LogRecord) -> bool:
    """Prefect logs a task that returned a Failed state with ``exc_info=True`` outside any exception,
    which prints a stray "NoneType: None" under the line; a refusal is not a crash."""
    if record.exc_info is not None and record.exc_info[0] is None:
        record.exc_info = None
    return True


logging.getLogger("prefect.task_runs").addFilter(_no_empty_traceback)


def no_data_in_errors(fn: F) -> F:
    """For every task and flow body, under ``@task``/``@flow``: an exception that is not an
    IaeError (whose messages name files, columns and keys only) is replaced by one naming its
    type and place, before Prefect logs it, stores it in its database or shows it in the UI."""

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IaeError:
            raise
        except Exception as exc:
            if os.environ.get(DEBUG) == "1":
                raise
            raise withheld(exc, fn.__name__.replace("_", " ")) from None

    return guarded  # type: ignore[return-value]


def failed(exc: IaeError, what: str) -> State:
    """A task's Failed state holding ``exc`` (a refusal or a failure the user can act on, already
    recorded where it must be): Prefect shows its message, without a traceback, and
    ``state.result()`` raises ``exc`` again for the caller."""
    return Failed(message=f"{what}: {exc}", data=exc)


def progress_logger(what: str, total: int, logger) -> Callable[[int], None]:
    """A callback that logs ``what: done/total rows`` about every tenth of the way (counts only),
    and passes every count on to :func:`iae_privacy.progress.report` (the CLI's progress bars)."""
    step = max(total // 10, 1)
    state = {"next": step}

    def report(done: int) -> None:
        progress.report(what, done, total)
        if done >= state["next"] or done == total:
            logger.info("%s: %d/%d rows (%d%%)", what, done, total, 100 * done // max(total, 1))
            state["next"] = done + step

    return report


def open_workspace(home: str) -> tuple[Workspace, Keyring]:
    """The workspace and its keyring (a passphrase, if any, comes from IAE_PASSPHRASE)."""
    workspace = Workspace.at(home)
    return workspace, workspace.keyring()
