//! The build progress display, on standard error:
//!
//! - `plain`: BuildKit's plain format, one line per event (`#N [stage 2/5] COPY . .`,
//!   `#N 0.123 output line`, `#N CACHED`, `#N DONE 0.3s`, `#N ERROR message`);
//! - `tty`: a live view redrawn in place (indicatif): a `[+] Building 3.2s (4/6)` header,
//!   one line per step with a spinner while it runs and its status and time once it
//!   ended, and the last lines of a running step's output under it;
//! - `rawjson`: one JSON object per event and line, described by
//!   `docs/progress-events.schema.json`;
//! - `quiet`: nothing.
//!
//! `auto` is `tty` when standard error is a terminal, `plain` otherwise.

#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use pybuild::build::Event;
use serde_json::{Value, json};

use crate::cli::Progress as Mode;

/// How many lines of a running step's output the terminal view shows.
const TAIL_LINES: usize = 6;

/// How often the terminal view redraws its clocks and spinners.
const TICK: Duration = Duration::from_millis(100);

/// How a build ended, for [`Printer::finish`].
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The image was built; its ID (config digest).
    Built {
        /// `sha256:...`.
        image_id: &'a str,
    },
    /// The build failed with this message.
    Failed {
        /// What went wrong (one line, or several).
        message: &'a str,
    },
}

/// The display `--progress=MODE` asks for, given whether standard error is a terminal
/// (`TERM=dumb` counts as not one). `tty` on something else falls back to `plain`: a
/// redrawn view would only fill a log with control sequences.
pub fn resolve_mode(mode: Mode, stderr_is_terminal: bool) -> Mode {
    let terminal = stderr_is_terminal && std::env::var_os("TERM").is_none_or(|term| term != "dumb");
    match mode {
        Mode::Auto | Mode::Tty if terminal => Mode::Tty,
        Mode::Auto | Mode::Tty => Mode::Plain,
        other => other,
    }
}

/// Prints build events as they arrive. The build calls it from its own threads.
#[derive(Debug)]
pub struct Printer {
    mode: Mode,
    start: Instant,
    state: Mutex<State>,
}

/// What the printer remembers about the build so far.
#[derive(Debug, Default)]
struct State {
    /// Steps by id, in the order they started.
    steps: BTreeMap<usize, Step>,
    /// The live view, in `tty` mode.
    tty: Option<Tty>,
    /// The step the build reported as failed.
    failed: Option<usize>,
    /// The steps the build announced.
    total: usize,
}

#[derive(Debug)]
struct Step {
    name: String,
    started: Instant,
    ended: bool,
}

impl Printer {
    /// A printer for `--progress=MODE`, resolving `auto` against standard error.
    pub fn new(mode: Mode) -> Self {
        let resolved = resolve_mode(mode, std::io::stderr().is_terminal());
        if mode == Mode::Tty && resolved != Mode::Tty {
            crate::report::warn(
                "--progress=tty: standard error is not a terminal; printing plain progress",
            );
        }
        let tty = (resolved == Mode::Tty).then(|| Tty::new(ProgressDrawTarget::stderr_with_hz(10)));
        Self {
            mode: resolved,
            start: Instant::now(),
            state: Mutex::new(State {
                steps: BTreeMap::new(),
                tty,
                failed: None,
                total: 0,
            }),
        }
    }

    /// The display in use (`auto` resolved).
    #[cfg(test)]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the build started, to the millisecond.
    fn now(&self) -> f64 {
        round_ms(self.start.elapsed().as_secs_f64())
    }

