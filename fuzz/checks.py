"""The properties the fuzz targets check, importable without atheris (the tests replay them)."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from ron_kernel import Config, KernelEvent
from ron_kernel import _config as config_impl
from ron_kernel.errors import ConfigError


def check_event(data: bytes) -> None:
    """``KernelEvent.from_json`` decodes and round-trips, or raises ``ValueError``; nothing else."""
    try:
        event = KernelEvent.from_json(data)
    except ValueError:
        return
    assert isinstance(event, KernelEvent)
    assert KernelEvent.from_json(event.to_json()) == event


# ----------------------------------------------------------------------------- config loader
#
# An input is decoded by hand rather than with ``atheris.FuzzedDataProvider``: its encoding is
# atheris-internal, so a provider-decoded corpus could neither be written by hand nor replayed
# by the tests without atheris. The layout is simple enough for libFuzzer to mutate well:
#
#     byte 0        bits 0-1: file type    0 .toml, 1 .json, 2 .TOML, 3 .yaml (always rejected)
#                   bits 2-3: how the file is named
#                             0 the ``path`` argument, 1 ``--config`` in argv,
#                             2 ``RON_CONFIG`` in env, 3 the ``path`` argument, file not written
#                   bit 4:    ``--config=PATH`` rather than ``--config PATH``
#     then          BODY \x1e ENV \x1e ARGV
#     ENV           NAME=VALUE items separated by \x1f; a 1-byte NAME picks a known variable,
#                   any other NAME gets the RONK_ prefix unless it starts with RON
#     ARGV          tokens separated by \x1f; a 1-byte token picks a known flag
#
# Text is decoded with ``surrogateescape``, as Python decodes the real environment and argv.
# A ``--config`` value from the input is confined to the scratch directory, so the fuzzer never
# reads arbitrary files of the machine.

CONFIG_SUFFIXES = (".toml", ".json", ".TOML", ".yaml")
_SCRATCH: Path | None = None


def _scratch() -> Path:
    """One scratch directory per process, reused by every input (no mkdtemp per exec)."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="ron-fuzz-config-"))
        atexit.register(shutil.rmtree, _SCRATCH, True)
    return _SCRATCH


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _confined(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", value)[:40].lstrip(".") or "x"
    return str(_scratch() / name)


def decode_config_input(data: bytes) -> tuple[Path, bool, dict[str, str], list[str]]:
    """Decode fuzz bytes into ``(file path, write the file?, env, argv)``; writes the body."""
    head = data[0] if data else 0
    suffix = CONFIG_SUFFIXES[head & 3]
    naming = (head >> 2) & 3
    inline = bool(head & 16)
    body, _, rest = data[1:].partition(b"\x1e")
    env_blob, _, argv_blob = rest.partition(b"\x1e")

    env: dict[str, str] = {}
    for item in env_blob.split(b"\x1f") if env_blob else ():
        name_raw, _, value_raw = item.partition(b"=")
        if len(name_raw) == 1:
            name = config_impl.KNOWN_ENV[name_raw[0] % len(config_impl.KNOWN_ENV)]
        else:
            name = _text(name_raw)
            if not name.startswith("RON"):
                name = "RONK_" + name
        env[name] = _text(value_raw)
    env.pop(config_impl.CONFIG_ENV, None)  # the file is always named by the decoder

    argv: list[str] = []
    for item in argv_blob.split(b"\x1f") if argv_blob else ():
        if len(item) == 1:
            argv.append(config_impl.KNOWN_FLAGS[item[0] % len(config_impl.KNOWN_FLAGS)])
        else:
            argv.append(_text(item))
    flag = config_impl.CONFIG_FLAG
    for i, token in enumerate(argv):
        if token.startswith(flag + "="):
            argv[i] = flag + "=" + _confined(token[len(flag) + 1:])
        elif token == flag and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            argv[i + 1] = _confined(argv[i + 1])

    path = _scratch() / f"fuzz{suffix}"
    if naming == 3:
        path.unlink(missing_ok=True)
        return path, False, env, argv
    path.write_bytes(body)
    if naming == 1:
        argv = [f"{flag}={path}", *argv] if inline else [flag, str(path), *argv]
    elif naming == 2:
        env[config_impl.CONFIG_ENV] = str(path)
    return path, True, env, argv


def _leaves(value: Any, secret: bool, secrets: list[str], others: list[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            others.append(str(key))
            _leaves(inner, secret or config_impl.is_secret(str(key)), secrets, others)
    elif isinstance(value, list):
        for inner in value:
            _leaves(inner, secret, secrets, others)
    elif isinstance(value, str):
        (secrets if secret else others).append(value)
    else:
        others.append(repr(value))


def _secret_values(path: Path, body: bytes, env: dict[str, str],
                   argv: list[str]) -> tuple[list[str], list[str]]:
    """Values stored under secret-looking names, and every other string of the input."""
    secrets: list[str] = []
    others: list[str] = [str(path)]
    try:
        text = body.decode("utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, RecursionError):
        data = None
    if data is not None:
        # parsing may nest deeper than this walk can follow; such values are skipped
        try:
            _leaves(data, False, secrets, others)
        except RecursionError:
            pass
    for name, value in env.items():
        others.append(name)
        (secrets if config_impl.is_secret(name) else others).append(value)
    for i, token in enumerate(argv):
        flag, eq, value = token.partition("=")
        others.append(flag)
        if eq:
            (secrets if config_impl.is_secret(flag) else others).append(value)
        elif i > 0 and config_impl.is_secret(argv[i - 1].partition("=")[0]):
            secrets.append(token)
        else:
            others.append(token)
    return secrets, others


def check_config(data: bytes) -> None:
    """``Config.load`` of file + env + argv returns a valid, reproducible ``Config``, or raises
    ``ConfigError`` (the same one each time, secrets redacted); never any other exception."""
    path, written, env, argv = decode_config_input(data)
    try:
        cfg = Config.load(path, env=env, argv=argv)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        try:
            Config.load(path, env=env, argv=argv)
        except ConfigError as again:
            assert again.problems == exc.problems, "the same inputs gave another error"
        else:
            raise AssertionError("the same inputs loaded on the second try") from None
        message = str(exc)
        secrets, others = _secret_values(path, data[1:].partition(b"\x1e")[0], env, argv)
        for value in secrets:
            if len(value) < 8 or any(value[:22] in other for other in others):
                continue  # too short, or shown legitimately as part of a non-secret value
            assert repr(value)[:24] not in message, f"secret value leaked: {value!r}"
        return
    assert written, "a missing, explicitly named file must be a ConfigError"
    assert isinstance(cfg, Config) and cfg.version == 1
    cfg.validate()
    assert Config.load(path, env=env, argv=argv) == cfg, "the same inputs gave another config"
    round_trip = _scratch() / "round-trip.toml"
    round_trip.write_text(config_impl.to_toml(cfg), encoding="utf-8")
    assert Config.load(round_trip, env={}, argv=[]) == cfg, "to_toml did not load back equal"
