"""Generate the public API snapshot of ron-kernel (``api/ron_kernel.txt``).

The surface is what users import: ``ron_kernel.__all__`` and the ``__all__`` of every public
(non-underscore) module of the package, except the command line (``cli``) and ``__main__``.
For each name it records the kind and signature, and for classes
every public method, property and class attribute. Run ``make api`` to regenerate on purpose;
``tests/test_api_surface.py`` fails on any unacknowledged change.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXCLUDED = ("ron_kernel.cli", "ron_kernel.__main__")
SNAPSHOT = Path(__file__).resolve().parent.parent / "api" / "ron_kernel.txt"


def public_modules() -> list[str]:
    """Names of the modules whose ``__all__`` is part of the public surface."""
    import ron_kernel

    names = ["ron_kernel"]
    for info in pkgutil.iter_modules(ron_kernel.__path__, "ron_kernel."):
        leaf = info.name.rsplit(".", 1)[1]
        if leaf.startswith("_") or info.name.startswith(EXCLUDED):
            continue
        names.append(info.name)
    return sorted(names)


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def public_items() -> Iterator[tuple[str, str, Any]]:
    """Yield ``(qualified name, kind, object)`` for every public item."""
    for modname in public_modules():
        module = importlib.import_module(modname)
        exported = getattr(module, "__all__", None)
        if exported is None:
            raise SystemExit(f"{modname} has no __all__: list its public names explicitly")
        yield modname, "module", module
        for name in sorted(exported):
            obj = getattr(module, name)
            qual = f"{modname}.{name}"
            if inspect.isclass(obj):
                yield qual, "class", obj
                yield from _class_members(qual, obj)
            elif inspect.iscoroutinefunction(obj):
                yield qual, "async def", obj
            elif callable(obj):
                yield qual, "def", obj
            else:
                yield qual, "constant", obj


PUBLIC_DUNDERS = ("__init__", "__call__", "__len__", "__iter__", "__aiter__", "__enter__",
                  "__exit__", "__aenter__", "__aexit__", "__await__")


def _class_members(qual: str, cls: type) -> Iterator[tuple[str, str, Any]]:
    # Instance attributes the docs point users at are declared as class annotations
    # (``bus: Bus[KernelEvent]``); they are part of the surface too.
    for name, annotation in sorted(inspect.get_annotations(cls).items()):
        raw = vars(cls).get(name)
        if not name.startswith("_") and (raw is None
                                         or type(raw).__name__ == "member_descriptor"):
            yield f"{qual}.{name}", "instance attribute", annotation
    for name, raw in sorted(vars(cls).items()):
        if name.startswith("_") and name not in PUBLIC_DUNDERS:
            continue
        if name == "__init__" and raw is object.__init__:
            continue
        member = f"{qual}.{name}"
        if isinstance(raw, property):
            yield member, "property", raw
        elif isinstance(raw, staticmethod | classmethod):
            kind = "staticmethod" if isinstance(raw, staticmethod) else "classmethod"
            yield member, kind, raw.__func__
        elif inspect.isclass(raw):
            yield member, "class", raw
            if raw.__module__.startswith("ron_kernel") and raw.__qualname__.startswith(
                    cls.__qualname__):
                yield from _class_members(member, raw)
        elif inspect.iscoroutinefunction(raw) or inspect.isasyncgenfunction(raw):
            yield member, "async def", raw
        elif callable(raw):
            yield member, "def", raw
        elif not name.startswith("_") and type(raw).__name__ != "member_descriptor":
            yield member, "attribute", raw


def render() -> str:
    """Render the snapshot text."""
    lines = ["# ron-kernel public API snapshot. Regenerate on purpose with `make api`.", ""]
    for qual, kind, obj in public_items():
        if kind in ("def", "async def", "staticmethod", "classmethod"):
            lines.append(f"{kind} {qual}{_signature(obj)}")
        elif kind == "class":
            bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
            lines.append(f"class {qual}({bases})" if bases else f"class {qual}")
        elif kind == "constant":
            lines.append(f"constant {qual} = {obj!r}")
        elif kind == "instance attribute":
            text = getattr(obj, "__forward_arg__", obj)
            lines.append(f"attribute {qual}: {text}")
        else:
            lines.append(f"{kind} {qual}")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write the snapshot (``--check``: exit 1 when it differs)."""
    text = render()
    if "--check" in sys.argv:
        if SNAPSHOT.read_text() != text:
            print("API snapshot differs; run `make api` if the change is intended", file=sys.stderr)
            return 1
        return 0
    SNAPSHOT.write_text(text)
    print(f"wrote {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
