#!/usr/bin/env bash
# Run the tests that lean on asyncio internals on every other CPython this machine has
# (3.12, 3.13), each in its own venv. Prints which versions ran and which were not found.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITES=(tests/test_supervisor.py tests/test_supervisor_chaos.py tests/test_supervisor_restart.py
        tests/test_bus.py tests/test_kernel_contracts.py
        tests/test_workers.py tests/test_workers_orphans.py)  # processes, pidfds, fd passing
ran=() missing=()
for minor in 3.12 3.13; do
  py=""
  for cand in "python$minor" /root/.pyenv/versions/"$minor".*/bin/python /usr/bin/"python$minor"; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys' >/dev/null 2>&1; then
      py=$(command -v "$cand"); break
    fi
  done
  if [ -z "$py" ]; then missing+=("$minor"); continue; fi
  venv=".venv-$minor"
  if [ ! -x "$venv/bin/pytest" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e '.[dev]'
    touch "$venv/.installed"
  fi
  echo "== CPython $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  "$venv/bin/pytest" -q -p no:cacheprovider "${SUITES[@]}"
  ran+=("$minor")
done
echo "test-pythons: ran on ${ran[*]:-none}; not on this machine: ${missing[*]:-none}"
