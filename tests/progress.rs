//! End to end: the `--progress` modes of `pybuild build`, the shell completions and
//! the man page, driving the real binary on a tiny `FROM scratch` + `COPY` build (no
//! base image, no network).
//!
//! The `tty` view is checked in a real terminal: a detached `tmux` session (tmux must
//! be installed; `.ci/run` installs it), read back with `tmux capture-pane`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pybuild_testsupport::cmd::{self, assert_exit, assert_success, require_tool, text, tool};
use serde_json::Value;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/progress-events.schema.json"
);

/// The build every test runs.
const DOCKERFILE: &str = "FROM scratch\nCOPY a /a\n";
/// A build that fails on its second step.
const FAILING: &str = "FROM scratch\nCOPY missing /m\n";

/// One test's world: a temp dir with a build context and a store root.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pybuild-progress-")
            .tempdir()
            .expect("temp dir");
        let env = Env { dir };
        fs::create_dir_all(env.ctx()).unwrap();
        fs::write(env.ctx().join("Dockerfile"), DOCKERFILE).unwrap();
        fs::write(env.ctx().join("a"), "hello\n").unwrap();
        env
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Make the context's build fail (a COPY of a file that is not there).
    fn break_build(&self) {
        fs::write(self.ctx().join("Dockerfile"), FAILING).unwrap();
    }

    /// `pybuild --root ROOT build ARGS... -t progress CTX`, standard error a pipe.
    fn build(&self, args: &[&str]) -> Output {
        let mut cmd = pybuild();
        cmd.arg("--root").arg(self.root()).arg("build").args(args);
        cmd.args(["-t", "progress"]).arg(self.ctx());
        cmd.output().expect("run pybuild")
    }
}

fn pybuild() -> Command {
    cmd::pybuild(env!("CARGO_BIN_EXE_pybuild"))
}

/// Requires success; returns (stdout, stderr).
#[track_caller]
fn succeeded(out: &Output) -> (String, String) {
    assert_success(out, "pybuild");
    (cmd::stdout(out), cmd::stderr(out))
}

