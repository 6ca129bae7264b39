"""Render the kustomizations in ``deploy/k8s`` without kubectl: the subset of kustomize
they use, and nothing more.

kubectl (``kubectl kustomize``) is not on every machine that runs the tests, so the
checks render the overlays with this module. It understands ``resources`` (files and
directories with a ``kustomization.yaml``), ``namespace``, ``labels`` (metadata only,
``includeSelectors: false``), ``images``, ``replicas`` and ``patches`` given by ``path``
(strategic merge: maps merge, lists of named items merge by name, new ones first,
other lists are replaced). Any other field is refused, so a kustomization that grows
past this subset fails the checks instead of being rendered wrongly. Where kubectl exists,
``tests/test_deploy_checks.py`` compares the two renderings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "render"]

Resource = dict[str, Any]

_KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


class KustomizeError(ValueError):
    """A kustomization this renderer does not understand, or a patch with no target."""


def render(directory: Path) -> list[Resource]:
    """The resources ``directory``'s kustomization.yaml builds, in kustomize's order."""
    spec: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KNOWN
    if unknown:
        raise KustomizeError(f"{directory}: fields this renderer does not know: {unknown}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only patches by path are understood: {patch}")
        for document in yaml.safe_load_all((directory / patch["path"]).read_text()):
            _apply_patch(resources, document, directory / patch["path"])
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors", False) or label.get("includeTemplates", False):
            raise KustomizeError(f"{directory}: labels reach metadata only here: {label}")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for container in _containers(resources):
            name = container["image"].split("@")[0].rsplit(":", 1)[0]
            if name == image["name"]:
                new = image.get("newName", name)
                container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new
    for replica in spec.get("replicas", []):
        targets = [
            r
            for r in resources
            if r["metadata"]["name"] == replica["name"]
            and r["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
        ]
        if not targets:
            raise KustomizeError(f"{directory}: no workload named {replica['name']}")
        for target in targets:
            target["spec"]["replicas"] = replica["count"]
    return resources


def _apply_patch(resources: list[Resource], patch: Resource, source: Path) -> None:
    targets = [
        r
        for r in resources
        if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]
    ]
    if len(targets) != 1:
        raise KustomizeError(f"{source}: {patch['kind']}/{patch['metadata']['name']} not found")
    merged = _merge(targets[0], patch)
    targets[0].clear()
    targets[0].update(merged)


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        # As kustomize does: items new to the list come first, in the patch's order.
        out_list = list(base)
        new: list[Any] = []
        for item in patch:
            at = next((i for i, b in enumerate(out_list) if b["name"] == item["name"]), None)
            if at is None:
                new.append(copy.deepcopy(item))
            else:
                out_list[at] = _merge(out_list[at], item)
        return new + out_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _containers(resources: list[Resource]) -> list[Resource]:
    found: list[Resource] = []
    for resource in resources:
        spec = resource.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        found.extend(pod.get("containers", []))
        found.extend(pod.get("initContainers", []))
    return found
