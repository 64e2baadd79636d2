"""``MODULE:ATTRIBUTE`` specs: how the command line and worker processes find the app.

``ron-kernel run --app mod:factory`` and ``kernel.supervise_workers(name, app="mod:factory")``
name the app factory this way; a worker process also imports the app config model by the name
its parent gives it. One loader for both, so a spec means the same thing everywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ._text import cap, printable, show_path

__all__ = ["AppImportError", "check_spec", "load_app", "load_object", "spec_of"]


class AppImportError(ValueError):
    """The module exists but its import failed: a ``SyntaxError``, or an exception raised while
    it ran (a missing dependency too). The message is one line naming the module, its file and
    line, and the error; the exception is chained (``__cause__``) for a traceback."""


def check_spec(spec: object, *, what: str = "--app") -> tuple[str, str]:
    """``(module, attr)`` of a ``MODULE:ATTR`` spec; ``ValueError`` naming ``what`` otherwise."""
    if not isinstance(spec, str):
        raise ValueError(f"{what} must be MODULE:FACTORY, got {spec!r}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must be MODULE:FACTORY, got {spec!r}")
    return module_name, attr


def load_object(spec: str, *, what: str = "--app") -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the attribute.

    The working directory is importable, as with ``python -m``. Raises ``ValueError`` naming
    ``what`` and the spec: malformed, the module does not exist, or the attribute is missing;
    :class:`AppImportError` (a ``ValueError`` too) when the module exists but fails to import.
    """
    module_name, attr = check_spec(spec, what=what)
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: nothing to add
        cwd = ""
    if cwd and "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ValueError(f"{what} {spec!r}: cannot import {module_name!r}: "
                             f"{printable(str(exc))}") from exc
        raise AppImportError(_import_failure(what, spec, module_name, exc)) from exc
    except SyntaxError as exc:
        where = f"{show_path(exc.filename or module_name)}, line {exc.lineno}"
        raise AppImportError(f"{what} {spec!r}: {module_name} has a syntax error at {where}: "
                             f"{printable(str(exc.msg))}") from exc
    except Exception as exc:
        raise AppImportError(_import_failure(what, spec, module_name, exc)) from exc
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


def _import_failure(what: str, spec: str, module_name: str, exc: BaseException) -> str:
    """One line: the module, the line of it that was running, the exception."""
    where = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_globals.get("__name__") == module_name:
            where = f" at {show_path(frame.f_code.co_filename)}, line {lineno}"
    message = " ".join(printable(str(exc)).split())  # one line, whatever the message holds
    return (f"{what} {spec!r}: importing {module_name} failed{where}: "
            f"{type(exc).__name__}: {cap(message, 500)}")
