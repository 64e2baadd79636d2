"""Config: schema and defaults, durations, sources and precedence, fail-closed validation."""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ron_kernel
from ron_kernel import Config
from ron_kernel import _config as cfgmod
from ron_kernel.config import (
    BusConfig,
    SupervisorConfig,
    add_config_arguments,
    config_argv,
    explain,
    format_duration,
    parse_duration,
    reload_class,
)
from ron_kernel.errors import ConfigError

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    # the default file is ./Config.toml: every test gets an empty working directory
    monkeypatch.chdir(tmp_path)


def load(**kw):
    kw.setdefault("env", NO_ENV)
    return Config.load(**kw)


def problems_of(**kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**kw)
    return info.value.problems


# ----------------------------------------------------------------------------- schema


def test_config_is_exported_and_defaults_match_config_md_section_3():
    assert "Config" in ron_kernel.__all__
    c = Config()
    assert c.supervisor.min_backoff == timedelta(milliseconds=100)
    assert c.supervisor.max_backoff == timedelta(seconds=30)
    assert c.supervisor.restart_cap == 5
    assert c.supervisor.restart_window == timedelta(seconds=60)
    assert c.supervisor.reset_after == timedelta(seconds=30)
    assert c.bus.capacity == 4096
    assert c.amnesia.enabled is False
    assert (c.pq.mode, c.pq.require_pq) == ("off", False)
    assert (c.observability.expose_http, c.observability.addr) == (False, "127.0.0.1:0")
    assert c.observability.host_port == ("127.0.0.1", 0)
    assert (c.log.format, c.log.level) == ("json", "info")
    assert c.shutdown.drain_deadline == timedelta(seconds=5)
    assert c.version == 1
    c.validate()


def test_config_objects_are_immutable_and_hashable():
    c = Config()
    with pytest.raises(AttributeError):
        c.bus.capacity = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.version = 2  # type: ignore[misc]
    assert hash(c) == hash(Config()) and c == Config()


def test_missing_default_file_gives_defaults():
    assert load() == Config()


def test_validate_rejects_a_directly_built_bad_config_naming_the_key():
    bad = Config(bus=BusConfig(capacity=0),
                 supervisor=SupervisorConfig(min_backoff=timedelta(seconds=1),
                                             max_backoff=timedelta(milliseconds=1)))
    with pytest.raises(ConfigError) as info:
        bad.validate()
    text = str(info.value)
    assert "bus.capacity" in text and "(from value)" in text
    assert isinstance(info.value, ValueError)


def test_from_mapping_applies_over_a_base_and_validates():
    c = Config.from_mapping({"bus": {"capacity": 8}, "log": {"level": "debug"}})
    assert (c.bus.capacity, c.log.level) == (8, "debug")
    d = Config.from_mapping({"pq": {"mode": "hybrid"}}, base=c)
    assert (d.bus.capacity, d.pq.mode) == (8, "hybrid")
    with pytest.raises(ConfigError, match=r"bus\.capacity.*from api"):
        Config.from_mapping({"bus": {"capacity": -1}})


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "expected"), [
    ("100ms", timedelta(milliseconds=100)),
    ("1.5s", timedelta(seconds=1.5)),
    ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)),
    ("1h", timedelta(hours=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("250us", timedelta(microseconds=250)),
    ("250µs", timedelta(microseconds=250)),
    (" 2m3s ", timedelta(minutes=2, seconds=3)),
    ("0s", timedelta(0)),
])
def test_parse_duration_accepts_the_documented_forms(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("5", r"bare number has no unit; write '5s' or '5ms'"),
    ("1.5", r"bare number"),
    ("-5s", r"negative"),
    ("-5", r"negative"),
    ("25h", r"absurdly long"),
    ("5 s", r"cannot parse"),
    ("5sec", r"cannot parse"),
    ("30m1h", r"largest first"),
    ("1s1s", r"largest first"),
    ("", r"empty"),
    ("abc", r"cannot parse"),
    ("1" * 100 + "h", r"too long"),
])
def test_parse_duration_rejects_with_a_specific_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


durations = st.integers(min_value=0, max_value=24 * 3600 * 10**6).map(
    lambda us: timedelta(microseconds=us))


