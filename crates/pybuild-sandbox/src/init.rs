//! The re-executed helper: the outer init, PID 1 of the new PID namespace, and the
//! command's process up to `execve`. Everything here runs in a single-threaded process.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::mount::{
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::sys;
use crate::wire::{Report, WireSpec};
use crate::{DEFAULT_PATH, Mount, Network};

/// Device nodes bind-mounted from the host into the sandbox's `/dev`.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Exit code of the init when setup failed (as runc/podman use 125 for their own
/// failures); the report on the socket says what failed.
const SETUP_FAILED: i32 = 125;

/// A failed step: what was being done, and the errno.
struct Failure {
    step: String,
    errno: i32,
}

trait RawErrno {
    fn raw(&self) -> i32;
}
impl RawErrno for io::Error {
    fn raw(&self) -> i32 {
        self.raw_os_error().unwrap_or(libc::EIO)
    }
}
impl RawErrno for rustix::io::Errno {
    fn raw(&self) -> i32 {
        self.raw_os_error()
    }
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
}
impl<T, E: RawErrno> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            step: what(),
            errno: e.raw(),
        })
    }
}

/// The report channel (the socket the caller gave as stdin, moved off fd 0).
struct Reporter(OwnedFd);

impl Reporter {
    fn send(&self, report: &Report) {
        let Ok(mut line) = serde_json::to_vec(report) else {
            return;
        };
        line.push(b'\n');
        let mut buf = &line[..];
        while !buf.is_empty() {
            match rustix::net::send(&self.0, buf, rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => buf = &buf[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    fn fail(&self, f: Failure) {
        self.send(&Report::Error {
            step: f.step,
            errno: f.errno,
        });
    }
}

/// Entry point of the re-executed helper (see the crate docs). Call it first thing in
/// `main` when [`crate::is_init_invocation`] is true; it never returns.
pub fn init_main() -> ! {
    // SAFETY: fd 0 is open for the whole life of the process (it is replaced below,
    // after being duplicated, never closed in between).
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let Ok(sock) = rustix::io::fcntl_dupfd_cloexec(stdin, 3) else {
        std::process::exit(SETUP_FAILED)
    };
    let rep = Reporter(sock);
    let code = match outer(&rep) {
        Ok(code) => code,
        Err(f) => {
            rep.fail(f);
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn read_spec(rep: &Reporter) -> Result<WireSpec, Failure> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match rustix::io::read(&rep.0, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).step(|| "read the spec".into()),
        }
    }
    serde_json::from_slice(&buf).map_err(|_| Failure {
        step: "parse the spec".into(),
        errno: libc::EINVAL,
    })
}

/// The outer init: namespaces, then fork PID 1 and wait for it.
fn outer(rep: &Reporter) -> Result<i32, Failure> {
    let spec = read_spec(rep)?;
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .step(|| "open /dev/null".into())?;
    rustix::stdio::dup2_stdin(&null).step(|| "dup /dev/null to stdin".into())?;
    drop(null);
    rustix::process::umask(Mode::from_raw_mode(0o022));

    // Die with the caller; and if it is already gone, do nothing at all.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .step(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    if rustix::process::getppid()
        .map(Pid::as_raw_nonzero)
        .map(|p| p.get())
        != Some(spec.caller_pid)
    {
        return Ok(SETUP_FAILED);
    }

    // Rootless: the whole program already runs as root of a user namespace
    // (`crate::userns`), so the namespaces below are owned by it; nothing to do here.
    let mut flags = rustix::thread::UnshareFlags::NEWNS
        | rustix::thread::UnshareFlags::NEWPID
        | rustix::thread::UnshareFlags::NEWUTS
        | rustix::thread::UnshareFlags::NEWIPC;
    if spec.network == Network::None {
        flags |= rustix::thread::UnshareFlags::NEWNET;
    }
    // SAFETY: the process is single-threaded and CLONE_FILES is not among the flags, so
    // no thread can observe a file descriptor table it does not share.
    unsafe { rustix::thread::unshare_unsafe(flags) }.step(|| format!("unshare({flags:?})"))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .step(|| "make / recursively private".into())?;

    sys::take_over_signals().step(|| "block signals".into())?;
    let (alive_r, alive_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).step(|| "pipe".into())?;
    match sys::fork().step(|| "fork PID 1 of the new PID namespace".into())? {
        None => {
            drop(alive_w);
            pid1(&spec, rep, alive_r)
        }
        Some(child) => {
            drop(alive_r);
            let status = supervise(child);
            drop(alive_w);
            Ok(status_code(status))
        }
    }
}

fn status_code(st: Option<WaitStatus>) -> i32 {
    match st {
        Some(st) => match (st.exit_status(), st.terminating_signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => SETUP_FAILED,
        },
        None => SETUP_FAILED,
    }
}

/// Waits for `child`, reaping every other child on the way and forwarding the
/// termination signals to it. `None` if waiting itself failed.
fn supervise(child: Pid) -> Option<WaitStatus> {
    loop {
        match sys::wait_signal() {
            Ok(libc::SIGCHLD) => loop {
                match rustix::process::wait(WaitOptions::NOHANG) {
                    Ok(Some((pid, st))) if pid == child => return Some(st),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => return None,
                }
            },
            Ok(sig) => {
                let _ = rustix::process::kill_process(child, Signal::from_named_raw(sig)?);
            }
            Err(_) => {
                return rustix::process::waitpid(Some(child), WaitOptions::empty())
                    .ok()
                    .flatten()
                    .map(|(_, st)| st);
            }
        }
    }
}

/// PID 1 of the new PID namespace.
fn pid1(spec: &WireSpec, rep: &Reporter, alive: OwnedFd) -> ! {
    let result = (|| {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
            .step(|| "prctl(PR_SET_PDEATHSIG)".into())?;
        // The outer init holds the pipe's write end: EOF means it died before the
        // death signal was armed.
        let mut fds = [rustix::event::PollFd::new(
            &alive,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&zero)).step(|| "poll".into())?;
        if !fds[0].revents().is_empty() {
            return Ok(SETUP_FAILED);
        }
        drop(alive);
        setup_and_run(spec, rep)
    })();
    match result {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            rep.fail(f);
            std::process::exit(SETUP_FAILED)
        }
    }
}

fn cstring(s: impl Into<Vec<u8>>, what: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| Failure {
        step: format!("{what} contains a NUL byte"),
        errno: libc::EINVAL,
    })
}

/// The overlay's option string, with `dirs` = lowers..., upper, work. In a user
/// namespace overlayfs cannot use `trusted.*` xattrs: `userxattr` makes it use
/// `user.overlay.*` (opaque markers included), and it refuses `redirect_dir=off`
/// there (which still follows redirects) but takes `nofollow`.
fn overlay_options(lowers: &[String], upper: &str, work: &str, userns: bool) -> String {
    let features = if userns {
        "userxattr,redirect_dir=nofollow,metacopy=off,index=off"
    } else {
        "redirect_dir=off,metacopy=off,index=off"
    };
    format!(
        "lowerdir={},upperdir={upper},workdir={work},{features}",
        lowers.join(":")
    )
}

fn mount_overlay(spec: &WireSpec, userns: bool) -> Result<(), Failure> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let lowers: Vec<String> = spec.lower_dirs.iter().map(|p| s(p)).collect();
    let mut data = overlay_options(&lowers, &s(&spec.upper_dir), &s(&spec.work_dir), userns);
    let page = rustix::param::page_size();
    if data.len() >= page {
        // mount(2) copies at most one page of options. Relative paths resolve against
        // the cwd at mount time, so go to the directories' common parent.
        let all: Vec<&Path> = spec
            .lower_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([spec.upper_dir.as_path(), spec.work_dir.as_path()])
            .collect();
        let base = common_parent(&all);
        rustix::process::chdir(&base).step(|| format!("chdir to {}", base.display()))?;
        let rel = |p: &Path| {
            let r = p.strip_prefix(&base).map(s).unwrap_or_else(|_| s(p));
            if r.is_empty() { ".".to_string() } else { r }
        };
        let lowers: Vec<String> = spec.lower_dirs.iter().map(|p| rel(p)).collect();
        data = overlay_options(&lowers, &rel(&spec.upper_dir), &rel(&spec.work_dir), userns);
        if data.len() >= page {
            return Err(Failure {
                step: format!(
                    "mount overlay on {}: {} lower dirs give {} bytes of options even relative to {}",
                    spec.merged_dir.display(),
                    lowers.len(),
                    data.len(),
                    base.display()
                ),
                errno: libc::E2BIG,
            });
        }
    }
    let data = cstring(data, "overlay options")?;
    rustix::mount::mount(
        "overlay",
        &spec.merged_dir,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .step(|| format!("mount overlay on {}", spec.merged_dir.display()))
}

fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut base: PathBuf = paths.first().map(|p| p.to_path_buf()).unwrap_or_default();
    for p in paths {
        while !p.starts_with(&base) {
            if !base.pop() {
                return PathBuf::from("/");
            }
        }
    }
    base
}

/// Creates missing mount points in the merged tree (after `pivot_root`, so every path
/// and symlink resolves inside the image) and reports them, and the lower directories
/// their creation copied up, so the caller can take them out of the upper dir.
struct Stubs<'a> {
    upper: OwnedFd,
    rep: &'a Reporter,
}

