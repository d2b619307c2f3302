//! Rootless builds: the whole program runs as root of a user namespace (the "unshare"
//! model of buildah and podman).
//!
//! An unprivileged user cannot mount an overlay, `pivot_root`, or give files other
//! owners. Inside a user namespace (user_namespaces(7)) where it is uid 0 it can do all
//! of that, on ids the namespace maps. So [`enter_if_needed`], called by the embedding
//! program's `main` before it starts threads or touches the store, re-executes the
//! program in a new user namespace and returns [`Entered::Reexecuted`] with the exit
//! code of that copy in the original process, [`Entered::Ready`] in the copy (and in a
//! process that is root already). Two processes take part:
//!
//! 1. **The parent** (the unprivileged program) spawns itself again (same arguments,
//!    same stdio) with one end of a socket pair, waits for the child to report that it
//!    has unshared its user namespace, writes the child's id maps, tells it so, then
//!    waits for it, passing on SIGTERM and SIGHUP (Ctrl-C reaches both from the
//!    terminal).
//! 2. **The child** calls `unshare(CLONE_NEWUSER)` first thing (a user namespace can
//!    only be entered by a single-threaded process), reports, waits for the maps, and
//!    goes on as uid 0 of the namespace.
//!
//! # Id maps
//!
//! With the `newuidmap`/`newgidmap` helpers (package `uidmap`, found in `PATH`) and a
//! range of the user in `/etc/subuid` and `/etc/subgid` (name or uid), the maps are
//! container 0 → the user's own id, 1..=N → the first range (N ≤ 65536): an image's
//! files keep every owner in that span. Otherwise the parent writes a **single-id**
//! map itself (0 → the user; `setgroups` denied, as the kernel requires for an
//! unprivileged gid map): only root-owned content can then be represented, and
//! [`UserNs::SingleId`] carries the reason for error messages, which say how to fix it
//! ([`SINGLE_ID_FIX`]).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rustix::process::{Pid, Signal};

/// Environment variable that tells the re-executed child which fd is its end of the
/// synchronization socket.
const SYNC_ENV: &str = "_PYBUILD_USERNS_SYNC";

/// The namespace [`enter_if_needed`] set up in this process (with the reason for a
/// single-id map, which `/proc` cannot tell).
static ENTERED: OnceLock<UserNs> = OnceLock::new();

/// Most subordinate ids mapped (after container id 0).
const MAX_SUBORDINATE: u64 = 65536;

/// How to get a full map when only a single id is mapped.
pub const SINGLE_ID_FIX: &str = "install the newuidmap/newgidmap helpers (Debian/Ubuntu package `uidmap`, \
     Fedora `shadow-utils`) and give the user subordinate id ranges, e.g. \
     `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER` \
     (lines `USER:100000:65536` in /etc/subuid and /etc/subgid)";

/// One line of an id map: `count` ids from `inside` map to `outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The user namespace this process runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserNs {
    /// The initial user namespace (or identity-mapped): real ids.
    Host,
    /// A user namespace mapping more than one uid.
    Mapped {
        uid_map: Vec<IdRange>,
        gid_map: Vec<IdRange>,
    },
    /// A user namespace mapping one uid only (the user, as 0): files owned by any
    /// other id cannot be written.
    SingleId {
        /// Why there is no full map (filled in by [`enter_if_needed`]; a generic text
        /// when the namespace was made by someone else).
        reason: String,
    },
}

impl UserNs {
    /// The namespace of this process: the one [`enter_if_needed`] entered, else read
    /// from `/proc/self/{uid,gid}_map`.
    pub fn current() -> UserNs {
        if let Some(ns) = ENTERED.get() {
            return ns.clone();
        }
        let read = |p: &str| fs::read_to_string(p).map(|t| parse_map(&t));
        let (Ok(uid_map), Ok(gid_map)) = (read("/proc/self/uid_map"), read("/proc/self/gid_map"))
        else {
            return UserNs::Host;
        };
        if uid_map
            == [IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }]
        {
            return UserNs::Host;
        }
        let total = |m: &[IdRange]| m.iter().map(|r| u64::from(r.count)).sum::<u64>();
        if total(&uid_map) <= 1 || total(&gid_map) <= 1 {
            return UserNs::SingleId {
                reason: "the user namespace maps a single id".into(),
            };
        }
        UserNs::Mapped { uid_map, gid_map }
    }

    /// Whether this is a user namespace other than the host's.
    pub fn is_namespace(&self) -> bool {
        !matches!(self, UserNs::Host)
    }

    /// The explanation for an operation that needs an id other than 0, when only a
    /// single id is mapped; `None` otherwise.
    pub fn single_id_explanation(&self) -> Option<String> {
        match self {
            UserNs::SingleId { reason } => Some(format!(
                "this rootless build runs in a user namespace that maps only your own user \
                 (as root, uid 0) because {reason}: files owned by other users or groups \
                 cannot be represented, and switching to another user fails; to fix it, \
                 {SINGLE_ID_FIX}"
            )),
            _ => None,
        }
    }
}

