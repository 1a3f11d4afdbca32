"""deploy/k8s: the generated base is current, every overlay renders with kustomize
(`kubectl kustomize`), every rendered object validates offline against the Kubernetes
1.32 schemas (kubernetes-validate, strict), and the policies hold: probes, limits, non-root,
a NetworkPolicy per service, HPA and PDB per stateless service, a migration Job per service,
no real value in any Secret."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devtools.k8s import K8S, PROCESSES

KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")
REPO = K8S.parents[1]


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/k8s"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_the_generated_base_is_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.k8s", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_offline(overlay: str) -> None:
    docs = rendered(overlay)
    assert len(docs) > 50
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policies_hold(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    policies = of_kind(docs, "NetworkPolicy")
    jobs = of_kind(docs, "Job")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert policies["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    for p in PROCESSES:
        pod = deployments[p.name]["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["grpc"]["port"] == p.port, (p.name, probe)
        assert set(main["resources"]) == {"requests", "limits"}
        context = main["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert [port["name"] for port in services[p.name]["spec"]["ports"]] == ["grpc"]
        policy = policies[p.name]["spec"]
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == p.name
        sources = policy["ingress"][0]["from"]
        if p.name == "gateway":
            assert "namespaceSelector" in sources[0]
        else:
            assert sources == [
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
            ]
        assert (
            jobs[f"{p.name}-migrate"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
            == "migrate"
        )
        assert hpas[p.name]["spec"]["scaleTargetRef"]["name"] == p.name
        assert pdbs[p.name]["spec"]["maxUnavailable"] == 1
    # Every pod in the namespace is covered by a policy besides default-deny.
    selected = {
        d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for d in policies.values()
    }
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] in selected or name.startswith("dev-"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_holds_a_real_value(overlay: str) -> None:
    for secret in of_kind(rendered(overlay), "Secret").values():
        for key, value in secret.get("stringData", {}).items():
            placeholder = "CHANGE-ME" in value or (overlay == "dev" and ":dev@" in value)
            assert placeholder, (secret["metadata"]["name"], key)
        assert "data" not in secret


def test_overlays_differ_as_documented() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert {d["spec"]["replicas"] for d in of_kind(dev, "Deployment").values()} == {1}
    assert {"postgres", "redis", "jaeger", "otel-collector"} <= set(of_kind(dev, "Deployment"))
    prod_deployments = of_kind(prod, "Deployment")
    assert not {"postgres", "redis", "jaeger"} & set(prod_deployments)
    assert prod_deployments["gateway"]["spec"]["replicas"] == 2
    egress = of_kind(prod, "NetworkPolicy")["points"]["spec"]["egress"]
    assert any("ipBlock" in rule["to"][0] for rule in egress if rule.get("to"))


def test_image_and_observability_assets() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile
    assert dockerfile.count("FROM ") == 2  # multi-stage
    assert ".venv" in (REPO / ".dockerignore").read_text()
    rules = yaml.safe_load((REPO / "deploy/observability/alert-rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == {
        "SagasNeedAttention",
        "SagaFailureRatioHigh",
        "RiskAlertSpike",
        "LotteryPrizeLowOrRun",
        "PointsLiabilityJump",
    }
    runbook = (REPO / "docs/runbook.md").read_text()
    for name in names:
        assert f"### {name}" in runbook, name
    dashboard = json.loads(
        (REPO / "deploy/observability/grafana/loyalty-dashboard.json").read_text()
    )
    assert len(dashboard["panels"]) >= 8
    yaml.safe_load((REPO / "deploy/observability/prometheus.yml").read_text())


def test_paths_exist() -> None:
    for path in ("deploy/README.md", "docs/runbook.md", "deploy/k8s/collector/collector.yaml"):
        assert Path(REPO / path).is_file(), path
