"""cluster/: the launcher configs pass Ray's own validation, the KubeRay manifests carry GPUs, the
farm image, shared storage, token auth and a `farm submit` entrypoint, nothing is exposed
publicly, and every pinned version agrees with pyproject.toml."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

import farm

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHER = [CLUSTER / "aws-gpu.yaml", CLUSTER / "gcp-gpu.yaml"]
KUBERAY = CLUSTER / "kuberay"
IMAGE = f"REPLACE_REGISTRY/farm:{farm.__version__}"


def pyproject_pins() -> dict[str, str]:
    """``name -> version`` of every ``name==version`` requirement in pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def launcher(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config_passes_rays_validation(path):
    """`ray up` would accept the config: Ray's own preparation and schema validation (which
    rejects unknown keys) pass."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(launcher(path)))


def test_rays_validation_catches_a_typo():
    """The check above has teeth: a misspelt key fails it."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher(LAUNCHER[0])
    config["available_node_types"]["gpu"]["min_workrs"] = config["available_node_types"]["gpu"].pop("min_workers")
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config_runs_farm_on_gpus_with_token_auth_and_a_private_dashboard(path):
    """Every node runs the farm image with RAY_AUTH_MODE=token and the token file; the GPU node
    type has GPUs; the shared file system is mounted into the containers and is the weights dir
    and jobs root; the dashboard listens on the head's loopback only."""
    config = launcher(path)
    docker = config["docker"]
    assert docker["image"] == IMAGE
    assert {"--env RAY_AUTH_MODE=token", "--volume /mnt/farm:/mnt/farm", "--env FARM_WEIGHTS_DIR=/mnt/farm/weights", "--env FARM_JOBS_ROOT=/mnt/farm/jobs"} <= set(docker["run_options"])
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(config)
    assert "farm models fetch --quiet" in config["head_setup_commands"]
    gpu = config["available_node_types"]["gpu"]["node_config"]
    if config["provider"]["type"] == "aws":
        assert gpu["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "g6e.", "p4d.", "p5."))
    else:
        assert gpu["guestAccelerators"][0]["acceleratorCount"] == 1
        assert {"onHostMaintenance": "TERMINATE"} in gpu["scheduling"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    # farm and its dependencies come from the image only: nothing of pyproject's is reinstalled.
    commands = " ".join(config.get("setup_commands", []) + config["head_setup_commands"] + config.get("worker_setup_commands", []))
    assert not [name for name in pyproject_pins() if re.search(rf"\b{re.escape(name)}[=<>~ ]", commands)]


def kuberay_cluster_specs() -> list[tuple[str, dict]]:
    cluster = yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())
    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"], job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayCluster", "ray.io/v1", "RayJob")
    return [("raycluster.yaml", cluster["spec"]), ("rayjob.yaml", job["spec"]["rayClusterSpec"])]


# Field names of KubeRay's v1 types (ray-operator/apis/ray/v1): the CRD's schema accepts unknown
# fields silently, so a misspelt one would be ignored by the API server.
RAY_CLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs", "authOptions", "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy", "upgradeStrategy"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template", "scaleStrategy", "idleTimeoutSeconds", "suspend"}
RAY_JOB_SPEC = {"entrypoint", "runtimeEnvYAML", "rayClusterSpec", "clusterSelector", "submissionMode", "backoffLimit", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "submitterPodTemplate", "submitterConfig", "jobId", "metadata", "suspend", "deletionStrategy", "managedBy"}


