"""Every rendered manifest validated offline against the schemas a cluster would use.

Kubernetes' own kinds: the OpenAPI schemas shipped in the `kubernetes-validate`
package, in their strict form (an unknown field is an error, as `kubectl apply`'s
default server-side field validation makes it), for the oldest Kubernetes the docs
promise and the newest the package knows. KEDA's ScaledObject and the Prometheus
Operator's monitors: the models `cloudcoil-models-keda` and
`cloudcoil-models-prometheus-operator` generate from those projects' CRD schemas. A
CRD schema lets unknown fields through (the API server prunes them silently), so a
manifest must also survive the round trip through the model unchanged: a misspelt
field would be dropped there, and the test names it.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from pydantic import BaseModel

from tests.deploy.k8s_manifests import RENDERINGS, Doc, one, render

# docs/deploy.md states 1.29 as the oldest supported Kubernetes.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PodMonitor"}


def crd_models() -> dict[str, type[BaseModel]]:
    # Imported here: the generated modules are large (seconds to import).
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor

    return {
        "ScaledObject": ScaledObject,
        "ServiceMonitor": ServiceMonitor,
        "PodMonitor": PodMonitor,
    }


def check_custom_resource(doc: Doc) -> None:
    model = crd_models()[doc["kind"]]
    assert doc["apiVersion"] == model.model_fields["api_version"].default, doc["apiVersion"]
    parsed = model.model_validate(doc)  # raises on a wrong type or a missing field
    back = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == doc, f"{doc['kind']}/{doc['metadata']['name']}: {_difference(doc, back)}"


def _difference(sent: Any, kept: Any, path: str = "") -> str:
    """Where the model's copy differs from the manifest (a dropped or changed field)."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sent:
            if key not in kept:
                return f"{path}/{key} is not a field of the schema"
            found = _difference(sent[key], kept[key], f"{path}/{key}")
            if found:
                return found
        return ""
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        for i, (a, b) in enumerate(zip(sent, kept, strict=True)):
            found = _difference(a, b, f"{path}/{i}")
            if found:
                return found
        return ""
    return "" if sent == kept else f"{path}: {sent!r} became {kept!r}"


def check_builtin(doc: Doc, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(
            f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: "
            f"{exc.message} at {list(exc.absolute_path)}"
        ) from None


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_manifest_is_valid(rendering: str) -> None:
    docs = render(rendering)
    assert len(docs) > 10
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            check_custom_resource(doc)
            continue
        for version in KUBERNETES_VERSIONS:
            check_builtin(doc, version)


def test_the_validators_refuse_what_a_cluster_refuses() -> None:
    """The checks above can fail: a wrong type, a misspelt field, a missing field."""
    docs = render("gpu")
    deployment = copy.deepcopy(one(docs, "Deployment", "sam2fleet-worker"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 420  # misspelt
    with pytest.raises(AssertionError, match="terminationGracePeriod"):
        check_builtin(deployment, KUBERNETES_VERSIONS[0])
    service = copy.deepcopy(one(docs, "Service", "sam2fleet-api"))
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(AssertionError, match="invalid"):
        check_builtin(service, KUBERNETES_VERSIONS[-1])

    scaled = one(docs, "ScaledObject", "sam2fleet-worker")
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")
    with pytest.raises(AssertionError, match="minReplicas is not a field"):
        check_custom_resource(misspelt)
    untyped = copy.deepcopy(scaled)
    untyped["spec"]["triggers"][0].pop("type")
    with pytest.raises(ValueError, match="type"):
        check_custom_resource(untyped)
    monitor = copy.deepcopy(one(docs, "PodMonitor", "sam2fleet-worker"))
    monitor["spec"]["podMetricsEndpoints"][0]["targetPorts"] = "metrics"
    with pytest.raises(AssertionError, match="targetPorts"):
        check_custom_resource(monitor)
