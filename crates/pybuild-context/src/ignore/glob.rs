//! One cleaned `.dockerignore` pattern, turned into something that answers "does this
//! path match?" exactly as moby/patternmatcher would.
//!
//! moby first checks the pattern with Go's `filepath.Match` syntax rules, then sorts it
//! into one of four kinds by looking at where wildcards occur:
//!
//! * no wildcard at all: the path must equal the pattern;
//! * literal text followed by a final `**`: a plain string-prefix test (so `abc/**` does
//!   not match `abc` itself, and `ab**` matches `abc/def`);
//! * a leading `**` followed by literal text: a plain string-suffix test (so `**file`
//!   matches `dir/myfile` too, which the regular-expression reading would not);
//! * anything else: a regular expression, run by [`super::regex`].

use std::iter::Peekable;
use std::str::Chars;

use super::regex::Regex;

/// How one pattern decides whether a path matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matcher {
    /// The path must be exactly this.
    Exact(String),
    /// The path must start with this.
    Prefix(String),
    /// The path must end with these bytes, or (when they start with `/`) equal the rest.
    ///
    /// Bytes, not text: moby cuts the two-byte `**` off the front of the pattern by byte
    /// count, and a pattern led by a byte-order mark (which its regular-expression
    /// scanner skips) is cut inside that character. Comparing bytes keeps that answer
    /// without slicing a `str` off a character boundary.
    Suffix(Vec<u8>),
    /// Anything with wildcards elsewhere.
    Regex(Regex),
}

impl Matcher {
    /// Compile a cleaned pattern (already without its `!`).
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        check_glob_syntax(pattern)?;
        let (kind, expression) = translate(pattern);
        Ok(match kind {
            Kind::Exact => Matcher::Exact(pattern.to_owned()),
            Kind::Prefix => {
                Matcher::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).to_owned())
            }
            Kind::Suffix => Matcher::Suffix(pattern.as_bytes().get(2..).unwrap_or(&[]).to_vec()),
            Kind::Regex => Matcher::Regex(Regex::new(&expression)?),
        })
    }

    pub(crate) fn is_match(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(text) => path == text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                let path = path.as_bytes();
                // `**/foo` also matches `foo` at the top of the context.
                path.ends_with(suffix)
                    || suffix
                        .split_first()
                        .is_some_and(|(first, rest)| *first == b'/' && path == rest)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }

    /// Whether the pattern matches `path` or one of its prefixes `path[..cut]`, `cuts`
    /// being ascending byte offsets (where its parent directories end).
    pub(crate) fn is_match_or_prefix_match(&self, path: &str, cuts: &[usize]) -> bool {
        match self {
            Matcher::Regex(regex) => regex.is_match_or_prefix_match(path, cuts),
            _ => {
                self.is_match(path)
                    || cuts
                        .iter()
                        .any(|&cut| path.get(..cut).is_some_and(|p| self.is_match(p)))
            }
        }
    }

    /// Whether some path starting with `prefix` might match. Conservative: never `false`
    /// when such a path exists.
    pub(crate) fn may_match_with_prefix(&self, prefix: &str) -> bool {
        match self {
            Matcher::Exact(text) => text.starts_with(prefix),
            Matcher::Prefix(literal) => {
                literal.starts_with(prefix) || prefix.starts_with(literal.as_str())
            }
            // `<prefix><suffix>` always ends with the suffix.
            Matcher::Suffix(_) => true,
            Matcher::Regex(regex) => regex.may_match_with_prefix(prefix),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Go's `filepath.Match` syntax rules on Unix, which moby applies before anything else:
/// a backslash must escape something; a class needs at least one member and a closing
/// `]`; inside it, `-` and `]` must be escaped unless `-` joins a range.
fn check_glob_syntax(pattern: &str) -> Result<(), String> {
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars
                    .next()
                    .ok_or("syntax error in pattern: trailing backslash")?;
            }
            '[' => check_class(&mut chars)?,
            _ => {}
        }
    }
    Ok(())
}

/// The rest of a class, after its `[`.
fn check_class(chars: &mut Peekable<Chars<'_>>) -> Result<(), String> {
    if chars.peek() == Some(&'^') {
        chars.next();
    }
    let mut members = 0usize;
    loop {
        if members > 0 && chars.peek() == Some(&']') {
            chars.next();
            return Ok(());
        }
        class_member(chars)?;
        if chars.peek() == Some(&'-') {
            chars.next();
            class_member(chars)?;
        }
        members += 1;
    }
}

