"""Fault class: amnesia writes files.

Before: with amnesia on, ``ron-kernel run --app mod:factory`` wrote ``__pycache__/*.pyc`` next
to the app and into the package: Python's bytecode cache, written while the app (and what it
imports) was imported, before anything looked at the config.

Rule: with amnesia on, the process writes no file. ``main`` turns bytecode writing off on its
first line; ``run`` and ``config check`` read ``amnesia.enabled`` from the sources before the
app's module is imported (``_config.peek``) and turn it back on only when amnesia is off (and
the process's own setting allowed it). Tried: a fresh HOME, TMPDIR and working directory,
``PYTHONDONTWRITEBYTECODE`` unset, an app module and a package of its own in the working
directory; amnesia from the flag, the environment and the config file; ``run`` to a clean
Ctrl-C and ``config check --app``. Nothing new under those directories nor in the installed
package's directory; the same run with amnesia off does write ``__pycache__`` (the check can
see a write).
"""

from __future__ import annotations

import compileall
import signal
import textwrap
import time
from pathlib import Path

from _faults_support import Kernel, in_parallel, kernel_env, started

import ron_kernel

APP = textwrap.dedent("""
    from amnesia_pkg.helpers import greeting

    async def svc(ctx):
        ctx.ready()
        print(greeting(), flush=True)
        await ctx.shutdown.wait()

    def build(kernel):
        kernel.supervise("svc", svc)
""")


def _sandbox(root: Path, name: str) -> tuple[Path, dict[str, str]]:
    home = root / name
    (home / "amnesia_pkg").mkdir(parents=True)
    (home / "amnesia_app.py").write_text(APP)
    (home / "amnesia_pkg" / "__init__.py").write_text("")
    (home / "amnesia_pkg" / "helpers.py").write_text("def greeting():\n    return 'ready'\n")
    env = kernel_env(HOME=str(home), TMPDIR=str(home))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return home, env


def _listing(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def _run(home: Path, env: dict[str, str], args: list[str]) -> int:
    with started() as procs:
        k = Kernel(home, args, env=env, name="kernel")
        procs.append(k)
        if args[0] == "run":
            k.wait_for("the app", lambda: "ready" in k.out)
            k.signal(signal.SIGINT)
        code = k.wait(20)
    for log in ("kernel.out", "kernel.err"):  # the test's own capture files, not the process's
        (home / log).unlink()
    return code


def test_amnesia_on_writes_no_file(tmp_path: Path):
    package = Path(ron_kernel.__file__).resolve().parent
    # The package as pip installs it: compiled. (A checkout never compiled gets bytecode for
    # the few modules the interpreter imports before main's first line: see DECISIONS.)
    compileall.compile_dir(package, quiet=1)
    before = _listing(package)
    start = time.time()
    cases = [
        ("flag", ["run", "--app", "amnesia_app:build", "--amnesia", "on"], {}, ""),
        ("env", ["run", "--app", "amnesia_app:build"], {"RONK_AMNESIA": "on"}, ""),
        ("file", ["run", "--app", "amnesia_app:build"], {},
         "[amnesia]\nenabled = true\n"),
        ("check", ["config", "check", "--app", "amnesia_app:build", "--amnesia", "on"], {}, ""),
    ]

    def one(case: tuple[str, list[str], dict[str, str], str]) -> tuple[str, list[str]]:
        name, args, extra, config = case
        home, env = _sandbox(tmp_path, name)
        env.update(extra)
        if config:
            (home / "Config.toml").write_text(config)
        mine = set(_listing(home))
        assert _run(home, env, args) == 0
        return name, sorted(set(_listing(home)) - mine)

    for name, new in in_parallel(one, cases):
        assert new == [], (name, new)
    after = _listing(package)
    written = sorted(p for p, mtime in after.items() if before.get(p) != mtime or mtime >= start)
    assert written == [], written


def test_the_check_sees_a_write_when_amnesia_is_off(tmp_path: Path):
    home, env = _sandbox(tmp_path, "off")
    assert _run(home, env, ["run", "--app", "amnesia_app:build", "--amnesia", "off"]) == 0
    made = sorted(p.name for p in home.rglob("*.pyc"))
    assert any(n.startswith("amnesia_app.") for n in made), made
    assert any(n.startswith("helpers.") for n in made), made
    assert "PYTHONDONTWRITEBYTECODE" not in env