impl Stubs<'_> {
    fn dir(&self, target: &str) -> Result<(), Failure> {
        let parts = components(target)?;
        let mut cur = PathBuf::from("/");
        for part in parts {
            cur.push(part);
            self.ensure(&cur, true)?;
        }
        Ok(())
    }

    fn file(&self, target: &str) -> Result<(), Failure> {
        let parts = components(target)?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(Failure {
                step: format!("mount target {target:?} is the root"),
                errno: libc::EINVAL,
            });
        };
        let mut cur = PathBuf::from("/");
        for part in parents {
            cur.push(part);
            self.ensure(&cur, true)?;
        }
        cur.push(last);
        self.ensure(&cur, false)
    }

    fn ensure(&self, path: &Path, dir: bool) -> Result<(), Failure> {
        match fs::metadata(path) {
            Ok(m) if dir && !m.is_dir() => Err(Failure {
                step: format!("mount point {} is not a directory", path.display()),
                errno: libc::ENOTDIR,
            }),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(Failure {
                        step: format!("mount point {} is a dangling symlink", path.display()),
                        errno: libc::ENOENT,
                    });
                }
                self.create(path, dir)
            }
            Err(e) => Err(e).step(|| format!("stat mount point {}", path.display())),
        }
    }

    fn create(&self, path: &Path, dir: bool) -> Result<(), Failure> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().unwrap_or_default();
        let real_parent =
            fs::canonicalize(parent).step(|| format!("resolve {}", parent.display()))?;
        let rel_parent = real_parent
            .strip_prefix("/")
            .unwrap_or(&real_parent)
            .to_path_buf();
        // Lower directories that are not in the upper dir yet get copied up now.
        let mut missing = Vec::new();
        let mut a = PathBuf::new();
        for c in rel_parent.components() {
            a.push(c);
            if rustix::fs::statat(&self.upper, &a, AtFlags::SYMLINK_NOFOLLOW).is_err() {
                missing.push(a.clone());
            }
        }
        if dir {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(path)
                .step(|| format!("create mount point {}", path.display()))?;
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
                .step(|| format!("create mount point {}", path.display()))?;
        }
        for m in missing {
            if let Ok(st) = rustix::fs::statat(&self.upper, &m, AtFlags::SYMLINK_NOFOLLOW) {
                self.rep.send(&Report::CopiedUp {
                    path: m.to_string_lossy().into_owned(),
                    mode: st.st_mode & 0o7777,
                    uid: st.st_uid,
                    gid: st.st_gid,
                });
            }
        }
        self.rep.send(&Report::Stub {
            path: rel_parent.join(name).to_string_lossy().into_owned(),
            dir,
        });
        Ok(())
    }
}

