"""A module-wide nats-server and a raw client for the federation fault classes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from nats.aio.client import Client

from benchmarks._natsserver import NatsServer
from ron_kernel import Config
from ron_kernel.kernel import Kernel


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One loopback nats-server for the module, stopped at its end."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def raw_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A bare nats-py client: it publishes whatever bytes a test wants."""
    nc = Client()
    await nc.connect(nats_server.url, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


def prefix() -> str:
    """A subject prefix of its own for each test."""
    return "f" + uuid.uuid4().hex[:10]


def federated_kernel(url: str, node: str, subject_prefix: str) -> Kernel:
    """A kernel federated on ``url`` as ``node`` (no file, no env, no signals)."""
    argv = ["--fed-nats-url", url, "--fed-node", node, "--fed-prefix", subject_prefix]
    return Kernel(Config.load(argv=argv, env={}), env={}, watch_config=False,
                  handle_sighup=False)
