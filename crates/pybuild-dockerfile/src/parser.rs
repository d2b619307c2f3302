//! The Dockerfile parser: text in, a list of [`Node`]s out, before any expansion.
//!
//! This follows BuildKit's `frontend/dockerfile/parser` step by step, because the exact
//! treatment of whitespace, comments and continuations is observable (it ends up in
//! `RUN` command lines and so in cache keys and image history):
//!
//! 1. The input is split into physical lines, keeping their line endings (heredoc
//!    bodies need them). A UTF-8 byte-order mark on the first line is dropped; `\r\n`
//!    endings are accepted.
//! 2. While no other line has been seen, lines of the form `# key=value` with a known
//!    key (`syntax`, `escape`, `check`; case-insensitive) are parser directives. A
//!    repeated directive is an error; the first line that is not a directive (a blank
//!    line, another comment, an instruction) ends the directive section for good.
//! 3. An instruction starts on a line with its leading whitespace removed; comment lines
//!    (first non-blank character `#`) are dropped. The escape character (backslash, or
//!    backtick after `# escape=``) at the end of a line, optionally followed by spaces
//!    or tabs, continues the instruction on the next line, unless it is itself escaped.
//!    Inside a continuation, comment lines are dropped and whitespace-only lines are
//!    skipped with a warning; continuation lines keep their leading whitespace.
//! 4. The joined ("logical") line is split into the lower-cased keyword, the leading
//!    `--flags`, and the rest, which is split per instruction (JSON exec form, shell
//!    form, key=value pairs, whitespace lists, ...).
//! 5. For `RUN`, `COPY` and `ADD` in shell form (also under `ONBUILD`), `<<WORD` words
//!    open heredocs whose bodies are the following physical lines up to a line holding
//!    only `WORD` (after removing leading tabs for `<<-WORD`).
//!
//! Every node keeps its source span, and every flag and argument keeps the span it was
//! written at (columns are mapped back through continuations), so later stages can point
//! at the exact text that is wrong.

use crate::shell::Lexer;
use crate::span::{Position, Span, Spanned};
use crate::{Error, Result};

/// The instructions the Dockerfile language has, lower case.
pub const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The parser directives found at the top of the file.
    pub directives: Directives,
    /// The instructions, in order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings (empty continuation lines).
    pub warnings: Vec<Warning>,
    /// The first line of the first instruction.
    pub start_line: u32,
    /// The last line of the last instruction (including heredoc bodies).
    pub end_line: u32,
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` by default, or `` ` ``.
    pub escape: char,
    /// `# syntax=` value: the frontend image the file asks for (recorded, not used).
    pub syntax: Option<Spanned<String>>,
    /// `# check=` value: lint configuration (recorded, not used yet).
    pub check: Option<Spanned<String>>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What was found.
    pub message: String,
    /// The instruction it was found in.
    pub span: Span,
}

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (quotes removed).
    pub name: String,
    /// The file descriptor prefix (`3<<EOF`), 0 when none was written.
    pub fd: u32,
    /// Whether the body undergoes variable expansion (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body lines and the delimiter line.
    pub chomp: bool,
    /// The body, each line with its line ending, leading tabs already removed for `<<-`.
    pub content: String,
    /// The `<<WORD` text in the instruction line.
    pub span: Span,
}

/// One instruction as the parser sees it: keyword, flags and arguments, unexpanded.
///
/// This is BuildKit's `Node`, flattened: `args` is its `Next` chain, `onbuild` its
/// single child for `ONBUILD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword, lower case (`run`, `copy`, ...; unknown keywords are kept as written,
    /// lower-cased, and rejected by [`crate::instructions`]).
    pub keyword: String,
    /// Where the keyword was written.
    pub keyword_span: Span,
    /// The logical line (continuations joined, comments dropped).
    pub original: String,
    /// `--name=value` flags as written, with their dashes.
    pub flags: Vec<Spanned<String>>,
    /// The arguments (for `ENV` and `LABEL`: key, value, separator triples).
    pub args: Vec<Spanned<String>>,
    /// Whether the arguments came from a JSON array (exec form).
    pub json: bool,
    /// For `ONBUILD`: the wrapped instruction.
    pub onbuild: Option<Box<Node>>,
    /// Heredoc bodies, in the order their `<<WORD` appear.
    pub heredocs: Vec<Heredoc>,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
    /// From the first line of the instruction to its last (heredoc bodies included).
    pub span: Span,
}

