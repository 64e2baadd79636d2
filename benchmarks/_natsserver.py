"""A throw-away ``nats-server`` on a loopback port, for the federation rig and tests.

The Debian package ``nats-server`` (installed by tools/system-deps.sh) provides the binary. The
server gets a generated config in its own directory, listens on ``127.0.0.1:PORT`` only, and
is stopped by :meth:`NatsServer.stop` (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "find_nats_server", "free_port"]


def find_nats_server() -> str:
    """The ``nats-server`` binary (PATH, then Debian's /usr/sbin); ``FileNotFoundError`` if none."""
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("nats-server is not installed (Debian package nats-server; "
                            "tools/system-deps.sh installs it)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """One ``nats-server`` process on ``127.0.0.1:port`` (a free port unless given)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait (bounded) until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        conf = self.workdir / "nats-server.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\nmax_payload: 1MB\n"
                        "write_deadline: \"2s\"\n")
        self.starts += 1
        log = open(self.workdir / f"nats-server.{self.starts}.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [find_nats_server(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.settimeout(0.5)
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nats-server did not accept connections on port "
                                   f"{self.port} within {timeout}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout``); a no-op when not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def log(self) -> str:
        """The output of the latest run."""
        path = self.workdir / f"nats-server.{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
