//! `.dockerignore`: finding and reading the ignore file, and deciding which context paths
//! it leaves out.
//!
//! The semantics are moby/patternmatcher's (what `docker build` and BuildKit use), down to
//! its surprising corners, because a context that differs from Docker's by one file is a
//! silently different build. The surprising corners we reproduce on purpose:
//!
//! * A pattern is matched against the whole slash-separated path, not per segment: `*`
//!   never crosses a `/`, but `**` does, and `**` with no `/` around it still works
//!   (`a**/*.txt` matches `a/b/c/file.txt`).
//! * A pattern that is `**` followed by literal text is a plain string-suffix test:
//!   `**file` matches `dir/myfile`. A pattern that is literal text followed by `**` is a
//!   plain string-prefix test: `abc/**` does not match `abc`, `ab**` matches `abc/d`.
//! * Wildcard patterns are run as the Go regular expression moby builds from them, so
//!   `[`, `]`, `^` and backslash escapes have their regular-expression meaning: `\d` is a
//!   digit, `[*]` matches `]` (not `*`), a `^` anywhere but first can never match, and a
//!   class is negated by `^` only (`[!a]` is the two characters `!` and `a`).
//! * `#` starts a comment only in the very first column of a line.
//! * Patterns are cleaned (`./a/../b/` is `b`). A leading `/` is dropped by
//!   [`parse_dockerignore`] (moby's `ReadAll`), not by [`PatternMatcher::new`] (its `New`),
//!   which also cleans before splitting off a `!`, so `!./a` given to it never matches.
//!
//! Known difference: Unicode class escapes (`\pL`, `\p{Greek}`) are rejected as bad
//! patterns instead of being given Go's meaning, and every malformed pattern is rejected
//! up front, where moby only fails once the pattern is first evaluated.

mod glob;
mod regex;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use glob::Matcher;

/// One compiled `.dockerignore` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern, without its `!`.
    text: String,
    /// Written with a leading `!`: re-includes what it matches.
    exclusion: bool,
    /// How many `/`-separated segments the cleaned pattern has (for [`PatternMatcher::matches`]).
    segments: usize,
    matcher: Matcher,
}

impl Pattern {
    /// Compile one raw line the way moby's `New` does. `Ok(None)` for a blank line.
    fn new(raw: &str) -> Result<Option<Self>, Error> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let bad = |message: String| Error::BadPattern {
            pattern: trimmed.to_owned(),
            message,
        };
        // moby cleans before looking at the `!`, so `!./a` keeps its `./` (and can never
        // match); `parse_dockerignore` strips the `!` first and so avoids this.
        let cleaned = clean(trimmed);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => {
                return Err(bad(
                    "illegal exclusion pattern: \"!\" must be followed by a pattern".to_owned(),
                ));
            }
            Some(rest) => (true, rest.to_owned()),
            None => (false, cleaned),
        };
        let matcher = Matcher::new(&text).map_err(bad)?;
        Ok(Some(Pattern {
            segments: text.split('/').count(),
            text,
            exclusion,
            matcher,
        }))
    }

    /// The cleaned pattern text, without the `!` of an exclusion.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern was written with a leading `!` (it re-includes what it matches).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether this pattern alone matches `path` itself (no parent directories considered).
    pub fn is_match(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }

    /// Whether this pattern matches `path` or one of `ancestors`. With `cuts` (the
    /// ancestors are then `path[..cut]`) this is one pass over `path` instead of one per
    /// ancestor, which matters for deep paths.
    fn matches_path_or_ancestors(
        &self,
        path: &str,
        ancestors: &[&str],
        cuts: Option<&[usize]>,
    ) -> bool {
        match cuts {
            Some(cuts) => self.matcher.is_match_or_prefix_match(path, cuts),
            None => self.is_match(path) || ancestors.iter().any(|a| self.is_match(a)),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.text)
    }
}