impl Node {
    /// The instruction's keyword in upper case, as users write it (`RUN`).
    pub fn name(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }

    /// The argument values, without spans.
    pub fn arg_values(&self) -> Vec<&str> {
        self.args.iter().map(|a| a.value.as_str()).collect()
    }
}

/// Parse a Dockerfile's text.
pub fn parse(source: &str) -> Result<Dockerfile> {
    Parser::new(source).run()
}

/// Maps byte offsets in a logical line back to physical positions.
#[derive(Debug, Default, Clone)]
struct LineMap {
    /// (offset in the logical line, physical line, column of that offset).
    segments: Vec<(usize, u32, u32)>,
    text: String,
}

impl LineMap {
    fn push(&mut self, piece: &str, line: u32, column: u32) {
        self.segments.push((self.text.len(), line, column));
        self.text.push_str(piece);
    }

    fn position(&self, offset: usize) -> Position {
        let idx = self
            .segments
            .iter()
            .rposition(|(start, _, _)| *start <= offset)
            .unwrap_or(0);
        let Some(&(start, line, column)) = self.segments.get(idx) else {
            return Position::new(1, 1);
        };
        let end = offset.min(self.text.len());
        let chars = self
            .text
            .get(start..end)
            .map(|s| s.chars().count())
            .unwrap_or(0) as u32;
        Position::new(line, column + chars)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.position(start), self.position(end.max(start)))
    }
}

/// A piece of the logical line with its byte offset.
type Piece = (String, usize);

