"""The one redaction rule, shared by config errors, config diffs, logs and ``/status``.

Two things are secret:

* the value of a setting or field whose *name* is secret-like: split into words (``api_token``
  -> ``api``, ``token``; ``SecretSauce`` -> ``secret``, ``sauce``), some word starts with one of
  :data:`SECRET_WORDS` (``token``, ``secret``, ``pass``, ``pw``, ``credential``, ``auth``,
  ``dsn``, ``cookie``, ``session``, ``private``, ``key``, ...);
* the credentials inside a URL, wherever a URL appears in text: ``postgres://u:s3cr3t@db/x``
  is shown as ``postgres://***@db/x``.

The kernel's own structured fields (:data:`KERNEL_FIELDS`: ``key``, ``keys``, ``reason``, ...)
are never treated as secret names: a reload's log line shows *which* key changed; the key's
value is what gets redacted, by the key's own name. A leaf module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KERNEL_FIELDS", "REDACTED", "SECRET_WORDS", "is_secret_name", "redact_text",
           "redact_value"]

REDACTED = "***"
"""What every redacted value is replaced with."""

SECRET_WORDS = ("token", "secret", "pass", "pw", "credential", "auth", "dsn", "cookie",
                "session", "private", "key", "apikey", "cert", "signature")
"""A name is secret when one of its words starts with one of these (any case)."""

KERNEL_FIELDS = frozenset({
    "key", "keys", "reason", "event", "component", "service", "child", "changed",
    "problems", "corr_id", "kept", "trigger",
})
"""Field names the kernel itself writes; exempt from the name rule (their values are still
scrubbed of URL credentials)."""

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s?#]+)@")
_MAX_DEPTH = 8


def is_secret_name(name: object) -> bool:
    """Whether values under ``name`` (a config key's last part, a field, an env var) are secret.

    Dotted config keys are judged by their last part (``auth.api_token`` -> ``api_token``).
    """
    text = str(name)
    known = _JUDGED.get(text)
    if known is None:
        known = _judge(text)
        if len(_JUDGED) < 4096:  # names repeat (log fields, config keys): judge each once
            _JUDGED[text] = known
    return known


_JUDGED: dict[str, bool] = {}


def _judge(text: str) -> bool:
    if text in KERNEL_FIELDS:
        return False
    last = text.rsplit(".", 1)[-1]
    return any(word.lower().startswith(SECRET_WORDS) for word in _WORDS.findall(last))


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by :data:`REDACTED`."""
    if "://" not in text:
        return text
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """``value`` with secrets removed: secret-named entries of mappings, URL credentials.

    Mappings and lists are copied, not changed in place; other values pass through.
    """
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(k) else redact_value(v, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, _depth + 1) for v in value]
    return value
