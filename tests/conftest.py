"""Shared fixtures: every async test runs on both event loops (tokio's two runtime flavors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from ron_kernel import _logging

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dev dependency on Linux
    uvloop = None


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop,
    }
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Run each async test once per loop flavor: the default asyncio loop and uvloop."""
    return _loop_factories()


@pytest.fixture
def loop_flavor() -> str:
    """The name of the running loop's flavor ("asyncio" or "uvloop")."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """Each test starts with the kernel in charge of logging and leaves the settings as found."""
    saved = {name: getattr(_logging._settings, name) for name in _logging._Settings.__slots__}
    processors = list(_logging._processors)
    _logging._settings.explicit = False
    yield
    for name, value in saved.items():
        setattr(_logging._settings, name, value)
    _logging._processors[:] = processors