struct Parser<'a> {
    lines: Vec<&'a str>,
    next: usize,
    directives: Directives,
    directives_done: bool,
    seen_directives: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(source: &'a str) -> Self {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        Self {
            lines: source.split_inclusive('\n').collect(),
            next: 0,
            directives: Directives::default(),
            directives_done: false,
            seen_directives: Vec::new(),
        }
    }

    /// The next physical line and its 1-based number.
    fn next_line(&mut self) -> Option<(&'a str, u32)> {
        let line = *self.lines.get(self.next)?;
        self.next += 1;
        Some((line, self.next as u32))
    }

    fn run(mut self) -> Result<Dockerfile> {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        let mut comments = Vec::new();
        let mut start_line = 0;
        let mut end_line = 0;

        while let Some((raw, line_no)) = self.next_line() {
            let content = trim_newline(raw);
            let stripped = content.trim_start();
            let lead_chars = (content.len() - stripped.len()) as u32;
            if let Some(comment) = stripped.strip_prefix('#') {
                let text = comment.trim();
                if !text.is_empty() {
                    comments.push(text.to_string());
                }
            }
            self.possible_directive(stripped, line_no)?;
            let without_comment = if stripped.starts_with('#') {
                ""
            } else {
                stripped
            };
            let (piece, mut end_of_line) =
                trim_continuation(without_comment, self.directives.escape);
            if end_of_line && piece.is_empty() {
                continue;
            }
            let first_line = line_no;
            let mut last_line = line_no;
            let mut map = LineMap::default();
            map.push(piece, line_no, 1 + lead_chars);
            let mut empty_continuation = false;

            while !end_of_line {
                let Some((raw, line_no)) = self.next_line() else {
                    break;
                };
                last_line = line_no;
                let content = trim_newline(raw);
                self.possible_directive(content, line_no)?;
                if content.trim_start().starts_with('#') {
                    continue;
                }
                if content.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (piece, eol) = trim_continuation(content, self.directives.escape);
                end_of_line = eol;
                map.push(piece, line_no, 1);
            }

            let instruction_span = Span::lines(first_line, last_line);
            if empty_continuation {
                warnings.push(Warning {
                    message: format!(
                        "empty continuation line found in: {} (empty continuation lines will become errors in a future release)",
                        map.text
                    ),
                    span: instruction_span,
                });
            }

            let mut node = node_from_line(&map, 0, map.text.len(), self.directives.escape)?;
            node.comments = std::mem::take(&mut comments);

            if can_contain_heredoc(&node) {
                let heredocs = heredocs_from_line(&map)?;
                let mut bodies = Vec::with_capacity(heredocs.len());
                for mut heredoc in heredocs {
                    let mut terminated = false;
                    while let Some((raw, line_no)) = self.next_line() {
                        last_line = line_no;
                        let mut candidate = trim_newline(raw);
                        if heredoc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                        if heredoc.chomp {
                            heredoc.content.push_str(raw.trim_start_matches('\t'));
                        } else {
                            heredoc.content.push_str(raw);
                        }
                    }
                    if !terminated {
                        return Err(Error::UnterminatedHeredoc {
                            delimiter: heredoc.name,
                            span: heredoc.span,
                        });
                    }
                    bodies.push(heredoc);
                }
                // BuildKit attaches heredocs to the top node; for ONBUILD they belong to
                // the wrapped instruction, which is the one that will run.
                match node.onbuild.as_deref_mut() {
                    Some(inner) => inner.heredocs = bodies,
                    None => node.heredocs = bodies,
                }
            }

            node.span = Span::new(
                Position::new(first_line, 1),
                Position::new(last_line + 1, 1),
            );
            if start_line == 0 {
                start_line = first_line;
            }
            end_line = last_line;
            nodes.push(node);
        }

        if nodes.is_empty() {
            let line = self.lines.len().max(1) as u32;
            return Err(Error::NoInstructions {
                span: Span::new(Position::new(line, 1), Position::new(line, 1)),
            });
        }

        Ok(Dockerfile {
            directives: self.directives,
            nodes,
            warnings,
            start_line,
            end_line,
        })
    }

    /// Recognise `# key=value` directives at the top of the file.
    fn possible_directive(&mut self, line: &str, line_no: u32) -> Result<()> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value, value_col)) = match_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        let lead = (line.len() - line.trim_start().len()) as u32;
        let span = Span::new(
            Position::new(line_no, 1 + lead),
            Position::new(line_no, 1 + line.chars().count() as u32),
        );
        if self.seen_directives.contains(&key) {
            return Err(Error::DuplicateDirective {
                directive: key,
                span,
            });
        }
        self.seen_directives.push(key.clone());
        let value_span = Span::new(
            Position::new(line_no, value_col),
            Position::new(line_no, value_col + value.chars().count() as u32),
        );
        match key.as_str() {
            "escape" => {
                self.directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(Error::InvalidEscapeToken {
                            value: value.to_string(),
                            span: value_span,
                        });
                    }
                }
            }
            "syntax" => self.directives.syntax = Some(Spanned::new(value.to_string(), value_span)),
            _ => self.directives.check = Some(Spanned::new(value.to_string(), value_span)),
        }
        Ok(())
    }
}

/// Match `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (BuildKit's directive pattern)
/// against `line`, which has had leading whitespace removed. Returns key, value and the
/// 1-based column of the value within `line`.
fn match_directive(line: &str) -> Option<(&str, &str, u32)> {
    // RE2's \s is [\t\n\f\r ]: no vertical tab, no Unicode spaces.
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_s);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let after = rest[key_len..].trim_start_matches(is_s);
    let after = after.strip_prefix('=')?;
    let value_start = after.trim_start_matches(is_s);
    let value = value_start.trim_end_matches(is_s);
    if value.is_empty() {
        return None;
    }
    let offset = line.len() - value_start.len();
    let col = 1 + line[..offset].chars().count() as u32;
    Some((key, value, col))
}

