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

from devtools import k8s_console as console
from devtools.suite import REPO

K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
PROD = K8S / "overlays" / "prod"
# Placeholders for the managed stores' networks in production: replace with yours.
PROD_POSTGRES_CIDR = "10.20.0.0/16"
PROD_REDIS_CIDR = "10.30.0.0/16"
# The gateway's public name and the Ingress controller's namespace: replace with yours.
GATEWAY_HOST = "loyalty.example.com"
INGRESS_NAMESPACE = "ingress-nginx"
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


NAMESPACE = "loyalty"
# A release pins the base image by digest in the Dockerfile; the prod overlay names the tag.
SERVER = {"app.kubernetes.io/component": "server"}
MIGRATION = {"app.kubernetes.io/component": "migration"}


def labels(p: Process) -> dict[str, str]:
    return {"app.kubernetes.io/name": p.name, **PART_OF}


def job_labels(p: Process) -> dict[str, str]:
    """A migration Job's pods: a name of their own, so no Service, PDB or server
    NetworkPolicy (all select ``app.kubernetes.io/name: <service>``) ever matches them."""
    return {"app.kubernetes.io/name": f"{p.name}-migrate", **MIGRATION, **PART_OF}


def participant_target(q: Process) -> str:
    """The gateway dials a participant through its headless Service: DNS answers one address
    per ready pod and the gateway's round_robin spreads calls over them."""
    return f"dns:///{q.name}.{NAMESPACE}.svc.cluster.local:{q.port}"


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
            {"name": f"{prefix}{q.name.upper()}_ADDR", "value": participant_target(q)}
            for q in PARTICIPANTS
        ]
    return {
        "name": p.name,
        "image": IMAGE,
        # The tag is mutable (0.1.0 may be rebuilt): pull it on every start. The dev overlay
        # uses IfNotPresent for images loaded into kind or minikube.
        "imagePullPolicy": "Always",
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
    # Replicas spread over zones and nodes, so one node or zone lost is not the service lost.
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": p.name}},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    spec = pod_spec(
        p, ["serve"], terminationGracePeriodSeconds=20, topologySpreadConstraints=spread
    )
    spec["containers"] = [main]
    # No `replicas`: the HPA owns the count (a `replicas` here would reset it on every apply).
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": p.name, "labels": labels(p)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": p.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": {**labels(p), **SERVER}}, "spec": spec},
        },
    }


def migrate_job(p: Process) -> dict[str, Any]:
    """One Job per service (not per replica): `python -m <module> migrate`. Its pods carry
    labels of their own (``job_labels``) and a NetworkPolicy of their own. A Job's template is
    immutable: an upgrade deletes the finished Jobs before it applies (deploy/README), and the
    servers stay NOT_SERVING until the schema is theirs, whatever the order."""
    spec = pod_spec(p, ["migrate"], restartPolicy="OnFailure")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{p.name}-migrate", "labels": job_labels(p)},
        "spec": {
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": job_labels(p)}, "spec": spec},
        },
    }


