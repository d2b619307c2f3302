//! The caller's side of [`NamespaceSandbox::run`]: prepare, spawn the init, stream,
//! wait, clean the upper dir of mount-point stubs.

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{Pid, Signal};

use crate::wire::{Report, WireSpec};
use crate::{Error, ExitStatus, INIT_ARG, Mount, Output, RunSpec, Sandbox};

/// Longest piece of output handed over without a newline.
const MAX_LINE: usize = 64 * 1024;

/// How often a run checks its [`crate::CancelToken`].
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// The real backend: namespaces, overlayfs and `pivot_root` (see the crate docs).
#[derive(Clone, Debug)]
pub struct NamespaceSandbox {
    init_program: PathBuf,
}

impl NamespaceSandbox {
    /// `init_program` is a binary whose `main` calls [`crate::init_main`] when
    /// [`crate::is_init_invocation`] (usually `std::env::current_exe()`).
    pub fn new(init_program: PathBuf) -> Self {
        Self { init_program }
    }
}

enum Msg {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Report(Vec<u8>),
}

/// Kills the init's process group (the outer init and PID 1; the namespace dies with
/// PID 1) unless the init was already reaped, and reaps it. Dropping it (say, when the
/// output callback panics) cleans up too.
struct Reaper {
    child: Child,
    pgid: Option<Pid>,
    status: Option<std::process::ExitStatus>,
}

impl Reaper {
    fn kill(&self) {
        if self.status.is_none() {
            if let Some(pgid) = self.pgid {
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            }
        }
    }

    fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = self.child.wait()?;
        self.status = Some(st);
        Ok(st)
    }
}

struct KillOnUnwind<'a>(&'a Reaper);

impl Drop for KillOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.kill();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
    }
}

impl Sandbox for NamespaceSandbox {
    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(Output<'_>)) -> Result<ExitStatus, Error> {
        validate(spec)?;
        if !rustix::process::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        if spec.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let tmp = tempfile::Builder::new()
            .prefix("pybuild-sandbox-")
            .tempdir()
            .map_err(|source| Error::Prepare {
                what: "create a temporary dir in",
                path: std::env::temp_dir(),
                source,
            })?;
        let prep = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Prepare { what, path, source }
        };
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).map_err(prep("create", &merged))?;
        let lower_dirs = if spec.lower_dirs.is_empty() {
            let empty = tmp.path().join("empty");
            fs::create_dir(&empty).map_err(prep("create", &empty))?;
            vec![empty]
        } else {
            spec.lower_dirs.clone()
        };
        let resolv_conf = match &spec.resolv_conf {
            Some(src) => {
                let copy = tmp.path().join("resolv.conf");
                fs::copy(src, &copy).map_err(prep("copy", src))?;
                Some(copy)
            }
            None => None,
        };
        let hosts = match &spec.hosts {
            Some(bytes) => {
                let path = tmp.path().join("hosts");
                fs::write(&path, bytes).map_err(prep("write", &path))?;
                Some(path)
            }
            None => None,
        };
        let wire = WireSpec {
            lower_dirs,
            upper_dir: spec.upper_dir.clone(),
            work_dir: spec.work_dir.clone(),
            merged_dir: merged,
            args: spec.args.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            uid: spec.uid,
            gid: spec.gid,
            additional_gids: spec.additional_gids.clone(),
            hostname: spec.hostname.clone(),
            network: spec.network,
            mounts: spec.mounts.clone(),
            stdin: spec.stdin.clone(),
            resolv_conf,
            hosts,
            caller_pid: std::process::id() as i32,
        };
        let json = serde_json::to_vec(&wire).map_err(|e| Error::Protocol(e.to_string()))?;

        let (ours, theirs) = UnixStream::pair().map_err(|source| Error::Spawn {
            program: self.init_program.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.init_program);
        cmd.arg0("pybuild-init")
            .arg(INIT_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.init_program.clone(),
            source,
        })?;
        drop(cmd);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let pgid = Pid::from_raw(child.id() as i32);
        let mut reaper = Reaper {
            child,
            pgid,
            status: None,
        };

        let mut reports = Vec::new();
        let mut cancelled = false;
        std::thread::scope(|s| {
            // If `output` panics, the scope would wait forever for the readers of pipes
            // that only close when the sandbox dies: kill it on the way out.
            let _guard = KillOnUnwind(&reaper);
            let (tx, rx) = mpsc::channel();
            let sock = &ours;
            let json = &json;
            s.spawn(move || send_all(sock, json));
            if let Some(out) = stdout {
                let tx = tx.clone();
                s.spawn(move || pump(out, &tx, Msg::Stdout));
            }
            if let Some(err) = stderr {
                let tx = tx.clone();
                s.spawn(move || pump(err, &tx, Msg::Stderr));
            }
            s.spawn(move || pump(sock, &tx, Msg::Report));
            loop {
                match rx.recv_timeout(CANCEL_POLL) {
                    Ok(Msg::Stdout(l)) => output(Output::Stdout(&l)),
                    Ok(Msg::Stderr(l)) => output(Output::Stderr(&l)),
                    Ok(Msg::Report(l)) => reports.push(l),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if !cancelled && spec.cancel.is_cancelled() {
                    cancelled = true;
                    reaper.kill();
                }
            }
        });
        let status = reaper.wait().map_err(|source| Error::Spawn {
            program: self.init_program.clone(),
            source,
        })?;

        let reports: Vec<Report> = reports
            .iter()
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| {
                    Error::Protocol(format!("bad report {:?}: {e}", String::from_utf8_lossy(l)))
                })
            })
            .collect::<Result<_, _>>()?;
        remove_stubs(&spec.upper_dir, &reports)?;
        drop(tmp);

        if cancelled {
            return Err(Error::Cancelled);
        }
        let mut exit = None;
        for r in reports {
            match r {
                Report::Error { step, errno } => return Err(Error::Setup { step, errno }),
                Report::NotFound { program } => return Err(Error::CommandNotFound { program }),
                Report::ExecFailed { program, errno } => {
                    return Err(Error::Exec { program, errno });
                }
                Report::Exit { code: Some(c), .. } => exit = Some(ExitStatus::Code(c)),
                Report::Exit {
                    signal: Some(s), ..
                } => exit = Some(ExitStatus::Signal(s)),
                _ => {}
            }
        }
        exit.ok_or_else(|| Error::InitDied {
            status: status.to_string(),
        })
    }
}

