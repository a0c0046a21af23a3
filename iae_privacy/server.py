"""The workspace's own long-lived Prefect server: started once, used by every later command.

Without a Prefect server configured, every command that runs a flow starts Prefect's temporary
server first: 13-18 s on this project's machines before any work, and on a busy machine it can
time out. ``iae-privacy server start`` instead starts ``prefect server start`` in the background,
on loopback, with its database under ``HOME/server/prefect/``, and records its address in
``HOME/server/server.json``; later commands in the workspace find it there and use it (unless
``PREFECT_API_URL`` says otherwise). ``server stop`` ends it.

This module starts the server as a separate program: the library itself still imports nothing
from Prefect. The server's environment is this process's without ``IAE_PASSPHRASE`` (the CLI
never leaves it there) and without ``PREFECT_API_URL``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from iae_privacy.documents import parse_json, utc_now
from iae_privacy.errors import ServerError
from iae_privacy.files import write_private
from iae_privacy.keys.keyring import ENV_PASSPHRASE

__all__ = ["WorkspaceServer", "ServerState", "ServerError"]

START_SECONDS = 180
"""How long :meth:`WorkspaceServer.start` waits for the server to answer (a busy machine is slow)."""


@dataclass(frozen=True)
class ServerState:
    url: str
    """The API's address (what ``PREFECT_API_URL`` is set to)."""
    pid: int
    started: str

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running Prefect server (not a process that took its number since)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc: trust the number
        return True


class WorkspaceServer:
    """The Prefect server of the workspace at ``home``."""

    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / "server"
        self.state_file = self.folder / "server.json"
        self.log = self.folder / "server.log"

    def state(self) -> ServerState | None:
        """The recorded server, if its process is still there (health not checked)."""
        try:
            doc = parse_json(self.state_file.read_bytes())
            state = ServerState(str(doc["url"]), int(doc["pid"]), str(doc["started"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ServerError(f"{self.state_file} is damaged; remove it and run 'iae-privacy server start'") from None
        return state if _alive(state.pid) else None

    def running(self) -> ServerState | None:
        """The recorded server if it answers."""
        state = self.state()
        return state if state is not None and _healthy(state.url) else None

    def start(self, wait: float = START_SECONDS, on_wait: Callable[[float], None] | None = None) -> ServerState:
        """Start the server (or return the one already running) and wait until it answers."""
        running = self.running()
        if running is not None:
            return running
        prefect = Path(sys.executable).with_name("prefect")
        program = str(prefect) if prefect.exists() else shutil.which("prefect")
        if program is None:
            raise ServerError("the 'prefect' program is not installed beside this Python; reinstall iae-privacy")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with socket.socket() as probe:  # a free port on loopback
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in (ENV_PASSPHRASE, "PREFECT_API_URL")}
        env.update(PREFECT_HOME=str(self.folder / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1")
        with open(self.log, "ab") as log:
            process = subprocess.Popen([program, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                       env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # lives on after this command
        state = ServerState(f"http://127.0.0.1:{port}/api", process.pid,
                            utc_now().isoformat(timespec="seconds"))
        write_private(self.state_file, json.dumps(state.__dict__, indent=1).encode())
        began = time.monotonic()
        while not _healthy(state.url, timeout=1.0):
            waited = time.monotonic() - began
            if process.poll() is not None:
                self.state_file.unlink(missing_ok=True)
                raise ServerError(f"the Prefect server stopped while starting (exit status {process.returncode}); "
                                  f"see {self.log}")
            if waited > wait:
                self.stop()
                raise ServerError(f"the Prefect server did not answer within {wait:.0f} s (a busy machine?); "
                                  f"try again, or see {self.log}")
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.5)
        return state

    def stop(self, wait: float = 20.0) -> bool:
        """Stop the recorded server; whether one was running."""
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        for sig, seconds in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(state.pid, sig)  # the server and the processes it started
            except ProcessLookupError:
                return True
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                try:
                    if os.waitpid(state.pid, os.WNOHANG)[0]:  # ours: reap it
                        return True
                except ChildProcessError:
                    if not _alive(state.pid):
                        return True
                time.sleep(0.2)
        return True