    /// Called once the build returned: marks the step that was running when it failed
    /// (`ERROR`, the others still running `CANCELED`) and closes the display. The
    /// terminal view's final state stays on screen.
    pub fn finish(&self, outcome: Outcome<'_>) {
        let mut state = self.lock();
        let open: Vec<usize> = state
            .steps
            .iter()
            .filter(|(_, s)| !s.ended)
            .map(|(id, _)| *id)
            .collect();
        // The step the solver reported failing (stages run in parallel, so it need
        // not be the last one started); any other still open was stopped with it.
        let failed = match outcome {
            Outcome::Failed { .. } => state.failed.or_else(|| open.last().copied()),
            Outcome::Built { .. } => None,
        };
        let message = match outcome {
            Outcome::Failed { message } => message,
            Outcome::Built { .. } => "",
        };
        for id in &open {
            let Some(step) = state.steps.get_mut(id) else {
                continue;
            };
            step.ended = true;
            let seconds = step.started.elapsed().as_secs_f64();
            let step_message = step_message(&step.name, message);
            let is_error = Some(*id) == failed;
            match self.mode {
                Mode::Plain => {
                    if is_error {
                        let mut lines = step_message.lines();
                        eprintln!("#{} ERROR {}", id + 1, lines.next().unwrap_or(""));
                        for line in lines {
                            eprintln!("#{} {line}", id + 1);
                        }
                    } else {
                        eprintln!("#{} CANCELED", id + 1);
                    }
                }
                Mode::Rawjson => {
                    if is_error {
                        self.json(
                            json!({"type": "step_error", "time": self.now(), "vertex": id + 1,
                            "duration": round_ms(seconds), "error": step_message}),
                        );
                    } else {
                        self.json(
                            json!({"type": "step_canceled", "time": self.now(), "vertex": id + 1,
                            "duration": round_ms(seconds)}),
                        );
                    }
                }
                Mode::Tty => {
                    if let Some(tty) = &mut state.tty {
                        let end = if is_error { End::Error } else { End::Canceled };
                        tty.end_step(*id, end, seconds);
                    }
                }
                _ => {}
            }
        }
        match self.mode {
            Mode::Rawjson => {
                let mut value = json!({"type": "build_finished", "time": self.now(),
                    "success": matches!(outcome, Outcome::Built { .. })});
                match outcome {
                    Outcome::Built { image_id } => value["image_id"] = json!(image_id),
                    Outcome::Failed { message } => value["error"] = json!(message),
                }
                self.json(value);
            }
            Mode::Tty => {
                if let Some(tty) = state.tty.take() {
                    tty.finish(matches!(outcome, Outcome::Built { .. }));
                }
            }
            _ => {}
        }
    }

    fn json(&self, value: Value) {
        eprintln!("{value}");
    }

    fn rawjson(&self, state: &mut State, event: &Event) {
        let time = self.now();
        let value = match event {
            Event::StepStarted { id, name } => {
                json!({"type": "step_started", "time": time, "vertex": id + 1, "name": name})
            }
            Event::StepCached { id } => {
                json!({"type": "step_cached", "time": time, "vertex": id + 1})
            }
            Event::StepFinished { id } => json!({
                "type": "step_done", "time": time, "vertex": id + 1,
                "duration": round_ms(state.seconds(*id)),
            }),
            Event::StepOutput { id, stream, line } => json!({
                "type": "step_output", "time": time, "vertex": id + 1,
                "stream": if *stream == 1 { "stdout" } else { "stderr" }, "line": line,
            }),
            Event::BaseImage { name, digest, .. } => json!({
                "type": "base_image", "time": time, "name": name, "digest": digest.to_string(),
            }),
            Event::ImageWritten { digest } => {
                json!({"type": "image_written", "time": time, "digest": digest.to_string()})
            }
            Event::LayerWritten {
                id,
                digest,
                size,
                duration,
            } => json!({
                "type": "layer_written", "time": time, "vertex": id + 1,
                "digest": digest.to_string(), "size": size,
                "duration": round_ms(duration.as_secs_f64()),
            }),
            Event::Pushed { name, digest } => json!({
                "type": "pushed", "time": time, "name": name, "digest": digest.to_string(),
            }),
            Event::BuildStarted { total_steps } => {
                json!({"type": "build_started", "time": time, "total_steps": total_steps})
            }
            Event::Transfer {
                id,
                digest,
                done,
                total,
            } => {
                let mut v = json!({"type": "transfer", "time": time,
                    "digest": digest.to_string(), "done": done, "total": total});
                if let Some(id) = id {
                    v["vertex"] = json!(id + 1);
                }
                v
            }
            _ => return,
        };
        self.json(value);
    }