fn send_all(sock: &UnixStream, mut buf: &[u8]) {
    while !buf.is_empty() {
        match rustix::net::send(sock, buf, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Reads `r` to its end, sending whole lines (or [`MAX_LINE`] pieces, or the rest).
fn pump(mut r: impl Read, tx: &mpsc::Sender<Msg>, wrap: fn(Vec<u8>) -> Msg) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let start = pending.len();
        pending.extend_from_slice(&buf[..n]);
        let mut from = 0;
        let mut scan = start;
        while let Some(i) = pending[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + i + 1;
            if tx.send(wrap(pending[from..end].to_vec())).is_err() {
                return;
            }
            from = end;
            scan = end;
        }
        pending.drain(..from);
        if pending.len() >= MAX_LINE && tx.send(wrap(std::mem::take(&mut pending))).is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(wrap(pending));
    }
}

fn validate(spec: &RunSpec) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidSpec(m));
    if spec.args.is_empty() {
        return bad("no command (empty args)".into());
    }
    if !spec.cwd.starts_with('/') {
        return bad(format!("working directory {:?} is not absolute", spec.cwd));
    }
    if spec.hostname.len() > 64 {
        return bad(format!(
            "hostname {:?} is longer than 64 bytes",
            spec.hostname
        ));
    }
    let overlay_dirs = spec
        .lower_dirs
        .iter()
        .chain([&spec.upper_dir, &spec.work_dir]);
    for d in overlay_dirs {
        let s = d.to_string_lossy();
        if !d.is_absolute() {
            return bad(format!("overlay dir {} is not absolute", d.display()));
        }
        // The overlay option syntax separates with ',' and ':'.
        if s.contains([',', ':', '\\', '\n']) {
            return bad(format!(
                "overlay dir {} contains ',', ':' or '\\\\'",
                d.display()
            ));
        }
        if !d.is_dir() {
            return bad(format!("overlay dir {} is not a directory", d.display()));
        }
    }
    match fs::read_dir(&spec.upper_dir).map(|mut r| r.next().is_none()) {
        Ok(true) => {}
        Ok(false) => {
            return bad(format!(
                "upper dir {} is not empty",
                spec.upper_dir.display()
            ));
        }
        Err(source) => {
            return Err(Error::Prepare {
                what: "read",
                path: spec.upper_dir.clone(),
                source,
            });
        }
    }
    for m in &spec.mounts {
        let target = match m {
            Mount::Bind { target, source, .. } => {
                if !source.is_absolute() {
                    return bad(format!("bind source {} is not absolute", source.display()));
                }
                target
            }
            Mount::Tmpfs { target, .. } => target,
        };
        if !target.starts_with('/')
            || Path::new(target)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return bad(format!(
                "mount target {target:?} must be absolute, without `..`"
            ));
        }
    }
    Ok(())
}

/// Takes the mount points the init created out of the upper dir (newest first), and
/// the lower directories that creating them copied up, when they are still empty and
/// unchanged: a RUN's layer holds only what its command did.
fn remove_stubs(upper: &Path, reports: &[Report]) -> Result<(), Error> {
    let within = |p: &str| -> Option<PathBuf> {
        let rel = Path::new(p);
        (!p.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_))))
            .then(|| upper.join(rel))
    };
    let cleanup = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Cleanup { path, source }
    };
    for r in reports.iter().rev() {
        match r {
            Report::Stub { path, dir } => {
                let Some(p) = within(path) else { continue };
                let Ok(meta) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if *dir && meta.is_dir() {
                    remove_empty_dir(&p).map_err(cleanup(&p))?;
                } else if !*dir && meta.is_file() && meta.len() == 0 {
                    fs::remove_file(&p).map_err(cleanup(&p))?;
                }
            }
            Report::CopiedUp {
                path,
                mode,
                uid,
                gid,
            } => {
                use std::os::unix::fs::MetadataExt;
                let Some(p) = within(path) else { continue };
                let Ok(meta) = fs::symlink_metadata(&p) else {
                    continue;
                };
                let unchanged = meta.is_dir()
                    && meta.mode() & 0o7777 == *mode
                    && meta.uid() == *uid
                    && meta.gid() == *gid
                    && !is_opaque(&p);
                if unchanged {
                    remove_empty_dir(&p).map_err(cleanup(&p))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `rmdir`, where "not empty" is not an error.
fn remove_empty_dir(p: &Path) -> io::Result<()> {
    match fs::remove_dir(p) {
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::EEXIST) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 8];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| rustix::fs::lgetxattr(p, *name, &mut buf).is_ok_and(|n| n > 0))
}
