#!/usr/bin/env python
"""Offline checks of the manifests in infra/ (no cluster, no network).

- every YAML file parses (and passes yamllint when it is installed);
- KubeRay objects (ray.io/v1 RayCluster, RayJob): every key is a field of the ray.io/v1 API types
  (ray-operator/apis/ray/v1/raycluster_types.go and rayjob_types.go, KubeRay 1.3-1.5), with the right kind
  of value; rayStartParams values are strings; rayVersion is the same everywhere;
- embedded pod templates and core objects (PersistentVolumeClaim): checked strictly, key by key, against the
  Kubernetes API models of the `kubernetes` Python client (unknown keys and wrong value types are errors,
  quantities must parse);
- with `kubernetes-validate` installed: the core objects, and every pod template inside a KubeRay object (as a
  v1 PodTemplate), strictly against the Kubernetes JSON schemas it ships;
- the Ray cluster launcher config: against Ray's ray-schema.json, then Ray's own prepare/validate.

Run it from a throwaway venv (none of this is a geoseg dependency):

    python -m venv /tmp/k8svenv && /tmp/k8svenv/bin/pip install kubernetes kubernetes-validate pyyaml yamllint \
        "ray[default]"
    /tmp/k8svenv/bin/python infra/check_manifests.py
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parent
KUBE_FILES = sorted((INFRA / "kuberay").glob("*.yaml"))
LAUNCHER_FILE = INFRA / "ray-cluster.yaml"

# ------------------------------------------------------------------ ray.io/v1 fields (KubeRay Go API types)
# Each type: json key -> kind of value: "str", "int", "bool", "float", "map[str]str", "pod" (PodTemplateSpec),
# "service" (a core Service), "resources" (ResourceRequirements), "securityContext", "env" (list of EnvVar),
# "envFrom", "volumeMounts", "[]str", or the name of another type here ("[]Name" for a list of them).
KUBERAY_TYPES: dict[str, dict[str, str]] = {
    "RayJobSpec": {
        "activeDeadlineSeconds": "int",
        "backoffLimit": "int",
        "rayClusterSpec": "RayClusterSpec",
        "submitterPodTemplate": "pod",
        "metadata": "map[str]str",
        "clusterSelector": "map[str]str",
        "submitterConfig": "SubmitterConfig",
        "managedBy": "str",
        "deletionPolicy": "str",
        "entrypoint": "str",
        "runtimeEnvYAML": "str",
        "jobId": "str",
        "submissionMode": "str",
        "entrypointResources": "str",
        "entrypointNumCpus": "float",
        "entrypointNumGpus": "float",
        "ttlSecondsAfterFinished": "int",
        "shutdownAfterJobFinishes": "bool",
        "suspend": "bool",
    },
    "SubmitterConfig": {"backoffLimit": "int"},
    "RayClusterSpec": {
        "suspend": "bool",
        "managedBy": "str",
        "autoscalerOptions": "AutoscalerOptions",
        "headServiceAnnotations": "map[str]str",
        "enableInTreeAutoscaling": "bool",
        "gcsFaultToleranceOptions": "GcsFaultToleranceOptions",
        "headGroupSpec": "HeadGroupSpec",
        "rayVersion": "str",
        "workerGroupSpecs": "[]WorkerGroupSpec",
    },
    "GcsFaultToleranceOptions": {
        "redisUsername": "object",
        "redisPassword": "object",
        "externalStorageNamespace": "str",
        "redisAddress": "str",
    },
    "HeadGroupSpec": {
        "template": "pod",
        "headService": "service",
        "enableIngress": "bool",
        "rayStartParams": "map[str]str",
        "serviceType": "str",
    },
    "WorkerGroupSpec": {
        "suspend": "bool",
        "groupName": "str",
        "replicas": "int",
        "minReplicas": "int",
        "maxReplicas": "int",
        "idleTimeoutSeconds": "int",
        "rayStartParams": "map[str]str",
        "template": "pod",
        "scaleStrategy": "ScaleStrategy",
        "numOfHosts": "int",
    },
    "ScaleStrategy": {"workersToDelete": "[]str"},
    "AutoscalerOptions": {
        "resources": "resources",
        "image": "str",
        "imagePullPolicy": "str",
        "securityContext": "securityContext",
        "idleTimeoutSeconds": "int",
        "upscalingMode": "str",
        "env": "env",
        "envFrom": "envFrom",
        "volumeMounts": "volumeMounts",
    },
}
REQUIRED = {
    "RayClusterSpec": {"headGroupSpec"},
    "HeadGroupSpec": {"template", "rayStartParams"},
    "WorkerGroupSpec": {"groupName", "template", "rayStartParams", "minReplicas", "maxReplicas"},
}
ENUMS = {
    ("RayJobSpec", "submissionMode"): {"K8sJobMode", "HTTPMode", "InteractiveMode"},
    ("RayJobSpec", "deletionPolicy"): {"DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"},
    ("AutoscalerOptions", "upscalingMode"): {"Default", "Aggressive", "Conservative"},
    ("AutoscalerOptions", "imagePullPolicy"): {"Always", "IfNotPresent", "Never"},
    ("HeadGroupSpec", "serviceType"): {"ClusterIP", "NodePort", "LoadBalancer"},
}
# kinds of value that are Kubernetes core types, checked with the client's models
CORE_KINDS = {
    "pod": "V1PodTemplateSpec",
    "service": "V1Service",
    "resources": "V1ResourceRequirements",
    "securityContext": "V1SecurityContext",
    "env": "List[V1EnvVar]",
    "envFrom": "List[V1EnvFromSource]",
    "volumeMounts": "List[V1VolumeMount]",
}
CORE_OBJECTS = {("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim", ("v1", "Pod"): "V1Pod"}


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        import kubernetes.client as k8s  # optional tool dependency

        self.k8s = k8s
        from kubernetes.utils.quantity import parse_quantity

        self.parse_quantity = parse_quantity

    def error(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    # ---------------------------------------------------------------- Kubernetes core types (client models)
    def core(self, value: Any, type_name: str, where: str) -> None:
        m = re.fullmatch(r"[Ll]ist\[(.+)\]", type_name)
        if m:
            if not isinstance(value, list):
                return self.error(where, f"expected a list ({type_name}), got {type(value).__name__}")
            for i, item in enumerate(value):
                self.core(item, m.group(1), f"{where}[{i}]")
            return None
        m = re.fullmatch(r"dict\((\w+), (.+)\)|Dict\[(\w+), (.+)\]", type_name)
        if m:
            if not isinstance(value, dict):
                return self.error(where, f"expected a mapping ({type_name}), got {type(value).__name__}")
            for k, v in value.items():
                self.core(v, m.group(2) or m.group(4), f"{where}.{k}")
            return None
        if type_name == "str":
            if not isinstance(value, str):
                self.error(where, f"expected a string, got {type(value).__name__} {value!r}")
            elif where.split(".")[-2:-1] and where.split(".")[-2] in ("limits", "requests"):
                try:
                    self.parse_quantity(value)
                except ValueError:
                    self.error(where, f"not a Kubernetes quantity: {value!r}")
            return None
        if type_name == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                self.error(where, f"expected an integer, got {value!r}")
            return None
        if type_name == "bool":
            if not isinstance(value, bool):
                self.error(where, f"expected true/false, got {value!r}")
            return None
        if type_name == "float":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                self.error(where, f"expected a number, got {value!r}")
            return None
        if type_name in ("object", "datetime", "bytes"):
            return None
        model = getattr(self.k8s, type_name, None)
        if model is None:
            return self.error(where, f"(checker) unknown model {type_name}")
        if not isinstance(value, dict):
            return self.error(where, f"expected a mapping ({type_name}), got {type(value).__name__}")
        json_to_attr = {j: a for a, j in model.attribute_map.items()}
        for key, v in value.items():
            if key not in json_to_attr:
                self.error(f"{where}.{key}", f"unknown field of {type_name}")
                continue
            self.core(v, model.openapi_types[json_to_attr[key]], f"{where}.{key}")
        return None

    # ---------------------------------------------------------------- KubeRay types
    def kuberay(self, value: Any, type_name: str, where: str) -> None:
        if type_name.startswith("[]"):
            if not isinstance(value, list):
                return self.error(where, f"expected a list, got {type(value).__name__}")
            for i, item in enumerate(value):
                self.kuberay(item, type_name[2:], f"{where}[{i}]")
            return None
        fields = KUBERAY_TYPES[type_name]
        if not isinstance(value, dict):
            return self.error(where, f"expected a mapping ({type_name}), got {type(value).__name__}")
        for key in REQUIRED.get(type_name, ()):
            if key not in value:
                self.error(where, f"{type_name} needs `{key}`")
        for key, v in value.items():
            kind = fields.get(key)
            at = f"{where}.{key}"
            if kind is None:
                self.error(at, f"unknown field of {type_name}")
            elif kind in KUBERAY_TYPES or (kind.startswith("[]") and kind[2:] in KUBERAY_TYPES):
                self.kuberay(v, kind, at)
            elif kind in CORE_KINDS:
                self.core(v, CORE_KINDS[kind], at)
            elif kind == "map[str]str":
                if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
                    self.error(at, "expected a mapping of strings (quote numbers and booleans)")
            elif kind == "[]str":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    self.error(at, "expected a list of strings")
            elif kind == "str":
                if not isinstance(v, str):
                    self.error(at, f"expected a string, got {v!r}")
                elif (type_name, key) in ENUMS and v not in ENUMS[(type_name, key)]:
                    self.error(at, f"{v!r} is not one of {sorted(ENUMS[(type_name, key)])}")
            elif kind == "int":
                if not isinstance(v, int) or isinstance(v, bool):
                    self.error(at, f"expected an integer, got {v!r}")
            elif kind == "float":
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    self.error(at, f"expected a number, got {v!r}")
            elif kind == "bool" and not isinstance(v, bool):
                self.error(at, f"expected true/false, got {v!r}")
        return None

    def cluster_rules(self, spec: dict[str, Any], where: str) -> None:
        """Semantic rules the API types cannot express."""
        head = spec.get("headGroupSpec", {})
        containers = head.get("template", {}).get("spec", {}).get("containers", [])
        if not containers:
            self.error(where, "the head pod template has no container")
        for i, group in enumerate(spec.get("workerGroupSpecs", [])):
            at = f"{where}.workerGroupSpecs[{i}]"
            lo, hi, n = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1), group.get("replicas", 0)
            if not lo <= hi:
                self.error(at, f"minReplicas {lo} > maxReplicas {hi}")
            if not lo <= n <= hi:
                self.error(at, f"replicas {n} outside [{lo}, {hi}]")
            for c in group.get("template", {}).get("spec", {}).get("containers", []):
                gpus = (c.get("resources", {}).get("limits", {}) or {}).get("nvidia.com/gpu")
                start = group.get("rayStartParams", {}).get("num-gpus")
                if start is not None and gpus is None:
                    self.error(at, "num-gpus set but the container has no nvidia.com/gpu limit")
                if gpus is not None and start is not None and float(start) != float(gpus):
                    self.error(at, f"num-gpus {start} != nvidia.com/gpu limit {gpus}")

    def document(self, doc: dict[str, Any], where: str) -> None:
        api, kind = doc.get("apiVersion"), doc.get("kind")
        for key in doc:
            if key not in ("apiVersion", "kind", "metadata", "spec", "data", "stringData"):
                self.error(f"{where}.{key}", "unknown top-level field")
        self.core(doc.get("metadata", {}), "V1ObjectMeta", f"{where}.metadata")
        if api == "ray.io/v1" and kind == "RayCluster":
            self.kuberay(doc.get("spec"), "RayClusterSpec", f"{where}.spec")
            self.cluster_rules(doc.get("spec", {}), f"{where}.spec")
        elif api == "ray.io/v1" and kind == "RayJob":
            spec = doc.get("spec", {})
            self.kuberay(spec, "RayJobSpec", f"{where}.spec")
            if "rayClusterSpec" in spec:
                self.cluster_rules(spec["rayClusterSpec"], f"{where}.spec.rayClusterSpec")
            if spec.get("ttlSecondsAfterFinished") and not spec.get("shutdownAfterJobFinishes"):
                self.error(where, "ttlSecondsAfterFinished only acts with shutdownAfterJobFinishes: true")
        elif (api, kind) in CORE_OBJECTS:
            self.core(doc, CORE_OBJECTS[(api, kind)], where)
        else:
            self.error(where, f"no check for {api} {kind}")


def ray_versions(docs: list[tuple[str, dict[str, Any]]]) -> set[str]:
    found = set()
    for _, doc in docs:
        spec = doc.get("spec") or {}
        for s in (spec, spec.get("rayClusterSpec") or {}):
            if "rayVersion" in s:
                found.add(s["rayVersion"])
    return found


def check_launcher(errors: list[str]) -> None:
    try:
        import jsonschema
        import ray.autoscaler
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        print(f"skip {LAUNCHER_FILE.name}: ray[default] is not installed here")
        return
    cfg = yaml.safe_load(LAUNCHER_FILE.read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    try:
        jsonschema.validate(cfg, schema)
        validate_config(prepare_config(cfg))
    except Exception as err:  # jsonschema.ValidationError, ValueError, RuntimeError
        errors.append(f"{LAUNCHER_FILE.name}: {str(err).splitlines()[0]}")
        return
    print(f"ok   {LAUNCHER_FILE.name} (ray-schema.json + prepare_config, Ray {ray.__version__})")


def pod_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod templates inside a KubeRay object: head, worker groups, the RayJob submitter."""
    spec = doc.get("spec") or {}
    found = [("submitterPodTemplate", spec["submitterPodTemplate"])] if "submitterPodTemplate" in spec else []
    for at, cluster in (("", spec), ("rayClusterSpec.", spec.get("rayClusterSpec") or {})):
        if "template" in cluster.get("headGroupSpec", {}):
            found.append((f"{at}headGroupSpec.template", cluster["headGroupSpec"]["template"]))
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            found.append((f"{at}workerGroupSpecs[{i}].template", group.get("template", {})))
    return found


