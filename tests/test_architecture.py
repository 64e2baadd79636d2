"""The import graph of the package, read with ast: one-way dependencies, no hidden structure.

* no import cycle between modules, counting imports made only for type checking;
* no part imports the HTTP layer, the command line or the perf rigs (only the exporter
  ``_metrics`` and the composition ``_kernel`` may reach the HTTP layer);
* no private module imports the package root (the root only re-exports);
* no function-local import, except in the command line (start-up speed) and for optional
  dependencies (uvloop, opentelemetry);
* no part reaches into another part's private state through ``metrics._...``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ron_kernel"
HTTP_LAYER = {"ron_kernel._http", "ron_kernel._kernel_http", "ron_kernel._control",
              "ron_kernel._ui"}
MAY_USE_HTTP = {"ron_kernel._metrics", "ron_kernel._kernel", "ron_kernel.kernel"}
OPTIONAL = ("uvloop", "opentelemetry", "nats")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[ast.stmt, str]]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{a.name}" for a in node.names
                          if f"{module}.{a.name}" in MODULES]
            if submodules and len(submodules) == len(node.names):
                yield from ((node, sub) for sub in submodules)  # from . import _config
            else:
                yield node, module


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for _, target in _imports(name, path):
            while target and target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle_even_at_type_level():
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_part_imports_the_http_layer_the_cli_or_the_rigs():
    offenders = []
    for name, deps in _graph().items():
        if name.startswith(("ron_kernel.cli", "ron_kernel.__main__")):
            continue
        for dep in deps:
            if dep.startswith("ron_kernel.cli") or (dep in HTTP_LAYER and name not in
                                                    MAY_USE_HTTP | HTTP_LAYER):
                offenders.append(f"{name} -> {dep}")
    for name, path in MODULES.items():
        for _, target in _imports(name, path):
            if target.startswith(("benchmarks", "ron_kernel.perf")):
                offenders.append(f"{name} -> {target}")
            if target.startswith("aiohttp") and name not in MAY_USE_HTTP | HTTP_LAYER and \
                    not name.startswith("ron_kernel.cli"):
                offenders.append(f"{name} -> {target}")
    assert offenders == []


def test_private_modules_never_import_the_package_root():
    offenders = [name for name, deps in _graph().items()
                 if "ron_kernel" in deps and name.rpartition(".")[2].startswith("_")
                 and name != "ron_kernel.__main__"]
    assert offenders == []


def test_no_function_local_import_hides_structure():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("ron_kernel.cli"):
            continue  # lazy on purpose: `ron-kernel --help` must not load aiohttp
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    target = (node.module or "") if isinstance(node, ast.ImportFrom) else \
                        node.names[0].name
                    if not target.startswith(OPTIONAL):
                        offenders.append(f"{name}.{fn.name}: {ast.unparse(node)}")
    assert offenders == []


def test_no_part_reaches_into_metrics_private_state():
    offenders = []
    for name, path in MODULES.items():
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "metrics._" in code or "._kernel." in code:
                offenders.append(f"{name}:{lineno}: {line.strip()}")
    assert offenders == []


# ----------------------------------------------------------------------------- public facades

PUBLIC = sorted(name for name in MODULES
                if name.startswith("ron_kernel") and not name.startswith("ron_kernel.cli")
                and not any(part.startswith("_") for part in name.split(".")[1:]))


def _facade_violations(name: str, source: str) -> list[str]:
    """What keeps ``source`` from being a thin facade: docstring, re-exports, ``__all__``."""
    tree = ast.parse(source)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    else:
        return [f"{name}: no module docstring"]
    bad = []
    has_all = False
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module \
                and node.module.startswith("_") \
                and all(alias.asname == alias.name for alias in node.names):
            continue  # from ._x import Y as Y
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                == ["__all__"] and isinstance(node.value, ast.List) \
                and all(isinstance(e, ast.Constant) for e in node.value.elts):
            has_all = True
            continue
        bad.append(f"{name}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    if not has_all:
        bad.append(f"{name}: no __all__ list")
    return bad


_LAZY_ROOT_PARTS = ("import importlib as _importlib", "import typing as _typing",
                   "from ._version import __version__ as __version__", "_HOME = ",
                   "_PUBLIC_MODULES = ", "def __getattr__(", "def __dir__(")


def _lazy_root_violations(source: str) -> list[str]:
    """The package root re-exports lazily (PEP 562, DECISIONS "issue 11, the rest"): besides
    the facade's parts it may hold only the lazy loader, and it must re-export exactly
    ``__all__``, each name from the module the type checker is told."""
    tree = ast.parse(source)
    bad, typed, home, exported = [], {}, {}, []
    for node in tree.body[1:]:  # after the docstring (checked by _facade_violations' rule)
        text = ast.unparse(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "_typing.TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.level == 1 and inner.module \
                        and all(a.asname == a.name for a in inner.names):
                    typed.update({a.name: "." + inner.module for a in inner.names})
                else:
                    bad.append(f"ron_kernel:{inner.lineno}: {ast.unparse(inner)}")
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                == ["__all__"]:
            exported = [e.value for e in node.value.elts]  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                == ["_HOME"]:
            home = ast.literal_eval(node.value)
        elif not text.startswith(_LAZY_ROOT_PARTS):
            bad.append(f"ron_kernel:{node.lineno}: {text.splitlines()[0]}")
    if not (set(exported) == set(typed) == set(home)) or typed != home:
        bad.append(f"ron_kernel: __all__ {sorted(exported)}, TYPE_CHECKING re-exports {typed} "
                   f"and the lazy map {home} must agree")
    return bad


def test_public_modules_are_thin_facades():
    # docs/DECISIONS.md, "One convention for public modules": a public module holds only its
    # docstring, `from ._x import Y as Y` re-exports and `__all__`; the code lives in _x. The
    # package root re-exports the same way, lazily (the command installs its signal handlers
    # before the heavy imports): its own, equally strict, check.
    assert {"ron_kernel", "ron_kernel.bus", "ron_kernel.config", "ron_kernel.errors",
            "ron_kernel.kernel", "ron_kernel.logging", "ron_kernel.mailbox",
            "ron_kernel.supervisor", "ron_kernel.tracing"} <= set(PUBLIC)
    bad = [problem for name in PUBLIC if name != "ron_kernel"
           for problem in _facade_violations(name, MODULES[name].read_text())]
    bad += _lazy_root_violations(MODULES["ron_kernel"].read_text())
    assert bad == [], "public modules must only re-export: " + "; ".join(bad)


def test_the_lazy_root_check_refuses_code_and_a_mismatch():
    source = MODULES["ron_kernel"].read_text()
    assert _lazy_root_violations(source) == []
    assert _lazy_root_violations(source + "\nX = 1\n")
    assert _lazy_root_violations(source.replace('"Bus": "._bus", ', ""))
    assert _lazy_root_violations(source.replace('"Bus": "._bus"', '"Bus": "._config"'))


def test_a_facade_with_code_or_a_plain_import_is_refused():
    good = '"""Doc."""\n\nfrom ._bus import Bus as Bus\n\n__all__ = ["Bus"]\n'
    assert _facade_violations("m", good) == []
    for extra in ("def helper() -> None:\n    pass\n", "from ._bus import Receiver\n",
                  "import os\n", "X = 1\n", "from __future__ import annotations\n"):
        assert _facade_violations("m", good + extra), extra
    assert _facade_violations("m", 'from ._bus import Bus as Bus\n__all__ = ["Bus"]\n') == [
        "m: no module docstring"]
    assert _facade_violations("m", '"""Doc."""\nfrom ._bus import Bus as Bus\n') == [
        "m: no __all__ list"]
