"""Named listening sockets: one parser, the loopback rule, bind once, duplicates for children."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from ron_kernel._appspec import load_app, load_object, spec_of
from ron_kernel._listen import ListenSockets, check_name, describe
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext, Supervisor


def test_bind_once_and_the_same_name_and_address_again_is_the_same_socket():
    sockets = ListenSockets()
    try:
        first = sockets.bind("web", "127.0.0.1:0")
        assert sockets.bind("web", "127.0.0.1:0") is first
        assert sockets.names() == ["web"]
        host, port = first.getsockname()[:2]
        assert sockets.status() == {"web": f"{host}:{port}"}
        with pytest.raises(ValueError, match=re.escape("already bound to '127.0.0.1:0'")):
            sockets.bind("web", "127.0.0.2:0")
    finally:
        sockets.close()
    assert sockets.names() == [] and describe(first) == "?"


@pytest.mark.parametrize(("addr", "why"), [
    ("0.0.0.0:0", "binds every interface"),
    ("[::]:0", "binds every interface"),
    (":0", "binds every interface"),
    ("127.0.0.1", "no port"),
    ("127.0.0.1:99999", "above 65535"),
    ("not a host:1", "is not an IP address or host name"),
])
def test_bad_or_unspecified_addresses_are_refused_naming_the_socket(addr: str, why: str):
    with pytest.raises(ValueError, match=why) as caught:
        ListenSockets().bind("web", addr)
    assert "listen 'web'" in str(caught.value)


def test_every_interface_can_be_asked_for_explicitly():
    sockets = ListenSockets()
    try:
        sock = sockets.bind("any", "0.0.0.0:0", allow_unspecified=True)
        assert sock.getsockname()[0] == "0.0.0.0"
    finally:
        sockets.close()


def test_an_address_in_use_is_an_os_error_naming_it():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"listen 'web' addr '127.0.0.1:{port}': cannot bind"):
            ListenSockets().bind("web", f"127.0.0.1:{port}")
    finally:
        taken.close()


@pytest.mark.parametrize("name", ["", "a/b", "-x", "x" * 65, 3, "sp ace"])
def test_socket_names_are_plain_words(name: object):
    with pytest.raises(ValueError, match="listening socket name"):
        check_name(name)


def test_children_get_a_duplicate_they_may_close_and_unknown_names_are_a_key_error():
    sockets = ListenSockets()
    try:
        own = sockets.bind("web", "127.0.0.1:0")
        dup = sockets.dup("web")
        assert dup.fileno() != own.fileno() and dup.getsockname() == own.getsockname()
        dup.close()
        assert sockets.get("web").getsockname() == own.getsockname()  # still listening
        with pytest.raises(KeyError, match=r"no listening socket named 'api'.*known: 'web'"):
            sockets.dup("api")
    finally:
        sockets.close()


async def test_a_child_serves_on_the_kernels_socket_and_a_restart_gets_a_fresh_one():
    kernel = Kernel(env={}, argv=[], watch_config=False, handle_sighup=False)
    sock = kernel.listen("web", "127.0.0.1:0")
    host, port = sock.getsockname()[:2]
    starts: list[int] = []

    async def server(ctx: ChildContext) -> None:
        mine = ctx.listen_socket("web")
        starts.append(mine.fileno())

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hi")
            writer.close()

        srv = await asyncio.start_server(answer, sock=mine)
        ctx.ready()
        try:
            if len(starts) == 1:
                raise RuntimeError("crash once")
            await ctx.shutdown.wait()
        finally:
            srv.close()  # closes this start's duplicate, never the kernel's socket

    kernel.supervise("srv", server)
    async with kernel:
        deadline = asyncio.get_running_loop().time() + 10
        while len(starts) < 2 or not kernel.health.all_ready():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(host, port)
        assert await reader.read() == b"hi"
        writer.close()
        assert kernel.status()["listen"] == {"web": f"{host}:{port}"}
    assert kernel.listeners.names() == []  # closed with the kernel


def test_a_child_without_a_kernel_has_no_sockets():
    ctx: ChildContext = ChildContext("x")
    with pytest.raises(RuntimeError, match="no listening sockets"):
        ctx.listen_socket("web")
    assert Supervisor()  # a plain supervisor gives its children none either


def test_app_specs_load_and_only_importable_things_have_a_spec():
    assert load_app("json:dumps")({"a": 1}) == '{"a": 1}'
    assert load_object("os.path:join") is __import__("os.path").path.join
    with pytest.raises(ValueError, match="must be MODULE:FACTORY"):
        load_app("json")
    with pytest.raises(ValueError, match="cannot import 'no_such_mod_x'"):
        load_app("no_such_mod_x:f")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        load_app("json:nope")
    with pytest.raises(ValueError, match="is not callable"):
        load_app("json:__name__")
    assert spec_of(check_name, what="x") == "ron_kernel._listen:check_name"
    with pytest.raises(ValueError, match="cannot be imported by another process"):
        spec_of(lambda: None, what="worker app")
    with pytest.raises(ValueError, match="no module and name"):
        spec_of(3, what="worker app")
