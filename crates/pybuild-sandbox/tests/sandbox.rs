//! The namespace sandbox on a busybox rootfs (needs root, as in CI, and busybox-static).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pybuild_sandbox::{
    Error, ExitStatus, Mount, NamespaceSandbox, Network, Output, RunSpec, Sandbox,
};

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The busybox rootfs, made once (tests only read it: it is always a lower dir).
fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join("busybox-rootfs");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp = base.join(format!("busybox-rootfs.{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/busybox/make-rootfs.sh");
        let st = std::process::Command::new("bash")
            .arg(&script)
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success(), "make-rootfs.sh failed");
        // Another test process may have won the race: keep theirs.
        if fs::rename(&tmp, &dir).is_err() {
            fs::remove_dir_all(&tmp).unwrap();
        }
        dir
    })
}

fn sandbox() -> NamespaceSandbox {
    NamespaceSandbox::new(PathBuf::from(env!(
        "CARGO_BIN_EXE_pybuild-sandbox-test-init"
    )))
}

/// A step's upper and work dirs.
struct Step {
    dir: tempfile::TempDir,
}

impl Step {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        fs::create_dir(dir.path().join("upper")).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        Step { dir }
    }
    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
    fn spec(&self, script: &str) -> RunSpec {
        RunSpec {
            lower_dirs: vec![rootfs().to_path_buf()],
            upper_dir: self.upper(),
            work_dir: self.dir.path().join("work"),
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![PATH.into(), "HOME=/root".into()],
            cwd: "/".into(),
            hostname: "sandbox".into(),
            ..RunSpec::default()
        }
    }
    /// Names in the upper dir, recursively, sorted.
    fn upper_entries(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.upper(), &self.upper(), &mut out);
        out.sort();
        out
    }
}

struct Ran {
    result: Result<ExitStatus, Error>,
    stdout: String,
    stderr: String,
    /// (stream is stdout, chunk, when)
    chunks: Vec<(bool, Vec<u8>, Instant)>,
}

fn run(spec: &RunSpec) -> Ran {
    let mut chunks = Vec::new();
    let result = sandbox().run(spec, &mut |o| match o {
        Output::Stdout(b) => chunks.push((true, b.to_vec(), Instant::now())),
        Output::Stderr(b) => chunks.push((false, b.to_vec(), Instant::now())),
    });
    let text = |out: bool| {
        String::from_utf8(
            chunks
                .iter()
                .filter(|c| c.0 == out)
                .flat_map(|c| c.1.clone())
                .collect(),
        )
        .unwrap()
    };
    let (stdout, stderr) = (text(true), text(false));
    Ran {
        result,
        stdout,
        stderr,
        chunks,
    }
}

/// Runs `script` and expects exit 0; returns stdout.
fn ok(spec: &RunSpec) -> String {
    let r = run(spec);
    assert!(
        matches!(r.result, Ok(ExitStatus::Code(0))),
        "{:?}\nstdout: {}\nstderr: {}",
        r.result,
        r.stdout,
        r.stderr
    );
    r.stdout
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

#[test]
fn output_is_streamed_line_by_line() {
    need_root!();
    let step = Step::new();
    let r = run(&step.spec("echo out1; echo err1 >&2; sleep 1; echo out2; printf tail"));
    assert_eq!(r.result.unwrap(), ExitStatus::Code(0));
    assert_eq!(r.stdout, "out1\nout2\ntail");
    assert_eq!(r.stderr, "err1\n");
    let outs: Vec<_> = r.chunks.iter().filter(|c| c.0).collect();
    assert_eq!(
        outs.iter().map(|c| c.1.as_slice()).collect::<Vec<_>>(),
        [&b"out1\n"[..], b"out2\n", b"tail"]
    );
    // out1 was delivered while the command still ran (before the sleep ended).
    assert!(outs[1].2.duration_since(outs[0].2) >= Duration::from_millis(700));
}

#[test]
fn exit_codes_and_signals() {
    need_root!();
    let step = Step::new();
    assert_eq!(
        run(&step.spec("exit 3")).result.unwrap(),
        ExitStatus::Code(3)
    );
    let step = Step::new();
    assert_eq!(
        run(&step.spec("kill -9 $$")).result.unwrap(),
        ExitStatus::Signal(9)
    );
}

#[test]
fn user_groups_and_working_directory() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("id; pwd; touch mine");
    spec.uid = 1000;
    spec.gid = 1000;
    spec.additional_gids = vec![50];
    spec.cwd = "/home/app/deep/work".into();
    let out = ok(&spec);
    assert_eq!(
        out,
        "uid=1000(app) gid=1000(app) groups=50(staff)\n/home/app/deep/work\n"
    );
    for d in ["home/app/deep", "home/app/deep/work"] {
        let m = fs::metadata(step.upper().join(d)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1000, 1000, 0o755),
            "{d}"
        );
    }
    assert_eq!(
        fs::metadata(step.upper().join("home/app/deep/work/mine"))
            .unwrap()
            .uid(),
        1000
    );
}

