"""The workspace's own long-lived Prefect server: started once, used by every later command.

Without a Prefect server configured, every command that runs a flow starts Prefect's temporary
server first: 13-18 s on this project's machines before any work, and on a busy machine it can
time out. ``iae-privacy server start`` instead starts ``prefect server start`` in the background,
on loopback, with its database under ``HOME/server/prefect/``, and records its address in
``HOME/server/server.json``; later commands in the workspace find it there and use it (unless
``PREFECT_API_URL`` says otherwise). ``server stop`` ends it.

Beside the server runs the workspace's **flow worker** (``iae_privacy_flows.worker``): a process
that has imported Prefect and the flows once, and runs a command's flow when the command asks over
a Unix socket (``HOME/server/flows.sock``, owner-only). A ``decode`` from the shell then pays for
the CLI's own imports (about 0.35 s) and the flow run, not for importing Prefect (1.2-1.4 s) and
the flows in a new process each time. The flow run is the same ``iae-decode`` run, on the same
server: the request is still checked and audited there, and the worker adds no authority (anyone
who can reach the socket can run the command themselves). A command falls back to running its flow
in its own process when no worker answers.

This module starts both as separate programs: the library itself still imports nothing from
Prefect. Their environment is this process's without ``IAE_PASSPHRASE`` (the CLI never leaves it
there), without any ``IAE_MASTER_KEY_V*`` and without ``PREFECT_API_URL`` (the worker's is set to
the server's). A passphrase reaches the worker only with a command that needs it, and is dropped
when that command's flow run ends.
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

from iae_privacy import errors
from iae_privacy.documents import parse_json, utc_now
from iae_privacy.errors import IaeError, ServerError
from iae_privacy.files import write_private
from iae_privacy.keys.keyring import ENV_MASTER_KEY_PREFIX, ENV_PASSPHRASE

__all__ = ["WorkspaceServer", "ServerState", "ServerError", "WORKER_SOCKET", "child_environment", "read_message",
           "send_message"]

WORKER_SOCKET = "flows.sock"
"""The flow worker's socket, in the workspace's server folder."""

WORKER_START_SECONDS = 120
"""How long :meth:`WorkspaceServer.start` waits for the flow worker (its imports, on a busy machine)."""

MESSAGE_LIMIT = 1 << 20
"""The longest message line either side reads (a command's paths and options; counts and log lines)."""

START_SECONDS = 180
"""How long :meth:`WorkspaceServer.start` waits for the server to answer (a busy machine is slow)."""


@dataclass(frozen=True)
class ServerState:
    url: str
    """The API's address (what ``PREFECT_API_URL`` is set to)."""
    pid: int
    started: str
    worker_pid: int = 0
    """The flow worker's process (0: none was started, as in a ``server.json`` written before it)."""

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int, program: bytes = b"prefect") -> bool:
    """Whether ``pid`` is a running Prefect server, or with ``program`` another of ours (not a
    process that took its number since)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc: trust the number
        return True


def child_environment(**settings: str) -> dict[str, str]:
    """The environment of a process the workspace starts: this one's without the passphrase, master
    keys or ``PREFECT_API_URL``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_PASSPHRASE, "PREFECT_API_URL") and not k.startswith(ENV_MASTER_KEY_PREFIX)}
    env.update(settings)
    return env


def send_message(conn: socket.socket, message: dict) -> None:
    """One JSON line."""
    conn.sendall(json.dumps(message, ensure_ascii=True).encode() + b"\n")


def read_message(stream) -> dict | None:
    """The next JSON line of ``stream`` (a socket's file), None at its end."""
    line = stream.readline(MESSAGE_LIMIT + 1)
    if not line:
        return None
    if len(line) > MESSAGE_LIMIT or not line.endswith(b"\n"):
        raise ValueError("message too long or cut short")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


def _answer(message: dict | None) -> tuple[str, object]:
    """(kind, value) of one line of a worker's answer; raises ValueError, TypeError, KeyError or
    AttributeError for a line that is not one."""
    if message is None:
        return "end", None
    if "progress" in message:
        what, done, total, unit = message["progress"]
        return "progress", (str(what), int(done), int(total), str(unit))
    if "log" in message:
        level, line = message["log"]
        return "log", (int(level), str(line))
    if "error" in message:
        return "error", (str(message["error"]["type"]), str(message["error"]["message"]))
    if "result" in message:
        return "result", dict(message["result"])
    raise ValueError("an answer of no known kind")


def _error(kind: object, message: object) -> IaeError:
    """The error a worker reported, as the class it named (an :class:`IaeError` of ours) or IaeError."""
    cls = getattr(errors, str(kind), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, IaeError) and cls.__init__ is IaeError.__init__ \
        else IaeError
    return cls(str(message))


