//! The robustness suite (issue #8): hostile layers, contexts and registries, kill -9 at
//! random points, concurrent processes on one store, a full disk and secret scanning,
//! all end to end through the real `pybuild` binary. Every module counts the cases it
//! tried and passed and prints a `ROBUST <area>: tried N, passed M` line (run with
//! `--nocapture` to see them); docs/robustness.md records the numbers.
//!
//! `PYBUILD_ROBUST_ITERATIONS` raises the kill -9 iteration count per kind (default 20).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pybuild_testsupport::cmd;
pub use pybuild_testsupport::cmd::{all_output, run_ok};
use pybuild_testsupport::world::{write_busybox_context, write_context};

mod concurrency;
mod context;
mod crash;
mod disk;
mod layers;
mod registry;
mod secrets;

/// One test's world: a temp dir, a store root and a docker config inside it.
#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl World {
    pub fn new(name: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pybuild-robust-{name}-"))
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("store");
        World { dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `pybuild --root ROOT` with a clean environment and docker's config in the world.
    pub fn pybuild(&self) -> Command {
        pybuild_at(&self.root, &self.path("docker-config"))
    }

    /// A context directory with a Dockerfile and files.
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path(name);
        write_context(&ctx, dockerfile, files);
        ctx
    }

    /// The busybox fixture's context (made once per world).
    pub fn busybox_context(&self) -> PathBuf {
        let ctx = self.path("busybox-ctx");
        if !ctx.exists() {
            write_busybox_context(&ctx);
        }
        ctx
    }

    /// Builds the busybox base into the world's store, tagged `busybox`.
    pub fn busybox(&self) {
        let ctx = self.busybox_context();
        run_ok(
            self.pybuild()
                .args(["build", "-q", "-t", "busybox"])
                .arg(ctx),
        );
    }

    /// `pybuild store verify` must succeed.
    pub fn verify(&self) -> Result<(), String> {
        verify_store(&self.root, &self.path("docker-config"))
    }
}

pub fn pybuild_at(root: &Path, docker_config: &Path) -> Command {
    cmd::pybuild_at(env!("CARGO_BIN_EXE_pybuild"), root, docker_config)
}

pub fn verify_store(root: &Path, docker_config: &Path) -> Result<(), String> {
    let out = pybuild_at(root, docker_config)
        .args(["store", "verify"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("store verify: {}", all_output(&out)))
    }
}

/// Tried/passed counts of one area, with the failures' descriptions.
#[derive(Debug, Default)]
pub struct Tally {
    pub area: &'static str,
    pub tried: usize,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn new(area: &'static str) -> Tally {
        Tally {
            area,
            ..Tally::default()
        }
    }

    /// Records one case: `Ok` passed, `Err(why)` failed.
    pub fn case(&mut self, name: &str, result: Result<(), String>) {
        self.tried += 1;
        if let Err(why) = result {
            self.failures.push(format!("{name}: {why}"));
        }
    }

    /// Prints the counts and fails the test when a case failed.
    pub fn finish(self) {
        let passed = self.tried - self.failures.len();
        let line = format!(
            "ROBUST {}: tried {}, passed {passed}\n",
            self.area, self.tried
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        assert!(
            self.failures.is_empty(),
            "{} case(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// The host's architecture as OCI names it.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The peak resident set (kB) of a command run under `/usr/bin/time -v`, with its output.
pub fn peak_rss_kb(cmd: Command) -> (Output, u64) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    assert!(
        Path::new("/usr/bin/time").is_file(),
        "/usr/bin/time is not installed (apt-get install time)"
    );
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(program).args(args).stdin(Stdio::null());
    for (k, v) in envs {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kb = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in /usr/bin/time's output: {stderr}"));
    (out, kb)
}

/// A directory outside every store whose contents must never change: a listing of
/// names, sizes and contents taken at creation and compared by [`Canary::check`].
#[derive(Debug)]
pub struct Canary {
    pub dir: PathBuf,
    before: Vec<(PathBuf, Vec<u8>)>,
}

impl Canary {
    pub fn new(tag: &str) -> Canary {
        let dir = PathBuf::from(format!("/tmp/pybuild-canary-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("keep"), "canary\n").unwrap();
        fs::write(dir.join("sub/keep"), "canary too\n").unwrap();
        let before = snapshot(&dir);
        Canary { dir, before }
    }

    pub fn check(&self) -> Result<(), String> {
        let now = snapshot(&self.dir);
        if now == self.before {
            Ok(())
        } else {
            Err(format!(
                "the canary {} changed: {:?}",
                self.dir.display(),
                now.iter().map(|(p, _)| p).collect::<Vec<_>>()
            ))
        }
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                stack.push(path.clone());
                b"<dir>".to_vec()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else {
                fs::read(&path).unwrap_or_default()
            };
            out.push((path, content));
        }
    }
    out.sort();
    out
}