#[test]
fn hostname_pid1_and_dev() {
    need_root!();
    let step = Step::new();
    let out = ok(&step
        .spec("hostname; echo $$; tr '\\0' '|' < /proc/1/cmdline; echo; ls /dev | tr '\\n' ' '"));
    assert_eq!(
        out,
        "sandbox\n2\npybuild-init|__pybuild-sandbox-init|\n\
         fd full null ptmx pts random shm stderr stdin stdout tty urandom zero "
    );
    // The nodes work; /dev/shm is writable; a pty can be opened.
    ok(&step.spec("head -c 4 /dev/zero | wc -c | grep -qx 4 && echo x > /dev/null && touch /dev/shm/s && test -c /dev/pts/ptmx"));
}

#[test]
fn sys_is_read_only_and_proc_is_mounted() {
    need_root!();
    let step = Step::new();
    let r = run(&step.spec("grep -E ' /(sys|proc) ' /proc/mounts; touch /sys/x"));
    assert_eq!(r.result.unwrap(), ExitStatus::Code(1));
    assert!(r.stdout.contains("sysfs /sys sysfs ro,"), "{}", r.stdout);
    assert!(r.stdout.contains("proc /proc proc rw,"), "{}", r.stdout);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(
        step.upper_entries().is_empty(),
        "{:?}",
        step.upper_entries()
    );
}

