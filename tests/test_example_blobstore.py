"""The example service examples/blobstore: INTEROP vectors 3 and 4, run as a user runs it.

Vector 3 (OAP/1 observability, non-enforcing): a frame over ``max_frame`` is refused by the
service with 413 before it is read, and the kernel's ``/metrics`` counts the reject. Vector 4
(content-address sanity): a known payload gets its ``b3:<hex>`` id (computed here
independently with blake3), round-trips through GET, and a blob corrupted on disk is never
served. The end-to-end test runs ``ron-kernel run --app examples.blobstore:build`` as a
subprocess on loopback with its own data directory and ``Config.toml``, lowers the limit with
SIGHUP, and stops it with SIGINT (exit 0). Every wait is bounded; every process is stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blake3 import blake3

from examples.blobstore import APP_CONFIG, Blobstore, build
from examples.blobstore.config import MAX_FRAME, BlobstoreConfig
from examples.blobstore.index import Index
from examples.blobstore.store import BadId, DigestMismatch, Store, blob_id, parse_id
from ron_kernel import Config
from ron_kernel.errors import ConfigError
from ron_kernel.kernel import Kernel

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
APP = "examples.blobstore:build"
URL_LINE = re.compile(r"ron-kernel: observability on (http://127\.0\.0\.1:\d+) ")
# A fixed payload that spans several 64 KiB storage chunks (200 KiB, deterministic).
PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(200 * 1024))


def _env(**extra: str) -> dict[str, str]:
    # nothing of the developer's environment may configure the kernel under test; the
    # repository root makes `examples` importable from the test's own working directory
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RONK_", "RON_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _expected_id(data: bytes) -> str:
    return "b3:" + blake3(data).hexdigest()


# ----------------------------------------------------------------------------- a tiny client


def _http(method: str, url: str, body: bytes | None = None,
          timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str]]:
    """Read one response head (status, lower-cased headers) from ``sock``; rest stays in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    status, headers = _read_head(sock, buf)
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return status, headers, bytes(buf[:length])


