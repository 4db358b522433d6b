//! What every verfs test crate shares (`cli/tests`, `engine/tests`, `xproc-tests`): the
//! process-level helpers that each of them used to copy.
//!
//! Overview:
//!
//! - [`verfs_bin`] finds the `verfs` binary of this build profile and refuses a missing or stale
//!   one; [`cli::verfs`] / [`cli::run`] / [`cli::ok`] run it against a store path and return a
//!   plain [`std::process::Output`] (the `cli` tests), [`TestStore`] is a fresh store in a
//!   temporary directory whose [`TestStore::run`] / [`TestStore::ok`] run one command under a
//!   timeout and return a [`RunOutput`] (the multi-process tests).
//! - Running processes ([`run_with_timeout`], [`KillSlot`] + [`run_killable`], [`ext`], [`sh`]):
//!   a child that hangs is killed and fails the test with its command line and stderr; every
//!   child dies with the test process.
//! - Test data ([`noise`], [`text`], [`random_bytes`], [`tagged_content`]) and digests
//!   ([`sha256`], [`sha256_file`]): deterministic, so a failure reproduces.
//! - Parser tests: [`crc32`] exactly as `data-layout.md` specifies it (an oracle independent of
//!   the engine's crc crate), and with the feature `proptest` the hostile-input strategies
//!   (`hostile::hostile`: arbitrary bytes, or valid encodings mutated).
//! - Giving up for lack of a capability ([`skip`], [`require_fuse!`], [`require_root!`]): a loud
//!   SKIPPED line outside CI, a failure under CI ([`in_ci`]).
//!
//! What it does not hold: anything that needs the engine's or coordination's types (it must not
//! depend on `verfs-engine`: the engine's own integration tests use this crate, and a
//! dev-dependency cycle would give them two copies of every engine type). Multi-process pools,
//! FUSE mount guards and crash images stay in `verfs-xproc-tests`, which re-exports all of this.
//!
//! ```no_run
//! use verfs_test_support::{cli, noise, sha256};
//! let tmp = tempfile::tempdir().unwrap();
//! let store = cli::new_store(tmp.path());
//! cli::ok(&store, &["mkdir", "/a"]);
//! assert_eq!(cli::ok(&store, &["ls", "/"]).stdout, b"a\n");
//! assert_ne!(sha256(&noise(1, 64)), sha256(&noise(2, 64)));
//! ```

mod bin;
pub mod cli;
mod content;
#[cfg(feature = "proptest")]
pub mod hostile;
mod process;
mod skip;
mod store;

pub use bin::{profile_dir, verfs_bin, BUILD_HINT};
pub use content::{
    crc32, describe_tags, lines, noise, random_bytes, seed, sha256, sha256_file, tagged_content,
    text, write_random_file, xorshift_bytes, TAG_BLOCK, TAG_LEN,
};
pub use process::{
    cmdline, die_with_parent, ext, ext_ok, run_killable, run_with_timeout, sh, sh_ok, shq,
    KillSlot, RunOutput, CMD_TIMEOUT, EXT_TIMEOUT,
};
pub use skip::{fuse_missing, in_ci, is_root, skip};
pub use store::{flip_byte, packs_bytes, set_toml_value, TestStore};

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard check value of CRC-32/ISO-HDLC, and agreement with concatenation.
    #[test]
    fn crc32_is_the_specified_crc() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// Every seed its own stream (the old `seed | 1` gave seeds 2 and 3 the same bytes).
    #[test]
    fn noise_and_text_are_deterministic_and_seeded() {
        assert_eq!(noise(2, 64), noise(2, 64));
        assert_ne!(noise(2, 64), noise(3, 64));
        assert_eq!(text(0, 30), b"0 lorem ipsum dolor sit amet\n1".to_vec());
        assert_eq!(text(7, 1000).len(), 1000);
    }

    #[test]
    fn set_toml_value_replaces_adds_and_appends() {
        let t = "[a]\nx = 1\n# x = 9\n\n[b]\ny = 2\n";
        assert_eq!(
            set_toml_value(t, "a", "x", "5"),
            "[a]\nx = 5\n# x = 9\n\n[b]\ny = 2\n"
        );
        assert_eq!(
            set_toml_value(t, "b", "z", "3"),
            "[a]\nx = 1\n# x = 9\n\n[b]\ny = 2\nz = 3\n"
        );
        assert_eq!(
            set_toml_value(t, "c", "k", "\"v\""),
            "[a]\nx = 1\n# x = 9\n\n[b]\ny = 2\n[c]\nk = \"v\"\n"
        );
    }
}