#[test]
fn upper_dir_is_a_diff_dir() {
    need_root!();
    let lower = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let l = lower.path();
    fs::create_dir_all(l.join("data")).unwrap();
    fs::create_dir_all(l.join("olddir")).unwrap();
    fs::write(l.join("data/keep"), "keep").unwrap();
    fs::write(l.join("data/gone"), "gone").unwrap();
    fs::write(l.join("olddir/a"), "a").unwrap();
    fs::write(l.join("which"), "top\n").unwrap();
    let step = Step::new();
    let mut spec = step.spec(
        "cat /which; echo new > /created; echo more >> /etc/passwd; rm /data/gone; \
         rm -rf /olddir && mkdir /olddir && touch /olddir/b; mkfifo /fifo; \
         touch /suid && chmod 4755 /suid",
    );
    // Top-most first: the bottom layer's /which is hidden.
    let bottom = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs::write(bottom.path().join("which"), "bottom\n").unwrap();
    spec.lower_dirs = vec![
        l.to_path_buf(),
        rootfs().to_path_buf(),
        bottom.path().to_path_buf(),
    ];
    assert_eq!(ok(&spec), "top\n");
    let u = step.upper();
    assert_eq!(fs::read_to_string(u.join("created")).unwrap(), "new\n");
    assert!(
        fs::read_to_string(u.join("etc/passwd"))
            .unwrap()
            .ends_with("more\n")
    );
    let gone = fs::symlink_metadata(u.join("data/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "whiteout is a 0/0 char device"
    );
    assert!(!u.join("data/keep").exists());
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(u.join("olddir"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_eq!(fs::read_dir(u.join("olddir")).unwrap().count(), 1);
    assert!(u.join("olddir/b").exists());
    assert!(
        fs::symlink_metadata(u.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::metadata(u.join("suid")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
}

#[test]
fn network_none_has_only_loopback_up() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo");
    spec.network = Network::None;
    let out = ok(&spec);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"));
    assert!(
        lines.next().unwrap().contains("<LOOPBACK,UP,LOWER_UP>"),
        "{out}"
    );
}

#[test]
fn network_host_sees_host_interfaces() {
    need_root!();
    let names = |text: &str| {
        let mut v: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect();
        v.sort();
        v
    };
    let host = names(&fs::read_to_string("/proc/net/dev").unwrap());
    let step = Step::new();
    let out = ok(&step.spec("cat /proc/net/dev"));
    assert_eq!(names(&out), host);
    assert!(host.len() > 1, "host has more than lo: {host:?}");
}

#[test]
fn stdin_is_piped() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("cat");
    spec.stdin = Some(b"hello\nworld\n".to_vec());
    assert_eq!(ok(&spec), "hello\nworld\n");
    // More than a pipe buffer.
    let step = Step::new();
    let mut spec = step.spec("wc -c");
    spec.stdin = Some(vec![b'x'; 300_000]);
    assert_eq!(ok(&spec).trim(), "300000");
    // None is /dev/null.
    let step = Step::new();
    assert_eq!(ok(&step.spec("wc -c")).trim(), "0");
}

#[test]
fn resolv_conf_and_hosts_leave_no_stub() {
    need_root!();
    let t = tempfile::tempdir().unwrap();
    let resolv = t.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 10.9.9.9\n").unwrap();
    let step = Step::new();
    let mut spec = step.spec("cat /etc/resolv.conf /etc/hosts; echo changed >> /etc/hosts");
    spec.resolv_conf = Some(resolv.clone());
    spec.hosts = Some(b"127.0.0.1 localhost sandbox\n".to_vec());
    assert_eq!(
        ok(&spec),
        "nameserver 10.9.9.9\n127.0.0.1 localhost sandbox\n"
    );
    assert!(!rootfs().join("etc/resolv.conf").exists() && !rootfs().join("etc/hosts").exists());
    // No stub, and not even the copied-up /etc.
    assert!(
        step.upper_entries().is_empty(),
        "{:?}",
        step.upper_entries()
    );
    assert_eq!(
        fs::read_to_string(&resolv).unwrap(),
        "nameserver 10.9.9.9\n"
    );

    // A real change in /etc stays, the stubs still go.
    let step = Step::new();
    let mut spec = step.spec("echo 1 > /etc/real");
    spec.resolv_conf = Some(resolv);
    spec.hosts = Some(b"x\n".to_vec());
    ok(&spec);
    assert_eq!(step.upper_entries(), ["etc", "etc/real"]);
}

#[test]
fn bind_and_tmpfs_mounts() {
    need_root!();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), "from host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let step = Step::new();
    let mut spec = step.spec(
        "cat /mnt/ro/f; touch /mnt/ro/x || echo refused; touch /mnt/rw/y; \
         grep ' /cache ' /proc/mounts | cut -d' ' -f3,4; echo c > /cache/f",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: src.path().to_path_buf(),
            target: "/mnt/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: rw.path().to_path_buf(),
            target: "/mnt/rw".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/cache".into(),
            size: Some(1 << 20),
        },
    ];
    let r = run(&spec);
    assert_eq!(r.result.unwrap(), ExitStatus::Code(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "from host\nrefused\ntmpfs rw,nosuid,nodev,relatime,size=1024k\n"
    );
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(rw.path().join("y").exists());
    assert!(!src.path().join("x").exists());
    // Mount points (/mnt, /mnt/ro, /mnt/rw, /cache) are not in the layer.
    assert!(
        step.upper_entries().is_empty(),
        "{:?}",
        step.upper_entries()
    );
}

#[test]
fn scratch_with_a_bound_binary_leaves_only_its_changes() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("");
    spec.lower_dirs = vec![];
    spec.args = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo hi > /x; test -r /proc/1/cmdline".into(),
    ];
    spec.mounts = vec![Mount::Bind {
        source: rootfs().join("bin/busybox"),
        target: "/bin/sh".into(),
        readonly: true,
    }];
    spec.resolv_conf = Some(PathBuf::from("/etc/resolv.conf")).filter(|p| p.exists());
    ok(&spec);
    assert_eq!(step.upper_entries(), ["x"]);
}

#[test]
fn missing_command_is_a_clear_error() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("");
    spec.args = vec!["no-such-command".into()];
    let err = run(&spec).result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-command\": executable file not found in $PATH"
    );
    assert_eq!(err.exit_code(), Some(127));
    spec.args = vec!["/no/such".into()];
    let err = run(&spec).result.unwrap_err();
    assert!(matches!(err, Error::Exec { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "exec: \"/no/such\": ENOENT (No such file or directory)"
    );
}

#[test]
fn setup_failures_name_the_step() {
    need_root!();
    let step = Step::new();
    let mut spec = step.spec("true");
    spec.mounts = vec![Mount::Bind {
        source: "/no/such/source".into(),
        target: "/x".into(),
        readonly: false,
    }];
    let err = run(&spec).result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "sandbox setup: stat bind source /no/such/source: ENOENT (No such file or directory)"
    );
    // A work dir on another filesystem than the upper dir: overlay refuses.
    let step = Step::new();
    let mut spec = step.spec("true");
    spec.work_dir = PathBuf::from("/dev/shm");
    let err = run(&spec).result.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("sandbox setup: mount overlay on /"),
        "{err}"
    );
}

