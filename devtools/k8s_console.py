"""The ops console's Kubernetes objects (devtools/k8s.py renders them into base/console): one
Deployment of the suite's image (`python -m console serve`), its Service, and a NetworkPolicy
that lets it reach the gateway and nothing else (DNS aside)."""

from __future__ import annotations

from typing import Any

CONSOLE = "console"
CONSOLE_PORT = 8080
GATEWAY_PORT = 50051
LABELS = {"app.kubernetes.io/name": CONSOLE, "app.kubernetes.io/part-of": "loyalty"}
SELECTOR = {"app.kubernetes.io/name": CONSOLE}
# Operators reach the console from namespaces labelled for it (a bastion, a port-forward's
# namespace); the prod overlay adds the Ingress controller's.
OPS_ACCESS = {"loyalty.io/access": "ops"}


def deployment(image: str, security: dict[str, Any]) -> dict[str, Any]:
    """Two replicas would each keep their own sessions (in memory): one replica, recreated
    on a rollout; an operator signs in again after it."""
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    container = {
        "name": CONSOLE,
        "image": image,
        "imagePullPolicy": "Always",
        "command": ["python", "-m", "console", "serve"],
        "ports": [{"name": "http", "containerPort": CONSOLE_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "LOYALTY_CONSOLE_GATEWAY", "value": f"gateway:{GATEWAY_PORT}"},
            {"name": "LOYALTY_CONSOLE_HOST", "value": "0.0.0.0"},
            {"name": "LOYALTY_CONSOLE_PORT", "value": str(CONSOLE_PORT)},
            # Behind TLS (the Ingress) or a port-forward to localhost: Secure cookies work.
            {"name": "LOYALTY_CONSOLE_SECURE_COOKIES", "value": "true"},
            {
                "name": "LOYALTY_CONSOLE_SECRET_KEY",
                "valueFrom": {"secretKeyRef": {"name": "console-secrets", "key": "secret-key"}},
            },
        ],
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": security,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONSOLE, "labels": LABELS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {**LABELS, "app.kubernetes.io/component": "web"}},
                "spec": {
                    "serviceAccountName": CONSOLE,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": 10001},
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                },
            },
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": CONSOLE, "labels": LABELS},
        "spec": {
            "selector": SELECTOR,
            "ports": [
                {
                    "name": "http",
                    "port": CONSOLE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": CONSOLE, "labels": LABELS},
        "automountServiceAccountToken": False,
    }


def network_policy(dns: dict[str, Any]) -> dict[str, Any]:
    """In: operators' namespaces on the console's port. Out: DNS and the gateway, nothing
    else (no database, no participant, no internet: every asset is served by the console)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": CONSOLE, "labels": LABELS},
        "spec": {
            "podSelector": {"matchLabels": SELECTOR},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": OPS_ACCESS}}],
                    "ports": [{"port": CONSOLE_PORT, "protocol": "TCP"}],
                }
            ],
            "egress": [
                dns,
                {
                    "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}],
                    "ports": [{"port": GATEWAY_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }


def dev_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "console-secrets"},
        "stringData": {"secret-key": "dev-console-session-signing-key"},
    }
