"""The deployment files under cluster/: Ray's own schema accepts the launcher configs, and every
file keeps the promises of cluster/README.md (token auth on every node, the dashboard never
exposed, GPU workers that autoscale, the oodstudy image everywhere)."""

import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from study.config import load_sweep_spec
from study.tune.callbacks import STUDY_GAUGES

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
IMAGE = re.compile(r"/oodstudy:[\w.]+$")
# the gauges the study driver publishes (Ray adds the "ray_" prefix when it exports them)
GAUGES = {"ray_" + name for name in STUDY_GAUGES}


def launcher_config(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def manifests(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if doc]


# ---------------------------------------------------------------- ray up launcher configs


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_schema(name):
    # what `ray up` does before it touches the cloud: merge the provider's defaults, validate
    validate_config(prepare_config(launcher_config(name)))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_rays_schema_rejects_a_misspelled_node_type_key(name):
    config = launcher_config(name)
    config["available_node_types"][config["head_node_type"]]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_has_a_cpu_head_and_autoscaling_gpu_workers(name):
    config = launcher_config(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and not head["resources"].get("GPU")
    workers = [t for key, t in types.items() if key != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["min_workers"] == 0 < t["max_workers"] for t in workers)  # scale from zero
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_turns_token_auth_on_for_every_node_and_keeps_the_dashboard_local(name):
    config = launcher_config(name)
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert all("--metrics-export-port=8080" in c for c in starts)
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    # one token file, copied to Ray's default token path on every node
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/oodstudy/auth_token"}


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_runs_the_oodstudy_image(name):
    assert IMAGE.search(launcher_config(name)["docker"]["image"])


# ---------------------------------------------------------------- KubeRay manifests


def ray_cluster_specs() -> list[tuple[str, dict]]:
    (cluster, *_) = manifests("raycluster.yaml")
    (job,) = manifests("rayjob.yaml")
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    return [("raycluster.yaml", cluster["spec"]), ("rayjob.yaml", job["spec"]["rayClusterSpec"])]


@pytest.mark.parametrize("name, spec", ray_cluster_specs())
def test_kuberay_cluster_has_token_auth_and_a_gpu_worker_group(name, spec):
    assert spec["authOptions"] == {"mode": "token"}
    assert tuple(int(x) for x in spec["rayVersion"].split(".")) >= (2, 52)  # token auth needs Ray 2.52
    (gpu_group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    (container,) = gpu_group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_group["minReplicas"] == 0 < gpu_group["maxReplicas"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    images = [c["image"] for g in [head, *spec["workerGroupSpecs"]] for c in g["template"]["spec"]["containers"]]
    assert all(IMAGE.search(image) for image in images)


@pytest.mark.parametrize("name, spec", ray_cluster_specs())
def test_kuberay_dashboard_service_is_not_exposed_outside_the_cluster(name, spec):
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert "headService" not in head  # no hand-written Service that could be a LoadBalancer
    for container in head["template"]["spec"]["containers"]:
        assert all("hostPort" not in port for port in container.get("ports", []))


def test_kuberay_head_accepts_connections_only_from_its_own_pods_and_the_operator():
    cluster, policy = manifests("raycluster.yaml")
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"ray.io/cluster": cluster["metadata"]["name"]}}} in sources


def test_rayjob_entrypoint_is_a_valid_study_with_a_store_that_outlives_the_cluster():
    (job,) = manifests("rayjob.yaml")
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["oodstudy", "run"]
    spec_path = REPO / Path(args[2]).relative_to("/opt/oodstudy")  # the image's copy of the repo
    options = dict(zip(args[3::2], args[4::2]))
    overrides = [v for k, v in zip(args[3::2], args[4::2]) if k == "--set"]
    spec = load_sweep_spec(spec_path, overrides)
    assert options["--store"].startswith("s3://")
    assert spec.optuna_storage.startswith("postgresql://")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


# ---------------------------------------------------------------- container file


def test_dockerfile_builds_the_package_on_the_ray_of_the_manifests():
    lines = (CLUSTER / "Dockerfile").read_text().splitlines()
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    ray_version = re.match(r"rayproject/ray:(\d+\.\d+\.\d+)-", base).group(1)
    assert ray_version == ray.__version__  # the nodes run the Ray that submits to them
    assert {spec["rayVersion"] for _, spec in ray_cluster_specs()} == {ray_version}
    for line in lines:
        if line.startswith("COPY "):
            assert all((REPO / path).exists() for path in line.split()[1:-1]), line
    assert any(line.startswith("RUN pip install") and '".[cluster]"' in line for line in lines)
    assert "ENV RAY_AUTH_MODE=token" in lines


# ---------------------------------------------------------------- Grafana dashboard


def test_grafana_dashboard_plots_every_study_gauge_by_study():
    dashboard = json.loads((CLUSTER / "grafana" / "oodstudy.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bray_oodstudy_\w+", expr)}
    assert used == GAUGES
    assert all('study=~"$study"' in expr for expr in exprs)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["study"]["query"]["query"] == "label_values(ray_oodstudy_cells, study)"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


# ---------------------------------------------------------------- local.sh (no cluster started)


def local_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / "local.sh"), *args], capture_output=True, text=True, timeout=30)


def test_local_sh_parses_and_refuses_bad_commands_with_one_line():
    assert subprocess.run(["bash", "-n", str(CLUSTER / "local.sh")]).returncode == 0
    for args, message in [((), "usage:"), (("start",), "usage:"), (("up", "two"), "whole number")]:
        result = local_sh(*args)
        assert result.returncode == 2, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