@given(durations)
def test_duration_round_trips_through_its_text_form(d):
    assert parse_duration(format_duration(d)) == d


@given(st.lists(st.tuples(st.sampled_from(["h", "m", "s", "ms", "us"]),
                          st.integers(min_value=0, max_value=20)),
                min_size=1, max_size=5, unique_by=lambda p: p[0]))
def test_duration_text_is_the_sum_of_its_parts(parts):
    order = ["h", "m", "s", "ms", "us"]
    parts = sorted(parts, key=lambda p: order.index(p[0]))
    text = "".join(f"{n}{u}" for u, n in parts)
    unit = {"h": 3600e6, "m": 60e6, "s": 1e6, "ms": 1e3, "us": 1}
    assert parse_duration(text) == timedelta(microseconds=sum(int(unit[u]) * n for u, n in parts))


# ----------------------------------------------------------------------------- sources


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_file_in_the_working_directory_is_read(tmp_path):
    write(tmp_path / "Config.toml", '[bus]\ncapacity = 16\n[supervisor]\nmin_backoff = "1s"\n')
    c = load()
    assert c.bus.capacity == 16 and c.supervisor.min_backoff == timedelta(seconds=1)


def test_json_file_is_chosen_by_extension(tmp_path):
    data = {"log": {"format": "text"}, "amnesia": {"enabled": True}}
    write(tmp_path / "k.json", json.dumps(data))
    c = load(path="k.json")
    assert c.log.format == "text" and c.amnesia.enabled is True


def test_spec_example_file_loads(tmp_path):
    write(tmp_path / "Config.toml", """
[supervisor]
min_backoff   = "100ms"
max_backoff   = "30s"
restart_cap   = 5         # max restarts per window
restart_window= "60s"

[bus]
capacity = 4096

[amnesia]
enabled = false

[pq]
mode = "off"

[observability]
expose_http = false
addr        = "127.0.0.1:0"

[log]
format = "json"
level  = "info"
""")
    assert load() == Config()


def test_explicitly_named_missing_file_is_an_error_naming_the_source(tmp_path):
    for kw, name in (({"path": "nope.toml"}, "nope.toml"),
                     ({"argv": ["--config", "x.toml"]}, "x.toml"),
                     ({"env": {"RON_CONFIG": "y.toml"}}, "y.toml")):
        [problem] = problems_of(**kw)
        assert "file not found" in problem and f"file:{tmp_path / name}" in problem


def test_config_path_precedence_cli_over_argument_over_env(tmp_path):
    write(tmp_path / "a.toml", "[bus]\ncapacity = 1\n")
    write(tmp_path / "b.toml", "[bus]\ncapacity = 2\n")
    write(tmp_path / "c.toml", "[bus]\ncapacity = 3\n")
    env = {"RON_CONFIG": "c.toml"}
    assert load(env=env).bus.capacity == 3
    assert load(path="b.toml", env=env).bus.capacity == 2
    assert load(path="b.toml", env=env, argv=["--config", "a.toml"]).bus.capacity == 1
    sub = tmp_path / "sub"
    sub.mkdir()
    write(sub / "d.toml", "[bus]\ncapacity = 4\n")
    assert load(path="sub/d.toml").bus.capacity == 4  # relative to the working directory


