//! Word expansion: `$VAR`, `${VAR:-default}` and friends, quotes and escapes, exactly as
//! BuildKit's Dockerfile shell lexer (`frontend/dockerfile/shell`) does it on Unix.
//!
//! This is *not* a shell. It is the small language Dockerfile instructions use for their
//! arguments (ENV, ARG, WORKDIR, COPY, EXPOSE, ...), and it deliberately reproduces
//! BuildKit's behaviour, including where that differs from a POSIX shell:
//!
//! - `$NAME` / `${NAME}`: a name is a letter or `_` followed by letters, digits and `_`
//!   (Unicode letters and decimal digits, as Go's `unicode.IsLetter`/`IsDigit` see them).
//!   A leading digit starts a positional parameter that takes *all* following digits
//!   (`$999aaa` is `$999` then `aaa`); `@ * # ? - $ !` are one-character special
//!   parameters. Nothing sets those, so they expand to nothing unless the environment
//!   happens to hold such a name. A `$` not followed by a name is kept literally.
//! - `${V-w}`, `${V+w}`, `${V?msg}` test "unset"; with a colon (`${V:-w}`, `${V:+w}`,
//!   `${V:?msg}`) an empty value counts as unset too. `${V:?}` fails with
//!   "V: is not allowed to be unset" / "... to be empty", or with "V: msg".
//! - `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}` remove the shortest/longest matching
//!   prefix/suffix; `${V/p/r}` and `${V//p/r}` replace the first/every match. Patterns
//!   know `*` and `?` only: BuildKit has no bracket expressions, so `[` and `]` are
//!   literal. As in BuildKit (which turns the pattern into a Go regular expression),
//!   wildcards never match a newline, a backslash may only escape `*`, `?`, `\`, `}` and
//!   `/` in a pattern, quotes inside a pattern are removed *before* it is compiled (so
//!   `"*"` is still a wildcard), and `${V//p/r}` reads `$0` in the replacement as
//!   "the matched text" (Go's template syntax; any other `$name` there expands to
//!   nothing).
//! - `${V:#p}`, `${V:=w}`, `${V:x}` and other modifiers are errors; so are `${}`, `${:}`,
//!   `${{` and an unclosed `${`.
//! - Single quotes keep everything literally. Inside double quotes only `$` expands, and
//!   the escape character escapes only `"`, `$` and itself (it is kept before any other
//!   character). Outside quotes the escape character escapes anything and is removed; a
//!   trailing one is dropped.
//! - The escape character is the Dockerfile's (`\` by default, or `` ` `` with
//!   `# escape=`` ` ``), except inside patterns, whose own escape is always `\`.
//!
//! Expansion never executes anything and never panics: quotes and braces that are not
//! closed are errors, and nested substitutions deeper than [`MAX_NESTING`] levels are
//! refused rather than recursing without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use crate::Error;

/// How deeply substitutions may nest (`${A:-${B:-${C}}}` is three levels). BuildKit has
/// no limit; we have one so that hostile input cannot exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Variable lookup for expansion.
pub trait Environment {
    /// The value of `name`, or `None` when it is unset (a set but empty variable is
    /// `Some("")`, which the `:`-less modifiers treat differently from unset).
    fn get(&self, name: &str) -> Option<&str>;
}

impl Environment for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: BuildHasher> Environment for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// Pairs in definition order: a later definition of a name replaces an earlier one, as
/// with consecutive `ENV` instructions.
impl Environment for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Environment for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Environment::get(self.as_slice(), name)
    }
}

impl<E: Environment + ?Sized> Environment for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// The result of [`Lexer::expand_word_with_matches`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Names that were looked up and found in the environment.
    pub used: BTreeSet<String>,
    /// Names that were looked up and not found (unset, not merely empty).
    pub unmatched: BTreeSet<String>,
}

/// A word expander configured like BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// A lexer using `escape` (a backslash or a backtick) as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (BuildKit's `RawQuotes`).
    #[must_use]
    pub fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape characters in the output (BuildKit's `RawEscapes`).
    #[must_use]
    pub fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Leave references to unset variables (`$UNSET`, `${UNSET}`, `${UNSET:-x}`, ...)
    /// literally in place instead of expanding them (BuildKit's `SkipUnsetEnv`).
    #[must_use]
    pub fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// Expand one word (as ENV/ARG/WORKDIR/COPY arguments are expanded): quotes removed,
    /// no splitting.
    pub fn expand_word(&self, word: &str, env: &dyn Environment) -> crate::Result<String> {
        self.run(word, env).map(|outcome| outcome.value)
    }

    /// Expand into several words: unquoted whitespace, including whitespace that comes
    /// from unquoted variable values, separates words; quoted whitespace is kept. As in
    /// BuildKit, a word that ends up empty (`""`) is dropped.
    pub fn expand_words(&self, word: &str, env: &dyn Environment) -> crate::Result<Vec<String>> {
        self.run(word, env).map(|outcome| outcome.words)
    }

    /// Like [`Lexer::expand_word`], but also reports which names were referenced and
    /// found (`used`) and which were referenced but unset (`unmatched`), like BuildKit's
    /// `ProcessWordWithMatches`.
    pub fn expand_word_with_matches(
        &self,
        word: &str,
        env: &dyn Environment,
    ) -> crate::Result<Expansion> {
        self.run(word, env).map(|outcome| Expansion {
            value: outcome.value,
            used: outcome.used,
            unmatched: outcome.unmatched,
        })
    }

    fn run(&self, word: &str, env: &dyn Environment) -> crate::Result<Outcome> {
        // BuildKit reads the word with Go's text/scanner, which silently skips a
        // byte-order mark at the very start of its input.
        let body = word.strip_prefix('\u{feff}').unwrap_or(word);
        let mut expander = Expander {
            lexer: *self,
            input: body.chars().collect(),
            pos: 0,
            env,
            used: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        match expander.expand_until(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Outcome {
                value,
                words: words.finish(),
                used: expander.used,
                unmatched: expander.unmatched,
            }),
            Err(fail) => Err(Error::Expansion {
                message: format!("failed to process {word:?}: {}", fail.message()),
                span: None,
            }),
        }
    }
}

/// Everything one expansion produces; the public methods each hand out part of it.
struct Outcome {
    value: String,
    words: Vec<String>,
    used: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

/// Why an expansion failed, before it is wrapped into the crate's [`Error`].
#[derive(Debug)]
enum Fail {
    /// A message as BuildKit would give it.
    Syntax(String),
    /// Nesting beyond [`MAX_NESTING`]; kept apart so that it is never reworded.
    TooDeep,
}

impl Fail {
    fn message(self) -> String {
        match self {
            Fail::Syntax(message) => message,
            Fail::TooDeep => {
                format!("syntax error: substitutions nested more than {MAX_NESTING} levels deep")
            }
        }
    }
}

fn unsupported_modifier(spelled: &str) -> Fail {
    Fail::Syntax(format!("unsupported modifier ({spelled}) in substitution"))
}

/// Word splitting for [`Lexer::expand_words`].
///
/// Characters from unquoted text or unquoted variable values are "splittable":
/// whitespace among them ends the current word. Quoted text and escaped characters are
/// "literal" and always join the current word. A word is only emitted when it is
/// non-empty, so an empty quoted string produces no word (BuildKit behaves so).
///
/// Every nesting level has its own accumulator, as BuildKit had for years. Recent
/// BuildKit shares one buffer between levels, so the text *before* a `${V:-...}`,
/// `${V#...}` or `${V/...}` is lost from the split words (`pre${U:-x}` gives `x`); that
/// is a bug with no purpose, and it is not reproduced.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    fn push_splittable(&mut self, c: char) {
        // Go's unicode.IsSpace and Rust's is_whitespace both follow Unicode's
        // White_Space property.
        if c.is_whitespace() {
            self.flush();
        } else {
            self.current.push(c);
        }
    }

    fn push_splittable_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push_splittable(c);
        }
    }

    fn push_literal(&mut self, c: char) {
        self.current.push(c);
    }

    fn push_literal_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.flush();
        self.done
    }
}

/// The state of one expansion: the input as characters and a cursor into it.
struct Expander<'a> {
    lexer: Lexer,
    input: Vec<char>,
    pos: usize,
    env: &'a dyn Environment,
    used: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
}

