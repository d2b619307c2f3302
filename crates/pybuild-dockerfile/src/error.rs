//! The front end's error type and its compiler-style rendering.

use crate::span::Span;

/// Everything that can go wrong while reading a Dockerfile.
///
/// Every variant that comes from the text carries the [`Span`] it points at, so the CLI
/// can print `Dockerfile:LINE:COL: error: ...` with the source line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file holds no instruction at all (empty, or only comments and directives).
    #[error("file with no instructions")]
    NoInstructions {
        /// End of the file.
        span: Span,
    },
    /// A parser directive (`# escape=`, `# syntax=`, `# check=`) was given twice.
    #[error("only one {directive} parser directive can be used")]
    DuplicateDirective {
        /// The directive's name, lower case.
        directive: String,
        /// The second occurrence.
        span: Span,
    },
    /// `# escape=` named something other than a backslash or a backtick.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscapeToken {
        /// What was given.
        value: String,
        /// The directive line.
        span: Span,
    },
    /// An instruction keyword that the Dockerfile language does not have.
    #[error("unknown instruction: {instruction}")]
    UnknownInstruction {
        /// The keyword as written.
        instruction: String,
        /// A known instruction close to it, for the hint.
        suggestion: Option<String>,
        /// The keyword.
        span: Span,
    },
    /// An exec-form JSON array holding something other than strings.
    #[error(
        "{instruction}: when using JSON array syntax, arrays must be comprised of strings only"
    )]
    NonStringJsonArray {
        /// The instruction, upper case.
        instruction: String,
        /// The array.
        span: Span,
    },
    /// A heredoc whose terminating line never came.
    #[error("unterminated heredoc: no line `{delimiter}` closes it")]
    UnterminatedHeredoc {
        /// The delimiter word that was expected.
        delimiter: String,
        /// The `<<WORD` that opened it.
        span: Span,
    },
    /// A `--flag` that the instruction does not take.
    #[error("unknown flag: --{flag} for {instruction}")]
    UnknownFlag {
        /// The instruction, upper case.
        instruction: String,
        /// The flag name, without dashes.
        flag: String,
        /// A flag the instruction does take that is close to it.
        suggestion: Option<String>,
        /// The flag.
        span: Span,
    },
    /// A flag given with a value it cannot take (or twice, or without a value).
    #[error("{instruction} --{flag}: {message}")]
    InvalidFlag {
        /// The instruction, upper case.
        instruction: String,
        /// The flag name, without dashes.
        flag: String,
        /// What is wrong.
        message: String,
        /// The flag.
        span: Span,
    },
    /// An instruction that is malformed: wrong number of arguments, bad stage name,
    /// forbidden nesting, and so on.
    #[error("{instruction}: {message}")]
    InvalidInstruction {
        /// The instruction, upper case.
        instruction: String,
        /// What is wrong.
        message: String,
        /// How to fix it, when there is an obvious way.
        hint: Option<String>,
        /// The part of the instruction that is wrong.
        span: Span,
    },
    /// Variable expansion failed (`${V:?msg}`, bad substitution, unterminated quote).
    #[error("{message}")]
    Expansion {
        /// What the lexer reported.
        message: String,
        /// Where, once the caller knows it (the lexer itself sees only a word).
        span: Option<Span>,
    },
}

impl Error {
    /// Where the error points, when it points somewhere.
    pub fn span(&self) -> Option<Span> {
        match self {
            Error::NoInstructions { span }
            | Error::DuplicateDirective { span, .. }
            | Error::InvalidEscapeToken { span, .. }
            | Error::UnknownInstruction { span, .. }
            | Error::NonStringJsonArray { span, .. }
            | Error::UnterminatedHeredoc { span, .. }
            | Error::UnknownFlag { span, .. }
            | Error::InvalidFlag { span, .. }
            | Error::InvalidInstruction { span, .. } => Some(*span),
            Error::Expansion { span, .. } => *span,
        }
    }

    /// A one-line suggestion for fixing the error, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::UnknownInstruction {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean {s}?")),
            Error::UnknownFlag {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean --{s}?")),
            Error::InvalidEscapeToken { .. } => {
                Some("use `# escape=\\` (the default) or `# escape=`` ` (backtick)".into())
            }
            Error::NonStringJsonArray { .. } => Some(
                "write every element as a \"quoted string\", or drop the brackets for shell form"
                    .into(),
            ),
            Error::UnterminatedHeredoc { delimiter, .. } => Some(format!(
                "end the heredoc with a line holding only `{delimiter}`"
            )),
            Error::InvalidInstruction { hint, .. } => hint.clone(),
            _ => None,
        }
    }

    /// Attach a span to an error that does not have one yet (expansion errors).
    #[must_use]
    pub fn at(mut self, at: Span) -> Self {
        if let Error::Expansion { span, .. } = &mut self {
            span.get_or_insert(at);
        }
        self
    }

    /// Render the error like a compiler does:
    ///
    /// ```text
    /// Dockerfile:3:1: error: unknown instruction: RUNN
    ///     3 | RUNN echo hi
    ///       | ^^^^
    ///       = hint: did you mean RUN?
    /// ```
    pub fn render(&self, file_name: &str, source: &str) -> String {
        render_diagnostic(
            file_name,
            source,
            self.span(),
            "error",
            &self.to_string(),
            self.hint(),
        )
    }
}

/// Render one diagnostic (error or warning) with the source line and a caret.
pub fn render_diagnostic(
    file_name: &str,
    source: &str,
    span: Option<Span>,
    severity: &str,
    message: &str,
    hint: Option<String>,
) -> String {
    let mut out = String::new();
    let Some(span) = span else {
        out.push_str(&format!("{file_name}: {severity}: {message}\n"));
        if let Some(h) = hint {
            out.push_str(&format!("  = hint: {h}\n"));
        }
        return out;
    };
    out.push_str(&format!(
        "{file_name}:{}:{}: {severity}: {message}\n",
        span.start.line, span.start.column
    ));
    let line_text = source
        .split('\n')
        .nth(span.start.line.saturating_sub(1) as usize)
        .map(|l| l.trim_end_matches('\r'));
    let gutter = span.start.line.to_string().len().max(4);
    if let Some(text) = line_text {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        out.push_str(&format!("{:>gutter$} | {}\n", span.start.line, text));
        let line_chars = text.chars().count() as u32;
        let start_col = span.start.column.max(1);
        let end_col = if span.end.line == span.start.line && span.end.column > start_col {
            span.end.column
        } else {
            (line_chars + 1).max(start_col + 1)
        };
        // Tabs in the source must be reproduced under the caret, or it drifts.
        let pad: String = text
            .chars()
            .take((start_col - 1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat((end_col - start_col).max(1) as usize);
        out.push_str(&format!("{:>gutter$} | {pad}{carets}\n", ""));
    }
    if let Some(h) = hint {
        out.push_str(&format!("{:>gutter$} = hint: {h}\n", ""));
    }
    out
}
