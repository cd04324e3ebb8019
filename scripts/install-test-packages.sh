#!/usr/bin/env bash
#! Installs the named Debian packages for the tests, refusing to remove or upgrade any package
#! the machine already has: it says what it will install, or what it would change, and stops.
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

wanted=("$@")
apt_opts=(--no-install-recommends --no-remove)
# Another apt may be running (unattended upgrades): wait for its lock rather than fail.
lock_wait=(-o DPkg::Lock::Timeout=600)
apt_private=()
log "reading the package lists (apt-get update)"
apt-get "${lock_wait[@]}" update -qq

# A machine that carries QEMU from the backports suite (qemu-utils ~bpo) cannot take the
# release's QEMU without losing it: take the whole QEMU family from backports at that version.
qemu_utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [[ " ${wanted[*]} " == *" qemu-system-x86 "* && "$qemu_utils" == *"~bpo"* ]]; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    # The mirror this machine already uses for its release, so no host is named here.
    mirror=$(apt-cache policy | awk -v s="$codename/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}')
    if [[ -z "$mirror" ]]; then
        echo "qemu-utils $qemu_utils comes from backports, and no mirror of $codename was found to take qemu-system-x86 from backports too" >&2
        exit 1
    fi
    # A private copy of the package sources plus backports, so the machine's own are untouched.
    private=$(mktemp -d)
    trap 'rm -rf "$private"' EXIT
    mkdir -p "$private/parts" "$private/lists/partial"
    cp /etc/apt/sources.list.d/* "$private/parts/" 2>/dev/null || true
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb [signed-by=$keyring] $mirror $codename-backports main" >"$private/parts/backports.list"
    apt_private=(-o "Dir::Etc::sourceparts=$private/parts" -o "Dir::State::lists=$private/lists"
        -o APT::Sandbox::User=root)
    log "qemu-utils $qemu_utils is from backports: QEMU comes from $codename-backports too"
    apt-get "${apt_private[@]}" "${lock_wait[@]}" update -qq
    rest=()
    for p in "${wanted[@]}"; do [[ "$p" == qemu-system-x86 ]] || rest+=("$p"); done
    wanted=("${rest[@]}" "qemu-system-x86=$qemu_utils" "qemu-system-common=$qemu_utils"
        "qemu-system-data=$qemu_utils" "seabios/$codename-backports")
fi

plan=$(apt-get "${apt_private[@]}" install -s -y "${apt_opts[@]}" "${wanted[@]}" 2>&1) || {
    printf '%s\n' "$plan" >&2
    echo "apt cannot install ${wanted[*]} without changing installed packages; install them by hand" >&2
    exit 1
}
changes=$(printf '%s\n' "$plan" | grep -E '^(Remv |Inst [^ ]+ \[)' || true)
if [[ -n "$changes" ]]; then
    printf '%s\n' "$changes" >&2
    echo "installing ${wanted[*]} would remove or upgrade the packages above, which this script never does; install them by hand, then run it again" >&2
    exit 1
fi
log "installing: $(printf '%s\n' "$plan" | awk '/^Inst /{print $2}' | tr '\n' ' ')"
DEBIAN_FRONTEND=noninteractive apt-get "${apt_private[@]}" "${lock_wait[@]}" install -y -qq "${apt_opts[@]}" "${wanted[@]}"
