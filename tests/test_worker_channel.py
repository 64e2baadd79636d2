"""The worker channel's framing and the exposition merge, alone (no process started)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ron_kernel._channel import MAX_FRAME, FrameDecoder, ProtocolError, SyncChannel, encode
from ron_kernel._exposition import (
    TextWriter,
    add_labels,
    family_names,
    merge,
    split_families,
)

MESSAGES = st.lists(st.dictionaries(
    st.text(min_size=1, max_size=8), st.one_of(st.integers(-10**9, 10**9), st.text(max_size=20),
                                               st.booleans(), st.none()),
    max_size=4).map(lambda d: {**d, "t": "x"}), max_size=8)


@given(MESSAGES, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_frames_survive_any_split_of_the_stream(messages, cuts):
    stream = b"".join(encode(m) for m in messages)
    decoder = FrameDecoder()
    out = []
    pos = 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        out += decoder.feed(stream[pos:pos + cut])
        pos += cut
        if pos >= len(stream):
            break
    assert out == messages
    assert decoder.pending == 0


@pytest.mark.parametrize(("data", "why"), [
    ((MAX_FRAME + 1).to_bytes(4, "big"), "over the"),
    (b"\x00\x00\x00\x05{nope", "not JSON"),
    (b"\x00\x00\x00\x07[1,2,3]", "not an object"),
    (b"\x00\x00\x00\x08{\"t\": 1}", "no string field 't'"),
])
def test_what_is_not_a_frame_is_a_protocol_error_and_poisons_the_decoder(data, why):
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=why):
        decoder.feed(data)
    with pytest.raises(ProtocolError):  # no resynchronising on a stream gone wrong
        decoder.feed(encode({"t": "ping"}))


def test_an_oversized_message_is_refused_when_encoding():
    with pytest.raises(ProtocolError, match="over the"):
        encode({"t": "big", "x": "a" * MAX_FRAME})
    with pytest.raises(TypeError, match="plain JSON"):
        encode({"t": "x", "x": object()})


def test_the_sync_channel_reads_frames_and_passed_descriptors_in_order():
    left, right = socket.socketpair()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    try:
        channel = SyncChannel(right)

        def send() -> None:
            left.sendall(encode({"t": "one"}))
            socket.send_fds(left, [encode({"t": "two"})], [listener.fileno()])
            left.sendall(encode({"t": "three"})[:3])

        thread = threading.Thread(target=send)
        thread.start()
        assert channel.recv(5)["t"] == "one"
        assert channel.recv(5)["t"] == "two"
        fd = channel.take_fd()
        assert fd is not None
        received = socket.socket(fileno=fd)
        assert received.getsockname() == listener.getsockname()
        received.close()
        thread.join()
        with pytest.raises(TimeoutError):
            channel.recv(0.05)
        ready, leftover = channel.detach()
        assert ready == [] and leftover == encode({"t": "three"})[:3]
        left.close()
        with pytest.raises(EOFError):
            channel.recv(5)
    finally:
        for sock in (left, right, listener):
            sock.close()


# ----------------------------------------------------------------------------- exposition

PARENT = """# HELP up_total Things.
# TYPE up_total counter
up_total{amnesia="off"} 1.0
# HELP only_parent A gauge.
# TYPE only_parent gauge
only_parent 2.0
"""
WORKER = """# HELP up_total Things.
# TYPE up_total counter
up_total{amnesia="off"} 5.0
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1.0
lat_seconds_bucket{le="+Inf"} 2.0
lat_seconds_count 2.0
lat_seconds_sum 0.5
# HELP empty_family Nothing yet.
# TYPE empty_family counter
"""


def test_merge_puts_each_family_once_with_every_texts_samples():
    worker0 = add_labels(WORKER, 'pool="w",worker="0"')
    worker1 = add_labels(WORKER, 'pool="w",worker="1"')
    text = merge([PARENT, worker0, worker1])
    assert family_names(text) == ["up_total", "only_parent", "lat_seconds", "empty_family"]
    assert text.count("# HELP up_total ") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ups = {(s.labels.get("worker"), s.value) for s in families["up"].samples}
    assert ups == {(None, 1.0), ("0", 5.0), ("1", 5.0)}
    buckets = [s for s in families["lat_seconds"].samples if s.name == "lat_seconds_bucket"]
    assert {s.labels["worker"] for s in buckets} == {"0", "1"}
    assert 'lat_seconds_count{pool="w",worker="1"} 2.0' in text


def test_add_labels_handles_series_with_and_without_labels_and_leaves_comments():
    text = '# HELP x X.\n# TYPE x gauge\nx 1.0\ny{a="b c"} 2.0\nz{} 3.0\n'
    assert add_labels(text, 'k="v"') == ('# HELP x X.\n# TYPE x gauge\nx{k="v"} 1.0\n'
                                         'y{k="v",a="b c"} 2.0\nz{k="v"} 3.0\n')


def test_lines_before_any_family_are_kept():
    assert split_families("stray 1.0\n# HELP a A.\n# TYPE a gauge\na 1.0") == [
        ("", "", "stray 1.0\n"), ("a", "# HELP a A.\n# TYPE a gauge\n", "a 1.0\n")]


NAMES = st.sampled_from(["alpha", "beta", "gamma_seconds", "delta_total"])


@given(st.lists(st.lists(st.tuples(NAMES, st.integers(0, 5)), max_size=6), min_size=1,
                max_size=5))
def test_merge_keeps_every_sample_and_yields_a_parsable_page(texts):
    rendered = []
    expected = set()
    for index, families in enumerate(texts):
        out = []
        for name, value in dict(families).items():
            out.append(f"# HELP {name} Help of {name}.\n# TYPE {name} gauge\n"
                       f'{name}{{src="{index}"}} {float(value)}\n')
            expected.add((name, str(index), float(value)))
        rendered.append("".join(out))
    page = merge(rendered)
    got = {(f.name, s.labels["src"], s.value) for f in text_string_to_metric_families(page)
           for s in f.samples}
    assert got == expected
    assert len(family_names(page)) == len(set(family_names(page)))


def test_encoded_frames_are_orjson():
    frame = encode({"t": "ping", "n": 1})
    assert orjson.loads(frame[4:]) == {"t": "ping", "n": 1}


def _registry_with_every_kind() -> Any:
    registry = CollectorRegistry(auto_describe=False)
    gauge = Gauge("many", "Many series", ["n"], registry=registry)
    for n in range(50):
        gauge.labels(n=str(n)).set(n / 3)
    counter = Counter("reqs", 'Requests with \\ and\nnewline', ["path", "code"],
                      registry=registry)
    counter.labels(path='a"b\\c\nd', code="200").inc(2.5)
    Histogram("lat_seconds", "Latency", registry=registry).observe(0.3)
    Summary("size_bytes", "Sizes", registry=registry).observe(3)
    Info("build", "Build", registry=registry).info({"version": "1.2"})
    Enum("state", "State", states=["up", "down"], registry=registry)
    Gauge("plain", "No labels", registry=registry).set(float("inf"))

    class Custom:
        def collect(self) -> list[Any]:
            family = GaugeMetricFamily("stamped", "With a timestamp", labels=["k"])
            family.add_metric(["v"], 1.0, timestamp=1700000000.5)
            odd = GaugeMetricFamily("odd.name", "Not a classic name", labels=["odd-label"])
            odd.add_metric(["x"], 2.0)
            return [family, odd]

    registry.register(Custom())  # type: ignore[arg-type]
    return registry


def test_the_text_writer_writes_exactly_what_generate_latest_writes():
    registry = _registry_with_every_kind()
    writer = TextWriter()
    for _ in range(2):  # the second render comes from the caches
        assert writer.render(registry.collect()) == generate_latest(registry).decode()


def test_the_text_writer_adds_its_labels_to_every_series_and_the_page_parses():
    text = TextWriter({"pool": "w", "worker": "3"}).render(_registry_with_every_kind().collect())
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert samples and all(s.labels["pool"] == "w" and s.labels["worker"] == "3"
                           for s in samples)
    assert 'reqs_total{code="200",path="a\\"b\\\\c\\nd",pool="w",worker="3"} 2.5' in text
