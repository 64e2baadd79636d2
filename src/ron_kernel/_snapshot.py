"""A validated config snapshot as plain JSON data, for a worker process, and back.

The parent loads and validates the config; a worker never reads a config file. It receives
this encoding over its channel (at start and at each reload) and rebuilds the same
:class:`~ron_kernel.Config`, with the same ``version``:

* the kernel's keys travel as a config file would hold them (durations as ``"1s500ms"``,
  which :func:`~ron_kernel._duration.parse_duration` reads back exactly) and go through
  :meth:`Config.from_mapping`, so the worker checks every key as the parent did;
* the app config travels as pydantic's JSON of the app model, with the model's import name
  (``module:qualname``); the worker imports the model and validates the JSON with it.

Nothing is written anywhere (amnesia).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from ._app_config import check_model, dump_json, load_json
from ._appspec import load_object, spec_of
from ._config import FIELDS, Config, format_duration
from ._errors import ConfigError

__all__ = ["decode_config", "encode_config", "model_spec"]


def model_spec(model: type[Any] | None) -> str | None:
    """The import name of an app config model (``None`` for none); ``ValueError`` when a
    worker process could not import it (defined in ``__main__`` or a function)."""
    if model is None:
        return None
    return spec_of(model, what="app config model")


def encode_config(config: Config[Any]) -> dict[str, Any]:
    """``{"version": n, "kernel": {section: {key: value}}, "app": ...}`` (plain JSON data)."""
    kernel: dict[str, dict[str, Any]] = {}
    for key in FIELDS:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if isinstance(value, timedelta):
            value = format_duration(value)
        kernel.setdefault(section, {})[name] = value
    app = None
    if config.app is not None:
        app = {"model": model_spec(type(config.app)), "json": dump_json(config.app)}
    return {"version": config.version, "kernel": kernel, "app": app}


def decode_config(data: Any) -> Config[Any]:
    """The :class:`Config` :func:`encode_config` described, with its version.

    Raises ``ConfigError`` (a ``ValueError``) naming what does not validate: a kernel key (as
    ``from_mapping`` does), or the app config (the model cannot be imported, or the JSON does
    not validate with it).
    """
    if not isinstance(data, dict):
        raise ConfigError([f"config snapshot: expected an object, got {type(data).__name__}"])
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError([f"config snapshot: version must be an int >= 1, got {version!r}"])
    source = f"parent snapshot v{version}"
    config = Config.from_mapping(data.get("kernel") or {}, source=source)
    app_data = data.get("app")
    app: Any = None
    if app_data is not None:
        if not isinstance(app_data, dict) or not isinstance(app_data.get("model"), str) \
                or not isinstance(app_data.get("json"), str):
            raise ConfigError([f"app (from {source}): expected {{model, json}}"])
        try:
            model = load_object(app_data["model"], what="app config model")
            check_model(model)
            app = load_json(model, app_data["json"])
        except (ValueError, TypeError) as exc:
            raise ConfigError([f"app (from {source}): {exc}"]) from None
    return dataclasses.replace(config, app=app, version=version)
