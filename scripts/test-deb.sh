#!/usr/bin/env bash
#! Tests the Debian packages: builds them (scripts/build-deb.sh), runs lintian, installs them
#! into a fresh Debian chroot, checks the unit, the group and the files, runs the installed
#! daemon and CLI, builds the C example against the installed library, then purges the packages
#! and checks that the chroot holds the same files as before. docs/packaging.md explains it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }
fail() {
    echo "test-deb: FAIL: $*" >&2
    exit 1
}

[[ "$(id -u)" == 0 ]] || fail "run as root (debootstrap, chroot, mounts)"
if ! command -v debootstrap >/dev/null; then
    scripts/install-test-packages.sh debootstrap
fi

codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
# What the packages depend on, the C toolchain for the example, and lintian, which runs in the
# chroot: the host keeps its own packages as they are (on some machines lintian's Perl modules
# would need a newer perl than the host has).
chroot_packages=(systemd gcc libc6-dev pkg-config lintian)
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/sysgenid-e2e"
# The chroot is made once and kept as the lower layer of an overlay, so each run starts from
# a fresh copy at no cost; a new recipe (or list) makes a new one.
chroot_recipe=3
cache_key=$(printf '%s\n' "$chroot_recipe" "$codename" "$arch" "${chroot_packages[@]}" |
    sha256sum | cut -c1-12)
chroot_base="$cache_dir/deb-chroot-$codename-$arch-$cache_key"

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
version=$(dpkg-parsechangelog -S Version)
packages=(sysgenid libsysgenid0 libsysgenid-dev)
scratch= # what cleanup unmounts and removes
root=
daemon_pid=
watch_pid=

mounts_under() { awk -v d="$1/" 'index($5 "/", d) == 1 {print $5}' /proc/self/mountinfo; }

# Ends a process started here: SIGTERM (the daemon unmounts), SIGKILL after 5 s.
end_process() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Stops what runs in the chroot, unmounts everything under the scratch directory (deepest
# first), removes it.
cleanup() {
    local status=$? pid mount
    for pid in $watch_pid $daemon_pid; do
        end_process "$pid"
    done
    [[ -n "$scratch" && -d "$scratch" ]] || return "$status"
    mounts_under "$scratch" | sort -r | while read -r mount; do umount -l "$mount" || true; done
    if [[ -n "$(mounts_under "$scratch")" ]]; then
        echo "test-deb: mounts remain under $scratch; left it in place" >&2
    else
        rm -rf --one-file-system "$scratch"
    fi
    return "$status"
}
trap cleanup EXIT

# A command in the chroot with a clean environment (start background ones with chroot and
# root_env themselves, so that $! is the command's own pid).
root_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8)
in_root() { chroot "$root" "${root_env[@]}" "$@"; }
# apt-get in the chroot, without a terminal for dpkg (the chroot has no /dev/pts).
apt_in_root() { in_root env DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0 "$@"; }

# Waits (up to 30 s, 0.1 s at a time) until the command succeeds.
eventually() {
    local i
    for ((i = 0; i < 300; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# The machine's own Debian mirror for its release, from its apt configuration.
apt_mirror() {
    apt-cache policy | awk -v s="$codename/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}'
}

# A minbase chroot of this release with chroot_packages, kept for later runs.
make_chroot_base() {
    local mirror
    mirror=$(apt_mirror)
    [[ -n "$mirror" ]] || fail "no mirror of $codename/main in this machine's apt sources"
    log "creating the chroot $chroot_base (debootstrap $codename from $mirror)"
    mkdir -p "$cache_dir"
    # Older recipes' chroots, and a partial one.
    rm -rf --one-file-system "$cache_dir"/deb-chroot-*
    scratch="$chroot_base.part"
    root=$scratch
    mkdir -m 0755 "$root"
    local debootstrap_log="$cache_dir/debootstrap.log"
    debootstrap --variant=minbase "$codename" "$root" "$mirror" >"$debootstrap_log" 2>&1 ||
        { tail -n 30 "$debootstrap_log" >&2; fail "debootstrap failed"; }
    mount -t proc proc "$root/proc"
    apt_in_root -qq update
    apt_in_root -qq install -y --no-install-recommends \
        "${chroot_packages[@]}" >/dev/null
    # The baseline as apt and man-db leave it once they have run: no package lists (installing
    # the packages must need nothing the chroot lacks), apt's caches built from what is
    # installed, apt's directory for the local .debs it is given, man-db's index complete.
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
    in_root apt-get -qq check
    mkdir -p "$root/var/lib/apt/lists/auxfiles"
    in_root mandb -q
    umount "$root/proc"
    mv "$scratch" "$chroot_base"
    scratch=
    root=
}

# Every path in the chroot with its type (and a link's target), but /proc, /tmp and /dev's
# mounts: what installing and purging must leave as it was.
file_list() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./tmp \) -prune -o -printf '%y %p %l\n') |
        sort
}