def service(p: Process, *, headless: bool | None = None, name: str = "") -> dict[str, Any]:
    """Participants' Services are headless (one DNS address per ready pod, for the gateway's
    round_robin). The gateway's is a ClusterIP for the Ingress, beside a headless
    ``gateway-headless`` for product backends in the cluster that balance per call."""
    headless = p.name != "gateway" if headless is None else headless
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name or p.name, "labels": labels(p)},
        "spec": {
            **({"clusterIP": "None"} if headless else {}),
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


def migration_policy(p: Process) -> dict[str, Any]:
    """A migration Job's pods: nothing comes in; out, DNS and the service's own database."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{p.name}-migrate", "labels": labels(p)},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": f"{p.name}-migrate"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [DNS, _database_egress(p)],
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


DNS = {
    "to": [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def _database_egress(p: Process) -> dict[str, Any]:
    """The service's own PostgreSQL: pods labelled for it in dev; prod adds the managed
    network's CIDR (``overlays``)."""
    return _to(
        {"to": [{"podSelector": {"matchLabels": {f"loyalty.io/postgres-for-{p.name}": "true"}}}]},
        5432,
    )


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
            # The ops console calls AdminService.
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "console"}}},
        ]
    else:
        ingress_from = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    egress = [
        DNS,
        _database_egress(p),
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


SHARED = {
    "namespace.yaml": [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # Pod Security admission: every pod here must meet the restricted profile.
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    **PART_OF,
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }
    ],
    "settings.yaml": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "loyalty-settings", "labels": PART_OF},
            "data": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
                # Every saga's trace whole (its root, its steps, the batches it rode), and
                # this share of plain calls (plumbing/telemetry.py, SagaSampler).
                "OTEL_TRACES_SAMPLER": "loyalty_sagas",
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
        services = [service(p), service_account(p)]
        if p.name == "gateway":
            services.insert(1, service(p, headless=True, name="gateway-headless"))
        files[folder / "service.yaml"] = services
        files[folder / "migrate-job.yaml"] = [migrate_job(p)]
        files[folder / "scaling.yaml"] = [hpa(p), pdb(p)]
        files[folder / "network-policy.yaml"] = [network_policy(p), migration_policy(p)]
        # No Secret here: `<service>-secrets` are made out of band (deploy/README), and the
        # dev overlay brings its own for its in-cluster stores.
        files[folder / "kustomization.yaml"] = _kustomization(
            resources=[
                "deployment.yaml",
                "service.yaml",
                "migrate-job.yaml",
                "scaling.yaml",
                "network-policy.yaml",
            ],
        )
    security = container(PROCESSES[0], [])["securityContext"]
    files[BASE / "console" / "deployment.yaml"] = [console.deployment(IMAGE, security)]
    files[BASE / "console" / "service.yaml"] = [console.service(), console.service_account()]
    files[BASE / "console" / "network-policy.yaml"] = [console.network_policy(DNS)]
    files[BASE / "console" / "kustomization.yaml"] = _kustomization(
        resources=["deployment.yaml", "service.yaml", "network-policy.yaml"]
    )
    files[BASE / "kustomization.yaml"] = _kustomization(
        namespace=NAMESPACE, resources=[*SHARED, *(p.name for p in PROCESSES), "console"]
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
            "secrets.yaml",
        ],
        configMapGenerator=[
            {"name": "otel-collector-config", "files": ["config.yaml=collector-config.yaml"]}
        ],
        patches=[
            *(
                {
                    "target": _loyalty_target(kind),
                    "patch": "- op: replace\n"
                    "  path: /spec/template/spec/containers/0/imagePullPolicy\n"
                    "  value: IfNotPresent\n",
                }
                for kind in ("Deployment", "Job")
            ),
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
        egress.append(
            {
                "target": {"kind": "NetworkPolicy", "name": f"{p.name}-migrate"},
                "patch": yaml.safe_dump(ops[:1], sort_keys=False),
            }
        )
    # The Ingress controller's pods reach the gateway (TLS ends there; see ingress.yaml).
    from_ingress = [
        {
            "op": "add",
            "path": "/spec/ingress/0/from/-",
            "value": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": INGRESS_NAMESPACE}
                }
            },
        }
    ]
    prod = _kustomization(
        namespace="loyalty",
        resources=["../../base", "../../collector", "ingress.yaml"],
        configMapGenerator=[
            {"name": "otel-collector-config", "files": ["config.yaml=collector-config.yaml"]}
        ],
        images=[
            {"name": IMAGE, "newName": "registry.example.com/loyalty-platform", "newTag": "0.1.0"}
        ],
        patches=[
            *egress,
            {
                "target": {"kind": "NetworkPolicy", "name": "gateway"},
                "patch": yaml.safe_dump(from_ingress, sort_keys=False),
            },
            # Operators reach the console through the Ingress controller too.
            {
                "target": {"kind": "NetworkPolicy", "name": "console"},
                "patch": yaml.safe_dump(from_ingress, sort_keys=False),
            },
            {
                "target": {"kind": "Deployment", "name": "otel-collector"},
                "patch": "- op: replace\n  path: /spec/replicas\n  value: 2\n",
            },
        ],
    )
    return {
        DEV / "kustomization.yaml": dev,
        DEV / "secrets.yaml": [*(dev_secret(p) for p in PROCESSES), console.dev_secret()],
        DEV / "policies.yaml": dev_policies(),
        PROD / "kustomization.yaml": prod,
        PROD / "ingress.yaml": [gateway_ingress()],
    }


def gateway_ingress() -> dict[str, Any]:
    """The way in from outside: gRPC over TLS to the gateway (ingress-nginx; the certificate in
    Secret ``gateway-tls``, from cert-manager or made out of band). The controller balances
    per call over the gateway's pods, so external clients do not pin one."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "gateway",
            "labels": {"app.kubernetes.io/name": "gateway", **PART_OF},
            "annotations": {
                "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
                "nginx.ingress.kubernetes.io/ssl-redirect": "true",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [GATEWAY_HOST], "secretName": "gateway-tls"}],
            "rules": [
                {
                    "host": GATEWAY_HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": "gateway", "port": {"name": "grpc"}}
                                },
                            }
                        ]
                    },
                }
            ],
        },
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
