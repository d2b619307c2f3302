//! pybuild's RUN sandbox: runs one command on an overlayfs view of an image's layers,
//! in fresh Linux namespaces, and leaves the command's filesystem changes in an upper
//! directory that is already a pybuild diff directory (see `pybuild-layer`).
//!
//! # Process model
//!
//! A builder is a threaded program, and `fork` in a threaded program is hazardous (only
//! the forking thread survives, holding whatever locks the others held). So
//! [`NamespaceSandbox::run`] never forks itself. It spawns a helper with
//! `std::process::Command` (no `pre_exec`): the program that embeds pybuild, re-executed
//! as `init_program __pybuild-sandbox-init`, whose `main` calls [`init_main`] first thing
//! when [`is_init_invocation`] says so. That helper is a fresh single-threaded process,
//! where `fork` is safe. Three processes take part:
//!
//! 1. **The caller** (`run`): writes the spec as JSON on a Unix socket that is the
//!    helper's stdin, then reads three streams until they end: the helper's stdout and
//!    stderr (the command's output, handed to the `output` callback line by line as it
//!    arrives) and the socket, on which the helper sends back newline-delimited JSON
//!    reports (stub files it created, setup errors naming the failed step and errno,
//!    exec failures, the command's exit status). It finally removes the mount-point
//!    stubs the helper reported from the upper dir, so none reaches the layer.
//! 2. **The outer init** (`init_main`, in the caller's PID namespace): reads the spec,
//!    `unshare`s new mount, PID, UTS, IPC (and, for [`Network::None`], network)
//!    namespaces (namespaces(7)), makes `/` recursively private so nothing propagates
//!    back to the host, and forks.
//! 3. **PID 1** of the new PID namespace (pid_namespaces(7)): mounts the overlay
//!    (`Documentation/filesystems/overlayfs.rst`: `lowerdir=` top-most first, `upperdir=`,
//!    `workdir=`), takes detached clones (`open_tree`) of every bind source while the
//!    host tree is still reachable, `pivot_root`s into the merged tree (pivot_root(2),
//!    the `pivot_root(".", ".")` idiom, old root detached with `MNT_DETACH`), and only
//!    then creates mount points and mounts `/proc`, read-only `/sys`, a minimal `/dev`,
//!    `/etc/resolv.conf`, `/etc/hosts` and the extra mounts, so image symlinks are
//!    resolved inside the image and can never point a mount or a stub at the host. It
//!    sets the hostname, brings `lo` up in a new network namespace, forks the command
//!    (working directory created if missing, groups, gid, uid, `PATH` search inside
//!    the new root, `execve`) and stays as a tiny init: it reaps every zombie, forwards
//!    SIGTERM/SIGINT/SIGHUP/SIGQUIT to the command and exits when the command does;
//!    the kernel then kills whatever is left in the namespace. So `/proc/1/cmdline`
//!    inside a RUN is the init's (`pybuild-init\0__pybuild-sandbox-init\0`), not the
//!    command's as under BuildKit's runc (which runs without `--init`).
//!
//! Every mount lives in the private mount namespace: when its last process exits the
//! kernel tears all of them down, so neither success, failure nor cancellation can leave
//! a mount behind on the host. Cancellation ([`CancelToken`]) SIGKILLs the helper's
//! process group; PID 1 also has a parent-death signal, so the whole namespace dies.
//!
//! # Overlay options
//!
//! The overlay is mounted with `redirect_dir=off,metacopy=off,index=off`: with
//! redirects a renamed lower directory would be recorded as an xattr the layer format
//! cannot express, and with metacopy a `chown` would copy up metadata without data. With
//! these options the upper dir holds only whole files, 0/0 character-device whiteouts
//! and `trusted.overlay.opaque=y` directories, exactly what `write_layer` consumes.
//!
//! # Rootless
//!
//! An unprivileged program first enters a user namespace where it is root
//! ([`userns::enter_if_needed`], called by the embedding program's `main`; it
//! re-executes the program, see [`userns`]), so the init above inherits it and every
//! namespace it unshares is owned by it. What differs there (tested on Linux 6.18):
//! the overlay is mounted with `userxattr` (opaque markers are
//! `user.overlay.opaque`; `redirect_dir=nofollow`, since overlayfs rejects
//! `redirect_dir=off` with `userxattr`); whiteouts are still 0/0 character devices
//! (an unprivileged `mknod` may make those since Linux 5.8), other devices cannot be
//! made; `/proc` (and, with [`Network::None`], a fresh `/sys`) are created with
//! `fsopen`/`fsmount` before `pivot_root` and attached after it, because the kernel
//! only lets a user namespace mount proc or sysfs while a fully visible instance is
//! in its mount namespace (the old root is detached by then); with the host's network
//! `/sys` is a recursive bind of the host's made read-only with `mount_setattr`
//! (sysfs needs a network namespace the user namespace owns); and when the namespace
//! maps a single id, `setgroups` is denied, so a command asking for other groups
//! fails. A sandbox run by a non-root process is [`Error::NotRoot`].
//!
//! # Isolation, not a security boundary (yet)
//!
//! A RUN as root here is root on the host kernel with every capability (in a rootless
//! build, root of the user's user namespace): there is no capability drop or seccomp
//! filter yet. The sandbox isolates the
//! build from accidents (filesystem, PIDs, hostname, optionally network), like
//! buildah's chroot isolation, not from a hostile Dockerfile.

#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod fake;
mod host;
mod init;
mod sys;
pub mod userns;
mod wire;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use fake::{FakeRun, FakeSandbox};
pub use host::NamespaceSandbox;
pub use init::init_main;
pub use userns::{Entered, UserNs, UserNsError, enter_if_needed};