/// The normal components of an absolute in-image path; `..` is refused.
fn components(target: &str) -> Result<Vec<String>, Failure> {
    let p = Path::new(target);
    if !p.is_absolute() {
        return Err(Failure {
            step: format!("mount target {target:?} is not absolute"),
            errno: libc::EINVAL,
        });
    }
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Failure {
                    step: format!("mount target {target:?} contains `..`"),
                    errno: libc::EINVAL,
                });
            }
        }
    }
    Ok(out)
}

/// A detached copy of a host file or tree, taken before `pivot_root`.
fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, Failure> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(CWD, source, flags)
        .step(|| format!("open_tree (bind source) {}", source.display()))
}

fn attach(tree: &OwnedFd, target: &str) -> Result<(), Failure> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .step(|| format!("bind mount on {target}"))
}

/// A new, detached instance of `fstype` (fsopen(2), fsmount(2)).
fn detached_fs(fstype: &str, attrs: rustix::mount::MountAttrFlags) -> Result<OwnedFd, Failure> {
    let what = || format!("mount {fstype} (detached)");
    let fs =
        rustix::mount::fsopen(fstype, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC).step(what)?;
    rustix::mount::fsconfig_create(&fs).step(what)?;
    rustix::mount::fsmount(&fs, rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC, attrs).step(what)
}

