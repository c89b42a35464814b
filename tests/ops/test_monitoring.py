"""What operators watch (deploy/grafana, deploy/prometheus, deploy/logging): the files parse, the alert rules have the
shape Prometheus loads, and every metric they name is one the product really exports. The names are read from the
running code's Prometheus registry (django-prometheus, the process collector, and our Redis-backed metrics after
one sample of each name the code records), not from a list kept by hand.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.handlers.base import BaseHandler
from prometheus_client import REGISTRY

from conftest import ROOT
from core import metrics
from core.redis_clients import redis_client

DEPLOY = ROOT / "deploy"
# Metrics of the platform, not of the product: pods that are gone and full volumes are seen from outside.
PLATFORM_METRICS = {
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kubelet_volume_stats_available_bytes": "kubelet",
    "kubelet_volume_stats_capacity_bytes": "kubelet",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
RECORDERS = {"metric_inc", "metric_set", "metric_observe"}


def recorded_metric_calls() -> set[tuple[str, str]]:
    """(function, metric name) of every metric_inc/metric_set/metric_observe call with a literal name in the code."""
    calls = set()
    for path in ROOT.glob("*/**/*.py"):
        if any(part in {".venv", "node_modules", "tests"} for part in path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in RECORDERS:
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    calls.add((getattr(node.func, "id", None) or node.func.attr, node.args[0].value))
    return calls


@pytest.fixture(scope="module")
def exported_names() -> Iterator[set[str]]:
    # The product's middleware chain as a web process builds it: django-prometheus registers its request metrics.
    BaseHandler().load_middleware(is_async=True)
    calls = recorded_metric_calls()
    assert ("metric_inc", "chat_runs_total") in calls and ("metric_set", "fair_queue_backlog") in calls
    sample_labels = {"tenant": "t_sample", "status": "ok"}
    for function, name in calls:
        getattr(metrics, function)(name, 1, **sample_labels)
    metrics._ensure_collector()
    # A labelled metric has no samples until something is observed: the family's type names its series.
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        names |= {sample.name for sample in family.samples}
    yield names
    # The samples live in the session's Redis beside real ones that other tests read: remove exactly them.
    sample_field = metrics._field(sample_labels)
    redis = redis_client()
    for key in redis.scan_iter("metrics:*"):
        if redis.type(key) == b"hash":
            redis.hdel(key, sample_field)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\w+", "", expr)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)", expr):
        word, call = match.groups()
        if not call and word not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", word):
            names.add(word)
    return names


def test_metric_names_are_found_in_promql():
    expr = 'sum by (queue) (rate(agentry_x_total{queue="a"}[5m])) / on (queue) group_left max(b_y) > 0 or vector(0)'
    assert metric_names(expr) == {"agentry_x_total", "b_y"}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "agentry.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_have_the_shape_prometheus_loads():
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
    alerts = {rule["alert"] for rule in alert_rules()}
    # the obvious failures: backlog, error rate, stuck documents, workers down, disk
    assert {
        "AgentryQueueBacklog",
        "AgentryHighErrorRate",
        "AgentryStuckDocuments",
        "AgentryWorkersDown",
        "AgentryVolumeFillingUp",
    } <= alerts


def test_every_metric_in_the_dashboard_alerts_and_autoscaling_exists(exported_names):
    adapter = yaml.safe_load((DEPLOY / "prometheus" / "adapter-rules.yaml").read_text())
    sources = {
        "dashboard": dashboard_expressions(),
        "alerts": [rule["expr"] for rule in alert_rules()],
        "adapter": [rule["seriesQuery"] for rule in adapter["rules"]["external"]]
        + [rule["metricsQuery"].replace("<<.LabelMatchers>>", "") for rule in adapter["rules"]["external"]],
    }
    used = set()
    for source, expressions in sources.items():
        for expr in expressions:
            names = metric_names(expr)
            assert names, (source, expr)
            unknown = names - exported_names - set(PLATFORM_METRICS)
            assert not unknown, f"{source}: {sorted(unknown)} in {expr!r}"
            used |= names
    # the dashboard covers requests, runs, tokens, queues, ingestion and refusals
    for needed in (
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "agentry_chat_runs_total",
        "agentry_llm_tokens_total",
        "agentry_celery_queue_length",
        "agentry_documents_ingested_total",
        "agentry_rate_limited_total",
    ):
        assert needed in used


def test_worker_autoscalers_use_the_metric_the_adapter_serves():
    adapter = yaml.safe_load((DEPLOY / "prometheus" / "adapter-rules.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["external"]}
    hpas = [
        doc
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
        if doc["metadata"]["name"].startswith("agentry-worker-")
    ]
    assert hpas
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            assert metric["external"]["metric"]["name"] in served


def test_log_shipping_maps_every_field_of_our_json_lines():
    formatter = settings.LOGGING["formatters"]["json"]
    fields = {formatter["rename_fields"].get(name, name) for name in re.findall(r"%\((\w+)\)s", formatter["format"])}
    fields.add("exc_info")  # python-json-logger adds it to lines with a traceback
    template = json.loads((DEPLOY / "logging" / "opensearch-index-template.json").read_text())
    mapped = set(template["template"]["mappings"]["properties"])
    assert fields <= mapped, fields - mapped
    config = yaml.safe_load((DEPLOY / "logging" / "fluent-bit.yaml").read_text())
    (parser,) = [p for p in config["parsers"] if p["format"] == "json"]
    assert parser["time_key"] in fields
    assert any(f.get("parser") == parser["name"] for f in config["pipeline"]["filters"])
    assert all(Path(i["path"]).name.endswith(".log") for i in config["pipeline"]["inputs"])