def test_every_env_var_and_flag_of_the_spec_is_understood():
    env = {"RONK_SUP_MIN": "1ms", "RONK_SUP_MAX": "2s", "RONK_SUP_RESTART_CAP": "7",
           "RONK_SUP_WINDOW": "5m", "RONK_SUP_RESET_AFTER": "9s", "RONK_BUS_CAPACITY": "64",
           "RONK_AMNESIA": "on", "RONK_PQ_MODE": "pq-only", "RONK_PQ_REQUIRE": "true",
           "RONK_OBS_HTTP": "true", "RONK_OBS_ADDR": "127.0.0.1:9909",
           "RONK_LOG_FORMAT": "text", "RONK_LOG_LEVEL": "warn", "RONK_DRAIN_DEADLINE": "250ms"}
    from_env = load(env=env)
    argv = ["--sup-min-backoff", "1ms", "--sup-max-backoff", "2s", "--sup-restart-cap", "7",
            "--sup-restart-window", "5m", "--sup-reset-after", "9s", "--bus-capacity", "64",
            "--amnesia", "on", "--pq", "pq-only", "--pq-require", "true", "--obs-http", "true",
            "--obs-addr=127.0.0.1:9909", "--log-format", "text", "--log-level", "warn",
            "--drain-deadline", "250ms"]
    from_cli = load(argv=argv)
    assert from_env == from_cli
    assert from_cli.supervisor == SupervisorConfig(
        min_backoff=timedelta(milliseconds=1), max_backoff=timedelta(seconds=2), restart_cap=7,
        restart_window=timedelta(minutes=5), reset_after=timedelta(seconds=9))
    assert (from_cli.bus.capacity, from_cli.amnesia.enabled, from_cli.pq.mode,
            from_cli.pq.require_pq, from_cli.observability.expose_http,
            from_cli.observability.addr, from_cli.log.format, from_cli.log.level,
            from_cli.shutdown.drain_deadline) == (
        64, True, "pq-only", True, True, "127.0.0.1:9909", "text", "warn",
        timedelta(milliseconds=250))


def test_runbook_metrics_addr_is_an_alias_below_ronk_obs_addr():
    assert load(env={"RON_KERNEL_METRICS_ADDR": "127.0.0.1:9909"}).observability.addr == \
        "127.0.0.1:9909"
    both = {"RON_KERNEL_METRICS_ADDR": "127.0.0.1:9909", "RONK_OBS_ADDR": "127.0.0.1:1"}
    assert load(env=both).observability.addr == "127.0.0.1:1"


def test_argparse_integration_round_trips_the_flags():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_arguments(parser)
    ns = parser.parse_args(["--bus-capacity", "8", "--amnesia", "on", "--log-level", "debug"])
    argv = config_argv(ns)
    assert argv == ["--bus-capacity", "8", "--amnesia", "on", "--log-level", "debug"]
    c = load(argv=argv)
    assert (c.bus.capacity, c.amnesia.enabled, c.log.level) == (8, True, "debug")
    flags = {a for action in parser._actions for a in action.option_strings} - {"-h", "--help"}
    assert flags == set(cfgmod.KNOWN_FLAGS)


def test_explain_names_the_source_of_every_value(tmp_path):
    write(tmp_path / "Config.toml", "[bus]\ncapacity = 16\n[log]\nlevel = 'debug'\n")
    rows = {r.key: r for r in explain(env={"RONK_LOG_LEVEL": "warn"},
                                      argv=["--amnesia", "on"])}
    assert set(rows) == set(cfgmod.FIELDS)
    assert rows["bus.capacity"].source == f"file:{tmp_path / 'Config.toml'}:2"
    assert rows["bus.capacity"].value == "16"
    assert rows["log.level"].source == "env:RONK_LOG_LEVEL"
    assert rows["amnesia.enabled"] == ("amnesia.enabled", "true", "cli:--amnesia")
    assert rows["supervisor.min_backoff"] == ("supervisor.min_backoff", "100ms", "default")


def test_reload_classes_follow_config_md_section_5():
    assert reload_class("log.level") == "immediate"
    assert reload_class("amnesia.enabled") == "immediate"
    assert reload_class("pq.mode") == "immediate"
    assert reload_class("supervisor.restart_cap") == "next-restart"
    assert reload_class("bus.capacity") == "next-start"
    assert reload_class("observability.addr") == "next-start"


# ----------------------------------------------------------------------------- precedence law

LAYER_VALUES = {
    "bus.capacity": (st.integers(1, 10_000), str, lambda v: v),
    "supervisor.restart_cap": (st.integers(1, 100), str, lambda v: v),
    "log.level": (st.sampled_from(cfgmod.LOG_LEVELS), str, lambda v: v),
    "amnesia.enabled": (st.booleans(), lambda v: "on" if v else "off", lambda v: v),
    "supervisor.restart_window": (st.integers(1, 10**6).map(lambda ms: timedelta(milliseconds=ms)),
                                  format_duration, format_duration),
}


