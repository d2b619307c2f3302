//! pybuild as a library.
//!
//! This is the facade other programs (and pybuild's own command line) call. It ties
//! the lower crates together and keeps their types behind a small, stable surface:
//!
//! - [`DockerfileSource`]: a Dockerfile's name and text, read from a file or given
//!   directly (stdin, a generated string).
//! - [`dump`]: the parse tree in BuildKit's S-expression form.
//! - [`plan`]: the validated build graph (stages, steps, scoping, pruning) for a set of
//!   build options.
//! - [`Builder`]: build an image (the one call a build tool needs), with progress
//!   events and cancellation; [`build`] holds the request/result types behind it.
//! - [`store`]: the local image store (list, inspect, tag, remove, save, load,
//!   prune, verify); [`registry`]: pull, push, login, logout.
//!
//! Library code never prints; errors are [`Error`] values, and
//! [`Error::render`] formats Dockerfile errors like a compiler does.

#![deny(missing_docs)]

mod atomic;
pub mod build;
mod builder;
mod export;
pub mod registry;
pub mod store;

use std::path::{Path, PathBuf};

pub use builder::Builder;
pub use pybuild_dockerfile as dockerfile;
pub use pybuild_graph as graph;
pub use pybuild_graph::{BuildGraph, Options as PlanOptions, Platform};

