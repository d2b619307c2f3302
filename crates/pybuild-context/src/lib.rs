//! The build context: which files are in it (`.dockerignore`) and, later, what they
//! hash to.
//!
//! A `docker build` context is a directory minus what its ignore file leaves out. This
//! crate answers that question the way Docker and BuildKit do:
//!
//! * [`load_dockerignore`] finds the ignore file for a build (`<Dockerfile>.dockerignore`
//!   next to the Dockerfile wins over `<context>/.dockerignore`) and
//!   [`parse_dockerignore`] turns its text into patterns;
//! * [`PatternMatcher`] compiles the patterns and decides, path by path, what is excluded
//!   ([`PatternMatcher::matches_or_parent_matches`]) and whether an excluded directory
//!   must still be walked because something inside may be re-included
//!   ([`PatternMatcher::may_reinclude_under`]).
//!
//! Matching follows moby/patternmatcher exactly, including its quirks; see the
//! [`ignore`] module for the list.

pub mod error;
pub mod ignore;

pub use error::Error;
pub use ignore::{Pattern, PatternMatcher, load_dockerignore, parse_dockerignore};
