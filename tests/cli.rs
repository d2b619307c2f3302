//! End to end: the command line (argument parsing, the `pybuild -t NAME PATH`
//! shorthand, error output and exit codes), driving the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pybuild_testsupport::cmd::{self, assert_exit, run, run_with_stdin, stderr, stdout};

/// A Dockerfile the parser rejects today: a second `escape` directive.
const BAD_ESCAPE: &str = "# escape=`\n# escape=\\\nFROM a\n";
const BAD_ESCAPE_ERROR: &str =
    "Dockerfile:2:1: error: only one escape parser directive can be used";
/// A valid Dockerfile.
/// (Its base names a loopback port nobody listens on: tests never leave the machine.)
const GOOD: &str = "FROM 127.0.0.1:9/alpine\nRUN echo hi\n";
/// What `pybuild build` says when GOOD's base image is not in the (empty) store.
const NOT_AVAILABLE: &str = "image \"127.0.0.1:9/alpine\" is not in the local store";

/// A scratch directory, unique per test and process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pybuild-cli-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A temp dir holding `Dockerfile` with `text`.
    fn with_dockerfile(test: &str, text: &str) -> Self {
        let dir = Self::new(test);
        fs::write(dir.0.join("Dockerfile"), text).expect("write Dockerfile");
        dir
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn pybuild() -> Command {
    let mut cmd = cmd::pybuild(env!("CARGO_BIN_EXE_pybuild"));
    // Never the machine's own store: one per test process (a test may override it).
    cmd.env(
        "PYBUILD_ROOT",
        std::env::temp_dir().join(format!("pybuild-cli-root-{}", std::process::id())),
    );
    cmd
}

#[test]
fn shorthand_reaches_the_build_command() {
    let dir = TempDir::with_dockerfile("shorthand", BAD_ESCAPE);
    let out = run(pybuild().args(["-t", "x"]).arg(dir.path()));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(BAD_ESCAPE_ERROR), "{}", stderr(&out));
    // The rendered error shows the offending line and a caret.
    assert!(stderr(&out).contains("2 | # escape=\\"), "{}", stderr(&out));
    assert!(stderr(&out).contains('^'), "{}", stderr(&out));
}

#[test]
fn shorthand_with_global_options_first() {
    let dir = TempDir::with_dockerfile("shorthand-global", GOOD);
    let out = run(pybuild()
        .arg("--root")
        .arg(dir.path().join("state"))
        .args(["-t", "x:1"])
        .arg(dir.path())
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(NOT_AVAILABLE), "{err}");
    assert!(err.contains("\"x:1\""), "{err}");
    assert!(err.contains("state"), "--root not passed on: {err}");
}

#[test]
fn shorthand_and_explicit_build_agree() {
    let dir = TempDir::with_dockerfile("shorthand-same", BAD_ESCAPE);
    let short = run(pybuild().arg(dir.path()));
    let long = run(pybuild().arg("build").arg(dir.path()));
    assert_exit(&short, 1);
    assert_eq!(short.stderr, long.stderr);
    assert_eq!(short.status.code(), long.status.code());
}

