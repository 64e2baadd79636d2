"""``MODULE:ATTRIBUTE`` specs: how the command line and worker processes find the app.

``ron-kernel run --app mod:factory`` and ``kernel.supervise_workers(name, app="mod:factory")``
name the app factory this way; a worker process also imports the app config model by the name
its parent gives it. One loader for both, so a spec means the same thing everywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["load_app", "load_object", "spec_of"]


def load_object(spec: str, *, what: str = "--app") -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the attribute.

    The working directory is importable, as with ``python -m``. Raises ``ValueError`` naming
    ``what`` and the spec: malformed, the module cannot be imported (with the import error), or
    the attribute is missing.
    """
    if not isinstance(spec, str):
        raise ValueError(f"{what} must be MODULE:FACTORY, got {spec!r}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must be MODULE:FACTORY, got {spec!r}")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}")
    return found


def load_app(spec: str, *, what: str = "--app") -> Callable[..., Any]:
    """Import ``module:factory`` and return the factory; ``ValueError`` naming what is wrong."""
    factory = load_object(spec, what=what)
    if not callable(factory):
        raise ValueError(f"{what} {spec!r}: {spec.partition(':')[2]!r} is not callable")
    app: Callable[..., Any] = factory
    return app


def spec_of(obj: Any, *, what: str) -> str:
    """The ``module:qualname`` another process can import ``obj`` by; ``ValueError`` if none.

    Functions and classes defined at module level qualify; a lambda, a local function or
    anything defined in ``__main__`` (another process has another ``__main__``) does not.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError(f"{what} {obj!r} has no module and name another process could "
                         "import it by; pass 'module:attribute'")
    if module == "__main__" or "<" in qualname:
        raise ValueError(f"{what} {module}:{qualname} cannot be imported by another process "
                         "(defined in __main__, a lambda or a local function); move it to a "
                         "module and pass 'module:attribute'")
    return f"{module}:{qualname}"