    fn plain(&self, state: &mut State, event: &Event) {
        match event {
            Event::StepStarted { id, name } => eprintln!("#{} {name}", id + 1),
            Event::StepCached { id } => eprintln!("#{} CACHED", id + 1),
            Event::StepOutput { id, line, .. } => {
                eprintln!("#{} {:.3} {line}", id + 1, state.seconds(*id));
            }
            Event::StepFinished { id } => {
                eprintln!("#{} DONE {:.1}s", id + 1, state.seconds(*id));
            }
            Event::LayerWritten {
                id,
                digest,
                size,
                duration,
            } => eprintln!(
                "#{} writing layer {digest} {} {:.1}s done",
                id + 1,
                human_size(*size),
                duration.as_secs_f64()
            ),
            Event::BaseImage { name, digest, .. } => eprintln!("#  resolved {name} to {digest}"),
            Event::ImageWritten { digest } => eprintln!("#  manifest {digest}"),
            Event::Pushed { name, digest } => eprintln!("#  pushed {name}@{digest}"),
            _ => {}
        }
    }
}

impl State {
    /// Seconds since step `id` started.
    fn seconds(&self, id: usize) -> f64 {
        self.steps
            .get(&id)
            .map(|s| s.started.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }
}

impl pybuild::build::Progress for Printer {
    fn event(&self, event: &Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut state = self.lock();
        // Bookkeeping first, so that times are known when printing.
        match event {
            Event::StepStarted { id, name } => {
                state.steps.insert(
                    *id,
                    Step {
                        name: name.clone(),
                        started: Instant::now(),
                        ended: false,
                    },
                );
            }
            Event::StepCached { id } | Event::StepFinished { id } => {
                if let Some(step) = state.steps.get_mut(id) {
                    step.ended = true;
                }
            }
            Event::StepFailed { id, .. } => state.failed = Some(*id),
            Event::BuildStarted { total_steps } => state.total = *total_steps,
            _ => {}
        }
        match self.mode {
            Mode::Rawjson => self.rawjson(&mut state, event),
            Mode::Tty => {
                let seconds = match event {
                    Event::StepFinished { id } => state.seconds(*id),
                    _ => 0.0,
                };
                let (done, total) = state.counts();
                if let Some(tty) = &mut state.tty {
                    tty.event(event, seconds);
                    tty.counts(done, total);
                }
            }
            _ => self.plain(&mut state, event),
        }
    }
}

impl State {
    /// Steps ended, steps announced (or seen, if more).
    fn counts(&self) -> (usize, usize) {
        let done = self.steps.values().filter(|s| s.ended).count();
        (done, self.steps.len().max(self.total))
    }
}

/// A failed step's message without the instruction the step line already shows: the
/// library's messages read `COPY a /a: no such file`, the step `[stage-0 2/2] COPY a /a`.
fn step_message<'a>(step_name: &str, message: &'a str) -> &'a str {
    let instruction = step_name
        .split_once("] ")
        .map_or(step_name, |(_, rest)| rest);
    message
        .strip_prefix(instruction)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message)
}

/// A byte count as docker prints sizes: decimal units, one decimal (`512B`,
/// `4.1kB`, `91.0MB`, `1.2GB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// How a step ended, in the terminal view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Cached,
    Error,
    Canceled,
}

/// The live terminal view.
#[derive(Debug)]
struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    /// The line of each step, by id.
    bars: HashMap<usize, ProgressBar>,
    /// The last output lines of running steps, by id, with their lines on screen.
    tails: HashMap<usize, Tail>,
}

#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    bars: Vec<ProgressBar>,
}

/// `{secs}`: the bar's elapsed time, `3.2s`.
fn secs_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = std::fmt::Write::write_fmt(w, format_args!("{:.1}s", state.elapsed().as_secs_f64()));
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("secs", secs_key)
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓")
}

impl Tty {
    fn new(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(style("[+] Building {secs} {msg}"));
        header.set_message("(0/0)");
        header.enable_steady_tick(TICK);
        Self {
            multi,
            header,
            bars: HashMap::new(),
            tails: HashMap::new(),
        }
    }

    /// Add a line at the bottom of the view.
    fn push(&mut self, bar: ProgressBar) -> ProgressBar {
        self.multi.add(bar)
    }

    fn counts(&self, done: usize, total: usize) {
        self.header.set_message(format!("({done}/{total})"));
    }

