//! The build context: which files are in it (`.dockerignore`), what a COPY/ADD source
//! names in it, and what those files hash to.
//!
//! A `docker build` context is a directory minus what its ignore file leaves out. This
//! crate answers the questions a builder asks of it the way Docker and BuildKit do:
//!
//! * [`load_dockerignore`] finds the ignore file for a build (`<Dockerfile>.dockerignore`
//!   next to the Dockerfile wins over `<context>/.dockerignore`) and
//!   [`parse_dockerignore`] turns its text into patterns;
//! * [`PatternMatcher`] compiles the patterns and decides, path by path, what is excluded
//!   ([`PatternMatcher::matches_or_parent_matches`]) and whether an excluded directory
//!   must still be walked because something inside may be re-included
//!   ([`PatternMatcher::may_reinclude_under`]);
//! * [`Context`] ties a directory to its patterns. [`Context::resolve`] turns a COPY/ADD
//!   source as written (`./src/`, `*.py`, `app/*/conf`) into [`SourceMatch`]es, following
//!   the source path's symlinks without ever leaving the context, and
//!   [`Context::walk`] lists every [`Entry`] at and under a match in a deterministic
//!   order, with the sha256 [`Digest`] of each file;
//! * digests are remembered in an optional persistent stat cache
//!   ([`Context::with_stat_cache`]) that only skips reading a file when its identity,
//!   size, mode, mtime *and* ctime are unchanged and it was already old when it was
//!   hashed, so a same-size rewrite with a restored mtime is never mistaken for the old
//!   content (moby/buildkit#4950).
//!
//! `.dockerignore` matching follows moby/patternmatcher exactly, including its quirks;
//! see the [`ignore`] module for the list. Source resolution and walking follow
//! BuildKit; see [`context`] for the details and where they come from.

pub mod context;
pub mod error;
pub mod ignore;
mod statcache;
mod wildcard;

pub use context::{Context, Entry, EntryKind, HashStats, SourceMatch};
pub use error::Error;
pub use ignore::{Pattern, PatternMatcher, load_dockerignore, parse_dockerignore};
pub use pybuild_oci::Digest;