/// The compiled patterns of a `.dockerignore`, in order.
///
/// Paths are slash-separated and relative to the context root (`src/main.rs`). For every
/// path the patterns are tried in order and the last one that matches decides: a plain
/// pattern excludes, a `!` pattern re-includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compile `.dockerignore` patterns (already split into lines, comments removed).
    ///
    /// Each is trimmed and cleaned; blank ones are skipped. Malformed patterns (a bad `[`
    /// class, a trailing backslash, a lone `!`, a regular-expression reading Go would
    /// reject) give [`Error::BadPattern`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Error> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for raw in patterns {
            if let Some(pattern) = Pattern::new(raw.as_ref())? {
                compiled.push(pattern);
            }
        }
        let exclusions = compiled.iter().any(|p| p.exclusion);
        Ok(PatternMatcher {
            patterns: compiled,
            exclusions,
        })
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// moby's `MatchesOrParentMatches`: is `path` left out of the context?
    ///
    /// A pattern counts as matching when it matches the path or any of its parent
    /// directories, so an excluded directory excludes everything inside it unless a later
    /// `!` pattern re-includes it. The last matching pattern wins. Like moby's method,
    /// `path` is taken as given (pass clean context-relative paths); only its parent
    /// directory is cleaned before it is split.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let parent = go_dir(path);
        let ancestors = if parent == "." {
            Vec::new()
        } else {
            path_prefixes(&parent)
        };
        let cuts = prefix_cuts(path, &ancestors);
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could flip the answer needs evaluating.
            if pattern.exclusion != excluded {
                continue;
            }
            if pattern.matches_path_or_ancestors(path, &ancestors, cuts.as_deref()) {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// moby's plain `Matches(path, patterns)` question: the deprecated per-path semantics.
    ///
    /// The path is cleaned first, and `.` (the context itself) is never excluded. Besides
    /// the path, each pattern is tried against only *one* parent: the one with as many
    /// segments as the pattern. So `**/c` does not exclude `a/b/c/d` here (it is tried
    /// against `a/b` only) although [`Self::matches_or_parent_matches`] does; this is the
    /// bug for which moby deprecated it. Kept for the Docker CLI behaviours built on it.
    pub fn matches(&self, path: &str) -> bool {
        let file = clean(path);
        if file == "." {
            return false;
        }
        let parent = go_dir(&file);
        let ancestors = if parent == "." {
            Vec::new()
        } else {
            path_prefixes(&parent)
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            if pattern.exclusion != excluded {
                continue;
            }
            let same_depth_parent = pattern
                .segments
                .checked_sub(1)
                .and_then(|i| ancestors.get(i));
            if pattern.is_match(&file) || same_depth_parent.is_some_and(|a| pattern.is_match(a)) {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// True when any pattern is an exclusion (`!`), so a walker knows it cannot skip an
    /// excluded directory wholesale without asking [`Self::may_reinclude_under`].
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether the directory `dir` (clean, context-relative; `""` or `.` for the root),
    /// excluded by the patterns, might still contain paths that are not excluded, so a
    /// context walker must descend into it rather than skip it.
    ///
    /// Conservative: it may answer `true` when nothing inside is re-included after all,
    /// but never `false` when something is. It reasons as follows: whatever matches `dir`
    /// or one of its parents also matches everything inside `dir`, so only `!` patterns
    /// after the last such plain pattern can re-include anything, and only if they can
    /// match some path starting with `dir/`.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        let dir = dir.trim_end_matches('/');
        let (prefix, parents) = if dir.is_empty() || dir == "." {
            (String::new(), None)
        } else {
            let mut parents = path_prefixes(dir);
            parents.pop(); // `dir` itself
            (format!("{dir}/"), Some(parents))
        };
        let covers_dir = |p: &Pattern| match &parents {
            None => false,
            Some(parents) => {
                let cuts = prefix_cuts(dir, parents);
                p.matches_path_or_ancestors(dir, parents, cuts.as_deref())
            }
        };
        let first_relevant = self
            .patterns
            .iter()
            .rposition(|p| !p.exclusion && covers_dir(p))
            .map_or(0, |i| i + 1);
        self.patterns
            .get(first_relevant..)
            .unwrap_or_default()
            .iter()
            .any(|p| p.exclusion && p.matcher.may_match_with_prefix(&prefix))
    }
}

/// Read a `.dockerignore` file's content into patterns, as moby's `ignorefile.ReadAll`
/// does.
///
/// One pattern per line (`\n` or `\r\n`); a UTF-8 byte-order mark at the start is dropped;
/// a line whose *first character* is `#` is a comment (an indented `#` is a pattern);
/// lines are trimmed and blank ones dropped; a leading `!` is kept, and the rest is
/// trimmed again and cleaned like Go's `filepath.Clean` (`./`, `..`, doubled and trailing
/// slashes resolved) with a leading `/` removed. A line that is just `!` is an error
/// (moby only rejects it when compiling the patterns).
pub fn parse_dockerignore(content: &str) -> Result<Vec<String>, Error> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut patterns = Vec::new();
    for (index, line) in content.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (exclusion, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if rest.is_empty() {
            return Err(Error::BadPattern {
                pattern: trimmed.to_owned(),
                message: format!(
                    "line {}: illegal exclusion pattern: \"!\" must be followed by a pattern",
                    index + 1
                ),
            });
        }
        let mut cleaned = clean(rest);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        patterns.push(if exclusion {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    Ok(patterns)
}

/// Find and read the ignore file for a build, as BuildKit does.
///
/// `<Dockerfile name>.dockerignore` next to the Dockerfile (for `dir/app.Dockerfile`,
/// `dir/app.Dockerfile.dockerignore`) takes precedence over `<context>/.dockerignore`,
/// even when it is empty. Without `dockerfile` the default `<context>/Dockerfile` is
/// assumed, so `<context>/Dockerfile.dockerignore` is looked for first. A relative
/// `dockerfile` is used as given (relative to the current directory, as `docker build -f`
/// takes it).
///
/// Returns the patterns (empty when neither file exists) and the file they came from.
/// A file that exists but cannot be read is an [`Error::Io`] rather than being skipped
/// (BuildKit silently falls back), so an unreadable ignore file never widens the context.
/// Content that is not UTF-8 is read lossily.
pub fn load_dockerignore(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<(Vec<String>, Option<PathBuf>), Error> {
    let dockerfile = dockerfile.map_or_else(|| context_dir.join("Dockerfile"), Path::to_path_buf);
    let mut candidates = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(specific));
    }
    candidates.push(context_dir.join(".dockerignore"));
    for candidate in candidates {
        if let Some(content) = read_if_exists(&candidate)? {
            return Ok((parse_dockerignore(&content)?, Some(candidate)));
        }
    }
    Ok((Vec::new(), None))
}

fn read_if_exists(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Go's `path/filepath.Clean` on Unix: the shortest equivalent path, resolving `.`,
/// `..` and repeated or trailing slashes lexically; `.` for an empty result.
pub(crate) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    // A relative path keeps the `..` it cannot resolve; `/..` is `/`.
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(slash) => clean(path.get(..=slash).unwrap_or(path)),
        None => ".".to_owned(),
    }
}

/// Where each of `ancestors` ends in `path`, if they are all literal prefixes of it (as
/// they are for a clean path).
fn prefix_cuts(path: &str, ancestors: &[&str]) -> Option<Vec<usize>> {
    ancestors
        .iter()
        .map(|a| (path.get(..a.len()) == Some(*a)).then_some(a.len()))
        .collect()
}

/// `a/b/c` → `a`, `a/b`, `a/b/c`: what moby gets by joining the first 1, 2, … segments.
/// (`/` gives `""` and `/`, as its split-and-join does.)
fn path_prefixes(path: &str) -> Vec<&str> {
    path.match_indices('/')
        .filter_map(|(slash, _)| path.get(..slash))
        .chain(std::iter::once(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> PatternMatcher {
        match PatternMatcher::new(patterns) {
            Ok(m) => m,
            Err(e) => panic!("{patterns:?} did not compile: {e}"),
        }
    }

    fn excluded(patterns: &[&str], path: &str) -> bool {
        matcher(patterns).matches_or_parent_matches(path)
    }

    #[test]
    fn double_star_leading() {
        assert!(excluded(&["**/*.log"], "a.log"));
        assert!(excluded(&["**/*.log"], "a/b/c.log"));
        assert!(!excluded(&["**/*.log"], "a/b/c.txt"));
        assert!(excluded(&["**/node_modules"], "node_modules"));
        assert!(excluded(&["**/node_modules"], "web/node_modules/x/y.js"));
        assert!(!excluded(&["**/node_modules"], "web/node_modules2"));
    }

    #[test]
    fn double_star_middle() {
        assert!(excluded(&["a/**/z"], "a/z"));
        assert!(excluded(&["a/**/z"], "a/b/c/z"));
        assert!(!excluded(&["a/**/z"], "b/a/z"));
        // `**` glued to text still spans segments.
        assert!(excluded(&["a**/*.txt"], "a/dir/dir/file.txt"));
        assert!(!excluded(&["a/*/z"], "a/b/c/z"));
    }

    #[test]
    fn double_star_trailing() {
        assert!(excluded(&["dir/**"], "dir/file"));
        assert!(excluded(&["dir/**"], "dir/a/b/c"));
        // A plain prefix test: the directory itself is not matched.
        assert!(!excluded(&["dir/**"], "dir"));
        assert!(excluded(&["dir**"], "dirt/x"));
        assert!(excluded(&["**"], "anything/at/all"));
    }

    #[test]
    fn single_star_and_question_mark_stay_in_one_segment() {
        assert!(excluded(&["*.md"], "README.md"));
        // The parent `docs` does not match `*.md`, and `*` does not cross `/`.
        assert!(!excluded(&["*.md"], "docs/README.md"));
        assert!(excluded(&["?"], "a"));
        assert!(!excluded(&["a?b"], "a/b"));
        assert!(excluded(&["a?b"], "a☺b"));
    }

    #[test]
    fn exclusions_and_last_match_wins() {
        let m = matcher(&["*.go", "!keep.go"]);
        assert!(m.matches_or_parent_matches("main.go"));
        assert!(!m.matches_or_parent_matches("keep.go"));
        // Order matters: the later plain pattern wins again.
        let m = matcher(&["!keep.go", "*.go"]);
        assert!(m.matches_or_parent_matches("keep.go"));
        let m = matcher(&["*", "!src", "src/secret"]);
        assert!(!m.matches_or_parent_matches("src/main.rs"));
        assert!(m.matches_or_parent_matches("src/secret"));
        assert!(m.matches_or_parent_matches("src/secret/key"));
        assert!(m.matches_or_parent_matches("README.md"));
    }

    #[test]
    fn excluded_directory_excludes_its_contents() {
        let m = matcher(&["build"]);
        assert!(m.matches_or_parent_matches("build"));
        assert!(m.matches_or_parent_matches("build/out/x.o"));
        assert!(!m.matches_or_parent_matches("src/build"));
    }

    #[test]
    fn leading_slash_and_dot_slash_are_cleaned() {
        assert!(excluded(&["./secret"], "secret"));
        // A leading `/` is removed by parse_dockerignore (moby's ReadAll), not by the
        // matcher: handed to it directly, `/secret` can only match the path `/secret`.
        assert!(!excluded(&["/secret"], "secret"));
        assert_eq!(
            parse_dockerignore("/secret").ok(),
            Some(vec!["secret".to_owned()])
        );
        assert!(excluded(&["secret"], "secret"));
        assert!(excluded(&["a//b/../c/"], "a/c"));
        assert_eq!(matcher(&["./x/./y/"]).patterns()[0].as_str(), "x/y");
        // moby's New cleans before splitting off the `!`, so `!./a` keeps its `./`...
        assert!(excluded(&["*", "!./keep"], "keep"));
        // ...whereas a .dockerignore file goes through parse_dockerignore first.
        let parsed = parse_dockerignore("*\n!./keep\n! /abs\n").unwrap_or_default();
        assert_eq!(parsed, ["*", "!keep", "!abs"]);
        assert!(!excluded(&["*", "!keep"], "keep"));
    }

    #[test]
    fn parse_comments_blank_lines_and_whitespace() {
        let content = "\u{feff}# comment\n\n  node_modules  \r\n #not-a-comment\n!  x/ \n\t\n/\n";
        let parsed = match parse_dockerignore(content) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(parsed, ["node_modules", "#not-a-comment", "!x", "/"]);
        assert_eq!(parse_dockerignore("").ok(), Some(Vec::new()));
        assert_eq!(
            parse_dockerignore("#only\n#comments").ok(),
            Some(Vec::new())
        );
    }

    #[test]
    fn parse_rejects_a_lone_bang() {
        for content in ["a\n!\n", "! ", "!\t\n"] {
            match parse_dockerignore(content) {
                Err(Error::BadPattern { message, .. }) => assert!(message.contains("line")),
                other => panic!("{content:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            PatternMatcher::new(&["!"]),
            Err(Error::BadPattern { .. })
        ));
    }

    #[test]
    fn backslash_escapes() {
        assert!(excluded(&["a\\*b"], "a*b"));
        assert!(!excluded(&["a\\*b"], "axb"));
        assert!(excluded(&["a\\?"], "a?"));
        assert!(!excluded(&["a\\?"], "ab"));
        assert!(excluded(&["a\\\\"], "a\\"));
        assert!(excluded(&["\\[x\\]"], "[x]"));
        // moby quirk: an escaped letter keeps its regular-expression meaning.
        assert!(excluded(&["v\\d"], "v7"));
        assert!(!excluded(&["v\\d"], "vd"));
        assert!(PatternMatcher::new(&["a\\"]).is_err());
        assert!(PatternMatcher::new(&["a\\e"]).is_err());
    }

    #[test]
    fn character_classes() {
        assert!(excluded(&["file[0-9].txt"], "file7.txt"));
        assert!(!excluded(&["file[0-9].txt"], "fileA.txt"));
        assert!(excluded(&["file[^0-9].txt"], "fileA.txt"));
        assert!(!excluded(&["file[^0-9].txt"], "file7.txt"));
        assert!(excluded(&["[a-ζ]"], "α"));
        assert!(excluded(&["[\\]a]"], "]"));
        assert!(excluded(&["[x\\-]"], "-"));
        // moby quirk: `!` does not negate a class, it is a member.
        assert!(excluded(&["[!a]"], "!"));
        assert!(!excluded(&["[!a]"], "b"));
        // moby quirk: `*` inside a class breaks the class apart in the regular expression.
        assert!(excluded(&["[*]"], "]"));
        assert!(!excluded(&["[*]"], "*"));
        for bad in [
            "[", "a[", "[]a]", "[-x]", "[x-]", "[a-b-c]", "[z-a]", "[\\pL]",
        ] {
            assert!(
                matches!(PatternMatcher::new(&[bad]), Err(Error::BadPattern { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn caret_outside_a_class_anchors() {
        // Exact (no wildcard): a literal `^`.
        assert!(excluded(&["^foo"], "^foo"));
        // With a wildcard it becomes a regular-expression anchor.
        assert!(excluded(&["^foo*"], "foobar"));
        assert!(!excluded(&["^foo*"], "^foobar"));
        assert!(!excluded(&["a^b*"], "a^b"));
    }

    #[test]
    fn suffix_and_prefix_shortcuts() {
        assert!(excluded(&["**file"], "dir/myfile"));
        assert!(excluded(&["**/.foo"], ".foo"));
        assert!(!excluded(&["**/.foo"], "bar.foo"));
        assert!(excluded(&["ab**"], "abc/d"));
    }

    #[test]
    fn matches_uses_only_the_same_depth_parent() {
        let m = matcher(&["**/c"]);
        assert!(m.matches_or_parent_matches("a/b/c/d"));
        assert!(!m.matches("a/b/c/d"));
        let m = matcher(&["a*"]);
        assert!(m.matches("ab/c"));
        let m = matcher(&["docs", "!docs/README.md"]);
        assert!(!m.matches("docs/README.md"));
        assert!(m.matches("docs/other.md"));
        // The context root is never excluded by `matches`...
        assert!(!matcher(&["**"]).matches("."));
        assert!(!matcher(&["**"]).matches("a/.."));
        // ...and the path is cleaned first.
        assert!(matcher(&["a/b"]).matches("./a//b/"));
    }

    #[test]
    fn has_exclusions_reports_bang_patterns() {
        assert!(!matcher(&["a", "b/**"]).has_exclusions());
        assert!(matcher(&["a", "!a/b"]).has_exclusions());
        assert!(!matcher(&[] as &[&str]).has_exclusions());
    }

    #[test]
    fn blank_patterns_are_skipped() {
        let m = matcher(&["docs", "", "   ", "config"]);
        assert_eq!(m.patterns().len(), 2);
        assert_eq!(m.patterns()[1].to_string(), "config");
        assert_eq!(
            matcher(&["  !docs/README.md  "]).patterns()[0].to_string(),
            "!docs/README.md"
        );
    }

    #[test]
    fn may_reinclude_under_finds_reinclusions() {
        let m = matcher(&["vendor", "!vendor/keep/**"]);
        assert!(m.matches_or_parent_matches("vendor/x"));
        assert!(!m.matches_or_parent_matches("vendor/keep/y"));
        assert!(m.may_reinclude_under("vendor"));
        assert!(m.may_reinclude_under("vendor/keep"));
        assert!(!m.may_reinclude_under("vendor/other"));

        let m = matcher(&["*", "!src/*.rs"]);
        assert!(m.may_reinclude_under("src"));
        assert!(!m.may_reinclude_under("docs"));
        assert!(m.may_reinclude_under(""));

        // Wildcard re-inclusions that can reach anywhere keep every directory open.
        let m = matcher(&["node_modules", "!**/README.md"]);
        assert!(m.may_reinclude_under("node_modules"));
        let m = matcher(&["target", "!*/keep"]);
        assert!(m.may_reinclude_under("target"));
        assert!(!m.may_reinclude_under("target/debug"));
    }

    #[test]
    fn may_reinclude_under_ignores_overridden_reinclusions() {
        // The later plain `build` covers everything inside `build`, whatever came before.
        let m = matcher(&["!build/keep", "build"]);
        assert!(m.matches_or_parent_matches("build/keep"));
        assert!(!m.may_reinclude_under("build"));
        // No `!` pattern at all: nothing can come back.
        assert!(!matcher(&["build"]).may_reinclude_under("build"));
    }

    #[test]
    fn may_reinclude_under_agrees_with_matching() {
        // Whenever something under the directory is actually re-included, it says so.
        let pattern_sets: &[&[&str]] = &[
            &["a", "!a/b/c"],
            &["a/**", "!a/*/keep*"],
            &["**", "!**/x"],
            &["a", "!a/[bc]/d"],
            &["*/b", "!*/b/c"],
            &["a", "!a\\/b"],
            &["a", "!**c"],
        ];
        let dirs = ["a", "a/b", "a/c", "x", "x/b"];
        let leaves = [
            "b", "c", "d", "x", "keep", "keepme", "b/c", "c/d", "b/x", "q/x",
        ];
        for patterns in pattern_sets {
            let m = matcher(patterns);
            for dir in dirs {
                if !m.matches_or_parent_matches(dir) {
                    continue;
                }
                let reincluded = leaves
                    .iter()
                    .any(|leaf| !m.matches_or_parent_matches(&format!("{dir}/{leaf}")));
                if reincluded {
                    assert!(m.may_reinclude_under(dir), "{patterns:?} under {dir}");
                }
            }
        }
    }

    #[test]
    fn clean_follows_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("a/", "a"),
            ("./a", "a"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/a/b/..", "/a"),
            ("a//b", "a/b"),
            ("..", ".."),
            ("!./a", "!./a"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "clean({input:?})");
        }
        assert_eq!(go_dir("a/b"), "a");
        assert_eq!(go_dir("a"), ".");
        assert_eq!(go_dir("/"), "/");
        assert_eq!(go_dir("a/b/"), "a/b");
        assert_eq!(path_prefixes("/"), ["", "/"]);
        assert_eq!(path_prefixes("a/b/c"), ["a", "a/b", "a/b/c"]);
    }

    #[test]
    fn one_pass_parent_matching_agrees_with_separate_matching() {
        let pattern_sets: &[&[&str]] = &[
            &["a"],
            &["a/*"],
            &["**/b"],
            &["a/**"],
            &["*/b/*"],
            &["a\\bb*"],
            &["**", "!a/b"],
            &["[ab]/[^/]c*", "!a/*/d"],
        ];
        let paths = [
            "a", "a/b", "a/b/c", "b/b/cd", "x/a/b", "a/b/c/d", "/a/b", "a//b", "./a/b",
        ];
        for patterns in pattern_sets {
            let m = matcher(patterns);
            for path in paths {
                let parent = go_dir(path);
                let ancestors = if parent == "." {
                    Vec::new()
                } else {
                    path_prefixes(&parent)
                };
                let mut slow = false;
                for p in m.patterns() {
                    if p.is_match(path) || ancestors.iter().any(|a| p.is_match(a)) {
                        slow = !p.exclusion;
                    }
                }
                assert_eq!(
                    m.matches_or_parent_matches(path),
                    slow,
                    "{patterns:?} on {path:?}"
                );
            }
        }
    }

    #[test]
    fn deep_paths_and_heavy_patterns_stay_fast() {
        let heavy = format!("{}x", "**/".repeat(300));
        let m = matcher(&[heavy.as_str(), "!a*b*c*d*e*f*g*h*/**"]);
        let path = format!("{}y", "a/".repeat(1000));
        let started = std::time::Instant::now();
        assert!(!m.matches_or_parent_matches(&path));
        // The `!` pattern needs `b`…`h` in the first segment, so nothing under the deep
        // directory can come back.
        let dir = "a/".repeat(1000);
        assert!(!m.may_reinclude_under(dir.trim_end_matches('/')));
        assert!(m.may_reinclude_under("abcdefgh"));
        // Minutes when every parent is matched separately; well under a second here even
        // unoptimised. The bound is loose so a busy machine does not fail it.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    /// A fresh empty directory under the system temp dir.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pybuild-context-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        dir
    }

    fn write(path: &Path, content: &str) {
        if let Err(e) = std::fs::write(path, content) {
            panic!("cannot write {}: {e}", path.display());
        }
    }

    fn load(context: &Path, dockerfile: Option<&Path>) -> (Vec<String>, Option<PathBuf>) {
        match load_dockerignore(context, dockerfile) {
            Ok(found) => found,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn load_dockerignore_precedence() {
        let root = scratch_dir("load");
        let context = root.join("ctx");
        let other = root.join("elsewhere");
        for dir in [&context, &other] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                panic!("{e}");
            }
        }

        // Nothing at all.
        assert_eq!(load(&context, None), (Vec::new(), None));

        // Only the context's file.
        let root_ignore = context.join(".dockerignore");
        write(&root_ignore, "from-root\n");
        assert_eq!(
            load(&context, None),
            (vec!["from-root".to_owned()], Some(root_ignore.clone()))
        );

        // The Dockerfile-specific file next to a Dockerfile elsewhere wins.
        let dockerfile = other.join("app.Dockerfile");
        write(&dockerfile, "FROM scratch\n");
        assert_eq!(
            load(&context, Some(&dockerfile)),
            (vec!["from-root".to_owned()], Some(root_ignore.clone()))
        );
        let specific = other.join("app.Dockerfile.dockerignore");
        write(&specific, "# c\n/from-specific/\n");
        assert_eq!(
            load(&context, Some(&dockerfile)),
            (vec!["from-specific".to_owned()], Some(specific.clone()))
        );

        // Even an empty specific file wins.
        write(&specific, "");
        assert_eq!(
            load(&context, Some(&dockerfile)),
            (Vec::new(), Some(specific.clone()))
        );

        // Without a Dockerfile path, `<context>/Dockerfile.dockerignore` is looked for.
        let default_specific = context.join("Dockerfile.dockerignore");
        write(&default_specific, "default-specific");
        assert_eq!(
            load(&context, None),
            (vec!["default-specific".to_owned()], Some(default_specific))
        );

        // An ignore file that exists but cannot be read is an error, not a fallback.
        if let Err(e) = std::fs::remove_file(&specific) {
            panic!("{e}");
        }
        if let Err(e) = std::fs::create_dir(&specific) {
            panic!("{e}");
        }
        assert!(matches!(
            load_dockerignore(&context, Some(&dockerfile)),
            Err(Error::Io { path, .. }) if path == specific
        ));

        // Bad content is reported.
        let bad_context = root.join("bad");
        if let Err(e) = std::fs::create_dir_all(&bad_context) {
            panic!("{e}");
        }
        write(&bad_context.join(".dockerignore"), "ok\n!\n");
        assert!(matches!(
            load_dockerignore(&bad_context, None),
            Err(Error::BadPattern { .. })
        ));

        let _ = std::fs::remove_dir_all(&root);
    }

    /// Deterministic pseudo-random strings over the characters that matter, fed to every
    /// entry point: nothing may panic, and the answers must be self-consistent.
    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[char] = &[
            'a', 'b', '/', '*', '?', '[', ']', '^', '!', '-', '\\', '.', '{', '}', '(', ')', '$',
            '|', ':', 'é', '☺', '\u{feff}', '\n', ' ', 'Q', 'E', 'd', 'x', '0',
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % (bound as u64)).unwrap_or(0)
        };
        let mut random_string = |max_len: usize| -> String {
            let len = next(max_len + 1);
            (0..len).map(|_| ALPHABET[next(ALPHABET.len())]).collect()
        };
        let mut compiled = 0;
        for _ in 0..4000 {
            let patterns = [random_string(10), random_string(6)];
            let path = random_string(12);
            let _ = parse_dockerignore(&format!("{}\n{}", patterns[0], patterns[1]));
            let Ok(m) = PatternMatcher::new(&patterns) else {
                continue;
            };
            compiled += 1;
            let _ = m.matches(&path);
            let excluded = m.matches_or_parent_matches(&path);
            let _ = m.has_exclusions();
            let _ = m.may_reinclude_under(&path);
            if !m.has_exclusions() && excluded && clean(&path) == path && path != "." {
                // Without `!` patterns nothing under an excluded path comes back.
                assert!(m.matches_or_parent_matches(&format!("{path}/z")));
            }
        }
        assert!(
            compiled > 100,
            "only {compiled} random pattern pairs compiled"
        );
    }
}