/// The argument (`argv[1]`) that makes the embedding program act as the sandbox init.
pub const INIT_ARG: &str = "__pybuild-sandbox-init";

/// `PATH` used to find the command when the spec's environment has none (BuildKit's
/// default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `args` (the process's `std::env::args_os()`) ask for the sandbox init.
pub fn is_init_invocation(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == INIT_ARG)
}

/// Everything one RUN step needs.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// Overlay lower dirs, top-most first (snapshot dirs); empty for `FROM scratch`.
    pub lower_dirs: Vec<PathBuf>,
    /// Empty dir that receives the changes (becomes the layer).
    pub upper_dir: PathBuf,
    /// Empty dir on the same filesystem as `upper_dir` (overlay workdir).
    pub work_dir: PathBuf,
    /// argv, already shell-wrapped by the caller.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Absolute path in the image; created (0755, owned by `uid:gid`) if missing.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    /// Extra mounts, applied in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// Bytes piped to the command's stdin (heredoc RUN); `None` gives `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// File shown as `/etc/resolv.conf` during the step (a private copy is mounted, so
    /// the command cannot modify the source); never part of the layer.
    pub resolv_conf: Option<PathBuf>,
    /// Contents of `/etc/hosts` during the step; never part of the layer.
    pub hosts: Option<Vec<u8>>,
    /// Set it (from any thread) to stop the step: the whole namespace is killed and
    /// `run` returns [`Error::Cancelled`].
    pub cancel: CancelToken,
}

/// The step's network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// Share the host's network namespace (`--network=default` and `host`).
    #[default]
    Host,
    /// A new network namespace with only `lo`, up.
    None,
}

/// An extra mount. Cache, secret and ssh mounts are [`Mount::Bind`]s the caller makes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mount {
    /// Recursive bind of a host file or directory onto `target` (absolute in the image).
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// A fresh tmpfs on `target`, `size` in bytes (kernel default: half of RAM).
    Tmpfs { target: String, size: Option<u64> },
}

/// One piece of the command's output: a whole line with its `\n`, or (at the end of
/// the stream, or for a line longer than 64 KiB) the bytes there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The shell convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A cancellation flag shared between the thread running a step and whoever may stop
/// it (Ctrl-C handler, a failing sibling step). Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs RUN steps.
pub trait Sandbox: Send + Sync {
    /// Runs `spec.args` and streams its output to `output`; returns how it ended. A
    /// non-zero exit is `Ok`; `Err` means the step could not run (or was cancelled).
    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(Output<'_>)) -> Result<ExitStatus, Error>;
}

/// Why a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    #[error("prepare sandbox: {what} {path}: {source}")]
    Prepare {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start sandbox init {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// A setup step inside the sandbox failed, e.g. `mount overlay on /tmp/x/merged`.
    #[error("sandbox setup: {step}: {}", errno_text(*.errno))]
    Setup { step: String, errno: i32 },
    /// The command was not found in the spec's `PATH` inside the image (like runc).
    #[error("exec: \"{program}\": executable file not found in $PATH")]
    CommandNotFound { program: String },
    /// `execve` failed for another reason (permission, bad format, ...).
    #[error("exec: \"{program}\": {}", errno_text(*.errno))]
    Exec { program: String, errno: i32 },
    #[error("the step was cancelled")]
    Cancelled,
    #[error("sandbox init ended without reporting the command's status ({status})")]
    InitDied { status: String },
    /// An unprivileged process without a user namespace cannot set up a sandbox.
    #[error(
        "RUN needs root privileges: run as root, or enter a user namespace first \
         (pybuild_sandbox::enter_if_needed; the pybuild command does)"
    )]
    NotRoot,
    #[error("sandbox protocol: {0}")]
    Protocol(String),
    #[error("remove mount-point stub {path} from the upper dir: {source}")]
    Cleanup {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code a shell would give for this failure, if it is an exec failure:
    /// 127 for a command not found (also a path that does not exist), 126 for one that
    /// cannot be executed.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::CommandNotFound { .. } => Some(127),
            Error::Exec { errno, .. } if *errno == libc::ENOENT => Some(127),
            Error::Exec { .. } => Some(126),
            _ => None,
        }
    }
}

/// `EINVAL (Invalid argument)`.
fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::ENOSYS => "ENOSYS",
        libc::ETXTBSY => "ETXTBSY",
        _ => "",
    };
    let desc = std::io::Error::from_raw_os_error(errno).to_string();
    let desc = desc.split(" (os error").next().unwrap_or(&desc).to_string();
    if name.is_empty() {
        format!("errno {errno} ({desc})")
    } else {
        format!("{name} ({desc})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_invocation_is_argv1() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_init_invocation(&a(&["x", INIT_ARG])));
        assert!(!is_init_invocation(&a(&["x"])));
        assert!(!is_init_invocation(&a(&[INIT_ARG])));
    }

    #[test]
    fn errors_read_well() {
        let e = Error::Setup {
            step: "mount overlay on /m".into(),
            errno: libc::EINVAL,
        };
        assert_eq!(
            e.to_string(),
            "sandbox setup: mount overlay on /m: EINVAL (Invalid argument)"
        );
        let e = Error::CommandNotFound {
            program: "foo".into(),
        };
        assert_eq!(
            e.to_string(),
            "exec: \"foo\": executable file not found in $PATH"
        );
        assert_eq!(e.exit_code(), Some(127));
        assert_eq!(ExitStatus::Signal(9).code(), 137);
    }
}
