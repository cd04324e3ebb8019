#!/usr/bin/env bash
#! Builds and installs sysgenid: the daemon, the CLI, man pages, completions, the systemd unit,
#! and the C library with its header and pkg-config file.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--debug] [--no-build]

  --prefix DIR   where to install (default /usr/local)
  --libdir DIR   where the C library and its pkg-config file go (default PREFIX/lib; Debian's
                 package gives PREFIX/lib/<multiarch triplet>)
  --destdir DIR  stage the files under DIR (packaging); paths inside them still use --prefix
  --debug        install the debug build (for tests) instead of the release build
  --no-build     install what the target directory already holds

Installs:
  PREFIX/bin/sysgenidd, PREFIX/bin/sysgenid
  PREFIX/share/man/man8/sysgenidd.8, PREFIX/share/man/man1/sysgenid.1 and a page per
    subcommand (sysgenid-watch.1, sysgenid-overseer-post-restore.1, ...)
  PREFIX/share/doc/sysgenid/*.md (the documents of docs/, which the help points to)
  PREFIX/share/bash-completion/completions/sysgenid, zsh and fish completions
  PREFIX/lib/systemd/system/sysgenidd.service
  PREFIX/lib/sysusers.d/sysgenid.conf (only with --prefix /usr: systemd-sysusers reads no other
    prefix), which creates the writer group `sysgenid`
  LIBDIR/libsysgenid.so.0 (and .so, .a), PREFIX/include/sysgenid/sysgenid.h,
  LIBDIR/pkgconfig/sysgenid.pc
EOF
}

prefix=/usr/local
libdir=
destdir=
build=1
profile=release
while (($#)); do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --libdir) libdir=${2:?--libdir needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --no-build) build=0; shift ;;
        --debug) profile=debug; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
libdir=${libdir:-$prefix/lib}
case "$libdir" in /*) ;; *) echo "install.sh: --libdir must be absolute" >&2; exit 2 ;; esac
# The .pc file names the library directory relative to its prefix where it lies under it.
case "$libdir" in "$prefix"/*) pc_libdir="\${exec_prefix}${libdir#"$prefix"}" ;; *) pc_libdir=$libdir ;; esac

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}
release=${CARGO_TARGET_DIR:-target}/$profile
root="$destdir$prefix"
lib="$destdir$libdir"

if ((build)); then
    if [ "$profile" = release ]; then
        cargo build --release -p sysgenidd -p sysgenid-cli -p sysgenid-ffi
    else
        cargo build -p sysgenidd -p sysgenid-cli -p sysgenid-ffi
    fi
fi

install -d "$root/bin" "$root/share/man/man1" "$root/share/man/man8" \
    "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
    "$root/share/fish/vendor_completions.d" "$root/lib/systemd/system" \
    "$lib/pkgconfig" "$root/include/sysgenid" "$root/share/doc/sysgenid"

install -m 0755 "$release/sysgenidd" "$release/sysgenid" "$root/bin/"
"$release/sysgenidd" --generate-man > "$root/share/man/man8/sysgenidd.8"
install -m 0644 docs/*.md "$root/share/doc/sysgenid/"
# sysgenid.1 and one page per subcommand; the overseer's pages name the installed documents.
"$release/sysgenid" generate man "$root/share/man/man1" --doc-dir "$prefix/share/doc/sysgenid"
"$release/sysgenid" generate bash > "$root/share/bash-completion/completions/sysgenid"
"$release/sysgenid" generate zsh > "$root/share/zsh/site-functions/_sysgenid"
"$release/sysgenid" generate fish > "$root/share/fish/vendor_completions.d/sysgenid.fish"
sed "s|/usr/local/bin/sysgenidd|$prefix/bin/sysgenidd|" contrib/systemd/sysgenidd.service \
    > "$root/lib/systemd/system/sysgenidd.service"
# The writer group: systemd-sysusers reads /usr/lib/sysusers.d, /etc/sysusers.d and
# /run/sysusers.d only, so another prefix leaves it to the user.
if [ "$prefix" = /usr ]; then
    install -D -m 0644 contrib/sysusers.d/sysgenid.conf "$root/lib/sysusers.d/sysgenid.conf"
    group_hint="systemd-sysusers sysgenid.conf"
else
    group_hint="install -D -m 0644 contrib/sysusers.d/sysgenid.conf /etc/sysusers.d/sysgenid.conf && systemd-sysusers"
fi

# The C library: the FFI crate's cdylib carries the SONAME libsysgenid.so.MAJOR (set by its
# build script); it is installed under the names the linker and the loader look for.
install -m 0755 "$release/libsysgenid_ffi.so" "$lib/libsysgenid.so.$version"
ln -sf "libsysgenid.so.$version" "$lib/libsysgenid.so.$major"
ln -sf "libsysgenid.so.$major" "$lib/libsysgenid.so"
install -m 0644 "$release/libsysgenid_ffi.a" "$lib/libsysgenid.a"
install -m 0644 crates/sysgenid-ffi/include/sysgenid/sysgenid.h "$root/include/sysgenid/"
# Libs.private is what a static link needs besides libsysgenid.a: the list that
# `rustc --print native-static-libs` gives for the staticlib (libgcc_s for unwinding, then libc's
# parts); the sysgenid-ffi test c_example_links_the_static_library links with it alone.
cat > "$lib/pkgconfig/sysgenid.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=$pc_libdir
includedir=\${prefix}/include

Name: sysgenid
Description: Client library for the System Generation ID
Version: $version
Libs: -L\${libdir} -lsysgenid
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
EOF

# A library put straight into a directory the dynamic loader searches needs its cache updated
# before programs find it; a staged or private prefix is the packager's or the user's business.
if [[ -z "$destdir" && "$(id -u)" == 0 ]] && ldconfig -v -N 2>/dev/null | grep -q "^$libdir:"; then
    ldconfig
fi

echo "installed sysgenid $version under $root"
if ! getent group sysgenid >/dev/null; then
    echo "to let services acknowledge without root, create the group sysgenid ($group_hint), then restart sysgenidd"
fi