    fn event(&mut self, event: &Event, seconds: f64) {
        match event {
            Event::StepStarted { id, name } => {
                let bar = self.push(ProgressBar::new_spinner());
                bar.set_style(style(" {spinner:.cyan}  {wide_msg} {secs:.cyan}"));
                bar.set_message(clean_line(name));
                bar.enable_steady_tick(TICK);
                self.bars.insert(*id, bar);
            }
            Event::StepCached { id } => self.end_step(*id, End::Cached, 0.0),
            Event::StepFinished { id } => self.end_step(*id, End::Done, seconds),
            Event::StepOutput { id, line, .. } => self.output(*id, line),
            Event::BaseImage { name, digest, .. } => {
                self.note(&format!("[internal] resolved {name} to {digest}"));
            }
            Event::ImageWritten { digest } => self.note(&format!("writing manifest {digest}")),
            Event::LayerWritten {
                id,
                digest,
                size,
                duration,
            } => {
                // Which step, by its `[stage n/m]` tag only: the step's own line keeps
                // the instruction.
                let step = self
                    .bars
                    .get(id)
                    .map(|bar| bar.message())
                    .and_then(|name| name.split_once(']').map(|(tag, _)| format!("{tag}] ")))
                    .unwrap_or_default();
                self.note(&format!(
                    "{step}writing layer {digest} {} {:.1}s",
                    human_size(*size),
                    duration.as_secs_f64()
                ));
            }
            Event::Pushed { name, digest } => self.note(&format!("pushed {name}@{digest}")),
            Event::Transfer {
                id: Some(id),
                digest,
                done,
                total,
            } => {
                // Byte progress of a pull shows in its FROM step's line.
                if let Some(bar) = self.bars.get(id) {
                    let name = bar.message();
                    let name = name.split(" ⇣ ").next().unwrap_or("").to_string();
                    let short = digest.hex().get(..12).unwrap_or("");
                    bar.set_message(format!(
                        "{name} ⇣ {short} {:.1}/{:.1} MB",
                        *done as f64 / 1e6,
                        *total as f64 / 1e6
                    ));
                }
            }
            _ => {}
        }
    }

    /// A line for something that is not a step, shown as done.
    fn note(&mut self, text: &str) {
        let bar = self.push(ProgressBar::new_spinner());
        bar.set_style(style(" => {wide_msg:.blue}"));
        bar.finish_with_message(clean_line(text));
    }

    /// A line of a step's output: the step's last lines show under it, dimmed.
    fn output(&mut self, id: usize, line: &str) {
        let Some(step_bar) = self.bars.get(&id).cloned() else {
            return;
        };
        let tail = self.tails.entry(id).or_default();
        tail.lines.push_back(clean_line(line));
        while tail.lines.len() > TAIL_LINES {
            tail.lines.pop_front();
        }
        while tail.bars.len() < tail.lines.len() {
            let after = tail.bars.last().unwrap_or(&step_bar).clone();
            let bar = self.multi.insert_after(&after, ProgressBar::new_spinner());
            bar.set_style(style("    {wide_msg:.dim}"));
            tail.bars.push(bar);
        }
        for (bar, line) in tail.bars.iter().zip(&tail.lines) {
            bar.set_message(format!("# {line}"));
        }
    }

    /// A step ended: its line shows how, its output tail goes away (it stays after an
    /// error, where it is what the user needs).
    fn end_step(&mut self, id: usize, end: End, seconds: f64) {
        if let Some(tail) = self.tails.remove(&id) {
            for bar in &tail.bars {
                if end == End::Error {
                    bar.finish();
                } else {
                    bar.finish_and_clear();
                    self.multi.remove(bar);
                }
            }
        }
        let Some(bar) = self.bars.get(&id) else {
            return;
        };
        let (word, template) = match end {
            End::Done => ("DONE", " => {wide_msg:.blue} {prefix:.blue}"),
            End::Cached => ("CACHED", " => {wide_msg:.blue} {prefix:.blue}"),
            End::Error => ("ERROR", " => {wide_msg:.red.bold} {prefix:.red}"),
            End::Canceled => ("CANCELED", " => {wide_msg:.yellow} {prefix:.yellow}"),
        };
        let name = bar.message();
        bar.set_style(style(template));
        bar.set_prefix(format!("{seconds:.1}s"));
        bar.finish_with_message(format!("{word} {name}"));
    }