# lintian on the three packages, as nobody; any error or warning fails (overrides say why).
run_lintian() {
    log "$(in_root lintian --version) on the packages"
    chroot --userspec=nobody:nogroup "$root" env -i PATH=/usr/bin:/bin HOME=/tmp LC_ALL=C.UTF-8 \
        lintian --fail-on error,warning --display-info --info "$@" ||
        fail "lintian reported errors or warnings (see above)"
}

main() {
    log "building the packages"
    scripts/build-deb.sh
    local out="$target/debian" p
    local debs=()
    for p in "${packages[@]}"; do
        debs+=("$out/${p}_${version}_$arch.deb")
        [[ -f "${debs[-1]}" ]] || fail "scripts/build-deb.sh made no ${debs[-1]}"
    done

    [[ -d "$chroot_base" ]] || make_chroot_base
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/sysgenid-deb.XXXXXX")
    mkdir -m 0755 "$scratch/upper" "$scratch/work" "$scratch/root"
    root="$scratch/root"
    log "a fresh chroot: $root, an overlay on $chroot_base"
    local layers="lowerdir=$chroot_base,upperdir=$scratch/upper,workdir=$scratch/work"
    mount -t overlay overlay -o "$layers" "$root"
    mount -t proc proc "$root/proc"
    mkdir -p "$root/tmp/debs"
    cp "${debs[@]}" "$root/tmp/debs/"
    local chroot_debs=()
    for p in "${debs[@]}"; do chroot_debs+=("/tmp/debs/${p##*/}"); done
    run_lintian "${chroot_debs[@]}"

    file_list >"$root/tmp/files.before"
    log "installing ${packages[*]} with apt"
    apt_in_root install -y --no-install-recommends "${chroot_debs[@]}"
    check_installed
    check_daemon_and_clients
    log "purging ${packages[*]}"
    apt_in_root purge -y "${packages[@]}"
    check_purged
    log "passed"
}

# Each path exists in the chroot and belongs to the package.
expect_files() {
    local package=$1 path owner
    shift
    for path; do
        [[ -e "$root$path" ]] || fail "$path is missing after the install"
        owner=$(in_root dpkg -S "$path" | cut -d: -f1)
        [[ "$owner" == "$package" ]] || fail "$path belongs to '$owner', not to $package"
    done
}

# The files, the enabled unit and the group, as the packages install them.
check_installed() {
    local p
    log "checking the installed files, the unit and the group"
    for p in "${packages[@]}"; do
        [[ "$(in_root dpkg-query -W -f='${Status}' "$p")" == "install ok installed" ]] ||
            fail "$p is not installed"
    done
    local lib="/usr/lib/$multiarch"
    expect_files sysgenid /usr/bin/sysgenidd /usr/bin/sysgenid \
        /lib/systemd/system/sysgenidd.service /usr/lib/sysusers.d/sysgenid.conf \
        /usr/share/man/man8/sysgenidd.8.gz /usr/share/man/man1/sysgenid.1.gz \
        /usr/share/man/man1/sysgenid-overseer-post-restore.1.gz \
        /usr/share/bash-completion/completions/sysgenid /usr/share/zsh/site-functions/_sysgenid \
        /usr/share/fish/vendor_completions.d/sysgenid.fish /usr/share/doc/sysgenid/overseer.md \
        /usr/share/doc/sysgenid/copyright
    expect_files libsysgenid0 "$lib/libsysgenid.so.$version" "$lib/libsysgenid.so.0"
    expect_files libsysgenid-dev "$lib/libsysgenid.so" "$lib/libsysgenid.a" \
        "$lib/pkgconfig/sysgenid.pc" /usr/include/sysgenid/sysgenid.h
    grep -qx "ExecStart=/usr/bin/sysgenidd" "$root/lib/systemd/system/sysgenidd.service" ||
        fail "the packaged unit does not start /usr/bin/sysgenidd"
    # The unit's syntax and its ordering (no cycle with sysinit.target); the man pages are checked
    # above. It leaves a mark of systemd's own, not the package's, in /run.
    [[ ! -e "$root/run/systemd/systemd-units-load" ]] || fail "the chroot has a systemd-units-load"
    in_root systemd-analyze verify --man=no sysgenidd.service ||
        fail "systemd-analyze verify finds fault with the installed unit"
    rm -f "$root/run/systemd/systemd-units-load"
    local wants=/etc/systemd/system/sysinit.target.wants/sysgenidd.service
    [[ "$(readlink "$root$wants")" == /lib/systemd/system/sysgenidd.service ]] ||
        fail "the unit is not enabled: no $wants link"
    in_root getent group sysgenid >/dev/null || fail "the group sysgenid was not created"
    # With /lib a link to /usr/lib (merged /usr), the loader may name either.
    local cached="libsysgenid\.so\.0 .*=> (/usr)?/lib/$multiarch/libsysgenid\.so\.0\$"
    grep -Eq "$cached" <<<"$(in_root ldconfig -p)" ||
        fail "ldconfig's cache lacks libsysgenid.so.0 (the trigger did not run)"
}

