//! BuildKit's own word-expansion test vectors (`shell/envVarTest` and `shell/wordsTest`),
//! read from `../shared/conformance/buildkit` (never copied into this repository). Every
//! case is run, all failures are collected, and the test fails if there is any.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pybuild_dockerfile::shell::{Environment, Lexer};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What one case produced, in the form the vectors spell results.
fn outcome<T: std::fmt::Debug>(result: &pybuild_dockerfile::Result<T>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(e) => format!("error ({e})"),
    }
}

#[test]
fn env_var_test_expands_like_buildkit() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let text = read(&root.join("shell/envVarTest"));
    // The fixed environment of BuildKit's TestShellParser4EnvVars; NULL is set but empty.
    let pairs: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let lexer = Lexer::new('\\');

    let mut run = 0usize;
    let mut failed = 0usize;
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [platform, input, expected] = fields.as_slice() else {
            panic!("envVarTest line {}: expected 3 fields: {line:?}", index + 1);
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("envVarTest line {}: unknown platform {other:?}", index + 1),
        }
        run += 1;
        let failures_before = failures.len();
        // Both kinds of environment must agree, as BuildKit checks both of its.
        let environments: [(&str, &dyn Environment); 2] = [("pairs", &pairs), ("map", &map)];
        for (kind, env) in environments {
            let result = lexer.expand_word(input, env);
            let ok = match (&result, expected) {
                (Err(_), "error") => true,
                (Ok(got), want) => want != "error" && got == want,
                (Err(_), _) => false,
            };
            if !ok {
                failures.push(format!(
                    "line {} ({kind} env): {input:?}: expected {expected:?}, got {}",
                    index + 1,
                    outcome(&result)
                ));
            }
        }
        // The variant that reports matches must expand the same way.
        let with_matches = lexer
            .expand_word_with_matches(input, &pairs)
            .map(|e| e.value);
        if with_matches.is_ok() != lexer.expand_word(input, &pairs).is_ok()
            || with_matches.as_ref().is_ok_and(|got| got != expected)
        {
            failures.push(format!(
                "line {} (with matches): {input:?}: expected {expected:?}, got {}",
                index + 1,
                outcome(&with_matches)
            ));
        }
        if failures.len() > failures_before {
            failed += 1;
        }
    }
    eprintln!("envVarTest: {} passed, {failed} failed", run - failed);
    assert!(run > 200, "only {run} envVarTest cases were read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn words_test_splits_like_buildkit() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let text = read(&root.join("shell/wordsTest"));
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();

    let mut run = 0usize;
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(definition) = line.strip_prefix("ENV ") {
            // Everything after the first `=` is the value, trailing spaces included.
            let definition = definition.trim_start_matches(' ');
            let (key, value) = definition.split_once('=').unwrap_or((definition, ""));
            env.push((key.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields.as_slice() else {
            panic!(
                "wordsTest line {}: expected exactly one `|`: {line:?}",
                index + 1
            );
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        run += 1;
        let result = lexer.expand_words(input, &env);
        let got: Vec<String> = match &result {
            Ok(words) => words.clone(),
            Err(_) => vec!["error".to_owned()],
        };
        if got != expected {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {}",
                index + 1,
                outcome(&result)
            ));
        }
    }
    eprintln!(
        "wordsTest: {} passed, {} failed",
        run - failures.len(),
        failures.len()
    );
    assert!(run > 20, "only {run} wordsTest cases were read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