/// Requires pybuild's failure, exit status 1; returns (stdout, stderr).
#[track_caller]
fn failed(out: &Output) -> (String, String) {
    assert_exit(out, 1);
    (cmd::stdout(out), cmd::stderr(out))
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `#N REST` -> (N, REST) when N is a step number.
fn step_line(line: &str) -> Option<(usize, &str)> {
    let (number, rest) = line.strip_prefix('#')?.split_once(' ')?;
    Some((number.parse().ok()?, rest))
}

/// Every line of a successful plain build has one of the known shapes; returns the
/// status each step ended with (`DONE`/`CACHED`), by step name.
fn plain_statuses(stderr: &str) -> Vec<(String, String)> {
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut statuses = Vec::new();
    for line in stderr.lines() {
        if let Some((n, rest)) = step_line(line) {
            if rest.starts_with('[') {
                assert!(
                    names.iter().all(|(m, _)| *m != n),
                    "step #{n} started twice:\n{stderr}"
                );
                names.push((n, rest.to_owned()));
                continue;
            }
            let name = names
                .iter()
                .find(|(m, _)| *m == n)
                .unwrap_or_else(|| panic!("#{n} before it started:\n{stderr}"))
                .1
                .clone();
            if rest == "CACHED" {
                statuses.push((name, "CACHED".to_owned()));
            } else if let Some(time) = rest.strip_prefix("DONE ") {
                let seconds = time.strip_suffix('s').expect("DONE N.Ns");
                assert!(
                    seconds.parse::<f64>().is_ok() && seconds.contains('.'),
                    "{line:?}"
                );
                statuses.push((name, "DONE".to_owned()));
            } else if let Some(layer) = rest.strip_prefix("writing layer ") {
                // `DIGEST SIZE TIMEs done` (SIZE as docker writes it: `512B`,
                // `4.1kB`, `91.0MB`), before the step ends.
                let parts: Vec<&str> = layer.split(' ').collect();
                let size = parts.get(1).copied().unwrap_or("");
                let number = ["kB", "MB", "GB", "TB", "B"]
                    .iter()
                    .find_map(|unit| size.strip_suffix(unit));
                assert!(
                    parts.len() == 4
                        && is_digest(parts[0])
                        && number.is_some_and(|n| n.parse::<f64>().is_ok())
                        && parts[2]
                            .strip_suffix('s')
                            .is_some_and(|n| n.parse::<f64>().is_ok())
                        && parts[3] == "done",
                    "{line:?}"
                );
                assert!(
                    statuses.iter().all(|(done, _)| *done != name),
                    "a layer after its step ended: {line:?}"
                );
            } else {
                panic!("unexpected step line {line:?} in:\n{stderr}");
            }
        } else if let Some(rest) = line.strip_prefix("#  manifest ") {
            assert!(is_digest(rest), "{line:?}");
        } else if let Some(rest) = line.strip_prefix("writing image ") {
            assert!(is_digest(rest), "{line:?}");
        } else {
            assert!(line.starts_with("naming to "), "unexpected line {line:?}");
        }
    }
    assert_eq!(statuses.len(), names.len(), "every step ends:\n{stderr}");
    statuses
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn plain_prints_one_line_per_event_and_cached_on_rebuild() {
    let env = Env::new();
    let (stdout, stderr) = succeeded(&env.build(&["--progress=plain"]));
    assert_eq!(stdout, "");
    assert_eq!(
        plain_statuses(&stderr),
        pairs(&[
            ("[stage-0 1/2] FROM scratch", "DONE"),
            ("[stage-0 2/2] COPY a /a", "DONE")
        ]),
        "{stderr}"
    );
    assert!(stderr.contains("\nnaming to progress"), "{stderr}");
    assert!(stderr.contains("\n#2 writing layer sha256:"), "{stderr}");

    let (_, stderr) = succeeded(&env.build(&["--progress=plain"]));
    assert_eq!(
        plain_statuses(&stderr),
        pairs(&[
            ("[stage-0 1/2] FROM scratch", "DONE"),
            ("[stage-0 2/2] COPY a /a", "CACHED")
        ]),
        "{stderr}"
    );
    assert!(!stderr.contains("writing layer"), "{stderr}");
}

#[test]
fn plain_marks_the_failing_step_error() {
    let env = Env::new();
    env.break_build();
    let (stdout, stderr) = failed(&env.build(&["--progress=plain"]));
    assert_eq!(stdout, "");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.contains(&"#2 [stage-0 2/2] COPY missing /m"),
        "{stderr}"
    );
    let error = lines
        .iter()
        .find_map(|l| l.strip_prefix("#2 ERROR "))
        .unwrap_or_else(|| panic!("no `#2 ERROR ...` line:\n{stderr}"));
    assert!(error.contains("missing"), "{error:?}");
    assert!(
        !error.starts_with("COPY"),
        "the step line names the instruction: {error:?}"
    );
    assert!(!stderr.contains("#2 DONE"), "{stderr}");
    // The diagnostic follows the progress.
    let error_at = stderr.find("#2 ERROR").unwrap();
    assert!(stderr[error_at..].contains("error"), "{stderr}");
}

/// The schema, compiled.
fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&fs::read_to_string(SCHEMA).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).expect("the schema is valid draft 2020-12")
}

