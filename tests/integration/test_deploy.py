"""The monitoring in deploy/: Prometheus's scrape configuration, the alert rules and their unit
tests (run by the real `promtool`, from Debian's `prometheus`, installed when missing), the Grafana
provisioning and dashboard, and docker-compose.yml's services for them (`docker compose config`).

`metric_names_used()` lists every metric name the dashboard and the alerts query, as a scrape
shows them, so a test against a running worker and API can check that each one exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.services.process import ensure_apt_package

pytestmark = pytest.mark.backends(
    "redis", reason="it checks deploy/'s files and Prometheus; nothing comes from the store"
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "device-activity.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
ENSURE_COMPOSE = ROOT / "scripts" / "ensure-compose.sh"

PROMTOOL_TIMEOUT_S = 60.0
# Building the compose plugin (scripts/ensure-compose.sh) takes minutes on a fresh machine.
COMPOSE_BUILD_TIMEOUT_S = 1500.0

ALERT_SEVERITIES = {
    "ConsumerLagGrowing": "warning",
    "DeadLettersHigh": "warning",
    "ApiServerErrors": "critical",
    "RedisUnreachable": "critical",
    "WorkerDown": "critical",
    "WorkerMetricsAbsent": "warning",
}

# The metrics the worker and the API export (their names without a histogram's suffixes).
CONTRACT_METRICS = {
    "devact_worker_events_total",
    "devact_worker_dead_letters_total",
    "devact_worker_batch_messages",
    "devact_worker_batch_events",
    "devact_worker_batch_apply_seconds",
    "devact_worker_consumer_lag",
    "devact_worker_applied_offset",
    "devact_worker_gap_repairs_total",
    "devact_worker_gap_repair_events_total",
    "devact_worker_redis_retries_total",
    "devact_worker_redis_up",
    "devact_worker_event_age_seconds",
    "devact_build_info",
    "devact_api_requests_total",
    "devact_api_request_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# -- The metric names of the PromQL in deploy/ -----------------------------------------------------

# Words of PromQL that can stand where a metric name does (lower-cased).
_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan", "atan2", "start", "end"}
)
# Prometheus's own series: not exported by the project.
_NOT_OURS = frozenset({"up"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# Not inside a number (0.99, 1e3, 5m), a label name after a dot, or a Grafana $variable.
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names one PromQL expression selects, as a scrape shows them (`_bucket` kept)."""
    text = _STRING.sub('""', expr)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in _PROMQL_KEYWORDS or word in _NOT_OURS:
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every query of a Grafana dashboard, rows' panels included."""
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(target["expr"] for target in panel.get("targets", []) if "expr" in target)
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return exprs


def alert_exprs(rules: dict[str, Any]) -> list[str]:
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def _load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _load_yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def metric_names_used() -> set[str]:
    """The metric names that deploy/'s dashboard and alert rules query, as a scrape shows them.

    Histograms appear as the series queried (`devact_api_request_seconds_bucket`, `..._sum`,
    `..._count`); counters keep `_total`. Prometheus's own `up` is left out.
    """
    exprs = dashboard_exprs(_load_dashboard()) + alert_exprs(_load_yaml(ALERTS))
    return set().union(*(promql_metric_names(expr) for expr in exprs))


# -- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return ensure_apt_package("promtool", "prometheus")


def _run(
    argv: list[str], timeout_s: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    merged = None if env is None else {**os.environ, **env}
    return subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False, env=merged
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_promtool_checks_the_prometheus_config(promtool: str) -> None:
    # rule_files is relative to the config file: promtool finds alerts.yml beside it.
    result = _run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], PROMTOOL_TIMEOUT_S)
    assert result.returncode == 0, _output(result)
    assert "is valid prometheus config file syntax" in result.stdout, _output(result)
    assert "SUCCESS: 1 rule files found" in result.stdout, _output(result)
    assert f"SUCCESS: {len(ALERT_SEVERITIES)} rules found" in result.stdout, _output(result)


def test_promtool_checks_the_alert_rules(promtool: str) -> None:
    result = _run([promtool, "check", "rules", str(ALERTS)], PROMTOOL_TIMEOUT_S)
    assert result.returncode == 0, _output(result)
    assert f"SUCCESS: {len(ALERT_SEVERITIES)} rules found" in result.stdout, _output(result)


def test_promtool_runs_the_alert_unit_tests(promtool: str) -> None:
    result = _run([promtool, "test", "rules", str(ALERTS_TEST)], PROMTOOL_TIMEOUT_S)
    assert result.returncode == 0, _output(result)
    assert "SUCCESS" in result.stdout, _output(result)
    assert "FAILED" not in result.stdout + result.stderr, _output(result)


# -- The files themselves ---------------------------------------------------------------------


def test_prometheus_scrapes_the_api_and_the_workers() -> None:
    config = _load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, target in [("devact-api", "api:8000"), ("devact-worker", "worker:9101")]:
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
        assert [target] == [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]


def test_each_alert_has_its_severity_and_says_what_to_do() -> None:
    groups = _load_yaml(ALERTS)["groups"]
    assert [group["name"] for group in groups] == ["device-activity"]
    rules = {rule["alert"]: rule for rule in groups[0]["rules"]}
    assert {name: rule["labels"]["severity"] for name, rule in rules.items()} == ALERT_SEVERITIES
    for name, rule in rules.items():
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "docs/operations.md" in annotations["description"], name
        assert rule["for"], name


