"""The golden metric set: present, labelled amnesia="on|off", valid for promtool."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from ron_kernel import Bus, Metrics
from ron_kernel.errors import Lagged
from ron_kernel.mailbox import Mailbox

GOLDEN = {
    "bus_lagged": "counter",
    "service_restarts": "counter",
    "request_latency_seconds": "histogram",
    "busy_rejections": "counter",
    "queue_dropped": "counter",
    "tasks_spawned": "counter",
    "tasks_aborted": "counter",
    "io_timeouts": "counter",
    "backoff_retries": "counter",
    "readiness_degraded": "counter",
    "pq_handshake": "counter",
    "pq_downgrade_events": "counter",
    "pq_posture_missing": "counter",
}
PROCESS = ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds")


def _families(m: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def _busy_metrics(amnesia: bool) -> Metrics:
    m = Metrics(amnesia=amnesia)
    bus: Bus[int] = Bus(capacity=4, metrics=m)
    rx = bus.subscribe()
    for i in range(10):
        bus.publish(i)
    with pytest.raises(Lagged):  # observing the lag counts it
        rx.try_recv_many()
    mailbox: Mailbox[int] = Mailbox(capacity=1, name="jobs", metrics=m)
    mailbox.try_send(1)
    k = m.counters
    k.service_restarts_total.inc("svc-a")
    k.tasks_spawned_total.inc("child")
    k.tasks_aborted_total.inc("child")
    k.io_timeouts_total.inc("mailbox_request")
    k.backoff_retries_total.inc("restart")
    k.busy_rejections_total.inc("jobs")
    k.queue_dropped_total.inc("jobs")
    k.request_latency_seconds.observe("config_reload", value=0.003)
    k.config_version.set(value=2)
    m.health.set("svc-a", False)
    return m


def test_every_golden_family_is_present_with_its_type_even_when_nothing_happened():
    families = _families(Metrics())
    for name, kind in GOLDEN.items():
        assert name in families, name
        assert families[name].type == kind, name  # type: ignore[attr-defined]


@pytest.mark.parametrize("amnesia", [False, True])
def test_every_kernel_series_carries_the_amnesia_label(amnesia):
    want = "on" if amnesia else "off"
    m = _busy_metrics(amnesia)
    seen = 0
    for fam in text_string_to_metric_families(m.render().decode()):
        if fam.name.startswith(("process_", "python_")):
            continue
        for sample in fam.samples:
            assert sample.labels.get("amnesia") == want, sample
            seen += 1
    assert seen > 40


def test_amnesia_label_follows_a_runtime_change():
    m = Metrics()
    m.set_amnesia(True)
    assert 'bus_lagged_total{amnesia="on"}' in m.render().decode()
    assert m.health.snapshot()["amnesia"] == "on"


def test_version_and_runtime_flavor_live_on_one_info_series():
    from ron_kernel import __version__

    text = Metrics().render().decode()
    info = [line for line in text.splitlines() if line.startswith("ron_kernel_info{")]
    assert info == [f'ron_kernel_info{{amnesia="off",runtime_flavor="unknown",'
                    f'version="{__version__}"}} 1.0']


async def test_runtime_flavor_names_the_running_loop():
    loop = asyncio.get_running_loop()
    loop_flavor = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    m = Metrics()
    assert f'runtime_flavor="{loop_flavor}"' in m.render().decode()


def test_process_metrics_are_on_the_private_registry():
    families = _families(Metrics())
    for name in PROCESS:
        assert name in families, name


def test_two_metrics_objects_do_not_share_series():
    a, b = Metrics(), Metrics()
    a.counters.service_restarts_total.inc("only-a")
    Counter("embedder_jobs", "An embedding service's own counter.", registry=a.registry).inc()
    assert b"only-a" in a.render() and b"only-a" not in b.render()
    assert b"embedder_jobs_total 1.0" in a.render() and b"embedder_jobs" not in b.render()


def test_histogram_buckets_are_cumulative_and_match_the_count():
    m = Metrics()
    for v in (0.00005, 0.002, 0.002, 3.0, 50.0):
        m.counters.request_latency_seconds.observe("config_reload", value=v)
    fam = _families(m)["request_latency_seconds"]
    samples = [s for s in fam.samples  # type: ignore[attr-defined]
               if s.labels.get("op") == "config_reload"]
    buckets = [s.value for s in samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 5
    assert [s.value for s in samples if s.name.endswith("_count")] == [5]


def test_metrics_body_passes_promtool_check_metrics():
    promtool = shutil.which("promtool")
    assert promtool, ("promtool is not on PATH: install the Debian package 'prometheus' "
                      "(apt-get install -y prometheus); .ci/run does this")
    body = _busy_metrics(amnesia=True).render()
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            timeout=60, check=False)
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, problems
    # promtool prints lint findings even with exit 0 only for warnings; there must be none
    assert not re.search(r"\S", problems), problems


def test_the_direct_text_writer_is_byte_identical_to_prometheus_client():
    m = _busy_metrics(amnesia=False)
    m.counters.service_restarts_total.inc('we"ird\\name\nline')  # escaping paths

    class KernelOnly:
        def collect(self):  # type: ignore[no-untyped-def]
            return m._collector.collect()

    from prometheus_client import generate_latest

    assert m.render_kernel_text().encode() == generate_latest(KernelOnly())  # type: ignore[arg-type]
    # cached label prefixes give the same text
    assert m.render_kernel_text() == m.render_kernel_text()
