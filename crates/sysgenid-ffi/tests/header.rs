//! The checked-in C header: it matches what cbindgen generates from the crate, and it compiles
//! as C and as C++.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("include/sysgenid/sysgenid.h")
}

/// The header cbindgen generates now from the crate's sources and `cbindgen.toml`.
fn generate() -> String {
    let config =
        cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir().join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn header_is_current() {
    let checked_in = std::fs::read_to_string(header_path()).unwrap_or_default();
    let generated = generate();
    assert!(
        checked_in == generated,
        "{} is out of date with the crate's sources: run \
         `cargo test -p sysgenid-ffi -- --ignored regenerate_header` and commit the result",
        header_path().display()
    );
}

/// Rewrites the checked-in header from the crate's sources.
#[test]
#[ignore = "writes include/sysgenid/sysgenid.h; run it after changing the C API"]
fn regenerate_header() {
    std::fs::write(header_path(), generate()).expect("write the header");
}

#[test]
fn header_carries_its_guard_includes_license_and_docs() {
    let header = std::fs::read_to_string(header_path()).expect("read the header");
    for needle in [
        "SPDX-License-Identifier: MIT OR Apache-2.0",
        "#ifndef SYSGENID_H",
        "#define SYSGENID_H",
        "#include <stdint.h>",
        "#include <stdbool.h>",
        "typedef struct sysgenid_watcher sysgenid_watcher;",
        "int sysgenid_generation(uint32_t *out);",
        "# Safety",
        "is sysgenidd",
    ] {
        assert!(header.contains(needle), "the header lacks {needle:?}");
    }
    assert!(
        !header.contains("sysgenid_private"),
        "the test-only hook leaked into the header"
    );
}

/// Compiles a file that includes the header with every warning as an error.
fn compile(compiler: &str, lang: &str, std: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("use.src");
    std::fs::write(
        &source,
        "#include <sysgenid/sysgenid.h>\n\
         int main(void) { return SYSGENID_TRACK + SYSGENID_READ_ONLY + SYSGENID_NO_REOPEN \
         + (SYSGENID_E_PANIC < 0 ? 0 : 1); }\n",
    )
    .expect("write the source");
    let output = Command::new(compiler)
        .args([
            "-x",
            lang,
            std,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler} (Debian package build-essential): {e}"));
    assert!(
        output.status.success(),
        "{compiler} {std} rejects the header:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn header_compiles_as_c99_and_cpp() {
    compile("cc", "c", "-std=c99");
    compile("c++", "c++", "-std=c++11");
}
