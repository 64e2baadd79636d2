"""Structured logging for the kernel (structlog). Replaced in full by the observability work."""

from __future__ import annotations

from typing import Any

import structlog


def get_logger(component: str) -> Any:
    """Return a structlog logger bound to a kernel component."""
    return structlog.get_logger("ron_kernel").bind(component=component)
