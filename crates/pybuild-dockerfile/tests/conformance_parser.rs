//! BuildKit's own parser test vectors, read from `../shared/conformance/buildkit`
//! (never copied into this repository): every positive case must dump byte for byte
//! like BuildKit's `result`, every negative case must fail, and the line bookkeeping
//! case must give BuildKit's line ranges.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::Path;

use pybuild_dockerfile::{dump::dump, parse};

fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn case_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let mut failures = Vec::new();
    let dirs = case_dirs(&root.join("parser/testfiles"));
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let source = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        match parse(&source) {
            Ok(df) => {
                let got = dump(&df);
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: parse error: {e}")),
        }
    }
    println!(
        "parser/testfiles: {} passed, {} failed",
        dirs.len() - failures.len(),
        failures.len()
    );
    assert_eq!(dirs.len(), 33, "BuildKit ships 33 positive parser cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_cases_are_rejected() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let dirs = case_dirs(&root.join("parser/testfiles-negative"));
    let mut accepted = Vec::new();
    for dir in &dirs {
        let source = read(&dir.join("Dockerfile"));
        if let Ok(df) = parse(&source) {
            accepted.push(format!("{}: {}", dir.display(), dump(&df)));
        }
    }
    println!(
        "parser/testfiles-negative: {} passed, {} failed",
        dirs.len() - accepted.len(),
        accepted.len()
    );
    assert_eq!(dirs.len(), 4, "BuildKit ships 4 negative parser cases");
    assert!(
        accepted.is_empty(),
        "accepted invalid input:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn line_information_matches_buildkit() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let source = read(&root.join("parser/testfile-line/Dockerfile"));
    let df = parse(&source).expect("testfile-line parses");
    let ranges: Vec<(u32, u32)> = df
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.span.end.line - 1))
        .collect();
    println!(
        "parser/testfile-line: {ranges:?}, document {}-{}",
        df.start_line, df.end_line
    );
    assert_eq!(ranges, [(5, 5), (11, 12), (17, 31)]);
    assert_eq!((df.start_line, df.end_line), (5, 31));
}
