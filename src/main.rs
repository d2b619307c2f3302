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
    // As an unprivileged user, commands that use the store run again as root of a
    // user namespace (rootless builds); this process only waits for that copy.
    if cli.command.uses_store() {
        match pybuild::enter_user_namespace_if_needed() {
            Ok(pybuild::Entered::Ready(_)) => {}
            Ok(pybuild::Entered::Reexecuted { exit_code }) => {
                return ExitCode::from(u8::try_from(exit_code).unwrap_or(1));
            }
            Err(error) => return report::report(&anyhow::Error::new(error)),
        }
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report::report(&error),
    }
}