@st.composite
def layered(draw):
    """Per key: an optional value in each of the file, env and CLI layers."""
    chosen = {}
    for key, (values, _, _) in LAYER_VALUES.items():
        chosen[key] = [draw(st.none() | values) for _ in range(3)]
    return chosen


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layered())
def test_precedence_cli_over_env_over_file_over_defaults(tmp_path, layers):
    file_sections: dict[str, dict[str, object]] = {}
    env: dict[str, str] = {}
    argv: list[str] = []
    for key, (file_v, env_v, cli_v) in layers.items():
        _, to_text, to_file = LAYER_VALUES[key]
        fld = cfgmod.FIELDS[key]
        section, name = key.split(".")
        if file_v is not None:
            file_sections.setdefault(section, {})[name] = to_file(file_v)
        if env_v is not None:
            env[fld.env] = to_text(env_v)
        if cli_v is not None:
            argv += [fld.flag, to_text(cli_v)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(file_sections))
    resolved = cfgmod.resolve(path, env=env, argv=argv)
    flat = resolved.config.flat()
    defaults = Config().flat()
    for key, (file_v, env_v, cli_v) in layers.items():
        expected, source = defaults[key], "default"
        for value, src in ((file_v, f"file:{path}"), (env_v, f"env:{cfgmod.FIELDS[key].env}"),
                           (cli_v, f"cli:{cfgmod.FIELDS[key].flag}")):
            if value is not None:
                expected, source = value, src
        assert flat[key] == expected
        assert resolved.sources[key] == source
    # idempotent: the effective config written out as a file loads back to itself
    out = tmp_path / "out.toml"
    out.write_text(cfgmod.to_toml(resolved.config))
    assert Config.load(out, env={}) == resolved.config


@given(st.lists(st.dictionaries(st.sampled_from(sorted(cfgmod.FIELDS)),
                                st.integers(0, 3).map(lambda i: cfgmod.Raw(i, f"s{i}", False)),
                                max_size=5), max_size=4))
def test_merge_is_idempotent_and_associative(layers):
    merge = cfgmod.merge
    assert merge(layers + layers) == merge(layers)
    assert merge([merge(layers), merge(layers)]) == merge(layers)
    for cut in range(len(layers) + 1):
        assert merge([merge(layers[:cut]), merge(layers[cut:])]) == merge(layers)


# ----------------------------------------------------------------------------- bad input


def test_typo_in_a_file_key_names_the_key_the_file_and_suggests(tmp_path):
    write(tmp_path / "Config.toml", "[bus]\ncapacty = 16\n")
    [problem] = problems_of()
    assert problem.startswith("bus.capacty = 16")
    assert f"file:{tmp_path / 'Config.toml'}" in problem
    assert "did you mean capacity?" in problem


def test_half_written_file_names_the_file_and_the_position(tmp_path):
    write(tmp_path / "Config.toml", '[bus]\ncapacity = 16\n[supervisor]\nmin_backoff = "10')
    [problem] = problems_of()
    assert f"file:{tmp_path / 'Config.toml'}" in problem
    assert "not valid TOML" in problem and "Unterminated string" in problem
    write(tmp_path / "Config.toml", "[bus]\ncapacity = \n")
    [problem] = problems_of()
    assert problem.startswith(f"config file (from file:{tmp_path / 'Config.toml'})")
    assert "line 2" in problem


def test_bus_capacity_zero_from_env_names_the_key_and_the_variable():
    [problem] = problems_of(env={"RONK_BUS_CAPACITY": "0"})
    assert problem.startswith("bus.capacity = '0' (from env:RONK_BUS_CAPACITY)")
    assert "expected an integer from 1 to" in problem


def test_duration_flag_without_unit_suggests_one():
    [problem] = problems_of(argv=["--sup-min-backoff", "5"])
    assert "supervisor.min_backoff" in problem and "cli:--sup-min-backoff" in problem
    assert "'5s'" in problem


def test_address_without_port_names_the_key_and_the_source():
    [problem] = problems_of(env={"RONK_OBS_HTTP": "true", "RONK_OBS_ADDR": "127.0.0.1"})
    assert "observability.addr" in problem and "env:RONK_OBS_ADDR" in problem
    assert "no port" in problem


