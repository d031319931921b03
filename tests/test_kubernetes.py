"""deploy/kubernetes/base: valid against the Kubernetes API schemas (offline), and in agreement
with what ``bff serve`` accepts: its command line, its port, its probe paths, its config file and
the shutdown timing."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.routing import Route

from bff import create_app
from bff.checks import check_files
from bff.cli import parser as bff_parser
from bff.settings import load_settings
from tests.support.processes import BFF_SCRIPT, clean_environ

BASE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "base"
# The oldest Kubernetes the base is meant for (the preStop sleep action is 1.30+), and the newest
# schema the validator knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


def _rendered() -> dict[str, dict[str, Any]]:
    """The resources of the kustomization by kind, with its common labels, as kustomize would."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    labels = kustomization["labels"][0]["pairs"]
    resources: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((BASE / name).read_text()):
            document["metadata"].setdefault("labels", {}).update(labels)
            resources[document["kind"]] = document
    return resources


def test_the_kustomization_lists_every_manifest_once() -> None:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(version: str) -> None:
    resources = _rendered()
    assert set(resources) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for resource in resources.values():
        kubernetes_validate.validate(resource, version, strict=True)


def _container() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _rendered()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_the_command_is_one_bff_serve_accepts_on_the_container_port() -> None:
    _, container = _container()
    assert container["command"] == ["bff"]
    args = bff_parser().parse_args(container["args"])
    assert args.handler.__name__ == "serve"
    assert args.host == "0.0.0.0"
    (port,) = container["ports"]
    assert args.port == port["containerPort"]
    service = _rendered()["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # The config file is the ConfigMap's key, where the ConfigMap is mounted.
    config = Path(args.config)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert str(config.parent) == mounts["config"]
    assert config.name in _rendered()["ConfigMap"]["data"]


def test_the_probes_name_the_gateways_health_endpoints() -> None:
    _, container = _container()
    app = create_app(load_settings(environ=clean_environ()))
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= paths


# The files the config names that come from a Secret, and which Secret. The session key ring has
# its own, so that a rotation (kustomization.yaml) replaces nothing else.
SECRET_FILES = {
    ("oidc", "client_secret_file"): "flows-bff",
    ("internal_jwt", "signing_key_file"): "flows-bff",
    ("sessions", "encryption_keys_file"): "flows-bff-session-keys",
}


def _secret_behind(path: Path) -> tuple[str, str]:
    """(Secret, key) of the file the container sees at ``path``; fails when none is mounted."""
    pod, container = _container()
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert str(path.parent) in mounts, f"{path}: nothing is mounted at {path.parent}"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(path.parent)])
    (item,) = [item for item in volume["secret"]["items"] if item["path"] == path.name]
    return volume["secret"]["secretName"], item["key"]


def test_the_config_loads_with_the_secrets_in_place_and_the_shutdown_fits_the_grace(
    tmp_path: Path,
) -> None:
    pod, container = _container()
    text = _rendered()["ConfigMap"]["data"]["production.toml"]
    path = tmp_path / "production.toml"
    path.write_text(text)
    raw = tomllib.loads(text)
    environ = {"BFF__SESSIONS__REDIS_URL": "redis://redis:6379/0"}
    for (section, key), secret in SECRET_FILES.items():
        named = Path(raw[section][key])
        assert _secret_behind(named) == (secret, named.name), f"[{section}].{key}"
        environ[f"BFF__{section.upper()}__{key.upper()}"] = str(tmp_path / "secrets" / named.name)
    env = {variable["name"] for variable in container["env"]}
    assert env == {"BFF__SESSIONS__REDIS_URL"}

    # The key files as kustomization.yaml makes them (bff keys), the client secret by hand.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "oidc-client-secret").write_text("s\n")
    made = subprocess.run(
        [str(BFF_SCRIPT), "keys", "--config", str(path)],
        env=clean_environ(**environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    settings = load_settings(path, environ=environ)
    check_files(settings)  # the ring and the signing key parse
    assert settings.sessions.backend == "redis"
    assert settings.sessions.encryption_keys_file == environ["BFF__SESSIONS__ENCRYPTION_KEYS_FILE"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + settings.server.shutdown_grace_seconds


def test_the_gateways_user_can_read_the_files_of_its_secrets() -> None:
    pod, _ = _container()
    security = pod["securityContext"]
    secret_volumes = [volume["secret"] for volume in pod["volumes"] if "secret" in volume]
    assert {volume["secretName"] for volume in secret_volumes} == set(SECRET_FILES.values())
    for volume in secret_volumes:
        mode = volume["defaultMode"]
        assert not mode & 0o007, f"{volume['secretName']}: readable by any user of the node"
        # Secret files belong to root and to the pod's fsGroup: the group must be the gateway's.
        assert mode & 0o040 and security["fsGroup"] == security["runAsGroup"], volume


def test_a_disruption_or_a_rollout_never_leaves_no_pod() -> None:
    resources = _rendered()
    deployment = resources["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert resources["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1
    assert resources["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