impl Expander<'_> {
    fn peek(&self) -> Option<char> {
        self.input.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(value) => {
                self.used.insert(name.to_owned());
                Some(value.to_owned())
            }
            None => {
                self.unmatched.insert(name.to_owned());
                None
            }
        }
    }

    /// Expand up to `stop` (which is consumed) or, when `stop` is `None`, to the end of
    /// the input. `raw_escapes` keeps escape characters in the output; BuildKit turns it
    /// on for patterns and replacements, whose escapes the pattern compiler reads.
    fn expand_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Words), Fail> {
        let mut out = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((out, words));
            }
            match c {
                '$' => {
                    let value = self.expand_dollar()?;
                    words.push_splittable_str(&value);
                    out.push_str(&value);
                }
                '\'' => {
                    let value = self.single_quoted()?;
                    words.push_literal_str(&value);
                    out.push_str(&value);
                }
                '"' => {
                    let value = self.double_quoted(raw_escapes)?;
                    words.push_literal_str(&value);
                    out.push_str(&value);
                }
                _ => {
                    self.pos += 1;
                    if c != self.lexer.escape {
                        words.push_splittable(c);
                        out.push(c);
                        continue;
                    }
                    if raw_escapes {
                        words.push_literal(c);
                        out.push(c);
                    }
                    // A trailing escape character escapes nothing and is dropped.
                    let Some(escaped) = self.bump() else { break };
                    words.push_literal(escaped);
                    out.push(escaped);
                }
            }
        }
        match stop {
            Some(stop) => Err(Fail::Syntax(format!(
                "unexpected end of statement while looking for matching {stop}"
            ))),
            None => Ok((out, words)),
        }
    }

    /// [`Expander::expand_until`] for the inside of a `${...}`, with the nesting bound.
    /// When the inner text runs out, BuildKit reports what the *outer* construct was
    /// missing (`at_end`) rather than the inner error.
    fn expand_nested(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end: &str,
    ) -> Result<String, Fail> {
        if self.depth >= MAX_NESTING {
            return Err(Fail::TooDeep);
        }
        self.depth += 1;
        let result = self.expand_until(Some(stop), raw_escapes);
        self.depth -= 1;
        match result {
            Ok((value, _)) => Ok(value),
            Err(Fail::Syntax(_)) if self.at_end() => Err(Fail::Syntax(at_end.to_owned())),
            Err(fail) => Err(fail),
        }
    }

    fn single_quoted(&mut self) -> Result<String, Fail> {
        self.pos += 1;
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.bump() {
                None => {
                    return Err(Fail::Syntax(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    ));
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, Fail> {
        self.pos += 1;
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(Fail::Syntax(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    ));
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.expand_dollar()?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    if c != self.lexer.escape {
                        out.push(c);
                        continue;
                    }
                    if raw_escapes {
                        out.push(c);
                    }
                    match self.peek() {
                        // The quote is unterminated; the next turn reports it.
                        None => {}
                        Some(next) if next == '"' || next == '$' || next == self.lexer.escape => {
                            self.pos += 1;
                            out.push(next);
                        }
                        // Any other character is not escapable here, so the escape
                        // character stays (twice in raw mode, as in BuildKit).
                        Some(_) => out.push(c),
                    }
                }
            }
        }
    }

    /// Read a parameter name: an identifier, a run of digits, or one special character.
    fn read_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_decimal_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_decimal_digit(d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(c) {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !(is_letter(c) || is_decimal_digit(c) || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn expand_dollar(&mut self) -> Result<String, Fail> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.read_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(Fail::Syntax(MISSING_BRACE.to_owned())),
            Some('{' | '}' | ':') => {
                return Err(Fail::Syntax("syntax error: bad substitution".to_owned()));
            }
            Some(_) => {}
        }
        let name = self.read_name();
        match self.bump() {
            // BuildKit reports this as an "unsupported modifier" named U+FFFD (Go's
            // EOF rune); it is the brace that is missing.
            None => Err(Fail::Syntax(MISSING_BRACE.to_owned())),
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some('/') => self.expand_replacement(&name),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => self.expand_modifier(&name, c),
            Some(c) => Err(unsupported_modifier(&c.to_string())),
        }
    }

    /// `${name<first>...}` where `first` is `:` or one of `+ - ? # %`.
    fn expand_modifier(&mut self, name: &str, first: char) -> Result<String, Fail> {
        let null_is_unset = first == ':';
        let op = if null_is_unset {
            match self.bump() {
                Some(op) => op,
                None => return Err(Fail::Syntax(MISSING_BRACE.to_owned())),
            }
        } else {
            first
        };
        let spelled = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let is_pattern = op == '#' || op == '%';
        if null_is_unset && is_pattern {
            return Err(unsupported_modifier(&spelled));
        }
        // BuildKit reads the word before it decides whether the modifier is valid, so
        // `${X:=y}` with X unset survives in skip-unset mode.
        let word = self.expand_nested('}', is_pattern, MISSING_BRACE)?;
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{spelled}{word}}}"));
        }
        let missing = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if missing {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if missing { String::new() } else { word }),
            '?' => match value {
                Some(v) if !missing => Ok(v),
                _ => {
                    let message = if !word.is_empty() {
                        word.as_str()
                    } else if value.is_none() {
                        "is not allowed to be unset"
                    } else {
                        "is not allowed to be empty"
                    };
                    Err(Fail::Syntax(format!("{name}: {message}")))
                }
            },
            '#' | '%' => {
                // The doubled operator is seen after expansion, so a pattern that
                // *expands* to a leading `#`/`%` also makes the match greedy.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                trim_affix(&value.unwrap_or_default(), pattern, greedy, op == '%')
            }
            _ => Err(unsupported_modifier(&spelled)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn expand_replacement(&mut self, name: &str) -> Result<String, Fail> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let pattern = self.expand_nested('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.expand_nested('}', true, MISSING_BRACE)?;
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            // BuildKit writes the reference back with a single slash even for `//`.
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        // Compiled even when the value is empty: a bad pattern is an error regardless.
        let glob = Glob::compile(&pattern, true).map_err(|e| invalid_pattern(&pattern, &e))?;
        let text: Vec<char> = value.chars().collect();
        if replace_all {
            return Ok(glob.replace_all(&text, &replacement));
        }
        Ok(match glob.find(&text, 0, false) {
            Some((start, end)) => {
                let mut out: String = text.iter().take(start).collect();
                out.push_str(&replacement);
                out.extend(text.iter().skip(end));
                out
            }
            None => value,
        })
    }
}

fn invalid_pattern(pattern: &str, reason: &str) -> Fail {
    Fail::Syntax(format!(
        "invalid pattern ({pattern}) in substitution: {reason}"
    ))
}

/// `${V#p}`/`${V##p}` (prefix) and `${V%p}`/`${V%%p}` (suffix).
fn trim_affix(value: &str, pattern: &str, greedy: bool, suffix: bool) -> Result<String, Fail> {
    let mut text: Vec<char> = value.chars().collect();
    // A suffix match is a prefix match of the reversed value against the reversed
    // pattern; this is how BuildKit finds the *shortest* suffix with a left-to-right
    // matcher, and reversing keeps `\x` escapes in their order.
    let compiled = if suffix {
        text.reverse();
        Glob::compile(&reverse_pattern(pattern), greedy)
    } else {
        Glob::compile(pattern, greedy)
    };
    let glob = compiled.map_err(|e| invalid_pattern(pattern, &e))?;
    let Some((_, end)) = glob.find(&text, 0, true) else {
        return Ok(value.to_owned());
    };
    let mut kept: Vec<char> = text.into_iter().skip(end).collect();
    if suffix {
        kept.reverse();
    }
    Ok(kept.into_iter().collect())
}

/// Reverse a pattern, keeping each `\x` pair in order (a trailing lone `\` stays alone).
fn reverse_pattern(pattern: &str) -> String {
    let mut units: Vec<String> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let mut unit = String::from(c);
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                unit.push(escaped);
            }
        }
        units.push(unit);
    }
    units.into_iter().rev().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Literal(char),
    /// `?`: one character other than a newline.
    AnyChar,
    /// `*`: any run of characters other than newlines.
    AnyRun,
}

/// A compiled substitution pattern.
///
/// BuildKit compiles these patterns to Go regular expressions (`*` to `.*` or `.*?`,
/// `?` to `.`) and relies on Go's leftmost-first match semantics, so this matcher is a
/// small Pike VM with thread priorities: it picks the same match Go would, in time
/// linear in the text for a given pattern, without backtracking or recursion.
#[derive(Debug)]
struct Glob {
    atoms: Vec<Atom>,
    /// Whether `*` prefers the longest run (`.*`) or the shortest (`.*?`).
    greedy: bool,
}

