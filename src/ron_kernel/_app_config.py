"""Typed application config: the ``[app]`` part of the layers, validated by the user's model.

The model is a pydantic v2 ``BaseModel`` or a dataclass (frozen or not); pydantic validates both
(``TypeAdapter``), in its lax mode so ``"8"`` from an environment variable becomes ``8``. Before
that, two things pydantic would not do the kernel's way:

* duration strings (``"100ms"``, ``"1h30m"``) are parsed with the kernel's duration syntax for
  every field annotated ``timedelta`` (or ``timedelta | None``);
* a key that names no field is an error (the config is fail-closed, as the kernel's own keys).

Values arrive flat, by dotted key below ``app`` (``db.pool_size``), each with its source; the
caller (``_config``) turns the :class:`AppProblem` list into ``ConfigError`` lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ._duration import parse_duration

__all__ = ["AppProblem", "check_model", "dump_json", "flatten", "load_json", "validate"]


@dataclass(frozen=True, slots=True)
class AppProblem:
    """One problem with one app key (dotted, below ``app``)."""

    key: str
    value: Any
    reason: str
    expected: str


def check_model(model: object) -> None:
    """Refuse, with a clear message, anything that is not a pydantic model or a dataclass."""
    if isinstance(model, type) and (issubclass(model, BaseModel)
                                    or dataclasses.is_dataclass(model)):
        return
    raise TypeError(
        f"app config must be a pydantic v2 model class or a dataclass, got {model!r} "
        "(e.g. `@dataclass(frozen=True) class AppConfig: port: int = 8080`)")


_FIELDS: dict[type[Any], dict[str, Any]] = {}
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _fields(model: type[Any]) -> dict[str, Any]:
    found = _FIELDS.get(model)
    if found is None:
        if issubclass(model, BaseModel):
            found = {name: info.annotation for name, info in model.model_fields.items()}
        else:
            hints = typing.get_type_hints(model)
            found = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(model)}
        _FIELDS[model] = found
    return found


def _adapter(model: type[Any]) -> TypeAdapter[Any]:
    # building the validator is the expensive part (tens of ms): once per model
    found = _ADAPTERS.get(model)
    if found is None:
        found = _ADAPTERS[model] = TypeAdapter(model)
    return found


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_of(annotation: Any) -> type[Any] | None:
    inner = _unwrap_optional(annotation)
    if isinstance(inner, type) and (issubclass(inner, BaseModel)
                                    or dataclasses.is_dataclass(inner)):
        return inner
    return None


def _describe(annotation: Any) -> str:
    inner = _unwrap_optional(annotation)
    if inner is timedelta:
        text = "a duration such as '100ms' or '1h30m'"
    elif isinstance(inner, type):
        text = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}.get(
            inner, inner.__name__)
    else:
        text = str(inner).replace("typing.", "")
    return text + (" or nothing" if inner is not annotation else "")


def _leaf(model: type[Any], path: list[str]) -> tuple[Any, str | None]:
    """The annotation at ``path``, or ``(None, why)`` when the path names no field."""
    current: type[Any] | None = model
    annotation: Any = None
    for depth, part in enumerate(path):
        if current is None:
            return None, f"{'.'.join(path[:depth])} is not a table"
        fields = _fields(current)
        if part not in fields:
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return None, f"unknown key{hint}; known: {', '.join(fields) or 'none'}"
        annotation = fields[part]
        current = _model_of(annotation)
    return annotation, None


def validate(model: type[Any], values: Mapping[str, Any]) -> tuple[Any, list[AppProblem]]:
    """Build ``model`` from flat ``values`` (``{"db.pool_size": "8"}``); instance or problems."""
    problems: list[AppProblem] = []
    nested: dict[str, Any] = {}
    for key, value in values.items():
        path = key.split(".")
        annotation, why = _leaf(model, path)
        if why is not None:
            problems.append(AppProblem(key, value, why, "a field of the app config"))
            continue
        if _unwrap_optional(annotation) is timedelta and isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as exc:
                problems.append(AppProblem(key, value, str(exc), _describe(annotation)))
                continue
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):  # a table given a value and sub-keys at once
                break
        else:
            target[path[-1]] = value
    # validate what passed the pre-checks too, so every problem is listed at once
    try:
        instance = _adapter(model).validate_python(nested)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            key = ".".join(loc)
            annotation, _ = _leaf(model, loc)
            expected = _describe(annotation) if annotation is not None else "a valid value"
            problems.append(AppProblem(key, values.get(key), error["msg"], expected))
        return None, problems
    return (None if problems else instance), problems


def flatten(instance: Any) -> dict[str, Any]:
    """Every leaf value of an app config instance by dotted key (for diffs and ``explain``)."""
    out: dict[str, Any] = {}
    if instance is None:
        return out
    for name, nested in _shape(type(instance)):
        value = getattr(instance, name)
        if nested and value is not None:
            out.update({f"{name}.{k}": v for k, v in flatten(value).items()})
        else:
            out[name] = value
    return out


def dump_json(instance: Any) -> str:
    """An app config instance as pydantic's JSON of its model (for a worker process)."""
    return _adapter(type(instance)).dump_json(instance).decode()


def load_json(model: type[Any], text: str) -> Any:
    """The instance :func:`dump_json` wrote: pydantic's own round trip, revalidated.

    Raises ``ValueError`` (pydantic's ``ValidationError``) when the text does not validate
    with ``model`` -- a worker running other code than its parent, for instance.
    """
    return _adapter(model).validate_json(text)
_SHAPES: dict[type[Any], tuple[tuple[str, bool], ...]] = {}


def _shape(model: type[Any]) -> tuple[tuple[str, bool], ...]:
    """``(field, is a nested model)`` per field of ``model``, computed once per model."""
    found = _SHAPES.get(model)
    if found is None:
        found = _SHAPES[model] = tuple(
            (name, _model_of(annotation) is not None)
            for name, annotation in _fields(model).items())
    return found
