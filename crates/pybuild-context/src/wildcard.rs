//! Wildcards in COPY/ADD sources: Go's `path/filepath.Match`, one path segment at a time.
//!
//! These are *not* `.dockerignore` patterns (see [`crate::ignore`] for those): BuildKit
//! resolves a source such as `src/*.rs` with tonistiigi/fsutil's `ResolveWildcards`, which
//! walks the directory and runs `filepath.Match` on each path. Its syntax (Unix):
//!
//! * `*` is any run of characters within one segment, `?` one character;
//! * `[...]` a class of characters and `lo-hi` ranges, negated by a leading `^` (not `!`);
//!   a `-` or `]` must be escaped where it would start a range;
//! * `\c` is the character `c`, inside a class too.
//!
//! Since `*` and `?` never match `/`, a pattern matches exactly the paths with as many
//! segments as it has, segment by segment, which is how [`SegmentPattern`] is used.

/// fsutil's `containsWildcards`: an unescaped `*`, `?` or `[`. A backslash escapes the
/// next character (so `a\*b` has no wildcard and names a file `a\*b` literally, as it
/// does in BuildKit).
pub(crate) fn contains_wildcards(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// One piece of a compiled segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    Any,
    /// `*` (consecutive stars collapsed)
    Star,
    /// `[...]`: inclusive ranges, matched when (not) in one of them.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(expected) => *expected == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// One `/`-free segment of a wildcard source, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentPattern {
    tokens: Vec<Token>,
}

impl SegmentPattern {
    /// Compile a segment, rejecting what Go's `filepath.Match` reports as
    /// `ErrBadPattern` (an unterminated or empty class, an unescaped `-` or `]` where a
    /// range starts, a trailing backslash).
    pub(crate) fn new(segment: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut chars = segment.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '\\' => match chars.next() {
                    Some(escaped) => tokens.push(Token::Char(escaped)),
                    None => return Err("trailing backslash".to_owned()),
                },
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                            break;
                        }
                        let lo = class_char(&mut chars)?;
                        let hi = if chars.next_if_eq(&'-').is_some() {
                            class_char(&mut chars)?
                        } else {
                            lo
                        };
                        ranges.push((lo, hi));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                other => tokens.push(Token::Char(other)),
            }
        }
        Ok(SegmentPattern { tokens })
    }

    /// Whether the name (one path segment) matches.
    pub(crate) fn is_match(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.tokens;
        let (mut t, mut n) = (0, 0);
        // Where the last `*` was and how much of the name it has swallowed so far:
        // single-character tokens only, so retrying from the last star is enough.
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            if let (Some(token), Some(&c)) = (tokens.get(t), name.get(n)) {
                if *token == Token::Star {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                if token.matches(c) {
                    t += 1;
                    n += 1;
                    continue;
                }
            }
            match star {
                Some((star_t, star_n)) => {
                    t = star_t + 1;
                    n = star_n + 1;
                    star = Some((star_t, star_n + 1));
                }
                None => return false,
            }
        }
        tokens
            .get(t..)
            .unwrap_or_default()
            .iter()
            .all(|token| *token == Token::Star)
    }
}

/// Go's `getEsc`: one (possibly escaped) character of a class range; the class must go
/// on after it (at least its closing `]`).
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let c = match chars.next() {
        None => return Err("unterminated character class".to_owned()),
        Some('-' | ']') => {
            return Err("'-' or ']' must be escaped where a class range starts".to_owned());
        }
        Some('\\') => chars
            .next()
            .ok_or_else(|| "unterminated character class".to_owned())?,
        Some(c) => c,
    };
    if chars.peek().is_none() {
        return Err("unterminated character class".to_owned());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        match SegmentPattern::new(pattern) {
            Ok(p) => p.is_match(name),
            Err(e) => panic!("{pattern:?} rejected: {e}"),
        }
    }

    #[test]
    fn go_filepath_match_cases() {
        // From Go's path/filepath match_test.go (single-segment ones).
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*b*c*d*e*f", "axbxcxdxexxf", true),
            ("a*b*c*d*e*f", "axbxcxdxexxfx", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            ("a*", "ab", true),
            ("*.txt", ".hidden.txt", true),
            ("[!a]", "!", true),
            ("[!a]", "b", false),
            ("[z-a]", "m", false),
        ];
        for &(pattern, name, expected) in cases {
            assert_eq!(matches(pattern, name), expected, "{pattern:?} on {name:?}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "[]a]", "[-]", "[x-]", "[", "[^", "[^bc", "a[", "\\", "a\\", "[\\", "[a-", "[]",
        ] {
            assert!(SegmentPattern::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wildcard_detection_honours_escapes() {
        assert!(contains_wildcards("*.txt"));
        assert!(contains_wildcards("a?"));
        assert!(contains_wildcards("[ab].py"));
        assert!(!contains_wildcards("plain/path"));
        assert!(!contains_wildcards("a\\*b"));
        assert!(contains_wildcards("a\\\\*b"));
    }

    #[test]
    fn heavy_stars_stay_fast() {
        let pattern = "*a".repeat(50);
        let name = "a".repeat(49) + "b";
        let started = std::time::Instant::now();
        assert!(!matches(&pattern, &name));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
