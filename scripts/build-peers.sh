#!/usr/bin/env bash
# Build the third-party test peers (toxiproxy server, kube-apiserver, etcd) from the Go module
# proxy into a cache dir outside the repo.  Idempotent: a peer whose binary exists with the expected
# version stamp is skipped, so a warm run takes well under a second.
#
#   usage: scripts/build-peers.sh [toxiproxy] [kube-apiserver] [etcd]     (default: all three)
#
# Environment:
#   TYPHA_PEERS_DIR   cache dir (default /opt/typha-peers): bin/, gomod/ (GOMODCACHE), gocache/ (GOCACHE)
#   GO                go binary (default: go on PATH, else /usr/local/go/bin/go)
#   TYPHA_BUILD_JOBS  go build -p (default: number of CPUs, at most 2 to keep the link step in RAM)
#
# Why a wrapper module for kube-apiserver and etcd: both main modules carry `replace` directives
# (k8s.io/* => ./staging/..., go.etcd.io/etcd/* => ../...), so `go install pkg@version` refuses them.
# We generate a throw-away module that requires the published module and replaces each staging
# module by its published v0.Y.Z twin, then `go build` the main package from there.
set -euo pipefail

TOXIPROXY_VERSION="v2.12.0"
KUBE_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
# Bump when the recipe changes in a way that must invalidate existing binaries.
RECIPE_REV="1"

PEERS_DIR="${TYPHA_PEERS_DIR:-/opt/typha-peers}"
BIN_DIR="$PEERS_DIR/bin"
STAMP_DIR="$BIN_DIR/.stamps"
WORK_DIR="$PEERS_DIR/work"

log() { printf '[build-peers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        die "no Go toolchain found (looked for go on PATH and /usr/local/go/bin/go)"
    fi
fi

mkdir -p "$BIN_DIR" "$STAMP_DIR" "$WORK_DIR"

# Serialise concurrent runs (two CI steps or a developer + CI on one machine).
exec 9>"$PEERS_DIR/.lock"
flock 9

export GOMODCACHE="$PEERS_DIR/gomod"
export GOCACHE="$PEERS_DIR/gocache"
export GOPATH="$PEERS_DIR/gopath"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
# -modcacherw: keep the module cache deletable with a plain rm -rf.
export GOFLAGS="-modcacherw -buildvcs=false"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

jobs_default="$(nproc 2>/dev/null || echo 2)"
(( jobs_default > 2 )) && jobs_default=2
JOBS="${TYPHA_BUILD_JOBS:-$jobs_default}"

GO_VERSION="$("$GO" env GOVERSION)"

stamp_for() { # name version -> expected stamp text
    printf '%s %s %s recipe=%s\n' "$1" "$2" "$GO_VERSION" "$RECIPE_REV"
}

up_to_date() { # name version
    local name="$1" version="$2"
    [[ -x "$BIN_DIR/$name" && -f "$STAMP_DIR/$name" ]] || return 1
    [[ "$(cat "$STAMP_DIR/$name")" == "$(stamp_for "$name" "$version")" ]]
}

write_stamp() { # name version
    stamp_for "$1" "$2" >"$STAMP_DIR/$1"
}

build_toxiproxy() {
    local name=toxiproxy-server
    if up_to_date "$name" "$TOXIPROXY_VERSION"; then
        log "$name $TOXIPROXY_VERSION up to date"
        return
    fi
    log "building $name $TOXIPROXY_VERSION"
    local start=$SECONDS gobin
    gobin="$(mktemp -d "$WORK_DIR/toxiproxy.XXXXXX")"
    GOBIN="$gobin" "$GO" install -p "$JOBS" -trimpath \
        -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION#v}" \
        "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
    mv -f "$gobin/server" "$BIN_DIR/$name"
    rm -rf "$gobin"
    write_stamp "$name" "$TOXIPROXY_VERSION"
    log "$name built in $((SECONDS - start)) s"
}

# Print the k8s.io/* modules that k8s.io/kubernetes both requires and replaces with ./staging.
kube_staging_modules() { # path-to-kubernetes-go.mod
    local gomod="$1"
    awk '
        /^require[ \t]*\(/ { inreq = 1; next }
        inreq && /^\)/     { inreq = 0; next }
        inreq && $1 ~ /^k8s\.io\// { req[$1] = 1 }
        /=> \.\/staging\// { for (i = 1; i <= NF; i++) if ($i ~ /^k8s\.io\//) { rep[$i] = 1; break } }
        END { for (m in rep) if (m in req) print m }
    ' "$gomod" | sort
}

build_kube_apiserver() {
    local name=kube-apiserver
    if up_to_date "$name" "$KUBE_VERSION"; then
        log "$name $KUBE_VERSION up to date"
        return
    fi
    log "building $name $KUBE_VERSION (cold: tens of minutes on 2 cores)"
    local start=$SECONDS dir="$WORK_DIR/kube-$KUBE_VERSION"
    local staging_version="v0.${KUBE_VERSION#v1.}"
    rm -rf "$dir"
    mkdir -p "$dir"
    cd "$dir"
    cat >go.mod <<EOF
module typha.local/peers/kube

go 1.26
EOF
    local kube_gomod
    kube_gomod="$("$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$kube_gomod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION go.mod"
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    {
        printf 'module typha.local/peers/kube\n\ngo 1.26\n\n'
        printf 'require k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
        printf 'tool k8s.io/kubernetes/cmd/kube-apiserver\n\n'
        printf 'replace (\n'
        local m
        while read -r m; do
            printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"
        done < <(kube_staging_modules "$kube_gomod")
        printf ')\n'
    } >go.mod
    log "wrapper go.mod: $(grep -c '=>' go.mod) staging replaces -> $staging_version"
    "$GO" mod tidy
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w"
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    "$GO" build -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" \
        k8s.io/kubernetes/cmd/kube-apiserver
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    cd /
    write_stamp "$name" "$KUBE_VERSION"
    log "$name built in $((SECONDS - start)) s"
}

build_etcd() {
    local name=etcd
    if up_to_date "$name" "$ETCD_VERSION"; then
        log "$name $ETCD_VERSION up to date"
        return
    fi
    log "building $name $ETCD_VERSION"
    local start=$SECONDS dir="$WORK_DIR/etcd-$ETCD_VERSION"
    rm -rf "$dir"
    mkdir -p "$dir"
    cd "$dir"
    # The server module's own replaces point at sibling dirs (../api, ../pkg, ...); their
    # published twins carry the same version number.
    cat >go.mod <<EOF
module typha.local/peers/etcd

go 1.26

require (
	go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)

tool go.etcd.io/etcd/server/v3
EOF
    "$GO" mod tidy
    "$GO" build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$BIN_DIR/$name.tmp" go.etcd.io/etcd/server/v3
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    cd /
    write_stamp "$name" "$ETCD_VERSION"
    log "$name built in $((SECONDS - start)) s"
}

targets=("$@")
(( ${#targets[@]} )) || targets=(toxiproxy etcd kube-apiserver)
log "go=$GO ($GO_VERSION) peers_dir=$PEERS_DIR jobs=$JOBS targets=${targets[*]}"
total_start=$SECONDS
for t in "${targets[@]}"; do
    case "$t" in
        toxiproxy | toxiproxy-server) build_toxiproxy ;;
        kube-apiserver | kube) build_kube_apiserver ;;
        etcd) build_etcd ;;
        *) die "unknown peer '$t' (expected toxiproxy, kube-apiserver, etcd)" ;;
    esac
done
log "done in $((SECONDS - total_start)) s"
