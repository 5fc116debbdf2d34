#!/usr/bin/env bash
# Runs every check the project has: formatting, clippy (warnings denied), the MSRV, the
# dependency policy, packaging, API docs, unit, integration and doc tests, the examples,
# the loom model test, the benchmarks' smoke run and a short run of every fuzz target.
# Installs what it needs (cargo-fuzz, cargo-deny, Debian's rustc 1.85) on a fresh machine. Bounded: no step waits forever.
#
#   FUZZ_SECONDS=N   seconds per fuzz target (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustup component list --installed 2>/dev/null | grep -E '^(rustfmt|clippy)' || true
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The link without its optional features, as the fuzz targets build it.
cargo clippy -p nodelink --no-default-features --locked -- -D warnings

step "MSRV (dependency metadata, and a build with Debian's rustc of that version)"
./scripts/check-msrv.sh

step "dependency policy (cargo deny: licences, bans, sources; deny.toml)"
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install cargo-deny --locked --no-default-features
fi
cargo deny --locked check licenses bans sources

step "packaging (every published crate packages and builds from its package)"
# The dry run verifies each crate against the others' packages through a temporary local
# registry, whose sources cargo extracts once into its home (a directory named "-<hash>")
# and never refreshes for the same version: drop our crates' stale copies first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/nodelink*
cargo publish --workspace --dry-run --locked --allow-dirty

step "API docs of the library crates (broken links denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib --locked

step "interop peers (Debian's kcp-go, smux and kcptun; Go peers built in GOPATH mode)"
./scripts/install-kcp-deps.sh

step "tests (unit, integration, doc)"
cargo test --workspace --locked

step "examples (each runs to completion on loopback)"
for example in typed_rpc link_over_tls link_over_kcp; do
  cargo run -q --locked -p nodelink --features kcp --example "$example"
done
cargo run -q --locked -p nodelink-kcp --example own_socket
cargo run -q --locked -p nodelink-transport --example echo_endpoint
cargo run -q --locked -p nodelink-tunnel --example tunnel_from_code
cargo run -q --locked -p nodelink-smux --example bulk -- 2 1

step "loom model test (light close vs link shutdown)"
RUSTFLAGS="--cfg nodelink_loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p nodelink --lib --locked loom

step "benchmark smoke run (nodelink-bench --quick; checks it runs, asserts no timings)"
# The tunnel and two-process transport scenarios run the CLI as their child processes.
cargo build --release --locked -p nodelink-bench -p nodelink-cli
./target/release/nodelink-bench --quick --json > target/bench-quick.jsonl
for scenario in rtt_conn rtt_ask1 concurrent_ask1 bulk_1mib fairness_1000 idle_conn_memory; do
  for impl in raw_tcp nodelink nodelink_duplex yamux h2; do
    grep -q "\"scenario\":\"$scenario\".*\"impl\":\"$impl\"\|\"impl\":\"$impl\".*\"scenario\":\"$scenario\"" target/bench-quick.jsonl ||
      { echo "bench smoke: no figure for $scenario / $impl"; exit 1; }
  done
done
echo "bench smoke: $(wc -l < target/bench-quick.jsonl) figures"
./target/release/nodelink-bench kcp --quick --json > target/bench-kcp-quick.jsonl
echo "kcp bench smoke: $(wc -l < target/bench-kcp-quick.jsonl) figures"
test -s target/bench-kcp-quick.jsonl
grep -q '"scenario":"kcp_oneway"' target/bench-kcp-quick.jsonl ||
  { echo "kcp bench smoke: no kcp_oneway figure"; exit 1; }
./target/release/nodelink-bench nt --quick --json > target/bench-nt-quick.jsonl
echo "transport bench smoke: $(wc -l < target/bench-nt-quick.jsonl) figures"
test -s target/bench-nt-quick.jsonl
grep -q '"scenario":"nt_rtt_2proc"' target/bench-nt-quick.jsonl ||
  { echo "transport bench smoke: no nt_rtt_2proc figure"; exit 1; }
./target/release/nodelink-bench hostile --quick
./target/release/nodelink-bench tunnel --quick --json > target/bench-tunnel-quick.jsonl
echo "tunnel bench smoke: $(wc -l < target/bench-tunnel-quick.jsonl) figures"
test -s target/bench-tunnel-quick.jsonl

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "fuzz (${FUZZ_SECONDS}s per target)"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  # cargo-fuzz builds with AddressSanitizer, which needs unstable flags; the stable
  # toolchain accepts them with RUSTC_BOOTSTRAP=1.
  (
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    cargo fuzz build
    for target in $(cargo fuzz list); do
      mkdir -p "corpus/$target"
      log="$(mktemp)"
      if ! cargo fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz $target: FAILED (crash input under fuzz/artifacts/$target)"
        exit 1
      fi
      echo "fuzz $target: $(grep -E '^Done' "$log" || echo 'done')"
      rm -f "$log"
    done
  )
fi

step "all checks passed"
