//! Build script: gives the cdylib the SONAME `libsysgenid.so.<MAJOR>`.
//!
//! The library is built as `libsysgenid_ffi.so` and installed (by `scripts/install.sh`) as
//! `libsysgenid.so.<VERSION>` with the links `libsysgenid.so.<MAJOR>` and `libsysgenid.so`.
//! Programs linked against it record its SONAME in their `NEEDED` entries, so the loader looks
//! for `libsysgenid.so.<MAJOR>`: a new major version can be installed next to the old one.
//! This is the part of what cargo-c would do that a plain cargo build lacks; see
//! `docs/c-library.md`.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the major version");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsysgenid.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
