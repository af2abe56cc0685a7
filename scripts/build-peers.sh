#!/usr/bin/env bash
# Build the third-party test peers (toxiproxy server, kube-apiserver, etcd from the Go module proxy;
# Calico Typha, typha-client, calico-felix and our Go test helpers from the Calico source) into a
# cache dir outside the repo.  Idempotent: a peer whose binary exists with the expected version
# stamp is skipped, so a warm run takes well under a second.
#
#   usage: scripts/build-peers.sh [toxiproxy] [kube-apiserver] [etcd] [calico]   (default: all four)
#
# Environment:
#   TYPHA_PEERS_DIR   cache dir (default /opt/typha-peers): bin/, gomod/ (GOMODCACHE), gocache/ (GOCACHE)
#   GO                go binary (default: go on PATH, else /usr/local/go/bin/go)
#   TYPHA_BUILD_JOBS  go build -p (default: number of CPUs, at most 2 to keep the link step in RAM)
#   TYPHA_CALICO_TARBALL  Calico source tarball (default: calico-src-*.tar.xz in ../shared/peers next
#                     to the repo, or next to the main checkout when this is a git worktree)
#   TYPHA_CALICO_GIT_URL  clone this URL at TYPHA_CALICO_COMMIT instead of unpacking the tarball
#                     (machines with network access to the Calico repository)
#   TYPHA_CALICO_COMMIT   commit for the clone (default: the one the tarball was cut from)
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
# The Calico commit the tarball was cut from; the git fallback checks out the same one.
CALICO_COMMIT_DEFAULT="87c15906f20c4ca1fda55af92295e7678b0cc0b2"
CALICO_RECIPE_REV="1"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

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

# Serialise concurrent runs (two CI steps or a developer + CI on one machine).  The Calico build
# takes its own lock (.lock-calico): it shares only the Go caches with the others, which the go
# command locks itself, so it need not wait behind a tens-of-minutes kube-apiserver build.
lock_main() {
    [[ -n "${MAIN_LOCKED:-}" ]] && return
    MAIN_LOCKED=1
    exec 9>"$PEERS_DIR/.lock"
    flock 9
}

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

# --- Calico (Typha, typha-client, Felix and the Go helpers under tests/go/) -----------------------

find_calico_tarball() {
    if [[ -n "${TYPHA_CALICO_TARBALL:-}" ]]; then
        printf '%s\n' "$TYPHA_CALICO_TARBALL"
        return
    fi
    local common dir f
    common="$(git -C "$REPO_DIR" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    # ../shared/peers next to the repo; for a git worktree also next to the main checkout.
    for dir in "$REPO_DIR/../shared/peers" ${common:+"$(dirname "$common")/../shared/peers"}; do
        for f in "$dir"/calico-src-*.tar.xz; do
            if [[ -f "$f" ]]; then
                printf '%s/%s\n' "$(cd "$(dirname "$f")" && pwd)" "$(basename "$f")"
                return
            fi
        done
    done
}

# Hash of the Go helper sources, so editing a helper rebuilds (the tarball alone would not).
helpers_hash() {
    local dir="$REPO_DIR/tests/go"
    if [[ -d "$dir" ]]; then
        (cd "$dir" && find . -type f -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) |
            sha256sum | cut -c1-16
    else
        echo none
    fi
}