fn class_member(chars: &mut Peekable<Chars<'_>>) -> Result<(), String> {
    let problem = match chars.next() {
        None => "unterminated character class",
        Some('-') => "unescaped '-' in character class",
        Some(']') => "empty character class or unescaped ']'",
        Some('\\') if chars.next().is_none() => "unterminated character class",
        Some(_) => return Ok(()),
    };
    Err(format!("syntax error in pattern: {problem}"))
}

/// Sort the pattern into its [`Kind`] and build the regular expression moby would.
///
/// `*` becomes "anything but `/`", `?` "one character but `/`", `**` either "anything"
/// (at the end) or "nothing, or anything ending in `/`" (elsewhere, swallowing a `/` after
/// it). Characters that are special to regular expressions but not to globs are escaped;
/// `[`, `]`, `^` and backslash escapes pass through unchanged, so they keep their
/// regular-expression meaning.
fn translate(pattern: &str) -> (Kind, String) {
    let mut chars = pattern.chars().peekable();
    // moby reads the pattern with Go's text/scanner, which drops a byte-order mark at the
    // very start; the literal kinds below still compare against the full text.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut kind = Kind::Exact;
    let mut expression = String::from("^");
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        expression.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    expression.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                // A leading `**` makes it a suffix test, whatever the rest held so far;
                // any later wildcard turns it back into a regular expression.
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                expression.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                expression.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                expression.push('\\');
                expression.push(c);
            }
            '\\' => {
                // The syntax check guarantees something follows.
                if let Some(escaped) = chars.next() {
                    expression.push('\\');
                    expression.push(escaped);
                    kind = Kind::Regex;
                }
            }
            '[' | ']' => {
                expression.push(c);
                kind = Kind::Regex;
            }
            _ => expression.push(c),
        }
        first = false;
    }
    expression.push('$');
    (kind, expression)
}

#[cfg(test)]
mod tests {
    use super::{Kind, Matcher, translate};

    #[test]
    fn kinds_and_expressions_follow_moby() {
        let cases = [
            ("*", Kind::Regex, "^[^/]*$"),
            ("a*/b", Kind::Regex, "^a[^/]*/b$"),
            ("**", Kind::Suffix, "^$"),
            ("**/**", Kind::Regex, "^(.*/)?.*$"),
            ("dir/**", Kind::Prefix, "^dir/$"),
            ("**/dir", Kind::Suffix, "^(.*/)?dir$"),
            ("**/dir2/*", Kind::Regex, "^(.*/)?dir2/[^/]*$"),
            ("**/**/*.txt", Kind::Regex, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a(b)c", Kind::Exact, "^a\\(b\\)c$"),
            ("a\\*b", Kind::Regex, "^a\\*b$"),
        ];
        for (pattern, kind, expression) in cases {
            assert_eq!(
                translate(pattern),
                (kind, expression.to_owned()),
                "pattern {pattern:?}"
            );
        }
    }

    #[test]
    fn glob_syntax_errors() {
        for bad in [
            "[", "a[", "[^", "[^bc", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "\\", "[\\",
        ] {
            assert!(Matcher::new(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in ["[\\]a]", "[\\-]", "[x\\-]", "[*]", "[[]", "a]b", "[a-b]c"] {
            assert!(Matcher::new(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn suffix_kind_is_a_plain_string_suffix() {
        let Ok(m) = Matcher::new("**file") else {
            panic!("did not compile");
        };
        // moby quirk: the regular-expression reading would need a `/` before `file`.
        assert!(m.is_match("dir/myfile"));
        assert!(m.is_match("file"));
        assert!(!m.is_match("file.txt"));
    }

    #[test]
    fn byte_order_mark_before_double_star_does_not_panic() {
        let Ok(m) = Matcher::new("\u{feff}**") else {
            panic!("did not compile");
        };
        // moby cuts two bytes off a three-byte character and compares what is left.
        assert_eq!(m, Matcher::Suffix(vec![0xBF, b'*', b'*']));
        assert!(m.is_match("\u{bf}**"));
        assert!(!m.is_match("anything"));
    }
}
