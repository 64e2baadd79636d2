"""KernelEvent: the four lifecycle events of the kernel (a closed set)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from ._text import printable_value

_SEALED = False


class KernelEvent:
    """A kernel lifecycle event: exactly one of four frozen variants.

    ``KernelEvent.Health(service, ok)``, ``KernelEvent.ConfigUpdated(version)``,
    ``KernelEvent.ServiceCrashed(service, reason)`` and ``KernelEvent.Shutdown()``.
    Each is an immutable, hashable value; equal fields mean equal events, and ``match`` works
    with keyword patterns::

        match ev:
            case KernelEvent.ServiceCrashed(service=name, reason=why):
                log.warning("%s crashed: %s", name, why)
            case KernelEvent.Shutdown():
                return

    The set is closed: subclassing ``KernelEvent`` outside ron-kernel raises ``TypeError``.
    """

    __slots__ = ()

    Health: ClassVar[type[_Health]]
    ConfigUpdated: ClassVar[type[_ConfigUpdated]]
    ServiceCrashed: ClassVar[type[_ServiceCrashed]]
    Shutdown: ClassVar[type[_Shutdown]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if _SEALED:
            raise TypeError(
                "KernelEvent is a closed set of four variants and cannot be subclassed"
            )
        super().__init_subclass__(**kwargs)

    def __init__(self) -> None:
        if type(self) is KernelEvent:
            raise TypeError(
                "KernelEvent cannot be instantiated; use one of its variants, "
                "e.g. KernelEvent.Health(service, ok)"
            )

    def to_json(self) -> str:
        """Return the event as flat JSON with the variant name in ``"type"``.

        >>> KernelEvent.ConfigUpdated(version=3).to_json()
        '{"type":"ConfigUpdated","version":3}'
        """
        payload: dict[str, Any] = {"type": type(self).__name__}
        for name, _ in self._FIELDS:  # type: ignore[attr-defined]
            payload[name] = getattr(self, name)
        try:
            return orjson.dumps(payload).decode()
        except orjson.JSONEncodeError:  # text UTF-8 cannot carry (lone surrogates): escape it
            return orjson.dumps(printable_value(payload)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> KernelEvent:
        """Decode the flat JSON form produced by :meth:`to_json`.

        Unknown fields are ignored. An unknown ``type``, a missing field or a field of the wrong
        type raises ``ValueError`` naming it.
        """
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"KernelEvent JSON is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"KernelEvent JSON must be an object, got {type(data).__name__}"
            )
        return from_mapping(data)


class EventDecodeError(ValueError):
    """A mapping is not a KernelEvent; ``reason`` classifies why (a metric label).

    ``reason`` is ``missing_field`` (no ``type`` or a field of the variant is absent),
    ``unknown_type`` or ``bad_field`` (a field of the wrong type or out of range).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def from_mapping(data: Mapping[str, Any]) -> KernelEvent:
    """Build the event a flat INTEROP mapping describes (unknown keys ignored).

    Raises :class:`EventDecodeError` (a ``ValueError``) naming the field.
    """
    kind = data.get("type")
    if kind is None:
        raise EventDecodeError("missing_field", "KernelEvent JSON is missing the field 'type'")
    variant = _VARIANTS.get(kind) if isinstance(kind, str) else None
    if variant is None:
        raise EventDecodeError(
            "unknown_type",
            f"KernelEvent JSON field 'type' has unknown value {printable_value(kind)!r}; "
            f"expected one of {sorted(_VARIANTS)}")
    args: dict[str, Any] = {}
    for field, expected in variant._FIELDS:
        if field not in data:
            raise EventDecodeError("missing_field",
                                   f"KernelEvent.{kind} JSON is missing the field {field!r}")
        value = data[field]
        # bool is a subclass of int: a version of `true` is as wrong as a string.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise EventDecodeError(
                "bad_field",
                f"KernelEvent.{kind} JSON field {field!r} must be {expected.__name__}, "
                f"got {type(value).__name__}")
        args[field] = value
    try:
        event: KernelEvent = variant(**args)
    except ValueError as exc:  # e.g. a negative ConfigUpdated.version
        raise EventDecodeError("bad_field", str(exc)) from None
    return event


def _variant(cls: type[Any]) -> Any:
    cls.__qualname__ = f"KernelEvent.{cls.__name__.lstrip('_')}"
    cls.__name__ = cls.__name__.lstrip("_")
    return cls


@_variant
@dataclass(frozen=True, slots=True)
class _Health(KernelEvent):
    """A service reported its readiness: ``ok`` is True when it is ready."""

    service: str
    ok: bool
    _FIELDS: ClassVar[tuple[tuple[str, type], ...]] = (("service", str), ("ok", bool))


@_variant
@dataclass(frozen=True, slots=True)
class _ConfigUpdated(KernelEvent):
    """A new configuration snapshot was applied; ``version`` counts applied loads from 1."""

    version: int
    _FIELDS: ClassVar[tuple[tuple[str, type], ...]] = (("version", int),)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"ConfigUpdated.version must be an int >= 0, got {self.version!r}")


@_variant
@dataclass(frozen=True, slots=True)
class _ServiceCrashed(KernelEvent):
    """A supervised service stopped unexpectedly; ``reason`` says how (e.g. ``"panic: ..."``)."""

    service: str
    reason: str
    _FIELDS: ClassVar[tuple[tuple[str, type], ...]] = (("service", str), ("reason", str))


@_variant
@dataclass(frozen=True, slots=True)
class _Shutdown(KernelEvent):
    """The kernel is shutting down: drain and stop."""

    _FIELDS: ClassVar[tuple[tuple[str, type], ...]] = ()


KernelEvent.Health = _Health
KernelEvent.ConfigUpdated = _ConfigUpdated
KernelEvent.ServiceCrashed = _ServiceCrashed
KernelEvent.Shutdown = _Shutdown

_VARIANTS: dict[str, Any] = {
    "Health": _Health,
    "ConfigUpdated": _ConfigUpdated,
    "ServiceCrashed": _ServiceCrashed,
    "Shutdown": _Shutdown,
}

_SEALED = True
