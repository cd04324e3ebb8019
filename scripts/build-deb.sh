#!/usr/bin/env bash
#! Builds the Debian packages sysgenid, libsysgenid0 and libsysgenid-dev (debian/, with
#! dpkg-buildpackage and debhelper) into TARGET/debian/, TARGET being $CARGO_TARGET_DIR or target.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

missing=()
for p in dpkg-dev debhelper; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    scripts/install-test-packages.sh "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }

version=$(dpkg-parsechangelog -S Version)
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
if [[ "$version" != "$crate_version" ]]; then
    echo "debian/changelog says $version, Cargo.toml $crate_version:" \
        "add a changelog entry (dch -v $crate_version)" >&2
    exit 1
fi

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
out="$target/debian"
build="$out/build"
src="$build/sysgenid-$version"

# dpkg-buildpackage writes into the source tree and its packages next to it, so it builds a copy:
# the files git knows (tracked and new, not ignored), or everything but target/ outside git.
log "staging the source in $src"
rm -rf "$build"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$src"
fi

log "dpkg-buildpackage (Cargo's target directory: $target)"
(cd "$src" && CARGO_TARGET_DIR="$target" dpkg-buildpackage --build=binary --no-sign)

rm -f "$out"/*.deb "$out"/*.ddeb "$out"/*.buildinfo "$out"/*.changes
mv "$build"/*.deb "$build"/*.buildinfo "$build"/*.changes "$out/"
mv "$build"/*.ddeb "$out/" 2>/dev/null || true
rm -rf "$build"
log "built:"
ls -1 "$out"/*.deb >&2
