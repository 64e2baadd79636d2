"""ConfigCell: hot reload with rollback, for each trigger (call, SIGHUP, watchfiles, polling)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ron_kernel import Bus, Config, KernelEvent, Metrics
from ron_kernel.config import ConfigCell
from ron_kernel.errors import Empty


@pytest.fixture
def cfg_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "kernel.toml"
    path.write_text("[bus]\ncapacity = 8\n")
    return path


def make_cell(path: Path, **kw) -> tuple[ConfigCell, Bus, Metrics]:
    bus: Bus = Bus(16)
    metrics = Metrics()
    env: dict[str, str] = kw.pop("env", {})
    cell = ConfigCell(Config.load(path, env=env), path=path, env=env, bus=bus, metrics=metrics,
                      **kw)
    return cell, bus, metrics


def drain(rx) -> list:
    out = []
    while True:
        try:
            out.append(rx.try_recv())
        except Empty:
            return out


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # what editors and config managers do


async def wait_for(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polls state the cell sets synchronously
            await asyncio.sleep(0.005)


# ----------------------------------------------------------------------------- direct calls


def test_reload_applies_a_valid_change_once_and_publishes_the_new_version(cfg_file):
    cell, bus, metrics = make_cell(cfg_file)
    rx = bus.subscribe()
    seen: list[tuple[int, int]] = []
    cell.subscribe(lambda old, new: seen.append((old.version, new.version)))
    assert cell.get().bus.capacity == 8 and cell.version == 1
    cfg_file.write_text("[bus]\ncapacity = 16\n[log]\nlevel = 'debug'\n")
    assert cell.reload() is True
    assert (cell.get().bus.capacity, cell.get().log.level, cell.version) == (16, "debug", 2)
    assert drain(rx) == [KernelEvent.ConfigUpdated(version=2)]
    assert seen == [(1, 2)]
    k = metrics.counters
    assert k.config_reloads_total.get("applied") == 1
    assert k.config_version.get() == 2
    assert k.request_latency_seconds.count("config_reload") == 1


def test_invalid_file_keeps_the_old_snapshot_and_publishes_nothing(cfg_file):
    cell, bus, metrics = make_cell(cfg_file)
    rx = bus.subscribe()
    before = cell.get()
    for bad in ("[bus]\ncapacity = 0\n", "[bus]\ncapcity = 9\n", "[bus]\ncapacity = ",
                '[supervisor]\nmin_backoff = "5"\n'):
        cfg_file.write_text(bad)
        assert cell.reload() is False
        assert cell.get() is before
        assert cell.last_error is not None and str(cfg_file) in str(cell.last_error)
    assert drain(rx) == []
    assert metrics.counters.config_reloads_total.get("rejected") == 4
    assert metrics.counters.config_reloads_total.get("applied") == 0
    assert metrics.counters.config_version.get() == 1
    cfg_file.write_text("[bus]\ncapacity = 9\n")
    assert cell.reload() is True and cell.version == 2 and cell.last_error is None


def test_an_unchanged_config_is_not_a_new_version(cfg_file):
    cell, bus, metrics = make_cell(cfg_file)
    rx = bus.subscribe()
    cfg_file.write_text("# same values, new bytes\n[bus]\ncapacity = 8\n")
    assert cell.reload() is True
    assert cell.version == 1 and drain(rx) == []
    assert metrics.counters.config_reloads_total.get("unchanged") == 1


def test_reload_with_a_given_config_validates_and_bumps_the_version(cfg_file):
    cell, bus, _ = make_cell(cfg_file)
    rx = bus.subscribe()
    new = Config.from_mapping({"amnesia": {"enabled": True}}, base=cell.get())
    assert cell.reload(new) is True
    assert cell.get().amnesia.enabled is True and cell.version == 2
    from ron_kernel.config import BusConfig
    bad = Config(bus=BusConfig(capacity=0))
    assert cell.reload(bad) is False and cell.version == 2
    assert drain(rx) == [KernelEvent.ConfigUpdated(version=2)]


def test_amnesia_change_relabels_metrics(cfg_file):
    cell, _, metrics = make_cell(cfg_file)
    assert metrics.amnesia is False
    cfg_file.write_text("[bus]\ncapacity = 8\n[amnesia]\nenabled = true\n")
    assert cell.reload()
    assert metrics.amnesia is True
    assert b'amnesia="on"' in metrics.render()


def test_a_failing_subscriber_does_not_undo_the_reload(cfg_file):
    cell, bus, _ = make_cell(cfg_file)
    rx = bus.subscribe()
    calls = []

    def boom(old, new):
        raise RuntimeError("subscriber bug")

    cell.subscribe(boom)
    unsubscribe = cell.subscribe(lambda old, new: calls.append(new.version))
    cfg_file.write_text("[bus]\ncapacity = 32\n")
    assert cell.reload() is True and calls == [2]
    assert drain(rx) == [KernelEvent.ConfigUpdated(version=2)]
    unsubscribe()
    cfg_file.write_text("[bus]\ncapacity = 33\n")
    assert cell.reload() and calls == [2]


def test_reload_recomputes_env_and_cli_with_the_same_precedence(cfg_file):
    env = {"RONK_LOG_LEVEL": "warn"}
    cell = ConfigCell(Config.load(cfg_file, env=env, argv=["--bus-capacity", "64"]),
                      path=cfg_file, env=env, argv=["--bus-capacity", "64"])
    cfg_file.write_text("[bus]\ncapacity = 16\n[log]\nlevel = 'debug'\nformat = 'text'\n")
    assert cell.reload()
    c = cell.get()
    assert (c.bus.capacity, c.log.level, c.log.format) == (64, "warn", "text")


def test_a_deleted_file_is_rejected_not_a_silent_return_to_defaults(cfg_file):
    cell, _, _ = make_cell(cfg_file)
    cfg_file.unlink()
    assert cell.reload() is False and cell.get().bus.capacity == 8
    assert "file not found" in str(cell.last_error)


def test_amnesia_on_the_cell_writes_nothing_to_disk(cfg_file):
    cfg_file.write_text("[amnesia]\nenabled = true\n")
    before = sorted(p.name for p in cfg_file.parent.iterdir())
    cell, _, _ = make_cell(cfg_file)
    for level in ("debug", "info", "warn"):
        cfg_file.write_text(f"[amnesia]\nenabled = true\n[log]\nlevel = '{level}'\n")
        assert cell.reload()
    assert sorted(p.name for p in cfg_file.parent.iterdir()) == before


# ----------------------------------------------------------------------------- SIGHUP


async def test_sighup_reloads_in_the_running_loop(cfg_file):
    cell, bus, _ = make_cell(cfg_file)
    rx = bus.subscribe()
    remove = cell.install_sighup()
    try:
        cfg_file.write_text("[bus]\ncapacity = 24\n")
        os.kill(os.getpid(), signal.SIGHUP)
        event = await asyncio.wait_for(rx.recv(), 5)
        assert event == KernelEvent.ConfigUpdated(version=2)
        assert cell.get().bus.capacity == 24
        cfg_file.write_text("[bus]\ncapacity = -3\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: cell.last_error is not None)
        assert cell.get().bus.capacity == 24 and drain(rx) == []
    finally:
        remove()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


# ----------------------------------------------------------------------------- file watching


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_file_change_is_applied_and_published_once(cfg_file, polling):
    cell, bus, _ = make_cell(cfg_file)
    rx = bus.subscribe()
    task = cell.start_watching(polling=polling, quiet=0.03, poll_interval=0.01)
    try:
        await asyncio.sleep(0.2)  # let the watcher start
        atomic_write(cfg_file, "[bus]\ncapacity = 48\n")
        event = await asyncio.wait_for(rx.recv(), 5)
        assert event == KernelEvent.ConfigUpdated(version=2)
        assert cell.get().bus.capacity == 48
        # an invalid edit: the old snapshot stays, nothing is published
        atomic_write(cfg_file, "[bus]\ncapacity = 0\n")
        await wait_for(lambda: cell.last_error is not None)
        assert cell.get().bus.capacity == 48 and cell.version == 2
        # and the next valid edit applies again
        atomic_write(cfg_file, "[bus]\ncapacity = 49\n")
        event = await asyncio.wait_for(rx.recv(), 5)
        assert event == KernelEvent.ConfigUpdated(version=3)
        await asyncio.sleep(0.1)
        assert drain(rx) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_rapid_edits_do_not_apply_a_half_written_file(cfg_file, polling):
    cell, bus, _ = make_cell(cfg_file)
    rx = bus.subscribe()
    seen: list[Config] = []
    cell.subscribe(lambda old, new: seen.append(new))
    task = cell.start_watching(polling=polling, quiet=0.25, poll_interval=0.02)
    try:
        await asyncio.sleep(0.2)
        # written in place, in pieces: each prefix is valid TOML with *other* values, which a
        # watcher without a quiet period would apply (capacity 16 with the default level)
        with open(cfg_file, "w") as f:  # noqa: ASYNC230 - the slow, piecewise write is the point
            for piece in ("[bus]\ncapacity = 16\n", "[log]\n", "level = 'debug'\n",
                          "[pq]\nmode = 'hybrid'\n"):
                f.write(piece)
                f.flush()
                await asyncio.sleep(0.02)
        event = await asyncio.wait_for(rx.recv(), 5)
        assert event == KernelEvent.ConfigUpdated(version=2)
        await asyncio.sleep(0.4)
        assert drain(rx) == []
        assert len(seen) == 1
        c = cell.get()
        assert (c.bus.capacity, c.log.level, c.pq.mode) == (16, "debug", "hybrid")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watching_a_default_file_that_appears_later(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bus: Bus = Bus(4)
    cell = ConfigCell(Config.load(env={}), env={}, bus=bus)
    assert cell.path == tmp_path / "Config.toml"
    rx = bus.subscribe()
    task = cell.start_watching(polling=True, quiet=0.02, poll_interval=0.01)
    try:
        await asyncio.sleep(0.05)
        atomic_write(tmp_path / "Config.toml", "[log]\nformat = 'text'\n")
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=2)
        assert cell.get().log.format == "text"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_cancelling_the_watch_task_stops_it_promptly(cfg_file):
    cell, _, _ = make_cell(cfg_file)
    task = cell.start_watching()
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)
    assert task.done()


async def test_a_cell_is_watched_once_at_a_time(cfg_file):
    cell, _, _ = make_cell(cfg_file)
    first = cell.start_watching()
    second = cell.start_watching()
    try:
        with pytest.raises(RuntimeError, match="already being watched"):
            await asyncio.wait_for(second, 2)
        assert not first.done()
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


@pytest.mark.parametrize(("quiet", "poll_interval"), [(-1, 0.05), (0.02, 0), (0.02, -1),
                                                      (float("nan"), 0.05), (0.02, float("inf"))])
async def test_watch_arguments_are_checked(cfg_file, quiet, poll_interval):
    cell, _, _ = make_cell(cfg_file)
    with pytest.raises(ValueError):
        cell.start_watching(quiet=quiet, poll_interval=poll_interval)
    with pytest.raises(ValueError):
        await cell.watch(quiet=quiet, poll_interval=poll_interval)
    assert cell.watcher_state == "stopped"
