"""Fault class: a config file caught half-written.

Tried: a non-atomic rewrite (truncate, then write the new content 300 ms later) with the watcher
running; empty, whitespace-only, comment-only and truncated TOML/JSON files on reload, by direct
call and by request (it used to apply the defaults in between: amnesia and PQ off, then on).

Rule: a file that had settings (at start, or at the last applied reload) is never replaced by
"no settings means defaults" on reload: a file without any setting is rejected (old config kept,
``config_reload_rejected`` logged with the reason, counted ``rejected``); a truncated document
fails to parse and is rejected too. The watcher reads only once the file is stable (two looks a
quiet period apart agree on realpath, inode, size and mtime).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ron_kernel import Config, Metrics
from ron_kernel.config import ConfigCell

POSTURE = "[amnesia]\nenabled = true\n[pq]\nmode = 'hybrid'\n"


def make_cell(path: Path) -> tuple[ConfigCell, Metrics]:
    metrics = Metrics()
    return ConfigCell(Config.load(path, env={}), path=path, env={}, metrics=metrics), metrics


def posture(cell: ConfigCell) -> tuple[bool, str]:
    cfg = cell.get()
    return cfg.amnesia.enabled, cfg.pq.mode


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("Config.toml", "", "empty file (0 bytes)"),
    ("Config.toml", "  \n\t\n", "empty file (5 bytes, whitespace only)"),
    ("Config.toml", "# ron-kernel settings\n# (written by the deploy tool)\n", "no settings"),
    ("Config.toml", "[amnesia]\n", "no settings"),
    ("Config.toml", "[amnesia]\nenabled = tr", "not valid TOML"),
    ("Config.toml", "[amnesia]\nenabled = true\n[pq]\nmode = 'hyb", "not valid TOML"),
    ("config.json", "", "empty file"),
    ("config.json", "{}", "no settings"),
    ("config.json", '{"amnesia": {"enabled": true}, "pq": {"mo', "not valid JSON"),
], ids=["empty", "blank", "comments", "empty-table", "cut-value", "cut-string", "json-empty",
        "json-braces", "json-cut"])
def test_a_file_without_settings_or_cut_short_is_rejected_on_reload(tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text('{"amnesia": {"enabled": true}, "pq": {"mode": "hybrid"}}'
                    if name.endswith(".json") else POSTURE)
    cell, metrics = make_cell(path)
    path.write_text(text)
    assert cell.reload() is False
    assert posture(cell) == (True, "hybrid") and cell.version == 1
    assert reason in str(cell.last_error)
    assert metrics.counters.config_reloads_total.get("rejected") == 1
    record = cell.last_reload
    assert record is not None and record.outcome == "rejected"
    assert any(reason in p for p in record.problems)


async def test_the_rule_holds_on_the_requested_path_and_says_why(tmp_path, capsys):
    path = tmp_path / "Config.toml"
    path.write_text(POSTURE)
    cell, _ = make_cell(path)
    path.write_text("")
    assert await cell.request_reload("test") is False
    assert posture(cell) == (True, "hybrid")
    err = capsys.readouterr().err
    assert '"config_reload_rejected"' in err and "never replaced by the defaults" in err


def test_a_file_that_was_empty_at_start_may_stay_empty(tmp_path):
    path = tmp_path / "Config.toml"
    path.write_text("")
    cell, _ = make_cell(path)
    assert cell.reload() is True and cell.version == 1  # unchanged: still the defaults
    # once it had settings, the rule applies
    path.write_text(POSTURE)
    assert cell.reload() is True and posture(cell) == (True, "hybrid")
    path.write_text("\n")
    assert cell.reload() is False and posture(cell) == (True, "hybrid")


def test_values_that_equal_the_defaults_are_settings_like_any_other(tmp_path):
    path = tmp_path / "Config.toml"
    path.write_text(POSTURE)
    cell, _ = make_cell(path)
    path.write_text("[amnesia]\nenabled = false\n[pq]\nmode = 'off'\n")  # written out: allowed
    assert cell.reload() is True and posture(cell) == (False, "off")


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_a_non_atomic_rewrite_never_applies_the_gap(tmp_path, polling):
    path = tmp_path / "Config.toml"
    path.write_text(POSTURE + "[supervisor]\nrestart_cap = 3\n")
    cell, metrics = make_cell(path)
    samples: list[tuple[bool, str]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(posture(cell))
            await asyncio.sleep(0.01)

    task = cell.start_watching(polling=polling, quiet=0.02, poll_interval=0.01)
    sampler = asyncio.create_task(sample())
    try:
        await asyncio.sleep(0.2)
        with open(path, "w") as fh:  # noqa: ASYNC230 - the slow, in-place write is the fault
            fh.flush()  # truncated: 0 bytes on disk for 300 ms
            in_gap = len(samples)
            await asyncio.sleep(0.3)
            in_gap = len(samples) - in_gap
            fh.write(POSTURE + "[supervisor]\nrestart_cap = 4\n")
        async with asyncio.timeout(5):
            while cell.get().supervisor.restart_cap != 4:  # noqa: ASYNC110 - polls the cell
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, sampler, return_exceptions=True)
    # the sampler looked while the file was empty (10 ms apart: ~30 looks, fewer on a busy
    # machine, never none) -- and every look saw the old posture
    assert in_gap >= 3
    assert set(samples) == {(True, "hybrid")}
    # the watcher did look at the empty file, and refused it
    assert metrics.counters.config_reloads_total.get("rejected") >= 1
    assert cell.version == 2 and cell.last_error is None


@pytest.mark.parametrize("polling", [False, True], ids=["watchfiles", "polling"])
async def test_the_watcher_reads_only_a_stable_file(tmp_path, polling):
    path = tmp_path / "Config.toml"
    path.write_text(POSTURE)
    cell, metrics = make_cell(path)
    task = cell.start_watching(polling=polling, quiet=0.1, poll_interval=0.01)
    try:
        await asyncio.sleep(0.2)
        # appended in pieces 30 ms apart (less than the quiet period): each prefix is a valid
        # file with other values, which a watcher reading too early would apply
        with open(path, "a") as fh:  # noqa: ASYNC230 - the piecewise write is the fault
            for level in ("[log]\n", "level = 'debug'\n", "[bus]\n", "capacity = 64\n"):
                fh.write(level)
                fh.flush()
                await asyncio.sleep(0.03)
        async with asyncio.timeout(5):
            while cell.version == 1:  # noqa: ASYNC110 - polls the cell
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    cfg = cell.get()
    assert (cfg.log.level, cfg.bus.capacity, cell.version) == ("debug", 64, 2)
    assert cell.status().reloads == 1
    assert metrics.counters.config_reloads_total.get("rejected") == 0
