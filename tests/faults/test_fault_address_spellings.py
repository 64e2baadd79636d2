"""Fault class: other spellings of the same address.

The loopback rule is decided on the address the OS will bind, not on how it is written:
``0``, ``0x0``, ``0.0``, ``000.000.000.000``, ``[::]``, ``[::0]``, ``[::ffff:0.0.0.0]`` are all
"every interface", in config and in ``Metrics.serve`` alike (one parser, ``_addr``).
"""

from __future__ import annotations

import pytest

from ron_kernel import Config, Metrics
from ron_kernel._addr import binds_every_interface, parse_addr
from ron_kernel.errors import ConfigError

EVERY_INTERFACE = ["0:0", "0x0:0", "0.0:0", "000.000.000.000:0", "0.0.0.0:0", "[::]:0",
                   "[::0]:0", "[0:0:0:0:0:0:0:0]:0", "[::ffff:0.0.0.0]:0", ":0", "*:0"]


@pytest.mark.parametrize("addr", EVERY_INTERFACE)
def test_every_spelling_of_the_unspecified_address_is_recognised(addr):
    host, _ = parse_addr(addr)
    assert binds_every_interface(host)


@pytest.mark.parametrize("addr", ["127.0.0.1:0", "127.1:0", "0177.0.0.1:0", "[::1]:0",
                                  "localhost:0", "10.0.0.1:0"])
def test_specific_addresses_are_not_mistaken_for_every_interface(addr):
    host, _ = parse_addr(addr)
    assert not binds_every_interface(host)


@pytest.mark.parametrize("addr", EVERY_INTERFACE)
def test_config_refuses_every_spelling_when_http_is_exposed(addr):
    with pytest.raises(ConfigError, match="not a concrete address"):
        Config.load(env={"RONK_OBS_HTTP": "true", "RONK_OBS_ADDR": addr}, argv=[])


@pytest.mark.parametrize("addr", EVERY_INTERFACE)
async def test_serve_refuses_every_spelling_unless_asked(addr):
    with pytest.raises(ValueError, match="binds every interface"):
        await Metrics().serve(addr)
