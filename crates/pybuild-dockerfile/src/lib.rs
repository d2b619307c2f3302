//! pybuild's Dockerfile front end.
//!
//! It turns the text of a Dockerfile into data, following BuildKit's Dockerfile
//! frontend (the reference implementation) wherever the legacy builder differs:
//!
//! - [`parser`] reads the text: parser directives (`# escape=`, `# syntax=`,
//!   `# check=`), line continuations, comments, heredocs, and splits every instruction
//!   into its keyword, `--flags` and arguments *before* variable expansion. Its tree can
//!   be printed in BuildKit's S-expression form ([`dump`]), which is how it is checked
//!   byte for byte against BuildKit's own parser test vectors.
//! - [`shell`] is the word expander: `$VAR`, `${VAR:-default}` and the other
//!   modifiers, quoting and escapes, exactly as BuildKit's shell lexer does it.
//! - [`instructions`] turns each parsed line into a typed instruction (`From`, `Run`,
//!   `Copy`, ...) with its flags validated and its source [`Span`] kept for errors.
//!
//! Nothing here touches the file system or the network; the crate is pure and cheap to
//! fuzz. Errors are [`Error`] values that know where they point and render like a
//! compiler's ([`Error::render`]).

pub mod dump;
mod error;
pub mod instructions;
pub mod parser;
pub mod shell;
mod span;
mod suggest;

pub use error::{Error, render_diagnostic};
pub use parser::{Dockerfile, Heredoc, Node, Warning, parse};
pub use span::{Position, Span, Spanned};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
