"""What operators deploy, checked without a cluster or Docker: the Kubernetes manifests
against Kubernetes' own schemas (kubernetes-validate), the Prometheus configuration and
alert rules with promtool, the Grafana provisioning and the EMQX profile by their shape.

promtool comes from Debian's ``prometheus`` package: ``script/bootstrap`` extracts it
into the tools folder (no server is installed or started). The overlays are rendered by
``tests/kustomize_lite.py``; where kubectl exists its rendering must be the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridclear.cloud.ingest.worker import check_client_id
from gridclear.devtools import REPO_ROOT
from kustomize_lite import KustomizeError, render

K8S = REPO_ROOT / "deploy/k8s"
KUSTOMIZATIONS = ["base", "overlays/production", "overlays/pilot"]
KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes release whose schemas the manifests must satisfy (strictly)."""
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _validate(resource: dict[str, Any]) -> None:
    try:
        import kubernetes_validate
    except ModuleNotFoundError:  # pragma: no cover - the dev group installs it
        pytest.fail("kubernetes-validate is missing: run script/bootstrap (the dev group has it)")
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _key(resource: dict[str, Any]) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(K8S / name)


def _pods(resources: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for resource in resources:
        if resource["kind"] in WORKLOADS:
            yield resource, resource["spec"]["template"]["spec"]


def test_every_manifest_passes_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = rendered
    assert resources
    for resource in resources:
        _validate(resource)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    import kubernetes_validate

    resources = render(K8S / "base")
    api = next(r for r in resources if _key(r) == ("Deployment", "gridclear-api"))
    api["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        _validate(api)


def test_every_container_has_limits_probes_and_no_privilege(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = rendered
    for workload, pod in _pods(resources):
        assert pod["securityContext"]["runAsNonRoot"] is True, _key(workload)
        assert pod["automountServiceAccountToken"] is False, _key(workload)
        for container in pod["containers"]:
            where = (*_key(workload), container["name"])
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}, where
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            if workload["kind"] != "Job":
                assert "livenessProbe" in container, where
                assert "startupProbe" in container, where


def test_every_long_running_workload_has_a_disruption_budget(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = rendered
    budgets = [
        r["spec"]["selector"]["matchLabels"]
        for r in resources
        if r["kind"] == "PodDisruptionBudget"
    ]
    for workload, _ in _pods(resources):
        if workload["kind"] == "Deployment":
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert any(b.items() <= labels.items() for b in budgets), _key(workload)


def test_the_layout_the_design_asks_for() -> None:
    base = {_key(r): r for r in render(K8S / "base")}
    production = {_key(r): r for r in render(K8S / "overlays/production")}
    pilot = {_key(r): r for r in render(K8S / "overlays/pilot")}
    # The API scales on CPU; the scheduler runs two, one acting under the lock.
    hpa = production["HorizontalPodAutoscaler", "gridclear-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gridclear-api"
    assert base["Deployment", "gridclear-scheduler"]["spec"]["replicas"] == 2
    assert production["Deployment", "gridclear-ingest"]["spec"]["replicas"] == 4
    # Ingest workers share one group, each under its own pod's name as client id.
    ingest = production["Deployment", "gridclear-ingest"]["spec"]["template"]["spec"]
    args = ingest["containers"][0]["args"]
    assert args[args.index("--client-id") + 1] == "gridclear-cloud:$(POD_NAME)"
    # A Deployment's pod is named <deployment>-<10 characters>-<5 characters>.
    assert check_client_id("gridclear-cloud:gridclear-ingest-7d9f8b6c5b-x2x9z")
    assert "--group" not in args
    assert ingest["terminationGracePeriodSeconds"] > 30  # above --leave-timeout-s
    # The API's workers share one /metrics through a memory-backed folder.
    api = production["Deployment", "gridclear-api"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in api["containers"][0]["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] == "/run/gridclear-metrics"
    # Migrations are a Job; the ledger node only in the pilot, as a StatefulSet.
    assert ("Job", "gridclear-migrate") in base
    assert ("StatefulSet", "gridclear-ledger") in pilot
    assert not any(k[1] == "gridclear-ledger" for k in production)
    # Production runs the image from its registry at a fixed version, in its namespace.
    for _, pod in _pods(list(production.values())):
        for container in pod["containers"]:
            assert re.fullmatch(r"\S+/gridclear-cloud:\d+\.\d+\.\d+", container["image"])
    assert {
        r["metadata"].get("namespace") for k, r in production.items() if k[0] != "Namespace"
    } == {"gridclear"}


def test_the_renderer_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="configMapGenerator"):
        render(tmp_path)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubectl_renders_the_same_where_it_exists(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here; tests/kustomize_lite.py renders alone")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, check=True
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=_key)
    assert sorted(render(K8S / name), key=_key) == theirs


# ---------------------------------------------------------------- Prometheus


def _promtool() -> str:
    tools = Path(
        os.environ.get(
            "GRIDCLEAR_TOOLS",
            Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "gridclear/tools",
        )
    )
    found = shutil.which("promtool") or next(
        (str(p) for p in sorted(tools.glob("prometheus-*/promtool"))), None
    )
    if found is None:
        pytest.fail("promtool is missing: run script/bootstrap")
    return found


def test_promtool_accepts_the_configuration_and_the_rules() -> None:
    promtool = _promtool()
    prometheus = REPO_ROOT / "deploy/prometheus"
    # --syntax-only: the bearer token's file exists only in the container.
    config = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(prometheus / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", str(prometheus / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(up[5m]\n"
    )
    result = subprocess.run(
        [_promtool(), "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_every_scrape_target_is_a_compose_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, port = target.rsplit(":", 1)
            if host == "localhost" or host == "ledger":
                continue  # Prometheus itself; the ledger node runs beside, for pilots
            assert host in compose, f"{job['job_name']} scrapes {host}, not a service"
            command = " ".join(str(c) for c in compose[host].get("command", []))
            if job["job_name"] in ("gridclear-ingest", "gridclear-scheduler"):
                assert f"--metrics-port {port}" in command, (host, command)
    ingest = {n for n in compose if n.startswith("ingest")}
    scraped = {t.split(":")[0] for t in jobs["gridclear-ingest"]["static_configs"][0]["targets"]}
    assert scraped == ingest, "every ingest worker is scraped"
    assert (
        jobs["gridclear-api"]["authorization"]["credentials_file"] == "/run/secrets/metrics-token"
    )
    assert "metrics-token" in compose["prometheus"]["secrets"]


# ---------------------------------------------------------------- Grafana and EMQX


def test_grafana_provisions_the_dashboards_from_the_prometheus_it_names() -> None:
    grafana = REPO_ROOT / "deploy/grafana"
    sources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    uid = sources["datasources"][0]["uid"]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    mounts = compose["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    providers = yaml.safe_load((grafana / "provisioning/dashboards/gridclear.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    uids = set()
    for path in sorted((grafana / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == path.stem
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, path.name
        for panel in panels:
            assert panel["datasource"]["uid"] == uid, (path.name, panel["title"])
            assert panel["targets"], panel["title"]
            assert all(t["expr"] for t in panel["targets"]), panel["title"]


def test_emqx_is_a_profile_beside_mosquitto_with_the_same_split() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    emqx = compose["emqx"]
    assert emqx["profiles"] == ["emqx"]
    assert "profiles" not in compose["mosquitto"]
    assert [str(p) for p in emqx["ports"]] == ["8884:8883"]  # gateways only, TLS
    config = (REPO_ROOT / "deploy/emqx/base.hocon").read_text()
    assert re.search(r"zones\.gateways \{\s+mqtt \{\s+use_username_as_clientid = true", config)
    assert re.search(r"ssl\.default \{[^}]*zone = gateways", config)
    assert config.count("backend = built_in_database") == 2  # one account file per listener
    assert "no_match = deny" in config
    acl = (REPO_ROOT / "deploy/emqx/acl.conf").read_text()
    assert "gridclear/v1/devices/${username}/readings" in acl
    assert acl.rstrip().endswith("{deny, all}.")