def test_unspecified_address_is_rejected_only_when_http_is_exposed():
    assert load(env={"RONK_OBS_ADDR": "0.0.0.0:9909"}).observability.addr == "0.0.0.0:9909"
    [problem] = problems_of(env={"RONK_OBS_ADDR": "0.0.0.0:9909"}, argv=["--obs-http", "on"])
    assert "not a concrete address" in problem and "cli:--obs-http" in problem


def test_min_backoff_above_max_names_both_sources(tmp_path):
    write(tmp_path / "Config.toml", "[supervisor]\nmax_backoff = '1s'\n")
    [problem] = problems_of(env={"RONK_SUP_MIN": "2s"})
    assert "env:RONK_SUP_MIN" in problem and f"file:{tmp_path / 'Config.toml'}" in problem


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    write(tmp_path / "Config.toml", "[bus]\ncapacity = 0\n[nope]\nx = 1\n[log]\nlevel = 'loud'\n")
    problems = problems_of(env={"RONK_SUP_RESTART_CAP": "0", "RONK_WHAT": "1"},
                           argv=["--pq", "maybe", "--bogus", "1", "stray"])
    joined = "\n".join(problems)
    for needle in ("bus.capacity", "nope", "log.level", "RONK_SUP_RESTART_CAP", "RONK_WHAT",
                   "pq.mode", "--bogus", "stray"):
        assert needle in joined, needle
    assert len(problems) == 8


@pytest.mark.parametrize(("text", "needle"), [
    ("[bus]\ncapacity = true\n", "got a boolean"),
    ("[bus]\ncapacity = 1.5\n", "got a number"),
    ("[bus]\ncapacity = '8'\n", "got a string"),
    ("[amnesia]\nenabled = 'yes'\n", "got a string"),
    ("[supervisor]\nmin_backoff = 5\n", "bare number"),
    ("[supervisor]\nrestart_cap = 0\n", "out of range"),
    ("[supervisor]\nrestart_window = '0s'\n", "too small"),
    ("[bus]\ncapacity = 99999999\n", "out of range"),
    ("bus = 3\n", "not a table"),
    ("version = 3\n", "unknown section"),
    ("[pq]\nmode = 'quantum'\n", "not a known value"),
    ("[observability]\naddr = '[::1:80'\n", "[addr]:port"),
    ("[observability]\naddr = '::1:80'\n", "bracketed"),
    ("[observability]\naddr = 'host:99999'\n", "above 65535"),
])
def test_file_values_are_type_checked(tmp_path, text, needle):
    write(tmp_path / "Config.toml", text)
    [problem] = problems_of()
    assert needle in problem and "file:" in problem


def test_unknown_file_type_and_non_utf8_are_errors(tmp_path):
    write(tmp_path / "c.yaml", "bus: 1\n")
    assert "a .toml or .json file" in problems_of(path="c.yaml")[0]
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe[bus]")
    assert "not UTF-8" in problems_of(path="c.toml")[0]
    write(tmp_path / "c.json", "[1, 2]")
    assert "not a table of sections" in problems_of(path="c.json")[0]


def test_secret_values_are_redacted_in_errors_and_diffs(tmp_path):
    write(tmp_path / "Config.toml", "[auth]\napi_token = 'hunter2'\n[bus]\npassword = 'hunter3'\n")
    problems = problems_of(env={"RONK_SECRET_KEY": "hunter4"})
    text = "\n".join(problems)
    assert "hunter" not in text and text.count("***") == 3, text
    assert "auth" in text and "bus.password" in text and "RONK_SECRET_KEY" in text
    changes = cfgmod.diff({"auth.token": "old-secret", "bus.capacity": 1},
                          {"auth.token": "new-secret", "bus.capacity": 2})
    assert changes == [
        {"key": "auth.token", "old": "***", "new": "***", "applies": "immediate"},
        {"key": "bus.capacity", "old": "1", "new": "2", "applies": "next-start"},
    ]


# ----------------------------------------------------------------------------- fuzz

toml_keys = st.sampled_from(["capacity", "min_backoff", "enabled", "mode", "addr", "level",
                             "restart_cap", "token", "x"])
