"""Writes deploy/k8s/base from one description of the six processes, so every service gets the
same probes, limits, security context, migration Job, autoscaler, disruption budget and network
policy. `make k8s` runs it; tests/integration/test_k8s.py checks the files are current, renders
every overlay with kustomize and validates each object offline.

  .venv/bin/python -m devtools.k8s [--check]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devtools.suite import REPO

K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
PROD = K8S / "overlays" / "prod"
# Placeholders for the managed stores' networks in production: replace with yours.
PROD_POSTGRES_CIDR = "10.20.0.0/16"
PROD_REDIS_CIDR = "10.30.0.0/16"
IMAGE = "loyalty-platform"
PART_OF = {"app.kubernetes.io/part-of": "loyalty"}


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    port: int
    needs_redis: bool
    cpu: str
    memory: str


PROCESSES = (
    Process("gateway", "gateway", 50051, True, "500m", "512Mi"),
    Process("points", "services.points", 50052, False, "500m", "384Mi"),
    Process("levels", "services.levels", 50053, True, "250m", "384Mi"),
    Process("mall", "services.mall", 50054, True, "500m", "384Mi"),
    Process("lottery", "services.lottery", 50055, False, "250m", "256Mi"),
    Process("risk", "services.risk", 50056, True, "500m", "256Mi"),
)
PARTICIPANTS = [p for p in PROCESSES if p.name != "gateway"]


def labels(p: Process) -> dict[str, str]:
    return {"app.kubernetes.io/name": p.name, **PART_OF}


def env_prefix(p: Process) -> str:
    return f"LOYALTY_{p.name.upper()}_"


def container(p: Process, args: list[str]) -> dict[str, Any]:
    prefix = env_prefix(p)
    env = [
        {"name": f"{prefix}LISTEN", "value": f"0.0.0.0:{p.port}"},
        {"name": f"{prefix}MIGRATE_ON_START", "value": "false"},
        {
            "name": f"{prefix}DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": f"{p.name}-secrets", "key": "database-url"}},
        },
    ]
    if p.needs_redis:
        env.append(
            {
                "name": f"{prefix}REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": f"{p.name}-secrets", "key": "redis-url"}},
            }
        )
    if p.name == "gateway":
        env += [
            {"name": f"{prefix}{q.name.upper()}_ADDR", "value": f"{q.name}:{q.port}"}
            for q in PARTICIPANTS
        ]
    return {
        "name": p.name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", p.module, *args],
        "envFrom": [{"configMapRef": {"name": "loyalty-settings"}}],
        "env": env,
        "resources": {
            "requests": {"cpu": p.cpu, "memory": p.memory},
            "limits": {"cpu": "1", "memory": p.memory},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_spec(p: Process, args: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "serviceAccountName": p.name,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": 10001},
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        **extra,
        "containers": [container(p, args)],
    }


def deployment(p: Process) -> dict[str, Any]:
    main = container(p, ["serve"])
    # Native gRPC probes (grpc.health.v1): the service name "" is the whole server.
    main["ports"] = [{"name": "grpc", "containerPort": p.port, "protocol": "TCP"}]
    main["env"].append({"name": f"{env_prefix(p)}SHUTDOWN_DRAIN_SECONDS", "value": "5"})
    main["startupProbe"] = {
        "grpc": {"port": p.port},
        "periodSeconds": 2,
        "failureThreshold": 30,
    }
    main["readinessProbe"] = {"grpc": {"port": p.port}, "periodSeconds": 5}
    main["livenessProbe"] = {
        "grpc": {"port": p.port},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    spec = pod_spec(p, ["serve"], terminationGracePeriodSeconds=20)
    spec["containers"] = [main]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": p.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": labels(p)}, "spec": spec},
        },
    }


def migrate_job(p: Process) -> dict[str, Any]:
    """One Job per service (not per replica): `python -m <module> migrate`."""
    spec = pod_spec(p, ["migrate"], restartPolicy="OnFailure")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{p.name}-migrate", "labels": labels(p)},
        "spec": {
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels(p)}, "spec": spec},
        },
    }


def service(p: Process) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "selector": {"app.kubernetes.io/name": p.name},
            "ports": [
                {
                    "name": "grpc",
                    "port": p.port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def service_account(p: Process) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": p.name, "labels": labels(p)},
        "automountServiceAccountToken": False,
    }


def hpa(p: Process) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": p.name},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def pdb(p: Process) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": p.name}},
        },
    }


def _to(selector: dict[str, Any], port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {**selector, "ports": [{"port": port, "protocol": protocol}]}


def network_policy(p: Process) -> dict[str, Any]:
    """Ingress: the gateway from the product namespace, every other service only from the
    gateway. Egress: DNS, the service's own database and Redis (pods labelled
    `loyalty.io/postgres-for-<service>` / `loyalty.io/redis-for-<service>` in the dev overlay;
    the prod overlay adds the managed endpoints' CIDRs), the collector, and for the gateway the
    five services."""
    pod = {"app.kubernetes.io/name": p.name}
    if p.name == "gateway":
        ingress_from = [
            {"namespaceSelector": {"matchLabels": {"loyalty.io/access": "product"}}},
        ]
    else:
        ingress_from = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    dns = {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    egress = [
        dns,
        _to(
            {
                "to": [
                    {"podSelector": {"matchLabels": {f"loyalty.io/postgres-for-{p.name}": "true"}}}
                ]
            },
            5432,
        ),
        _to(
            {
                "to": [
                    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}
                ]
            },
            4317,
        ),
    ]
    if p.needs_redis:
        egress.append(
            _to(
                {
                    "to": [
                        {"podSelector": {"matchLabels": {f"loyalty.io/redis-for-{p.name}": "true"}}}
                    ]
                },
                6379,
            )
        )
    if p.name == "gateway":
        egress += [
            _to(
                {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": q.name}}}]},
                q.port,
            )
            for q in PARTICIPANTS
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "podSelector": {"matchLabels": pod},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": ingress_from, "ports": [{"port": p.port, "protocol": "TCP"}]}],
            "egress": egress,
        },
    }


def secret_template(p: Process) -> dict[str, Any]:
    """A template: the values are placeholders an operator replaces (or a secret manager fills);
    no real secret is ever committed."""
    data = {
        "database-url": f"postgresql://loyalty_{p.name}:CHANGE-ME@postgres:5432/loyalty_{p.name}"
    }
    if p.needs_redis:
        data["redis-url"] = "redis://:CHANGE-ME@redis:6379/0"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{p.name}-secrets", "labels": labels(p)},
        "type": "Opaque",
        "stringData": data,
    }


SHARED = {
    "namespace.yaml": [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "loyalty", "labels": PART_OF},
        }
    ],
    "settings.yaml": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "loyalty-settings", "labels": PART_OF},
            "data": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
                "GRPC_ENABLE_FORK_SUPPORT": "0",
            },
        }
    ],
    "default-deny.yaml": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "labels": PART_OF},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    ],
}


def render() -> dict[Path, str]:
    files: dict[Path, list[dict[str, Any]]] = {BASE / name: docs for name, docs in SHARED.items()}
    for p in PROCESSES:
        folder = BASE / p.name
        files[folder / "deployment.yaml"] = [deployment(p)]
        files[folder / "service.yaml"] = [service(p), service_account(p)]
        files[folder / "migrate-job.yaml"] = [migrate_job(p)]
        files[folder / "scaling.yaml"] = [hpa(p), pdb(p)]
        files[folder / "network-policy.yaml"] = [network_policy(p)]
        files[folder / "secrets.yaml"] = [secret_template(p)]
        files[folder / "kustomization.yaml"] = _kustomization(
            resources=[
                "deployment.yaml",
                "service.yaml",
                "migrate-job.yaml",
                "scaling.yaml",
                "network-policy.yaml",
                "secrets.yaml",
            ],
        )
    files[BASE / "kustomization.yaml"] = _kustomization(
        namespace="loyalty", resources=[*SHARED, *(p.name for p in PROCESSES)]
    )
    files.update(overlays())
    header = "# Generated by `python -m devtools.k8s` (make k8s); edit devtools/k8s.py instead.\n"
    return {
        path: header + yaml.safe_dump_all(docs, sort_keys=False, width=100)
        for path, docs in files.items()
    }


def _kustomization(**fields: Any) -> list[dict[str, Any]]:
    return [{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}]


def _loyalty_target(kind: str) -> dict[str, str]:
    return {"kind": kind, "labelSelector": "app.kubernetes.io/part-of=loyalty"}


def dev_secret(p: Process) -> dict[str, Any]:
    data = {"database-url": f"postgresql://loyalty_{p.name}:dev@postgres:5432/loyalty_{p.name}"}
    if p.needs_redis:
        data["redis-url"] = "redis://:dev@redis:6379/0"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{p.name}-secrets"},
        "stringData": data,
    }


def dev_policies() -> list[dict[str, Any]]:
    """The in-cluster stores and the trace UI under default-deny: reachable from the loyalty
    pods (and the collector from them), nothing else."""
    loyalty = [{"podSelector": {"matchLabels": PART_OF}}]
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}

    def policy(
        name: str, port: int, sources: list[dict[str, Any]], egress: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"dev-{name}"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": sources, "ports": [{"port": port, "protocol": "TCP"}]}],
                "egress": egress,
            },
        }

    collector = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}]
    return [
        policy("postgres", 5432, loyalty, []),
        policy("redis", 6379, loyalty, []),
        policy("jaeger", 4317, collector, [dns]),
    ]


def overlays() -> dict[Path, list[dict[str, Any]]]:
    dev = _kustomization(
        namespace="loyalty",
        resources=[
            "../../base",
            "../../collector",
            "postgres.yaml",
            "redis.yaml",
            "jaeger.yaml",
            "policies.yaml",
        ],
        configMapGenerator=[
            {"name": "otel-collector-config", "files": ["config.yaml=collector-config.yaml"]}
        ],
        patches=[
            {"path": "secrets.yaml"},
            {
                "target": _loyalty_target("Deployment"),
                "patch": "- op: replace\n  path: /spec/replicas\n  value: 1\n",
            },
            {
                "target": _loyalty_target("HorizontalPodAutoscaler"),
                "patch": "- op: replace\n  path: /spec/minReplicas\n  value: 1\n"
                "- op: replace\n  path: /spec/maxReplicas\n  value: 2\n",
            },
            {
                "target": {"kind": "ConfigMap", "name": "loyalty-settings"},
                "patch": '- op: replace\n  path: /data/OTEL_TRACES_SAMPLER_ARG\n  value: "1.0"\n',
            },
        ],
    )
    egress = []
    for p in PROCESSES:
        ops = [
            {
                "op": "add",
                "path": "/spec/egress/-",
                "value": {
                    "to": [{"ipBlock": {"cidr": PROD_POSTGRES_CIDR}}],
                    "ports": [{"port": 5432, "protocol": "TCP"}],
                },
            },
        ]
        if p.needs_redis:
            ops.append(
                {
                    "op": "add",
                    "path": "/spec/egress/-",
                    "value": {
                        "to": [{"ipBlock": {"cidr": PROD_REDIS_CIDR}}],
                        "ports": [{"port": 6379, "protocol": "TCP"}],
                    },
                }
            )
        egress.append(
            {
                "target": {"kind": "NetworkPolicy", "name": p.name},
                "patch": yaml.safe_dump(ops, sort_keys=False),
            }
        )
    prod = _kustomization(
        namespace="loyalty",
        resources=["../../base", "../../collector"],
        configMapGenerator=[
            {"name": "otel-collector-config", "files": ["config.yaml=collector-config.yaml"]}
        ],
        images=[
            {"name": IMAGE, "newName": "registry.example.com/loyalty-platform", "newTag": "0.1.0"}
        ],
        patches=[
            *egress,
            {
                "target": {"kind": "Deployment", "name": "otel-collector"},
                "patch": "- op: replace\n  path: /spec/replicas\n  value: 2\n",
            },
        ],
    )
    return {
        DEV / "kustomization.yaml": dev,
        DEV / "secrets.yaml": [dev_secret(p) for p in PROCESSES],
        DEV / "policies.yaml": dev_policies(),
        PROD / "kustomization.yaml": prod,
    }


def main() -> None:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in render().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print("stale (run make k8s):", *map(str, stale), sep="\n  ", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
