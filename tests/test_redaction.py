"""The one redaction rule: secret-like names, URL credentials, and the kernel's own fields."""

from __future__ import annotations

import pytest

from ron_kernel import _config, _logging, _redact
from ron_kernel._redact import REDACTED, is_secret_name, redact_text, redact_value


@pytest.mark.parametrize("name", [
    "api_token", "Password", "KEY", "SecretSauce", "private_key", "passwd", "pwd", "pass",
    "Authorization", "auth.bearer_token", "RONK_PASS", "RONK_API_PW", "RONK_CREDENTIALS", "dsn",
    "db.dsn", "cookie", "session_id", "privateKey", "apiKey", "x-auth-token",
])
def test_secret_like_names_are_secret(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "key", "keys", "reason", "event", "changed", "problems", "bus.capacity", "log.level",
    "observability.addr", "restart_cap", "monkey", "version", "service", "child",
])
def test_the_kernels_own_fields_and_plain_names_are_not(name):
    assert not is_secret_name(name)


def test_url_credentials_are_removed_wherever_a_url_appears():
    text = "connect postgres://u:s3cr3t@db:5432/x then nats://tok@127.0.0.1:4222 and http://h/p"
    assert redact_text(text) == (
        f"connect postgres://{REDACTED}@db:5432/x then nats://{REDACTED}@127.0.0.1:4222 "
        "and http://h/p")
    assert redact_value({"targets": ["redis://:pw@h"], "n": 1}) == {
        "targets": [f"redis://{REDACTED}@h"], "n": 1}


def test_config_logs_and_redaction_share_one_rule_and_one_marker():
    assert _config.REDACTED is _logging.REDACTED is _redact.REDACTED
    assert _config.show("db.password", "p") == REDACTED
    assert _config.show("bus.endpoint", "postgres://u:p@h/x") == f"'postgres://{REDACTED}@h/x'"
