"""The .proto stripper behind the gRPC benchmark's stubs (load/etcd_grpc_stubs.py), and the
benchmark's stamp reader. Pure text: no grpcio needed."""

from __future__ import annotations

import pytest

from load.bench_etcd_watch import STAMP_SLOT, stamp_of, templates
from load.etcd_grpc_stubs import strip_go_annotations

PROTO = """syntax = "proto3";
package etcdserverpb;

import "gogoproto/gogo.proto";
import "etcd/api/mvccpb/kv.proto";
import "etcd/api/versionpb/version.proto";
import "google/api/annotations.proto";
import "protoc-gen-openapiv2/options/annotations.proto";

option go_package = "go.etcd.io/etcd/api/v3/etcdserverpb";
option (gogoproto.marshaler_all) = true;

option (grpc.gateway.protoc_gen_openapiv2.options.openapiv2_swagger) = {
  security_definitions: {
    security: {
      key: "ApiKey";
      value: { type: TYPE_API_KEY; name: "Authorization; not the end }"; }
    }
  }
};

service KV {
  rpc Range(RangeRequest) returns (RangeResponse) {
      option (google.api.http) = {
        post: "/v3/kv/range"
        body: "*"
    };
  }
}

message RangeRequest {
  option (versionpb.etcd_version_msg) = "3.0";
  enum SortOrder {
    NONE = 0;
    ASCEND = 1 [(versionpb.etcd_version_enum_value)="3.1"];
  }
  bytes key = 1;
  int64 min_mod_revision = 10 [(versionpb.etcd_version_field)="3.1"];
  bool serializable = 7 [deprecated = true];
}
"""


def test_strips_go_only_annotations_and_keeps_the_schema() -> None:
    out = strip_go_annotations(PROTO)
    for gone in ("gogoproto", "google.api", "google/api", "openapiv2", "versionpb", "ApiKey"):
        assert gone not in out, gone
    # What protoc needs stays: the plain option, the kv import, every field, enum value and rpc.
    assert 'option go_package = "go.etcd.io/etcd/api/v3/etcdserverpb";' in out
    assert 'import "etcd/api/mvccpb/kv.proto";' in out
    assert "ASCEND = 1;" in out
    assert "int64 min_mod_revision = 10;" in out
    assert "rpc Range(RangeRequest) returns (RangeResponse) {" in out
    # A plain field option is not a Go-only annotation: kept.
    assert "bool serializable = 7 [deprecated = true];" in out
    # Braces stay balanced (the quoted "}" inside the removed block did not end it early).
    assert out.count("{") == out.count("}")


def test_unterminated_option_is_an_error() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        strip_go_annotations('option (google.api.http) = { post: "/x" ')


def test_stamp_round_trip_through_a_template() -> None:
    (_key, template), *_ = templates(1)
    assert stamp_of(template) == 0.0  # the unstamped slot
    stamped = template.replace(STAMP_SLOT, b"1765000000.123456", 1)
    assert len(stamped) == len(template)
    assert stamp_of(stamped) == pytest.approx(1765000000.123456)
    assert stamp_of(b'{"metadata":{"name":"x"}}') is None
