//! Helpers shared by pybuild's test suites (never linked into the product).
//!
//! The conformance vectors live outside the repository, in `../shared/conformance`
//! beside the checkout, and must never be copied in. Tests find them through the
//! `PYBUILD_CONFORMANCE` environment variable (pointing at the `buildkit` folder), or,
//! when it is unset, at the conventional location next to the workspace.
//!
//! The rule from the conformance README: when the variable is *set* and the folder is
//! missing, the test fails; when nothing is configured and nothing is found, the test
//! prints why it skipped.
//!
//! Besides the conformance data it offers:
//! - [`registry`]: throwaway `docker-registry` instances (anonymous, Basic or token
//!   authentication), the token server, and a fault-injecting proxy;
//! - [`http`]: a tiny blocking HTTP/1.1 client for poking at them, and the request
//!   reading shared by the test servers;
//! - [`cmd`]: external tools and the `pybuild` binary with a clean environment, and
//!   the checks on their exit status and output;
//! - [`fsx`]: file-system readers that fail the test with the path, and `sha256_hex`;
//! - [`net`]: a free loopback port, a child killed on drop, a static file server;
//! - [`progress`]: the steps of a `--progress=plain` log;
//! - [`data`]: reproducible incompressible bytes;
//! - [`world`]: the busybox test world of the end-to-end suites.

use std::path::{Path, PathBuf};

pub mod cmd;
pub mod data;
pub mod fsx;
pub mod http;
mod http_server;
pub mod net;
pub mod progress;
pub mod registry;
pub mod world;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/crates/pybuild-testsupport.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the BuildKit conformance vectors are, if anywhere.
///
/// Returns `Some(dir)` when they are available. Panics (failing the calling test) when
/// `PYBUILD_CONFORMANCE` is set but does not name an existing directory. Returns `None`
/// and prints the reason when the variable is unset and the default location is absent.
pub fn buildkit_conformance_dir() -> Option<PathBuf> {
    match std::env::var_os("PYBUILD_CONFORMANCE") {
        Some(value) => {
            let mut dir = PathBuf::from(value);
            if dir.is_relative() {
                dir = workspace_root().join(dir);
            }
            assert!(
                dir.is_dir(),
                "PYBUILD_CONFORMANCE is set to {} but that directory does not exist",
                dir.display()
            );
            Some(dir)
        }
        None => {
            let dir = workspace_root().join("../shared/conformance/buildkit");
            if dir.is_dir() {
                Some(dir)
            } else {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "skipped: PYBUILD_CONFORMANCE is unset and {} does not exist",
                        dir.display()
                    );
                }
                None
            }
        }
    }
}

/// The folder holding moby's `.dockerignore` cases (`cases.jsonl`): the sibling
/// `dockerignore` folder of the BuildKit conformance folder.
pub fn dockerignore_conformance_file() -> Option<PathBuf> {
    let buildkit = buildkit_conformance_dir()?;
    let file = buildkit.join("../dockerignore/cases.jsonl");
    assert!(
        file.is_file(),
        "the conformance folder {} has no ../dockerignore/cases.jsonl",
        buildkit.display()
    );
    Some(file)
}