/// BuildKit's `trimNewline`: drop every trailing `\r` and `\n`.
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Remove a line-continuation escape at the end of `line`.
///
/// BuildKit's rule (`([^E])E[ \t]*$|^E[ \t]*$`): the escape character, optionally
/// followed by spaces and tabs, continues the line, unless it is preceded by another
/// escape character (then it is an escaped escape, kept as text). Returns the text to
/// keep and whether the instruction ends on this line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

fn is_go_space(c: char) -> bool {
    // Go's unicode.IsSpace: the Latin-1 spaces plus the White_Space property, which is
    // what char::is_whitespace implements.
    c.is_whitespace()
}

/// BuildKit's `reWhitespace` (`[\t\v\f\r ]+`): the separators of whitespace lists.
fn is_list_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Split `text` (starting at `base` in the logical line) on runs of list whitespace.
fn split_list(text: &str, base: usize) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_list_space(c) {
            if let Some(s) = start.take() {
                out.push((text[s..i].to_string(), base + s));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((text[s..].to_string(), base + s));
    }
    out
}

/// Trim Unicode whitespace on both sides, returning the trimmed text and its offset.
fn trim_space(text: &str, base: usize) -> (&str, usize) {
    let start = text.len() - text.trim_start_matches(is_go_space).len();
    let trimmed = text[start..].trim_end_matches(is_go_space);
    (trimmed, base + start)
}

/// Build a node from the logical line `map.text[start..end]`.
fn node_from_line(map: &LineMap, start: usize, end: usize, escape: char) -> Result<Node> {
    let line = map.text.get(start..end).unwrap_or("");
    let (line, base) = trim_space(line, start);
    // Keyword: up to the first run of list whitespace.
    let kw_end = line.find(is_list_space).unwrap_or(line.len());
    let keyword_raw = &line[..kw_end];
    let keyword = keyword_raw.to_ascii_lowercase();
    let keyword_span = map.span(base, base + kw_end);
    let rest_start = line[kw_end..]
        .find(|c| !is_list_space(c))
        .map(|i| kw_end + i)
        .unwrap_or(line.len());

    let (flags, args_text, args_base) = if rest_start < line.len() {
        extract_flags(&line[rest_start..], base + rest_start)
    } else {
        (Vec::new(), "", base + line.len())
    };
    let (args_text, args_base) = trim_space(args_text, args_base);

    let mut node = Node {
        keyword: keyword.clone(),
        keyword_span,
        original: map.text.get(start..end).unwrap_or("").to_string(),
        flags: flags
            .into_iter()
            .map(|(f, o, e)| Spanned::new(f, map.span(o, e)))
            .collect(),
        args: Vec::new(),
        json: false,
        onbuild: None,
        heredocs: Vec::new(),
        comments: Vec::new(),
        span: map.span(start, end),
    };
    let upper = keyword.to_ascii_uppercase();
    let mk = |pieces: Vec<Piece>| -> Vec<Spanned<String>> {
        pieces
            .into_iter()
            .map(|(s, o)| {
                let len = s.len();
                Spanned::new(s, map.span(o, o + len))
            })
            .collect()
    };
    let args_end = args_base + args_text.len();

    match keyword.as_str() {
        "add" | "copy" | "volume" => {
            match parse_json(args_text, &upper, map.span(args_base, args_end))? {
                Some(items) => {
                    node.json = true;
                    node.args = items
                        .into_iter()
                        .map(|s| Spanned::new(s, map.span(args_base, args_end)))
                        .collect();
                }
                None => node.args = mk(split_list(args_text, args_base)),
            }
        }
        "cmd" | "entrypoint" | "run" | "shell" if !args_text.is_empty() => {
            match parse_json(args_text, &upper, map.span(args_base, args_end))? {
                Some(items) => {
                    node.json = true;
                    node.args = items
                        .into_iter()
                        .map(|s| Spanned::new(s, map.span(args_base, args_end)))
                        .collect();
                }
                None => node.args = mk(vec![(args_text.to_string(), args_base)]),
            }
        }
        "arg" => node.args = mk(parse_words(args_text, args_base, escape)),
        "env" | "label" => node.args = parse_name_val(args_text, args_base, &upper, escape, map)?,
        "expose" | "from" => node.args = mk(split_list(args_text, args_base)),
        "maintainer" | "stopsignal" | "user" | "workdir" if !args_text.is_empty() => {
            node.args = mk(vec![(args_text.to_string(), args_base)]);
        }
        "healthcheck" => {
            // The first word is the type (CMD or NONE); the rest is like CMD.
            let typ_end = args_text
                .find(|c: char| c.is_ascii() && is_go_space(c))
                .unwrap_or(args_text.len());
            if typ_end > 0 {
                node.args.push(Spanned::new(
                    args_text[..typ_end].to_string(),
                    map.span(args_base, args_base + typ_end),
                ));
                let cmd_rel = args_text[typ_end..]
                    .find(|c: char| !(c.is_ascii() && is_go_space(c)))
                    .map(|i| typ_end + i)
                    .unwrap_or(args_text.len());
                let cmd = &args_text[cmd_rel..];
                let cmd_base = args_base + cmd_rel;
                if !cmd.is_empty() {
                    match parse_json(cmd, &upper, map.span(cmd_base, args_end))? {
                        Some(items) => {
                            node.json = true;
                            node.args.extend(
                                items
                                    .into_iter()
                                    .map(|s| Spanned::new(s, map.span(cmd_base, args_end))),
                            );
                        }
                        None => node.args.extend(mk(vec![(cmd.to_string(), cmd_base)])),
                    }
                }
            }
        }
        "onbuild" if !args_text.is_empty() => {
            let inner = node_from_line(map, args_base, args_end, escape)?;
            node.onbuild = Some(Box::new(inner));
        }
        _ => {}
    }
    Ok(node)
}

