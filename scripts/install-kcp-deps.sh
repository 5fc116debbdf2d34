#!/usr/bin/env bash
# Installs what the kcp-go interop tests need, from Debian packages only (no Go module
# proxy), and builds the Go peers (crates/nodelink-kcp/interop/go-peer and
# crates/nodelink-smux/interop/go-peer) into target/kcp-go-peer and target/smux-go-peer in
# GOPATH mode. Idempotent: packages already installed are not installed again. Prints the
# paths of the built binaries, the kcp-go peer's last.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PKGS=(golang-go golang-github-xtaci-kcp-dev golang-github-xtaci-smux-dev kcptun)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}" >&2
fi

GO="$(command -v go || true)"
if [ -z "$GO" ] && [ -x /usr/lib/go/bin/go ]; then GO=/usr/lib/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "go not found after installing golang-go" >&2
  exit 1
fi

# Builds one Go peer from this repository into target/NAME, in GOPATH mode against the
# Debian packages above.
build_go_peer() {
  local name="$1" dir="$2"
  mkdir -p "$ROOT/target/go-cache"
  GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$ROOT/target/go-cache" \
    "$GO" build -o "$ROOT/target/$name" "./$dir" >&2
  echo "$ROOT/target/$name"
}

build_go_peer smux-go-peer crates/nodelink-smux/interop/go-peer
build_go_peer kcp-go-peer crates/nodelink-kcp/interop/go-peer
