"""The Kubernetes manifests in ``deploy/k8s/`` are valid against the Kubernetes API schema
(the ``kubernetes-validate`` package, strict: no unknown field) and complete: every service
has a Deployment with probes and resources and a Service on its own port, and a Job runs the
migrations and creates the topics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from services.console.settings import ConsoleSettings
from services.ingest.settings import IngestSettings
from services.outreach.settings import OutreachSettings
from services.scoring.settings import ScoringSettings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES = "1.30.0"
PORTS = {
    "ingest": IngestSettings.model_fields["port"].default,
    "scoring": ScoringSettings.model_fields["port"].default,
    "outreach": OutreachSettings.model_fields["port"].default,
    "console": ConsoleSettings.model_fields["port"].default,
}


def _resources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _of(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in _resources() if r["kind"] == kind}


def test_every_manifest_passes_the_kubernetes_schema() -> None:
    resources = _resources()
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_every_service_runs_as_a_probed_deployment_behind_a_service_on_its_port() -> None:
    deployments, services = _of("Deployment"), _of("Service")
    assert set(deployments) == set(PORTS)
    for name, port in PORTS.items():
        pod = deployments[name]["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == name
        [container] = pod["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        assert str(port) in container["command"]
        if name != "console":  # the console holds no data: no database
            [database] = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
            # Each service logs in as its own role (shared/db_roles.py).
            assert database["valueFrom"]["secretKeyRef"]["key"] == f"{name}-database-url"
        service = services[name]["spec"]
        assert service["selector"] == {"app.kubernetes.io/name": name}
        assert service["ports"][0]["port"] == port


def test_a_job_migrates_the_database_and_creates_the_topics() -> None:
    [job] = _of("Job").values()
    [container] = job["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert "tend migrate" in command and "tend topics" in command
