"""Fault class: an ``--app`` module that does not import.

Before: an ``--app`` module with a ``SyntaxError``, or one raising while it is imported (a
missing dependency, a bad setting read at import), ended ``ron-kernel run`` and ``config
check`` in a 20-line traceback through importlib.

Rule: one clear line on stderr naming the module, the file and line, and the error, and exit
status 1 (the module exists: this is not a usage error; a module that does not exist stays a
usage error, status 2). The traceback is shown only with ``--log-level debug`` (or
``RONK_LOG_LEVEL=debug``, or trace). Tried: a syntax error, a ``RuntimeError`` at import with a
multi-line message, a missing dependency, each with ``run`` and ``config check``, with and
without debug; a module that does not exist.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from _faults_support import PY, in_parallel, kernel_env

MODULES = {
    "syntax_app": "def build(kernel):\n    return (\n",
    "raising_app": "import os\n\nraise RuntimeError('no database configured\\nset DB_URL')\n",
    "needy_app": "import definitely_not_installed_dep\n\ndef build(kernel):\n    pass\n",
}


def _run(cwd: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "ron_kernel", *args], cwd=cwd, env=kernel_env(**env),
                          capture_output=True, text=True, timeout=30)


def test_a_module_that_fails_to_import_is_one_clear_line_and_exit_1(tmp_path: Path):
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    cases = [  # args, extra env, expected status, what the line says
        (["run", "--app", "syntax_app:build"], {}, 1,
         ("syntax_app", "syntax_app.py, line 2", "was never closed")),
        (["config", "check", "--app", "syntax_app:build"], {}, 1,
         ("config check: error:", "syntax_app.py, line 2")),
        (["run", "--app", "raising_app:build"], {}, 1,
         ("importing raising_app failed", "raising_app.py, line 3",
          "RuntimeError: no database configured set DB_URL")),
        (["run", "--app", "needy_app:build"], {}, 1,
         ("importing needy_app failed", "needy_app.py, line 1",
          "ModuleNotFoundError", "definitely_not_installed_dep")),
        (["run", "--app", "no_such_module:build"], {}, 2, ("cannot import 'no_such_module'",)),
    ]

    def one(case: tuple[list[str], dict[str, str], int, tuple[str, ...]]) -> None:
        args, env, expected, needles = case
        done = _run(tmp_path, args, **env)
        assert done.returncode == expected, (args, done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
        for needle in needles:
            assert needle in lines[0], (args, needle, lines[0])

    in_parallel(one, cases)


def test_debug_shows_the_traceback_too(tmp_path: Path):
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    cases = [(["run", "--app", "raising_app:build", "--log-level", "debug"], {}),
             (["config", "check", "--app", "syntax_app:build"], {"RONK_LOG_LEVEL": "debug"})]

    def one(case: tuple[list[str], dict[str, str]]) -> None:
        args, env = case
        done = _run(tmp_path, args, **env)
        assert done.returncode == 1, done.stderr
        first, *rest = done.stderr.splitlines()
        assert "error:" in first and "line" in first
        assert rest and rest[0].startswith("Traceback"), done.stderr

    in_parallel(one, cases)