/// A thread of the matcher: the atom it waits at (`atoms.len()` means "matched") and
/// where its match started.
type Thread = (usize, usize);

/// One generation of threads, in priority order, without duplicate states.
struct ThreadList {
    threads: Vec<Thread>,
    seen: Vec<bool>,
}

impl ThreadList {
    fn new(states: usize) -> Self {
        ThreadList {
            threads: Vec::new(),
            seen: vec![false; states],
        }
    }

    fn clear(&mut self) {
        self.threads.clear();
        self.seen.iter_mut().for_each(|s| *s = false);
    }
}

enum Job {
    /// Follow the empty transitions out of a state.
    Explore(usize),
    /// Queue a thread at a `*` state, to consume one more character.
    Emit(usize),
}

impl Glob {
    fn compile(pattern: &str, greedy: bool) -> Result<Glob, String> {
        // Go's text/scanner, which BuildKit reads patterns with, skips a leading BOM.
        let pattern = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        let mut atoms = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let atom = match c {
                '*' => Atom::AnyRun,
                '?' => Atom::AnyChar,
                '\\' => match chars.peek() {
                    // Inside `${...}` these two needed escaping to not end the
                    // pattern; the escape itself is not part of the pattern.
                    Some('}' | '/') => continue,
                    _ => match chars.next() {
                        Some(e @ ('*' | '?' | '\\')) => Atom::Literal(e),
                        Some(other) => return Err(format!("invalid escape '\\{other}'")),
                        None => return Err("invalid escape '\\' at the end".to_owned()),
                    },
                },
                other => Atom::Literal(other),
            };
            atoms.push(atom);
        }
        Ok(Glob { atoms, greedy })
    }

    /// Add a thread at `state` and everything reachable from it without consuming
    /// input, in priority order (an explicit stack: a pattern of many `*` would
    /// otherwise recurse once per star).
    fn add_thread(&self, list: &mut ThreadList, stack: &mut Vec<Job>, state: usize, start: usize) {
        stack.push(Job::Explore(state));
        while let Some(job) = stack.pop() {
            match job {
                Job::Emit(s) => list.threads.push((s, start)),
                Job::Explore(s) => {
                    match list.seen.get_mut(s) {
                        Some(seen) if !*seen => *seen = true,
                        _ => continue,
                    }
                    if self.atoms.get(s) == Some(&Atom::AnyRun) {
                        // The stack is last-in first-out: push the preferred branch last.
                        if self.greedy {
                            stack.push(Job::Explore(s + 1));
                            stack.push(Job::Emit(s));
                        } else {
                            stack.push(Job::Emit(s));
                            stack.push(Job::Explore(s + 1));
                        }
                    } else {
                        list.threads.push((s, start));
                    }
                }
            }
        }
    }

    /// The leftmost-first match in `text` starting at or after `from` (exactly at
    /// `from` when `anchored`), as character indices `(start, end)`.
    fn find(&self, text: &[char], from: usize, anchored: bool) -> Option<(usize, usize)> {
        let accept = self.atoms.len();
        let mut current = ThreadList::new(accept + 1);
        let mut next = ThreadList::new(accept + 1);
        let mut stack = Vec::new();
        let mut found = None;
        let mut pos = from;
        loop {
            if current.threads.is_empty() && (found.is_some() || (anchored && pos != from)) {
                break;
            }
            // A new attempt starting here has the lowest priority, and none starts once
            // a match is known: an earlier start always wins.
            if found.is_none() && (!anchored || pos == from) {
                self.add_thread(&mut current, &mut stack, 0, pos);
            }
            let c = text.get(pos).copied();
            for &(state, start) in &current.threads {
                let target = match (self.atoms.get(state), c) {
                    // Matched: threads after this one have lower priority; drop them.
                    (None, _) => {
                        found = Some((start, pos));
                        break;
                    }
                    (Some(_), None) => continue,
                    (Some(Atom::Literal(l)), Some(c)) if *l == c => state + 1,
                    (Some(Atom::AnyChar), Some(c)) if c != '\n' => state + 1,
                    (Some(Atom::AnyRun), Some(c)) if c != '\n' => state,
                    (Some(_), Some(_)) => continue,
                };
                self.add_thread(&mut next, &mut stack, target, start);
            }
            if c.is_none() {
                break;
            }
            std::mem::swap(&mut current, &mut next);
            next.clear();
            pos += 1;
        }
        found
    }

    /// Replace every match, as Go's `Regexp.ReplaceAllString` does: matches do not
    /// overlap, an empty match right after a match is skipped, and `$0`/`${0}` in the
    /// replacement stand for the matched text.
    fn replace_all(&self, text: &[char], replacement: &str) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find(text, search, false) else {
                break;
            };
            out.extend(text.iter().take(start).skip(last_end));
            if end > last_end || start == 0 {
                let matched: String = text.iter().take(end).skip(start).collect();
                expand_template(&mut out, replacement, &matched);
            }
            last_end = end;
            // Always move forward, by one character after an empty match.
            search = if end <= search { search + 1 } else { end };
        }
        out.extend(text.iter().skip(last_end));
        out
    }
}

