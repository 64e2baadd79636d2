"""Run every atheris target for a bounded time: ``python fuzz/run.py --seconds 600``.

Each target gets an equal share of the time, starts from its checked-in corpus
(``fuzz/corpus/<target>/``) and writes any crashing input to ``fuzz/regressions/<target>/``,
where ``tests/test_fuzz_regressions.py`` replays it forever after. Exits 1 when a target crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {
    "events": HERE / "fuzz_events.py",
    "config": HERE / "fuzz_config.py",
}


def main() -> int:
    """Fuzz each target for its share of ``--seconds``; report crashes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600, help="total time (default 600)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n]
    share = max(1, args.seconds // max(1, len(names)))
    failed = []
    for name in names:
        script = TARGETS[name]
        if not script.exists():
            print(f"fuzz: target {name} has no script {script}", file=sys.stderr)
            return 2
        corpus = HERE / "corpus" / name
        regressions = HERE / "regressions" / name
        regressions.mkdir(parents=True, exist_ok=True)
        extra = []
        dictionary = HERE / f"{name}.dict"
        if dictionary.exists():
            extra.append(f"-dict={dictionary}")
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
            cmd = [sys.executable, str(script), f"-max_total_time={share}",
                   f"-artifact_prefix={regressions}/", "-print_final_stats=1", *extra,
                   work, str(corpus)]
            print(f"fuzz: {name} for {share}s", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        tail = "\n".join(proc.stderr.splitlines()[-6:])
        print(tail)
        if proc.returncode != 0:
            failed.append(name)
            print(f"fuzz: {name} FOUND A CRASH (exit {proc.returncode}); the input is in "
                  f"{regressions} and tests/test_fuzz_regressions.py now replays it",
                  file=sys.stderr)
    print(f"fuzz: {len(names) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
