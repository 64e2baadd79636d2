"""atheris target: ``KernelEvent.from_json`` must either decode or raise ``ValueError``.

Anything else (another exception, a crash, a decoded event that does not round-trip) is a bug.
Run through ``make fuzz`` or ``python fuzz/run.py --targets events --seconds 60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from checks import check_event


def main() -> None:
    """Run the fuzzer with libFuzzer-style arguments."""
    atheris.Setup(sys.argv, check_event)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
