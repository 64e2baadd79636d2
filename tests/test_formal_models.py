"""The Promela models of the bus and the supervisor (specs/) verify with spin, and can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _require_spin() -> None:
    missing = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
    assert not missing, f"{missing} not on PATH: install Debian's spin and gcc (.ci/run does)"


def test_spin_verifies_the_bus_and_supervisor_models():
    _require_spin()
    proc = subprocess.run([str(SPECS / "check.sh")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok (") == 4, proc.stdout


def test_the_bus_model_catches_a_cursor_bug(tmp_path: Path):
    # A receiver that skips one message too many after lag must violate the no-silent-loss
    # assertion: proof that the model's assertions have teeth.
    _require_spin()
    model = (SPECS / "bus.pml").read_text()
    mutant = model.replace("next = tail - CAP\n", "next = tail - CAP + 1\n")
    assert mutant != model
    (tmp_path / "mutant.pml").write_text(mutant)
    subprocess.run(["spin", "-a", "mutant.pml"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["gcc", "-O2", "-DSAFETY", "-o", "pan", "pan.c"], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run(["./pan", "-m200000"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False).stdout
    assert "assertion violated" in out