# The installed daemon serves its default paths in the chroot (hardware backends off: they would
# watch the host); the installed CLI reads and bumps; the C example builds against the installed
# library, dynamically and statically, and sees the bump.
check_daemon_and_clients() {
    log "running the installed daemon in the chroot"
    [[ ! -e "$root/dev/fuse" ]] || fail "the chroot has a /dev/fuse of its own"
    touch "$root/dev/fuse"
    mount --bind /dev/fuse "$root/dev/fuse"
    chroot "$root" "${root_env[@]}" sysgenidd --backends none >"$root/tmp/daemon.log" 2>&1 &
    daemon_pid=$!
    eventually in_root sysgenid status ||
        { cat "$root/tmp/daemon.log" >&2; fail "the daemon does not serve"; }
    [[ "$(in_root stat -c '%G %a' /dev/sysgenid)" == "sysgenid 664" ]] ||
        fail "/dev/sysgenid is not the group sysgenid's: $(in_root stat -c '%G %a' /dev/sysgenid)"
    [[ "$(in_root sysgenid get)" == 0 ]] || fail "sysgenid get: not 0 on a new daemon"

    log "building the C example against the installed library"
    cp crates/sysgenid-ffi/examples/c/watch.c "$root/tmp/watch.c"
    in_root sh -c 'cd /tmp && gcc -Wall -Werror watch.c $(pkg-config --cflags --libs sysgenid) \
        -o watch'
    in_root sh -c 'cd /tmp && gcc -Wall -Werror watch.c $(pkg-config --cflags sysgenid) \
        "$(pkg-config --variable=libdir sysgenid)/libsysgenid.a" \
        $(pkg-config --static --libs-only-l sysgenid | sed "s/-lsysgenid //") -o watch-static'
    local loaded="libsysgenid\.so\.0 => (/usr)?/lib/$multiarch/libsysgenid\.so\.0 "
    grep -Eq "$loaded" <<<"$(in_root ldd /tmp/watch)" ||
        fail "the example does not load the installed libsysgenid.so.0"
    run_watcher /tmp/watch 1
    run_watcher /tmp/watch-static 2

    log "stopping the daemon (SIGTERM)"
    kill -TERM "$daemon_pid"
    local status=0
    wait "$daemon_pid" || status=$?
    ((status == 0)) || { cat "$root/tmp/daemon.log" >&2; fail "the daemon exited with $status"; }
    daemon_pid=
    [[ ! -e "$root/dev/sysgenid" ]] || fail "the daemon left /dev/sysgenid behind"
    # What the purge must remove: the daemon keeps its state directory when it stops.
    [[ -f "$root/run/sysgenid/generation" ]] || fail "the daemon made no /run/sysgenid/generation"
    umount "$root/dev/fuse"
    rm "$root/dev/fuse"
}

# Runs a build of watch.c, bumps the generation once it watches, and checks it saw `expected`.
run_watcher() {
    local program=$1 expected=$2 output="$root/tmp/watch.out"
    chroot "$root" "${root_env[@]}" "$program" >"$output" 2>&1 &
    watch_pid=$!
    eventually grep -q "^watching with libsysgenid $version" "$output" ||
        { cat "$output" >&2; fail "$program does not watch"; }
    [[ "$(in_root sysgenid trigger)" == "generation $expected" ]] || fail "sysgenid trigger"
    local status=0
    wait "$watch_pid" || status=$?
    ((status == 0)) || { cat "$output" >&2; fail "$program exited with $status"; }
    watch_pid=
    grep -qx "acknowledged $expected" "$output" ||
        { cat "$output" >&2; fail "$program did not see generation $expected"; }
}

# After the purge: the group stays (system groups do), everything else is as before the install.
check_purged() {
    local p status
    for p in "${packages[@]}"; do
        status=$(in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ -z "$status" || "$status" == *" not-installed" ]] || fail "$p is left: $status"
    done
    in_root getent group sysgenid >/dev/null || fail "the group sysgenid went with the purge"
    file_list >"$root/tmp/files.after"
    if ! diff -u "$root/tmp/files.before" "$root/tmp/files.after" >"$root/tmp/files.diff"; then
        cat "$root/tmp/files.diff" >&2
        fail "the purge left the chroot different from before the install"
    fi
}

main "$@"