def test_each_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    stays_quiet: set[str] = set()
    for case in _load_yaml(ALERTS_TEST)["tests"]:
        for check in case["alert_rule_test"]:
            expected = check.get("exp_alerts") or []
            (fires if expected else stays_quiet).add(check["alertname"])
            for alert in expected:
                # Labels and annotations are both checked, not only that something fired.
                assert alert["exp_labels"]["severity"] == ALERT_SEVERITIES[check["alertname"]]
                assert set(alert["exp_annotations"]) == {"summary", "description"}
    assert fires == set(ALERT_SEVERITIES)
    assert stays_quiet == set(ALERT_SEVERITIES)


def test_the_dashboard_queries_prometheus_in_every_panel() -> None:
    dashboard = _load_dashboard()
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "device-activity"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, title
        assert panel["targets"], title
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), title
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target["datasource"]["uid"] == "prometheus", title
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), title
    queries = "\n".join(dashboard_exprs(dashboard))
    for needed in [
        'sum(rate(devact_worker_events_total{outcome="applied"}[1m]))',
        "sum by (reason) (rate(devact_worker_dead_letters_total[5m]))",
        "sum by (route) (rate(devact_api_requests_total[1m]))",
        "histogram_quantile(0.99, sum by (le, route) "
        "(rate(devact_api_request_seconds_bucket[5m])))",
        "histogram_quantile(0.5, sum by (le) (rate(devact_worker_event_age_seconds_bucket[5m])))",
    ]:
        assert needed in queries


def test_grafana_provisions_the_datasource_and_the_dashboards() -> None:
    (datasource,) = _load_yaml(DATASOURCES)["datasources"]
    assert (datasource["name"], datasource["uid"], datasource["type"]) == (
        "Prometheus",
        "prometheus",
        "prometheus",
    )
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = _load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# -- docker-compose.yml -----------------------------------------------------------------------


@pytest.mark.timeout(COMPOSE_BUILD_TIMEOUT_S + 120)
def test_docker_compose_config_is_valid_and_runs_the_monitoring() -> None:
    docker = shutil.which("docker")
    assert docker is not None, "no docker client: cannot check docker-compose.yml"
    if _run([docker, "compose", "version"], 60).returncode != 0:
        # No engine is needed, only the compose plugin; `make test` builds it the same way.
        built = _run(["bash", str(ENSURE_COMPOSE)], COMPOSE_BUILD_TIMEOUT_S)
        assert built.returncode == 0, _output(built)
    unset = _run([docker, "compose", "config", "-q"], 120, {"GRAFANA_ADMIN_PASSWORD": ""})
    assert unset.returncode != 0  # no Grafana without a password of the operator's
    assert "set GRAFANA_ADMIN_PASSWORD" in unset.stderr
    password = {"GRAFANA_ADMIN_PASSWORD": "a-password"}
    result = _run([docker, "compose", "config", "-q"], 120, password)
    assert result.returncode == 0, _output(result)

    rendered = _run([docker, "compose", "config", "--format", "json"], 120, password)
    assert rendered.returncode == 0, _output(rendered)
    services = json.loads(rendered.stdout)["services"]
    for name, service in services.items():  # nothing published beyond the loopback interface
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    assert services["worker"]["environment"]["DEVACT_WORKER_METRICS_HOST"] == "0.0.0.0"

    def mounts(name: str) -> dict[str, tuple[Path, bool]]:
        return {
            volume["target"]: (Path(volume["source"]), bool(volume.get("read_only")))
            for volume in services[name]["volumes"]
        }

    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts("prometheus")["/etc/prometheus"] == (PROMETHEUS_DIR, True)
    assert [p["target"] for p in prometheus["ports"]] == [9090]
    grafana = services["grafana"]
    assert mounts("grafana")["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning", True)
    assert mounts("grafana")["/var/lib/grafana/dashboards"] == (GRAFANA_DIR / "dashboards", True)
    assert [p["target"] for p in grafana["ports"]] == [3000]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "a-password"


# -- metric_names_used() ----------------------------------------------------------------------


def test_promql_metric_names_skips_functions_keywords_labels_and_numbers() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) "
        '(rate(foo_seconds_bucket{route=~"/a(b)", status!="5xx"}[5m])))\n'
        "  / on (instance) group_left (version) max without (job) (bar_info offset 1h)\n"
        '  > bool 1e3 and absent(up{job="x"}) or deriv(baz[10m:1m]) > $threshold'
    )
    assert promql_metric_names(expr) == {"foo_seconds_bucket", "bar_info", "baz"}


def test_metric_names_used_are_the_contracts() -> None:
    names = metric_names_used()
    assert names == {
        "devact_api_request_seconds_bucket",
        "devact_api_requests_total",
        "devact_build_info",
        "devact_worker_applied_offset",
        "devact_worker_batch_apply_seconds_bucket",
        "devact_worker_batch_events_count",
        "devact_worker_batch_events_sum",
        "devact_worker_batch_messages_count",
        "devact_worker_batch_messages_sum",
        "devact_worker_consumer_lag",
        "devact_worker_dead_letters_total",
        "devact_worker_event_age_seconds_bucket",
        "devact_worker_events_total",
        "devact_worker_gap_repair_events_total",
        "devact_worker_gap_repairs_total",
        "devact_worker_redis_retries_total",
        "devact_worker_redis_up",
    }
    for name in names:
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        assert base in CONTRACT_METRICS, name
    # Every metric of the contract is on the dashboard or in an alert.
    bases = {
        next((n.removesuffix(s) for s in HISTOGRAM_SUFFIXES if n.endswith(s)), n) for n in names
    }
    assert bases == CONTRACT_METRICS
