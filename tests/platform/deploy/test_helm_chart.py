"""The ofsre-platform Helm chart, rendered by Helm's own engine and checked offline.

Every manifest of every scenario below is validated against the vendored Kubernetes and
prometheus-operator JSON Schemas; the other tests check what a schema cannot: that each
module has its five objects, that selectors, ports and names line up, that the HPA behaviour
is the one ``ofsre.platform.runtime.hpa`` models, and that the environment the pods get is
what the platform's own settings readers understand.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import pytest

import ofsre
from ofsre.exporters import SHIPPERS
from ofsre.platform.queue import BACKENDS, QueueConfig
from ofsre.platform.runtime.hpa import CPU, DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, MEMORY, ScalingRules
from ofsre.platform.settings import SERVICES, Settings, parse_upstreams

# Values that switch on every optional branch of the templates.
EVERYTHING: dict[str, Any] = {
    "image": {"repository": "registry.example/ofsre", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountName": "ofsre-platform",
    "commit": "abc1234",
    "queue": {
        "backend": "sqs",
        "settings": {"sqs": {"OFSRE_QUEUE_REGION": "sa-east-1", "OFSRE_QUEUE_NAME_PREFIX": "ofsre-",
                             "OFSRE_QUEUE_AUTO_CREATE": "false", "OFSRE_QUEUE_MAX_ATTEMPTS": 7},
                     "kafka": {"OFSRE_QUEUE_KAFKA_BOOTSTRAP": "kafka:9092"}},
        "secretEnv": {"AWS_SECRET_ACCESS_KEY": {"secret": "aws", "key": "secret"}},
    },
    "logShipper": {
        "type": "loki",
        "settings": {"loki": {"OFSRE_LOKI_URL": "http://loki:3100"},
                     "datadog": {"OFSRE_DATADOG_URL": "http://dd"}},
        "secretEnv": {"OFSRE_LOKI_PASSWORD": {"secret": "loki", "key": "password"}},
    },
    "otel": {"endpoint": "http://otel-collector.monitoring:4318"},
    "env": {"OFSRE_DB_POOL_SIZE": 5},
    "modules": {"worker": {"autoscaling": {"enabled": False}}},
    "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
    "jws": {"keySecret": "payments-jws", "keySecretKey": "key.json", "jwksConfigMap": "participants-jwks"},
}
LONGEST_RELEASE = "r" * 53  # Helm's maximum release name length
SCENARIOS = {
    "defaults": ({}, "ofsre"),
    "everything": (EVERYTHING, "ofsre"),
    "longest-release-name": ({}, LONGEST_RELEASE),
}


def _k8s_rules(rules: ScalingRules) -> dict[str, Any]:
    """A :class:`ScalingRules` as ``spec.behavior.scaleUp``/``scaleDown`` YAML would write it."""
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_seconds,
        "selectPolicy": rules.select_policy,
        "policies": [{"type": p.type, "value": p.value, "periodSeconds": p.period_seconds}
                     for p in rules.policies],
    }


DEFAULT_BEHAVIOR = {"scaleUp": _k8s_rules(DEFAULT_SCALE_UP), "scaleDown": _k8s_rules(DEFAULT_SCALE_DOWN)}


@pytest.fixture(scope="module")
def everything(chart):
    return chart.render(EVERYTHING)


# --------------------------------------------------------------------------- validity


def test_chart_passes_helm_lint_in_strict_mode(chart):
    report = helm.lint(chart.CHART_DIR, strict=True, kube_version="v1.32.2")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2 warning, 3 error


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_manifest_validates_against_its_schema(chart, scenario):
    values, release = SCENARIOS[scenario]
    rendered = chart.render(values, release=release)
    assert rendered, "the chart rendered nothing"
    errors = [error for manifest in rendered for error in chart.schema_errors(manifest)]
    assert errors == []


def test_schema_check_rejects_what_kubernetes_would(chart):
    deployment = next(m for m in chart.default if m.kind == "Deployment")
    broken = type(deployment)(deployment.template,
                              {**deployment.doc, "spec": {**deployment.doc["spec"], "replica": 2}})
    assert any("replica" in e for e in chart.schema_errors(broken))
    unknown = type(deployment)("x.yaml", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s"}})
    assert chart.schema_errors(unknown) == ["x.yaml: Pod/s: kind has no schema in KINDS"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_names_fit_in_63_characters_and_stay_distinct(chart, scenario):
    values, release = SCENARIOS[scenario]
    rendered = chart.render(values, release=release)
    for kind in {m.kind for m in rendered}:
        names = [m.name for m in rendered if m.kind == kind]
        assert len(names) == len(set(names)), f"{kind}: {names}"
    for m in rendered:
        assert len(m.name) <= 63 and m.name.endswith(f"-{m.component}"), m.name


# --------------------------------------------------------------------------- shape


def test_the_modules_are_the_services_the_runner_knows(chart):
    assert set(chart.values["modules"]) == set(SERVICES)


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                  "ServiceMonitor"])
def test_every_module_has_one_object_of_each_kind(chart, kind):
    assert kind in chart.MODULE_KINDS
    assert sorted(chart.default.of_kind(kind)) == sorted(SERVICES)
    assert len([m for m in chart.default if m.kind == kind]) == len(SERVICES)


def test_selectors_ports_and_targets_line_up(chart):
    r = chart.default
    services, monitors = r.of_kind("Service"), r.of_kind("ServiceMonitor")
    hpas, pdbs = r.of_kind("HorizontalPodAutoscaler"), r.of_kind("PodDisruptionBudget")
    for module, deployment in r.of_kind("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert services[module]["spec"]["selector"] == selector
        assert pdbs[module]["spec"]["selector"]["matchLabels"] == selector
        assert hpas[module]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
        # The ServiceMonitor selects the Service and scrapes a port the Service has, which
        # forwards to a port the container declares.
        service = services[module]
        monitor = monitors[module]["spec"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["namespaceSelector"] == {"matchNames": [chart.NAMESPACE]}
        [port] = service["spec"]["ports"]
        assert [e["port"] for e in monitor["endpoints"]] == [port["name"]]
        assert monitor["endpoints"][0]["path"] == "/metrics"
        [container] = chart.pod_spec(deployment)["containers"]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_containers_run_the_platform_runner_on_the_container_port(chart):
    port = chart.values["containerPort"]
    for module, deployment in chart.default.of_kind("Deployment").items():
        [container] = chart.pod_spec(deployment)["containers"]
        assert container["command"] + container["args"] == [
            "python", "-m", "ofsre.platform.run", module, "--host", "0.0.0.0", "--port", str(port)]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]


def test_probes_hit_healthz_for_liveness_and_readyz_for_readiness(chart):
    for deployment in chart.default.of_kind("Deployment").values():
        [container] = chart.pod_spec(deployment)["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_every_container_has_requests_and_limits(chart, everything):
    for r in (chart.default, everything):
        for m in r:
            if m.kind in ("Deployment", "Job"):
                for container in chart.pod_spec(m.doc)["containers"]:
                    assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), m.name
                    assert "memory" in container["resources"]["limits"], m.name


def test_pods_run_locked_down_with_writable_tmp_and_data_dir(chart):
    data_dir = chart.values["dataDir"]
    for m in chart.default:
        if m.kind not in ("Deployment", "Job"):
            continue
        spec = chart.pod_spec(m.doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert {"/tmp", data_dir} <= mounts.keys()
            assert all("emptyDir" in volumes[mounts[path]] for path in ("/tmp", data_dir))
            assert chart.plain_env(container)["OFSRE_DATA_DIR"] == data_dir
            assert "PROMETHEUS_MULTIPROC_DIR" not in chart.container_env(container)  # one process per pod


def test_payments_reads_its_signing_keys_from_read_only_mounts(chart, everything):
    """values.jws: the platform's private JWK from the Secret, the participants' JWKS from the ConfigMap,
    read-only, for payments alone; the paths the pod gets are the ones ofsre.platform.jws reads."""
    from pathlib import PurePosixPath

    from ofsre.platform.jws import JwsConfig

    deployments = everything.of_kind("Deployment")
    spec = chart.pod_spec(deployments["payments"])
    [payments] = spec["containers"]
    config = JwsConfig.from_env(chart.plain_env(payments))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in payments["volumeMounts"]}
    key, jwks = mounts["jws-key"], mounts["jwks"]
    assert key["readOnly"] is True and jwks["readOnly"] is True
    assert PurePosixPath(config.key_file) == PurePosixPath(key["mountPath"]) / "key.json"
    assert volumes["jws-key"]["secret"]["secretName"] == "payments-jws"
    assert volumes["jws-key"]["secret"]["items"] == [{"key": "key.json", "path": "key.json"}]
    assert volumes["jws-key"]["secret"]["defaultMode"] == 0o440   # the pod's fsGroup reads it, no one else
    assert PurePosixPath(config.jwks_dir) == PurePosixPath(jwks["mountPath"])
    assert volumes["jwks"]["configMap"]["name"] == "participants-jwks"
    for name, deployment in deployments.items():   # nobody else gets them
        if name != "payments":
            [container] = chart.pod_spec(deployment)["containers"]
            assert not {"OFSRE_JWS_KEY_FILE", "OFSRE_JWKS_DIR"} & chart.container_env(container).keys()
            assert not {"jws-key", "jwks"} & {v["name"] for v in chart.pod_spec(deployment)["volumes"]}
    # Defaults: no mounts; the key and the JWKS live in the pod's writable data dir.
    [default] = chart.pod_spec(chart.default.of_kind("Deployment")["payments"])["containers"]
    config = JwsConfig.from_env(chart.plain_env(default))
    assert str(config.jwks_dir).startswith(chart.values["dataDir"] + "/")
    assert {m["name"] for m in default["volumeMounts"]} == {"tmp", "data"}


def test_shutdown_fits_in_the_termination_grace_period(chart):
    """preStop sleep, then the app's own drain (Settings.shutdown_timeout_s), before SIGKILL."""
    budget = chart.values["preStopSleepSeconds"] + Settings().shutdown_timeout_s
    for deployment in chart.default.of_kind("Deployment").values():
        spec = chart.pod_spec(deployment)
        assert spec["terminationGracePeriodSeconds"] > budget
        [container] = spec["containers"]
        sleep = chart.values["preStopSleepSeconds"]
        assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": sleep}}


