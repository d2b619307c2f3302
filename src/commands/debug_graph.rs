//! `pybuild debug graph FILE [--target T] [--build-arg ...] [--platform ...]`: the
//! build's stage graph (stages, steps, inputs, order, pruned stages).

#![allow(clippy::print_stderr)]

use crate::cli::{DebugGraphArgs, resolve_build_args};
use crate::report::{CliError, warn};

/// Print the stage graph of the Dockerfile for the given target, build arguments and
/// platform.
pub fn run_debug_graph(args: DebugGraphArgs) -> anyhow::Result<()> {
    let source = super::read_dockerfile(
        &args.file,
        "name an existing Dockerfile, or - for standard input",
    )?;
    let (build_args, unset) = resolve_build_args(&args.build_args, |k| std::env::var(k).ok());
    for key in unset {
        warn(format_args!(
            "--build-arg {key}: {key} is not set in the environment; ignored"
        ));
    }
    let options = super::plan_options(build_args, args.target.clone(), &args.platforms)?;
    let planned = pybuild::plan_with_warnings(&source, &options)?;
    for warning in &planned.warnings {
        eprint!("{warning}");
    }
    super::write_stdout(&planned.graph.describe())
}

/// Platform strings that do not parse are usage errors.
pub(crate) fn parse_platform(text: &str) -> anyhow::Result<pybuild::Platform> {
    pybuild::Platform::parse(text).map_err(|message| CliError::new(message).into())
}
