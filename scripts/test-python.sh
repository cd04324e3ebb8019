#!/usr/bin/env bash
#! Tests the Python client: builds its wheel, installs it in a virtual environment, checks it
#! with mypy --strict and runs pytest against the daemon and CLI that cargo already built.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { printf '==> %s\n' "$*" >&2; }

# Debian's interpreter, where python3-build, python3-hatchling, mypy and pytest are installed
# (another python3 may come first on PATH).
python=${PYTHON:-/usr/bin/python3}
bin_dir=${SYSGENID_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}
for binary in sysgenidd sysgenid; do
    if [[ ! -x "$bin_dir/$binary" ]]; then
        echo "$bin_dir/$binary is missing: build it first (cargo build -p sysgenidd -p sysgenid-cli), or set SYSGENID_BIN_DIR" >&2
        exit 1
    fi
done
export SYSGENID_BIN_DIR=$bin_dir PYTHONDONTWRITEBYTECODE=1

work=$(mktemp -d -t sysgenid-python-XXXXXX)
trap 'rm -rf "$work"' EXIT
# Tests run Python as nobody from the virtual environment.
chmod 0755 "$work"

log "building the wheel (offline, with the installed build backend)"
# --skip-dependency-check: Debian 12's hatchling declares `editables`, which Debian 12 does
# not package and which only editable installs use; a missing hatchling still fails the build.
"$python" -m build --wheel --no-isolation --skip-dependency-check --outdir "$work/dist" python >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    exit 1
}
wheel=$(ls "$work"/dist/sysgenid-*.whl)
log "built $(basename "$wheel")"

log "installing it in a virtual environment"
"$python" -m venv --system-site-packages "$work/venv"
venv_python=$work/venv/bin/python
"$venv_python" -m pip install --quiet --no-index --no-deps "$wheel"
installed=$(cd "$work" && "$venv_python" -c 'import sysgenid; print(sysgenid.__file__)')
[[ "$installed" == "$work/venv/"* ]] || { echo "sysgenid imports from $installed, not the wheel" >&2; exit 1; }

log "mypy --strict on the installed package, then on the tests"
mypy=("$python" -m mypy --config-file "$repo/python/pyproject.toml"
    --python-executable "$venv_python" --cache-dir "$work/mypy-cache")
(cd "$work" && "${mypy[@]}" -p sysgenid && "${mypy[@]}" "$repo/python/tests")

log "pytest against sysgenidd from $bin_dir"
(cd "$work" && "$venv_python" -m pytest -p no:cacheprovider -c "$repo/python/pyproject.toml" \
    --rootdir "$repo/python" "$repo/python/tests")
