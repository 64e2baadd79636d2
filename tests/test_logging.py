"""JSON log lines: schema, levels, runtime level changes, redaction, corr_id propagation."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest

from ron_kernel._logging import (
    bind_corr_id,
    configure_logging,
    current_corr_id,
    get_logger,
    new_corr_id,
    set_level,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(stream=out)
    yield out
    configure_logging()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_standard_fields_first(stream):
    get_logger("supervisor").info("service_crashed", reason="panic: boom", latency_ms=1.5)
    [line] = _lines(stream)
    assert list(line)[:6] == ["ts", "level", "service", "event", "corr_id", "amnesia"]
    assert line["level"] == "INFO"
    assert line["service"] == "ron-kernel"
    assert line["event"] == "service_crashed"
    assert line["reason"] == "panic: boom"
    assert line["latency_ms"] == 1.5
    assert line["amnesia"] == "off"
    assert line["component"] == "supervisor"
    assert line["corr_id"] is None
    ts = str(line["ts"])
    assert ts.endswith("Z")
    assert datetime.fromisoformat(ts.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def test_amnesia_and_service_come_from_the_configuration():
    out = io.StringIO()
    configure_logging(stream=out, amnesia=True, service="svc-index")
    try:
        get_logger("x").warning("w")
        [line] = _lines(out)
        assert line["amnesia"] == "on" and line["service"] == "svc-index"
        assert line["level"] == "WARN"
    finally:
        configure_logging()


def test_level_filters_and_changes_at_runtime_for_existing_loggers(stream):
    log = get_logger("config")  # made before the change
    log.debug("hidden")
    set_level("trace")  # trace maps to debug
    log.debug("shown")
    set_level("error")
    log.warning("hidden too")
    log.error("shown too")
    assert [x["event"] for x in _lines(stream)] == ["shown", "shown too"]


def test_bad_format_or_level_is_refused_with_the_value_named():
    with pytest.raises(ValueError, match=r"log\.format.*'xml'"):
        configure_logging(format="xml")
    with pytest.raises(ValueError, match=r"log\.level.*'loud'"):
        set_level("loud")


def test_secrets_are_redacted_in_top_level_and_nested_fields(stream):
    get_logger("config").info(
        "config_loaded", api_token="t0k", Password="hunter2", KEY="k", SecretSauce="s",
        nested={"db": {"password": "p", "host": "h"}, "items": [{"private_key": "pk"}]},
        safe="visible")
    [line] = _lines(stream)
    assert line["api_token"] == line["Password"] == line["KEY"] == line["SecretSauce"] == "***"
    assert line["nested"] == {"db": {"password": "***", "host": "h"},
                              "items": [{"private_key": "***"}]}
    assert line["safe"] == "visible"
    for secret in ("t0k", "hunter2", "pk"):
        assert secret not in stream.getvalue()


def test_text_format_is_for_people_and_redacts_too():
    out = io.StringIO()
    configure_logging(format="text", stream=out)
    try:
        get_logger("kernel").info("started", token="abc", port=9100)
        text = out.getvalue()
        assert "started" in text and "port=9100" in text
        assert "abc" not in text and "token=***" in text
        assert "\x1b[" not in text  # no colours when the stream is not a tty
        assert not text.lstrip().startswith("{")
    finally:
        configure_logging()


def test_exceptions_are_logged_as_text_in_the_json_line(stream):
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("x").exception("failed")
    [line] = _lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in str(line["exception"])


def test_corr_id_is_bound_for_a_block_and_generated_when_not_given(stream):
    log = get_logger("x")
    with bind_corr_id("req-1"):
        log.info("inside")
        with bind_corr_id() as generated:
            log.info("nested")
    log.info("outside")
    inside, nested, outside = _lines(stream)
    assert inside["corr_id"] == "req-1"
    assert nested["corr_id"] == generated and generated != "req-1"
    assert outside["corr_id"] is None
    assert current_corr_id() is None
    assert len(new_corr_id()) == 36


async def test_tasks_created_inside_a_bound_block_inherit_the_corr_id(stream):
    log = get_logger("bus")
    seen: list[str | None] = []

    async def consumer() -> None:
        await asyncio.sleep(0)
        seen.append(current_corr_id())
        log.info("handled")

    with bind_corr_id("evt-7"):
        task = asyncio.create_task(consumer())
    await task
    assert seen == ["evt-7"]
    assert _lines(stream)[-1]["corr_id"] == "evt-7"


@pytest.mark.parametrize("bad", ["", "x" * 129, "a\nb"])
def test_a_bad_corr_id_is_refused(bad):
    with pytest.raises(ValueError, match="corr_id"), bind_corr_id(bad):
        pass


def test_explicit_corr_id_field_wins_over_the_bound_one(stream):
    with bind_corr_id("bound"):
        get_logger("x").info("e", corr_id="explicit")
    assert _lines(stream)[0]["corr_id"] == "explicit"
