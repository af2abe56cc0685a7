"""etcd's gRPC Python stubs, generated from etcd's own .proto files at benchmark time.

No maintained PyPI package ships just the stubs: the etcd client libraries that bundle them
(``etcd3``, last released 2020 with protobuf-3-era stubs; ``aetcd``; ``etcd3aio``) are whole
asyncio/threaded clients we would not use. So we take ``rpc.proto``, ``kv.proto`` and
``auth.proto`` from the ``go.etcd.io/etcd/api/v3`` Go module of the etcd version we test against
(the module cache of the peer build, ``go env GOMODCACHE``, or ``go mod download`` from the Go
module proxy), strip the annotations that only matter to Go (gogoproto, the grpc-gateway's
``google.api.http`` and openapiv2 options, etcd's ``versionpb`` version markers: none of them
changes the wire format), and run grpcio-tools' protoc on them into a cache directory outside
the repo. Needs the optional extra ``grpc-bench`` (grpcio, grpcio-tools, protobuf).

    from load.etcd_grpc_stubs import load_stubs
    rpc_pb2, rpc_pb2_grpc, kv_pb2 = load_stubs()
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ETCD_API_MODULE = "go.etcd.io/etcd/api/v3"
# Kept in step with scripts/build-peers.sh (the etcd the benchmarks run).
ETCD_VERSION = "v3.6.16"
# (path inside the Go module, import path the .proto files use for each other)
PROTOS = {
    "etcdserverpb/rpc.proto": "etcd/api/etcdserverpb/rpc.proto",
    "mvccpb/kv.proto": "etcd/api/mvccpb/kv.proto",
    "authpb/auth.proto": "etcd/api/authpb/auth.proto",
}
# Imports of Go-only annotation files (their options are stripped below).
_GO_ONLY_DIRS = r"(?:gogoproto/|google/api/|protoc-gen-openapiv2/|etcd/api/versionpb/)"
_GO_ONLY_IMPORT = re.compile(rf'^import\s+"{_GO_ONLY_DIRS}[^"]*";[ \t]*\n', re.M)
# Field/enum-value options naming a Go-only extension, e.g. [(versionpb.etcd_version_field)="3.1"].
_GO_ONLY_FIELD_OPTION = re.compile(r"\s*\[\s*\((?:gogoproto|versionpb)\.[^\]]*\]")
_CUSTOM_OPTION = re.compile(r"\boption\s*\(")


def strip_go_annotations(text: str) -> str:
    """``text`` without Go-only imports and without every custom ``option (...) = ...;``
    statement (single-line or a ``{...}`` block, nested braces and quoted strings included).
    Plain options (``option go_package = ...``) and everything else stay as they are."""
    text = _GO_ONLY_IMPORT.sub("", text)
    text = _GO_ONLY_FIELD_OPTION.sub("", text)
    out: list[str] = []
    pos = 0
    while (m := _CUSTOM_OPTION.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        pos = _statement_end(text, m.start())
    out.append(text[pos:])
    return "".join(out)


def _statement_end(text: str, start: int) -> int:
    """Index just past the ``;`` that ends the statement starting at ``start`` (outside braces
    and strings)."""
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    raise ValueError(f"unterminated option statement at offset {start}")


def _go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )


def find_api_module(version: str = ETCD_VERSION) -> Path:
    """The unpacked ``go.etcd.io/etcd/api/v3@version`` module: $TYPHA_ETCD_API_DIR, the peer
    build's module cache, ``go env GOMODCACHE``, else ``go mod download`` (Go module proxy)."""
    if explicit := os.environ.get("TYPHA_ETCD_API_DIR"):
        return Path(explicit)
    peers = Path(os.environ.get("TYPHA_PEERS_DIR", "/opt/typha-peers"))
    candidates = [peers / "gomod"]
    go = _go()
    if go:
        gomodcache = subprocess.run(
            [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if gomodcache:
            candidates.append(Path(gomodcache))
    for cache in candidates:
        path = cache / f"{ETCD_API_MODULE}@{version}"
        if (path / "etcdserverpb" / "rpc.proto").is_file():
            return path
    if go is None:
        raise RuntimeError(f"{ETCD_API_MODULE}@{version} not in a module cache and no Go toolchain")
    info = subprocess.run(
        [go, "mod", "download", "-json", f"{ETCD_API_MODULE}@{version}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(json.loads(info)["Dir"])


def default_cache_dir(version: str = ETCD_VERSION) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "typha-py" / f"etcd-grpc-{version}"


def generate(cache_dir: Path | None = None, version: str = ETCD_VERSION) -> Path:
    """Generate the stubs into ``cache_dir`` (once; reused while present); returns the
    directory to put on ``sys.path``."""
    cache_dir = cache_dir or default_cache_dir(version)
    out = cache_dir / "py"
    if (out / "etcd" / "api" / "etcdserverpb" / "rpc_pb2_grpc.py").is_file():
        return out
    from grpc_tools import protoc  # the optional extra: imported only when generating

    api = find_api_module(version)
    src = cache_dir / "proto"
    for rel, import_path in PROTOS.items():
        dest = src / import_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(strip_go_annotations((api / rel).read_text()))
    tmp = cache_dir / "py.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args = ["protoc", f"-I{src}", f"--python_out={tmp}", f"--grpc_python_out={tmp}"]
    if protoc.main([*args, *(str(src / p) for p in PROTOS.values())]) != 0:
        raise RuntimeError(f"protoc failed on the stripped protos in {src}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_stubs(cache_dir: Path | None = None) -> tuple[ModuleType, ModuleType, ModuleType]:
    """(rpc_pb2, rpc_pb2_grpc, kv_pb2), generating them first if needed."""
    path = str(generate(cache_dir))
    if path not in sys.path:
        sys.path.insert(0, path)
    from etcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-not-found]
    from etcd.api.mvccpb import kv_pb2  # type: ignore[import-not-found]

    return rpc_pb2, rpc_pb2_grpc, kv_pb2


if __name__ == "__main__":
    print(generate())
