//! How errors and warnings reach the user: rendered on standard error, with an exit
//! code that tells build failures (1) from usage errors (2).

#![allow(clippy::print_stderr)]

use std::fmt;
use std::process::ExitCode;

/// Exit code of a failed build or an invalid Dockerfile.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that does not make sense (clap's, too).
const EXIT_USAGE: u8 = 2;

/// An error found by the command line itself, with an optional hint. A usage error
/// (options that do not go together) exits with 2 and points at `--help`.
#[derive(Debug)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    /// For usage errors: the command whose `--help` to point at (`pybuild build`).
    usage_of: Option<&'static str>,
}

impl CliError {
    /// A failure (exit code 1).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            usage_of: None,
        }
    }

    /// A usage error of `command` (exit code 2).
    pub fn usage(command: &'static str, message: impl Into<String>) -> Self {
        Self {
            usage_of: Some(command),
            ..Self::new(message)
        }
    }

    /// Add a one-line suggestion.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Print a warning on standard error.
pub fn warn(message: impl fmt::Display) {
    eprintln!("warning: {message}");
}

/// Print `error` on standard error and choose the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    if let Some(error) = error.downcast_ref::<pybuild::Error>() {
        eprint!("{}", error.render());
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Some(error) = error.downcast_ref::<CliError>() {
        eprintln!("error: {}", error.message);
        if let Some(hint) = &error.hint {
            eprintln!("  = hint: {hint}");
        }
        return match error.usage_of {
            Some(command) => {
                eprintln!("\nFor more information, try '{command} --help'.");
                ExitCode::from(EXIT_USAGE)
            }
            None => ExitCode::from(EXIT_FAILURE),
        };
    }
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_FAILURE)
}