/// What [`enter_if_needed`] did.
#[derive(Debug)]
pub enum Entered {
    /// This process is ready to build: it is root (of the host, or of the namespace it
    /// was re-executed in).
    Ready(UserNs),
    /// This is the original unprivileged process: the program ran again in a user
    /// namespace and ended with this exit code (128 + the signal that killed it).
    /// The caller should exit with it and do nothing else.
    Reexecuted { exit_code: i32 },
}

/// Why the user namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error("rootless: {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("rootless: {0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> UserNsError {
    let what = what.into();
    move |source| UserNsError::Io { what, source }
}

/// Enter a user namespace where this process is root, unless it is root already.
///
/// Call it first thing in `main` (after [`crate::init_main`]'s check), before any
/// thread is started or the store is opened, for commands that use the store; see the
/// module docs. In the original process it returns only when the re-executed copy has
/// ended.
pub fn enter_if_needed() -> Result<Entered, UserNsError> {
    if let Some(fd) = std::env::var_os(SYNC_ENV) {
        // SAFETY: called before the program starts threads (this function's contract,
        // and unshare(CLONE_NEWUSER) below fails for a threaded process anyway), so no
        // other thread reads the environment concurrently.
        unsafe { std::env::remove_var(SYNC_ENV) };
        return child(&fd);
    }
    if rustix::process::geteuid().is_root() {
        return Ok(Entered::Ready(UserNs::current()));
    }
    parent().map(|exit_code| Entered::Reexecuted { exit_code })
}

/// The re-executed child: unshare, report, wait for the maps.
fn child(fd: &OsString) -> Result<Entered, UserNsError> {
    let raw: i32 = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| UserNsError::Setup(format!("bad {SYNC_ENV} value {fd:?}")))?;
    // The fd must be open and a socket: it was inherited from the parent.
    rustix::io::fcntl_getfd(
        // SAFETY: only used to check that `raw` is an open descriptor.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) },
    )
    .map_err(|e| io_err(format!("{SYNC_ENV} fd {raw}"))(e.into()))?;
    // SAFETY: the parent passed this descriptor for this process alone; nothing else
    // in the process owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| io_err("set close-on-exec on the sync socket")(e.into()))?;
    let mut sock = UnixStream::from(owned);

    // Die with the parent (it holds the terminal's attention and the exit code).
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| io_err("prctl(PR_SET_PDEATHSIG)")(e.into()))?;
    // SAFETY: the process is single-threaded (the caller's contract; the kernel
    // refuses CLONE_NEWUSER otherwise) and CLONE_FILES is not among the flags.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }.map_err(
        |e| {
            io_err(
                "unshare(CLONE_NEWUSER) (is kernel.unprivileged_userns_clone or \
                 user.max_user_namespaces disabled? is the program multi-threaded?)",
            )(e.into())
        },
    )?;
    sock.write_all(b"u")
        .map_err(io_err("tell the parent the namespace exists"))?;
    let mut reply = String::new();
    sock.read_to_string(&mut reply)
        .map_err(io_err("wait for the id maps"))?;
    let mut ns = UserNs::current();
    match reply.split_once('\n') {
        Some(("full", _)) => {}
        Some(("single", reason)) => {
            ns = UserNs::SingleId {
                reason: reason.trim_end().to_string(),
            }
        }
        _ => {
            return Err(UserNsError::Setup(format!(
                "the parent could not write the id maps: {}",
                reply.trim_end()
            )));
        }
    }
    if matches!(ns, UserNs::Mapped { .. }) {
        // The user's own supplementary groups show as the overflow gid in here.
        rustix::thread::set_thread_groups(&[]).map_err(|e| io_err("setgroups([])")(e.into()))?;
    }
    let _ = ENTERED.set(ns.clone());
    Ok(Entered::Ready(ns))
}

/// The unprivileged original: spawn the child, map it, wait for it.
fn parent() -> Result<i32, UserNsError> {
    let exe = PathBuf::from("/proc/self/exe");
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("pybuild"));
    let (ours, theirs) = UnixStream::pair().map_err(io_err("socketpair"))?;
    // The child's end must survive exec: clear close-on-exec just for the spawn.
    // (Another thread spawning meanwhile could inherit it; the contract is to call
    // this before threads exist.)
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .map_err(|e| io_err("clear close-on-exec")(e.into()))?;
    let mut cmd = Command::new(&exe);
    cmd.arg0(&arg0)
        .args(args)
        .env(SYNC_ENV, theirs.as_raw_fd().to_string());
    let spawned = cmd.spawn();
    drop(theirs);
    let mut child = spawned.map_err(io_err(format!("re-execute {}", exe.display())))?;
    let pid = child.id();

    let outcome = (|| -> Result<(), UserNsError> {
        let mut ours = &ours;
        let mut b = [0u8; 1];
        match ours.read(&mut b) {
            Ok(1) => {}
            // The child ended before unsharing (it reports its own error): its exit
            // code says the rest.
            Ok(_) => return Ok(()),
            Err(e) => {
                return Err(io_err("wait for the child to unshare its user namespace")(
                    e,
                ));
            }
        }
        let reply = match write_maps(pid) {
            Ok(None) => "full\n".to_string(),
            Ok(Some(reason)) => format!("single\n{reason}"),
            Err(e) => format!("error\n{e}"),
        };
        ours.write_all(reply.as_bytes())
            .map_err(io_err("tell the child the maps are written"))?;
        Ok(())
    })();
    drop(ours);
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = wait_forwarding(&mut child)?;
    outcome?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Waits for the child, passing SIGTERM and SIGHUP on. SIGINT and SIGQUIT come from
