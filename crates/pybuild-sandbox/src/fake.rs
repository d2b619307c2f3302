//! [`FakeSandbox`]: a scripted [`Sandbox`] for the solver's unit tests.

use std::collections::VecDeque;
use std::fs;
use std::path::Component;
use std::sync::Mutex;

use crate::{Error, ExitStatus, Output, RunSpec, Sandbox};

/// What one scripted run does.
#[derive(Clone, Debug)]
pub struct FakeRun {
    /// Files written into the upper dir: path relative to the image root, contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// Emitted as output, line by line.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Default for FakeRun {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: ExitStatus::Code(0),
        }
    }
}

impl FakeRun {
    pub fn status(status: ExitStatus) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_string(), contents.into()));
        self
    }
    pub fn stdout(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdout = bytes.into();
        self
    }
    pub fn stderr(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stderr = bytes.into();
        self
    }
}

/// Records every spec it is given and plays scripted runs in order (a default,
/// successful, silent run when the script is exhausted).
#[derive(Debug, Default)]
pub struct FakeSandbox {
    script: Mutex<VecDeque<FakeRun>>,
    runs: Mutex<Vec<RunSpec>>,
}

impl FakeSandbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a run to the script.
    pub fn push(&self, run: FakeRun) -> &Self {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(run);
        self
    }

    /// The specs seen so far, in order.
    pub fn runs(&self) -> Vec<RunSpec> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn emit(bytes: &[u8], stderr: bool, output: &mut dyn FnMut(Output<'_>)) {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        output(if stderr {
            Output::Stderr(line)
        } else {
            Output::Stdout(line)
        });
    }
}

impl Sandbox for FakeSandbox {
    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(Output<'_>)) -> Result<ExitStatus, Error> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spec.clone());
        if spec.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let run = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or_default();
        for (path, contents) in &run.files {
            let rel = std::path::Path::new(path.trim_start_matches('/'));
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(Error::InvalidSpec(format!("fake file path {path:?}")));
            }
            let target = spec.upper_dir.join(rel);
            let io = |source| Error::Prepare {
                what: "write fake file",
                path: target.clone(),
                source,
            };
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io)?;
            }
            fs::write(&target, contents).map_err(io)?;
        }
        emit(&run.stdout, false, output);
        emit(&run.stderr, true, output);
        Ok(run.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_the_script_and_records_specs() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSandbox::new();
        fake.push(
            FakeRun::status(ExitStatus::Code(3))
                .file("/etc/x", "hi")
                .stdout("a\nb"),
        );
        let spec = RunSpec {
            upper_dir: dir.path().to_path_buf(),
            args: vec!["true".into()],
            ..RunSpec::default()
        };
        let mut out = Vec::new();
        let st = fake
            .run(&spec, &mut |o| {
                if let Output::Stdout(l) = o {
                    out.push(l.to_vec())
                }
            })
            .unwrap();
        assert_eq!(st, ExitStatus::Code(3));
        assert_eq!(out, vec![b"a\n".to_vec(), b"b".to_vec()]);
        assert_eq!(fs::read(dir.path().join("etc/x")).unwrap(), b"hi");
        assert_eq!(fake.run(&spec, &mut |_| {}).unwrap(), ExitStatus::Code(0));
        assert_eq!(fake.runs().len(), 2);
        spec.cancel.cancel();
        assert!(matches!(
            fake.run(&spec, &mut |_| {}),
            Err(Error::Cancelled)
        ));
    }
}
