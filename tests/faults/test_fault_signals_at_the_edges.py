"""Fault class: signals at the edges of the process's life.

Before: a SIGHUP in the first ~0.3 s of ``ron-kernel run`` killed it (the default action, while
Python imported the package), a SIGTERM in the first ~0.5 s ended it without a drain, and after
``shutdown_complete`` SIGHUP was back to its default action and killed a process that would
have exited 0.

Rule: from the first line of ``main`` to the last (and through the interpreter's exit), SIGHUP
is deferred (before the config cell is ready it triggers one reload once it is; after the
kernel stopped it is harmless) and SIGINT/SIGTERM end the process in order with the documented
status: ``run`` exits 0 after SIGTERM (a drain when the kernel was up, nothing to drain before)
and after a SIGINT that drained a started kernel, 130 after a SIGINT before the kernel was up;
``config check`` exits 130/143. No run ever dies by a signal. Tried: real processes, signals at
random moments of the first second after the handlers are in place (``/proc/<pid>/status``
says when: the interpreter's own start, before ``main`` runs, is the one window left, ~30 ms,
printed), a SIGHUP while the app's module is imported, every signal after ``shutdown_complete``.
The seed of the random plan is printed; ``RONK_FAULT_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import os
import random
import signal
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _faults_support import Kernel, events, handled, started

RUNS = 12
PARALLEL = 4

SLOW_IMPORT_APP = textwrap.dedent("""
    import time
    time.sleep({delay})          # the process is still starting while this runs

    async def svc(ctx):
        ctx.ready()
        await ctx.shutdown.wait()

    def build(kernel):
        kernel.supervise("svc", svc)
""")

LINGERING_APP = textwrap.dedent("""
    import atexit, time
    atexit.register(time.sleep, 1.5)   # the process outlives main() and shutdown_complete

    async def svc(ctx):
        ctx.ready()
        await ctx.shutdown.wait()

    def build(kernel):
        kernel.supervise("svc", svc)
