#!/usr/bin/env bash
#! Runs every test of the project on a fresh Debian machine as root, installing what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Debian packages the tests use. Only missing ones are installed, without recommends, and only
# if apt changes nothing the machine already has: no package is removed or upgraded.
packages=(build-essential pkg-config fuse3 perl python3 systemd util-linux e2fsprogs qemu-system-x86 busybox-static xz-utils
    python3-venv python3-build python3-hatchling python3-pytest mypy debhelper debootstrap)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    scripts/install-test-packages.sh "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

log "building the binaries, libraries and examples the end-to-end tests run and install"
# Examples build with dev-dependencies, whose features must not reach the installed C library,
# so they are built for their own package only.
cargo build --workspace --lib --bins
cargo build -p sysgenid --examples
# The upgrade tests hand over between this daemon and a build that writes the next snapshot
# format, as a future release would (crates/sysgenid-e2e/tests/handover.rs).
SYSGENID_SNAPSHOT_FORMAT_NEXT=1 cargo build -p sysgenidd --target-dir "${CARGO_TARGET_DIR:-target}/format-next"

log "unit, property, conformance and end-to-end tests"
cargo nextest run --workspace --all-targets --all-features --no-fail-fast
log "benchmark smoke run (N = 1 and 100, a few iterations): it runs and prints figures; no time is asserted"
bench_out=$(mktemp -d)
"${CARGO_TARGET_DIR:-target}/debug/sysgenid-bench" --smoke --plots "$bench_out" >"$bench_out/report.md"
for expected in 'device read(2), O_NONBLOCK' 'minimal fuser read(2)' 'vCPU placement' '100 | epoll | device |' 'all files released'; do
    grep -qF "$expected" "$bench_out/report.md" || { cat "$bench_out/report.md"; echo "bench smoke: no '$expected'" >&2; exit 1; }
done
test -s "$bench_out/fanout.svg" && test -s "$bench_out/per-call.svg"
rm -rf "$bench_out"
log "the Python client: wheel, mypy --strict, pytest against the daemon built above"
scripts/test-python.sh
log "doc tests"
cargo test --workspace --doc --all-features
log "the Debian packages: build, lintian, install into a fresh chroot, serve, link, purge"
scripts/test-deb.sh