# Every tests/go/<name>/ holding .go files is a helper main; its binary is bin/<name>.
helper_names() {
    local d
    for d in "$REPO_DIR"/tests/go/*/; do
        [[ -d "$d" ]] || continue
        compgen -G "$d*.go" >/dev/null && basename "$d"
    done
    return 0
}

# Unpack (or clone) the Calico tree into $1 once; a marker file names the source it came from.
prepare_calico_tree() { # dest source-id
    local dest="$1" source_id="$2"
    if [[ -f "$dest/.typha-source" && "$(cat "$dest/.typha-source")" == "$source_id" ]]; then
        return
    fi
    local tmp
    tmp="$(mktemp -d "$WORK_DIR/calico-unpack.XXXXXX")"
    if [[ -n "${TYPHA_CALICO_GIT_URL:-}" ]]; then
        log "cloning $TYPHA_CALICO_GIT_URL at $CALICO_COMMIT"
        git init -q "$tmp/src"
        git -C "$tmp/src" fetch -q --depth 1 "$TYPHA_CALICO_GIT_URL" "$CALICO_COMMIT"
        git -C "$tmp/src" -c advice.detachedHead=false checkout -q FETCH_HEAD
        rm -rf "$tmp/src/.git"
    else
        log "unpacking $CALICO_TARBALL"
        tar -xJf "$CALICO_TARBALL" -C "$tmp"
        mv "$tmp"/calico-* "$tmp/src"
    fi
    [[ -f "$tmp/src/go.mod" ]] || die "no go.mod at the top of the Calico tree"
    printf '%s\n' "$source_id" >"$tmp/src/.typha-source"
    rm -rf "$dest"
    mv "$tmp/src" "$dest"
    rm -rf "$tmp"
}

build_calico() {
    # Own lock: see lock_main.
    exec 8>"$PEERS_DIR/.lock-calico"
    flock 8
    local source_id
    CALICO_COMMIT="${TYPHA_CALICO_COMMIT:-$CALICO_COMMIT_DEFAULT}"
    if [[ -n "${TYPHA_CALICO_GIT_URL:-}" ]]; then
        source_id="git:$CALICO_COMMIT"
    else
        CALICO_TARBALL="$(find_calico_tarball)"
        [[ -n "$CALICO_TARBALL" && -f "$CALICO_TARBALL" ]] ||
            die "Calico source tarball not found (set TYPHA_CALICO_TARBALL, or TYPHA_CALICO_GIT_URL to clone)"
        source_id="tar:$(sha256sum "$CALICO_TARBALL" | cut -c1-64)"
    fi
    local helpers=() h
    while read -r h; do helpers+=("$h"); done < <(helper_names)
    local version
    version="$source_id helpers=$(helpers_hash) calico-recipe=$CALICO_RECIPE_REV"
    local bins=(calico-typha typha-client calico-felix "${helpers[@]}")
    local all_there=1 b
    for b in "${bins[@]}"; do [[ -x "$BIN_DIR/$b" ]] || all_there=0; done
    # One stamp for the whole set (there is no binary named "calico" for up_to_date to test).
    if ((all_there)) && [[ -f "$STAMP_DIR/calico" &&
        "$(cat "$STAMP_DIR/calico")" == "$(stamp_for calico "$version")" ]]; then
        log "calico (${bins[*]}) up to date"
        return
    fi
    log "building calico: ${bins[*]}"
    local start=$SECONDS tree="$WORK_DIR/calico-src"
    prepare_calico_tree "$tree" "$source_id"
    # Our mains live in the tree under typhapeers/ so they build inside Calico's module (its
    # replace lines apply); rewritten on every build so a removed helper disappears too.
    rm -rf "$tree/typhapeers"
    mkdir -p "$tree/typhapeers/calico-typha"
    # At this commit typha/cmd/typha is a library for the unified `calico` binary; this main
    # runs its cobra command on its own.
    printf '%s\n' \
        '// Generated by scripts/build-peers.sh: Calico Typha as its own binary.' \
        'package main' \
        '' \
        'import "github.com/projectcalico/calico/typha/cmd/typha"' \
        '' \
        'func main() {' \
        '	_ = typha.NewCommand().Execute()' \
        '}' >"$tree/typhapeers/calico-typha/main.go"
    local pkgs=(./typhapeers/calico-typha ./typha/cmd/typha-client ./felix/cmd/calico-felix)
    for h in "${helpers[@]}"; do
        mkdir -p "$tree/typhapeers/$h"
        cp "$REPO_DIR/tests/go/$h"/*.go "$tree/typhapeers/$h/"
        pkgs+=("./typhapeers/$h")
    done
    local out="$BIN_DIR/.calico-tmp"
    rm -rf "$out"
    mkdir -p "$out"
    (cd "$tree" && GOFLAGS="$GOFLAGS -mod=mod" "$GO" build -p "$JOBS" -trimpath -ldflags "-s -w" \
        -o "$out/" "${pkgs[@]}")
    for b in "${bins[@]}"; do
        [[ -x "$out/$b" ]] || die "go build did not produce $b"
        mv -f "$out/$b" "$BIN_DIR/$b"
    done
    rm -rf "$out"
    write_stamp calico "$version"
    log "calico built in $((SECONDS - start)) s"
}

targets=("$@")
(( ${#targets[@]} )) || targets=(toxiproxy etcd kube-apiserver calico)
log "go=$GO ($GO_VERSION) peers_dir=$PEERS_DIR jobs=$JOBS targets=${targets[*]}"
total_start=$SECONDS
for t in "${targets[@]}"; do
    case "$t" in
        toxiproxy | toxiproxy-server) lock_main && build_toxiproxy ;;
        kube-apiserver | kube) lock_main && build_kube_apiserver ;;
        etcd) lock_main && build_etcd ;;
        calico) build_calico ;;
        *) die "unknown peer '$t' (expected toxiproxy, kube-apiserver, etcd, calico)" ;;
    esac
done
log "done in $((SECONDS - total_start)) s"
