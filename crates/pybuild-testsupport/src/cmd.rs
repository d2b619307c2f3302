//! Running commands in tests: external tools, the `pybuild` binary with a clean
//! environment, and the checks on what they returned.
//!
//! A missing tool fails the test with the Debian package to install; it never skips,
//! so that a machine without the tool cannot pass by testing less.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Variables of the machine's environment that change what `pybuild` does, removed by
/// [`pybuild`] so that a developer's shell cannot change a test's outcome.
pub const PYBUILD_ENV_VARS: &[&str] = &[
    "PYBUILD_DEBUG",
    "PYBUILD_CONFIG",
    "PYBUILD_ROOT",
    "PYBUILD_REGISTRY_TIMEOUT",
    "PYBUILD_REGISTRY_RETRIES",
    "SOURCE_DATE_EPOCH",
    "SSH_AUTH_SOCK",
];

/// The Debian package that ships `tool`, for the "not installed" message.
fn package_of(tool: &str) -> &str {
    match tool {
        "busybox" => "busybox-static",
        "sha256sum" | "id" | "chown" => "coreutils",
        "kill" | "ps" | "pgrep" => "procps",
        "newuidmap" | "newgidmap" => "uidmap",
        "useradd" => "passwd",
        "runuser" | "mount" | "umount" => "util-linux",
        other => other,
    }
}

/// Whether an executable named `name` is in one of `PATH`'s directories.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// Fails the test unless `name` is on `PATH`; the message names its package.
#[track_caller]
pub fn require_tool(name: &str) {
    let hint = format!("apt-get install {}", package_of(name));
    require_tool_hinted(name, &hint);
}

/// Fails the test unless `name` is on `PATH`; the message ends with `hint`.
#[track_caller]
pub fn require_tool_hinted(name: &str, hint: &str) {
    assert!(
        on_path(name),
        "`{name}` is not installed but these tests need it ({hint})"
    );
}

/// A command for the external tool `name`, with standard input closed; fails the test
/// when the tool is not installed.
#[track_caller]
pub fn tool(name: &str) -> Command {
    require_tool(name);
    let mut cmd = Command::new(name);
    cmd.stdin(Stdio::null());
    cmd
}

/// Like [`tool`], with `hint` (e.g. one `apt-get install` line for a whole suite) in
/// the message when the tool is missing.
#[track_caller]
pub fn tool_hinted(name: &str, hint: &str) -> Command {
    require_tool_hinted(name, hint);
    let mut cmd = Command::new(name);
    cmd.stdin(Stdio::null());
    cmd
}

/// The `pybuild` binary at `bin` (a test passes `env!("CARGO_BIN_EXE_pybuild")`) with
/// standard input closed and none of [`PYBUILD_ENV_VARS`].
pub fn pybuild(bin: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(bin.as_ref());
    for var in PYBUILD_ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// [`pybuild`] with `--root ROOT` and docker's credentials read from (and written
/// to) `docker_config` instead of the machine's `~/.docker`.
pub fn pybuild_at(bin: impl AsRef<Path>, root: &Path, docker_config: &Path) -> Command {
    let mut cmd = pybuild(bin);
    cmd.env("DOCKER_CONFIG", docker_config)
        .arg("--root")
        .arg(root);
    cmd
}

/// `podman` with this machine's constraints (see ../shared/notes/machine-facts.md):
/// runc (crun fails on hybrid cgroups), cgroupfs, host networking, lowered ulimits,
/// and its own configuration and storage under `scratch` so that the machine's images
/// are never touched.
#[track_caller]
pub fn podman(scratch: &Path) -> Command {
    let conf = scratch.join("containers.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[containers]\nnetns = \"host\"\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
        )
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    }
    let mut cmd = tool("podman");
    cmd.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(scratch.join("podman/root"))
        .arg("--runroot")
        .arg(scratch.join("podman/run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

/// Bytes as (lossy) UTF-8 text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The standard output of `out` as text.
pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

/// The standard error of `out` as text.
pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// Standard output followed by standard error, as text.
pub fn all_output(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Runs `cmd` with standard input closed and returns what it did; fails the test only
/// when it cannot be started.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs `cmd` with `input` on its standard input and returns what it did.
#[track_caller]
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let written = child.stdin.take().expect("stdin").write_all(input);
    // A command may exit without reading its input (a usage error is found before
    // stdin is read): the broken pipe is then expected, and its exit status is what
    // the test checks.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("write stdin of {cmd:?}: {e}");
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"))
}

/// Runs `cmd` and requires success; returns what it did.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    out
}

/// Runs `cmd`, requires success and returns its standard output.
#[track_caller]
pub fn check(cmd: &mut Command) -> Vec<u8> {
    run_ok(cmd).stdout
}

/// Like [`check`], with the output as text.
#[track_caller]
pub fn check_text(cmd: &mut Command) -> String {
    text(&check(cmd))
}

/// Fails the test, showing both output streams, unless `out` is a success; `what`
/// names the step in the message.
#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Fails the test, showing both output streams, unless `out` exited with `code`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Requires exit status 0 and returns standard output.
#[track_caller]
pub fn assert_ok(out: &Output) -> String {
    assert_exit(out, 0);
    stdout(out)
}

/// Requires exit status 1 (pybuild's failure) and returns standard error.
#[track_caller]
pub fn assert_fails(out: &Output) -> String {
    assert_exit(out, 1);
    stderr(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_named_for_tools_shipped_under_another_name() {
        assert_eq!(package_of("busybox"), "busybox-static");
        assert_eq!(package_of("newuidmap"), "uidmap");
        assert_eq!(package_of("skopeo"), "skopeo");
    }

    #[test]
    fn checks_pass_on_success_and_report_output() {
        assert_eq!(check_text(Command::new("echo").arg("hi")), "hi\n");
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 1"]));
        assert_eq!(assert_fails(&out), "err\n");
        assert_eq!(all_output(&out), "out\nerr\n");
        let out = run_with_stdin(&mut Command::new("cat"), b"piped");
        assert_eq!(assert_ok(&out), "piped");
    }

    #[test]
    #[should_panic(expected = "`pybuild-no-such-tool` is not installed")]
    fn a_missing_tool_fails_the_test() {
        tool("pybuild-no-such-tool");
    }

    #[test]
    fn pybuild_clears_the_machines_settings() {
        let cmd = pybuild("/nonexistent/pybuild");
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in PYBUILD_ENV_VARS {
            assert!(removed.iter().any(|r| r == var), "{var} kept");
        }
    }
}
