"""atheris target: ``Config.load`` of a TOML/JSON file, ``RONK_*`` env and CLI argv.

It must return a valid, reproducible ``Config`` or raise ``ConfigError`` (with secret values
redacted); anything else (another exception, a crash, a config that does not validate or does not
load back from ``to_toml``) is a bug. The bytes are decoded by ``checks.decode_config_input``
(layout documented there). Run through ``make fuzz`` or
``python fuzz/run.py --targets config --seconds 60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from checks import check_config

from ron_kernel._logging import set_level


def main() -> None:
    """Run the fuzzer with libFuzzer-style arguments."""
    set_level("error")  # the deprecated-alias warning would otherwise log on every such exec
    atheris.Setup(sys.argv, check_config)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
