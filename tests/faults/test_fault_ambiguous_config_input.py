"""Fault class: config input that is ambiguous or names nothing.

Tried: a JSON config file giving the same key twice (in a section, and a whole section twice:
JSON parsers silently keep the last), ``--config ''`` / ``--config=`` / ``--config '  '`` and
``Config.load("")`` (an empty path became the working directory).

Rule: a JSON file with a duplicate key is refused, naming the dotted key and the file, as TOML
refuses one; an empty or blank config path is an error naming the flag (or the argument). An
empty ``RON_CONFIG`` counts as unset, the shell idiom ``RON_CONFIG= cmd``.
"""

from __future__ import annotations

import pytest

from ron_kernel import Config
from ron_kernel.config import ConfigCell, explain
from ron_kernel.errors import ConfigError


def refused(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(**kwargs)
    return str(info.value)


@pytest.mark.parametrize(("text", "key"), [
    ('{"bus": {"capacity": 8, "capacity": 9}}', "bus.capacity"),
    ('{"bus": {"capacity": 8}, "bus": {"capacity": 9}}', "bus"),
    ('{"bus": {"capacity": 8, "capacity": 9}, "bus": {"capacity": 3}}', "bus.capacity"),
    ('{"log": {"level": "info", "format": "json", "level": "debug"}}', "log.level"),
], ids=["in-section", "whole-section", "in-a-replaced-section", "not-adjacent"])
def test_json_duplicate_keys_are_refused_naming_key_and_file(tmp_path, text, key):
    path = tmp_path / "config.json"
    path.write_text(text)
    message = refused(path=path, env={})
    assert f"{key} (from file:{path}): duplicate key" in message


def test_toml_refuses_duplicates_too(tmp_path):
    path = tmp_path / "Config.toml"
    path.write_text("[bus]\ncapacity = 8\ncapacity = 9\n")
    assert "not valid TOML" in refused(path=path, env={})


def test_a_json_file_without_duplicates_still_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"bus": {"capacity": 8}, "log": {"level": "debug"}}')
    cfg = Config.load(path, env={})
    assert (cfg.bus.capacity, cfg.log.level) == (8, "debug")


@pytest.mark.parametrize("argv", [["--config", ""], ["--config="], ["--config", "   "]],
                         ids=["separate", "equals", "blank"])
def test_an_empty_config_flag_is_an_error_naming_the_flag(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Config.toml").write_text("[bus]\ncapacity = 8\n")  # never silently used instead
    message = refused(env={}, argv=argv)
    assert "--config" in message and "cli:--config" in message and "empty path" in message
    with pytest.raises(ConfigError, match="--config"):
        explain(env={}, argv=argv)
    with pytest.raises(ConfigError, match="--config"):
        ConfigCell(Config(), env={}, argv=argv)


def test_other_problems_are_listed_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = refused(env={}, argv=["--config", "", "--bus-capacity", "0"])
    assert "empty path" in message and "bus.capacity" in message


def test_an_empty_path_argument_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "empty path" in refused(path="", env={})


def test_an_empty_ron_config_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Config.toml").write_text("[bus]\ncapacity = 8\n")
    assert Config.load(env={"RON_CONFIG": ""}).bus.capacity == 8
