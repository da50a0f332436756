"""deploy/k8s, statically: no cluster, no network.

Built-in kinds are validated against the Kubernetes OpenAPI schemas bundled by
``kubernetes-validate`` (strict: unknown fields are errors); the ServiceMonitor (a CRD) and the
Kustomization have no bundled schema and get structural checks. Then the wiring: selectors,
probes, ports, secrets, volumes and settings agree with each other, the image and the app.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from policies.spec import load_policy
from tests.unit.test_deploy_compose import check_limitstream_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The oldest Kubernetes minor still commonly run; fields used must exist there.
KUBERNETES_VERSION = "1.29.0"

Doc = dict[str, Any]


def load(name: str) -> Doc:
    doc: Doc = yaml.safe_load((K8S / name).read_text())
    return doc


@pytest.fixture(scope="module")
def kustomization() -> Doc:
    return load("kustomization.yaml")


@pytest.fixture(scope="module")
def resources(kustomization: Doc) -> dict[str, Doc]:
    """kind -> document of every resource file the kustomization lists."""
    docs: dict[str, Doc] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in docs, f"two {doc['kind']}s"
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def statefulset(resources: dict[str, Doc]) -> Doc:
    return resources["StatefulSet"]


@pytest.fixture(scope="module")
def container(statefulset: Doc) -> Doc:
    (worker,) = statefulset["spec"]["template"]["spec"]["containers"]
    result: Doc = worker
    return result


def generated(kustomization: Doc) -> list[Doc]:
    """The ConfigMaps and Secrets kustomize would generate (secret values from the examples)."""
    docs: list[Doc] = []
    for gen in kustomization.get("configMapGenerator", []):
        data = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        for spec in gen.get("files", []):
            key, _, path = spec.rpartition("=")
            data[key or Path(path).name] = (K8S / path).read_text()
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    for gen in kustomization.get("secretGenerator", []):
        data = {}
        for path in gen["envs"]:
            data |= env_file(K8S / (path + ".example"))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": gen["name"]},
                "type": "Opaque",
                "stringData": data,
            }
        )
    return docs


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def env_by_name(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container["env"]}


# ------------------------------------------------------------------- schemas and structure


def test_every_yaml_file_is_listed_in_the_kustomization(kustomization: Doc) -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_builtin_kinds_validate_against_the_kubernetes_schemas(
    resources: dict[str, Doc], kustomization: Doc
) -> None:
    docs = [d for d in resources.values() if d["apiVersion"] != "monitoring.coreos.com/v1"]
    docs += generated(kustomization)
    assert {d["kind"] for d in docs} >= {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
    }
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}")


def test_the_schema_check_is_not_a_no_op(statefulset: Doc) -> None:
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=False)


def test_kustomization_structure(kustomization: Doc) -> None:
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "secretGenerator",
        "generatorOptions",
        "images",
        "labels",
    }
    for gen in kustomization["configMapGenerator"]:
        for spec in gen.get("files", []):
            assert (K8S / spec.rpartition("=")[2]).is_file(), spec


def test_namespace_agnostic(resources: dict[str, Doc], kustomization: Doc) -> None:
    assert "namespace" not in kustomization
    for doc in resources.values():
        assert "namespace" not in doc["metadata"], doc["kind"]


def test_servicemonitor_structure(resources: dict[str, Doc]) -> None:
    monitor = resources["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    assert set(monitor["spec"]) <= {"selector", "endpoints", "jobLabel", "namespaceSelector"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


# ------------------------------------------------------------------- wiring


def test_selectors_match_the_pod_labels(resources: dict[str, Doc], statefulset: Doc) -> None:
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = resources["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = resources["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = resources["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_headless_service_is_the_statefulsets(resources: dict[str, Doc], statefulset: Doc) -> None:
    service = resources["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    # job="limitstream" for the alerts' up{job=~"limitstream.*"} (job = the Service's name).
    assert service["metadata"]["name"].startswith("limitstream")


def test_pdb_allows_one_worker_down(resources: dict[str, Doc]) -> None:
    pdb = resources["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


def test_probes_and_scraping_point_at_the_web_port(
    resources: dict[str, Doc], statefulset: Doc, container: Doc
) -> None:
    (port,) = container["ports"]
    assert port["name"] == "web"
    web_port = port["containerPort"]
    env = env_by_name(container)
    assert int(env["LIMITSTREAM_WEB_PORT"]["value"]) == web_port
    assert env["LIMITSTREAM_WEB_HOST"]["value"] == "0.0.0.0"  # reachable by the kubelet
    # Table routing: the pod's name under the headless Service, defined after the variable it
    # expands (Kubernetes expands $(VAR) only from variables listed before it).
    names = [e["name"] for e in container["env"]]
    assert names.index("LIMITSTREAM_INSTANCE_ID") < names.index("LIMITSTREAM_WEB_URL")
    assert env["LIMITSTREAM_WEB_URL"]["value"] == (
        f"http://$(LIMITSTREAM_INSTANCE_ID).{statefulset['spec']['serviceName']}:{web_port}")
    assert resources["Service"]["metadata"]["name"] == statefulset["spec"]["serviceName"]

    def probe_target(probe: str) -> tuple[str, object]:
        get = container[probe]["httpGet"]
        return get["path"], get["port"]

    assert probe_target("livenessProbe") == ("/healthz", "web")
    assert probe_target("startupProbe") == ("/healthz", "web")
    assert probe_target("readinessProbe") == ("/readyz", "web")

    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(web_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    service = resources["Service"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in {"web", web_port}
    (endpoint,) = resources["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert endpoint["path"] == "/metrics"


def test_the_app_serves_the_probed_paths() -> None:
    # The worker's own views (agents/web.py) must serve what the probes ask for.
    views = (ROOT / "agents" / "web.py").read_text()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert f'"{path}"' in views, path


def test_stable_identity_and_storage(statefulset: Doc, container: Doc) -> None:
    env = env_by_name(container)
    instance = env["LIMITSTREAM_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LIMITSTREAM_STORE"]["value"].startswith("rocksdb://")
    data_dir = env["LIMITSTREAM_DATA_DIR"]["value"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[data_dir] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_resources_and_clean_shutdown(statefulset: Doc, container: Doc) -> None:
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    # Room for Faust to commit and leave the group on SIGTERM (FINDINGS: ~4 s measured).
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_non_root_with_a_read_only_root_filesystem(statefulset: Doc, container: Doc) -> None:
    pod = statefulset["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["fsGroup"] == pod["runAsGroup"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Writable: only the data volume and a scratch /tmp.
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly", False)}
    assert writable == {env_by_name(container)["LIMITSTREAM_DATA_DIR"]["value"], "/tmp"}
    assert "emptyDir" in volumes["tmp"]


def test_secrets_are_referenced_never_written(container: Doc, kustomization: Doc) -> None:
    env = env_by_name(container)
    secret_names = {g["name"]: g for g in kustomization["secretGenerator"]}
    for name in (
        "LIMITSTREAM_SASL_USERNAME",
        "LIMITSTREAM_SASL_PASSWORD",
        "LIMITSTREAM_MODEL_HMAC_KEY",
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secret_names, name
        keys: set[str] = set()
        for path in secret_names[ref["name"]]["envs"]:
            keys |= set(env_file(K8S / (path + ".example")))
        assert ref["key"] in keys, f"{name}: key {ref['key']} is not in the example env file"
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
    for name, var in env.items():
        if secret.search(name):
            assert "value" not in var, f"{name} must come from a Secret"
    configmap_literals = [
        lit for g in kustomization["configMapGenerator"] for lit in g.get("literals", [])
    ]
    for literal in configmap_literals:
        assert not secret.search(literal.split("=")[0]), literal


def test_secret_env_files_are_examples_with_placeholders_and_git_ignored(
    kustomization: Doc,
) -> None:
    ignore = (K8S / ".gitignore").read_text().splitlines()
    assert "secrets/*.env" in ignore
    for gen in kustomization["secretGenerator"]:
        for path in gen["envs"]:
            assert path.startswith("secrets/") and path.endswith(".env"), path
            example = K8S / (path + ".example")
            assert "EXAMPLE ONLY" in example.read_text()
            for value in env_file(example).values():
                assert value.startswith("REPLACE_ME"), f"{example.name}: {value}"


def test_settings_are_real_and_valid(container: Doc, kustomization: Doc) -> None:
    (config,) = [g for g in kustomization["configMapGenerator"] if g.get("literals")]
    env: dict[str, str] = dict(lit.split("=", 1) for lit in config["literals"])
    for var in container["env"]:
        # A reference (fieldRef, secretKeyRef) is resolved by the kubelet: stand in for it.
        env[var["name"]] = var["value"] if "value" in var else "${" + var["name"] + "}"
    assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} == {config["name"]}
    settings = check_limitstream_env(env, "statefulset")
    assert settings.partitions == 12
    assert settings.replication_factor == 3
    assert settings.security.protocol.startswith("SASL")


def test_policy_configmap_is_mounted_and_valid(statefulset: Doc, container: Doc) -> None:
    env = env_by_name(container)
    policy_file = Path(env["LIMITSTREAM_POLICY_FILE"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[name]["configMap"]["name"] == "limitstream-policy"
    assert mounts[name]["mountPath"] == str(policy_file.parent)
    assert mounts[name]["readOnly"] is True
    policy = load_policy(K8S / policy_file.name)
    assert len(policy.version) == 64


# ------------------------------------------------------------ spread, topics job, alert rules


def test_workers_spread_over_nodes_and_zones(statefulset: Doc) -> None:
    pod = statefulset["spec"]["template"]["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"] == labels
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels


def test_the_topics_job_runs_the_workers_topic_code_with_their_settings(
    resources: dict[str, Doc], container: Doc, kustomization: Doc
) -> None:
    job = resources["Job"]
    (topics,) = job["spec"]["template"]["spec"]["containers"]
    assert topics["command"] == ["limitstream", "topics"]
    assert topics["image"] == container["image"]
    assert topics["envFrom"] == container["envFrom"]
    worker_env = env_by_name(container)
    for e in topics["env"]:
        assert e == worker_env[e["name"]], e["name"]  # the same Kafka credentials
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    (config,) = [g for g in kustomization["configMapGenerator"]
                 if g["name"] == "limitstream-config"]
    literals = dict(lit.split("=", 1) for lit in config["literals"])
    settings = check_limitstream_env(literals, "limitstream-config")
    assert settings.topic_min_insync_replicas == 2
    assert settings.audit_retention_days >= 5 * 365


def test_the_prometheusrule_is_deployed(resources: dict[str, Doc]) -> None:
    rule = resources["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    names = {r.get("alert") or r.get("record") for g in rule["spec"]["groups"]
             for r in g["rules"]}
    assert {"LimitstreamTargetAbsent", "LimitstreamDeadLetterSLOFastBurn",
            "limitstream:dead_letter_slo_errors:ratio_rate1h"} <= names
