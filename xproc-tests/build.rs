//! Builds the LD_PRELOAD recorder `shim/verfs_rec.c` for the crash-image test (`src/crash.rs`).
//!
//! A plain C compiler is all it needs (the workspace needs one anyway for zstd), so no build
//! crate: `$CC` or `cc`. The path of the built library reaches the tests as `VERFS_REC_SHIM`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/verfs_rec.c");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libverfs_rec.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&lib)
        .arg("shim/verfs_rec.c")
        .args(["-ldl", "-lpthread"])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{cc} failed to build shim/verfs_rec.c ({s})"),
        Err(e) => panic!("cannot run the C compiler {cc} for shim/verfs_rec.c: {e}"),
    }
    println!("cargo:rustc-env=VERFS_REC_SHIM={}", lib.display());
}