def _raw_put(port: int, head: str, *, send: Callable[[socket.socket], None] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    """A hand-made ``PUT /o``: exactly the bytes the test chooses, nothing more."""
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(f"PUT /o HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        if send is not None:
            send(sock)
        return _read_response(sock, bytearray())


def _put_expect(port: int, body: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """``Expect: 100-continue`` as curl sends it: the body only after ``100 Continue``.

    The last item says whether the server asked for the body (``100 Continue``) at all.
    """
    head = f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(f"PUT /o HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        buf = bytearray()
        status, headers = _read_head(sock, buf)
        if status != 100:
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return status, headers, bytes(buf[:length]), False
        sock.sendall(body)
        return (*_read_response(sock, buf), True)


def _put_chunked(port: int, chunks: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """A chunked body (no Content-Length): only a capped read can refuse it."""
    def send(sock: socket.socket) -> None:
        wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        try:
            sock.sendall(wire)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: the answer is already on its way

    return _raw_put(port, "Transfer-Encoding: chunked\r\n", send=send)


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# ----------------------------------------------------------------------------- the process


class Service:
    """``python -m ron_kernel run --app examples.blobstore:build`` in ``cwd``."""

    def __init__(self, cwd: Path, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.out_path, self.err_path = cwd / "kernel.out", cwd / "kernel.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([PY, "-m", "ron_kernel", "run", "--app", APP, *(args or [])],
                                      cwd=cwd, env=env or _env(), stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = (json.loads(line) for line in self.err.splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("event") == name]

    def wait_until(self, what: str, cond: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if self.p.poll() is not None:
                raise AssertionError(f"exited ({self.p.returncode}) before {what}:\n"
                                     f"{self.out}\n{self.err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.err[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:  # only the processes this test started, by their handles
        service.stop()


CONFIG = """\
[observability]
expose_http = true
addr = "127.0.0.1:0"

[shutdown]
drain_deadline = "5s"

[app]
data_dir = "{data_dir}"
request_timeout = "5s"
{limit}"""


def test_blobstore_round_trip_oversized_frames_live_limit_and_ctrl_c(cwd, services):
    data_dir = cwd / "data"
    config = cwd / "Config.toml"
    config.write_text(CONFIG.format(data_dir=data_dir, limit=""))
    svc = Service(cwd)
    services.append(svc)
    base = svc.wait_until("the observability URL", lambda: URL_LINE.search(svc.out)).group(1)
    listening = svc.wait_until("blobstore_listening", lambda: svc.events("blobstore_listening"))
    assert listening[0]["max_frame"] == MAX_FRAME == 1 << 20
    port = int(listening[0]["port"])
    url = f"http://127.0.0.1:{port}"
    svc.wait_until("/readyz 200", lambda: _http("GET", base + "/readyz")[0] == 200)

    # start order: the index started after the store was ready, the API after both
    order = [e["event"] for e in (json.loads(line) for line in svc.err.splitlines()
                                  if line.startswith("{"))
             if e.get("event") in ("store_open", "index_ready", "blobstore_listening")]
    assert order == ["store_open", "index_ready", "blobstore_listening"]
    children = json.loads(_http("GET", base + "/status")[2])["supervisor"]
    assert children["index"]["depends_on"] == ["store"]
    assert children["http"]["depends_on"] == ["store", "index"]

    def rejects(reason: str) -> float:
        value = _metric(_http("GET", base + "/metrics")[2].decode(), "blobstore_rejects_total",
                        reason=reason)
        assert value is not None, f"blobstore_rejects_total{{reason={reason!r}}} not exported"
        return value

    # vector 4: the known payload gets its b3 id, and comes back byte for byte
    status, headers, body = _http("PUT", url + "/o", PAYLOAD)
    assert status == 201, body
    expected = _expected_id(PAYLOAD)
    assert json.loads(body) == {"id": expected, "size": len(PAYLOAD), "created": True}
    assert headers["Location"] == f"/o/{expected}"
    status, headers, body = _http("GET", f"{url}/o/{expected}")
    assert status == 200 and body == PAYLOAD
    assert headers["ETag"] == f'"{expected}"'
    assert _http("PUT", url + "/o", PAYLOAD)[0] == 200  # the same bytes again: no new blob
    assert (data_dir / expected[3:5] / expected[3:]).read_bytes() == PAYLOAD
    stats = json.loads(_http("GET", url + "/stats")[2])  # the index, over its mailbox
    assert stats == {"objects": 1, "bytes": len(PAYLOAD), "max_frame": MAX_FRAME}
    missing = "b3:" + "0" * 64
    assert _http("GET", f"{url}/o/{missing}")[0] == 404
    bad = rejects("bad_id")
    for malformed in ("nope", "b3:" + "0" * 63, "b3:" + "A" * 64, "sha256:" + "0" * 64):
        assert _http("GET", f"{url}/o/{malformed}")[0] == 400
    assert rejects("bad_id") == bad + 4

    # vector 3: a frame over 1 MiB is refused before it is read, and the kernel counts it
    before = rejects("frame_too_large")
    # Content-Length over the limit and not one body byte sent: the answer comes anyway
    status, headers, body = _raw_put(port, f"Content-Length: {MAX_FRAME + 1}\r\n")
    assert status == 413, body
    assert json.loads(body)["reason"] == "frame_too_large"
    assert headers["connection"].lower() == "close"
    assert rejects("frame_too_large") == before + 1
    # Expect: 100-continue (curl's way for large uploads): 413 instead of 100, body never sent
    status, _, _, continued = _put_expect(port, bytes(MAX_FRAME + 1))
    assert (status, continued) == (413, False)
    assert rejects("frame_too_large") == before + 2
    # exactly at the limit is accepted, through the same 100-continue path
    at_limit = bytes(range(256)) * (MAX_FRAME // 256)
    status, _, body, continued = _put_expect(port, at_limit)
    assert (status, continued) == (201, True)
    assert json.loads(body)["id"] == _expected_id(at_limit)
    assert rejects("frame_too_large") == before + 2

    # between the new and the old limit: accepted now, refused after the reload
    middle = bytes(reversed(range(256))) * (600 * 1024 // 256)
    assert _http("PUT", url + "/o", middle)[0] == 201
    new_limit = 512 * 1024
    config.write_text(CONFIG.format(data_dir=data_dir, limit=f"max_frame = {new_limit}\n"))
    svc.p.send_signal(signal.SIGHUP)
    svc.wait_until("the SIGHUP reload", lambda: '"trigger":"SIGHUP"' in svc.err)
    svc.wait_until("the new limit, live",
                   lambda: json.loads(_http("GET", url + "/stats")[2])["max_frame"] == new_limit)
    assert svc.events("blobstore_config_applied")[-1]["max_frame"] == new_limit
    other_middle = middle[1:] + b"!"
    status, _, body, continued = _put_expect(port, other_middle)
    assert (status, continued) == (413, False), body
    assert json.loads(body)["error"] == (
        f"a body of {len(other_middle)} bytes is over max_frame ({new_limit} bytes)")
    # a chunked body over the limit: refused by the capped read, after at most one chunk more
    status, _, body = _put_chunked(port, [bytes(256 * 1024)] * 3)
    assert status == 413 and json.loads(body)["reason"] == "frame_too_large"
    assert rejects("frame_too_large") == before + 4
    assert _http("GET", f"{url}/o/{_expected_id(other_middle)}")[0] == 404  # never stored
    status, _, body = _put_chunked(port, [PAYLOAD[:1000], PAYLOAD[1000:]])  # under the limit
    assert status == 200 and json.loads(body)["id"] == expected

    # a blob corrupted on disk is never served, and the kernel counts the mismatch
    (data_dir / expected[3:5] / expected[3:]).write_bytes(PAYLOAD[:-1] + b"\x00")
    mismatches = rejects("digest_mismatch")
    status, _, body = _http("GET", f"{url}/o/{expected}")
    assert status == 500 and json.loads(body)["reason"] == "digest_mismatch"
    assert rejects("digest_mismatch") == mismatches + 1
    assert svc.events("blob_corrupt")[-1]["blob"] == expected

    metrics = _http("GET", base + "/metrics")[2].decode()
    for op, code in (("put", "201"), ("put", "413"), ("get", "200"), ("get", "500"),
                     ("stats", "200")):
        count = _metric(metrics, "blobstore_request_seconds_count", op=op, code=code)
        assert count is not None and count >= 1, (op, code)

    svc.p.send_signal(signal.SIGINT)
    assert svc.p.wait(timeout=10) == 0, svc.err[-3000:]
    assert svc.events("shutdown_complete")


def test_config_check_explains_the_app_keys_with_their_sources(cwd):
    config = cwd / "Config.toml"
    config.write_text('[app]\ndata_dir = "/srv/blobs"\nmax_frame = 65536\n')
    done = subprocess.run(
        [PY, "-m", "ron_kernel", "config", "check", "--app", APP,
         "--set", "app.listen=127.0.0.1:8080"],
        cwd=cwd, env=_env(RONK_APP__REQUEST_TIMEOUT="250ms"), capture_output=True, text=True,
        timeout=30)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert rows["app.data_dir"].split("#")[1].strip() == f"file:{config}:2"
    assert "'/srv/blobs'" in rows["app.data_dir"]
    assert rows["app.max_frame"].split("#")[1].strip() == f"file:{config}:3"
    assert rows["app.request_timeout"].split()[1] == "250ms"
    assert rows["app.request_timeout"].endswith("# env:RONK_APP__REQUEST_TIMEOUT")
    assert rows["app.listen"].endswith("# cli:--set app.listen")
    assert rows["app.sweep_interval"].endswith("# default")
    assert rows["bus.capacity"].endswith("# default")  # the kernel's keys are still there

    # a bad app value: exit 1, naming the key, the value's source and the expected type
    done = subprocess.run(
        [PY, "-m", "ron_kernel", "config", "check", "--app", APP],
        cwd=cwd, env=_env(RONK_APP__MAX_FRAME="0", RONK_APP__LISTEN="no-port"),
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "app.max_frame" in done.stderr and "env:RONK_APP__MAX_FRAME" in done.stderr
    assert "app.listen" in done.stderr and "HOST:PORT" in done.stderr
    # without --app, the [app] table has no model: an error that says what to do
    done = subprocess.run([PY, "-m", "ron_kernel", "config", "check"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "app_config" in done.stderr


def test_run_refuses_a_bad_app_value_and_a_bad_app_config_declaration(cwd):
    done = subprocess.run([PY, "-m", "ron_kernel", "run", "--app", APP,
                           "--set", "app.request_timeout=soon"],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "app.request_timeout" in done.stderr and "cli:--set app.request_timeout" in done.stderr
    (cwd / "declares_junk.py").write_text("APP_CONFIG = dict\n\ndef build(kernel):\n    pass\n")
    for command in (["run"], ["config", "check"]):
        done = subprocess.run([PY, "-m", "ron_kernel", *command, "--app", "declares_junk:build"],
                              cwd=cwd, env=_env(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1
        assert "declares_junk.APP_CONFIG" in done.stderr and "pydantic" in done.stderr


# ----------------------------------------------------------------------------- in process


def test_store_ids_verification_healing_scan_and_sweep(tmp_path: Path) -> None:
    store = Store(tmp_path / "blobs")
    store.open()
    blob, created = store.put(b"abc")
    assert (blob, created) == (_expected_id(b"abc"), True)
    assert blob_id(b"abc") == blob and store.put(b"abc") == (blob, False)
    digest = parse_id(blob)
    assert store.get(digest) == b"abc"
    store.path_of(digest).write_bytes(b"abd")
    with pytest.raises(DigestMismatch) as info:
        store.get(digest)
    assert info.value.actual == _expected_id(b"abd")
    assert store.put(b"abc") == (blob, True)  # a corrupt copy is replaced by the good bytes
    assert store.get(digest) == b"abc"
    for text in ("abc", "b3:", "b3:" + "g" * 64, "b3:" + "0" * 65, "B3:" + "0" * 64):
        with pytest.raises(BadId):
            parse_id(text)

    leftover = store.path_of(digest).parent / f".{digest}.dead.tmp"
    leftover.write_bytes(b"half a blob")
    assert store.scan() == {blob: 3}  # temporary files are no blobs
    assert store.sweep(older_than=3600) == 0  # too young to be abandoned
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    assert store.sweep(older_than=3600) == 1 and not leftover.exists()


def test_index_counts_each_id_once() -> None:
    index = Index({"b3:a": 3})
    index.add("b3:a", 3)
    index.add("b3:b", 10)
    stats = index.stats()
    assert (stats.objects, stats.bytes) == (2, 13)


def test_the_app_config_is_typed_fail_closed_and_takes_duration_strings() -> None:
    assert APP_CONFIG is BlobstoreConfig
    cfg = Config.load(env={}, argv=["--set", "app.request_timeout=250ms"], app=BlobstoreConfig)
    assert cfg.app.request_timeout == timedelta(milliseconds=250)
    assert cfg.app.max_frame == MAX_FRAME
    with pytest.raises(ConfigError) as info:
        Config.load(env={"RONK_APP__MAX_FRAM": "1"}, argv=[], app=BlobstoreConfig)
    assert "did you mean 'max_frame'" in str(info.value)
    with pytest.raises(ConfigError, match=r"app\.sweep_interval"):
        Config.load(env={"RONK_APP__SWEEP_INTERVAL": "0s"}, argv=[], app=BlobstoreConfig)


def test_the_factory_needs_the_app_config() -> None:
    with pytest.raises(TypeError, match="app_config=BlobstoreConfig"):
        build(Kernel(Config.from_mapping({}), env={}, watch_config=False, handle_sighup=False))


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_in_process_slow_body_stats_and_a_reload_of_the_listen_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Config.toml"
    app = (f'[app]\ndata_dir = "{tmp_path / "blobs"}"\nrequest_timeout = "300ms"\n'
           'sweep_interval = "20ms"\n')
    path.write_text(app + "max_frame = 4096\n")
    stale = tmp_path / "blobs" / "ab" / ".ab12.dead.tmp"  # a write a crash interrupted
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    kernel = Kernel(path=path, env={}, argv=[], app_config=BlobstoreConfig,
                    watch_config=False, handle_sighup=False)
    service: Blobstore = build(kernel)
    async with kernel:
        await _until(lambda: service.url is not None and kernel.health.snapshot()["ready"])
        await _until(lambda: not stale.exists())  # the store child's sweep
        url = service.url
        assert url is not None
        async with aiohttp.ClientSession() as session:
            async with session.put(url + "/o", data=b"x" * 4096) as resp:
                assert resp.status == 201
            async with session.get(url + "/stats") as resp:
                assert await resp.json() == {"objects": 1, "bytes": 4096, "max_frame": 4096}

            # a body that stops arriving: 408 after request_timeout, counted, nothing stored
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            assert head.startswith(b"HTTP/1.1 408 ")
            writer.close()
            rendered = kernel.metrics.render().decode()
            assert _metric(rendered, "blobstore_rejects_total", reason="read_timeout") == 1.0

            # a reload reaches the http child through ctx.config_changes(): the new limit
            # applies to the next request; a new listen address waits for the next start
            path.write_text(app + 'max_frame = 10\nlisten = "127.0.0.1:1"\n')
            kernel.config_cell.reload()
            async with session.put(url + "/o", data=b"y" * 11) as resp:
                assert resp.status == 413
            async with session.get(url + "/stats") as resp:
                assert (await resp.json())["max_frame"] == 10
        assert kernel.supervisor.snapshot()["http"]["restarts"] == 0
    assert kernel.state == "stopped"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith("{")]
    later = [e for e in logged if e["event"] == "blobstore_restart_needed"]
    assert [e["keys"] for e in later] == [["listen"]]
    applied = [e for e in logged if e["event"] == "blobstore_config_applied"]
    assert [e["max_frame"] for e in applied] == [10]


# ----------------------------------------------------------------------------- the README


def _readme_block(heading: str) -> str:
    section = (ROOT / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_service_example_runs_and_passes_mypy_strict(cwd: Path) -> None:
    script = cwd / "service_example.py"
    script.write_text(_readme_block("A service on the kernel"))
    done = subprocess.run([PY, str(script)], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[:1] == ["hello"]  # the greeter ran, with its settings
    assert '"reason":"done counting"' in done.stderr  # stopped from inside, then drained
    assert '"shutdown_complete"' in done.stderr
    typed = subprocess.run([PY, "-m", "mypy", "--strict", "--no-error-summary", str(script)],
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert typed.returncode == 0, typed.stdout + typed.stderr
