//! What the caller and the init say to each other over the socket that is the init's
//! stdin: one [`WireSpec`] (JSON, then the caller shuts its write side), then
//! newline-delimited [`Report`]s back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Mount, Network};

/// The spec as the init needs it: the caller's [`crate::RunSpec`] plus the paths the
/// caller prepared in its private temporary directory.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireSpec {
    /// Never empty: the caller substitutes an empty directory for `FROM scratch`.
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Empty directory the overlay is mounted on.
    pub merged_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<Mount>,
    pub stdin: Option<Vec<u8>>,
    /// Private copies, bind-mounted read-write (changes are discarded).
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    /// The caller's pid: the init exits at once if it was already orphaned.
    pub caller_pid: i32,
}

/// A message from the init (or the command's process before `execve`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Report {
    /// The init created this mount point (path relative to the root, symlinks
    /// resolved) in the overlay; the caller removes it from the upper dir afterwards if
    /// still empty.
    Stub {
        path: String,
        dir: bool,
    },
    /// Creating a stub copied this lower directory up; the caller removes it from the
    /// upper dir afterwards if it is still empty, not opaque and unchanged.
    CopiedUp {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A setup step failed.
    Error {
        step: String,
        errno: i32,
    },
    NotFound {
        program: String,
    },
    ExecFailed {
        program: String,
        errno: i32,
    },
    /// The command ended.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}
