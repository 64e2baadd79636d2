"""Fault class: the config file changes without its name being written.

Tried: the kubelet's ConfigMap update, exactly (``Config.toml -> ..data/Config.toml``,
``..data -> ..<timestamp>``; a new timestamped directory, a new ``..data_tmp`` symlink renamed
over ``..data``, the old directory removed); the config directory deleted and re-created
(slowly, and at once); the watcher's own machinery failing. The watcher used to filter events by
the file's name (the swap went unseen) and stopped for good, silently, when its directory went.

Rule: the watcher reacts to any change in the file's directory (and in the one its symlinks lead
to) and decides by the resolved file's identity (realpath + stat + content hash); it polls for a
missing directory and resumes; an error is logged and retried, never silent. Its state
(``watching``, ``polling``, ``waiting_for_directory``, ``stopped``, ``failed: ...``) is
``ConfigCell.watcher_state`` and ``GET /status`` -> ``config.watcher``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from ron_kernel import Bus, Config, KernelEvent
from ron_kernel import _config_watch as config_watch
from ron_kernel.config import ConfigCell
from ron_kernel.errors import Empty
from ron_kernel.kernel import Kernel

HTTP_ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]
SEEN_WITHIN = 2.0  # seconds: the bound for the kubelet's swap


class ConfigMapVolume:
    """A ConfigMap volume as the kubelet's AtomicWriter lays it out and updates it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()

    def _new_payload(self, text: str) -> str:
        self.generation += 1
        name = f"..2026_12_02_04_00_{self.generation:02d}.{123456789 + self.generation}"
        (self.root / name).mkdir()
        (self.root / name / "Config.toml").write_text(text)
        return name

    def create(self, text: str) -> Path:
        os.symlink(self._new_payload(text), self.root / "..data")
        os.symlink("..data/Config.toml", self.root / "Config.toml")
        return self.root / "Config.toml"

    def update(self, text: str) -> None:
        old = os.readlink(self.root / "..data")
        new = self._new_payload(text)
        os.symlink(new, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", self.root / "..data")  # the atomic swap
        shutil.rmtree(self.root / old)


def drain(rx) -> list:
    out = []
    while True:
        try:
            out.append(rx.try_recv())
        except Empty:
            return out


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polls state that other tasks set
            await asyncio.sleep(0.01)


def make_cell(path: Path) -> tuple[ConfigCell, Bus]:
    bus: Bus = Bus(64)
    return ConfigCell(Config.load(path, env={}), path=path, env={}, bus=bus), bus


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_the_kubelet_data_swap_is_seen_within_two_seconds(tmp_path, polling):
    volume = ConfigMapVolume(tmp_path / "config")
    path = volume.create("[log]\nlevel = 'info'\n")
    cell, bus = make_cell(path)
    rx = bus.subscribe()
    task = cell.start_watching(polling=polling)
    try:
        await until(lambda: cell.watcher_state == ("polling" if polling else "watching"))
        await asyncio.sleep(0.1)
        for version, level in ((2, "debug"), (3, "warn")):  # the second swap: still watched
            volume.update(f"[log]\nlevel = '{level}'\n")
            event = await asyncio.wait_for(rx.recv(), SEEN_WITHIN)
            assert event == KernelEvent.ConfigUpdated(version=version)
            assert cell.get().log.level == level
        # a swap to identical content changes the file's identity but not its content
        reloads = cell.status().reloads
        volume.update("[log]\nlevel = 'warn'\n")
        await asyncio.sleep(0.5)
        assert cell.status().reloads == reloads and drain(rx) == []
        assert cell.watcher_state == ("polling" if polling else "watching")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert cell.watcher_state == "stopped"


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_the_directory_deleted_and_recreated_is_watched_again(tmp_path, polling):
    folder = tmp_path / "config"
    folder.mkdir()
    path = folder / "Config.toml"
    path.write_text("[bus]\ncapacity = 8\n")
    cell, bus = make_cell(path)
    rx = bus.subscribe()
    assert cell.watcher_state == "stopped"
    task = cell.start_watching(polling=polling, poll_interval=0.02)
    try:
        await until(lambda: cell.watcher_state == ("polling" if polling else "watching"))
        shutil.rmtree(folder)
        await until(lambda: cell.watcher_state == "waiting_for_directory")
        assert cell.get().bus.capacity == 8 and drain(rx) == []  # nothing applied meanwhile
        folder.mkdir()
        path.write_text("[bus]\ncapacity = 16\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=2)
        await until(lambda: cell.watcher_state == ("polling" if polling else "watching"))
        # a later change is still picked up
        path.write_text("[bus]\ncapacity = 24\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=3)
        # replaced at once (no moment without it): the new directory is watched too
        shutil.rmtree(folder)
        folder.mkdir()
        path.write_text("[bus]\ncapacity = 32\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=4)
        path.write_text("[bus]\ncapacity = 40\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=5)
        assert cell.get().bus.capacity == 40
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_watcher_says_so_and_keeps_trying(tmp_path, monkeypatch, capsys):
    path = tmp_path / "Config.toml"
    path.write_text("[bus]\ncapacity = 8\n")
    cell, bus = make_cell(path)
    rx = bus.subscribe()
    real = config_watch.awatch
    failures = 3

    def flaky(*args, **kwargs):
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(28, "inotify watch limit reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(config_watch, "awatch", flaky)
    task = cell.start_watching()
    try:
        await until(lambda: cell.watcher_state.startswith("failed: "))
        assert "inotify watch limit reached" in cell.watcher_state
        await until(lambda: cell.watcher_state == "watching")  # retried, recovered
        await asyncio.sleep(0.1)
        path.write_text("[bus]\ncapacity = 9\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert capsys.readouterr().err.count('"config_watch_failed"') == 3


async def test_a_directory_vanishing_as_watching_starts_is_a_race_not_a_failure(
        tmp_path, monkeypatch, capsys):
    path = tmp_path / "Config.toml"
    path.write_text("[bus]\ncapacity = 8\n")
    cell, bus = make_cell(path)
    rx = bus.subscribe()
    real = config_watch.awatch
    races = 2

    def racy(*args, **kwargs):
        nonlocal races
        if races:
            races -= 1
            raise FileNotFoundError("No path was found.")
        return real(*args, **kwargs)

    monkeypatch.setattr(config_watch, "awatch", racy)
    task = cell.start_watching()
    try:
        await until(lambda: races == 0)
        await asyncio.sleep(0.2)
        path.write_text("[bus]\ncapacity = 9\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=2)
        assert cell.watcher_state == "watching"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert '"config_watch_failed"' not in capsys.readouterr().err


async def test_status_reports_the_watcher_and_the_last_reload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "config"
    folder.mkdir()
    path = folder / "Config.toml"
    path.write_text("[log]\nlevel = 'info'\n")
    async with Kernel(path=path, env={}, argv=HTTP_ARGV, handle_sighup=False) as k, \
            aiohttp.ClientSession() as http:

        async def config_status() -> dict:
            async with http.get(k.urls()["status"]) as resp:
                return (await resp.json())["config"]

        await until(lambda: k.config_cell.watcher_state == "watching")
        body = await config_status()
        assert (body["version"], body["watcher"], body["last_reload"]) == (1, "watching", None)
        assert body["path"] == str(path)
        path.write_text("[log]\nlevel = 'debug'\n")
        await until(lambda: k.config.version == 2)
        body = await config_status()
        assert body["last_reload"]["outcome"] == "applied"
        assert body["last_reload"]["trigger"] == "file" and body["last_reload"]["version"] == 2
        path.write_text("[log]\nlevel = 'loud'\n")
        await until(lambda: k.config_cell.last_error is not None)
        body = await config_status()
        assert body["version"] == 2 and body["last_reload"]["outcome"] == "rejected"
        assert "log.level" in body["last_reload"]["problems"][0]
        shutil.rmtree(folder)
        await until(lambda: k.config_cell.watcher_state == "waiting_for_directory")
        assert (await config_status())["watcher"] == "waiting_for_directory"
    assert k.config_cell.watcher_state == "stopped"
