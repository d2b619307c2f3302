//! Rootless builds: the real `pybuild` binary run by an unprivileged user that the
//! test creates (`pybuild-rootless-test`, with /etc/subuid and /etc/subgid ranges),
//! through `runuser`. It builds the busybox base (fixtures/busybox) and a RUN on it
//! in a user namespace mapped with newuidmap/newgidmap, and umoci (as root) checks
//! the owners in the image. Without the helpers (a `PATH` where they are not) the
//! build falls back to a single-id map and must fail clearly where another owner is
//! needed.
//!
//! Like the other end-to-end tests, these run as root (CI does) and need umoci,
//! busybox-static, useradd, runuser and the `uidmap` package: a missing tool fails the
//! test with a message saying so.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use pybuild_testsupport::cmd::{assert_success, check_text, require_tool, run};
use pybuild_testsupport::fsx::owner;
use pybuild_testsupport::world::write_busybox_context;

const USER: &str = "pybuild-rootless-test";

/// Serializes the user setup (useradd and the subid files are not safe to race).
static SETUP: Mutex<bool> = Mutex::new(false);

/// Creates the test user (once) with subordinate id ranges; returns its uid.
fn ensure_user() -> u32 {
    let mut done = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    for tool in [
        "useradd",
        "runuser",
        "newuidmap",
        "newgidmap",
        "umoci",
        "busybox",
    ] {
        require_tool(tool);
    }
    if !*done {
        if !run(Command::new("id").arg(USER)).status.success() {
            check_text(Command::new("useradd").args(["-m", USER]));
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            if !text.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
                let mut text = text;
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("{USER}:300000:65536\n"));
                fs::write(file, text).unwrap();
            }
        }
        *done = true;
    }
    check_text(Command::new("id").args(["-u", USER]))
        .trim()
        .parse()
        .unwrap()
}

/// A temp dir owned by the test user, holding the binary and the busybox context.
struct Env {
    dir: tempfile::TempDir,
    uid: u32,
}

impl Env {
    fn new() -> Env {
        let uid = ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("pybuild-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        let env = Env { dir, uid };
        let bin = env.path("pybuild");
        if fs::hard_link(env!("CARGO_BIN_EXE_pybuild"), &bin).is_err() {
            fs::copy(env!("CARGO_BIN_EXE_pybuild"), &bin).unwrap();
        }
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        write_busybox_context(&env.path("busybox-ctx"));
        env.give_to_user(env.dir.path());
        env
    }

    /// Makes `path` (recursively) the test user's. (The fixture's /home/app owner does
    /// not matter: COPY gives context files 0:0 unless --chown.) Never on a store:
    /// its files belong to subordinate ids.
    fn give_to_user(&self, path: &Path) {
        check_text(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{USER}:"))
                .arg(path),
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        let parent = p.parent().unwrap();
        fs::create_dir_all(parent).unwrap();
        fs::write(&p, text).unwrap();
        self.give_to_user(parent);
    }

    /// `pybuild ARGS` as the test user with the store under `XDG_DATA_HOME=DIR/data`,
    /// and `PATH` as given.
    fn pybuild(&self, data: &str, path: &str, args: &[&str]) -> Output {
        let home = self.dir.path().display().to_string();
        run(Command::new("runuser")
            .args(["-u", USER, "--", "env", "-i"])
            .arg(format!("PATH={path}"))
            .arg(format!("HOME={home}"))
            .arg(format!("XDG_DATA_HOME={home}/{data}"))
            .arg(self.path("pybuild"))
            .args(args)
            .current_dir(self.dir.path()))
    }

    fn store(&self, data: &str) -> PathBuf {
        self.path(data).join("pybuild")
    }
}

const FULL_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

#[test]
fn rootless_build_with_run_keeps_owners() {
    let me = check_text(Command::new("id").arg("-u"));
    assert_eq!(
        me.trim(),
        "0",
        "the rootless tests run as root: they create the unprivileged user"
    );
    let env = Env::new();
    let out = env.pybuild(
        "data",
        FULL_PATH,
        &["build", "--progress=plain", "-t", "busybox", "busybox-ctx"],
    );
    assert_success(&out, "rootless build of the busybox base");
    env.write(
        "app/Dockerfile",
        "FROM busybox\n\
         RUN mkdir /data && chown app:app /data && touch /data/f && chown 1000:1000 /data/f \
         && id > /who && cat /proc/self/uid_map\n",
    );
    let out = env.pybuild(
        "data",
        FULL_PATH,
        &["build", "--progress=plain", "-t", "app", "app"],
    );
    assert_success(&out, "rootless build with RUN");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = env.uid.to_string();
    let map_line = |want: &[&str]| {
        log.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().ends_with(want))
    };
    assert!(
        map_line(&["0", &uid, "1"]) && log.lines().any(|l| l.trim_end().ends_with(" 65536")),
        "the RUN's uid map should be 0 -> {uid} plus 65536 subordinate ids:\n{log}"
    );

    // The store is the user's, and an OCI layout umoci reads (as root, so the owners
    // are the image's).
    let store = env.store("data");
    assert!(
        store.join("index.json").is_file(),
        "store not under XDG_DATA_HOME"
    );
    let bundle = env.path("bundle");
    check_text(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:app:latest", store.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(owner(&rootfs.join("data")), (1000, 1000));
    assert_eq!(owner(&rootfs.join("data/f")), (1000, 1000));
    assert_eq!(owner(&rootfs.join("home/app")), (1000, 1000));
    assert_eq!(owner(&rootfs.join("who")), (0, 0));
    assert_eq!(owner(&rootfs.join("bin/busybox")), (0, 0));
    let who = fs::read_to_string(rootfs.join("who")).unwrap();
    assert!(who.starts_with("uid=0(root) gid=0(root)"), "{who}");

    // Without newuidmap/newgidmap: a single-id map. A base image with a file of
    // uid 1000 cannot be unpacked, and says why and how to fix it.
    let archive = env.path("busybox.tar");
    let archive_arg = archive.display().to_string();
    assert_success(
        &env.pybuild("data", FULL_PATH, &["save", "-o", &archive_arg, "busybox"]),
        "save",
    );
    let no_helpers = "/nonexistent";
    assert_success(
        &env.pybuild("single", no_helpers, &["load", "-i", &archive_arg]),
        "load into the single-id store",
    );
    let out = env.pybuild(
        "single",
        no_helpers,
        &["build", "--progress=plain", "-t", "app", "app"],
    );
    assert!(
        !out.status.success(),
        "a single-id build of 1000-owned files succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "is owned by 1000:1000, which is not mapped in this user namespace",
        "newuidmap is not in PATH",
        "uidmap",
        "/etc/subuid",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    // A RUN that gives a file another owner fails with the same explanation.
    env.write(
        "busybox-ctx/Dockerfile.run",
        "FROM scratch\nCOPY rootfs/bin /bin\nRUN id && chown 1000:1000 /bin/busybox\n",
    );
    let out = env.pybuild(
        "single",
        no_helpers,
        &[
            "build",
            "--progress=plain",
            "-f",
            "busybox-ctx/Dockerfile.run",
            "busybox-ctx",
        ],
    );
    assert!(!out.status.success(), "chown to an unmapped id succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "uid=0 gid=0",
        "Invalid argument",
        "maps only your own user",
        "uidmap",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
