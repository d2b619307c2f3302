#![allow(clippy::print_stdout, clippy::print_stderr)]
//! moby/patternmatcher's own cases (see the conformance README, `dockerignore/cases.jsonl`),
//! run against [`PatternMatcher`]. The file lives outside the repository and is never
//! copied in.

use pybuild_context::PatternMatcher;
use serde_json::Value;

/// What one case expects.
#[derive(Debug)]
enum Expected {
    Excluded(bool),
    Error,
}

#[derive(Debug)]
struct Case {
    line: usize,
    patterns: Vec<String>,
    path: String,
    parent_mode: bool,
    expected: Expected,
}

fn parse_case(line: usize, text: &str) -> Result<Case, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    let patterns = value
        .get("patterns")
        .and_then(Value::as_array)
        .ok_or("no `patterns` array")?
        .iter()
        .map(|p| {
            p.as_str()
                .map(str::to_owned)
                .ok_or("a pattern is not a string")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let path = value
        .get("path")
        .and_then(Value::as_str)
        .ok_or("no `path` string")?
        .to_owned();
    let parent_mode = match value.get("mode").and_then(Value::as_str) {
        Some("matches") => false,
        Some("matches-or-parent") => true,
        other => return Err(format!("unknown mode {other:?}")),
    };
    let expected = if value.get("error").and_then(Value::as_bool) == Some(true) {
        Expected::Error
    } else {
        Expected::Excluded(
            value
                .get("excluded")
                .and_then(Value::as_bool)
                .ok_or("neither `excluded` nor `error: true`")?,
        )
    };
    Ok(Case {
        line,
        patterns,
        path,
        parent_mode,
        expected,
    })
}

/// `None` when the case passes, else what went wrong.
fn run(case: &Case) -> Option<String> {
    let compiled = PatternMatcher::new(&case.patterns);
    match (&case.expected, compiled) {
        (Expected::Error, Err(_)) => None,
        (Expected::Error, Ok(_)) => Some("accepted patterns that must be rejected".to_owned()),
        (Expected::Excluded(_), Err(e)) => Some(format!("rejected the patterns: {e}")),
        (Expected::Excluded(expected), Ok(matcher)) => {
            let got = if case.parent_mode {
                matcher.matches_or_parent_matches(&case.path)
            } else {
                matcher.matches(&case.path)
            };
            (got != *expected).then(|| format!("excluded = {got}, expected {expected}"))
        }
    }
}

#[test]
fn dockerignore_conformance() {
    let Some(file) = pybuild_testsupport::dockerignore_conformance_file() else {
        return;
    };
    let content = match std::fs::read_to_string(&file) {
        Ok(content) => content,
        Err(e) => panic!("cannot read {}: {e}", file.display()),
    };

    let mut passed = 0usize;
    let mut failures = Vec::new();
    for (index, text) in content.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let line = index + 1;
        match parse_case(line, text) {
            Err(problem) => failures.push(format!("line {line}: {problem}: {text}")),
            Ok(case) => match run(&case) {
                None => passed += 1,
                Some(problem) => failures.push(format!(
                    "line {}: patterns {:?}, path {:?}, mode {}: {problem}",
                    case.line,
                    case.patterns,
                    case.path,
                    if case.parent_mode {
                        "matches-or-parent"
                    } else {
                        "matches"
                    },
                )),
            },
        }
    }

    for failure in &failures {
        eprintln!("FAIL {failure}");
    }
    println!("dockerignore: {passed} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} dockerignore cases failed",
        failures.len()
    );
    assert!(
        passed > 100,
        "only {passed} cases ran; is {} complete?",
        file.display()
    );
}