""")


def _sighup_reloads(err: str) -> int:
    return sum(1 for e in events(err) if e.get("trigger") == "SIGHUP" and e.get("event") in
               ("config_unchanged", "config_updated", "config_reload_rejected"))


def _one_run(cwd: Path, plan: dict[str, object]) -> dict[str, object]:
    cwd.mkdir()
    args = ["run", "--drain-deadline", "2s"]
    if plan["http"]:
        args += ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]
    with started() as procs:
        k = Kernel(cwd, args)
        procs.append(k)
        handling_after = k.wait_handling()
        t0 = time.monotonic()
        schedule = [(at, signal.SIGHUP) for at in plan["hups"]]  # type: ignore[attr-defined]
        if plan["stop"] is not None:
            schedule.append((plan["at"], plan["stop"]))
        for at, sig in sorted(schedule):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            k.signal(sig)
        if plan["stop"] is None:
            time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
            assert k.p.poll() is None, f"{plan}: exited {k.p.returncode}\n{k.err[-3000:]}"
            k.wait_for("kernel_started", lambda: '"event":"kernel_started"' in k.err)
            if plan["hups"]:
                k.wait_for("the SIGHUP reload", lambda: _sighup_reloads(k.err) >= 1, 5)
            k.signal(signal.SIGTERM)
        code = k.wait(30)
        return {"plan": plan, "code": code, "err": k.err, "handling_after": handling_after}


def test_signals_at_random_moments_of_the_first_second_end_in_order(tmp_path: Path):
    seed = int(os.environ.get("RONK_FAULT_SEED", time.time_ns() % 2**32))
    print(f"\nRONK_FAULT_SEED={seed}")
    rng = random.Random(seed)
    plans = [{"hups": sorted(rng.uniform(0, 1) for _ in range(rng.randint(0, 3))),
              "stop": rng.choice([signal.SIGINT, signal.SIGTERM, None]),
              "at": rng.uniform(0, 1), "http": rng.random() < 0.5} for _ in range(RUNS)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda ip: _one_run(tmp_path / f"run{ip[0]}", ip[1]),
                                enumerate(plans)))
    windows = sorted(float(r["handling_after"]) for r in results)  # type: ignore[arg-type]
    print(f"handlers in place {windows[0] * 1e3:.0f}-{windows[-1] * 1e3:.0f} ms after exec "
          f"(the interpreter's start, before main)")
    for r in results:
        plan, code, err = r["plan"], r["code"], str(r["err"])
        where = f"seed {seed}, {plan}: exit {code}\n{err[-3000:]}"
        assert isinstance(code, int) and code >= 0, "died by a signal: " + where
        assert "Traceback" not in err, where
        stop = plan["stop"]  # type: ignore[index]
        if stop is signal.SIGINT:
            assert code in (0, 130), where
            if code == 130:
                assert "stopped_while_starting" in err or "stopped by SIGINT" in err, where
        else:  # SIGTERM, or SIGTERM after the first second
            assert code == 0, where
        if code == 0:
            assert '"event":"shutdown_complete"' in err or "stopped by SIGTERM" in err \
                or "stopped_while_starting" in err, where


def test_the_handlers_are_in_place_before_any_work(tmp_path: Path):
    # Before: SIGHUP kept its default action until Kernel.start, long after the imports, the
    # config and the app's module. Now main's first line installs the handlers, before any of
    # that: they are seen before the first output of a run whose app takes 1 s to import.
    (tmp_path / "slow_app.py").write_text(SLOW_IMPORT_APP.format(delay=1.0))
    with started() as procs:
        k = Kernel(tmp_path, ["run", "--app", "slow_app:build"])
        procs.append(k)
        deadline = time.monotonic() + 20
        while not all(handled(k.p.pid, s) for s in (signal.SIGHUP, signal.SIGTERM)):
            assert k.err_path.stat().st_size == 0 and k.out_path.stat().st_size == 0, \
                f"working before handling SIGHUP/SIGTERM:\n{k.err[-3000:]}"
            assert k.p.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        print(f"\nhandlers in place {(time.monotonic() - k.started) * 1e3:.0f} ms after exec")
        k.signal(signal.SIGTERM)
        assert k.wait(15) == 0


def test_a_sighup_before_the_kernel_is_up_reloads_once_when_it_is(tmp_path: Path):
    (tmp_path / "slow_app.py").write_text(SLOW_IMPORT_APP.format(delay=1.0))
    with started() as procs:
        k = Kernel(tmp_path, ["run", "--app", "slow_app:build"])
        procs.append(k)
        k.wait_handling()
        for _ in range(3):  # while the app's module is imported (and again: still one)
            k.signal(signal.SIGHUP)
            time.sleep(0.05)
        k.wait_for("kernel_started", lambda: '"event":"kernel_started"' in k.err)
        k.wait_for("the deferred reload", lambda: _sighup_reloads(k.err) >= 1, 5)
        time.sleep(0.3)
        assert _sighup_reloads(k.err) == 1, k.err[-3000:]
        k.signal(signal.SIGTERM)
        assert k.wait(15) == 0, k.err[-3000:]


def test_a_stop_signal_before_the_kernel_is_up_ends_in_order(tmp_path: Path):
    (tmp_path / "slow_app.py").write_text(SLOW_IMPORT_APP.format(delay=2.0))
    cases = [(["run", "--app", "slow_app:build"], signal.SIGINT, 130),
             (["run", "--app", "slow_app:build"], signal.SIGTERM, 0),
             (["config", "check", "--app", "slow_app:build"], signal.SIGINT, 130),
             (["config", "check", "--app", "slow_app:build"], signal.SIGTERM, 143)]
    with started() as procs:
        for i, (args, _, _) in enumerate(cases):
            procs.append(Kernel(tmp_path, args, name=f"case{i}"))
        for k, (_, sig, _) in zip(procs, cases, strict=True):
            k.wait_handling()
            time.sleep(0.2)
            k.signal(sig)
        for k, (args, sig, expected) in zip(procs, cases, strict=True):
            code = k.wait(15)
            assert code == expected, (args, sig.name, code, k.err[-3000:])
            assert "Traceback" not in k.err, k.err[-3000:]
            assert f"stopped by {sig.name}" in k.err, k.err[-3000:]


def test_after_shutdown_complete_no_signal_changes_the_exit(tmp_path: Path):
    (tmp_path / "lingering_app.py").write_text(LINGERING_APP)
    with started() as procs:
        k = Kernel(tmp_path, ["run", "--app", "lingering_app:build"])
        procs.append(k)
        k.wait_for("kernel_started", lambda: '"event":"kernel_started"' in k.err)
        k.signal(signal.SIGTERM)
        k.wait_for("shutdown_complete", lambda: '"event":"shutdown_complete"' in k.err)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            assert k.p.poll() is None, "the atexit sleep keeps it alive for 1.5 s"
            k.signal(sig)
            time.sleep(0.05)
        assert k.wait(15) == 0, k.err[-3000:]