/// Go's `Regexp.Expand` for a pattern without capture groups: `$$` is a dollar,
/// `$name`/`${name}` is group `name`, of which only `0` (the whole match) exists, and a
/// `$` that starts no valid reference is kept.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(rest.get(..dollar).unwrap_or_default());
        rest = rest.get(dollar + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_reference(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Split `name...` or `{name}...` off the front of `s`, as Go's template syntax reads it.
fn template_reference(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(is_letter(c) || is_decimal_digit(c) || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = body.get(..end)?;
    let mut rest = body.get(end..)?;
    if braced {
        rest = rest.strip_prefix('}')?;
    }
    Some((name, rest))
}

/// The POSIX special parameters BuildKit recognises after `$`.
fn is_special_parameter(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter`: general category L. Rust's `char::is_alphabetic` is wider
/// (it includes letter numbers and many combining marks), so it cannot be used.
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_table(unicode_tables::LETTER, c)
    }
}

/// Go's `unicode.IsDigit`: general category Nd. Rust's `char::is_numeric` is wider (it
/// includes `²`, `½`, `Ⅻ`, ...).
fn is_decimal_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        in_table(unicode_tables::DECIMAL_DIGIT, c)
    }
}

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let code = u32::from(c);
    table
        .binary_search_by(|&(low, high)| {
            if high < code {
                std::cmp::Ordering::Less
            } else if low > code {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Unicode 15.0 (the version Go's `unicode` package implements) general-category
/// ranges, inclusive, sorted. Generated from the Unicode Character Database: `LETTER`
/// is every code point in categories Lu, Ll, Lt, Lm and Lo; `DECIMAL_DIGIT` is Nd.
mod unicode_tables {
    #[rustfmt::skip]
    pub(super) static LETTER: &[(u32, u32)] = &[
        (0x00041, 0x0005A), (0x00061, 0x0007A), (0x000AA, 0x000AA), (0x000B5, 0x000B5), (0x000BA, 0x000BA), (0x000C0, 0x000D6),
        (0x000D8, 0x000F6), (0x000F8, 0x002C1), (0x002C6, 0x002D1), (0x002E0, 0x002E4), (0x002EC, 0x002EC), (0x002EE, 0x002EE),
        (0x00370, 0x00374), (0x00376, 0x00377), (0x0037A, 0x0037D), (0x0037F, 0x0037F), (0x00386, 0x00386), (0x00388, 0x0038A),
        (0x0038C, 0x0038C), (0x0038E, 0x003A1), (0x003A3, 0x003F5), (0x003F7, 0x00481), (0x0048A, 0x0052F), (0x00531, 0x00556),
        (0x00559, 0x00559), (0x00560, 0x00588), (0x005D0, 0x005EA), (0x005EF, 0x005F2), (0x00620, 0x0064A), (0x0066E, 0x0066F),
        (0x00671, 0x006D3), (0x006D5, 0x006D5), (0x006E5, 0x006E6), (0x006EE, 0x006EF), (0x006FA, 0x006FC), (0x006FF, 0x006FF),
        (0x00710, 0x00710), (0x00712, 0x0072F), (0x0074D, 0x007A5), (0x007B1, 0x007B1), (0x007CA, 0x007EA), (0x007F4, 0x007F5),
        (0x007FA, 0x007FA), (0x00800, 0x00815), (0x0081A, 0x0081A), (0x00824, 0x00824), (0x00828, 0x00828), (0x00840, 0x00858),
        (0x00860, 0x0086A), (0x00870, 0x00887), (0x00889, 0x0088E), (0x008A0, 0x008C9), (0x00904, 0x00939), (0x0093D, 0x0093D),
        (0x00950, 0x00950), (0x00958, 0x00961), (0x00971, 0x00980), (0x00985, 0x0098C), (0x0098F, 0x00990), (0x00993, 0x009A8),
        (0x009AA, 0x009B0), (0x009B2, 0x009B2), (0x009B6, 0x009B9), (0x009BD, 0x009BD), (0x009CE, 0x009CE), (0x009DC, 0x009DD),
        (0x009DF, 0x009E1), (0x009F0, 0x009F1), (0x009FC, 0x009FC), (0x00A05, 0x00A0A), (0x00A0F, 0x00A10), (0x00A13, 0x00A28),
        (0x00A2A, 0x00A30), (0x00A32, 0x00A33), (0x00A35, 0x00A36), (0x00A38, 0x00A39), (0x00A59, 0x00A5C), (0x00A5E, 0x00A5E),
        (0x00A72, 0x00A74), (0x00A85, 0x00A8D), (0x00A8F, 0x00A91), (0x00A93, 0x00AA8), (0x00AAA, 0x00AB0), (0x00AB2, 0x00AB3),
        (0x00AB5, 0x00AB9), (0x00ABD, 0x00ABD), (0x00AD0, 0x00AD0), (0x00AE0, 0x00AE1), (0x00AF9, 0x00AF9), (0x00B05, 0x00B0C),
        (0x00B0F, 0x00B10), (0x00B13, 0x00B28), (0x00B2A, 0x00B30), (0x00B32, 0x00B33), (0x00B35, 0x00B39), (0x00B3D, 0x00B3D),
        (0x00B5C, 0x00B5D), (0x00B5F, 0x00B61), (0x00B71, 0x00B71), (0x00B83, 0x00B83), (0x00B85, 0x00B8A), (0x00B8E, 0x00B90),
        (0x00B92, 0x00B95), (0x00B99, 0x00B9A), (0x00B9C, 0x00B9C), (0x00B9E, 0x00B9F), (0x00BA3, 0x00BA4), (0x00BA8, 0x00BAA),
        (0x00BAE, 0x00BB9), (0x00BD0, 0x00BD0), (0x00C05, 0x00C0C), (0x00C0E, 0x00C10), (0x00C12, 0x00C28), (0x00C2A, 0x00C39),
        (0x00C3D, 0x00C3D), (0x00C58, 0x00C5A), (0x00C5D, 0x00C5D), (0x00C60, 0x00C61), (0x00C80, 0x00C80), (0x00C85, 0x00C8C),
        (0x00C8E, 0x00C90), (0x00C92, 0x00CA8), (0x00CAA, 0x00CB3), (0x00CB5, 0x00CB9), (0x00CBD, 0x00CBD), (0x00CDD, 0x00CDE),
        (0x00CE0, 0x00CE1), (0x00CF1, 0x00CF2), (0x00D04, 0x00D0C), (0x00D0E, 0x00D10), (0x00D12, 0x00D3A), (0x00D3D, 0x00D3D),
        (0x00D4E, 0x00D4E), (0x00D54, 0x00D56), (0x00D5F, 0x00D61), (0x00D7A, 0x00D7F), (0x00D85, 0x00D96), (0x00D9A, 0x00DB1),
        (0x00DB3, 0x00DBB), (0x00DBD, 0x00DBD), (0x00DC0, 0x00DC6), (0x00E01, 0x00E30), (0x00E32, 0x00E33), (0x00E40, 0x00E46),
        (0x00E81, 0x00E82), (0x00E84, 0x00E84), (0x00E86, 0x00E8A), (0x00E8C, 0x00EA3), (0x00EA5, 0x00EA5), (0x00EA7, 0x00EB0),
        (0x00EB2, 0x00EB3), (0x00EBD, 0x00EBD), (0x00EC0, 0x00EC4), (0x00EC6, 0x00EC6), (0x00EDC, 0x00EDF), (0x00F00, 0x00F00),
        (0x00F40, 0x00F47), (0x00F49, 0x00F6C), (0x00F88, 0x00F8C), (0x01000, 0x0102A), (0x0103F, 0x0103F), (0x01050, 0x01055),
        (0x0105A, 0x0105D), (0x01061, 0x01061), (0x01065, 0x01066), (0x0106E, 0x01070), (0x01075, 0x01081), (0x0108E, 0x0108E),
        (0x010A0, 0x010C5), (0x010C7, 0x010C7), (0x010CD, 0x010CD), (0x010D0, 0x010FA), (0x010FC, 0x01248), (0x0124A, 0x0124D),
        (0x01250, 0x01256), (0x01258, 0x01258), (0x0125A, 0x0125D), (0x01260, 0x01288), (0x0128A, 0x0128D), (0x01290, 0x012B0),
        (0x012B2, 0x012B5), (0x012B8, 0x012BE), (0x012C0, 0x012C0), (0x012C2, 0x012C5), (0x012C8, 0x012D6), (0x012D8, 0x01310),
        (0x01312, 0x01315), (0x01318, 0x0135A), (0x01380, 0x0138F), (0x013A0, 0x013F5), (0x013F8, 0x013FD), (0x01401, 0x0166C),
        (0x0166F, 0x0167F), (0x01681, 0x0169A), (0x016A0, 0x016EA), (0x016F1, 0x016F8), (0x01700, 0x01711), (0x0171F, 0x01731),
        (0x01740, 0x01751), (0x01760, 0x0176C), (0x0176E, 0x01770), (0x01780, 0x017B3), (0x017D7, 0x017D7), (0x017DC, 0x017DC),
        (0x01820, 0x01878), (0x01880, 0x01884), (0x01887, 0x018A8), (0x018AA, 0x018AA), (0x018B0, 0x018F5), (0x01900, 0x0191E),
        (0x01950, 0x0196D), (0x01970, 0x01974), (0x01980, 0x019AB), (0x019B0, 0x019C9), (0x01A00, 0x01A16), (0x01A20, 0x01A54),
        (0x01AA7, 0x01AA7), (0x01B05, 0x01B33), (0x01B45, 0x01B4C), (0x01B83, 0x01BA0), (0x01BAE, 0x01BAF), (0x01BBA, 0x01BE5),
        (0x01C00, 0x01C23), (0x01C4D, 0x01C4F), (0x01C5A, 0x01C7D), (0x01C80, 0x01C88), (0x01C90, 0x01CBA), (0x01CBD, 0x01CBF),
        (0x01CE9, 0x01CEC), (0x01CEE, 0x01CF3), (0x01CF5, 0x01CF6), (0x01CFA, 0x01CFA), (0x01D00, 0x01DBF), (0x01E00, 0x01F15),
        (0x01F18, 0x01F1D), (0x01F20, 0x01F45), (0x01F48, 0x01F4D), (0x01F50, 0x01F57), (0x01F59, 0x01F59), (0x01F5B, 0x01F5B),
        (0x01F5D, 0x01F5D), (0x01F5F, 0x01F7D), (0x01F80, 0x01FB4), (0x01FB6, 0x01FBC), (0x01FBE, 0x01FBE), (0x01FC2, 0x01FC4),
        (0x01FC6, 0x01FCC), (0x01FD0, 0x01FD3), (0x01FD6, 0x01FDB), (0x01FE0, 0x01FEC), (0x01FF2, 0x01FF4), (0x01FF6, 0x01FFC),
        (0x02071, 0x02071), (0x0207F, 0x0207F), (0x02090, 0x0209C), (0x02102, 0x02102), (0x02107, 0x02107), (0x0210A, 0x02113),
        (0x02115, 0x02115), (0x02119, 0x0211D), (0x02124, 0x02124), (0x02126, 0x02126), (0x02128, 0x02128), (0x0212A, 0x0212D),
        (0x0212F, 0x02139), (0x0213C, 0x0213F), (0x02145, 0x02149), (0x0214E, 0x0214E), (0x02183, 0x02184), (0x02C00, 0x02CE4),
        (0x02CEB, 0x02CEE), (0x02CF2, 0x02CF3), (0x02D00, 0x02D25), (0x02D27, 0x02D27), (0x02D2D, 0x02D2D), (0x02D30, 0x02D67),
        (0x02D6F, 0x02D6F), (0x02D80, 0x02D96), (0x02DA0, 0x02DA6), (0x02DA8, 0x02DAE), (0x02DB0, 0x02DB6), (0x02DB8, 0x02DBE),
        (0x02DC0, 0x02DC6), (0x02DC8, 0x02DCE), (0x02DD0, 0x02DD6), (0x02DD8, 0x02DDE), (0x02E2F, 0x02E2F), (0x03005, 0x03006),
        (0x03031, 0x03035), (0x0303B, 0x0303C), (0x03041, 0x03096), (0x0309D, 0x0309F), (0x030A1, 0x030FA), (0x030FC, 0x030FF),
        (0x03105, 0x0312F), (0x03131, 0x0318E), (0x031A0, 0x031BF), (0x031F0, 0x031FF), (0x03400, 0x04DBF), (0x04E00, 0x0A48C),
        (0x0A4D0, 0x0A4FD), (0x0A500, 0x0A60C), (0x0A610, 0x0A61F), (0x0A62A, 0x0A62B), (0x0A640, 0x0A66E), (0x0A67F, 0x0A69D),
        (0x0A6A0, 0x0A6E5), (0x0A717, 0x0A71F), (0x0A722, 0x0A788), (0x0A78B, 0x0A7CA), (0x0A7D0, 0x0A7D1), (0x0A7D3, 0x0A7D3),
        (0x0A7D5, 0x0A7D9), (0x0A7F2, 0x0A801), (0x0A803, 0x0A805), (0x0A807, 0x0A80A), (0x0A80C, 0x0A822), (0x0A840, 0x0A873),
        (0x0A882, 0x0A8B3), (0x0A8F2, 0x0A8F7), (0x0A8FB, 0x0A8FB), (0x0A8FD, 0x0A8FE), (0x0A90A, 0x0A925), (0x0A930, 0x0A946),
        (0x0A960, 0x0A97C), (0x0A984, 0x0A9B2), (0x0A9CF, 0x0A9CF), (0x0A9E0, 0x0A9E4), (0x0A9E6, 0x0A9EF), (0x0A9FA, 0x0A9FE),
        (0x0AA00, 0x0AA28), (0x0AA40, 0x0AA42), (0x0AA44, 0x0AA4B), (0x0AA60, 0x0AA76), (0x0AA7A, 0x0AA7A), (0x0AA7E, 0x0AAAF),
        (0x0AAB1, 0x0AAB1), (0x0AAB5, 0x0AAB6), (0x0AAB9, 0x0AABD), (0x0AAC0, 0x0AAC0), (0x0AAC2, 0x0AAC2), (0x0AADB, 0x0AADD),
        (0x0AAE0, 0x0AAEA), (0x0AAF2, 0x0AAF4), (0x0AB01, 0x0AB06), (0x0AB09, 0x0AB0E), (0x0AB11, 0x0AB16), (0x0AB20, 0x0AB26),
        (0x0AB28, 0x0AB2E), (0x0AB30, 0x0AB5A), (0x0AB5C, 0x0AB69), (0x0AB70, 0x0ABE2), (0x0AC00, 0x0D7A3), (0x0D7B0, 0x0D7C6),
        (0x0D7CB, 0x0D7FB), (0x0F900, 0x0FA6D), (0x0FA70, 0x0FAD9), (0x0FB00, 0x0FB06), (0x0FB13, 0x0FB17), (0x0FB1D, 0x0FB1D),
        (0x0FB1F, 0x0FB28), (0x0FB2A, 0x0FB36), (0x0FB38, 0x0FB3C), (0x0FB3E, 0x0FB3E), (0x0FB40, 0x0FB41), (0x0FB43, 0x0FB44),
        (0x0FB46, 0x0FBB1), (0x0FBD3, 0x0FD3D), (0x0FD50, 0x0FD8F), (0x0FD92, 0x0FDC7), (0x0FDF0, 0x0FDFB), (0x0FE70, 0x0FE74),
        (0x0FE76, 0x0FEFC), (0x0FF21, 0x0FF3A), (0x0FF41, 0x0FF5A), (0x0FF66, 0x0FFBE), (0x0FFC2, 0x0FFC7), (0x0FFCA, 0x0FFCF),
        (0x0FFD2, 0x0FFD7), (0x0FFDA, 0x0FFDC), (0x10000, 0x1000B), (0x1000D, 0x10026), (0x10028, 0x1003A), (0x1003C, 0x1003D),
        (0x1003F, 0x1004D), (0x10050, 0x1005D), (0x10080, 0x100FA), (0x10280, 0x1029C), (0x102A0, 0x102D0), (0x10300, 0x1031F),
        (0x1032D, 0x10340), (0x10342, 0x10349), (0x10350, 0x10375), (0x10380, 0x1039D), (0x103A0, 0x103C3), (0x103C8, 0x103CF),
        (0x10400, 0x1049D), (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10500, 0x10527), (0x10530, 0x10563), (0x10570, 0x1057A),
        (0x1057C, 0x1058A), (0x1058C, 0x10592), (0x10594, 0x10595), (0x10597, 0x105A1), (0x105A3, 0x105B1), (0x105B3, 0x105B9),
        (0x105BB, 0x105BC), (0x10600, 0x10736), (0x10740, 0x10755), (0x10760, 0x10767), (0x10780, 0x10785), (0x10787, 0x107B0),
        (0x107B2, 0x107BA), (0x10800, 0x10805), (0x10808, 0x10808), (0x1080A, 0x10835), (0x10837, 0x10838), (0x1083C, 0x1083C),
        (0x1083F, 0x10855), (0x10860, 0x10876), (0x10880, 0x1089E), (0x108E0, 0x108F2), (0x108F4, 0x108F5), (0x10900, 0x10915),
        (0x10920, 0x10939), (0x10980, 0x109B7), (0x109BE, 0x109BF), (0x10A00, 0x10A00), (0x10A10, 0x10A13), (0x10A15, 0x10A17),
        (0x10A19, 0x10A35), (0x10A60, 0x10A7C), (0x10A80, 0x10A9C), (0x10AC0, 0x10AC7), (0x10AC9, 0x10AE4), (0x10B00, 0x10B35),
        (0x10B40, 0x10B55), (0x10B60, 0x10B72), (0x10B80, 0x10B91), (0x10C00, 0x10C48), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2),
        (0x10D00, 0x10D23), (0x10E80, 0x10EA9), (0x10EB0, 0x10EB1), (0x10F00, 0x10F1C), (0x10F27, 0x10F27), (0x10F30, 0x10F45),
        (0x10F70, 0x10F81), (0x10FB0, 0x10FC4), (0x10FE0, 0x10FF6), (0x11003, 0x11037), (0x11071, 0x11072), (0x11075, 0x11075),
        (0x11083, 0x110AF), (0x110D0, 0x110E8), (0x11103, 0x11126), (0x11144, 0x11144), (0x11147, 0x11147), (0x11150, 0x11172),
        (0x11176, 0x11176), (0x11183, 0x111B2), (0x111C1, 0x111C4), (0x111DA, 0x111DA), (0x111DC, 0x111DC), (0x11200, 0x11211),
        (0x11213, 0x1122B), (0x1123F, 0x11240), (0x11280, 0x11286), (0x11288, 0x11288), (0x1128A, 0x1128D), (0x1128F, 0x1129D),
        (0x1129F, 0x112A8), (0x112B0, 0x112DE), (0x11305, 0x1130C), (0x1130F, 0x11310), (0x11313, 0x11328), (0x1132A, 0x11330),
        (0x11332, 0x11333), (0x11335, 0x11339), (0x1133D, 0x1133D), (0x11350, 0x11350), (0x1135D, 0x11361), (0x11400, 0x11434),
        (0x11447, 0x1144A), (0x1145F, 0x11461), (0x11480, 0x114AF), (0x114C4, 0x114C5), (0x114C7, 0x114C7), (0x11580, 0x115AE),
        (0x115D8, 0x115DB), (0x11600, 0x1162F), (0x11644, 0x11644), (0x11680, 0x116AA), (0x116B8, 0x116B8), (0x11700, 0x1171A),
        (0x11740, 0x11746), (0x11800, 0x1182B), (0x118A0, 0x118DF), (0x118FF, 0x11906), (0x11909, 0x11909), (0x1190C, 0x11913),
        (0x11915, 0x11916), (0x11918, 0x1192F), (0x1193F, 0x1193F), (0x11941, 0x11941), (0x119A0, 0x119A7), (0x119AA, 0x119D0),
        (0x119E1, 0x119E1), (0x119E3, 0x119E3), (0x11A00, 0x11A00), (0x11A0B, 0x11A32), (0x11A3A, 0x11A3A), (0x11A50, 0x11A50),
        (0x11A5C, 0x11A89), (0x11A9D, 0x11A9D), (0x11AB0, 0x11AF8), (0x11C00, 0x11C08), (0x11C0A, 0x11C2E), (0x11C40, 0x11C40),
        (0x11C72, 0x11C8F), (0x11D00, 0x11D06), (0x11D08, 0x11D09), (0x11D0B, 0x11D30), (0x11D46, 0x11D46), (0x11D60, 0x11D65),
        (0x11D67, 0x11D68), (0x11D6A, 0x11D89), (0x11D98, 0x11D98), (0x11EE0, 0x11EF2), (0x11F02, 0x11F02), (0x11F04, 0x11F10),
        (0x11F12, 0x11F33), (0x11FB0, 0x11FB0), (0x12000, 0x12399), (0x12480, 0x12543), (0x12F90, 0x12FF0), (0x13000, 0x1342F),
        (0x13441, 0x13446), (0x14400, 0x14646), (0x16800, 0x16A38), (0x16A40, 0x16A5E), (0x16A70, 0x16ABE), (0x16AD0, 0x16AED),
        (0x16B00, 0x16B2F), (0x16B40, 0x16B43), (0x16B63, 0x16B77), (0x16B7D, 0x16B8F), (0x16E40, 0x16E7F), (0x16F00, 0x16F4A),
        (0x16F50, 0x16F50), (0x16F93, 0x16F9F), (0x16FE0, 0x16FE1), (0x16FE3, 0x16FE3), (0x17000, 0x187F7), (0x18800, 0x18CD5),
        (0x18D00, 0x18D08), (0x1AFF0, 0x1AFF3), (0x1AFF5, 0x1AFFB), (0x1AFFD, 0x1AFFE), (0x1B000, 0x1B122), (0x1B132, 0x1B132),
        (0x1B150, 0x1B152), (0x1B155, 0x1B155), (0x1B164, 0x1B167), (0x1B170, 0x1B2FB), (0x1BC00, 0x1BC6A), (0x1BC70, 0x1BC7C),
        (0x1BC80, 0x1BC88), (0x1BC90, 0x1BC99), (0x1D400, 0x1D454), (0x1D456, 0x1D49C), (0x1D49E, 0x1D49F), (0x1D4A2, 0x1D4A2),
        (0x1D4A5, 0x1D4A6), (0x1D4A9, 0x1D4AC), (0x1D4AE, 0x1D4B9), (0x1D4BB, 0x1D4BB), (0x1D4BD, 0x1D4C3), (0x1D4C5, 0x1D505),
        (0x1D507, 0x1D50A), (0x1D50D, 0x1D514), (0x1D516, 0x1D51C), (0x1D51E, 0x1D539), (0x1D53B, 0x1D53E), (0x1D540, 0x1D544),
        (0x1D546, 0x1D546), (0x1D54A, 0x1D550), (0x1D552, 0x1D6A5), (0x1D6A8, 0x1D6C0), (0x1D6C2, 0x1D6DA), (0x1D6DC, 0x1D6FA),
        (0x1D6FC, 0x1D714), (0x1D716, 0x1D734), (0x1D736, 0x1D74E), (0x1D750, 0x1D76E), (0x1D770, 0x1D788), (0x1D78A, 0x1D7A8),
        (0x1D7AA, 0x1D7C2), (0x1D7C4, 0x1D7CB), (0x1DF00, 0x1DF1E), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E100, 0x1E12C),
        (0x1E137, 0x1E13D), (0x1E14E, 0x1E14E), (0x1E290, 0x1E2AD), (0x1E2C0, 0x1E2EB), (0x1E4D0, 0x1E4EB), (0x1E7E0, 0x1E7E6),
        (0x1E7E8, 0x1E7EB), (0x1E7ED, 0x1E7EE), (0x1E7F0, 0x1E7FE), (0x1E800, 0x1E8C4), (0x1E900, 0x1E943), (0x1E94B, 0x1E94B),
        (0x1EE00, 0x1EE03), (0x1EE05, 0x1EE1F), (0x1EE21, 0x1EE22), (0x1EE24, 0x1EE24), (0x1EE27, 0x1EE27), (0x1EE29, 0x1EE32),
        (0x1EE34, 0x1EE37), (0x1EE39, 0x1EE39), (0x1EE3B, 0x1EE3B), (0x1EE42, 0x1EE42), (0x1EE47, 0x1EE47), (0x1EE49, 0x1EE49),
        (0x1EE4B, 0x1EE4B), (0x1EE4D, 0x1EE4F), (0x1EE51, 0x1EE52), (0x1EE54, 0x1EE54), (0x1EE57, 0x1EE57), (0x1EE59, 0x1EE59),
        (0x1EE5B, 0x1EE5B), (0x1EE5D, 0x1EE5D), (0x1EE5F, 0x1EE5F), (0x1EE61, 0x1EE62), (0x1EE64, 0x1EE64), (0x1EE67, 0x1EE6A),
        (0x1EE6C, 0x1EE72), (0x1EE74, 0x1EE77), (0x1EE79, 0x1EE7C), (0x1EE7E, 0x1EE7E), (0x1EE80, 0x1EE89), (0x1EE8B, 0x1EE9B),
        (0x1EEA1, 0x1EEA3), (0x1EEA5, 0x1EEA9), (0x1EEAB, 0x1EEBB), (0x20000, 0x2A6DF), (0x2A700, 0x2B739), (0x2B740, 0x2B81D),
        (0x2B820, 0x2CEA1), (0x2CEB0, 0x2EBE0), (0x2F800, 0x2FA1D), (0x30000, 0x3134A), (0x31350, 0x323AF),
    ];

    #[rustfmt::skip]
    pub(super) static DECIMAL_DIGIT: &[(u32, u32)] = &[
        (0x00030, 0x00039), (0x00660, 0x00669), (0x006F0, 0x006F9), (0x007C0, 0x007C9), (0x00966, 0x0096F), (0x009E6, 0x009EF),
        (0x00A66, 0x00A6F), (0x00AE6, 0x00AEF), (0x00B66, 0x00B6F), (0x00BE6, 0x00BEF), (0x00C66, 0x00C6F), (0x00CE6, 0x00CEF),
        (0x00D66, 0x00D6F), (0x00DE6, 0x00DEF), (0x00E50, 0x00E59), (0x00ED0, 0x00ED9), (0x00F20, 0x00F29), (0x01040, 0x01049),
        (0x01090, 0x01099), (0x017E0, 0x017E9), (0x01810, 0x01819), (0x01946, 0x0194F), (0x019D0, 0x019D9), (0x01A80, 0x01A89),
        (0x01A90, 0x01A99), (0x01B50, 0x01B59), (0x01BB0, 0x01BB9), (0x01C40, 0x01C49), (0x01C50, 0x01C59), (0x0A620, 0x0A629),
        (0x0A8D0, 0x0A8D9), (0x0A900, 0x0A909), (0x0A9D0, 0x0A9D9), (0x0A9F0, 0x0A9F9), (0x0AA50, 0x0AA59), (0x0ABF0, 0x0ABF9),
        (0x0FF10, 0x0FF19), (0x104A0, 0x104A9), (0x10D30, 0x10D39), (0x11066, 0x1106F), (0x110F0, 0x110F9), (0x11136, 0x1113F),
        (0x111D0, 0x111D9), (0x112F0, 0x112F9), (0x11450, 0x11459), (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9),
        (0x11730, 0x11739), (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59), (0x11DA0, 0x11DA9),
        (0x11F50, 0x11F59), (0x16A60, 0x16A69), (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149),
        (0x1E2F0, 0x1E2F9), (0x1E4F0, 0x1E4F9), (0x1E950, 0x1E959), (0x1FBF0, 0x1FBF9),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expand(word: &str, pairs: &[(&str, &str)]) -> String {
        Lexer::new('\\')
            .expand_word(word, &env(pairs))
            .unwrap_or_else(|e| panic!("{word:?} failed: {e}"))
    }

    fn expand_err(word: &str, pairs: &[(&str, &str)]) -> String {
        match Lexer::new('\\').expand_word(word, &env(pairs)) {
            Ok(v) => panic!("{word:?} expanded to {v:?}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn words(word: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        Lexer::new('\\')
            .expand_words(word, &env(pairs))
            .unwrap_or_else(|e| panic!("{word:?} failed: {e}"))
    }

    const SET: &[(&str, &str)] = &[("V", "value"), ("E", "")];

    #[test]
    fn plain_references() {
        assert_eq!(expand("$V", SET), "value");
        assert_eq!(expand("${V}", SET), "value");
        assert_eq!(expand("a${V}b", SET), "avalueb");
        assert_eq!(expand("$Vb", SET), "");
        assert_eq!(expand("${U}x", SET), "x");
        assert_eq!(expand("$E.", SET), ".");
        assert_eq!(expand("$", SET), "$");
        assert_eq!(expand("a$.b", SET), "a$.b");
        assert_eq!(expand("$v", SET), "", "names are case-sensitive");
    }

    #[test]
    fn default_with_and_without_colon() {
        assert_eq!(expand("${V:-d}", SET), "value");
        assert_eq!(expand("${E:-d}", SET), "d");
        assert_eq!(expand("${U:-d}", SET), "d");
        assert_eq!(expand("${V-d}", SET), "value");
        assert_eq!(expand("${E-d}", SET), "");
        assert_eq!(expand("${U-d}", SET), "d");
    }

    #[test]
    fn alternative_with_and_without_colon() {
        assert_eq!(expand("${V:+a}", SET), "a");
        assert_eq!(expand("${E:+a}", SET), "");
        assert_eq!(expand("${U:+a}", SET), "");
        assert_eq!(expand("${V+a}", SET), "a");
        assert_eq!(expand("${E+a}", SET), "a");
        assert_eq!(expand("${U+a}", SET), "");
    }

    #[test]
    fn required_with_and_without_colon() {
        assert_eq!(expand("${V:?m}", SET), "value");
        assert_eq!(expand("${V?m}", SET), "value");
        assert_eq!(expand("${E?m}", SET), "");
        assert!(expand_err("${E:?}", SET).ends_with("E: is not allowed to be empty"));
        assert!(expand_err("${U:?}", SET).ends_with("U: is not allowed to be unset"));
        assert!(expand_err("${U?}", SET).ends_with("U: is not allowed to be unset"));
        let message = expand_err("${U?need $V here}", SET);
        assert!(message.ends_with("U: need value here"), "{message}");
        assert!(expand_err("${E:?custom}", SET).ends_with("E: custom"));
        assert!(message.starts_with("failed to process \"${U?need $V here}\": "));
    }

    #[test]
    fn nested_defaults() {
        assert_eq!(expand("${A:-${B:-${C:-deep}}}", SET), "deep");
        assert_eq!(expand("${A:-${V:-x}}", SET), "value");
        assert_eq!(expand("${V:+<${V}>}", SET), "<value>");
        assert_eq!(expand("${A:-\\${V}z}", SET), "${Vz}");
        assert_eq!(expand("${A:-'${V}'}", SET), "${V}");
        assert_eq!(expand("${A:-\"${V}\"}", SET), "value");
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
        assert_eq!(expand(&nested(MAX_NESTING), &[]), "x");
        let message = expand_err(&nested(MAX_NESTING + 1), &[]);
        assert!(message.contains("nested more than 64"), "{message}");
        // Far beyond the bound, and unterminated: still an error, not a stack overflow.
        let hostile = "${A:-\"".repeat(100_000);
        assert!(Lexer::new('\\').expand_word(&hostile, &env(&[])).is_err());
    }

    #[test]
    fn prefix_removal() {
        let e = &[("P", "a/b/c.tar.gz")];
        assert_eq!(expand("${P#*/}", e), "b/c.tar.gz");
        assert_eq!(expand("${P##*/}", e), "c.tar.gz");
        assert_eq!(expand("${P#x}", e), "a/b/c.tar.gz");
        assert_eq!(expand("${P#a?b}", e), "/c.tar.gz");
        assert_eq!(expand("${P#}", e), "a/b/c.tar.gz");
        assert_eq!(expand("${U#*}", e), "");
    }

    #[test]
    fn suffix_removal() {
        let e = &[("P", "a/b/c.tar.gz")];
        assert_eq!(expand("${P%.*}", e), "a/b/c.tar");
        assert_eq!(expand("${P%%.*}", e), "a/b/c");
        assert_eq!(expand("${P%/*}", e), "a/b");
        assert_eq!(expand("${P%%/*}", e), "a");
        assert_eq!(expand("${P%x}", e), "a/b/c.tar.gz");
        let stars = &[("S", "a***yy*")];
        assert_eq!(expand("${S%%\\**\\*}", stars), "a");
        assert_eq!(expand("${S%\\*}", stars), "a***yy");
    }

    #[test]
    fn pattern_quirks_follow_buildkit() {
        let e = &[("V", "[ab]c"), ("N", "x\ny")];
        assert_eq!(expand("${V#[ab]}", e), "c", "brackets are literal");
        assert_eq!(
            expand("${V#\"*\"}", e),
            "[ab]c",
            "quotes do not protect `*`"
        );
        assert_eq!(expand("${N#*}", e), "x\ny", "lazy star matches nothing");
        assert_eq!(expand("${N##*}", e), "\ny", "wildcards stop at a newline");
        assert_eq!(expand("${N//?/.}", e), ".\n.");
        let greedy_by_expansion = &[("V", "aXbXc"), ("P", "#*X")];
        assert_eq!(expand("${V#$P}", greedy_by_expansion), "c");
        let special = &[("F", "()[]{}^$.*?|\\x")];
        assert_eq!(expand("${F#()[]{\\}^$.\\*\\?|\\\\}", special), "x");
        assert!(expand_err("${F#\\x}", special).contains("invalid escape"));
        assert!(expand_err("${U/a\\b/c}", &[]).contains("invalid pattern"));
    }

    #[test]
    fn replacement() {
        let e = &[
            ("F", "/tmp/tmp/bar.txt"),
            ("N", "/tmp"),
            ("A", "/a/foo/b/c.txt"),
        ];
        assert_eq!(expand("${F/$N/}", e), "/tmp/bar.txt");
        assert_eq!(expand("${F//$N/}", e), "/bar.txt");
        // An escaped `/` ends no part of the reference; in the replacement the escape stays
        // (the pattern compiler removes it, nothing removes it from the replacement).
        assert_eq!(expand("${A/\\/?\\//\\/}", e), "\\/foo/b/c.txt");
        assert_eq!(expand("${A//\\/?\\//\\/}", e), "\\/foo\\/c.txt");
        assert_eq!(expand("${A//$N/_}", &[("A", "/a/b"), ("N", "/?/")]), "_b");
        assert_eq!(expand("${F//t*p/X}", e), "/X/bar.txt");
        assert_eq!(expand("${F/zzz/X}", e), "/tmp/tmp/bar.txt");
        assert_eq!(expand("${U/a/b}", e), "");
        let x = &[("X", "xxyy")];
        assert_eq!(expand("${X///}", x), "xxyy");
        assert_eq!(expand("${X//}/ww}", x), "xxyy");
        assert_eq!(expand("${X/$E/ww}", x), "wwxxyy");
        assert_eq!(expand("${X//$E/-}", x), "-x-x-y-y-");
        assert!(expand_err("${X//ww}", x).contains("missing '/'"));
        assert!(expand_err("${X//}", x).contains("missing '/'"));
    }

    #[test]
    fn replace_all_reads_go_templates() {
        let rep = &[("V", "abcabc"), ("R", "<$0>"), ("S", "$1$$${0}$x")];
        assert_eq!(expand("${V//b/$R}", rep), "a<b>ca<b>c");
        assert_eq!(
            expand("${V/b/$R}", rep),
            "a<$0>cabc",
            "single replacement is literal"
        );
        assert_eq!(expand("${V//c/$S}", rep), "ab$cab$c");
    }

    #[test]
    fn positional_and_special_parameters() {
        assert_eq!(expand("a$1b", SET), "ab");
        assert_eq!(expand("$123x", SET), "x");
        assert_eq!(expand("$@@@", SET), "@@");
        assert_eq!(expand("${#:-n}", SET), "n");
        assert_eq!(expand("${001:-d}aaa", SET), "daaa");
        assert_eq!(expand("$1", &[("1", "one")]), "one");
        // Unicode digits start a positional parameter too, `²` does not continue a name.
        assert_eq!(expand("$١٢x", SET), "x");
        assert_eq!(expand("$V²", SET), "value²");
        assert_eq!(expand("$Ⅻ", SET), "$Ⅻ", "a letter number is not a letter");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(expand("'$V \\x'", SET), "$V \\x");
        assert_eq!(
            expand("\"$V \\x \\$V \\\" \\\\\"", SET),
            "value \\x $V \" \\"
        );
        assert_eq!(expand("a\\$V\\ b\\", SET), "a$V b");
        assert_eq!(expand("he'll'o", SET), "hello");
        assert!(expand_err("'abc", SET).contains("matching single-quote"));
        assert!(expand_err("\"abc\\\"", SET).contains("matching double-quote"));
        assert_eq!(
            expand("\u{feff}a\u{feff}", SET),
            "a\u{feff}",
            "leading BOM skipped"
        );
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let e = env(SET);
        let ok = |w: &str| {
            lexer
                .expand_word(w, &e)
                .unwrap_or_else(|err| panic!("{err}"))
        };
        assert_eq!(ok("a`$V"), "a$V");
        assert_eq!(ok("C:\\dir\\$V"), "C:\\dir\\value");
        assert_eq!(ok("\"`\"`$V``\""), "\"$V`");
        assert_eq!(ok("\"`x\""), "`x");
        assert_eq!(ok("${U:-a`}b}"), "a}b");
        assert_eq!(lexer.escape(), '`');
    }

    #[test]
    fn raw_quotes_keep_quotes() {
        let lexer = Lexer::new('\\').raw_quotes(true);
        let e = env(SET);
        assert_eq!(
            lexer.expand_word("'a b'\"$V\"", &e).ok().as_deref(),
            Some("'a b'\"value\"")
        );
        assert_eq!(
            lexer.expand_words("'a b' c", &e).ok(),
            Some(vec!["'a b'".to_owned(), "c".to_owned()])
        );
    }

    #[test]
    fn raw_escapes_keep_escapes() {
        let lexer = Lexer::new('\\').raw_escapes(true);
        let e = env(SET);
        assert_eq!(
            lexer.expand_word("a\\$V\\ b", &e).ok().as_deref(),
            Some("a\\$V\\ b")
        );
        // Inside double quotes a non-escapable character keeps the escape twice.
        assert_eq!(
            lexer.expand_word("\"\\t\\$\"", &e).ok().as_deref(),
            Some("\\\\t\\$")
        );
        // Defaults are read without raw escapes whatever the lexer says.
        assert_eq!(
            lexer.expand_word("${U:-\\x}", &e).ok().as_deref(),
            Some("x")
        );
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let lexer = Lexer::new('\\').skip_unset_env(true);
        let e = env(SET);
        let ok = |w: &str| {
            lexer
                .expand_word(w, &e)
                .unwrap_or_else(|err| panic!("{err}"))
        };
        assert_eq!(ok("$FOO"), "$FOO");
        assert_eq!(ok("${FOO}-$V"), "${FOO}-value");
        assert_eq!(ok("${FOO:-$V}"), "${FOO:-value}");
        assert_eq!(ok("${FOO?oops}"), "${FOO?oops}");
        assert_eq!(ok("${FOO:=x}"), "${FOO:=x}");
        assert_eq!(ok("${FOO//a/b}"), "${FOO/a/b}");
        assert_eq!(ok("${E:-d}"), "d", "set variables still expand");
        assert!(lexer.expand_word("${E:?}", &e).is_err());
    }

    #[test]
    fn word_splitting() {
        let e = &[("S", " a  b "), ("Q", "x")];
        assert_eq!(words("one two\tthree", e), ["one", "two", "three"]);
        assert_eq!(words("x${S}y", e), ["x", "a", "b", "y"]);
        assert_eq!(words("x${Q}y z", e), ["xxy", "z"]);
        assert_eq!(words("x\"${S}\"y", e), ["x a  b y"]);
        assert_eq!(words("a\\ b 'c d'", e), ["a b", "c d"]);
        assert_eq!(words("a \"\" b", e), ["a", "b"]);
        assert_eq!(words("pre${U:-x y}post", e), ["prex", "ypost"]);
        assert!(words("  ", e).is_empty());
        assert_eq!(words("한 국\u{3000}어", e), ["한", "국", "어"]);
    }

    #[test]
    fn matches_report_used_and_unmatched() {
        let e = env(&[("FOO", "xxx"), ("BAR", "")]);
        let lexer = Lexer::new('\\');
        let result = lexer
            .expand_word_with_matches("${FOO:-a} ${BAR:-b} ${BAZ:-c} $1", &e)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(result.value, "xxx b c ");
        let set = |names: &[&str]| {
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(result.used, set(&["BAR", "FOO"]));
        assert_eq!(result.unmatched, set(&["1", "BAZ"]));
        let nested = lexer
            .expand_word_with_matches("${A:-${FOO}}", &e)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(nested.used, set(&["FOO"]));
        assert_eq!(nested.unmatched, set(&["A"]));
        let plain = lexer
            .expand_word_with_matches("no refs", &e)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            plain,
            Expansion {
                value: "no refs".into(),
                ..Expansion::default()
            }
        );
    }

    #[test]
    fn unicode_values_and_names() {
        let e = &[("KOREAN", "한국어"), ("名前", "値"), ("É", "é👽")];
        assert_eq!(expand("안녕$KOREAN", e), "안녕한국어");
        assert_eq!(expand("${名前}!", e), "値!");
        assert_eq!(expand("$É", e), "é👽");
        assert_eq!(expand("${KOREAN#한}", e), "국어");
        assert_eq!(expand("${KOREAN%?}", e), "한국");
        assert_eq!(expand("${É/👽/🚀}", e), "é🚀");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "${}",
            "${:}",
            "${{a}",
            "${a",
            "${a:-b",
            "${a:=b}",
            "${a:x}",
            "${.}",
            "he${PWD",
            "${V:#x}",
            "${V:%x}",
            "${a:-b ${c}",
            "$\"",
            "${a/b",
        ] {
            expand_err(bad, SET);
        }
        assert!(expand_err("${}", SET).contains("bad substitution"));
        assert!(expand_err("${V:=x}", SET).contains("unsupported modifier (:=)"));
        assert!(expand_err("${a:-b", SET).contains("missing '}'"));
    }

    #[test]
    fn environments_agree() {
        let pairs = env(&[("A", "1"), ("A", "2"), ("B", "")]);
        let btree: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let hash: HashMap<String, String> = pairs.iter().cloned().collect();
        let lexer = Lexer::default();
        for environment in [
            &pairs as &dyn Environment,
            &pairs.as_slice(),
            &btree,
            &hash,
            &&btree,
        ] {
            assert_eq!(
                lexer
                    .expand_word("$A${B-x}${C-y}", environment)
                    .ok()
                    .as_deref(),
                Some("2y")
            );
        }
    }

    /// Deterministic pseudo-random words over the characters that matter: expansion may
    /// fail, but must never panic or hang.
    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[char] = &[
            '$', '{', '}', ':', '-', '+', '?', '#', '%', '/', '*', '\\', '`', '\'', '"', 'a', 'V',
            '1', '@', ' ', '\n', 'é', '한', '\u{feff}', '[', '0', '=',
        ];
        let e = env(&[("V", "a*b\nc"), ("a", "$0 ${V}")]);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let lexers = [
            Lexer::new('\\'),
            Lexer::new('`').raw_quotes(true),
            Lexer::new('\\').raw_escapes(true).skip_unset_env(true),
        ];
        for round in 0..20_000u32 {
            let len = (next() % 24) as usize;
            let word: String = (0..len)
                .map(|_| {
                    ALPHABET
                        .get((next() % ALPHABET.len() as u64) as usize)
                        .copied()
                        .unwrap_or('a')
                })
                .collect();
            let lexer = lexers
                .get(round as usize % lexers.len())
                .copied()
                .unwrap_or_default();
            let single = lexer.expand_word(&word, &e);
            let split = lexer.expand_words(&word, &e);
            assert_eq!(single.is_ok(), split.is_ok(), "{word:?}");
        }
    }
}
