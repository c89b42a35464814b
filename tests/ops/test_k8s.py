"""The Kubernetes manifests (deploy/k8s): every overlay renders with a real renderer (`kubectl kustomize`), every
object is valid against the Kubernetes schemas (kubernetes-validate, offline, strict: an unknown field fails), and
the rendered objects say what an operator relies on: resources and probes on every container, secrets that exist,
a worker for every queue the product routes to, pinned images in production, and production settings complete.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from functools import cache

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet
from django.conf import settings

from config import processes
from conftest import ROOT
from core.metrics import CELERY_QUEUES

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").exists())
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests target (autoscaling/v2, policy/v1 PDBs)


@cache
def render(overlay: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (.ci/run installs Debian's kubernetes-client)"
    result = subprocess.run(  # noqa: S603 - our own overlay directory
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects, kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_specs(objects) -> dict[str, dict]:
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in objects
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    }


def secret_template() -> dict:
    return yaml.safe_load((K8S / "secret.template.yaml").read_text())


def test_there_are_dev_and_prod_overlays():
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay):
    objects = render(overlay)
    assert len(objects) > 10
    for obj in objects:
        # strict: a misspelt or misplaced field is an error, not silently dropped by the API server
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kubernetes_validate.validate(secret_template(), KUBERNETES_VERSION, strict=True)


def test_an_invalid_object_is_refused_by_the_validator():
    deployment = dict(of_kind(render("prod"), "Deployment")[0])
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_a_locked_down_context(overlay):
    for name, spec in pod_specs(render(overlay)).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (name, bound)
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            # a read-only image still needs a writable /tmp (uploads spooled by Django, caches, beat's schedule)
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, name  # noqa: S108 - the mount path, not a file we create


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_and_web_uses_the_real_health_paths(overlay):
    from django.urls import resolve

    from config.health import healthz, readyz

    objects = render(overlay)
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in container, deployment["metadata"]["name"]
    web = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "agentry-web")
    container = web["spec"]["template"]["spec"]["containers"][0]
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    # the paths answer on the URL conf probes by IP get (tenants.middleware: no tenant -> public URL conf)
    assert resolve(liveness["path"], urlconf=settings.PUBLIC_SCHEMA_URLCONF).func is healthz
    assert resolve(readiness["path"], urlconf=settings.PUBLIC_SCHEMA_URLCONF).func is readyz
    ports = {port["name"] for port in container["ports"]}
    assert liveness["port"] in ports and readiness["port"] in ports
    # probes arrive with Host: <pod IP>; Django refuses hosts it does not allow
    env = {e["name"]: e for e in container["env"]}
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"].split(",")
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_reference_exists(overlay):
    objects = render(overlay)
    rendered = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    template = secret_template()
    available = {name: set(s.get("data") or {}) | set(s.get("stringData") or {}) for name, s in rendered.items()}
    available.setdefault(template["metadata"]["name"], set(template["stringData"]))  # created by the operator
    references = 0
    for name, spec in pod_specs(objects).items():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    references += 1
                    assert source["secretRef"]["name"] in available, (name, source)
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    references += 1
                    assert ref["key"] in available.get(ref["name"], set()), (name, ref)
    assert references
    for secret in [*rendered.values(), template]:
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        assert {"SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL"} <= keys


def _production_reads_without_default() -> set[str]:
    """Environment variables config/settings/prod.py reads with env("NAME") / env.x("NAME") and no default."""
    source = (ROOT / "config" / "settings" / "prod.py").read_text()
    return set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z0-9_]+)\"\s*\)", source))


def test_the_secret_template_holds_every_variable_production_requires():
    keys = set(secret_template()["stringData"])
    configured = set(yaml.safe_load((K8S / "base" / "configmap.yaml").read_text())["data"])
    # prod.py raises without FIELD_ENCRYPTION_KEYS; the URLs default to the embedded development servers
    required = _production_reads_without_default() | {"FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL"}
    assert "SECRET_KEY" in required
    assert required <= keys | configured


def _queues_of(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(",")) if "-Q" in command else set()


def _pool_of(command: list[str]) -> str:
    pools = [arg.split("=", 1)[1] for arg in command if arg.startswith("--pool=")]
    return pools[0] if pools else "prefork"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_queue_has_a_worker_deployment_with_its_pool_and_an_autoscaler(overlay):
    objects = render(overlay)
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed <= set(CELERY_QUEUES)  # the queue-depth metric covers every queue
    workers = {}
    for deployment in of_kind(objects, "Deployment"):
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        if command[:4] == ["celery", "-A", "config", "worker"]:
            (queue,) = _queues_of(command)  # one queue per Deployment: each scales on its own backlog
            workers[queue] = (deployment, command)
    assert set(workers) == routed
    dev_pools = {queue: _pool_of(args) for args in processes.WORKERS.values() for queue in _queues_of(args)}
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    pdbs = {p["metadata"]["name"] for p in of_kind(objects, "PodDisruptionBudget")}
    for queue, (deployment, command) in workers.items():
        assert _pool_of(command) == dev_pools[queue], queue  # the same pool as `make up` and the e2e tests
        assert "-c" in command, queue
        metric = hpas[deployment["metadata"]["name"]]["spec"]["metrics"][0]["external"]["metric"]
        assert metric["selector"]["matchLabels"] == {"queue": queue}
        assert deployment["metadata"]["name"] in pdbs
    web_hpa = hpas["agentry-web"]["spec"]["metrics"][0]["resource"]
    assert web_hpa["name"] == "cpu"
    (beat,) = [
        d for d in of_kind(objects, "Deployment") if "beat" in d["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert beat["metadata"]["name"] not in hpas
    (job,) = of_kind(objects, "Job")
    assert "migrate_schemas" in " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_serves_the_site_and_every_organisation_over_tls(overlay):
    objects = render(overlay)
    (ingress,) = of_kind(objects, "Ingress")
    (config,) = of_kind(objects, "ConfigMap")
    domain = config["data"]["BASE_DOMAIN"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == {domain, f"*.{domain}"}
    assert set(ingress["spec"]["tls"][0]["hosts"]) == hosts
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    if overlay != "dev":
        assert "example.com" not in domain  # the base's placeholder is replaced


def test_production_pins_its_images_and_keeps_documents_in_s3():
    objects = render("prod")
    for name, spec in pod_specs(objects).items():
        for container in spec["containers"]:
            image = container["image"]
            assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest"), image
        assert not any("persistentVolumeClaim" in v for v in spec["volumes"]), name
    assert not of_kind(objects, "PersistentVolumeClaim")
    (config,) = of_kind(objects, "ConfigMap")
    assert config["data"]["KNOWLEDGE_STORAGE_BACKEND"] == "s3"
    assert {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} <= set(secret_template()["stringData"])


def test_dev_shares_one_media_volume_between_web_and_workers():
    objects = render("dev")
    (claim,) = of_kind(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (config,) = of_kind(objects, "ConfigMap")
    for name, spec in pod_specs(objects).items():
        if name in ("agentry-beat", "agentry-migrate"):
            continue
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert claims[mounts[config["data"]["MEDIA_ROOT"]]] == claim["metadata"]["name"], name


@pytest.mark.django_db
def test_production_settings_start_from_the_rendered_configuration(tmp_path):
    """The prod overlay's ConfigMap plus the Secret's keys are all production needs: `check --deploy` is silent."""
    objects = render("prod")
    (config,) = of_kind(objects, "ConfigMap")
    web = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "agentry-web")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SECURE_", "SESSION_", "CSRF_", "FIELD_ENCRYPTION", "SECRET_KEY", "DEBUG", "ALLOWED"))
    }
    environment.update(config["data"])
    environment.update(
        SECRET_KEY=secrets.token_urlsafe(64),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        METRICS_TOKEN=secrets.token_urlsafe(16),
        S3_ACCESS_KEY_ID="AKIAEXAMPLE",
        S3_SECRET_ACCESS_KEY=secrets.token_urlsafe(16),
        HOME=str(tmp_path),
    )
    variables = {e["name"]: e.get("value", "") for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    environment["ALLOWED_HOSTS"] = (
        variables["ALLOWED_HOSTS"]
        .replace("$(BASE_DOMAIN)", config["data"]["BASE_DOMAIN"])
        .replace("$(POD_IP)", "10.1.2.3")
    )
    script = (
        "from django.conf import settings; from django.core.management import call_command; "
        "call_command('check', deploy=True, fail_level='WARNING'); "
        "print(settings.KNOWLEDGE_STORAGE['BACKEND'], settings.ALLOWED_HOSTS)"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
    assert "storages.backends.s3.S3Storage" in result.stdout
    assert "10.1.2.3" in result.stdout
