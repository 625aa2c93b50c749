"""Kubernetes' NetworkPolicy ingress rules applied to rendered manifests: whether a pod
may open a TCP connection to another pod's port (pod, namespace and port selectors;
ipBlock peers are not modelled and match nothing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: its namespace, labels and named container ports."""

    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] | None = None  # default: only the name label

    def namespace_labels_or_default(self) -> Mapping[str, str]:
        return self.namespace_labels or {"kubernetes.io/metadata.name": self.namespace}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector matches the labels (an empty selector matches all)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, values = expression["key"], expression.get("values") or []
        present = key in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None and source.namespace != namespace:
        return False
    if namespaces is not None and not selects(namespaces, source.namespace_labels_or_default()):
        return False
    return pods is None or selects(pods, source.labels)


def _port_matches(rule_port: Mapping[str, Any], target: Pod, port: int) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return target.ports.get(wanted) == port
    return bool(wanted <= port <= rule_port.get("endPort", wanted))


def allows(
    policies: Iterable[Mapping[str, Any]], namespace: str, source: Pod, target: Pod, port: int
) -> bool:
    """Whether `source` may connect to `target`'s TCP `port` under the policies, all in
    `namespace`: yes when no policy selects the target for ingress, else when a rule of
    one that does matches both the source and the port."""
    selecting = [
        p["spec"]
        for p in policies
        if target.namespace == namespace
        and selects(p["spec"]["podSelector"], target.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    return any(
        (not rule.get("from") or any(_peer_matches(p, namespace, source) for p in rule["from"]))
        and (not rule.get("ports") or any(_port_matches(p, target, port) for p in rule["ports"]))
        for spec in selecting
        for rule in spec.get("ingress") or []
    )
