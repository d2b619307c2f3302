//! Source positions.
//!
//! Lines and columns are 1-based, as editors and compilers print them. Columns count
//! characters (Unicode scalar values), not bytes, so a caret lines up under the text a
//! user sees.

use std::fmt;

/// A point in the Dockerfile: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl Position {
    /// A position at `line`, `column` (both 1-based).
    pub const fn new(line: u32, column: u32) -> Self {
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A range of source text, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// First character of the range.
    pub start: Position,
    /// One past the last character of the range (same line as `start` for one-line spans).
    pub end: Position,
}

impl Span {
    /// A span from `start` to `end`.
    pub const fn new(start: Position, end: Position) -> Self {
        Self { start, end }
    }

    /// A span covering whole lines `first..=last` (column 1 to the end is not known here,
    /// so the end column is 1 of the line after `last`).
    pub const fn lines(first: u32, last: u32) -> Self {
        Self {
            start: Position::new(first, 1),
            end: Position::new(last + 1, 1),
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.start)
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Attach a span to a value.
    pub const fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}
