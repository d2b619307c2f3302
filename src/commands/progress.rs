//! The build progress display: BuildKit's plain format (`#N [stage 2/5] COPY . .`,
//! `#N CACHED`, `#N DONE 0.3s`) on standard error, or one JSON object per event with
//! `--progress=rawjson`. The redrawn terminal display comes later; `auto` and `tty`
//! print the plain format for now.

#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use pybuild::build::Event;

use crate::cli::Progress as Mode;

/// Prints build events as they arrive.
#[derive(Debug)]
pub struct Printer {
    mode: Mode,
    started: Mutex<HashMap<usize, Instant>>,
}

impl Printer {
    /// A printer for `--progress=MODE`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// Called once the build returned.
    pub fn finish(&self) {}

    fn elapsed(&self, id: usize) -> f64 {
        self.started
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|t| t.elapsed().as_secs_f64()))
            .unwrap_or(0.0)
    }
}

impl pybuild::build::Progress for Printer {
    fn event(&self, event: &Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        // BuildKit numbers vertices from 1.
        if self.mode == Mode::Rawjson {
            let value = match event {
                Event::StepStarted { id, name } => {
                    serde_json::json!({"vertex": id + 1, "name": name, "status": "started"})
                }
                Event::StepCached { id } => {
                    serde_json::json!({"vertex": id + 1, "status": "cached"})
                }
                Event::StepOutput { id, stream, line } => {
                    serde_json::json!({"vertex": id + 1, "stream": stream, "log": line})
                }
                Event::StepFinished { id } => serde_json::json!({
                    "vertex": id + 1, "status": "done", "seconds": self.elapsed(*id)
                }),
                Event::BaseImage { name, digest } => {
                    serde_json::json!({"base": name, "digest": digest.to_string()})
                }
                Event::ImageWritten { digest } => {
                    serde_json::json!({"manifest": digest.to_string()})
                }
                Event::Pushed { name, digest } => {
                    serde_json::json!({"pushed": name, "digest": digest.to_string()})
                }
                _ => return,
            };
            eprintln!("{value}");
            return;
        }
        match event {
            Event::StepStarted { id, name } => {
                if let Ok(mut m) = self.started.lock() {
                    m.insert(*id, Instant::now());
                }
                eprintln!("#{} {name}", id + 1);
            }
            Event::StepCached { id } => eprintln!("#{} CACHED", id + 1),
            Event::StepOutput { id, line, .. } => {
                eprintln!("#{} {:.3} {line}", id + 1, self.elapsed(*id));
            }
            Event::StepFinished { id } => {
                eprintln!("#{} DONE {:.1}s", id + 1, self.elapsed(*id));
            }
            Event::BaseImage { name, digest } => eprintln!("#  resolved {name} to {digest}"),
            Event::ImageWritten { digest } => eprintln!("#  manifest {digest}"),
            Event::Pushed { name, digest } => eprintln!("#  pushed {name}@{digest}"),
            _ => {}
        }
    }
}