def check_schemas(docs: list[tuple[str, dict[str, Any]]], errors: list[str]) -> None:
    """Strict validation against the Kubernetes JSON schemas of `kubernetes-validate`: core objects whole, and
    each pod template inside a KubeRay object as a v1 PodTemplate (KubeRay's own CRD fields: see KUBERAY_TYPES)."""
    try:
        import kubernetes_validate
    except ImportError:
        print("skip JSON-schema validation: kubernetes-validate is not installed here")
        return
    version = kubernetes_validate.latest_version()
    for where, doc in docs:
        objects = [(where, doc)] if doc.get("apiVersion") == "v1" else []
        for at, template in pod_templates(doc):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            objects.append((f"{where}.spec.{at}", wrapped))
        for at, obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{at}: {err.message} (at {'.'.join(map(str, err.path))})")
            else:
                print(f"ok   {at} (Kubernetes {version} JSON schema, strict)")


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def main() -> int:
    checker = Checker()
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in [*KUBE_FILES, LAUNCHER_FILE]:
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            checker.error(path.name, f"YAML: {err}")
            continue
        if path.parent.name == "kuberay":
            for i, doc in enumerate(loaded):
                docs.append((f"{path.name}#{i}", doc))
    for where, doc in docs:
        before = len(checker.errors)
        checker.document(doc, where)
        if len(checker.errors) == before:
            print(f"ok   {where} {doc.get('apiVersion')} {doc.get('kind')} {doc.get('metadata', {}).get('name')}")
    versions = ray_versions(docs)
    if len(versions) > 1:
        checker.error("kuberay/*.yaml", f"different rayVersion values: {sorted(versions)}")
    check_schemas(docs, checker.errors)
    check_launcher(checker.errors)
    yamllint = [sys.executable, "-m", "yamllint"] if has_module("yamllint") else [shutil.which("yamllint")]
    if yamllint[0]:
        rules = "{line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}}"
        files = [str(p) for p in [*KUBE_FILES, LAUNCHER_FILE]]
        r = subprocess.run(
            [*yamllint, "-s", "-d", f"{{extends: default, rules: {rules}}}", *files], capture_output=True, text=True
        )
        if r.returncode:
            checker.errors.append("yamllint:\n" + r.stdout)
        else:
            print("ok   yamllint")
    for e in checker.errors:
        print("FAIL", e)
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
