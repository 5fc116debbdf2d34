#!/usr/bin/env bash
# Proves the workspace's `rust-version` (the MSRV) three ways:
#  1. clippy's `incompatible_msrv` lint, which reads `rust-version`, runs in the clippy
#     step of the test command (an API newer than the MSRV is an error there);
#  2. no dependency of a published crate declares a newer `rust-version`
#     (scripts/check-msrv.py over `cargo metadata`);
#  3. the published crates really build with that Rust: Debian ships rustc 1.85 as
#     `rustc-web`, installed beside rustup's toolchain and used only here.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu |
  python3 scripts/check-msrv.py "$msrv"

# Debian's package of that Rust (bookworm main; the security archive carries newer ones).
# Pinned for repeatability; if the archive no longer has it, any rustc-web of the same
# minor version will do.
debian_version="1.85.0+dfsg3-1~deb12u3"
if [ "$msrv" != "1.85" ]; then
  echo "check-msrv: update debian_version for MSRV $msrv"; exit 1
fi
if ! /usr/bin/rustc --version 2>/dev/null | grep -q "^rustc $msrv\."; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  apt_() { $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
  apt_ update -q >/dev/null
  available=$(apt-cache madison rustc-web | awk -F'|' '{gsub(/ /, "", $2); print $2}')
  if ! grep -qxF "$debian_version" <<<"$available"; then
    fallback=$(grep -m1 "^$msrv\." <<<"$available" || true)
    if [ -z "$fallback" ]; then
      echo "check-msrv: no rustc-web $msrv in the package archive (has: $(echo $available))"
      exit 1
    fi
    echo "check-msrv: rustc-web $debian_version is gone from the archive; using $fallback"
    debian_version=$fallback
  fi
  apt_ install -y -q --allow-downgrades \
    "rustc-web=$debian_version" "cargo-web=$debian_version" \
    "libstd-rust-web-dev=$debian_version" "libstd-rust-web-$msrv=$debian_version" >/dev/null
fi
/usr/bin/rustc --version
# The published crates' libraries and the CLI, with every feature a user can turn on.
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR=target/msrv \
  /usr/bin/cargo check --locked --quiet \
  -p nodelink -p nodelink-driver -p nodelink-kcp -p nodelink-smux -p nodelink-transport \
  -p nodelink-tunnel -p nodelink-cli --features nodelink/kcp,nodelink/tls,nodelink/serde
echo "check-msrv: the published crates build with $(/usr/bin/rustc --version)"