fn mount_fs(fstype: &str, target: &str, flags: MountFlags, data: &str) -> Result<(), Failure> {
    let data = cstring(data, "mount options")?;
    rustix::mount::mount(fstype, target, fstype, flags, Some(data.as_c_str()))
        .step(|| format!("mount {fstype} on {target}"))
}

fn setup_and_run(spec: &WireSpec, rep: &Reporter) -> Result<i32, Failure> {
    let userns = crate::userns::UserNs::current();
    mount_overlay(spec, userns.is_namespace())?;
    // In a single-id user namespace the kernel denies setgroups (user_namespaces(7)).
    let setgroups_denied =
        fs::read_to_string("/proc/self/setgroups").is_ok_and(|t| t.trim() == "deny");
    let upper = rustix::fs::open(
        &spec.upper_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .step(|| format!("open {}", spec.upper_dir.display()))?;

    // Bind sources are cloned while the host tree is reachable; they are attached
    // after pivot_root. (A plain bind from the old root would fail once it is detached:
    // the kernel only binds mounts of the caller's own namespace.)
    let mut dev_trees = Vec::new();
    for name in DEV_NODES {
        let host = PathBuf::from("/dev").join(name);
        match clone_tree(&host, false) {
            Ok(t) => dev_trees.push((name, t)),
            // A host without /dev/tty (no such node at all) still gets the others.
            Err(f) if f.errno == libc::ENOENT && name == "tty" => {}
            Err(f) => return Err(f),
        }
    }
    let resolv = spec
        .resolv_conf
        .as_deref()
        .map(|p| clone_tree(p, false))
        .transpose()?;
    let hosts = spec
        .hosts
        .as_deref()
        .map(|p| clone_tree(p, false))
        .transpose()?;
    // In a user namespace the kernel lets proc and sysfs be mounted only while a fully
    // visible instance is in the mount namespace (mount_too_revealing): they are
    // made now, as detached mounts, and attached after pivot_root. A fresh sysfs also
    // needs a network namespace owned by the user namespace: sharing the host's
    // network, the host's /sys is bound instead, made read-only (recursively).
    let nosuid_nodev_noexec_attr = rustix::mount::MountAttrFlags::MOUNT_ATTR_NOSUID
        | rustix::mount::MountAttrFlags::MOUNT_ATTR_NODEV
        | rustix::mount::MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let (userns_proc, userns_sys) = if userns.is_namespace() {
        let proc = detached_fs("proc", nosuid_nodev_noexec_attr)?;
        let sys = if spec.network == Network::None {
            detached_fs(
                "sysfs",
                nosuid_nodev_noexec_attr | rustix::mount::MountAttrFlags::MOUNT_ATTR_RDONLY,
            )?
        } else {
            let tree = clone_tree(Path::new("/sys"), true)?;
            sys::set_tree_read_only(&tree).step(|| "make the /sys bind read-only".into())?;
            tree
        };
        (Some(proc), Some(sys))
    } else {
        (None, None)
    };
    let mut extra = Vec::new();
    for m in &spec.mounts {
        extra.push(match m {
            Mount::Bind { source, .. } => {
                let is_dir = fs::metadata(source)
                    .step(|| format!("stat bind source {}", source.display()))?
                    .is_dir();
                Some((clone_tree(source, true)?, is_dir))
            }
            Mount::Tmpfs { .. } => None,
        });
    }

    // pivot_root(".", "."): the old root ends up stacked on top of the new one and is
    // detached right away (pivot_root(2), NOTES).
    rustix::process::chdir(&spec.merged_dir)
        .step(|| format!("chdir to {}", spec.merged_dir.display()))?;
    rustix::process::pivot_root(".", ".")
        .step(|| format!("pivot_root into {}", spec.merged_dir.display()))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).step(|| "detach the old root".into())?;
    rustix::process::chdir("/").step(|| "chdir to /".into())?;

    let stubs = Stubs { upper, rep };
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    stubs.dir("/proc")?;
    match &userns_proc {
        Some(tree) => attach(tree, "/proc")?,
        None => mount_fs("proc", "/proc", nosuid_nodev_noexec, "")?,
    }
    stubs.dir("/sys")?;
    match &userns_sys {
        Some(tree) => attach(tree, "/sys")?,
        None => mount_fs(
            "sysfs",
            "/sys",
            nosuid_nodev_noexec | MountFlags::RDONLY,
            "",
        )?,
    }

    stubs.dir("/dev")?;
    mount_fs(
        "tmpfs",
        "/dev",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for (name, tree) in &dev_trees {
        let target = format!("/dev/{name}");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&target)
            .step(|| format!("create {target}"))?;
        attach(tree, &target)?;
    }
    let mkdir = |p: &str, mode: u32| {
        fs::DirBuilder::new()
            .mode(mode)
            .create(p)
            .step(|| format!("mkdir {p}"))
    };
    mkdir("/dev/pts", 0o755)?;
    mount_fs(
        "devpts",
        "/dev/pts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    mkdir("/dev/shm", 0o1777)?;
    mount_fs(
        "tmpfs",
        "/dev/shm",
        nosuid_nodev_noexec,
        "mode=1777,size=65536k",
    )?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link).step(|| format!("symlink {link}"))?;
    }

    for (tree, target) in [(&resolv, "/etc/resolv.conf"), (&hosts, "/etc/hosts")] {
        if let Some(tree) = tree {
            stubs.file(target)?;
            attach(tree, target)?;
        }
    }

    for (m, tree) in spec.mounts.iter().zip(&extra) {
        match (m, tree) {
            (
                Mount::Bind {
                    target, readonly, ..
                },
                Some((tree, is_dir)),
            ) => {
                if *is_dir {
                    stubs.dir(target)?
                } else {
                    stubs.file(target)?
                }
                attach(tree, target)?;
                if *readonly {
                    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                        .step(|| format!("remount {target} read-only"))?;
                }
            }
            (Mount::Tmpfs { target, size }, _) => {
                stubs.dir(target)?;
                let opts = size.map(|s| format!("size={s}")).unwrap_or_default();
                mount_fs(
                    "tmpfs",
                    target,
                    MountFlags::NOSUID | MountFlags::NODEV,
                    &opts,
                )?;
            }
            _ => {}
        }
    }
    drop(stubs);

    if !spec.hostname.is_empty() {
        rustix::system::sethostname(spec.hostname.as_bytes())
            .step(|| format!("sethostname {:?}", spec.hostname))?;
    }
    if spec.network == Network::None {
        sys::loopback_up().step(|| "bring lo up".into())?;
    }
    make_cwd(&spec.cwd, spec.uid, spec.gid)?;

    // Everything the command's process needs, prepared before forking it.
    let argv: Vec<CString> = spec
        .args
        .iter()
        .map(|a| cstring(a.as_str(), "argument"))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|e| cstring(e.as_str(), "environment entry"))
        .collect::<Result<_, _>>()?;
    let stdin = match &spec.stdin {
        Some(bytes) => Some((
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).step(|| "pipe".into())?,
            bytes,
        )),
        None => None,
    };

    match sys::fork().step(|| "fork the command".into())? {
        None => {
            let stdin_r = stdin.map(|((r, _w), _)| r);
            exec_command(spec, rep, stdin_r, &argv, &envp, setgroups_denied)
        }
        Some(cmd) => {
            if let Some(((r, w), bytes)) = stdin {
                drop(r);
                // A writer process, so a large stdin cannot block the init.
                if sys::fork()
                    .step(|| "fork the stdin writer".into())?
                    .is_none()
                {
                    let mut buf = &bytes[..];
                    while !buf.is_empty() {
                        match rustix::io::write(&w, buf) {
                            Ok(n) => buf = &buf[n..],
                            Err(rustix::io::Errno::INTR) => {}
                            Err(_) => break,
                        }
                    }
                    sys::exit_now(0);
                }
                drop(w);
            }
            let st = supervise(cmd);
            let (code, signal) = match st {
                Some(st) => (st.exit_status(), st.terminating_signal()),
                None => (None, None),
            };
            rep.send(&Report::Exit { code, signal });
            Ok(status_code(st))
        }
    }
}