def test_chart_app_version_is_the_package_version(chart):
    with helm.Chart.load(chart.CHART_DIR) as loaded:
        assert loaded.metadata["appVersion"] == ofsre.__version__
    images = {c["image"] for m in chart.default if m.kind in ("Deployment", "Job")
              for c in chart.pod_spec(m.doc)["containers"]}
    assert images == {f"{chart.values['image']['repository']}:{ofsre.__version__}"}


# --------------------------------------------------------------------------- autoscaling


def test_hpas_scale_on_cpu_and_memory_utilisation(chart):
    for module, hpa in chart.default.of_kind("HorizontalPodAutoscaler").items():
        autoscaling = chart.values["modules"][module]["autoscaling"]
        targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
        assert targets == {
            CPU: {"type": "Utilization", "averageUtilization": autoscaling["targetCPUUtilizationPercentage"]},
            MEMORY: {"type": "Utilization",
                     "averageUtilization": autoscaling["targetMemoryUtilizationPercentage"]},
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_hpa_behavior_is_explicit_and_equals_the_kubernetes_defaults(chart):
    """values.yaml writes the defaults out; they must be the ones ofsre.platform.runtime.hpa models."""
    for module, settings in chart.values["modules"].items():
        assert settings["autoscaling"]["behavior"] == DEFAULT_BEHAVIOR, module
    for hpa in chart.default.of_kind("HorizontalPodAutoscaler").values():
        assert hpa["spec"]["behavior"] == DEFAULT_BEHAVIOR


def test_the_hpa_owns_the_replica_count(chart, everything):
    for deployment in chart.default.of_kind("Deployment").values():
        assert "replicas" not in deployment["spec"]  # an upgrade must not reset what the HPA chose
    # worker's autoscaling is off in EVERYTHING: a fixed count and no HPA.
    assert "worker" not in everything.of_kind("HorizontalPodAutoscaler")
    assert everything.of_kind("Deployment")["worker"]["spec"]["replicas"] == chart.values["replicas"]


def test_min_replicas_above_max_fails_the_render(chart):
    with pytest.raises(helm.HelmRenderError, match="minReplicas > maxReplicas"):
        chart.render({"modules": {"payments": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}})


# --------------------------------------------------------------------------- configuration


def test_gateway_upstreams_point_at_each_upstream_module_service(chart):
    r = chart.default
    services = r.of_kind("Service")
    [gateway] = chart.pod_spec(r.of_kind("Deployment")["gateway"])["containers"]
    upstreams = parse_upstreams(chart.plain_env(gateway)["OFSRE_UPSTREAMS"])
    expected = {name for name, m in chart.values["modules"].items() if m["upstream"]}
    assert set(upstreams) == expected == {"consents", "accounts", "payments"}
    for module, urls in upstreams.items():
        [url] = urls
        parts = urlsplit(url)
        service = services[module]
        assert parts.hostname == f"{service['metadata']['name']}.{chart.NAMESPACE}.svc"
        assert parts.port == service["spec"]["ports"][0]["port"]
    for module, deployment in r.of_kind("Deployment").items():
        if module != "gateway":
            [container] = chart.pod_spec(deployment)["containers"]
            assert "OFSRE_UPSTREAMS" not in chart.container_env(container)


def test_database_url_comes_only_from_the_secret(chart):
    secret = {"name": chart.values["database"]["existingSecret"],
              "key": chart.values["database"]["secretKey"]}
    for m in chart.default:
        if m.kind in ("Deployment", "Job"):
            for container in chart.pod_spec(m.doc)["containers"]:
                env = chart.container_env(container)
                assert env["OFSRE_DATABASE_URL"] == {"name": "OFSRE_DATABASE_URL",
                                                     "valueFrom": {"secretKeyRef": secret}}
                assert not any("postgresql" in v for v in chart.plain_env(container).values())


def test_pod_environment_is_what_the_platform_settings_read(chart, everything):
    """Feed the rendered env to the real readers: Settings.from_env and QueueConfig.resolve."""
    [payments] = chart.pod_spec(everything.of_kind("Deployment")["payments"])["containers"]
    env = chart.plain_env(payments)
    settings = Settings.from_env(env)
    assert settings.queue_backend == "sqs" and settings.db_pool_size == 5
    assert str(settings.data_dir) == chart.values["dataDir"]
    queue = QueueConfig.resolve(None, environ=env)
    assert (queue.backend, queue.region, queue.name_prefix, queue.auto_create, queue.max_attempts) == (
        "sqs", "sa-east-1", "ofsre-", False, 7)
    assert queue.service == "payments"
    # Only the chosen backend's settings are rendered.
    assert "OFSRE_QUEUE_KAFKA_BOOTSTRAP" not in env
    [default_payments] = chart.pod_spec(chart.default.of_kind("Deployment")["payments"])["containers"]
    assert QueueConfig.resolve(None, environ=chart.plain_env(default_payments)).backend == "db"


def test_log_shipper_otlp_and_secrets_reach_every_pod(chart, everything):
    for m in everything:
        if m.kind not in ("Deployment", "Job"):
            continue
        [container] = chart.pod_spec(m.doc)["containers"]
        env, plain = chart.container_env(container), chart.plain_env(container)
        assert plain["OFSRE_LOG_SHIPPER"] == "loki" and plain["OFSRE_LOKI_URL"] == "http://loki:3100"
        assert "OFSRE_DATADOG_URL" not in env  # only the chosen shipper's settings
        loki_password = env["OFSRE_LOKI_PASSWORD"]["valueFrom"]
        assert loki_password == {"secretKeyRef": {"name": "loki", "key": "password"}}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "aws", "key": "secret"}}
        assert plain["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
        assert (plain["OFSRE_VERSION"], plain["OFSRE_COMMIT"]) == ("1.2.3", "abc1234")
        assert plain["OFSRE_SERVICE"] == m.component
        assert chart.pod_spec(m.doc)["serviceAccountName"] == "ofsre-platform"
    # Defaults: no shipper, no OTLP endpoint (the SDK exports nothing), no commit.
    [gateway] = chart.pod_spec(chart.default.of_kind("Deployment")["gateway"])["containers"]
    plain = chart.plain_env(gateway)
    assert plain["OFSRE_LOG_SHIPPER"] == "none"
    assert not {"OTEL_EXPORTER_OTLP_ENDPOINT", "OFSRE_COMMIT"} & plain.keys()


def test_every_ofsre_variable_the_chart_sets_is_read_by_the_platform(chart, unread_by_platform):
    """With its own settings (not the test's sample backend settings) and a shipper on."""
    rendered = chart.render({"logShipper": {"type": "elastic"}, "migrate": {"enabled": False}})
    names = {name for deployment in rendered.of_kind("Deployment").values()
             for container in chart.pod_spec(deployment)["containers"]
             for name in chart.container_env(container) if name.startswith("OFSRE_")}
    assert {"OFSRE_DATABASE_URL", "OFSRE_UPSTREAMS", "OFSRE_LOG_SPOOL_DIR"} <= names
    assert unread_by_platform(names) == set()


def test_log_spool_lives_in_the_writable_data_dir(chart, everything):
    [worker] = chart.pod_spec(everything.of_kind("Deployment")["worker"])["containers"]
    spool = chart.plain_env(worker)["OFSRE_LOG_SPOOL_DIR"]
    assert spool.startswith(chart.values["dataDir"] + "/")
    data_mounts = tuple(m["mountPath"] + "/" for m in worker["volumeMounts"] if m["name"] == "data")
    assert spool.startswith(data_mounts)


def test_resource_attributes_use_only_variables_defined_before_them(chart):
    """Kubernetes expands $(VAR) only from entries earlier in the list."""
    for deployment in chart.default.of_kind("Deployment").values():
        [container] = chart.pod_spec(deployment)["containers"]
        names = [e["name"] for e in container["env"]]
        attributes = chart.plain_env(container)["OTEL_RESOURCE_ATTRIBUTES"]
        position = names.index("OTEL_RESOURCE_ATTRIBUTES")
        for var in ("K8S_POD_NAME", "K8S_NAMESPACE"):
            assert f"$({var})" in attributes and names.index(var) < position


def test_a_module_env_overrides_the_shared_env_without_duplicates(chart):
    rendered = chart.render({"env": {"OFSRE_LOG_LEVEL": "WARNING"},
                             "modules": {"accounts": {"env": {"OFSRE_LOG_LEVEL": "DEBUG"}}}})
    levels = {}
    for module, deployment in rendered.of_kind("Deployment").items():
        [container] = chart.pod_spec(deployment)["containers"]
        levels[module] = chart.plain_env(container)["OFSRE_LOG_LEVEL"]  # plain_env asserts no duplicates
    assert levels.pop("accounts") == "DEBUG"
    assert set(levels.values()) == {"WARNING"}


def test_every_module_keeps_the_simulation_routes_off(chart):
    for module, deployment in chart.default.of_kind("Deployment").items():
        [container] = chart.pod_spec(deployment)["containers"]
        assert chart.plain_env(container)["OFSRE_SIMULATION_ROUTES"] == "off", module  # said, not defaulted
        assert Settings.from_env(chart.plain_env(container)).simulation_routes is False, module


def test_a_name_both_plain_and_secret_fails_the_render(chart):
    with pytest.raises(helm.HelmRenderError, match="OFSRE_LOKI_PASSWORD is set both"):
        chart.render({"env": {"OFSRE_LOKI_PASSWORD": "oops"},
                      "logShipper": {"type": "loki",
                                     "secretEnv": {"OFSRE_LOKI_PASSWORD": {"secret": "s", "key": "k"}}}})


def test_values_schema_allows_exactly_the_queue_backends_and_log_shippers(chart):
    properties = json.loads((chart.CHART_DIR / "values.schema.json").read_text())["properties"]
    queue, shipper = properties["queue"]["properties"], properties["logShipper"]["properties"]
    assert tuple(queue["backend"]["enum"]) == BACKENDS
    assert set(queue["settings"]["properties"]) == set(BACKENDS)
    assert set(shipper["type"]["enum"]) == {"none", *SHIPPERS}
    assert set(shipper["settings"]["properties"]) == set(SHIPPERS)


@pytest.mark.parametrize("bad", [
    {"queue": {"backend": "rabbitmq"}},
    {"logShipper": {"type": "splunk"}},
    {"env": {"NOT-A-NAME": "x"}},
    {"otel": {"endpoint": "otel:4318"}},
    {"modules": {"gateway": {"autoscaling": {"behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 4000}}}}}},
    {"database": {"existingSecret": ""}},
    {"serviceAcountName": "typo"},  # unknown keys too: a misspelt key would be ignored silently
])
def test_values_schema_rejects_bad_values_before_rendering(chart, bad):
    with pytest.raises(helm.HelmValuesError, match="schema"):
        chart.render(bad)


# --------------------------------------------------------------------------- migrate, monitoring


def test_migrate_job_runs_before_install_and_upgrade(chart):
    [job] = [m.doc for m in chart.default if m.kind == "Job"]
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"].split(",")
    spec = chart.pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    [container] = spec["containers"]
    assert container["command"] == ["python", "-m", "ofsre.platform.run", "migrate"]
    assert "OFSRE_UPSTREAMS" not in chart.container_env(container)
    # Everything the Job needs is inline or in the pre-existing Secret: a pre-install hook
    # runs before any other object of the release exists.
    assert not any("configMapRef" in (e.get("valueFrom") or {}) for e in container["env"])
    assert "envFrom" not in container


def test_disabling_service_monitors_and_migrate_removes_them(chart):
    rendered = chart.render({"serviceMonitor": {"enabled": False}, "migrate": {"enabled": False}})
    assert {"ServiceMonitor", "Job"} <= {m.kind for m in chart.default}
    assert {m.kind for m in rendered} == {m.kind for m in chart.default} - {"ServiceMonitor", "Job"}


def test_service_monitor_labels_let_the_operator_select_them(chart, everything):
    for monitor in everything.of_kind("ServiceMonitor").values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["sampleLimit"] == chart.values["serviceMonitor"]["sampleLimit"]
