"""Amnesia: every observability part runs without writing a single file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter whose cwd, HOME and TMPDIR are one empty directory.
SCRIPT = r'''
import asyncio, io, sys
import aiohttp
from ron_kernel import Bus, HealthState, Metrics
from ron_kernel import _tracing
from ron_kernel._logging import bind_corr_id, configure_logging, get_logger

async def main():
    configure_logging(format="json", level="debug", amnesia=True)  # stderr only
    m = Metrics(amnesia=True)
    bus = Bus(capacity=8, metrics=m)
    m.health.attach_bus(bus)
    m.health.configure_pq("hybrid", True)
    m.health.set("svc-a", True)
    m.health.report_pq_posture("svc-a", "classical")
    with bind_corr_id(), _tracing.kernel_span("kernel", "amnesia_check"):
        get_logger("kernel").info("amnesia_check", token="never-shown")
    text = m.render().decode()
    task, (host, port) = await m.serve("127.0.0.1:0")
    async with aiohttp.ClientSession() as s:
        for path in ("/metrics", "/healthz", "/readyz", "/nope"):
            async with s.get(f"http://{host}:{port}{path}") as r:
                body = await r.text()
                print(path, r.status)
                if path == "/metrics":
                    text += body
                if path == "/readyz":
                    assert '"amnesia":"on"' in body, body
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    kernel = [l for l in text.splitlines()
              if l and not l.startswith(("#", "process_", "python_"))]
    assert kernel and all('amnesia="on"' in l for l in kernel), kernel
    assert 'amnesia="off"' not in text
    print("done")

asyncio.run(main())
'''


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_amnesia_writes_no_file(tmp_path: Path):
    home = tmp_path / "sandbox"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "XDG_"))}
    env.update(HOME=str(home), TMPDIR=str(home))
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=home, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["/metrics 200", "/healthz 200", "/readyz 503",
                                       "/nope 404", "done"]
    # logs went to stderr, with amnesia on and the secret redacted
    assert '"event":"amnesia_check"' in out.stderr and '"amnesia":"on"' in out.stderr
    assert "never-shown" not in out.stderr
    assert '"event":"pq_downgrade_detected"' in out.stderr
    assert _files(home) == []
