"""Every input a fuzzer ever crashed on, and the seed corpus, replayed as a regression test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import checks  # noqa: E402

CHECKS = {"events": checks.check_event}
if hasattr(checks, "check_config"):
    CHECKS["config"] = checks.check_config


def _inputs() -> list[tuple[str, Path]]:
    found = []
    for target in CHECKS:
        for folder in ("corpus", "regressions"):
            for path in sorted((FUZZ / folder / target).glob("*")):
                if path.is_file() and not path.name.startswith("."):
                    found.append((target, path))
    return found


INPUTS = _inputs()


def test_every_fuzz_target_has_a_seed_corpus():
    targets_with_corpus = {t for t, p in INPUTS if p.parent.parent.name == "corpus"}
    assert targets_with_corpus == set(CHECKS)


@pytest.mark.parametrize(("target", "path"), INPUTS,
                         ids=[f"{t}/{p.parent.parent.name}/{p.name}" for t, p in INPUTS])
def test_fuzz_input_is_handled_cleanly(target: str, path: Path) -> None:
    CHECKS[target](path.read_bytes())