class WorkspaceServer:
    """The Prefect server of the workspace at ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.folder = self.home / "server"
        self.state_file = self.folder / "server.json"
        self.log = self.folder / "server.log"
        self.worker_log = self.folder / "worker.log"
        self.socket = self.folder / WORKER_SOCKET

    def _recorded(self) -> ServerState | None:
        """What ``server.json`` says, whether or not its processes are still there."""
        try:
            doc = parse_json(self.state_file.read_bytes())
            return ServerState(str(doc["url"]), int(doc["pid"]), str(doc["started"]), int(doc.get("worker_pid", 0)))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ServerError(f"{self.state_file} is damaged; remove it and run 'iae-privacy server start'") from None

    def state(self) -> ServerState | None:
        """The recorded server, if its process is still there (health not checked)."""
        state = self._recorded()
        return state if state is not None and _alive(state.pid) else None

    def running(self) -> ServerState | None:
        """The recorded server if it answers."""
        state = self.state()
        return state if state is not None and _healthy(state.url) else None

    def start(self, wait: float = START_SECONDS, on_wait: Callable[[float], None] | None = None) -> ServerState:
        """Start the server (or keep the one already running) and wait until it answers; then the
        flow worker, if it does not answer. A worker that does not start leaves the server running
        (``worker_pid`` 0): commands then run their flows in their own process."""
        state = self.running()
        if state is None:
            self.stop()  # what is left of one that stopped answering: its worker, its record
            state = self._start_server(wait, on_wait)
        if not state.worker_pid or not self.worker_answers():
            state = self._start_worker(state, on_wait)
        return state

    def _start_server(self, wait: float, on_wait: Callable[[float], None] | None) -> ServerState:
        prefect = Path(sys.executable).with_name("prefect")
        program = str(prefect) if prefect.exists() else shutil.which("prefect")
        if program is None:
            raise ServerError("the 'prefect' program is not installed beside this Python; reinstall iae-privacy")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with socket.socket() as probe:  # a free port on loopback
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = child_environment(PREFECT_HOME=str(self.folder / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                                DO_NOT_TRACK="1")
        with open(self.log, "ab") as log:
            process = subprocess.Popen([program, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                       env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # lives on after this command
        state = ServerState(f"http://127.0.0.1:{port}/api", process.pid,
                            utc_now().isoformat(timespec="seconds"))
        self._record(state)
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

    def _record(self, state: ServerState) -> None:
        write_private(self.state_file, json.dumps(state.__dict__, indent=1).encode())

    def _start_worker(self, state: ServerState, on_wait: Callable[[float], None] | None,
                      wait: float = WORKER_START_SECONDS) -> ServerState:
        if state.worker_pid:
            _stop_process(state.worker_pid, WORKER_PROGRAM)
        env = child_environment(PREFECT_API_URL=state.url, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
        with open(self.worker_log, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", WORKER_PROGRAM.decode(), str(self.home.resolve())],
                                       env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        state = ServerState(state.url, state.pid, state.started, process.pid)
        self._record(state)
        began = time.monotonic()
        while not self.worker_answers():
            waited = time.monotonic() - began
            if process.poll() is not None or waited > wait:
                _stop_process(process.pid, WORKER_PROGRAM)
                state = ServerState(state.url, state.pid, state.started)
                self._record(state)
                return state
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.2)
        return state

    def worker_answers(self, timeout: float = 2.0) -> bool:
        """Whether the flow worker answers on its socket."""
        try:
            return self._call("ping", {}, None, timeout=timeout) == {}
        except (_NoWorker, IaeError, OSError):
            return False

    def run_flow(self, command: str, args: dict, passphrase: str | None = None,
                 on_progress: Callable[[str, int, int, str], None] | None = None,
                 on_log: Callable[[int, str], None] | None = None) -> dict | None:
        """Run ``command``'s flow in the flow worker: its result (counts, paths), or None when no
        worker answers (the caller runs the flow itself). An error the flow raised is raised here,
        as the same class of :mod:`iae_privacy.errors`; progress and the flow's log lines go to
        ``on_progress`` and ``on_log`` as they come."""
        state = self.state()
        if state is None or not state.worker_pid or not _alive(state.worker_pid, WORKER_PROGRAM):
            return None
        try:
            return self._call(command, args, passphrase, on_progress=on_progress, on_log=on_log)
        except _NoWorker:
            return None

    def _call(self, command: str, args: dict, passphrase: str | None, timeout: float | None = None,
              on_progress: Callable[[str, int, int, str], None] | None = None,
              on_log: Callable[[int, str], None] | None = None) -> dict:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout or 5.0)
            try:
                conn.connect(str(self.socket))
            except OSError:
                raise _NoWorker() from None
            conn.settimeout(timeout)  # a long restore: progress comes as it goes
            send_message(conn, {"command": command, "args": args, "passphrase": passphrase})
            stream = conn.makefile("rb")
            while True:
                try:
                    kind, value = _answer(read_message(stream))
                except (ValueError, TypeError, KeyError, AttributeError, OSError):
                    raise ServerError(f"the workspace's flow worker gave an unreadable answer; see {self.worker_log}"
                                      ) from None
                if kind == "end":
                    raise ServerError(f"the workspace's flow worker stopped during the {command}; see "
                                      f"{self.worker_log} (iae-privacy server start starts it again)")
                if kind == "progress" and on_progress is not None:
                    on_progress(*value)
                elif kind == "log" and on_log is not None:
                    on_log(*value)
                elif kind == "error":
                    raise _error(*value)
                elif kind == "result":
                    return value
        finally:
            conn.close()

    def stop(self, wait: float = 20.0) -> bool:
        """Stop the recorded server and its flow worker (each if still there); whether the server was running."""
        state = self._recorded()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        if state.worker_pid:
            _stop_process(state.worker_pid, WORKER_PROGRAM, wait)
        self.socket.unlink(missing_ok=True)
        running = _alive(state.pid)
        _stop_process(state.pid, b"prefect", wait)
        return running


WORKER_PROGRAM = b"iae_privacy_flows.worker"
"""The flow worker's module (``python -m``), as its command line shows it."""


class _NoWorker(Exception):
    """Nothing listens on the worker's socket."""


def _stop_process(pid: int, program: bytes, wait: float = 20.0) -> None:
    """End ``pid`` and the processes it started (its session), if it is still the program we started."""
    if not _alive(pid, program):
        return
    for sig, seconds in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:  # ours: reap it
                    return
            except ChildProcessError:
                if not _alive(pid, program):
                    return
            time.sleep(0.2)
