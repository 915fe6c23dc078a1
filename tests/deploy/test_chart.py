"""The Helm chart deploy/helm/switchboard: lint, render, validate, and check what it renders.

Helm v4 runs in-process (helm-python-sdk: `Chart.load`, `.render`, `lint`); core kinds are
validated with kubernetes-validate (strict, Kubernetes 1.32). That validator has no schema for
custom resources, so `CRD_REQUIRED` below writes down, per CR kind, the required fields and
types taken from each CRD's published schema, and `test_custom_resources_meet_crd_schema`
checks the rendered objects against them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from bot.config import Settings
from bot.inbox import GROUP
from bot.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "switchboard"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
KUBE_VERSION = "1.32.0"
RELEASE = "sb"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what the pods must listen on)

Doc = dict[str, Any]

# Environment variables the chart sets itself; values.schema.json refuses them under `config`.
CHART_MANAGED_ENV = {"BOT_HTTP_HOST", "BOT_HTTP_PORT", "BOT_METRICS_PORT", "BOT_DATA_DIR",
                     "BOT_MIGRATE_ON_START", "BOT_WORKERS", "BOT_CONCURRENCY"}

CORE_KINDS_DEFAULT = {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service",
                      "ServiceAccount"}
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ExternalSecret", "ServiceMonitor",
                "PodMonitor"}


def _all_on() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(ALL_ON.read_text())
    return values


def _hpa_values() -> dict[str, Any]:
    return {"worker": {"hpa": {"enabled": True}}, "web": {"hpa": {"enabled": True}}}


# name -> values: the cases that must lint strictly and render to valid objects
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "all-on": _all_on(),
    "hpa": _hpa_values(),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[Doc]:
    """Every object the chart renders (hooks included), NOTES.txt left out."""
    rendered = chart.render(values, name=RELEASE, namespace="bots", is_install=True)
    docs: list[Doc] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def kinds(docs: list[Doc]) -> set[str]:
    return {doc["kind"] for doc in docs}


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def deployments(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in docs if d["kind"] == "Deployment"}


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# --- lint and render ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_lints_strictly(case: str) -> None:
    report = helm.lint(CHART, CASES[case], strict=True, namespace="bots")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_renders_the_expected_kinds(chart: helm.Chart) -> None:
    assert kinds(render(chart, {})) == CORE_KINDS_DEFAULT
    all_on = kinds(render(chart, CASES["all-on"]))
    assert all_on == CORE_KINDS_DEFAULT | CUSTOM_KINDS | {"Ingress", "HorizontalPodAutoscaler"}
    hpa = render(chart, CASES["hpa"])
    assert kinds(hpa) == CORE_KINDS_DEFAULT | {"HorizontalPodAutoscaler"}
    targets = {d["spec"]["scaleTargetRef"]["name"] for d in hpa
               if d["kind"] == "HorizontalPodAutoscaler"}
    assert targets == {f"{RELEASE}-switchboard-web", f"{RELEASE}-switchboard-worker"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_kinds_validate_strictly(chart: helm.Chart, case: str) -> None:
    unvalidated = set()
    for doc in render(chart, CASES[case]):
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unvalidated.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                        f"{list(exc.path)}")
    # only the custom resources lack a schema there; they are checked against CRD_REQUIRED
    assert unvalidated <= CUSTOM_KINDS
    assert unvalidated <= set(CRD_REQUIRED)


def test_validator_rejects_an_unknown_field(chart: helm.Chart) -> None:
    """The strict validation above can fail: a misspelt field in a Deployment is refused."""
    web = deployments(render(chart, {}))["web"]
    web["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBE_VERSION, strict=True)


# --- custom resources against their CRDs ----------------------------------------------------

def _obj(required: list[str], properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties or {}}


_STR = {"type": "string", "minLength": 1}
_DNS_NAME = {"type": "string", "minLength": 1, "maxLength": 253,
             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_LABEL_SELECTOR = {"type": "object", "minProperties": 1,
                   "properties": {"matchLabels": {"type": "object",
                                                  "additionalProperties": {"type": "string"}},
                                  "matchExpressions": {"type": "array"}}}

# Required fields (and the types the CRDs give them) of the custom resources the chart renders.
# Written down from the CRDs' published schemas:
CRD_REQUIRED: dict[str, dict[str, Any]] = {
    # keda.sh/v1alpha1 ScaledObject, CRD
    # https://github.com/kedacore/keda/blob/main/config/crd/bases/keda.sh_scaledobjects.yaml
    # spec requires scaleTargetRef (which requires name) and triggers; each trigger requires
    # type and metadata, and metadata is a map of strings. The redis-streams trigger's own
    # parameters (https://keda.sh/docs/latest/scalers/redis-streams/): stream is required;
    # address or host; lag mode is consumerGroup + lagCount (activationLagCount optional).
    "ScaledObject": _obj(["apiVersion", "kind", "metadata", "spec"], {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": _obj(["scaleTargetRef", "triggers"], {
            "scaleTargetRef": _obj(["name"], {"name": _STR}),
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer"},
            "cooldownPeriod": {"type": "integer"},
            "triggers": {"type": "array", "minItems": 1, "items": _obj(["type", "metadata"], {
                "type": {"const": "redis-streams"},
                "metadata": {**_obj(["address", "stream", "consumerGroup", "lagCount"]),
                             "additionalProperties": {"type": "string"}},
                "authenticationRef": _obj(["name"], {"name": _STR}),
            })},
        }),
    }),
    # keda.sh/v1alpha1 TriggerAuthentication, CRD
    # https://github.com/kedacore/keda/blob/main/config/crd/bases/keda.sh_triggerauthentications.yaml
    # each spec.secretTargetRef item requires parameter, name and key.
    "TriggerAuthentication": _obj(["apiVersion", "kind", "metadata", "spec"], {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": _obj(["secretTargetRef"], {
            "secretTargetRef": {"type": "array", "minItems": 1, "items": _obj(
                ["parameter", "name", "key"],
                {"parameter": {"enum": ["username", "password"]}, "name": _STR, "key": _STR})},
        }),
    }),
    # external-secrets.io/v1 ExternalSecret, CRD
    # https://github.com/external-secrets/external-secrets/blob/main/config/crds/bases/external-secrets.io_externalsecrets.yaml
    # (Go types: apis/externalsecrets/v1/externalsecret_types.go): data items require
    # secretKey (pattern ^[-._a-zA-Z0-9]+$) and remoteRef, which requires key;
    # secretStoreRef.name is a DNS subdomain, kind SecretStore|ClusterSecretStore;
    # target.creationPolicy is Owner|Orphan|Merge|None. The chart always sets the store and
    # the target name, and data or dataFrom.
    "ExternalSecret": _obj(["apiVersion", "kind", "metadata", "spec"], {
        "apiVersion": {"const": "external-secrets.io/v1"},
        "spec": {**_obj(["secretStoreRef", "target"], {
            "refreshInterval": {"type": "string",
                                "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
            "secretStoreRef": _obj(["name"], {
                "name": _DNS_NAME, "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}}),
            "target": _obj(["name"], {
                "name": _DNS_NAME,
                "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]}}),
            "data": {"type": "array", "items": _obj(["secretKey", "remoteRef"], {
                "secretKey": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"},
                "remoteRef": _obj(["key"], {"key": _STR})})},
            "dataFrom": {"type": "array", "items": {"type": "object", "minProperties": 1}},
        }), "anyOf": [{"required": ["data"]}, {"required": ["dataFrom"]}]},
    }),
    # monitoring.coreos.com/v1 ServiceMonitor, CRD
    # https://github.com/prometheus-operator/prometheus-operator/blob/main/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
    # (Go types: pkg/apis/monitoring/v1/servicemonitor_types.go): spec requires selector;
    # endpoints name a Service port by name.
    "ServiceMonitor": _obj(["apiVersion", "kind", "metadata", "spec"], {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": _obj(["selector", "endpoints"], {
            "selector": _LABEL_SELECTOR,
            "endpoints": {"type": "array", "minItems": 1,
                          "items": _obj(["port"], {"port": _STR, "path": _STR})},
        }),
    }),
    # monitoring.coreos.com/v1 PodMonitor, CRD
    # https://github.com/prometheus-operator/prometheus-operator/blob/main/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
    # (Go types: pkg/apis/monitoring/v1/podmonitor_types.go): spec requires selector;
    # podMetricsEndpoints name a container port by name; scheme http|https.
    "PodMonitor": _obj(["apiVersion", "kind", "metadata", "spec"], {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": _obj(["selector", "podMetricsEndpoints"], {
            "selector": _LABEL_SELECTOR,
            "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                    "items": _obj(["port"], {"port": _STR, "path": _STR})},
        }),
    }),
}


def crd_errors(doc: Doc) -> list[str]:
    validator = jsonschema.Draft7Validator(CRD_REQUIRED[doc["kind"]])
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_custom_resources_meet_crd_schema(chart: helm.Chart) -> None:
    docs = [d for d in render(chart, CASES["all-on"]) if d["kind"] in CUSTOM_KINDS]
    assert {d["kind"] for d in docs} == CUSTOM_KINDS
    for doc in docs:
        assert crd_errors(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"


def test_crd_check_can_fail(chart: helm.Chart) -> None:
    docs = render(chart, CASES["all-on"])
    scaled = one(docs, "ScaledObject", f"{RELEASE}-switchboard-worker")
    scaled["spec"]["triggers"][0]["metadata"]["lagCount"] = 10  # not a string
    del scaled["spec"]["scaleTargetRef"]
    assert len(crd_errors(scaled)) == 2
    external = one(docs, "ExternalSecret", f"{RELEASE}-switchboard")
    external["spec"]["data"][0]["secretKey"] = "not a key"
    assert crd_errors(external)


# --- KEDA on the real inbox -----------------------------------------------------------------

def _keda_values(prefix: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {"worker": {"keda": {"enabled": True, "address": "redis:6379"}}}
    if prefix is not None:
        values["config"] = {"BOT_KEY_PREFIX": prefix}
    return values


@pytest.mark.parametrize("prefix", [None, "acme.prod-2"])
def test_keda_trigger_names_the_inbox_stream_and_group(chart: helm.Chart,
                                                       prefix: str | None) -> None:
    default_prefix = Settings.model_fields["bot_key_prefix"].default
    assert chart.values["config"]["BOT_KEY_PREFIX"] == default_prefix
    docs = render(chart, _keda_values(prefix))
    scaled = one(docs, "ScaledObject", f"{RELEASE}-switchboard-worker")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis-streams"
    assert meta["stream"] == Keys(prefix or default_prefix).inbox()
    assert meta["consumerGroup"] == GROUP
    # lag mode (XINFO GROUPS): lagCount set, the pending-entries and length modes not
    assert int(meta["lagCount"]) > 0
    assert "pendingEntriesCount" not in meta and "streamLength" not in meta
    assert meta["address"] == "redis:6379"
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-switchboard-worker"
    # KEDA owns the worker's replica count
    assert "replicas" not in deployments(docs)["worker"]["spec"]
    assert "HorizontalPodAutoscaler" not in kinds(docs)


@pytest.mark.parametrize("job", [True, False])
def test_pods_migrate_only_without_the_hook_job(chart: helm.Chart, job: bool) -> None:
    """The hook Job migrates and the pods do not; with the Job off the pods must."""
    docs = render(chart, {"migrations": {"enabled": job}})
    assert ("Job" in kinds(docs)) is job
    for name, deployment in deployments(docs).items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert env_of(container)["BOT_MIGRATE_ON_START"] == ("false" if job else "true"), name


def test_keda_can_scale_to_zero(chart: helm.Chart) -> None:
    values = _keda_values(None)
    values["worker"]["keda"]["minReplicaCount"] = 0
    scaled = one(render(chart, values), "ScaledObject", f"{RELEASE}-switchboard-worker")
    assert scaled["spec"]["minReplicaCount"] == 0


# --- values.schema.json ---------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    {"replicas": 3},                                          # top level: web/worker.replicas
    {"worker": {"replica": 3}},
    {"web": {"resource": {}}},
    {"imgae": {"tag": "1"}},
    {"ingress": {"enable": True}},
    {"metrics": {"serviceMonitor": {"enabeld": True}}},
    {"secrets": {"existingSecrets": "x"}},
    {"worker": {"keda": {"lagcount": 5}}},
    {"config": {"bot_key_prefix": "x"}},                      # settings are upper case
    {"config": {"BOT_KEY_PREFX": "x"}},                       # not a setting
    {"config": {"DATABASE_URL": "postgresql://u:p@h/db"}},    # secrets never in a ConfigMap
    {"config": {"BOT_HTTP_PORT": "9000"}},                    # set by the chart
    {"config": {"BOT_KEY_PREFIX": "has space"}},
    {"worker": {"keda": {"enabled": True}}},                  # no Redis address
    {"worker": {"keda": {"enabled": True, "address": "r:6379"}, "hpa": {"enabled": True}}},
    {"secrets": {"externalSecret": {"enabled": True}}},       # no store, no data
    {"worker": {"pdb": {"maxUnavailable": 0}}},               # would block node drains
    {"web": {"pdb": {"maxUnavailable": "0%"}}},
])
def test_schema_rejects(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE)


def _env_example() -> list[tuple[str, bool]]:
    """(name, marked SECRET) for every variable of deploy/env.example."""
    found: list[tuple[str, bool]] = []
    block: list[str] = []
    after_variable = False
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        variable = re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=", line)
        if variable:
            found.append((variable[1], bool(re.search(r"\bSECRET\b", " ".join(block)))))
            after_variable = True
        elif line.startswith("#"):
            block = [line] if after_variable else [*block, line]
            after_variable = False
        else:
            block, after_variable = [], False
    return found


def test_config_accepts_exactly_the_non_secret_settings(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    accepted = set(schema["properties"]["config"]["propertyNames"]["enum"])
    secret = {name.upper() for name, field in Settings.model_fields.items()
              if "SecretStr" in repr(field.annotation)}
    settings = {name.upper() for name in Settings.model_fields}
    assert accepted == settings - secret - CHART_MANAGED_ENV
    example = _env_example()
    assert {name for name, _ in example} <= settings
    assert {name for name, marked in example if marked} <= secret
    assert set(chart.values["config"]) <= accepted


# --- what the pods get ----------------------------------------------------------------------

def _pod_specs(docs: list[Doc]) -> dict[str, Doc]:
    specs = {name: d["spec"]["template"]["spec"] for name, d in deployments(docs).items()}
    (job,) = [d for d in docs if d["kind"] == "Job"]
    specs["migrate"] = job["spec"]["template"]["spec"]
    return specs


@pytest.mark.parametrize("case", sorted(CASES))
def test_pods_are_locked_down(chart: helm.Chart, case: str) -> None:
    for name, spec in _pod_specs(render(chart, CASES[case])).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for path in ("/tmp", "/data"):
            assert "emptyDir" in volumes[mounts[path]], (name, path)
        env = env_of(container)
        assert env["BOT_DATA_DIR"] == "/data" and env["BOT_MIGRATE_ON_START"] == "false", name
        assert "resources" in container and container["resources"]["requests"], name


def test_tiers_run_their_commands_with_probes(chart: helm.Chart) -> None:
    tiers = deployments(render(chart, {}))
    assert set(tiers) == {"web", "worker"}
    expected_args = {"web": ["run", "--workers", "0"], "worker": ["worker"]}
    for name, deployment in tiers.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == expected_args[name]
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        env = env_of(container)
        assert env["BOT_HTTP_HOST"] == ALL_INTERFACES and env["BOT_HTTP_PORT"] == "8080"
        assert env["BOT_METRICS_PORT"] == "8080"
        for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                            ("readinessProbe", "/health/ready")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, (name, probe)
        startup = container["startupProbe"]
        # the embedding model loads at start: minutes before liveness applies
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    worker_env = env_of(tiers["worker"]["spec"]["template"]["spec"]["containers"][0])
    assert worker_env["BOT_CONCURRENCY"] == "16"


@pytest.mark.parametrize("grace", [None, "120", "7.5"])
def test_termination_grace_exceeds_shutdown_grace(chart: helm.Chart, grace: str | None) -> None:
    values = {} if grace is None else {"config": {"BOT_SHUTDOWN_GRACE_S": grace}}
    docs = render(chart, values)
    configured = float(grace or chart.values["config"]["BOT_SHUTDOWN_GRACE_S"])
    for name, deployment in deployments(docs).items():
        period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period > configured, name
    web = deployments(docs)["web"]["spec"]["template"]["spec"]
    sleep = web["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert web["terminationGracePeriodSeconds"] > configured + sleep


def test_config_changes_roll_the_pods(chart: helm.Chart) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {name: d["spec"]["template"]["metadata"]["annotations"]
                for name, d in deployments(render(chart, values)).items()}

    base = checksums({})
    changed = checksums({"config": {"BOT_LOG_LEVEL": "DEBUG"}})
    files = checksums({"files": {"guardrails.toml": "[input]\n"}})
    for tier in ("web", "worker"):
        assert base[tier]["checksum/config"] != changed[tier]["checksum/config"]
        assert base[tier]["checksum/config"] != files[tier]["checksum/config"]
    es = {"secrets": {"externalSecret": {"enabled": True, "secretStoreRef": {"name": "vault"},
                                         "dataFrom": [{"extract": {"key": "a"}}]}}}
    es2 = json.loads(json.dumps(es))
    es2["secrets"]["externalSecret"]["dataFrom"][0]["extract"]["key"] = "b"
    assert (checksums(es)["worker"]["checksum/secret"]
            != checksums(es2)["worker"]["checksum/secret"])


def test_pods_read_the_configmap_and_secret(chart: helm.Chart) -> None:
    docs = render(chart, {"secrets": {"existingSecret": "bot-env"}})
    configmap = one(docs, "ConfigMap", f"{RELEASE}-switchboard")
    assert configmap["data"]["BOT_KEY_PREFIX"] == "sb"
    for name, deployment in deployments(docs).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [
            {"configMapRef": {"name": f"{RELEASE}-switchboard"}},
            {"secretRef": {"name": "bot-env"}}], name


# --- the migration hook ---------------------------------------------------------------------

def _hook(doc: Doc) -> tuple[set[str], int]:
    annotations = doc["metadata"].get("annotations", {})
    events = set(filter(None, annotations.get("helm.sh/hook", "").split(",")))
    return events, int(annotations.get("helm.sh/hook-weight", "0"))


@pytest.mark.parametrize("case", ["default", "all-on"])
def test_migration_job_is_a_hook_with_its_own_inputs(chart: helm.Chart, case: str) -> None:
    docs = render(chart, CASES[case])
    job = one(docs, "Job", f"{RELEASE}-switchboard-migrate")
    events, job_weight = _hook(job)
    assert events == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"] and pod["restartPolicy"] == "Never"
    # at pre-install only hooks of a lower weight exist: every input must be one, or the
    # existing Secret
    hooks = {(d["kind"], d["metadata"]["name"]): _hook(d) for d in docs if _hook(d)[0]}
    configmap = container["envFrom"][0]["configMapRef"]["name"]
    events, weight = hooks[("ConfigMap", configmap)]
    assert events >= {"pre-install", "pre-upgrade"} and weight < job_weight
    secret = container["envFrom"][1]["secretRef"]["name"]
    if case == "default":
        assert secret == f"{RELEASE}-switchboard-secrets"
    else:
        (external,) = [d for d in docs if d["kind"] == "ExternalSecret"
                       and d["spec"]["target"]["name"] == secret]
        events, weight = _hook(external)
        assert events >= {"pre-install", "pre-upgrade"} and weight < job_weight
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in hooks
    # the chart's ServiceAccount is not there yet at pre-install
    assert "serviceAccountName" not in pod


# --- exposure -------------------------------------------------------------------------------

def test_ingress_exposes_only_the_webhooks(chart: helm.Chart) -> None:
    docs = render(chart, CASES["all-on"])
    ingress = one(docs, "Ingress", f"{RELEASE}-switchboard")
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"]: p["pathType"] for p in rule["http"]["paths"]}
    assert paths == {"/webhooks/": "Prefix", "/slack/events": "Exact",
                     "/telegram/webhook": "Exact", "/discord/interactions": "Exact"}
    backends = {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert backends == {f"{RELEASE}-switchboard-web"}


def test_monitors_scrape_metrics_on_both_tiers(chart: helm.Chart) -> None:
    docs = render(chart, CASES["all-on"])
    services = [d for d in docs if d["kind"] == "Service"]
    monitor = one(docs, "ServiceMonitor", f"{RELEASE}-switchboard")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {s["metadata"]["name"] for s in services
                if selector.items() <= s["metadata"]["labels"].items()}
    assert selected == {f"{RELEASE}-switchboard-web", f"{RELEASE}-switchboard-worker"}
    assert monitor["spec"]["endpoints"][0] == {**monitor["spec"]["endpoints"][0],
                                               "port": "http", "path": "/metrics"}
    pods = one(docs, "PodMonitor", f"{RELEASE}-switchboard")
    assert pods["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_disruption_budgets_cover_each_tier(chart: helm.Chart) -> None:
    docs = render(chart, {})
    tiers = deployments(docs)
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        template_labels = tiers[component]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        tiers.pop(component)
    assert tiers == {}
