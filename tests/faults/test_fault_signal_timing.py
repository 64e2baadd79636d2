"""Fault class: a signal that arrives at the edge of a promise.

Rule: from the moment ``ron-kernel run`` prints that it is running ("Ctrl-C drains and exits"),
Ctrl-C and SIGTERM drain and exit 0, whenever they land: even while the line is being printed,
before ``Kernel.run()`` has installed its own handlers. Tried: in process, a SIGINT sent to the
process from inside the print of that line (the narrowest gap there is). Before the fix it met
asyncio.Runner's handler and the command exited 130 ("interrupted while starting"); an e2e test
that signalled right after the first line failed about one run in four on a loaded machine.
Since issue 11 (signals) the process's own handler (``cli.process``, installed on ``main``'s
first line) covers this gap and every other one before the kernel waits for signals itself.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ron_kernel.cli import main
from ron_kernel.cli import run as run_module


def test_a_ctrl_c_while_running_is_printed_drains_and_exits_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("RON")]:
        monkeypatch.delenv(name)
    seen: list[str] = []
    say = run_module.say

    def say_then_interrupt(text: str, stream: object = None) -> None:
        seen.append(text)
        say(text, stream)  # type: ignore[arg-type]
        if text.startswith("ron-kernel: running"):
            os.kill(os.getpid(), signal.SIGINT)  # delivered now, before Kernel.run() waits

    monkeypatch.setattr(run_module, "say", say_then_interrupt)
    saved = signal.getsignal(signal.SIGINT)
    # main() installs the process's handlers (issue 11: cli.process), as the command does
    assert main(["run", "--loop", "asyncio", "--drain-deadline", "2s"]) == 0
    assert any(text.startswith("ron-kernel: running") for text in seen)
    assert signal.getsignal(signal.SIGINT) is saved
