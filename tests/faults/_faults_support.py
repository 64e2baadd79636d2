"""Helpers shared by the fault-injection suite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ----------------------------------------------------------------------------- real processes

PY = sys.executable


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment of a ``ron-kernel`` under test: nothing of the developer's RONK_*/RON_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RONK_", "RON_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def handled(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` catches or ignores ``sig`` (``/proc/<pid>/status``), i.e. its
    default action (for SIGHUP/SIGTERM: death) no longer applies."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    bit = 1 << (int(sig) - 1)
    return any(int(masks.get(name, "0"), 16) & bit for name in ("SigCgt", "SigIgn"))


class Kernel:
    """A ``python -m ron_kernel ...`` process, stdout/stderr in files; every wait is bounded."""

    def __init__(self, cwd: Path, args: list[str], *, env: dict[str, str] | None = None,
                 name: str = "kernel", exe: list[str] | None = None) -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([*(exe or [PY, "-m", "ron_kernel"]), *args], cwd=cwd,
                                      env=env or kernel_env(), stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, what: str, cond: Callable[[], object], within: float = 15.0) -> None:
        """Wait until ``cond()``; fail (with the output) if the process ends or time is up."""
        deadline = time.monotonic() + within
        while not cond():
            if self.p.poll() is not None and not cond():
                raise AssertionError(f"exited {self.p.returncode} before {what}:\n"
                                     f"{self.out[-2000:]}\n{self.err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.out[-2000:]}\n"
                                     f"{self.err[-3000:]}")
            time.sleep(0.005)

    def wait_handling(self, within: float = 15.0) -> float:
        """Wait until the process handles SIGHUP, SIGINT and SIGTERM; seconds since start."""
        self.wait_for("its signal handlers",
                      lambda: all(handled(self.p.pid, s) for s in
                                  (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)), within)
        return time.monotonic() - self.started

    def signal(self, sig: signal.Signals) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, within: float) -> int:
        """The exit status, within ``within`` seconds (the process is killed after that)."""
        try:
            return self.p.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {within}s:\n{self.out[-2000:]}\n"
                                 f"{self.err[-3000:]}") from None

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


def events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (others skipped)."""
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


@contextmanager
def started() -> Iterator[list[Kernel]]:
    """Collect the processes a test starts; every one still running at the end is killed."""
    procs: list[Kernel] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def in_parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = 4) -> list[R]:
    """``[fn(item) for item in items]``, up to ``workers`` at a time (real processes wait on
    I/O and timers: running a few together keeps the suite fast); the first failure raises."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
