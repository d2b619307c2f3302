//! `pybuild completions SHELL` and `pybuild man [DIR]`: generated from the clap
//! definitions, so they always match the options the binary accepts.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// Print the completion script for a shell on standard output.
pub fn run_completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pybuild", &mut script);
    super::write_stdout(&String::from_utf8_lossy(&script))
}

/// Print `pybuild.1`, or write it and one page per subcommand into a directory.
pub fn run_man(args: &ManArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    command.build();
    match &args.dir {
        None => super::write_stdout(&String::from_utf8_lossy(&render(&command)?)),
        Some(dir) => write_pages(&command, dir),
    }
}

/// One man page (roff).
fn render(command: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("cannot render the man page")?;
    Ok(page)
}

/// `DIR/pybuild.1` and `DIR/pybuild-SUB.1` for every subcommand (nested ones too:
/// `pybuild-store-verify.1`). `command` has been built, which names the subcommands
/// `pybuild-SUB` (their display names) and `pybuild SUB` (their usage).
fn write_pages(command: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pending = vec![command];
    while let Some(command) = pending.pop() {
        pending.extend(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help"),
        );
        let name = command
            .get_display_name()
            .unwrap_or_else(|| command.get_name());
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(command)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