    /// The build ended: the header says so and the view stays on screen.
    fn finish(self, success: bool) {
        let elapsed = self.header.elapsed().as_secs_f64();
        let message = self.header.message();
        self.header.set_style(style("[+] Building {msg}"));
        let word = if success { "FINISHED" } else { "FAILED" };
        self.header
            .finish_with_message(format!("{elapsed:.1}s {message} {word}"));
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}

/// A line of output made safe to show in one terminal line: what a carriage return
/// overwrote is dropped, escape sequences and other control characters removed, tabs
/// turned into spaces.
fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte; other escapes: ESC and one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1.0kB");
        assert_eq!(human_size(4_096), "4.1kB");
        assert_eq!(human_size(999_949), "999.9kB");
        assert_eq!(human_size(999_950), "1.0MB");
        assert_eq!(human_size(91_000_000), "91.0MB");
        assert_eq!(human_size(1_234_000_000), "1.2GB");
    }

    #[test]
    fn modes() {
        assert_eq!(resolve_mode(Mode::Auto, false), Mode::Plain);
        assert_eq!(resolve_mode(Mode::Tty, false), Mode::Plain);
        assert_eq!(resolve_mode(Mode::Plain, true), Mode::Plain);
        assert_eq!(resolve_mode(Mode::Rawjson, true), Mode::Rawjson);
        assert_eq!(resolve_mode(Mode::Quiet, true), Mode::Quiet);
    }

    #[test]
    fn printer_resolves_auto() {
        // Under `cargo test` standard error is captured or a pipe in CI; either way
        // an explicit mode is kept.
        assert_eq!(Printer::new(Mode::Rawjson).mode(), Mode::Rawjson);
    }

    fn output(id: usize, line: &str) -> Event {
        Event::StepOutput {
            id,
            stream: 1,
            line: line.into(),
        }
    }

    #[test]
    fn tty_keeps_the_last_lines_of_a_running_step() {
        let mut tty = Tty::new(ProgressDrawTarget::hidden());
        let started = |id: usize| Event::StepStarted {
            id,
            name: format!("[stage-0 {id}/2] RUN x"),
        };
        tty.event(&started(0), 0.0);
        for i in 0..10 {
            tty.event(&output(0, &format!("line {i}")), 0.0);
        }
        let tail = &tty.tails[&0];
        assert_eq!(tail.bars.len(), TAIL_LINES);
        let shown: Vec<String> = tail.bars.iter().map(ProgressBar::message).collect();
        assert_eq!(shown.first().unwrap(), "# line 4");
        assert_eq!(shown.last().unwrap(), "# line 9");

        // Done: the tail goes, the step line says how it ended.
        tty.event(&Event::StepFinished { id: 0 }, 1.25);
        assert!(tty.tails.is_empty());
        assert_eq!(tty.bars[&0].message(), "DONE [stage-0 0/2] RUN x");
        assert_eq!(tty.bars[&0].prefix(), "1.2s");
        assert!(tty.bars[&0].is_finished());

        // An error keeps the tail on screen.
        tty.event(&started(1), 0.0);
        tty.event(&output(1, "\u{1b}[31mboom\u{1b}[0m"), 0.0);
        let kept = tty.tails[&1].bars.clone();
        tty.end_step(1, End::Error, 0.5);
        assert_eq!(tty.bars[&1].message(), "ERROR [stage-0 1/2] RUN x");
        assert_eq!(kept[0].message(), "# boom");
        assert!(kept[0].is_finished());

        let header = tty.header.clone();
        tty.counts(2, 2);
        tty.finish(false);
        assert!(header.is_finished());
        assert!(
            header.message().ends_with("(2/2) FAILED"),
            "{}",
            header.message()
        );
    }

    #[test]
    fn cleaned_lines() {
        assert_eq!(clean_line("plain"), "plain");
        assert_eq!(clean_line("a\tb"), "a    b");
        assert_eq!(clean_line("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(clean_line(" 10%\r 50%\r100%\r\n"), "100%");
        assert_eq!(clean_line("bell\u{7}"), "bell");
    }

    #[test]
    fn step_messages_drop_the_instruction() {
        assert_eq!(
            step_message("[stage-0 2/2] COPY a /a", "COPY a /a: a: not found"),
            "a: not found"
        );
        assert_eq!(
            step_message("[stage-0 2/2] RUN x", "cancelled"),
            "cancelled"
        );
    }
}