/// `mkdir -p` of the working directory; created components get 0755 and `uid:gid`.
fn make_cwd(cwd: &str, uid: u32, gid: u32) -> Result<(), Failure> {
    let mut cur = PathBuf::from("/");
    for part in components(cwd)? {
        cur.push(part);
        match fs::metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(Failure {
                    step: format!("working directory {}: not a directory", cur.display()),
                    errno: libc::ENOTDIR,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).step(|| format!("stat working directory {}", cur.display())),
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&cur)
            .step(|| format!("create working directory {}", cur.display()))?;
        std::os::unix::fs::lchown(&cur, Some(uid), Some(gid))
            .step(|| format!("chown working directory {}", cur.display()))?;
    }
    Ok(())
}

/// The command's process: identity, stdin, cwd, `PATH` search, `execve`.
fn exec_command(
    spec: &WireSpec,
    rep: &Reporter,
    stdin: Option<OwnedFd>,
    argv: &[CString],
    envp: &[CString],
    setgroups_denied: bool,
) -> ! {
    let fail = |f: Failure| -> ! {
        rep.fail(f);
        sys::exit_now(SETUP_FAILED)
    };
    sys::reset_signals();
    let _ = rustix::process::setsid();
    if let Some(r) = stdin {
        if let Err(e) = rustix::stdio::dup2_stdin(&r) {
            fail(Failure {
                step: "dup stdin".into(),
                errno: e.raw_os_error(),
            });
        }
    }
    let groups: Vec<rustix::fs::Gid> = spec
        .additional_gids
        .iter()
        .map(|g| rustix::fs::Gid::from_raw(*g))
        .collect();
    if setgroups_denied {
        // The process keeps the groups it has (none that are mapped but its own gid),
        // which is right only if no other group is asked for.
        if spec.additional_gids.iter().any(|g| *g != spec.gid) {
            fail(Failure {
                step: format!(
                    "setgroups {:?} (denied in a single-id user namespace)",
                    spec.additional_gids
                ),
                errno: libc::EPERM,
            });
        }
    } else if let Err(e) = rustix::thread::set_thread_groups(&groups) {
        fail(Failure {
            step: format!("setgroups {:?}", spec.additional_gids),
            errno: e.raw_os_error(),
        });
    }
    if let Err(e) = rustix::thread::set_thread_gid(rustix::fs::Gid::from_raw(spec.gid)) {
        fail(Failure {
            step: format!("setgid {}", spec.gid),
            errno: e.raw_os_error(),
        });
    }
    if let Err(e) = rustix::thread::set_thread_uid(rustix::fs::Uid::from_raw(spec.uid)) {
        fail(Failure {
            step: format!("setuid {}", spec.uid),
            errno: e.raw_os_error(),
        });
    }
    if let Err(e) = rustix::process::chdir(spec.cwd.as_str()) {
        fail(Failure {
            step: format!("chdir to {}", spec.cwd),
            errno: e.raw_os_error(),
        });
    }

    let program = spec.args[0].clone();
    let path = if program.contains('/') {
        Some(PathBuf::from(&program))
    } else {
        let search = spec
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        find_in_path(search, &program)
    };
    let Some(path) = path else {
        rep.send(&Report::NotFound { program });
        sys::exit_now(127)
    };
    let cpath = match CString::new(path.into_os_string().into_encoded_bytes()) {
        Ok(c) => c,
        Err(_) => fail(Failure {
            step: "program path contains a NUL byte".into(),
            errno: libc::EINVAL,
        }),
    };
    let err = sys::execve(&cpath, argv, envp);
    let errno = err.raw();
    rep.send(&Report::ExecFailed { program, errno });
    sys::exit_now(if errno == libc::ENOENT { 127 } else { 126 })
}

/// The first executable regular file named `program` in `search`'s directories (an
/// empty entry is the working directory, as POSIX says).
fn find_in_path(search: &str, program: &str) -> Option<PathBuf> {
    search.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        let meta = fs::metadata(&candidate).ok()?;
        let executable = meta.is_file()
            && rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok()
            && meta.mode() & 0o111 != 0;
        executable.then_some(candidate)
    })
}
