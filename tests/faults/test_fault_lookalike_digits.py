"""Fault class: numbers written with digits that are not ASCII.

Tried: ``RONK_BUS_CAPACITY=١٢`` (Arabic-Indic; it became 12 through ``int()``) and other
Unicode decimal digits -- Extended Arabic-Indic, Devanagari, Bengali, fullwidth, mathematical
bold, one mixed with ASCII -- in integers, durations and ports, from the environment, a flag
and a file (TOML and JSON).

Rule: numbers are ASCII ``0-9`` only (the integer, duration and address parsers); anything else
is refused with a message naming the key and the source of the value.
"""

from __future__ import annotations

import json

import pytest

from ron_kernel import Config
from ron_kernel.config import parse_duration
from ron_kernel.errors import ConfigError

TWELVE = {
    "arabic-indic": "١٢",
    "extended-arabic-indic": "۱۲",
    "devanagari": "१२",
    "bengali": "১২",
    "fullwidth": "\uff11\uff12",  # escaped: they look exactly like 12
    "math-bold": "\U0001d7cf\U0001d7d0",
    "mixed": "1٢",
}


def refused(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(**kwargs)
    return str(info.value)


@pytest.mark.parametrize("digits", TWELVE.values(), ids=TWELVE.keys())
def test_int_from_env_and_flag_is_refused_naming_key_and_source(digits):
    assert int(digits) == 12  # what Python alone would have accepted
    message = refused(env={"RONK_BUS_CAPACITY": digits}, argv=[])
    assert "bus.capacity" in message and "env:RONK_BUS_CAPACITY" in message
    assert "not an integer" in message
    message = refused(env={}, argv=["--sup-restart-cap", digits])
    assert "supervisor.restart_cap" in message and "cli:--sup-restart-cap" in message


@pytest.mark.parametrize("digits", TWELVE.values(), ids=TWELVE.keys())
def test_duration_from_env_flag_and_file_is_refused_naming_key_and_source(digits, tmp_path):
    with pytest.raises(ValueError, match="cannot parse"):
        parse_duration(f"{digits}ms")
    message = refused(env={"RONK_SUP_MIN": f"{digits}ms"}, argv=[])
    assert "supervisor.min_backoff" in message and "env:RONK_SUP_MIN" in message
    message = refused(env={}, argv=[f"--drain-deadline={digits}s"])
    assert "shutdown.drain_deadline" in message and "cli:--drain-deadline" in message
    path = tmp_path / "Config.toml"
    path.write_text(f'[supervisor]\nmax_backoff = "{digits}s"\n')
    message = refused(path=path, env={})
    assert "supervisor.max_backoff" in message and f"file:{path}" in message


@pytest.mark.parametrize("digits", TWELVE.values(), ids=TWELVE.keys())
def test_file_values_are_refused_in_toml_and_json(digits, tmp_path):
    toml = tmp_path / "bare.toml"
    toml.write_text(f"[bus]\ncapacity = {digits}\n")
    message = refused(path=toml, env={})  # the TOML parser refuses it: names file, line, column
    assert f"file:{toml}" in message and "not valid TOML" in message and "line 2" in message
    quoted = tmp_path / "quoted.toml"
    quoted.write_text(f'[bus]\ncapacity = "{digits}"\n')
    message = refused(path=quoted, env={})
    assert "bus.capacity" in message and f"file:{quoted}" in message
    doc = tmp_path / "config.json"
    doc.write_text(json.dumps({"bus": {"capacity": digits}}, ensure_ascii=False))
    message = refused(path=doc, env={})
    assert "bus.capacity" in message and f"file:{doc}" in message


@pytest.mark.parametrize("digits", ["٩٩٠٩", "\uff19\uff19\uff10\uff19"],
                         ids=["arabic-indic", "fullwidth"])
def test_a_port_is_refused_naming_key_and_source(digits):
    message = refused(env={"RONK_OBS_ADDR": f"127.0.0.1:{digits}"}, argv=[])
    assert "observability.addr" in message and "env:RONK_OBS_ADDR" in message


def test_ascii_digits_still_work_everywhere(tmp_path):
    cfg = Config.load(env={"RONK_BUS_CAPACITY": "12", "RONK_SUP_MIN": "15ms"},
                      argv=["--sup-restart-cap", "7", "--obs-addr", "127.0.0.1:9909"])
    assert (cfg.bus.capacity, cfg.supervisor.restart_cap) == (12, 7)
    assert cfg.supervisor.min_backoff.total_seconds() == 0.015
