"""iptables chain names and the mark bits (docs/felix-calc.md, "Naming rules")."""

from __future__ import annotations

import base64
import hashlib

from felix_client.calc.model.objects import PolicyId

MAX_CHAIN_NAME = 28

# Mark bits for the default IptablesMarkMask 0xffff0000 (HEAD / v3.30+ layout).
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_DROP = 0x40000
MARK_SCRATCH0 = 0x80000
MARK_SCRATCH1 = 0x100000
MARK_ALL_CALICO = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH0 | MARK_SCRATCH1

POLICY_INBOUND_PREFIX = "cali-pi-"
POLICY_OUTBOUND_PREFIX = "cali-po-"
PROFILE_INBOUND_PREFIX = "cali-pri-"
PROFILE_OUTBOUND_PREFIX = "cali-pro-"
TO_WORKLOAD_PREFIX = "cali-tw-"
FROM_WORKLOAD_PREFIX = "cali-fw-"

FROM_WL_DISPATCH = "cali-from-wl-dispatch"
TO_WL_DISPATCH = "cali-to-wl-dispatch"
WL_TO_HOST = "cali-wl-to-host"
FILTER_INPUT = "cali-INPUT"
FILTER_OUTPUT = "cali-OUTPUT"
FILTER_FORWARD = "cali-FORWARD"
NAT_POSTROUTING = "cali-POSTROUTING"
NAT_OUTGOING = "cali-nat-outgoing"


def length_limited_id(prefix: str, suffix: str, max_length: int = MAX_CHAIN_NAME) -> str:
    """``prefix + suffix`` if it fits; otherwise ``prefix + "_" + hash(suffix)`` cut to fit.

    A suffix starting with ``_`` that exactly fills the limit is hashed too, so a literal name can
    never collide with a hashed one.
    """
    total = len(prefix) + len(suffix)
    if total > max_length or (total == max_length and suffix.startswith("_")):
        digest = base64.urlsafe_b64encode(hashlib.sha256(suffix.encode()).digest()).decode()
        return prefix + "_" + digest.rstrip("=")[: max_length - 1 - len(prefix)]
    return prefix + suffix


def policy_chain(pid: PolicyId, inbound: bool) -> str:
    prefix = POLICY_INBOUND_PREFIX if inbound else POLICY_OUTBOUND_PREFIX
    return length_limited_id(prefix, pid.chain_suffix)


def profile_chain(name: str, inbound: bool) -> str:
    prefix = PROFILE_INBOUND_PREFIX if inbound else PROFILE_OUTBOUND_PREFIX
    return length_limited_id(prefix, name)


def endpoint_chain(iface: str, to_workload: bool) -> str:
    prefix = TO_WORKLOAD_PREFIX if to_workload else FROM_WORKLOAD_PREFIX
    return length_limited_id(prefix, iface)


def mark_match(value: int, mask: int) -> str:
    return f"-m mark --mark {value:#x}/{mask:#x}"


def set_mark(value: int, mask: int) -> str:
    return f"-j MARK --set-xmark {value:#x}/{mask:#x}"
