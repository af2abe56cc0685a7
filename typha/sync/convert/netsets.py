"""NetworkSet / GlobalNetworkSet → NetworkSetKey.

Value: ``{"nets": [CIDR], "labels": {str: str}, "profile_ids": [str]}``.

A namespaced set is keyed ``<ns>/<name>`` and, like a pod, carries the label
``projectcalico.org/namespace=<ns>`` and inherits the ``kns.<ns>`` profile: that is what lets a
namespaced policy's rule selector (which is ANDed with ``projectcalico.org/namespace == '<ns>'``)
or a namespaceSelector (``pcns.…``) match it. ``pcns.``/``pcsa.`` labels are stripped so that a
set cannot claim another namespace.
"""

from __future__ import annotations

from typing import Any

from typha.model import keys
from typha.sync.base import Update
from typha.sync.convert._common import (
    NAMESPACE_LABEL,
    cidr_list,
    metadata,
    resource_name,
    resource_namespace,
    sorted_map,
    spec,
    str_map,
    strip_reserved_labels,
)


def network_set_updates(resource: dict[str, Any]) -> list[Update]:
    name = resource_name(resource)
    labels = str_map(metadata(resource).get("labels"), "metadata.labels")
    nets = cidr_list(spec(resource).get("nets"), "spec.nets")
    if resource["kind"] == "GlobalNetworkSet":
        return [
            Update(
                keys.network_set_key(name),
                # No labels at all is null, as Go marshals a nil map.
                {
                    "nets": nets,
                    "labels": labels if metadata(resource).get("labels") is not None else None,
                    "profile_ids": [],
                },
            )
        ]
    namespace = resource_namespace(resource)
    labels = strip_reserved_labels(labels)
    labels[NAMESPACE_LABEL] = namespace
    value = {"nets": nets, "labels": sorted_map(labels), "profile_ids": [f"kns.{namespace}"]}
    return [Update(keys.network_set_key(f"{namespace}/{name}"), value)]