#[test]
fn many_long_lower_dirs_mount_through_relative_paths() {
    need_root!();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut lowers = Vec::new();
    // ~80 bytes each absolute (> a page in all), ~55 relative to the common parent.
    for i in 0..60 {
        let d = base.path().join(format!("{i:03}-{}", "l".repeat(40)));
        fs::create_dir(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("{i}")).unwrap();
        fs::write(d.join("top"), format!("{i}")).unwrap();
        lowers.push(d);
    }
    lowers.push(rootfs().to_path_buf());
    let step = Step::new();
    let mut spec = step.spec("cat /top; cat /f0 /f59");
    spec.lower_dirs = lowers;
    assert_eq!(ok(&spec), "0059");
}

#[test]
fn cancel_kills_the_namespace_and_leaves_no_mount() {
    need_root!();
    let step = Step::new();
    let spec = step.spec("sleep 1234; echo never");
    let cancel = spec.cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        cancel.cancel();
    });
    let started = Instant::now();
    let r = run(&spec);
    t.join().unwrap();
    assert!(matches!(r.result, Err(Error::Cancelled)), "{:?}", r.result);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.stdout.is_empty());
    // No process anywhere still sees the overlay, and the sleep is gone.
    let upper = step.upper().to_string_lossy().into_owned();
    std::thread::sleep(Duration::from_millis(200));
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(mi) = fs::read_to_string(e.path().join("mountinfo")) {
            assert!(
                !mi.contains(&upper),
                "pid {:?} still has the overlay",
                e.file_name()
            );
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            assert_ne!(cmd, b"sleep\x001234\x00", "sleep survived");
        }
    }
    // A cancelled step's upper dir is not in use: it can be removed.
    fs::remove_dir_all(step.upper()).unwrap();
}

#[test]
fn init_reaps_orphans_and_resets_signals() {
    need_root!();
    let step = Step::new();
    // The orphaned sleep is reparented to PID 1, which must reap it: no zombie left.
    let out = ok(&step.spec(
        "sh -c 'sleep 0.2 &'; sleep 0.8; cat /proc/[0-9]*/stat | grep -c ') Z ' || true; \
         grep -E '^Sig(Blk|Ign)' /proc/self/status; yes | head -n 1",
    ));
    assert_eq!(
        out,
        "0\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\n"
    );
}

#[test]
fn processes_stay_private() {
    need_root!();
    let step = Step::new();
    // Only PID 1 (the init), the shell (2), ls and wc are visible.
    let out = ok(&step.spec("ls -d /proc/[0-9]* | wc -l"));
    assert_eq!(out.trim(), "4");
}

#[test]
fn a_panicking_output_callback_does_not_leak_the_sandbox() {
    need_root!();
    let step = Step::new();
    let spec = step.spec("echo go; sleep 4321");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sandbox().run(&spec, &mut |_| panic!("consumer failed"))
    }));
    assert!(r.is_err());
    std::thread::sleep(Duration::from_millis(200));
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            assert_ne!(cmd, b"sleep\x004321\x00", "sleep survived");
        }
    }
}
