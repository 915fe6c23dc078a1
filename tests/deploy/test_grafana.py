"""deploy/grafana/switchboard.json stays built on metrics that exist: every series a panel
queries is one bot/metrics.py exports, and every label it groups by is one of that metric's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from bot import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "switchboard.json"


def _exported() -> dict[str, set[str]]:
    """{series name as Prometheus stores it: the metric's label names}."""
    series: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            series[f"{value._name}_total"] = set(value._labelnames)
        elif isinstance(value, Gauge):
            series[value._name] = set(value._labelnames)
        elif isinstance(value, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                series[value._name + suffix] = {*value._labelnames, "le"}
    return series


def test_every_panel_queries_exported_series_by_their_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        names = re.findall(r"\b(switchboard_[a-z_]+)\b", expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} is not exported by bot/metrics.py ({expr})"
            used.add(name)
            for group in re.findall(r"by \(([^)]*)\)", expr):
                labels = {g.strip() for g in group.split(",")}
                assert labels <= exported[name], (expr, labels - exported[name])
    # the latency histograms of issue 16 are all on the dashboard
    for histogram in ("message_latency_seconds", "queue_wait_seconds",
                      "stage_latency_seconds", "llm_request_seconds",
                      "llm_time_to_first_token_seconds"):
        assert f"switchboard_{histogram}_bucket" in used, histogram


def test_the_check_catches_a_misspelt_metric() -> None:
    assert "switchboard_inbox_lagg" not in _exported()
    assert "switchboard_inbox_lag" in _exported()
