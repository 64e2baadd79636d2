"""The installed package is the runtime: no perf rigs, no perf dependencies, nothing unused.

Cheap checks on the sources (nothing is built here); the wheel's file list itself is checked by
hand when the packaging changes (see docs/DECISIONS.md, "Round 2: structure").
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import ron_kernel

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(ron_kernel.__file__).resolve().parent
# what only the perf rigs / the soak use, and what only the examples use (blake3: blobstore)
NOT_RUNTIME = {"rich", "matplotlib", "psutil", "blake3"}
# pydantic validates the typed app config (models and dataclasses alike); typing-extensions
# gives Config[M] its default type parameter on 3.11 (docs/DECISIONS.md)
RUNTIME = {"prometheus-client", "aiohttp", "structlog", "orjson", "watchfiles", "pydantic",
           "typing-extensions"}


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _name(requirement: str) -> str:
    """``"psutil>=5.9; sys_platform != 'win32'"`` -> ``"psutil"`` (PEP 508 name, normalized)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def test_runtime_dependencies_are_only_what_a_running_kernel_needs() -> None:
    deps = _project()["dependencies"]
    assert isinstance(deps, list)
    names = {_name(d) for d in deps}
    assert not names & NOT_RUNTIME, f"perf/unused packages in the runtime: {names & NOT_RUNTIME}"
    assert names == RUNTIME


def test_the_perf_extra_and_dev_bring_what_the_rigs_need() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    for extra in ("perf", "dev"):
        names = {_name(d) for d in extras[extra]}
        assert {"rich", "matplotlib", "psutil"} <= names, (extra, names)


def test_the_examples_dependencies_come_with_dev_only() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "blake3" in {_name(d) for d in extras["dev"]}  # `make test` runs examples/blobstore


def test_the_package_has_no_perf_subpackage_and_the_rigs_live_outside_it() -> None:
    assert not (PACKAGE / "perf").exists()
    assert not list(PACKAGE.rglob("*bench*"))
    assert (ROOT / "benchmarks" / "check.py").is_file()
    # setuptools looks in src/ only, so benchmarks/ and examples/ cannot end up in the wheel
    with (ROOT / "pyproject.toml").open("rb") as f:
        find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"]


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# optional extras a module may import lazily, falling back when they are missing
OPTIONAL_IMPORTS = {"cli/status.py": {"rich"}}  # the `cli` extra: plain columns without it


def test_no_module_of_the_package_imports_a_perf_or_unused_dependency() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10  # the walk found the package
    offenders = {
        str(p.relative_to(PACKAGE)):
            sorted((_imported_roots(p) & (NOT_RUNTIME | {"benchmarks"}))
                   - OPTIONAL_IMPORTS.get(str(p.relative_to(PACKAGE)), set()))
        for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_walk_sees_function_local_imports() -> None:
    # the rigs import rich and matplotlib inside functions: the walk must catch those too
    assert {"rich", "matplotlib"} <= _imported_roots(ROOT / "benchmarks" / "_report.py")
    assert "psutil" in _imported_roots(ROOT / "benchmarks" / "soak.py")


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    # a dependency nothing imports (as pydantic was) is dead weight for every install
    imported: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        imported |= _imported_roots(path)
    modules = {name.replace("-", "_") for name in RUNTIME}
    assert modules <= imported, f"declared but never imported: {modules - imported}"


def test_the_cli_extra_brings_rich_and_status_works_without_it(monkeypatch) -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert {_name(d) for d in extras["cli"]} == {"rich"}
    import builtins

    from ron_kernel.cli import status

    real_import = builtins.__import__

    def no_rich(name: str, *args: object, **kwargs: object) -> object:
        if name == "rich" or name.startswith("rich."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_rich)
    assert status.rich_available() is False
