//! End to end: `pybuild debug dump` against BuildKit's parser conformance vectors.
//!
//! Every `parser/testfiles/*/Dockerfile` must print exactly its sibling `result` and
//! exit 0; every `parser/testfiles-negative/*/Dockerfile` must exit non-zero with an
//! error on standard error.

#![allow(clippy::print_stdout)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pybuild_testsupport::cmd::{self, run_with_stdin};

/// How many vectors BuildKit ships; a different count means the data or the walk
/// changed, and the test must say so rather than pass on fewer cases.
const POSITIVE_CASES: usize = 33;
const NEGATIVE_CASES: usize = 4;

fn pybuild() -> Command {
    cmd::pybuild(env!("CARGO_BIN_EXE_pybuild"))
}

fn dump(file: &Path) -> Output {
    pybuild()
        .args(["debug", "dump"])
        .arg(file)
        .output()
        .expect("run pybuild")
}

fn dump_stdin(text: &[u8]) -> Output {
    run_with_stdin(pybuild().args(["debug", "dump", "-"]), text)
}

/// The case folders (those holding a `Dockerfile`) under `dir`, sorted.
fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

fn name(case: &Path) -> String {
    case.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn conformance_testfiles_dump_exactly() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let cases = cases(&root.join("parser/testfiles"));
    let mut failures = Vec::new();
    for case in &cases {
        let expected = fs::read(case.join("result"))
            .unwrap_or_else(|e| panic!("cannot read {}/result: {e}", case.display()));
        let out = dump(&case.join("Dockerfile"));
        if !out.status.success() {
            failures.push(format!(
                "{}: exit {}, stderr:\n{}",
                name(case),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        } else if out.stdout != expected {
            failures.push(format!(
                "{}: output differs\n--- expected\n{}--- got\n{}",
                name(case),
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    let failed = failures.len();
    println!(
        "debug dump: {} passed, {failed} failed",
        cases.len() - failed
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        cases.len(),
        POSITIVE_CASES,
        "expected {POSITIVE_CASES} cases in {}",
        root.display()
    );
}

#[test]
fn conformance_negative_testfiles_are_rejected() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    let cases = cases(&root.join("parser/testfiles-negative"));
    let mut failures = Vec::new();
    for case in &cases {
        let out = dump(&case.join("Dockerfile"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || out.status.code() != Some(1) {
            failures.push(format!(
                "{}: expected exit 1, got {}; stdout:\n{}",
                name(case),
                out.status,
                String::from_utf8_lossy(&out.stdout)
            ));
        } else if !stderr.contains("error") {
            failures.push(format!("{}: no error on stderr: {stderr:?}", name(case)));
        } else if !out.stdout.is_empty() {
            failures.push(format!(
                "{}: printed on stdout although it failed",
                name(case)
            ));
        }
    }
    let failed = failures.len();
    println!(
        "debug dump (negative): {} passed, {failed} failed",
        cases.len() - failed
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        cases.len(),
        NEGATIVE_CASES,
        "expected {NEGATIVE_CASES} cases in {}",
        root.display()
    );
}

#[test]
fn dump_reads_standard_input() {
    let out = dump_stdin(b"FROM alpine\nRUN echo hi\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"alpine\")\n(run \"echo hi\")\n"
    );
}

#[test]
fn dump_of_standard_input_matches_the_file_dump() {
    let Some(root) = pybuild_testsupport::buildkit_conformance_dir() else {
        return;
    };
    for case in cases(&root.join("parser/testfiles")) {
        let text = fs::read(case.join("Dockerfile")).expect("read Dockerfile");
        let out = dump_stdin(&text);
        let expected = fs::read(case.join("result")).expect("read result");
        assert!(out.status.success(), "{}", name(&case));
        assert_eq!(out.stdout, expected, "{} from stdin", name(&case));
    }
}

#[test]
fn dump_errors_name_standard_input_as_dash() {
    let out = dump_stdin(b"# escape=`\n# escape=\\\nFROM a\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-:2:1: error: only one escape parser directive can be used"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn dump_of_a_missing_file_names_it() {
    let missing = std::env::temp_dir().join(format!(
        "pybuild-debug-dump-{}/no/Dockerfile",
        std::process::id()
    ));
    let out = dump(&missing);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}