@pytest.mark.parametrize("name,spec", kuberay_cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_cluster_has_gpu_workers_the_image_shared_storage_and_token_auth(name, spec):
    """Each KubeRay cluster: the Ray version of pyproject, token auth from the farm-ray-token
    Secret, a ClusterIP head (no public dashboard), GPU workers with nvidia.com/gpu limits, every
    container running the farm image with the shared volume as weights dir and jobs root."""
    assert set(spec) <= RAY_CLUSTER_SPEC and set(spec["headGroupSpec"]) <= HEAD_GROUP
    assert all(set(group) <= WORKER_GROUP for group in spec["workerGroupSpecs"])
    assert spec["rayVersion"] == pyproject_pins()["ray"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "farm-ray-token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP" and not spec["headGroupSpec"].get("enableIngress")
    [gpu] = spec["workerGroupSpecs"]
    [worker] = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"]["tolerations"]
    for pod in (spec["headGroupSpec"]["template"]["spec"], gpu["template"]["spec"]):
        [container] = pod["containers"]
        assert container["image"] == IMAGE
        assert {"name": "farm-data", "persistentVolumeClaim": {"claimName": "farm-data"}} in pod["volumes"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
        assert {"name": "farm-data", "mountPath": "/data"} in container["volumeMounts"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {"FARM_WEIGHTS_DIR": "/data/weights", "FARM_JOBS_ROOT": "/data/jobs"}


@pytest.mark.parametrize("name,spec", kuberay_cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_rays_kuberay_autoscaler_reads_the_gpu_group(name, spec):
    """Ray's own KubeRay translation sees a head without Ray work and one-GPU worker nodes."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    config = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "farm", "namespace": "default"}, "spec": spec})
    types = config["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert {k: types["gpu"]["resources"][k] for k in ("CPU", "GPU")} == {"CPU": 8, "GPU": 1}
    assert types["gpu"]["min_workers"] == spec["workerGroupSpecs"][0]["minReplicas"] == 2


def test_rayjob_runs_farm_submit_on_shared_storage():
    """The RayJob's entrypoint is a `farm submit` reading and writing the shared volume; its
    cluster goes away when the job ends, and a retry resumes from the jobs root there."""
    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())["spec"]
    assert set(job) <= RAY_JOB_SPEC
    assert job["entrypoint"] == (
        "farm submit /data/in/holiday.mp4 -o /data/out/holiday_x4.mkv --jobs-root /data/jobs --weights-dir /data/weights --quiet"
    )
    assert (job["shutdownAfterJobFinishes"], job["backoffLimit"]) == (True, 2)
    # and farm's CLI accepts it as written
    from farm.cli.main import main

    args = shlex.split(job["entrypoint"])
    ctx = main.commands["submit"].make_context("submit", args[2:])
    assert {k: ctx.params[k] for k in ("inputs", "output", "jobs_root", "weights_dir", "quiet")} == {
        "inputs": ("/data/in/holiday.mp4",),
        "output": "/data/out/holiday_x4.mkv",
        "jobs_root": "/data/jobs",
        "weights_dir": "/data/weights",
        "quiet": True,
    }


def test_shared_volume_and_weights_job():
    """The shared volume is ReadWriteMany (every pod mounts it); the weights Job fetches onto it."""
    pvc = yaml.safe_load((KUBERAY / "storage.yaml").read_text())
    assert (pvc["kind"], pvc["metadata"]["name"], pvc["spec"]["accessModes"]) == ("PersistentVolumeClaim", "farm-data", ["ReadWriteMany"])
    job = yaml.safe_load((KUBERAY / "fetch-weights.yaml").read_text())
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["command"][-1].startswith("farm models fetch --quiet --weights-dir /data/weights")


def test_no_manifest_exposes_anything_publicly():
    """No LoadBalancer or NodePort Service and no Ingress in cluster/kuberay."""
    for path in KUBERAY.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] != "Ingress", path
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", path


def test_dockerfile_pins_match_pyproject():
    """The image installs torch, torchvision and basicsr before farm (as scripts/setup.sh does)
    at exactly pyproject's versions; every other pin in it agrees with pyproject too."""
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    run_lines = " ".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    pinned = {name.lower(): version for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", run_lines)}
    pins = pyproject_pins()
    assert pinned == {name: pins[name] for name in ("torch", "torchvision", "basicsr")}
    assert "--no-build-isolation basicsr==" in dockerfile
    steps = [dockerfile.index(s) for s in ("torch==", "--no-build-isolation basicsr==", 'pip install "/src[s3]"')]
    assert steps == sorted(steps)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[0-9.]+-runtime-ubuntu[0-9.]+$", dockerfile, re.M)


def test_image_tags_are_farms_version():
    """Every config runs the image of this farm version (cluster/README.md builds it)."""
    texts = [p.read_text() for p in LAUNCHER + sorted(KUBERAY.glob("*.yaml"))]
    tags = {tag for text in texts for tag in re.findall(r"REPLACE_REGISTRY/farm:(\S+)", text)}
    assert tags == {farm.__version__}
    assert f"-t REGISTRY/farm:{farm.__version__}" in (CLUSTER / "README.md").read_text()
