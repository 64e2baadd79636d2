"""Types and runtime agree: the typed context type-checks under mypy --strict, and a misuse
of the app config or the context is a type error (the checker really runs here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent('''
    from dataclasses import dataclass
    from ron_kernel import Config, KernelEvent
    from ron_kernel.kernel import Kernel
    from ron_kernel.supervisor import ChildContext

    @dataclass(frozen=True)
    class App:
        port: int = 1

    async def child(ctx: ChildContext[Config[App]]) -> None:
        port: int = ctx.config.app.port
        ok: bool = await ctx.sleep(0.1)
        event: KernelEvent = await ctx.wait(ctx.bus.subscribe().recv())
        del port, ok, event

    k = Kernel(app_config=App)
    k.supervise("child", child)
    k.supervise("lambda", lambda ctx: child(ctx))
    cfg: Config[App] = k.config
''')

BAD = textwrap.dedent('''
    from dataclasses import dataclass
    from ron_kernel import Config
    from ron_kernel.kernel import Kernel
    from ron_kernel.supervisor import ChildContext

    @dataclass(frozen=True)
    class App:
        port: int = 1

    async def child(ctx: ChildContext[Config[App]]) -> None:
        name: str = ctx.config.app.port
        ctx.config.app.nope
        if ctx.bus is None:
            return

    def sync_child(ctx: ChildContext[Config[App]]) -> None:
        pass

    k = Kernel(app_config=App)
    k.supervise("sync", sync_child)
''')


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "snippet.py"
    path.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), str(path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def test_the_typed_context_type_checks_and_misuse_does_not(tmp_path):
    good = _mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout
    bad = _mypy(tmp_path, BAD)
    assert bad.returncode == 1
    out = bad.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type ' \
           '"str")' in out
    assert '"App" has no attribute "nope"' in out
    assert 'Argument 2 to "supervise" of "Kernel" has incompatible type' in out  # a plain def


def test_the_typed_example_service_passes_mypy_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         "examples/typed_service.py"], capture_output=True, text=True, timeout=300,
        check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout
