//! The subcommands. Each turns its parsed arguments into one library call.

pub mod build;
pub mod debug;
pub mod debug_graph;
pub mod progress;

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::Context as _;
use pybuild::DockerfileSource;

use crate::cli::{Cli, Command, DebugCommand};
use crate::report::CliError;

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build::run(*args, cli.global),
        Command::Debug(DebugCommand::Dump(args)) => debug::run_dump(&args),
        Command::Debug(DebugCommand::Graph(args)) => debug_graph::run_debug_graph(args),
    }
}

/// Whether a path argument means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Read a Dockerfile named on the command line: `-` is standard input (named `-` in
/// messages), anything else a file that must exist.
pub fn read_dockerfile(path: &Path, hint_if_missing: &str) -> anyhow::Result<DockerfileSource> {
    if is_stdin(path) {
        return read_dockerfile_from_stdin();
    }
    if !path.exists() {
        return Err(
            CliError::new(format!("Dockerfile {} not found", path.display()))
                .hint(hint_if_missing)
                .into(),
        );
    }
    if path.is_dir() {
        return Err(CliError::new(format!(
            "{} is a directory, not a Dockerfile",
            path.display()
        ))
        .hint(hint_if_missing)
        .into());
    }
    Ok(DockerfileSource::read(path)?)
}

/// Read a Dockerfile from standard input.
pub fn read_dockerfile_from_stdin() -> anyhow::Result<DockerfileSource> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        crate::report::warn("reading the Dockerfile from standard input (end it with Ctrl-D)");
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .context("cannot read the Dockerfile from standard input")?;
    Ok(DockerfileSource::from_bytes("-", &bytes))
}

/// Write `text` to standard output exactly. A closed pipe (`pybuild ... | head`) is
/// not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// The library's planning options from resolved command-line values. Only the first
/// `--platform` is planned for now (multi-platform builds plan one graph per platform).
pub fn plan_options(
    build_args: Vec<(String, String)>,
    target: Option<String>,
    platforms: &[String],
) -> anyhow::Result<pybuild::PlanOptions> {
    let target_platform = platforms
        .first()
        .map(|p| debug_graph::parse_platform(p))
        .transpose()?;
    Ok(pybuild::PlanOptions {
        build_args,
        target,
        build_platform: None,
        target_platform,
    })
}