/// Split the leading `--flags` off an instruction's arguments (BuildKit's
/// `extractBuilderFlags`). Flags may quote or backslash-escape characters; a lone `--`
/// ends them. Returns the flags (text, start and end offsets) and the remaining text
/// with its offset.
fn extract_flags(line: &str, base: usize) -> (Vec<(String, usize, usize)>, &str, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut blank_ok = false;
    let mut chars = line.char_indices().peekable();
    while let Some((pos, ch)) = chars.next() {
        match phase {
            Phase::Spaces => {
                if is_go_space(ch) {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (flags, &line[pos..], base + pos);
                }
                phase = Phase::Word;
                word_start = pos;
                word.clear();
                blank_ok = false;
                word.push(ch);
            }
            Phase::Word => {
                if is_go_space(ch) {
                    if word == "--" {
                        return (flags, &line[pos..], base + pos);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push((std::mem::take(&mut word), base + word_start, base + pos));
                    }
                    phase = Phase::Spaces;
                    continue;
                }
                match ch {
                    '\'' | '"' => {
                        blank_ok = true;
                        phase = Phase::Quote(ch);
                    }
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            word.push(next);
                        }
                    }
                    _ => word.push(ch),
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                } else if ch == '\\' {
                    match chars.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push((word, base + word_start, base + line.len()));
    }
    (flags, "", base + line.len())
}

/// Try the JSON (exec) form. `Ok(None)` means "not JSON, use the shell form" (BuildKit
/// falls back silently on anything that does not decode as an array); an array holding
/// anything but strings is an error.
fn parse_json(text: &str, instruction: &str, span: Span) -> Result<Option<Vec<String>>> {
    let text = text.trim_start_matches(is_go_space);
    if !text.starts_with('[') {
        return Ok(None);
    }
    // Go's json.Decoder reads the first value and ignores what follows; so does a
    // streaming deserializer.
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(Error::NonStringJsonArray {
                instruction: instruction.to_string(),
                span,
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// BuildKit's `parseWords`: split on unquoted whitespace, keeping quotes and escapes in
/// the words (they are removed later, by expansion).
fn parse_words(rest: &str, base: usize, escape: char) -> Vec<Piece> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.char_indices().peekable();
    while let Some((pos, ch)) = chars.next() {
        let at_end =
            |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| chars.peek().is_none();
        if !in_word {
            if is_go_space(ch) {
                continue;
            }
            in_word = true;
            word_start = pos;
        }
        match quote {
            None => {
                if is_go_space(ch) {
                    if blank_ok || !word.is_empty() {
                        words.push((std::mem::take(&mut word), base + word_start));
                    }
                    word.clear();
                    blank_ok = false;
                    in_word = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if at_end(&mut chars) {
                        continue; // an escape at the very end is dropped
                    }
                    word.push(ch);
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                // Inside single quotes the escape character is literal.
                if ch == escape && q != '\'' {
                    if at_end(&mut chars) {
                        quote = None;
                        continue;
                    }
                    word.push(ch);
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push((word, base + word_start));
    }
    words
}

/// `ENV`/`LABEL` arguments: either the legacy `KEY value with spaces` or one or more
/// `key=value` words. Produces BuildKit's (key, value, separator) triples.
fn parse_name_val(
    rest: &str,
    base: usize,
    instruction: &str,
    escape: char,
    map: &LineMap,
) -> Result<Vec<Spanned<String>>> {
    let words = parse_words(rest, base, escape);
    let Some((first, _)) = words.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if !first.contains('=') {
        let key_end = rest.find(is_list_space).unwrap_or(rest.len());
        let value_start = rest[key_end..]
            .find(|c| !is_list_space(c))
            .map(|i| key_end + i);
        let Some(value_start) = value_start else {
            return Err(Error::InvalidInstruction {
                instruction: instruction.to_string(),
                message: format!("{instruction} must have two arguments"),
                hint: Some(format!("write `{instruction} {}=value`", &rest[..key_end])),
                span: map.span(base, base + rest.len()),
            });
        };
        out.push(Spanned::new(
            rest[..key_end].to_string(),
            map.span(base, base + key_end),
        ));
        out.push(Spanned::new(
            rest[value_start..].to_string(),
            map.span(base + value_start, base + rest.len()),
        ));
        out.push(Spanned::new(
            String::new(),
            map.span(base + key_end, base + key_end),
        ));
        return Ok(out);
    }
    for (word, offset) in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(Error::InvalidInstruction {
                instruction: instruction.to_string(),
                message: format!("can't find = in {word:?}; must be of the form: name=value"),
                hint: None,
                span: map.span(offset, offset + word.len()),
            });
        };
        let eq = offset + key.len();
        out.push(Spanned::new(key.to_string(), map.span(offset, eq)));
        out.push(Spanned::new(
            value.to_string(),
            map.span(eq + 1, offset + word.len()),
        ));
        out.push(Spanned::new("=".to_string(), map.span(eq, eq + 1)));
    }
    Ok(out)
}

/// Heredocs are recognised in shell-form RUN, COPY and ADD, directly or under ONBUILD.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = node.onbuild.as_deref().unwrap_or(node);
    matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
}

/// Find the `<<WORD` openers in a logical line, in order.
///
/// BuildKit splits the line into shell words (quotes and escapes kept, unset variables
/// left alone), and takes every word of the form `[fd]<<[-]NAME` as a heredoc opener.
/// The delimiter is `NAME` with quotes removed; if removing quotes changed it, some part
/// was quoted and the body is not expanded.
fn heredocs_from_line(map: &LineMap) -> Result<Vec<Heredoc>> {
    let line = &map.text;
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let splitter = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let no_env: Vec<(String, String)> = Vec::new();
    let Ok(words) = splitter.expand_words(line, &no_env) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    let mut search_from = 0;
    for word in words {
        let offset = line
            .get(search_from..)
            .and_then(|s| s.find(word.as_str()))
            .map(|i| search_from + i)
            .unwrap_or(search_from);
        search_from = offset + word.len();
        let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let Some(after) = word[digits..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match after.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, after),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let plain = Lexer::new('\\').skip_unset_env(true);
        let names = plain.expand_words(rest, &no_env)?;
        let [name] = names.as_slice() else {
            continue;
        };
        let raw = plain.raw_quotes(true).expand_words(rest, &no_env)?;
        let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
        let expand = raw.len() == 1 && quotes(name) == quotes(&raw[0]);
        docs.push(Heredoc {
            name: name.clone(),
            fd: word[..digits].parse().unwrap_or(0),
            expand,
            chomp,
            content: String::new(),
            span: map.span(offset, offset + word.len()),
        });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let df = parse(src).expect("parses");
        assert_eq!(df.nodes.len(), 1, "{:?}", df.nodes);
        df.nodes.into_iter().next().expect("one node")
    }

    #[test]
    fn continuation_keeps_positions_of_arguments() {
        let df = parse("FROM alpine\nCOPY --chown=1:1 \\\n     a b /dst/\n").expect("parses");
        let copy = &df.nodes[1];
        assert_eq!(copy.flags[0].value, "--chown=1:1");
        assert_eq!(copy.flags[0].span.start, Position::new(2, 6));
        assert_eq!(copy.arg_values(), ["a", "b", "/dst/"]);
        // "a" is on line 3, after five spaces of indentation.
        assert_eq!(copy.args[0].span.start, Position::new(3, 6));
        assert_eq!(copy.args[2].span.start, Position::new(3, 10));
        assert_eq!(copy.span, Span::lines(2, 3));
    }

    #[test]
    fn escaped_escape_at_end_of_line_is_not_a_continuation() {
        let df = parse("FROM x\nENV A a\\\\\nENV B b\n").expect("parses");
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[1].args[1].value, "a\\\\");
    }

    #[test]
    fn backtick_escape_directive_changes_continuation() {
        let df = parse("# escape=`\nFROM x\nRUN echo a `\n  b\\\n").expect("parses");
        assert_eq!(df.directives.escape, '`');
        assert_eq!(df.nodes[1].args[0].value, "echo a   b\\");
    }

    #[test]
    fn directives_are_case_insensitive_and_duplicates_fail() {
        let df =
            parse("# SYNTAX = docker/dockerfile:1\n#Check=skip=all\nFROM x\n").expect("parses");
        assert_eq!(
            df.directives.syntax.as_ref().map(|s| s.value.as_str()),
            Some("docker/dockerfile:1")
        );
        assert_eq!(
            df.directives.check.as_ref().map(|s| s.value.as_str()),
            Some("skip=all")
        );
        let err = parse("# escape=`\n# escape=\\\nFROM x\n").expect_err("duplicate");
        assert!(
            matches!(err, Error::DuplicateDirective { ref directive, .. } if directive == "escape")
        );
        assert_eq!(err.span().map(|s| s.start), Some(Position::new(2, 1)));
    }

    #[test]
    fn directive_after_instruction_is_a_comment() {
        let df = parse("FROM x\n# escape=`\nRUN a \\\n b\n").expect("parses");
        assert_eq!(df.directives.escape, '\\');
        assert_eq!(df.nodes[1].args[0].value, "a  b");
    }

    #[test]
    fn invalid_escape_token_points_at_value() {
        let err = parse("# escape = x\nFROM a\n").expect_err("bad escape");
        assert!(matches!(err, Error::InvalidEscapeToken { .. }));
        assert_eq!(err.span().map(|s| s.start), Some(Position::new(1, 12)));
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        let df = parse("\u{feff}FROM x\r\nRUN a \\\r\n b\r\n").expect("parses");
        assert_eq!(df.nodes[0].arg_values(), ["x"]);
        assert_eq!(df.nodes[1].args[0].value, "a  b");
    }

    #[test]
    fn empty_continuation_lines_warn() {
        let df = parse("FROM x\nRUN a \\\n\n  b\n").expect("parses");
        assert_eq!(df.warnings.len(), 1);
        assert_eq!(df.warnings[0].span, Span::lines(2, 4));
    }

    #[test]
    fn non_string_json_is_an_error_and_invalid_json_is_shell_form() {
        let err = parse("CMD [\"a\", 1]\n").expect_err("not strings");
        assert!(matches!(err, Error::NonStringJsonArray { .. }));
        assert_eq!(err.span().map(|s| s.start), Some(Position::new(1, 5)));
        let n = one("CMD [\"a\", \n");
        assert!(!n.json);
        assert_eq!(n.arg_values(), ["[\"a\","]);
    }

    #[test]
    fn flags_and_double_dash() {
        let n = one("COPY --from=build --chmod=755 -- --weird /x\n");
        let flags: Vec<_> = n.flags.iter().map(|f| f.value.as_str()).collect();
        assert_eq!(flags, ["--from=build", "--chmod=755"]);
        assert_eq!(n.arg_values(), ["--weird", "/x"]);
        let n = one("COPY --link a b\n");
        assert_eq!(n.flags[0].value, "--link");
        let n = one("RUN --mount=type=secret,id=\"my id\" cat /run/secrets/x\n");
        assert_eq!(n.flags[0].value, "--mount=type=secret,id=my id");
    }

    #[test]
    fn heredoc_basic_quoted_chomped_and_multiple() {
        let src = "FROM x\nRUN <<EOF\necho $A\nEOF\nRUN <<-'END' cat\n\t\techo hi\n\tEND\nCOPY <<a.txt <<\"b.txt\" /dst/\nA\na.txt\nB\nb.txt\nRUN 3<<FD python3\nprint(1)\nFD\n";
        let df = parse(src).expect("parses");
        let h = &df.nodes[1].heredocs;
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].name.as_str(), h[0].expand, h[0].chomp),
            ("EOF", true, false)
        );
        assert_eq!(h[0].content, "echo $A\n");
        let h = &df.nodes[2].heredocs;
        assert_eq!(
            (h[0].name.as_str(), h[0].expand, h[0].chomp),
            ("END", false, true)
        );
        assert_eq!(h[0].content, "echo hi\n");
        let h = &df.nodes[3].heredocs;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].name.as_str(), h[0].content.as_str(), h[0].expand),
            ("a.txt", "A\n", true)
        );
        assert_eq!(
            (h[1].name.as_str(), h[1].content.as_str(), h[1].expand),
            ("b.txt", "B\n", false)
        );
        let h = &df.nodes[4].heredocs;
        assert_eq!((h[0].fd, h[0].content.as_str()), (3, "print(1)\n"));
        assert_eq!(df.nodes[4].span, Span::lines(13, 15));
        assert_eq!(df.end_line, 15);
    }

    #[test]
    fn heredoc_not_in_exec_form_or_other_instructions() {
        let df = parse("FROM x\nRUN [\"echo\", \"<<EOF\"]\nENV A=<<EOF\n").expect("parses");
        assert!(df.nodes[1].heredocs.is_empty());
        assert!(df.nodes[2].heredocs.is_empty());
    }

    #[test]
    fn heredoc_under_onbuild_belongs_to_inner_instruction() {
        let df = parse("FROM x\nONBUILD RUN <<EOF\necho hi\nEOF\n").expect("parses");
        let inner = df.nodes[1].onbuild.as_deref().expect("wrapped");
        assert_eq!(inner.heredocs[0].content, "echo hi\n");
    }

    #[test]
    fn unterminated_heredoc_points_at_opener() {
        let err = parse("FROM x\nRUN cat <<EOF\nhello\n").expect_err("unterminated");
        assert!(
            matches!(err, Error::UnterminatedHeredoc { ref delimiter, .. } if delimiter == "EOF")
        );
        assert_eq!(err.span().map(|s| s.start), Some(Position::new(2, 9)));
    }

    #[test]
    fn env_without_value_fails_with_position() {
        let err = parse("FROM x\nENV  PATH\n").expect_err("no value");
        assert!(matches!(err, Error::InvalidInstruction { .. }));
        assert_eq!(err.span().map(|s| s.start), Some(Position::new(2, 6)));
    }

    #[test]
    fn empty_input_has_no_instructions() {
        assert!(matches!(parse(""), Err(Error::NoInstructions { .. })));
        assert!(matches!(
            parse("# only\n\n# comments\n"),
            Err(Error::NoInstructions { .. })
        ));
    }
}
