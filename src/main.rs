//! `pybuild`: the command line. It parses the arguments, makes one call into the
//! `pybuild` library, prints the result and maps errors to exit codes (1 for build and
//! Dockerfile errors, 2 for usage errors).

mod cli;
mod commands;
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // RUN steps re-execute this binary as their sandbox's init.
    pybuild::sandbox_init_if_requested();
    let args = cli::expand_shorthand(std::env::args_os().collect());
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // Prints help/version (exit 0) or the usage error (exit 2).
        Err(error) => error.exit(),
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report::report(&error),
    }
}
