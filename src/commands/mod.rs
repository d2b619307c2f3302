//! The subcommands. Each turns its parsed arguments into one library call.

pub mod build;
pub mod completions;
pub mod debug;
pub mod debug_graph;
pub mod images;
pub mod inspect;
pub mod load;
pub mod progress;
pub mod prune;
pub mod registry;
pub mod rmi;
pub mod save;
pub mod store_verify;
pub mod tag;

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::Context as _;
use pybuild::DockerfileSource;

use crate::cli::{Cli, Command, DebugCommand, GlobalArgs, StoreCommand};
use crate::report::CliError;

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build::run(*args, cli.global),
        Command::Debug(DebugCommand::Dump(args)) => debug::run_dump(&args),
        Command::Debug(DebugCommand::Graph(args)) => debug_graph::run_debug_graph(args),
        Command::Images(args) => images::run(&args, &cli.global),
        Command::Inspect(args) => inspect::run(&args, &cli.global),
        Command::Tag(args) => tag::run(&args, &cli.global),
        Command::Rmi(args) => rmi::run(&args, &cli.global),
        Command::Save(args) => save::run(&args, &cli.global),
        Command::Load(args) => load::run(&args, &cli.global),
        Command::Prune(args) => prune::run(&args, &cli.global),
        Command::Store(StoreCommand::Verify) => store_verify::run(&cli.global),
        Command::Pull(args) => registry::run_pull(&args, &cli.global),
        Command::Push(args) => registry::run_push(&args, &cli.global),
        Command::Login(args) => registry::run_login(&args),
        Command::Logout(args) => registry::run_logout(&args),
        Command::Completions(args) => completions::run_completions(&args),
        Command::Man(args) => completions::run_man(&args),
    }
}

/// Open the store `--root`/`PYBUILD_ROOT` names (default: the per-user location).
/// Registry settings from the global options.
pub fn registry_settings(global: &GlobalArgs) -> pybuild::registry::RegistrySettings {
    pybuild::registry::RegistrySettings {
        config_file: global.config.clone(),
        mirrors: global.registry_mirrors.clone(),
    }
}

pub fn open_store(global: &GlobalArgs) -> anyhow::Result<pybuild::store::Store> {
    Ok(pybuild::store::open_store(global.root.as_deref())?)
}

/// Bytes the way docker prints sizes: SI units, three significant digits
/// (`7.8MB`, `512B`, `1.23GB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value < 9.995 {
        2
    } else if value < 99.95 {
        1
    } else {
        0
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
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