toml_values = st.one_of(
    st.integers(-10, 10**7).map(str), st.booleans().map(lambda b: str(b).lower()),
    st.sampled_from(['"5s"', '"100ms"', '"-1s"', '"hybrid"', '"127.0.0.1:0"', '"0.0.0.0:1"',
                     '"x"', "[1, 2]", "{a = 1}", '"1h30m"', "1.5", '"']),
    st.text(max_size=12).map(json.dumps))
toml_docs = st.lists(st.tuples(st.sampled_from([*cfgmod._SECTIONS, "nope", "bus.x"]),
                               st.lists(st.tuples(toml_keys, toml_values), max_size=4)),
                     max_size=4).map(
    lambda secs: "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kvs)
                           for s, kvs in secs))
env_names = st.sampled_from([*cfgmod._BY_ENV, "RONK_X", "RON_CONFIG", "OTHER",
                             "RON_KERNEL_METRICS_ADDR"])
text_values = st.one_of(st.text(max_size=10), st.sampled_from(
    ["0", "8", "5", "5s", "on", "off", "true", "pq-only", "127.0.0.1:0", "::1", "-1s", ""]))
argv_tokens = st.lists(st.one_of(st.sampled_from([*cfgmod.KNOWN_FLAGS, "--x", "-v"]),
                                 text_values), max_size=8)


# a longer (nightly) fuzz run: CONFIG_FUZZ_EXAMPLES=100000 pytest tests/test_config.py -k fuzz
FUZZ_EXAMPLES = int(os.environ.get("CONFIG_FUZZ_EXAMPLES", "400"))


def _expect_ok_or_config_error(**kw):
    try:
        cfg = Config.load(**kw)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    cfg.validate()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(toml_docs, st.text(max_size=200)), env=st.dictionaries(env_names, text_values,
       max_size=4), argv=argv_tokens, as_json=st.booleans())
def test_fuzz_any_input_gives_a_config_or_a_config_error(tmp_path, doc, env, argv, as_json):
    path = tmp_path / ("f.json" if as_json else "f.toml")
    if as_json:
        try:
            doc = json.dumps(tomllib.loads(doc))
        except (tomllib.TOMLDecodeError, TypeError):
            pass  # not TOML, or a TOML date JSON cannot hold: the raw text is a fine input too
    path.write_text(doc)
    env = {k: v for k, v in env.items() if k != "RON_CONFIG"}
    _expect_ok_or_config_error(path=path, env=env, argv=argv)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_fuzz_raw_bytes_never_crash_the_loader(tmp_path, data):
    for name in ("b.toml", "b.json"):
        (tmp_path / name).write_bytes(data)
        _expect_ok_or_config_error(path=tmp_path / name, env={})


def test_deeply_nested_input_is_a_config_error_not_a_recursion_error(tmp_path):
    write(tmp_path / "d.json", "[" * 100_000 + "]" * 100_000)
    [problem] = problems_of(path="d.json")
    assert problem.startswith("config file (from file:") and "not valid JSON" in problem
    write(tmp_path / "d.toml", "a = " + "[" * 5_000 + "]" * 5_000)
    [problem] = problems_of(path="d.toml")
    assert problem.startswith("config file (from file:") and "not valid TOML" in problem


def test_odd_paths_are_config_errors(tmp_path):
    for name in ("bad\x00name.toml", "~no_such_user_zz/x.toml", "."):
        problems = problems_of(argv=["--config", name])
        assert "config file" in problems[0]


def test_a_bad_field_does_not_hide_an_unrelated_cross_field_problem():
    with pytest.raises(ConfigError) as info:
        Config.load(None,
                    env={"RONK_BUS_CAPACITY": "0", "RONK_SUP_MIN": "10s", "RONK_SUP_MAX": "1s"})
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 2
    assert "bus.capacity" in text and "RONK_BUS_CAPACITY" in text
    assert "supervisor.min_backoff" in text and "RONK_SUP_MAX" in text


def test_a_special_file_behind_a_config_path_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "Config.toml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        with pytest.raises(ConfigError) as info:
            Config.load(path, env={})
        assert "not a regular file" in str(info.value) and str(path) in str(info.value)
