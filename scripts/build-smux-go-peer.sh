#!/usr/bin/env bash
# Builds the Go smux peer (crates/nodelink-smux/interop/go-peer) into target/smux-go-peer in
# GOPATH mode against Debian's golang-github-xtaci-smux-dev (no Go module proxy). The
# packages come from scripts/install-kcp-deps.sh; pass --install to install them here if
# missing. Prints the path of the built binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PKGS=(golang-go golang-github-xtaci-smux-dev)
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${1:-}" != "--install" ]; then
    echo "missing packages: ${missing[*]} (run scripts/install-kcp-deps.sh, or this script with --install)" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}" >&2
fi

GO="$(command -v go || true)"
if [ -z "$GO" ] && [ -x /usr/lib/go/bin/go ]; then GO=/usr/lib/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "go not found" >&2
  exit 1
fi

mkdir -p "$ROOT/target/go-cache"
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$ROOT/target/go-cache" \
  "$GO" build -o "$ROOT/target/smux-go-peer" ./crates/nodelink-smux/interop/go-peer >&2

echo "$ROOT/target/smux-go-peer"
