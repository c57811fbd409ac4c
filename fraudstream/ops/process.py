"""What every local service shares: its Java, its ports, its PID file, its log and its end.

The broker, the three-node cluster, the Spark standalone cluster, PostgreSQL and Kafka
Connect each run as a process in the background, in a session of its own, with its PID
in a file. Each is told apart from an unrelated process that got a recycled PID by the
words its command line must hold; none is ever signalled on a PID alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fraudstream.errors import FraudstreamError


def java() -> str:
    """The ``java`` of ``$JAVA_HOME``, or the one on the ``PATH``."""
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def port_in_use(host: str, port: int) -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_ports(
    host: str, ports: list[int], hint: str, error: type[FraudstreamError]
) -> None:
    """Raise ``error`` naming the first of ``ports`` that another program listens on.

    Parameters
    ----------
    host : str
        The address the service would listen on.
    ports : list of int
        Its ports.
    hint : str
        The end of the sentence: how to choose other ports.
    error : type
        The service's error class.
    """
    for port in ports:
        if port_in_use(host, port):
            raise error(f"Port {port} on {host} is already in use by another program; {hint}")


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited (or is gone) and only waits to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def recorded_pid(pid_file: Path, *words: str) -> int | None:
    """Return the PID of the file's first word if that process runs and is the service.

    Parameters
    ----------
    pid_file : Path
        A file whose first word is a PID (``start`` writes it; PostgreSQL's
        ``postmaster.pid`` is one too).
    *words : str
        Words the process' command line must hold (its main class, its configuration
        file): a recycled PID belongs to another program, which is never signalled.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if all(word in cmdline for word in words) and not is_zombie(pid):
        return pid
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a service's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (FileNotFoundError, PermissionError):
        return "(no log written)"


def launch(
    command: list[str], log: Path, pid_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``command`` in the background, its output appended to ``log``; record its PID.

    The process gets a session of its own, so Ctrl-C in the shell that started it does
    not stop it. The caller waits for it to be ready.
    """
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process


def wait_until_ready(
    ready: Callable[[], bool],
    started: dict[str, tuple[subprocess.Popen, Path]],
    timeout_s: float,
    late: str,
    error: type[FraudstreamError],
) -> None:
    """Poll ``ready`` until it says yes; fail early if a process started for it exits.

    Parameters
    ----------
    ready : callable
        Whether the service serves yet; it may raise ``error`` itself (a failed task).
    started : dict
        The processes launched, by the name a message gives each ("The Kafka broker"),
        with their logs.
    timeout_s : float
        How long to wait.
    late : str
        The message if time runs out, without its end ("within N s; see LOG.").
    error : type
        The service's error class.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, (process, log) in started.items():
            if process.poll() is not None:
                raise error(
                    f"{name} exited with code {process.returncode} while starting; "
                    f"last lines of {log}:\n{log_tail(log)}"
                )
        if ready():
            return
        time.sleep(0.3)
    logs = ", ".join(sorted({str(log) for _, log in started.values()}))
    raise error(f"{late} within {timeout_s:.0f} s; see {logs}.")


def abandon(process: subprocess.Popen, pid_file: Path) -> None:
    """Kill a process that did not come up, and forget its PID."""
    if process.poll() is None:
        process.kill()
        process.wait()
    pid_file.unlink(missing_ok=True)


def terminate(pid: int, timeout_s: float) -> None:
    """Ask ``pid`` to stop (SIGTERM); kill it (SIGKILL) if it still runs after ``timeout_s``."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_zombie(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):  # it ended just now
        os.kill(pid, signal.SIGKILL)
