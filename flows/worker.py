"""The workspace's flow worker: Prefect and the flows imported once, a command's flow run on request.

``iae-privacy server start`` starts it beside the workspace's Prefect server
(:class:`iae_privacy.server.WorkspaceServer`), as ``python -m iae_privacy_flows.worker HOME``, with
``PREFECT_API_URL`` set to that server. It listens on ``HOME/server/flows.sock`` (owner-only, in an
owner-only folder, and it answers only processes of its own user) for one JSON line per connection:
``{"command": "decode", "args": {...}, "passphrase": ...}``. It runs that command's flow, the same
flow run a command would make in its own process, one run at a time, and answers with JSON lines:
``{"progress": [what, done, total, unit]}`` and ``{"log": [level, line]}`` as the run goes, then
``{"result": {...}}`` (counts and paths) or ``{"error": {"type": ..., "message": ...}}``. A
passphrase is held only while its command runs. Messages carry paths, counts and log lines, never
data: the flows' log lines carry none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path

from iae_privacy import progress
from iae_privacy.errors import IaeError, withheld
from iae_privacy.keys.keyring import hold_passphrase, release_passphrase
from iae_privacy.server import WORKER_SOCKET, read_message, send_message
from iae_privacy_flows.decode import run_decode

_one_run = threading.Lock()


def _decode(home: str, args: dict) -> dict:
    result = run_decode(encoded=str(args["encoded"]), request=str(args["request"]), out=str(args["out"]),
                        home=home, with_row_id=bool(args.get("with_row_id", False)))
    return dataclasses.asdict(result)


COMMANDS = {"decode": _decode}
"""What the worker runs: a command's name and its flow (``run_*`` of its flow module)."""


class _Forward(logging.Handler):
    """The run's Prefect log lines, to the command that asked for it."""

    def __init__(self, conn: socket.socket) -> None:
        super().__init__(logging.INFO)
        self.conn = conn
        self.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run)s%(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        # named as Prefect's console names them: "Task run 'authorize-0d4' - ..."
        for attribute, what in (("task_run_name", "Task run"), ("flow_run_name", "Flow run")):
            name = getattr(record, attribute, None)
            if name:
                record.run = f"{what} {name!r} - "
                break
        else:
            record.run = ""
        try:
            send_message(self.conn, {"log": [record.levelno, self.format(record)]})
        except OSError:  # the command went away: the run goes on
            pass


def _same_user(conn: socket.socket) -> bool:
    """Whether the peer runs as this process's user (Linux; elsewhere the socket's permissions decide)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def handle(conn: socket.socket, home: str) -> None:
    """One command: read it, run its flow (one at a time), answer."""
    with conn:
        try:
            if not _same_user(conn):
                return
            try:
                message = read_message(conn.makefile("rb"))
                if message is None:
                    return
                command, args = message.get("command"), message.get("args")
                passphrase = message.get("passphrase") or None
                if command != "ping" and not isinstance(args, dict) or not isinstance(passphrase, (str, type(None))):
                    raise ValueError("options")
            except (ValueError, TypeError, AttributeError) as exc:
                raise IaeError(f"the flow worker got an unreadable command ({type(exc).__name__})") from None
            if command == "ping":
                send_message(conn, {"result": {}})
                return
            if command not in COMMANDS:
                raise IaeError(f"the flow worker runs no command {command!r}")
            send_message(conn, {"result": _run(conn, home, command, args, passphrase)})
        except IaeError as exc:
            _answer_error(conn, exc)
        except OSError:  # the command went away
            pass
        except Exception as exc:  # a bug: its message may quote a cell
            _answer_error(conn, withheld(exc, "the flow worker"))


def _run(conn: socket.socket, home: str, command: str, args: dict, passphrase: str | None) -> dict:
    """``command``'s flow, alone in this process, its log lines and progress sent to ``conn``."""
    forward = _Forward(conn)

    def report(what: str, done: int, total: int, unit: str) -> None:
        try:
            send_message(conn, {"progress": [what, done, total, unit]})
        except OSError:
            pass

    with _one_run:
        hold_passphrase(passphrase)
        logging.getLogger("prefect").addHandler(forward)
        try:
            with progress.listening(report):
                return COMMANDS[command](home, args)
        finally:
            logging.getLogger("prefect").removeHandler(forward)
            release_passphrase()


def _answer_error(conn: socket.socket, exc: IaeError) -> None:
    try:
        send_message(conn, {"error": {"type": type(exc).__name__, "message": str(exc)}})
    except OSError:
        pass


def serve(home: Path) -> None:
    """Listen on the workspace's worker socket until the process is stopped."""
    path = home / "server" / WORKER_SOCKET
    path.unlink(missing_ok=True)  # left by a worker that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is created owner-only
    try:
        listener.bind(str(path))
    except OSError as exc:  # e.g. a path longer than a Unix socket's (about 100 characters)
        sys.exit(f"flow worker: cannot listen on {path} ({exc.strerror or exc}); commands run their flows in "
                 "their own process")
    finally:
        os.umask(old)
    listener.listen(16)
    print(f"flow worker listening on {path}", flush=True)
    try:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn, str(home)), daemon=True).start()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m iae_privacy_flows.worker HOME")
    import importlib

    # what a first run would import (0.7-0.8 s of it; pyarrow imports pandas on first use)
    for module in WARM:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    serve(Path(args[0]))


WARM = ("pandas", "fastapi.encoders", "prefect.engine", "prefect.flow_engine", "prefect.task_engine",
        "prefect.utilities.visualization", "iae_privacy.compression.batch",
        "iae_privacy.model.pipeline")
"""Modules the worker imports before it listens, so that its first run does not."""


if __name__ == "__main__":
    main()
