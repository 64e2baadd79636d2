"""The monitoring kit of ops/: alert rules, their unit tests, the Grafana dashboard.

* promtool accepts the rules and their unit tests pass (also `make rules`);
* every alert has a severity, a summary, a description and a runbook_url whose anchor exists in
  docs/RUNBOOK.md, and is unit-tested with series that fire it and series that do not;
* every metric named by a rule or a dashboard panel is one a running kernel exports, read from
  a real /metrics (histograms as _bucket/_sum/_count);
* the dashboard is valid JSON with a panel for every golden metric and no overlapping panels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ron_kernel.kernel import Kernel
from ron_kernel.mailbox import Mailbox
from ron_kernel.supervisor import ChildContext

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "tests.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "ron-kernel.json"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"

# The golden set (OBSERVABILITY.MD §1.1, docs/METRICS.md): each has its own dashboard panel.
GOLDEN = ("bus_lagged_total", "service_restarts_total", "request_latency_seconds",
          "busy_rejections_total", "queue_dropped_total", "tasks_spawned_total",
          "tasks_aborted_total")
# Series Prometheus makes itself, not the kernel.
SYNTHETIC = {"up"}
SEVERITIES = {"critical", "warning", "info"}

_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    text = re.sub(r"\$\{?\w+\}?", "", text)                      # $job, ${datasource}
    text = re.sub(r"\{[^{}]*\}", " ", text)                       # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)                     # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in _PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue  # an aggregation, a keyword or a function call
        names.add(word)
    return names


def test_metric_names_finds_metrics_and_skips_functions_labels_and_numbers():
    expr = ('sum by (job, le) (rate(foo_bucket{a="b", c=~"$x"}[$__rate_interval])) / on(job) '
            'group_left(version) bar_info > 1e-4 and histogram_quantile(0.9, baz) offset 5m')
    assert metric_names(expr) == {"foo_bucket", "bar_info", "baz"}
    assert metric_names('up{job="ron-kernel"} == 0') == {"up"}


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel.get("targets", [])]


def _promtool() -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: tools/system-deps.sh installs Debian's prometheus"
    return tool


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    checked = subprocess.run([_promtool(), "check", "rules", str(ALERTS)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in checked.stdout
    tested = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path):
    # the same tests against a rule that never fires must fail: the tests check something
    doc = yaml.safe_load(ALERTS.read_text())
    doc["groups"][0]["rules"][0]["expr"] = "vector(0) > 1"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / "tests.yml")
    tested = subprocess.run([_promtool(), "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode != 0
    assert doc["groups"][0]["rules"][0]["alert"] in tested.stdout + tested.stderr


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_every_alert_has_severity_summary_description_and_a_runbook_anchor_that_exists():
    anchors = _anchors(RUNBOOK.read_text())
    rules = _alert_rules()
    assert len(rules) >= 12
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/RUNBOOK.md" and anchor in anchors, rule["alert"]
        assert anchor == rule["alert"].lower()


def test_the_operators_alerts_are_all_there():
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    expected = {
        "RonKernelDown": "up", "RonKernelRestartStorm": "service_restarts_total",
        "RonKernelChildQuarantined": "supervisor_quarantined", "RonKernelNotReady": "kernel_ready",
        "RonKernelDegraded": "kernel_ready", "RonKernelBusLagGrowing": "bus_lagged_total",
        "RonKernelBusyRejections": "busy_rejections_total",
        "RonKernelMailboxNearCapacity": "queue_capacity",
        "RonKernelConfigReloadRejected": "config_reloads_total",
        "RonKernelEventLoopLagHigh": "event_loop_lag_max_seconds",
        "RonKernelPQDowngrade": "pq_downgrade_events_total",
    }
    for alert, metric in expected.items():
        assert metric in metric_names(exprs[alert]), alert
    not_ready = next(r for r in _alert_rules() if r["alert"] == "RonKernelNotReady")
    assert not_ready["for"] == "5m"


def _identity(series: str) -> str:
    """A series without its name and bucket label: what an alert's labels can come from."""
    labels = re.findall(r'(\w+)="([^"]*)"', series)
    return ",".join(f"{k}={v}" for k, v in sorted(labels) if k != "le")


def test_every_alert_is_unit_tested_with_series_that_fire_it_and_series_that_do_not():
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test in doc["tests"]:
        identities = {_identity(s["series"]) for s in test["input_series"]}
        for case in test["alert_rule_test"]:
            name = case["alertname"]
            expected = case.get("exp_alerts") or []
            fired[name] = fired.get(name, 0) + len(expected)
            # the series that did not produce one of the expected alerts
            alerted = {",".join(f"{k}={v}" for k, v in sorted(a["exp_labels"].items())
                                if k != "severity") for a in expected}
            silent = [i for i in identities
                      if not any(set(a.split(",")) <= set(i.split(",")) for a in alerted if a)]
            quiet[name] = quiet.get(name, 0) + len(silent)
    for rule in _alert_rules():
        assert fired.get(rule["alert"], 0) >= 1, f"{rule['alert']} never fires in tests.yml"
        assert quiet.get(rule["alert"], 0) >= 1, f"{rule['alert']} has no quiet series"


def _exported_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        typed = re.match(r"# TYPE (\S+) (\S+)", line)
        if typed:
            name, kind = typed.groups()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
    return names


async def test_every_metric_in_the_rules_and_the_dashboard_is_exported_by_a_running_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    async def child(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    kernel = Kernel(env={}, argv=["--obs-http", "true", "--obs-addr", "127.0.0.1:0"],
                    watch_config=False, handle_sighup=False)
    kernel.supervise("svc", child)
    inbox: Mailbox[int] = Mailbox(4, name="inbox", metrics=kernel.metrics)
    inbox.try_send(1)
    async with kernel, aiohttp.ClientSession() as session:
        async with session.get(kernel.urls()["metrics"]) as resp:
            assert resp.status == 200
            exposition = await resp.text()
    exported = _exported_names(exposition)
    assert {"kernel_ready", "queue_capacity", "control_requests_total"} <= exported
    assert 'queue_capacity{amnesia="off",queue="inbox"} 4.0' in exposition
    used: dict[str, set[str]] = {}
    for rule in _alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in _dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    assert len(used) > 20
    assert "event_loop_lag_max_seconds" in used  # the loop-lag alert (issue 13's series)
    missing = {name: sorted(where) for name, where in used.items()
               if name not in exported and name not in SYNTHETIC}
    assert missing == {}


def test_the_dashboard_has_a_panel_for_every_golden_metric_and_no_overlaps():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "ron-kernel" and doc["title"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for golden in GOLDEN:
        holders = [p["title"] for p in panels
                   if any(golden in name for t in p.get("targets", [])
                          for name in metric_names(t["expr"]))]
        assert holders, f"no panel for the golden metric {golden}"
    cells: dict[tuple[int, int], str] = {}
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for dx in range(grid["w"]):
            for dy in range(grid["h"]):
                cell = (grid["x"] + dx, grid["y"] + dy)
                assert cell not in cells, f"{panel['title']} overlaps {cells[cell]}"
                cells[cell] = panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job"' in target["expr"] or "up{" in target["expr"]