/// Every line is a JSON object valid against the schema; returns them.
fn validated_events(stderr: &str) -> Vec<Value> {
    let validator = validator();
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nin:\n{stderr}"));
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{line}\ndoes not validate: {errors:#?}");
            value
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn rawjson_lines_validate_against_the_documented_schema() {
    let env = Env::new();
    let (stdout, stderr) = succeeded(&env.build(&["--progress=rawjson"]));
    assert_eq!(stdout, "");
    let events = validated_events(&stderr);
    assert_eq!(
        types(&events),
        [
            "build_started",
            "step_started",
            "step_done",
            "step_started",
            "layer_written",
            "step_done",
            "image_written",
            "build_finished"
        ],
        "{stderr}"
    );
    assert_eq!(events[0]["total_steps"], 2);
    let events = &events[1..];
    assert_eq!(events[0]["vertex"], 1);
    assert_eq!(events[0]["name"], "[stage-0 1/2] FROM scratch");
    assert_eq!(events[2]["name"], "[stage-0 2/2] COPY a /a");
    // The COPY's layer: its blob is in the store with the size reported.
    let layer = &events[3];
    assert_eq!(layer["vertex"], 2);
    let blob = env.root().join("blobs/sha256").join(
        layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    assert_eq!(
        std::fs::metadata(&blob).map(|m| m.len()).ok(),
        layer["size"].as_u64(),
        "{layer}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["success"], true);
    let times: Vec<f64> = events.iter().map(|e| e["time"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The image ID is the one -q prints.
    let (id, _) = succeeded(&env.build(&["-q"]));
    assert_eq!(last["image_id"].as_str().unwrap(), id.trim());

    let (_, stderr) = succeeded(&env.build(&["--progress=rawjson"]));
    let events = validated_events(&stderr);
    assert_eq!(events[4]["type"], "step_cached", "{stderr}");
    assert!(!types(&events).contains(&"layer_written"), "{stderr}");
    assert_eq!(events[4]["vertex"], 2);

    // A failed build: the JSON lines validate, the failing step has a step_error and
    // the last event says why; the diagnostic that follows is text.
    env.break_build();
    let (_, stderr) = failed(&env.build(&["--progress=rawjson"]));
    let json: String = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    let events = validated_events(&json);
    let error = events
        .iter()
        .find(|e| e["type"] == "step_error")
        .unwrap_or_else(|| panic!("no step_error:\n{stderr}"));
    assert_eq!(error["vertex"], 2);
    assert!(
        error["error"].as_str().unwrap().contains("missing"),
        "{error}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "build_finished");
    assert_eq!(last["success"], false);
}

#[test]
fn schema_rejects_malformed_events() {
    let validator = validator();
    for bad in [
        r#"{"type":"step_started","time":0.1,"vertex":1}"#,
        r#"{"type":"step_started","time":0.1,"vertex":0,"name":"x"}"#,
        r#"{"type":"step_output","time":0.1,"vertex":1,"stream":"tty","line":""}"#,
        r#"{"type":"image_written","time":0.1,"digest":"sha256:xyz"}"#,
        r#"{"type":"build_finished","time":0.1,"success":true}"#,
        r#"{"type":"nope","time":0.1}"#,
        r#"{"vertex":1,"status":"cached"}"#,
    ] {
        let value: Value = serde_json::from_str(bad).unwrap();
        assert!(!validator.is_valid(&value), "{bad} should not validate");
    }
}

#[test]
fn quiet_prints_nothing_and_q_only_the_image_id() {
    let env = Env::new();
    let (stdout, stderr) = succeeded(&env.build(&["--progress=quiet"]));
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""));

    let (stdout, stderr) = succeeded(&env.build(&["-q"]));
    assert_eq!(stderr, "");
    let id = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{stdout:?}"));
    assert!(is_digest(id), "{stdout:?}");

    // Errors still show.
    env.break_build();
    let (stdout, stderr) = failed(&env.build(&["-q"]));
    assert_eq!(stdout, "");
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(!stderr.contains("#2"), "no progress lines: {stderr}");
}

#[test]
fn auto_is_plain_when_stderr_is_a_pipe() {
    let env = Env::new();
    let (_, stderr) = succeeded(&env.build(&[]));
    assert_eq!(plain_statuses(&stderr).len(), 2, "{stderr}");
    let (_, stderr) = succeeded(&env.build(&["--progress=auto"]));
    assert_eq!(plain_statuses(&stderr)[1].1, "CACHED", "{stderr}");
}

#[test]
fn tty_on_a_pipe_falls_back_to_plain() {
    let env = Env::new();
    let (_, stderr) = succeeded(&env.build(&["--progress=tty"]));
    let (warning, rest) = stderr.split_once('\n').unwrap();
    assert!(
        warning.starts_with("warning: --progress=tty: standard error is not a terminal"),
        "{stderr}"
    );
    assert_eq!(plain_statuses(rest).len(), 2, "{stderr}");
}

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Self {
        require_tool("tmux");
        Tmux {
            socket: format!("pybuild-{name}-{}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = tool("tmux");
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    /// Run `shell_command` in a new 120x40 terminal and return the screen once
    /// `done` shows on it.
    fn run(&self, session: &str, shell_command: &str, done: &str) -> String {
        let out = self
            .cmd()
            .args(["new-session", "-d", "-s", session, "-x", "120", "-y", "40"])
            .arg(format!("{shell_command}; sleep 5"))
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux: {}", text(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen(session);
            if screen.contains(done) {
                // Let the last redraw land.
                std::thread::sleep(Duration::from_millis(300));
                return self.screen(session);
            }
            assert!(
                Instant::now() < deadline,
                "{done:?} never showed; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screen(&self, session: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .expect("run tmux");
        text(&out.stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Quote for sh.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The screen's lines, right-trimmed and without the empty ones.
fn screen_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The line that contains `needle`, with its runs of spaces squeezed.
fn squeezed_line(screen: &str, needle: &str) -> String {
    let line = screen_lines(screen)
        .into_iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} on the screen:\n{screen}"));
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn tty_view_in_a_real_terminal() {
    let env = Env::new();
    let tmux = Tmux::new("tty");
    let command = |progress: &str| {
        format!(
            "{} --root {} build --progress={progress} -t progress {}",
            sh_quote(Path::new(env!("CARGO_BIN_EXE_pybuild"))),
            sh_quote(&env.root()),
            sh_quote(&env.ctx()),
        )
    };

    // `auto` in a terminal is the live view.
    let screen = tmux.run("first", &command("auto"), "naming to progress");
    let header = squeezed_line(&screen, "[+] Building");
    assert!(
        header.starts_with("[+] Building ") && header.ends_with("s (2/2) FINISHED"),
        "{header:?} in:\n{screen}"
    );
    let from = squeezed_line(&screen, "FROM scratch");
    assert!(
        from.starts_with("=> DONE [stage-0 1/2] FROM scratch ") && from.ends_with('s'),
        "{from:?} in:\n{screen}"
    );
    let copy = squeezed_line(&screen, "COPY a /a");
    assert!(
        copy.starts_with("=> DONE [stage-0 2/2] COPY a /a "),
        "{copy:?} in:\n{screen}"
    );
    assert!(screen.contains("writing image sha256:"), "{screen}");
    let layer = squeezed_line(&screen, "writing layer");
    assert!(
        layer.starts_with("=> [stage-0 2/2] writing layer sha256:") && layer.ends_with('s'),
        "{layer:?} in:\n{screen}"
    );
    // No plain-format lines.
    assert!(!screen.contains("#1 "), "{screen}");

    // A rebuild shows the COPY as CACHED, with `tty` asked for by name.
    let screen = tmux.run("second", &command("tty"), "naming to progress");
    let copy = squeezed_line(&screen, "COPY a /a");
    assert_eq!(
        copy, "=> CACHED [stage-0 2/2] COPY a /a 0.0s",
        "in:\n{screen}"
    );
    assert!(!screen.contains("writing layer"), "{screen}");

    // A failure marks the step ERROR; the header says FAILED.
    env.break_build();
    let screen = tmux.run("third", &command("tty"), "FAILED");
    let copy = squeezed_line(&screen, "COPY missing /m");
    assert!(
        copy.starts_with("=> ERROR [stage-0 2/2] COPY missing /m "),
        "{copy:?} in:\n{screen}"
    );
    assert!(
        squeezed_line(&screen, "[+] Building").ends_with("(1/2) FAILED")
            || squeezed_line(&screen, "[+] Building").ends_with("(2/2) FAILED"),
        "{screen}"
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pybuild().args(["completions", shell]).output().unwrap();
        let (stdout, stderr) = succeeded(&out);
        assert_eq!(stderr, "", "{shell}");
        assert!(stdout.len() > 1000, "{shell}: {stdout}");
        assert!(stdout.contains("build"), "{shell}: no `build`");
        let tag = if shell == "fish" { "-l tag" } else { "--tag" };
        assert!(stdout.contains(tag), "{shell}: no `--tag`");
        assert!(stdout.contains("progress"), "{shell}: no `--progress`");
    }
    let out = pybuild().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_printed_and_written_per_command() {
    let (stdout, stderr) = succeeded(&pybuild().arg("man").output().unwrap());
    assert_eq!(stderr, "");
    assert!(
        stdout.starts_with(".ie") || stdout.contains(".TH"),
        "{stdout}"
    );
    assert!(stdout.contains("pybuild"), "{stdout}");
    assert!(stdout.contains("build"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let (stdout, _) = succeeded(&pybuild().arg("man").arg(dir.path()).output().unwrap());
    assert_eq!(stdout, "");
    let build = fs::read_to_string(dir.path().join("pybuild-build.1")).unwrap();
    assert!(build.contains(r"\-\-tag"), "{build}");
    assert!(build.contains(r"\-\-progress"), "{build}");
    for page in ["pybuild.1", "pybuild-images.1", "pybuild-store-verify.1"] {
        assert!(dir.path().join(page).is_file(), "{page} missing");
    }
}

#[test]
fn build_help_reads_like_dockers() {
    let (help, _) = succeeded(&pybuild().args(["build", "--help"]).output().unwrap());
    assert!(
        help.starts_with("Build an image from a Dockerfile\n"),
        "{help}"
    );
    assert!(
        help.contains("Usage: pybuild build [OPTIONS] PATH | -"),
        "{help}"
    );
    for heading in ["Options:", "Output Options:", "Progress:"] {
        assert!(
            help.contains(&format!("\n{heading}\n")),
            "no {heading:?}:\n{help}"
        );
    }
    assert!(help.contains("-t, --tag <NAME[:TAG]>"), "{help}");
    // Short descriptions: no option's description wraps onto more than two further
    // lines.
    let options = help.split("\nExamples:").next().unwrap();
    let mut run = 0;
    for line in options.lines() {
        run = if line.starts_with(&" ".repeat(20)) {
            run + 1
        } else {
            0
        };
        assert!(run <= 2, "{help}");
    }
}