/// Errors of the pybuild library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Dockerfile is invalid.
    #[error("{name}: {error}")]
    Dockerfile {
        /// The Dockerfile's display name (its path, or `-` for stdin).
        name: String,
        /// Its text, kept so the error can show the offending line.
        text: String,
        /// What is wrong, and where.
        error: Box<pybuild_dockerfile::Error>,
    },
    /// The Dockerfile parses, but its stages do not make a valid build (undefined
    /// target, cycle, bad platform, ...).
    #[error("{name}: {error}")]
    Plan {
        /// The Dockerfile's display name.
        name: String,
        /// Its text.
        text: String,
        /// What is wrong.
        error: Box<pybuild_graph::Error>,
    },
    /// A build step failed.
    #[error("{name}: {error}")]
    Build {
        /// The Dockerfile's display name.
        name: String,
        /// Its text.
        text: String,
        /// What failed, and where.
        error: Box<pybuild_solver::Error>,
    },
    /// The build context could not be read.
    #[error("build context: {0}")]
    Context(#[source] pybuild_context::Error),
    /// The image store failed.
    #[error("image store: {0}")]
    Store(#[from] pybuild_store::Error),
    /// Exporting or loading an image failed.
    #[error("{0}")]
    Export(#[from] pybuild_export::Error),
    /// No image is tagged with this name.
    #[error("no such image: {name}")]
    ImageNotFound {
        /// The name looked up.
        name: String,
    },
    /// An operation on a named image failed.
    #[error("image {image}: {source}")]
    Image {
        /// The image (or images, comma-separated) concerned.
        image: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// Loading an archive failed.
    #[error("loading {}: {source}", path.display())]
    Load {
        /// The archive.
        path: PathBuf,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A document that should be JSON is not.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A registry operation failed (the message names the registry and repository,
    /// never credentials).
    #[error(transparent)]
    Registry(Box<pybuild_registry::Error>),
    /// Writing an output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<pybuild_registry::Error> for Error {
    fn from(error: pybuild_registry::Error) -> Self {
        Error::Registry(Box::new(error))
    }
}

impl Error {
    /// A multi-line, human-oriented rendering: for Dockerfile errors the
    /// `FILE:LINE:COL: error: ...` header, the source line, a caret and a hint.
    pub fn render(&self) -> String {
        match self {
            Error::Dockerfile { name, text, error } => error.render(name, text),
            Error::Plan { name, text, error } => error.render(name, text),
            Error::Build { name, text, error } => match error.span() {
                Some(span) => pybuild_dockerfile::render_diagnostic(
                    name,
                    text,
                    Some(span),
                    "error",
                    &error.to_string(),
                    error.hint().map(str::to_owned),
                ),
                None => format!("error: {error}\n"),
            },
            other => format!("error: {other}\n"),
        }
    }
}

/// Result type of the pybuild library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Dockerfile's text together with the name errors should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileSource {
    /// Display name: the path as given, or `-` for standard input.
    pub name: String,
    /// The file's content (invalid UTF-8 replaced, as a text editor would show it).
    pub text: String,
}

impl DockerfileSource {
    /// Read a Dockerfile from disk.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_bytes(path.display().to_string(), &bytes))
    }

    /// A Dockerfile from bytes already in memory (for example read from stdin).
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Self {
        Self {
            name: name.into(),
            text: String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    fn parse(&self) -> Result<pybuild_dockerfile::Dockerfile> {
        pybuild_dockerfile::parse(&self.text).map_err(|error| self.error(error))
    }

    fn error(&self, error: pybuild_dockerfile::Error) -> Error {
        Error::Dockerfile {
            name: self.name.clone(),
            text: self.text.clone(),
            error: Box::new(error),
        }
    }
}

pub use store::open_store;

/// Programs that embed pybuild and run builds with RUN steps call this first thing in
/// `main`: RUN steps re-execute the program as the init of their sandbox, and this is
/// where that init takes over (it never returns then). Otherwise it returns at once.
pub fn sandbox_init_if_requested() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if pybuild_sandbox::is_init_invocation(&args) {
        pybuild_sandbox::init_main();
    }
}

/// Rootless builds: see [`enter_user_namespace_if_needed`].
pub use pybuild_sandbox::userns::{Entered, SINGLE_ID_FIX, UserNs, UserNsError};

/// For an unprivileged user, re-executes the program as root of a new user namespace
/// (uid 0 → the user, 1..=65536 → the user's /etc/subuid and /etc/subgid ranges
/// through `newuidmap`/`newgidmap`, or only 0 → the user without them) and returns
/// [`Entered::Reexecuted`] with that copy's exit code, which the caller should exit
/// with; in the copy, or when already root, returns [`Entered::Ready`]. Builds with
/// RUN, and anything that changes a store a rootless build wrote (files there belong
/// to subordinate ids), need it. Call it in `main` before starting threads or opening
/// the store, after [`sandbox_init_if_requested`]; the library never calls it itself,
/// so the embedding program decides.
pub fn enter_user_namespace_if_needed() -> std::result::Result<Entered, UserNsError> {
    pybuild_sandbox::enter_if_needed()
}

/// The parse tree in BuildKit's S-expression dump format, one line per instruction.
pub fn dump(source: &DockerfileSource) -> Result<String> {
    Ok(pybuild_dockerfile::dump::dump(&source.parse()?))
}

/// A Dockerfile planned for a build: the validated graph and the parser's non-fatal
/// findings, from one parse.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The build graph ([`build::build_planned`] runs it).
    pub graph: BuildGraph,
    /// The parser's warnings, rendered (`FILE:LINE:COL: warning: ...`).
    pub warnings: Vec<String>,
}

/// Parse and plan a Dockerfile once: the graph for `options` and the warnings.
pub fn plan_with_warnings(source: &DockerfileSource, options: &PlanOptions) -> Result<Planned> {
    let parsed = source.parse()?;
    let warnings = parsed
        .warnings
        .iter()
        .map(|w| {
            pybuild_dockerfile::render_diagnostic(
                &source.name,
                &source.text,
                Some(w.span),
                "warning",
                &w.message,
                None,
            )
        })
        .collect();
    let graph = BuildGraph::new(&parsed, options).map_err(|error| match error {
        pybuild_graph::Error::Dockerfile(error) => source.error(error),
        error => Error::Plan {
            name: source.name.clone(),
            text: source.text.clone(),
            error: Box::new(error),
        },
    })?;
    Ok(Planned { graph, warnings })
}

/// The validated build graph of a Dockerfile for the given options.
pub fn plan(source: &DockerfileSource, options: &PlanOptions) -> Result<BuildGraph> {
    plan_with_warnings(source, options).map(|planned| planned.graph)
}
