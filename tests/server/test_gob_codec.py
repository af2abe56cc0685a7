"""The gob codec's value bytes: libcalico-go's SerializeValue shape for our model values."""

from __future__ import annotations

from typha.server.gob_codec import go_value_bytes, serialized_update


def test_string_values_go_raw_and_the_rest_as_compact_json_with_gos_escaping() -> None:
    assert go_value_bytes("Info") == b"Info"  # config values: raw, as Go writes them
    assert go_value_bytes(True) == b"true"
    assert go_value_bytes({"selector": "a == 'x' && b < 2", "n": "é"}) == (
        b'{"selector":"a == \'x\' \\u0026\\u0026 b \\u003c 2","n":"\xc3\xa9"}'
    )


def _kv(key: str, value: object) -> bytes:
    import msgpack

    return msgpack.packb([key, value], use_bin_type=True)


def test_v3_resources_carry_their_revision_as_v3_resource_version_on_kubernetes() -> None:
    kv = _kv
    node = kv("/calico/resources/v3/projectcalico.org/nodes/n1", {})
    v3 = serialized_update(node, 42, 1, v3_resource_versions=True)
    assert (v3.revision, v3.v3_resource_version, v3.update_type) == ("42", "42", 1)
    # On etcd (Calico's v3 objects have no resourceVersion there) the revision alone.
    on_etcd = serialized_update(node, 42, 1)
    assert (on_etcd.revision, on_etcd.v3_resource_version) == ("42", "")
    # Profiles are built from namespaces / service accounts: no resourceVersion of their own.
    profile = kv("/calico/resources/v3/projectcalico.org/profiles/kns.a", {})
    p = serialized_update(profile, "42/", 1, v3_resource_versions=True)
    assert (p.revision, p.v3_resource_version) == ("42/", "")
    v1 = serialized_update(kv("/calico/v1/config/Foo", "x"), 43, 2)
    assert (v1.value, v1.revision, v1.v3_resource_version) == (b"x", "43", "")
    gone = serialized_update(kv("/calico/v1/config/Foo", None), 44, 2)
    assert (gone.value, gone.revision, gone.update_type) == (None, "44", 3)
