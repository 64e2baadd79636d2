"""Typed app config: the same layers as the kernel's keys, one ConfigError for everything."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from ron_kernel import Config, KernelEvent
from ron_kernel.config import ConfigCell, explain
from ron_kernel.errors import ConfigError
from ron_kernel.kernel import Kernel


@dataclass(frozen=True)
class Db:
    pool_size: int = 4
    password: str = ""
    timeout: timedelta = timedelta(seconds=1)


@dataclass(frozen=True)
class AppCfg:
    port: int = 8080
    name: str = "svc"
    ratio: float = 0.5
    debug: bool = False
    db: Db = field(default_factory=Db)


class PydDb(BaseModel):
    pool_size: int = 4
    dsn: str = "postgres://localhost/db"


class PydApp(BaseModel):
    port: int = 8080
    db: PydDb = PydDb()
    grace: timedelta = timedelta(seconds=2)


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _problems(**kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Config.load(**kw)  # type: ignore[call-overload]
    return info.value.problems


@pytest.mark.parametrize("model", [AppCfg, PydApp])
def test_defaults_give_an_instance_of_the_model(model):
    cfg = Config.load(env={}, argv=[], app=model)
    assert isinstance(cfg.app, model)
    assert cfg.app.port == 8080


def test_precedence_is_file_then_env_then_set(tmp_path):
    (tmp_path / "Config.toml").write_text(
        '[app]\nport = 1\nname = "from-file"\n[app.db]\npool_size = 2\ntimeout = "250ms"\n')
    cfg = Config.load(env={"RONK_APP__PORT": "2", "RONK_APP__DB__POOL_SIZE": "8"},
                      argv=["--set", "app.port=3", "--set", "bus.capacity=64"], app=AppCfg)
    assert cfg.app == AppCfg(port=3, name="from-file",
                             db=Db(pool_size=8, timeout=timedelta(milliseconds=250)))
    assert cfg.bus.capacity == 64  # --set works for kernel keys too


def test_pydantic_models_get_the_same_layers_and_durations(tmp_path):
    (tmp_path / "Config.toml").write_text('[app]\ngrace = "1h30m"\n[app.db]\npool_size = 3\n')
    cfg = Config.load(env={"RONK_APP__PORT": "9000"}, argv=[], app=PydApp)
    assert cfg.app.port == 9000 and cfg.app.db.pool_size == 3
    assert cfg.app.grace == timedelta(hours=1, minutes=30)


def test_every_app_problem_is_listed_with_key_source_and_expected_type(tmp_path):
    (tmp_path / "Config.toml").write_text(
        '[app]\nport = "eighty"\nnmae = "typo"\n[app.db]\ntimeout = "soon"\n'
        '[bus]\ncapacity = 0\n')
    problems = _problems(env={"RONK_APP__RATIO": "lots"}, argv=["--set", "app.debug=maybe"],
                         app=AppCfg)
    text = "\n".join(problems)
    config_file = tmp_path / "Config.toml"
    assert f"app.port = 'eighty' (from file:{config_file}:2)" in text
    assert "an integer" in text
    assert "app.nmae" in text and "did you mean 'name'" in text
    assert "app.db.timeout" in text and f"file:{config_file}:5" in text
    assert "app.ratio" in text and "env:RONK_APP__RATIO" in text
    assert "app.debug" in text and "cli:--set app.debug" in text
    assert "bus.capacity" in text  # the kernel's problems join the app's in one error


def test_secret_app_values_are_redacted_in_errors():
    problems = _problems(env={"RONK_APP__DB__PASSWORD": "hunter2", "RONK_APP__DB__NOPE": "x"},
                         argv=["--set", "app.db.password=s3cret", "--set", "app.port=x"],
                         app=AppCfg)
    text = "\n".join(problems)
    assert "hunter2" not in text and "s3cret" not in text


def test_without_a_model_app_keys_are_an_error_naming_the_fix(tmp_path):
    (tmp_path / "Config.toml").write_text("[app]\nport = 1\n")
    [problem] = _problems(env={}, argv=[])
    assert "app.port" in problem and "app_config" in problem


def test_a_model_that_is_neither_pydantic_nor_dataclass_is_refused_at_construction():
    class Plain:
        port = 1

    with pytest.raises(TypeError, match="pydantic v2 model class or a dataclass"):
        Kernel(app_config=Plain, env={}, argv=[])  # type: ignore[arg-type]


def test_explain_lists_app_keys_with_their_sources(tmp_path):
    (tmp_path / "Config.toml").write_text("[app]\nport = 1\n")
    rows = {r.key: r for r in explain(env={"RONK_APP__DB__POOL_SIZE": "9",
                                           "RONK_APP__DB__PASSWORD": "pw"},
                                      argv=["--set", "app.name=x"], app=AppCfg)}
    assert rows["app.port"].source == f"file:{tmp_path / 'Config.toml'}:2"
    assert rows["app.db.pool_size"] == ("app.db.pool_size", "9", "env:RONK_APP__DB__POOL_SIZE")
    assert rows["app.name"].source == "cli:--set app.name"
    assert rows["app.ratio"].source == "default"
    assert rows["app.db.password"].value == "***"


async def test_a_reload_applies_kernel_and_app_keys_together_or_not_at_all(tmp_path):
    path = tmp_path / "Config.toml"
    path.write_text('[app]\nport = 1\n[log]\nlevel = "info"\n')
    cfg = Config.load(path, env={}, argv=[], app=AppCfg)
    cell = ConfigCell(cfg, path=path, env={}, argv=[])
    path.write_text('[app]\nport = "bad"\n[log]\nlevel = "warn"\n')
    assert not cell.reload()
    assert cell.get().app.port == 1 and cell.get().log.level == "info"  # none applied
    path.write_text('[app]\nport = 2\n[app.db]\npassword = "p2"\n[log]\nlevel = "warn"\n')
    assert cell.reload()
    new = cell.get()
    assert (new.app.port, new.log.level, new.version) == (2, "warn", 2)


async def test_children_see_the_new_typed_config_and_can_await_changes(tmp_path):
    path = tmp_path / "Config.toml"
    path.write_text("[app]\nport = 1\n")
    seen: list[int] = []
    got_two = asyncio.Event()

    async def watcher(ctx):  # type: ignore[no-untyped-def]
        ctx.ready()
        seen.append(ctx.config.app.port)
        async for cfg in ctx.config_changes():
            seen.append(cfg.app.port)
            if cfg.app.port == 3:
                got_two.set()

    async with Kernel(app_config=AppCfg, path=path, env={}, argv=[], watch_config=False,
                      handle_sighup=False) as k:
        rx = k.bus.subscribe()
        k.supervise("watcher", watcher)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.005)
        path.write_text("[app]\nport = 2\n")
        assert k.config_cell.reload()
        await asyncio.sleep(0.02)
        path.write_text("[app]\nport = 3\n")
        assert k.config_cell.reload()
        await asyncio.wait_for(got_two.wait(), 5)
        assert k.config.app.port == 3
        events = rx.try_recv_many()
    assert seen[0] == 1 and seen[-1] == 3
    assert KernelEvent.ConfigUpdated(version=3) in events
