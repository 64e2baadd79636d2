"""The public surface is frozen: a snapshot test, the six names, and docstrings everywhere."""

from __future__ import annotations

import difflib
import inspect
import sys
from pathlib import Path

import ron_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import api_snapshot

FROZEN_SIX = {"Bus", "KernelEvent", "Metrics", "HealthState", "Config", "wait_for_ctrl_c"}


def test_api_snapshot_matches_the_checked_in_file():
    expected = api_snapshot.SNAPSHOT.read_text()
    actual = api_snapshot.render()
    diff = "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        "api/ron_kernel.txt (checked in)", "generated from the code"))
    assert actual == expected, f"public API changed; run `make api` if intended:\n{diff}"


def test_top_level_exports_exactly_the_frozen_six():
    assert set(ron_kernel.__all__) == FROZEN_SIX
    assert len(ron_kernel.__all__) == len(set(ron_kernel.__all__))
    for name in ron_kernel.__all__:
        assert getattr(ron_kernel, name) is not None


def test_top_level_namespace_holds_nothing_public_beyond_all():
    public = {n for n in vars(ron_kernel) if not n.startswith("_")}
    # submodules imported as attributes are fine (ron_kernel.errors etc.), other names are not
    stray = {n for n in public - set(ron_kernel.__all__)
             if not inspect.ismodule(getattr(ron_kernel, n))}
    assert stray == set()


def test_every_public_item_has_a_docstring():
    undocumented = []
    for qual, kind, obj in api_snapshot.public_items():
        if kind in ("constant", "attribute"):
            continue
        if qual.rsplit(".", 1)[-1] in api_snapshot.PUBLIC_DUNDERS:
            continue
        doc = inspect.getdoc(obj) if kind != "property" else obj.__doc__
        if not doc or not doc.strip():
            undocumented.append(f"{kind} {qual}")
    assert undocumented == []