#[test]
fn missing_base_image_is_a_clear_error() {
    let dir = TempDir::with_dockerfile("not-available", GOOD);
    let out = run(pybuild()
        .args(["build", "-t", "app:latest"])
        .arg(dir.path()));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(NOT_AVAILABLE), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_dockerfile_names_the_path() {
    let dir = TempDir::new("missing-dockerfile");
    let out = run(pybuild().args(["-t", "x"]).arg(dir.path()));
    assert_exit(&out, 1);
    let err = stderr(&out);
    let expected = dir.path().join("Dockerfile");
    assert!(err.contains(&expected.display().to_string()), "{err}");
    assert!(err.contains("use -f to name the Dockerfile"), "{err}");
}

#[test]
fn missing_file_given_with_f_names_the_path() {
    let dir = TempDir::new("missing-f");
    let file = dir.path().join("Containerfile.nope");
    let out = run(pybuild().arg("build").arg("-f").arg(&file).arg(dir.path()));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(&file.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_context_names_the_path() {
    let dir = TempDir::new("missing-context");
    let context = dir.path().join("nowhere");
    let out = run(pybuild().arg(&context));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(&context.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn f_names_a_dockerfile_outside_the_context() {
    let dir = TempDir::new("f-elsewhere");
    let file = dir.path().join("build.Dockerfile");
    fs::write(&file, BAD_ESCAPE).expect("write");
    fs::create_dir(dir.path().join("ctx")).expect("mkdir");
    let out = run(pybuild().arg("-f").arg(&file).arg(dir.path().join("ctx")));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("build.Dockerfile:2:1: error: only one escape"),
        "{err}"
    );
}

#[test]
fn dockerfile_from_stdin_with_f_dash() {
    let dir = TempDir::new("f-stdin");
    let out = run_with_stdin(
        pybuild().args(["build", "-f", "-"]).arg(dir.path()),
        BAD_ESCAPE.as_bytes(),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("-:2:1: error: only one escape parser directive"),
        "{}",
        stderr(&out)
    );

    let out = run_with_stdin(
        pybuild()
            .args(["build", "-f", "-"])
            .arg(dir.path())
            .env("PYBUILD_DEBUG", "1"),
        GOOD.as_bytes(),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(NOT_AVAILABLE), "{err}");
    assert!(err.contains("name: \"-\""), "{err}");
    assert!(err.contains("RUN echo hi"), "{err}");
}

#[test]
fn context_dash_reads_the_dockerfile_from_stdin() {
    let out = run_with_stdin(pybuild().args(["-t", "x", "-"]), BAD_ESCAPE.as_bytes());
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("-:2:1: error: only one escape"),
        "{}",
        stderr(&out)
    );
    // Both from stdin cannot work: a usage error.
    let out = run_with_stdin(pybuild().args(["-f", "-", "-"]), GOOD.as_bytes());
    assert_exit(&out, 2);
}

#[test]
fn secret_source_is_never_echoed() {
    let dir = TempDir::with_dockerfile("secret", GOOD);
    let out = run(pybuild()
        .args(["build", "--secret", "id=x,src=/nonexistent/hunter2-file"])
        .arg(dir.path())
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("SecretSpec"), "settings not printed: {err}");
    assert!(err.contains("\"x\""), "{err}");
    assert!(!err.contains("hunter2"), "secret source echoed: {err}");

    let out = run(pybuild()
        .args(["build", "--secret", "id=x,env=HUNTER2_VAR"])
        .arg(dir.path())
        .env("PYBUILD_DEBUG", "1"));
    assert!(!stderr(&out).contains("HUNTER2"), "{}", stderr(&out));
}

#[test]
fn invalid_secret_is_a_usage_error_that_does_not_echo_it() {
    let dir = TempDir::with_dockerfile("secret-bad", GOOD);
    for bad in [
        "id=x,src=/hunter2,value=hunter2",
        "src=/hunter2",
        "id=x,hunter2",
    ] {
        let out = run(pybuild().args(["build", "--secret", bad]).arg(dir.path()));
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("--secret"), "{err}");
        assert!(!err.contains("hunter2"), "{bad}: {err}");
    }
}

#[test]
fn output_csv_parses() {
    let dir = TempDir::with_dockerfile("output", GOOD);
    let out = run(pybuild()
        .args([
            "build",
            "--output",
            "type=oci,dest=out.tar",
            "-o",
            "type=image,\"name=a,b\"",
        ])
        .arg(dir.path())
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("kind: Oci"), "{err}");
    assert!(err.contains("\"out.tar\""), "{err}");
    assert!(err.contains("\"a,b\""), "{err}");
}

#[test]
fn output_shorthands_parse() {
    let dir = TempDir::with_dockerfile("output-short", GOOD);
    let out = run(pybuild()
        .args(["build", "-o", "outdir"])
        .arg(dir.path())
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("kind: Local"), "{err}");
    assert!(err.contains("\"outdir\""), "{err}");
}

#[test]
fn bad_output_is_a_usage_error() {
    let dir = TempDir::with_dockerfile("output-bad", GOOD);
    for bad in ["type=nope,dest=x", "dest=x,compression=gzip", "type=local"] {
        let out = run(pybuild().args(["build", "--output", bad]).arg(dir.path()));
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("--output"), "{}", stderr(&out));
    }
}

#[test]
fn bad_progress_is_a_usage_error() {
    let dir = TempDir::with_dockerfile("progress", GOOD);
    let out = run(pybuild()
        .args(["build", "--progress", "fancy"])
        .arg(dir.path()));
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("--progress"), "{err}");
    assert!(err.contains("plain"), "possible values not listed: {err}");
    // The shorthand form too.
    let out = run(pybuild().args(["--progress=fancy"]).arg(dir.path()));
    assert_exit(&out, 2);
}

#[test]
fn conflicting_options_are_usage_errors() {
    let dir = TempDir::with_dockerfile("conflicts", GOOD);
    for args in [
        &["-q", "--progress", "plain"][..],
        &["--push"],
        &["--compression", "zstd", "--oci-mediatypes", "false"],
        &["-o", "-", "-o", "type=oci,dest=-"],
    ] {
        let out = run(pybuild().arg("build").args(args).arg(dir.path()));
        assert_exit(&out, 2);
    }
}

#[test]
fn invalid_values_are_usage_errors() {
    let dir = TempDir::with_dockerfile("invalid-values", GOOD);
    for args in [
        &["-t", "Upper/Case"][..],
        &["--build-arg", "=x"],
        &["--platform", "linux//amd64"],
        &["--network", "bridge"],
        &["--ssh", "=x"],
        &["--label", "=x"],
        &["--no-such-option"],
    ] {
        let out = run(pybuild().arg("build").args(args).arg(dir.path()));
        assert_exit(&out, 2);
    }
}

