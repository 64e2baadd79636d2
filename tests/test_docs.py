"""The docs are executed: every ```python block of README.md, docs/*.md and examples/*.md runs
as a program and passes ``mypy --strict``; the reference tables match the code.

* Each block runs alone in a fresh interpreter (``sys.executable``), in an empty working
  directory, without the caller's ``RON*``/``RONK*`` variables, within a timeout, and must exit 0.
  So a block is a complete program: imports included, async code under ``asyncio.run``, and it
  stops by itself.
* All blocks are type-checked by ONE ``mypy --strict`` run (each block is its own module); its
  errors are mapped back to the block and to the line of the document.
* There is no way to skip a block: text that is not a program (a shell session, TOML, JSON,
  output) is fenced with another language (```console, ```toml, ```json, ```text), and a fence
  without a language is an error, so Python cannot hide in one.
* docs/METRICS.md lists exactly the series a real ``/metrics`` exports, and docs/CONFIG.md
  lists exactly the keys of ``_config.FIELDS``, each with its env variable, flag and default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from ron_kernel import Config
from ron_kernel._config import FIELDS
from ron_kernel.config import parse_duration
from ron_kernel.kernel import Kernel

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").glob("*.md"))]
PYTHON = {"python", "py", "python3"}
RUN_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc}:L{self.line}"

    @property
    def module(self) -> str:
        return "doc_" + re.sub(r"\W", "_", f"{self.doc}_L{self.line}")


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of the document ``path``, in order."""
    return parse_fences(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def parse_fences(text: str, rel: str) -> list[Block]:
    """Every fenced block of ``text`` (the document ``rel``); an unclosed fence is an error."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (closing is not None and closing["fence"][0] == fence[0]
                    and len(closing["fence"]) >= len(fence) and not closing["info"].strip()):
                break
            text = lines[j]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            j += 1
        else:
            raise AssertionError(f"{rel}:{i + 1}: fence {fence!r} is never closed")
        lang = info.split()[0].lower() if info else ""
        blocks.append(Block(rel, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in fenced_blocks(doc)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang in PYTHON]


def _params() -> list[object]:
    return [pytest.param(block, id=block.id) for block in PYTHON_BLOCKS]


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``block`` as a program in ``cwd`` with a clean environment (no RON*/RONK*)."""
    script = cwd / f"{block.module}.py"
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RON")}
    return subprocess.run([sys.executable, script.name], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=RUN_TIMEOUT, check=False)


def _explain(block: Block, done: subprocess.CompletedProcess[str]) -> str:
    numbered = "\n".join(f"{block.line + n:5}  {text}"
                         for n, text in enumerate(block.code.splitlines(), 1))
    return (f"{block.id} exited {done.returncode}\n--- block\n{numbered}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


# ----------------------------------------------------------------------------- the blocks


def test_the_docs_have_python_blocks_and_every_fence_names_its_language():
    assert len(PYTHON_BLOCKS) >= 8, [b.id for b in PYTHON_BLOCKS]
    assert any(b.doc == "README.md" for b in PYTHON_BLOCKS)
    bare = [b.id for b in ALL_BLOCKS if not b.lang]
    assert bare == [], (f"fences without a language (say python, console, toml, json or "
                        f"text): {bare}")


def test_a_python_fence_in_a_list_item_is_found_and_dedented():
    text = "x\n\n1. step\n\n   ```python\n   print(1)\n   ```\n\n~~~toml\na = 1\n~~~\n"
    blocks = parse_fences(text, "probe.md")
    assert [(b.lang, b.line, b.code) for b in blocks] == [("python", 5, "print(1)\n"),
                                                           ("toml", 9, "a = 1\n")]
    assert blocks[0].id == "probe.md:L5"
    with pytest.raises(AssertionError, match="never closed"):
        parse_fences("```python\nprint(1)\n", "open.md")


@pytest.mark.parametrize("block", _params())
def test_block_runs(block: Block, tmp_path: Path) -> None:
    done = run_block(block, tmp_path)
    assert done.returncode == 0, _explain(block, done)


@pytest.fixture(scope="session")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One ``mypy --strict`` run over every block; its errors by block id, as doc lines."""
    folder = tmp_path_factory.mktemp("docs-mypy")
    errors: dict[str, list[str]] = {block.id: [] for block in PYTHON_BLOCKS}
    by_module = {}
    for block in PYTHON_BLOCKS:
        try:  # a syntax error would stop mypy for every block: report it here instead
            compile(block.code, block.id, "exec")
        except SyntaxError as exc:
            errors[block.id].append(f"{block.doc}:{block.line + (exc.lineno or 0)}: error: "
                                    f"{exc.msg}  [syntax]")
            continue
        by_module[block.module] = block
        (folder / f"{block.module}.py").write_text(block.code, encoding="utf-8")
    if not by_module:
        return errors
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(folder / ".cache"), "--show-error-codes", "--no-error-summary",
         "--no-color-output", *sorted(str(folder / f"{m}.py") for m in by_module)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode not in (0, 1):
        raise AssertionError(f"mypy failed to run ({done.returncode}):\n{done.stdout}\n"
                             f"{done.stderr}")
    pattern = re.compile(r"^(?P<file>[^:]+\.py):(?P<line>\d+):(?:\d+:)? (?P<rest>.*)$")
    unmapped = []
    for row in done.stdout.splitlines():
        found = pattern.match(row)
        block = by_module.get(Path(found["file"]).stem) if found else None
        if found is None or block is None:
            unmapped.append(row)
            continue
        errors[block.id].append(f"{block.doc}:{block.line + int(found['line'])}: "
                                f"{found['rest']}")
    if any(": error:" in row for row in unmapped):
        raise AssertionError("mypy reported errors outside the blocks:\n" + "\n".join(unmapped))
    return errors


@pytest.mark.parametrize("block", _params())
def test_block_type_checks(block: Block, mypy_errors: dict[str, list[str]]) -> None:
    problems = [row for row in mypy_errors[block.id] if ": error:" in row]
    assert problems == [], "mypy --strict:\n" + "\n".join(mypy_errors[block.id])


def test_blocks_import_public_modules_only():
    private = re.compile(r"^\s*(from\s+ron_kernel(\.\w+)*\._\w+|import\s+ron_kernel(\.\w+)*\._\w+"
                         r"|from\s+ron_kernel(\.\w+)*\s+import\s+.*\b_\w+)", re.MULTILINE)
    offenders = [f"{b.id}: {m.group(0).strip()}" for b in PYTHON_BLOCKS
                 for m in private.finditer(b.code)]
    assert offenders == [], f"docs must import public modules only: {offenders}"


def _readme_block(heading: str) -> Block:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(heading) + 1
    return next(b for b in PYTHON_BLOCKS if b.doc == "README.md" and b.line > start)


def test_the_readme_embedding_example_receives_the_events_it_claims(tmp_path):
    # The worker subscribes before it reports ready, so it sees its own readiness, the other
    # service's, and the Shutdown that ends the run: nothing published after "ready" is missed.
    block = _readme_block("## Embedding it")
    done = run_block(block, tmp_path)
    assert done.returncode == 0, _explain(block, done)
    got = [line.removeprefix("worker got ") for line in done.stdout.splitlines()
           if line.startswith("worker got ")]
    assert sorted(got[:2]) == ["KernelEvent.Health(service='batch', ok=True)",
                               "KernelEvent.Health(service='worker', ok=True)"], done.stdout
    assert got[2:] == ["KernelEvent.Shutdown()"], done.stdout


# ----------------------------------------------------------------------------- reference tables


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


# Keys whose default is computed where the kernel runs, so the table describes it in words.
COMPUTED_DEFAULTS = {"federation.node"}  # the host name up to its first dot


def test_config_doc_lists_exactly_the_keys_with_their_env_flag_default_and_class():
    rows = _table_rows((ROOT / "docs" / "CONFIG.md").read_text(), "| Key | Env | Flag |")
    documented = {}
    for key, env, flag, _type, default, _rule, applies in rows:
        shown = _backticked(default)
        documented[_backticked(key)[0]] = (_backticked(env)[0], _backticked(flag)[0].split()[0],
                                           shown[0] if shown else None, applies)
    defaults = Config().flat()
    assert sorted(documented) == sorted(FIELDS), "docs/CONFIG.md §2 lists other keys"
    for key, fld in FIELDS.items():
        env, flag, default, applies = documented[key]
        assert (env, flag, applies) == (fld.env, fld.flag, fld.reload), key
        if default is None:  # described in words: only where the default depends on the host
            assert key in COMPUTED_DEFAULTS, f"{key}: give its default as `code`"
            continue
        assert _parse_default(default, defaults[key]) == defaults[key], (key, default)


def _parse_default(text: str, like: object) -> object:
    if isinstance(like, bool):
        return {"true": True, "false": False}.get(text, text)
    if isinstance(like, timedelta):
        return parse_duration(text)
    if isinstance(like, int):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]  # `""`: an empty string
    return text


async def test_metrics_doc_lists_exactly_the_series_a_real_scrape_exports(tmp_path):
    text = (ROOT / "docs" / "METRICS.md").read_text()
    documented = set()
    # a family is documented by a heading, or by a list item that starts with its name
    for heading in re.findall(r"^(?:###? .*|- `[a-z_]+\{.*)$", text, re.MULTILINE):
        documented.update(re.findall(r"`([a-z]+_[a-z_]+)(?:\{[^}]*\})?`", heading))
    process = re.search(r"^### Process metrics.*?\n\n(.*?)(?:\n\n|\Z)", text,
                        re.DOTALL | re.MULTILINE)
    assert process is not None, "METRICS.md lost its process metrics section"
    documented.update(re.findall(r"`(process_[a-z_]+)`", process.group(1)))

    config = tmp_path / "Config.toml"
    config.write_text('[observability]\nexpose_http = true\naddr = "127.0.0.1:0"\n')
    kernel = Kernel(path=config, env={}, watch_config=False, handle_sighup=False)
    async with kernel, aiohttp.ClientSession() as session:
        async with session.get(kernel.urls()["metrics"]) as response:
            assert response.status == 200
            body = await response.text()
    exported = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    assert len(exported) >= 20, body
    assert sorted(documented - exported) == [], "documented but not exported"
    assert sorted(exported - documented) == [], "exported but not documented"
