"""The cluster definitions: the launcher YAML against Ray's own schema, the KubeRay manifests' structure,
and that every entrypoint, import path, config file and pinned package they name exists."""

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
IMAGE_ROOT = "/home/ray/instructblip-train"  # where cluster/Dockerfile puts the repo


def _load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def _modules(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint.replace("&&", " "))
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]


def test_launcher_yaml_passes_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    gpu_types = [t for t in config["available_node_types"].values() if t["node_config"]["InstanceType"][0] in "pg"]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])  # not on the internet
    # the schema catches what it should: a wrong type fails
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "max_workers": "eight"}, schema)


def _check_group(spec: dict, gpu: bool) -> None:
    containers = spec["template"]["spec"]["containers"]
    assert containers and all(c["image"] for c in containers)
    assert isinstance(spec["rayStartParams"], dict)
    limits = containers[0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == gpu


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == importlib.import_module("ray").__version__
    _check_group(spec["headGroupSpec"], gpu=False)
    groups = spec["workerGroupSpecs"]
    assert groups and all(g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)
    for group in groups:
        _check_group(group, gpu=True)


def test_raycluster_has_cpu_head_and_gpu_workers():
    doc = _load("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster") and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])
    assert doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayjob_runs_the_workflow_and_shuts_down():
    doc = _load("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(spec["rayClusterSpec"])
    modules = _modules(spec["entrypoint"])
    assert modules and all((REPO / (m.replace(".", "/") + ".py")).exists() for m in modules), modules
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == IMAGE_ROOT and "MLFLOW_TRACKING_URI" in runtime_env["env_vars"]
    # the workflow's config file and overrides load (and validate) as the job would load them
    from components.config import load_config
    from components.workflow import WorkflowConfig

    words = shlex.split(spec["entrypoint"])
    config = REPO / words[words.index("--config") + 1]
    cfg = load_config(WorkflowConfig, str(config), [w for w in words if "=" in w and not w.startswith("-")])
    assert cfg.train.scaling.use_gpu and cfg.evaluate.inference.gpus_per_actor == 1


def test_rayservice_serves_the_app_builder_with_a_shipped_config():
    from ray.serve.schema import ServeDeploySchema

    doc = _load("rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    _check_cluster_spec(doc["spec"]["rayClusterConfig"])
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (app,) = serve_config.applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    config_path = app.args["config"]
    assert config_path.startswith(IMAGE_ROOT + "/")
    assert (REPO / config_path.removeprefix(IMAGE_ROOT + "/")).exists()
    from components.config import load_config
    from components.serving_model import ServeConfig

    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in app.args.items() if k != "config"]
    cfg = load_config(ServeConfig, str(REPO / "configs/serve.yaml"), overrides)
    assert cfg.deployment.gpus_per_replica == 1 and cfg.deployment.autoscaling.enabled


def test_the_haproxy_rayservice_is_the_rayservice_with_the_switches(monkeypatch):
    """rayservice-haproxy.yaml = rayservice.yaml + HAPROXY_FLAGS in every container + ingress haproxy;
    its app builds with those switches in the environment and is refused without them."""
    from components.config import ConfigError
    from pipelines.serve import HAPROXY_FLAGS, app_builder

    plain, fast = _load("rayservice.yaml"), _load("rayservice-haproxy.yaml")
    cluster = fast["spec"]["rayClusterConfig"]
    containers = [*cluster["headGroupSpec"]["template"]["spec"]["containers"],
                  *(c for group in cluster["workerGroupSpecs"] for c in group["template"]["spec"]["containers"])]
    assert len(containers) == 2
    for container in containers:
        assert {e["name"]: e["value"] for e in container.pop("env")} == HAPROXY_FLAGS
    serve_config = yaml.safe_load(fast["spec"].pop("serveConfigV2"))
    (app,) = serve_config["applications"]
    args = dict(app["args"], config=app["args"]["config"].replace(IMAGE_ROOT, str(REPO)))
    for key in HAPROXY_FLAGS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="RAY_SERVE_ENABLE_HA_PROXY=1"):
        app_builder(args)
    for key, value in HAPROXY_FLAGS.items():
        monkeypatch.setenv(key, value)
    assert app_builder(args) is not None
    assert app["args"].pop("deployment.ingress") == "haproxy"
    # the rest is the plain manifest's, but for the name
    assert serve_config == yaml.safe_load(plain["spec"].pop("serveConfigV2"))
    assert fast["metadata"].pop("name") == "instructblip-haproxy" and plain["metadata"].pop("name") == "instructblip"
    assert fast == plain


def test_dockerfile_copies_what_exists_and_pins_every_dependency():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"ARG BASE_IMAGE=(\S+)", text).group(1)
    assert base.startswith("rayproject/ray:" + importlib.import_module("ray").__version__)
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        sources = [w for w in line.split() if not w.startswith("--")][:-1]
        assert all((REPO / s).exists() for s in sources), line
    pinned = {re.split(r"[=<>\s#]", l)[0].lower() for l in (CLUSTER / "requirements.lock").read_text().splitlines()
              if l.strip() and not l.startswith("#")}
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.split(r"[\[=<>!~ ]", d)[0].lower() for d in deps} - {"ray"}  # ray: the base image's
    assert declared <= pinned, declared - pinned
    exact = [l for l in (CLUSTER / "requirements.lock").read_text().splitlines() if "==" in l]
    assert len(exact) >= len(declared)
