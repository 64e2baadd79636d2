"""The status page as files and HTTP answers (no browser: tests/test_ui_browser.py drives one).

* every asset is served from the package with its content type, ``Cache-Control: no-cache``
  and a strict Content-Security-Policy (no inline script, nothing from elsewhere);
* the files keep the rules the CSP and the XSS tests rely on: no inline script or handler, no
  HTML built from strings, no storage of the control token, no URL of another host (no CDN);
* every file of ``ui/`` is package data (so it is in the wheel).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ron_kernel import Config, _ui
from ron_kernel.kernel import Kernel
from ron_kernel.mailbox import Mailbox
from ron_kernel.supervisor import ChildContext, Supervisor

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "src" / "ron_kernel" / "ui"
HTTP = {"observability": {"expose_http": True, "addr": "127.0.0.1:0"}}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


def _kernel() -> Kernel:
    return Kernel(Config.from_mapping(HTTP), env={}, watch_config=False, handle_sighup=False)


async def test_every_asset_is_served_with_its_type_no_cache_and_the_csp():
    async with _kernel() as k, aiohttp.ClientSession() as http:
        base = k.urls()["base"]
        assert k.urls()["ui"] == base + "/ui"
        pages = {"/ui": "text/html"} | {f"/ui/{name}": ctype
                                        for name, ctype in _ui.UI_ASSETS.items()}
        for path, ctype in pages.items():
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == ctype, path
                if not ctype.startswith("image/"):
                    assert resp.charset == "utf-8", path
                assert resp.headers["Cache-Control"] == "no-cache"
                csp = resp.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "script-src 'self'" in csp
                assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                body = await resp.read()
                name = "index.html" if path == "/ui" else path.rpartition("/")[2]
                assert body == (UI_DIR / name).read_bytes()


async def test_unknown_assets_are_404_and_the_slash_redirects():
    async with _kernel() as k, aiohttp.ClientSession() as http:
        base = k.urls()["base"]
        for path in ("/ui/nope.js", "/ui/..%2f_kernel.py", "/ui/app.js/x"):
            async with http.get(base + path) as resp:
                assert resp.status == 404, path
                assert (await resp.json())["error"] == "not found"
        async with http.get(base + "/ui/", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "../ui"
        async with http.get(base + "/ui/") as resp:  # followed: the page
            assert resp.status == 200 and resp.content_type == "text/html"


async def test_status_lists_mailboxes_and_nested_supervisors():
    async def idle(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    k = _kernel()
    box: Mailbox[int] = Mailbox(8, name="jobs", metrics=k.metrics)
    box.try_send(1)
    box.try_send(2)
    inner = Supervisor(name="pool", strategy="one_for_all")
    inner.add("w1", idle)
    inner.add("w2", idle, depends_on=["w1"])
    k.supervise("pool", inner)
    async with k, aiohttp.ClientSession() as http:
        async with http.get(k.urls()["status"]) as resp:
            body: dict[str, Any] = await resp.json()
    assert body["mailboxes"] == [{"name": "jobs", "depth": 2, "capacity": 8}]
    pool = body["supervisor"]["pool"]
    assert pool["strategy"] == "one_for_all"
    assert list(pool["children"]) == ["w1", "w2"]
    assert pool["children"]["w2"]["depends_on"] == ["w1"]
    assert "children" not in pool["children"]["w1"]  # a plain child has no subtree


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def test_the_html_has_no_inline_script_handler_or_style_and_only_local_assets():
    parser = _Tags()
    parser.feed((UI_DIR / "index.html").read_text())
    assert parser.script_text == []
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{"src": "ui/app.js", "defer": None}]
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        for key in ("src", "href", "action"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith("ui/") and "//" not in value, (tag, key, value)
    # the toolbar where the control buttons appear is there, hidden controls included
    ids = {attrs.get("id") for _, attrs in parser.tags}
    assert {"toolbar", "token-form", "controls", "tree", "feed", "conn"} <= ids


def test_no_asset_names_another_host():
    for path in UI_DIR.iterdir():
        text = path.read_text()
        hosts = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}", text)
        # the SVG namespace is an identifier, not a fetch
        assert [h for h in hosts if h != "http://www.w3.org"] == [], (path.name, hosts)


def test_the_script_never_builds_html_from_strings_nor_stores_the_token():
    code = (UI_DIR / "app.js").read_text()
    # comments may name the forbidden things; the code may not use them
    code = re.sub(r"//[^\n]*", "", code)
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "localStorage", "sessionStorage", "document.cookie",
                   "setTimeout(\"", "setInterval(\""):
        assert banned not in code, banned


def test_every_ui_file_is_package_data_and_is_served():
    with (ROOT / "pyproject.toml").open("rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["ron_kernel"]
    files = sorted(p.name for p in UI_DIR.iterdir())
    for name in files:
        assert any(fnmatch.fnmatch(f"ui/{name}", pat) for pat in patterns), name
    assert sorted(_ui.UI_ASSETS) == files
