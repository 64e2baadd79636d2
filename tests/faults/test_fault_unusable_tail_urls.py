"""Fault class: an address ``tail`` can never reach is retried forever.

Before: ``ron-kernel tail --url notaurl`` (or an impossible port such as ``:99999``, or
``ftp://``) retried with backoff for ever, printing one error per attempt.

Rule: a URL that cannot be a kernel's observability address is a usage error (status 2, one
line naming the flag, the value and what is expected) before any connection is tried; the
``tail()`` function raises ``ValueError`` for it. Only ``http://``/``https://`` with a host
and, when given, a port from 1 to 65535 are followed. Tried: no scheme, ``ftp://``,
``file://``, ports 99999, 0, -1 and ``abc``, no host, a broken IPv6 literal.
"""

from __future__ import annotations

import subprocess

import pytest
from _faults_support import PY, in_parallel, kernel_env

from ron_kernel.cli.tail import check_url, tail

UNUSABLE = ["notaurl", "127.0.0.1:9909", "ftp://127.0.0.1:9909", "file:///tmp/x",
            "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://127.0.0.1:-1",
            "http://127.0.0.1:abc", "http://:9909", "http://[::1:9909"]


def test_unusable_urls_are_usage_errors_at_once(tmp_path):
    def one(url: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return url, subprocess.run([PY, "-m", "ron_kernel", "tail", "--url", url], cwd=tmp_path,
                                   env=kernel_env(), capture_output=True, text=True, timeout=30)

    # the command for one of each kind; the function for every one below
    for url, done in in_parallel(one, ["notaurl", "ftp://127.0.0.1:9909",
                                       "http://127.0.0.1:99999", "http://:9909"]):
        assert done.returncode == 2, (url, done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "--url" in lines[0] and repr(url) in lines[0], (url, lines)
        assert "retrying" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("url", UNUSABLE)
async def test_tail_refuses_them_before_connecting(url):
    assert check_url(url) is not None
    with pytest.raises(ValueError, match="url"):
        await tail(url, max_attempts=1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9909", "https://kernel.internal",
                                 "http://[::1]:9909/", "HTTP://localhost:80"])
def test_usable_urls_pass(url):
    assert check_url(url) is None