#[test]
fn all_build_options_are_accepted() {
    let dir = TempDir::with_dockerfile(
        "all-options",
        "FROM 127.0.0.1:9/alpine AS final\nARG A\nARG FROM_ENV\nRUN echo hi\n",
    );
    let out = run(pybuild()
        .arg("build")
        .args([
            "-t",
            "registry.example.com:5000/team/app:v1",
            "--tag",
            "app",
        ])
        .args([
            "--build-arg",
            "A=1",
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "NOT_SET_ANYWHERE_XYZ",
        ])
        .args([
            "--target",
            "final",
            "--platform",
            "linux/amd64,linux/arm64/v8",
        ])
        .args([
            "--label",
            "org.opencontainers.image.title=app",
            "--no-cache",
        ])
        .args(["--no-cache-filter", "deps", "--pull", "--progress", "plain"])
        .args(["--output", "type=local,dest=out", "--push"])
        .args(["--iidfile", "iid", "--metadata-file", "meta.json"])
        .args([
            "--ssh",
            "default",
            "--ssh",
            "gh=/k1,/k2",
            "--network",
            "none",
        ])
        .args([
            "--squash",
            "--compression",
            "zstd",
            "--oci-mediatypes",
            "true",
        ])
        .arg(dir.path())
        .env("FROM_ENV", "from the environment")
        .env("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
        .env_remove("NOT_SET_ANYWHERE_XYZ")
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    // Everything parsed and resolved; the build then fails at its base image, which
    // no registry serves.
    assert!(err.contains(NOT_AVAILABLE), "{err}");
    assert!(err.contains("\"from the environment\""), "{err}");
    assert!(
        err.contains("warning: --build-arg NOT_SET_ANYWHERE_XYZ"),
        "no warning for the unset build arg: {err}"
    );
    assert!(err.contains("\"linux/arm64/v8\""), "{err}");
    assert!(
        err.contains("kind: Image"),
        "--push did not add an image output: {err}"
    );
}

#[test]
fn help_lists_the_commands() {
    let out = run(pybuild().arg("--help"));
    assert_exit(&out, 0);
    let help = stdout(&out);
    assert!(help.contains("build"), "{help}");
    assert!(help.contains("debug"), "{help}");

    let out = run(pybuild().args(["build", "--help"]));
    assert_exit(&out, 0);
    let help = stdout(&out);
    for option in [
        "--tag",
        "--file",
        "--build-arg",
        "--output",
        "--secret",
        "--progress",
        "--root",
    ] {
        assert!(
            help.contains(option),
            "{option} missing from build --help:\n{help}"
        );
    }

    let out = run(pybuild().arg("help"));
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("build"));
}

#[test]
fn no_arguments_is_a_usage_error() {
    let out = run(&mut pybuild());
    assert_exit(&out, 2);
}

#[test]
fn version_is_printed() {
    let out = run(pybuild().arg("--version"));
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("pybuild "), "{}", stdout(&out));
}

#[test]
fn debug_graph_prints_stages_order_and_pruning() {
    let dir = TempDir::with_dockerfile(
        "graph",
        "ARG BASE=alpine\nFROM $BASE AS deps\nRUN true\nFROM alpine AS unused\nFROM scratch AS x\nCOPY --from=deps /a /a\n",
    );
    let file = dir.path().join("Dockerfile");
    let out = run(pybuild().args(["debug", "graph"]).arg(&file).args([
        "--target",
        "x",
        "--build-arg",
        "BASE=busybox",
        "--platform",
        "linux/arm64",
    ]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("target linux/arm64"), "{text}");
    assert!(
        text.contains("stage 0 \"deps\" from image busybox (needed)"),
        "{text}"
    );
    assert!(
        text.contains("stage 1 \"unused\" from image alpine (pruned)"),
        "{text}"
    );
    assert!(text.contains("order: deps -> x"), "{text}");

    let out = run(pybuild()
        .args(["debug", "graph"])
        .arg(&file)
        .args(["--target", "nope"]));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
    assert!(
        err.contains("deps, unused, x"),
        "the hint lists the stages: {err}"
    );

    fs::write(&file, BAD_ESCAPE).expect("write");
    let out = run(pybuild().args(["debug", "graph"]).arg(&file));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(BAD_ESCAPE_ERROR), "{}", stderr(&out));
}

#[test]
fn build_rejects_unknown_instructions_with_position_and_hint() {
    let dir = TempDir::with_dockerfile("runn", "FROM alpine\nRUNN echo\n");
    let out = run(pybuild().args(["-t", "x"]).arg(dir.path()));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2:1: error: unknown instruction: RUNN"),
        "{err}"
    );
    assert!(err.contains("did you mean RUN?"), "{err}");
}

#[test]
fn root_and_config_come_from_the_environment() {
    let dir = TempDir::with_dockerfile("env-globals", GOOD);
    let out = run(pybuild()
        .arg(dir.path())
        .env("PYBUILD_ROOT", "/some/root-from-env")
        .env("PYBUILD_CONFIG", "/some/config-from-env.toml")
        .env("PYBUILD_DEBUG", "1"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("root-from-env"), "{err}");
    assert!(err.contains("config-from-env.toml"), "{err}");
}
