"""k8s/: every overlay rendered with ``kubectl kustomize`` and every object validated, offline.

Built-in kinds are validated strictly (unknown fields refused) by kubernetes-validate; custom
resources (RabbitmqCluster, CloudNativePG Cluster, KEDA ScaledObject and TriggerAuthentication,
ServiceMonitor, PrometheusRule) against the schemas kept in k8s/crds/, just as strictly, with the
Kubernetes core definitions kubernetes-validate ships for the core types they embed. Then what the
issue asks of the deployment is checked on the rendered objects.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from tests.deploy.service_settings import ADMIN_EMAIL, SERVICE_ACCOUNT_PASSWORD, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30"  # the oldest version the manifests must run on
SERVICES = {
    "gateway": 8000,
    "user-service": 8001,
    "template-service": 8002,
    "email-service": 8003,
    "push-service": 8004,
    "dlq-service": 8005,
}
CONSUMERS = {"email-service": "email.queue", "push-service": "push.queue"}
OWN_A_DATABASE = {"gateway", "user-service", "template-service", "dlq-service"}
PUBLIC = {"gateway", "dlq-service"}  # the API and the operators' console
UVICORN_DRAIN_SECONDS = 30  # libs/http/serve.py
# Secrets the manifests reference: created by the operators (RabbitMQ, CloudNativePG) or by the
# people deploying (k8s/README.md); none is in the repository.
SECRETS = {
    "herald-rabbitmq-default-user",
    "herald-postgres-app",
    "herald-redis",
    "herald-app",
    "herald-metrics",
    "herald-smtp",
    "herald-fcm",
    "herald-keda-rabbitmq",
    "herald-backup-s3",
}

Obj = dict[str, Any]


def kubectl() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is missing: `make tools` installs it")
    return binary


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    schemas = {}
    for path in sorted((K8S / "crds").glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


@cache
def core_definitions() -> Registry:
    """The strict Kubernetes definitions kubernetes-validate ships, for the CRDs' core types."""
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads(
        (package / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json").read_text()
    )
    return Resource.from_contents(definitions) @ Registry()


def validate(obj: Obj) -> None:
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:  # a built-in kind
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        return
    jsonschema.Draft202012Validator(schema, registry=core_definitions()).validate(obj)


def of_kind(objects: tuple[Obj, ...], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def main_container(deployment: Obj) -> Obj:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def config(objects: tuple[Obj, ...]) -> dict[str, str]:
    return of_kind(objects, "ConfigMap")["herald-config"]["data"]  # type: ignore[no-any-return]


# --- rendering and validation ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_is_valid(overlay):
    objects = render(overlay)
    assert objects
    for obj in objects:
        try:
            validate(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_validation_is_strict_for_built_in_and_custom_kinds():
    deployment = of_kind(render("prod"), "Deployment")["gateway"]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    rabbit = json.loads(json.dumps(of_kind(render("prod"), "RabbitmqCluster")["herald-rabbitmq"]))
    rabbit["spec"]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        validate(rabbit)
    scaled = json.loads(json.dumps(of_kind(render("prod"), "ScaledObject")["email-service"]))
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 200  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_every_custom_resource_kind_used_has_its_schema_in_the_repository():
    kinds = {(o["apiVersion"], o["kind"]) for overlay in OVERLAYS for o in render(overlay)}
    groups = {api: api.split("/")[0] if "/" in api else "" for api, _ in kinds}
    custom = {(a, k) for a, k in kinds if "." in groups[a] and not groups[a].endswith(".k8s.io")}
    assert custom == set(crd_schemas())


# --- what every service gets ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_probes_resources_a_grace_period_above_its_drain_and_spreads(overlay):
    objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    drain = int(config(objects)["SHUTDOWN_GRACE_SECONDS"])
    for name, port in SERVICES.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        container = main_container(deployments[name])
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        needed = pre_stop + UVICORN_DRAIN_SECONDS + (drain if name in CONSUMERS else 0)
        assert pod["terminationGracePeriodSeconds"] > needed, name
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert pod["securityContext"]["runAsNonRoot"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_a_disruption_budget_and_a_scraped_service(overlay):
    objects = render(overlay)
    budgets = of_kind(objects, "PodDisruptionBudget")
    services = of_kind(objects, "Service")
    deployments = of_kind(objects, "Deployment")
    [monitor] = [
        m for m in of_kind(objects, "ServiceMonitor").values() if m["metadata"]["name"] == "herald"
    ]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    for name in SERVICES:
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
        assert wanted.items() <= services[name]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_before_the_services_that_own_a_database(overlay):
    deployments = of_kind(render(overlay), "Deployment")
    for name in SERVICES:
        init = deployments[name]["spec"]["template"]["spec"].get("initContainers", [])
        commands = [c["command"] for c in init]
        module = main_container(deployments[name])["command"][-1]
        if name in OWN_A_DATABASE:
            assert commands[0] == ["python", "-m", module, "migrate"], name
        else:
            assert commands == [], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_only_references(overlay):
    objects = render(overlay)
    assert not of_kind(objects, "Secret")
    text = json.dumps(objects)
    referenced = set()
    for obj in objects:
        for found in _find(obj, "secretKeyRef"):
            referenced.add(found["name"])
        for found in _find(obj, "secretName"):
            referenced.add(found)
        for found in _find(obj, "secretTargetRef"):
            referenced |= {ref["name"] for ref in found}
        for found in _find(obj, "s3Credentials"):
            referenced |= {ref["name"] for ref in found.values()}
    assert referenced <= SECRETS, referenced - SECRETS
    readme = (ROOT / "k8s" / "README.md").read_text()
    assert all(f"| `{name}`" in readme for name in referenced), "k8s/README.md lists every Secret"
    assert "password=" not in text.lower()
    for value in config(objects).values():
        assert "password" not in value.lower()


def _find(node: Any, key: str) -> list[Any]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(node, list):
        for item in node:
            found += _find(item, key)
    return found


# --- scaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_scales_on_cpu_and_the_consumers_on_their_queue(overlay):
    objects = render(overlay)
    [hpa] = of_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    scaled = of_kind(objects, "ScaledObject")
    auth = of_kind(objects, "TriggerAuthentication")
    for name, queue in CONSUMERS.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        [trigger] = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == queue
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in auth
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]


# --- the stores ------------------------------------------------------------------------------


def test_prod_runs_three_rabbitmq_nodes_with_quorum_queues():
    objects = render("prod")
    rabbit = of_kind(objects, "RabbitmqCluster")["herald-rabbitmq"]
    assert rabbit["spec"]["replicas"] == 3
    assert config(objects)["QUEUE_TYPE"] == "quorum"
    assert config(render("dev"))["QUEUE_TYPE"] == "classic"  # a single node in dev
    for name in ("gateway", "email-service", "push-service", "dlq-service"):
        env = {e["name"]: e for e in main_container(of_kind(objects, "Deployment")[name])["env"]}
        assert "@herald-rabbitmq:5672/" in env["RABBITMQ_URL"]["value"]


def test_prod_postgres_is_a_replicated_cloudnativepg_cluster_with_backups():
    cluster = of_kind(render("prod"), "Cluster")["herald-postgres"]
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
    init = cluster["spec"]["bootstrap"]["initdb"]
    databases = {init["database"], *(sql.split()[2] for sql in init["postInitSQL"])}
    assert databases == {"herald_users", "herald_templates", "herald_dlq", "herald_notifications"}


def test_prod_redis_persists_with_an_append_only_file_on_a_volume():
    redis = of_kind(render("prod"), "StatefulSet")["herald-redis"]
    args = main_container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert not redis["spec"]["template"]["spec"]["volumes"]
    dev = of_kind(render("dev"), "StatefulSet")["herald-redis"]
    assert main_container(dev)["args"][-1] == "no"


# --- the network -----------------------------------------------------------------------------


def _reaches_from_outside(rule: Obj) -> bool:
    sources = rule.get("from")
    if not sources:
        return True  # no "from": any source, inside or outside the namespace
    return any("namespaceSelector" in s or "ipBlock" in s for s in sources)


def _is_prometheus(rule: Obj) -> bool:
    return bool(rule.get("from")) and all(
        s.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "monitoring"}
        and s.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
        for s in rule["from"]
    )


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        if (
            expression["operator"] == "In"
            and labels.get(expression["key"]) not in expression["values"]
        ):
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_the_console_are_reachable_from_outside_the_namespace(overlay):
    objects = render(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in of_kind(objects, "Deployment").items()
    }
    reachable = set()
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            if not _reaches_from_outside(rule) or _is_prometheus(rule):
                continue
            reachable |= {
                n for n, labels in pods.items() if _selects(policy["spec"]["podSelector"], labels)
            }
    assert reachable == PUBLIC


def test_the_prometheus_rule_is_the_alert_rules_file():
    rule = of_kind(render("prod"), "PrometheusRule")["herald-alerts"]
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_with_the_token_every_service_requires(overlay):
    # ENVIRONMENT=production refuses to start without METRICS_TOKEN (migrate steps included), and
    # /metrics then answers only that bearer token: both sides must read the same Secret key.
    objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    for name in SERVICES:
        spec = deployments[name]["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            ref = env["METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("herald-metrics", "token"), (
                name,
                container["name"],
            )
    monitor = of_kind(objects, "ServiceMonitor")["herald"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": "herald-metrics", "key": "token"},
        }


def _container_environment(container: Obj, configmap: dict[str, str]) -> dict[str, str]:
    """What the container's process sees: the ConfigMap, then its env (Secrets given test values
    the people deploying would choose, ``$(NAME)`` expanded as the kubelet does)."""
    chosen = {
        ("herald-app", "admin-email"): ADMIN_EMAIL,
        ("herald-app", "service-account-password"): SERVICE_ACCOUNT_PASSWORD,
    }
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "herald-config"
        environment |= configmap
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: environment[m.group(1)], entry["value"]
            )
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            key = (ref["name"], ref["key"])
            environment[entry["name"]] = chosen.get(key, f"test-{ref['name']}-{ref['key']}")
    return environment


def test_every_container_of_the_prod_overlay_accepts_its_environment(monkeypatch):
    # Production refuses development secrets, a missing METRICS_TOKEN or the default admin at
    # start-up (migrate and seed steps included): the manifests must give each what it needs.
    objects = render("prod")
    configmap = config(objects)
    assert configmap["ENVIRONMENT"] == "production"
    for name, deployment in of_kind(objects, "Deployment").items():
        if name not in SERVICES:
            continue
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            environment = _container_environment(container, configmap)
            settings = load_settings(name, environment, monkeypatch)
            assert settings.environment == "production", (name, container["name"])