/// the terminal to the whole foreground group, the child included: the parent only
/// ignores them while it waits, so it outlives the child's clean-up.
fn wait_forwarding(
    child: &mut std::process::Child,
) -> Result<std::process::ExitStatus, UserNsError> {
    let pid = Pid::from_raw(child.id() as i32);
    crate::sys::take_over_signals().map_err(io_err("block signals"))?;
    loop {
        // Checked before each wait: the child may have ended before SIGCHLD was blocked.
        if let Some(st) = child.try_wait().map_err(io_err("wait for the child"))? {
            return Ok(st);
        }
        match crate::sys::wait_signal() {
            Ok(sig @ (libc::SIGTERM | libc::SIGHUP)) => {
                if let (Some(pid), Some(sig)) = (pid, Signal::from_named_raw(sig)) {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
            Ok(_) => {}
            Err(_) => return child.wait().map_err(io_err("wait for the child")),
        }
    }
}

/// Writes the child's maps: `None` for a full map with the helpers, else the reason
/// a single-id map was written.
fn write_maps(pid: u32) -> Result<Option<String>, UserNsError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let plan = (|| -> Result<_, String> {
        let newuidmap = find_in_path("newuidmap").ok_or("newuidmap is not in PATH")?;
        let newgidmap = find_in_path("newgidmap").ok_or("newgidmap is not in PATH")?;
        let subuid = subordinate_range(Path::new("/etc/subuid"), name.as_deref(), uid)
            .ok_or_else(|| format!("/etc/subuid has no range for {}", who(&name, uid)))?;
        let subgid = subordinate_range(Path::new("/etc/subgid"), name.as_deref(), uid)
            .ok_or_else(|| format!("/etc/subgid has no range for {}", who(&name, uid)))?;
        Ok((newuidmap, newgidmap, subuid, subgid))
    })();
    match plan {
        Ok((newuidmap, newgidmap, subuid, subgid)) => {
            run_helper(&newuidmap, pid, uid, subuid)?;
            run_helper(&newgidmap, pid, gid, subgid)?;
            Ok(None)
        }
        Err(reason) => {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let write = |file: &str, text: String| {
                fs::write(proc.join(file), text)
                    .map_err(io_err(format!("write /proc/{pid}/{file}")))
            };
            write("uid_map", format!("0 {uid} 1\n"))?;
            write("setgroups", "deny\n".into())?;
            write("gid_map", format!("0 {gid} 1\n"))?;
            Ok(Some(reason))
        }
    }
}

fn who(name: &Option<String>, uid: u32) -> String {
    match name {
        Some(n) => format!("user {n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn run_helper(helper: &Path, pid: u32, own: u32, range: (u32, u32)) -> Result<(), UserNsError> {
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(["0", &own.to_string(), "1"])
        .args(["1", &range.0.to_string(), &range.1.to_string()])
        .output()
        .map_err(io_err(format!("run {}", helper.display())))?;
    if !out.status.success() {
        return Err(UserNsError::Setup(format!(
            "{} {pid} 0 {own} 1 1 {} {} failed ({}): {}",
            helper.display(),
            range.0,
            range.1,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The user's first range in a subuid/subgid file, as (start, count ≤ 65536).
fn subordinate_range(file: &Path, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    parse_subordinate(&text, name, uid)
}

fn parse_subordinate(text: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let uid_text = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        if owner != uid_text && Some(owner) != name {
            return None;
        }
        let start: u32 = start.parse().ok()?;
        let count: u64 = count.parse().ok()?;
        let count = count.min(MAX_SUBORDINATE);
        (count > 0).then_some((start, u32::try_from(count).ok()?))
    })
}

/// The login name of `uid`, from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_absolute() && p.is_file())
}

fn parse_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            match f[..] {
                [inside, outside, count] => Some(IdRange {
                    inside,
                    outside,
                    count,
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:1000000\nbob:200000:0\n";
        assert_eq!(
            parse_subordinate(text, Some("alice"), 1000),
            Some((100000, 65536))
        );
        assert_eq!(
            parse_subordinate(text, Some("carol"), 1001),
            Some((300000, 65536))
        );
        assert_eq!(parse_subordinate(text, Some("bob"), 7), None);
        assert_eq!(parse_subordinate(text, None, 9), None);
    }

    #[test]
    fn maps_parse() {
        let m = parse_map("         0       1001          1\n         1     100000      65535\n");
        assert_eq!(
            m,
            [
                IdRange {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65535
                }
            ]
        );
    }
}
