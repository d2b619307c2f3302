//! pybuild's build executor: it takes a validated [`BuildGraph`] and the build
//! context and produces an image in the local store, step by step, with the build
//! cache.
//!
//! # Model
//!
//! Each stage starts from a base (`scratch`, an image of the local store, or an
//! earlier stage) and carries a [`State`]: the image config so far, its layers, and
//! a **filesystem cache key**. Like BuildKit's LLB, only steps that change the
//! filesystem (COPY, ADD, WORKDIR that has to create its directory; RUN later) chain
//! that key: `key = sha256(canonical {"v", "parent", "step"})`, where `step` holds
//! everything the step's output depends on (for COPY the list of entries it writes:
//! target paths, modes, owners and *content digests*, never mtimes). Metadata
//! instructions (ENV, LABEL, CMD, ...) only change the config, which is recomputed on
//! every build (it is cheap), so editing a LABEL does not invalidate a later COPY, as
//! in BuildKit.
//!
//! A filesystem step looks its key up in the store's cache records; a hit reuses the
//! recorded layer (reported as cached) without doing the work. A miss builds the
//! step's diff directory ([`diff`]), writes it as a layer blob with
//! `pybuild_layer::write_layer` and keeps the directory as the layer's snapshot, then
//! records the key. Snapshots stacked top-most first form a [`rootfs::LowerTree`], the
//! read-only merged view steps use to resolve paths, owners and `COPY --from` sources.
//!
//! Finally the stage's config (with `rootfs.diff_ids` and history) and manifest are
//! written as blobs; the caller tags the returned descriptor.
//!
//! The solver holds a store lease for its whole run so a concurrent `prune` cannot
//! remove what it is building on. It never prints: progress goes to a [`Progress`].

mod chmod;
mod config;
mod diff;
pub mod rootfs;
mod run;
mod squash;
mod time;
mod user;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use pybuild_context::{Context, EntryKind, PatternMatcher};
use pybuild_dockerfile::Span;
use pybuild_dockerfile::instructions::{CopySpec, Kind};
use pybuild_graph::{Base, BuildGraph, Input, Stage, Step};
use pybuild_layer::{ApplyMode, ApplyOptions, Compression, WriteOptions};
use pybuild_oci::{
    Descriptor, Digest, History, ImageConfig, ImageManifest, Platform, canonical_json, media_type,
};
use pybuild_store::{BoxError, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use config::{DEFAULT_PATH, DEFAULT_SHELL};
pub use rootfs::LowerTree;

use chmod::Chmod;
use config::StageFlags;
use diff::{Content, DiffBuilder, Item};
use user::{Owner, resolve_owner};

/// Version of the cache-key encoding; bump it when the meaning of a key changes, so
/// old records are never mistaken for new ones.
pub const CACHE_KEY_VERSION: u32 = 2;

/// The `comment` BuildKit puts on the history entries it writes.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A step failed; `span` locates its instruction in the Dockerfile.
    #[error("{instruction}: {message}")]
    Step {
        /// The instruction as written (first line).
        instruction: String,
        /// Where it is.
        span: Span,
        /// What went wrong.
        message: String,
        /// What may fix it.
        hint: Option<String>,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] pybuild_store::Error),
    /// An image in the store is not what its config says.
    #[error("image {image}: {message}")]
    BadImage {
        /// The image name.
        image: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// The Dockerfile location, when the error belongs to an instruction.
    pub fn span(&self) -> Option<Span> {
        match self {
            Error::Step { span, .. } => Some(*span),
            _ => None,
        }
    }

    /// A hint for the user, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Step { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// In a rootless build whose user namespace maps a single id, a RUN that fails, or a
/// step that failed to give a file an owner (`EINVAL`: the id is not mapped), gets
/// the explanation of what cannot be represented and how to fix it as its hint.
fn explain_single_id(error: Error) -> Error {
    match error {
        Error::Step {
            instruction,
            span,
            message,
            hint: None,
        } if instruction
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("RUN")
            || message.contains("Invalid argument") =>
        {
            let hint = pybuild_sandbox::UserNs::current().single_id_explanation();
            Error::Step {
                instruction,
                span,
                message,
                hint,
            }
        }
        other => other,
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a build reports while it runs. Step ids are unique within one build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The build starts: how many steps it will show (FROM and filesystem steps of
    /// the stages the target needs; a base image's ONBUILD triggers add to it).
    BuildStarted {
        /// Steps announced.
        total_steps: usize,
    },
    /// A step failed (the build fails with it; steps running in parallel are stopped).
    StepFailed {
        /// Step id.
        id: usize,
        /// What went wrong (the error's message).
        message: String,
    },
    /// Bytes of a blob moved for a step (pulling a base image's layers), or for the
    /// build's push (`id: None`).
    Transfer {
        /// The step the transfer belongs to.
        id: Option<usize>,
        /// The blob.
        digest: Digest,
        /// Bytes done so far.
        done: u64,
        /// The blob's size.
        total: u64,
    },
    /// A step starts: `name` is BuildKit's `[stage 2/5] COPY . .` form.
    StepStarted {
        /// Step id.
        id: usize,
        /// `[stage pos/total] INSTRUCTION`.
        name: String,
    },
    /// The step's result came from the build cache.
    StepCached {
        /// Step id.
        id: usize,
    },
    /// The step finished (its work was done).
    StepFinished {
        /// Step id.
        id: usize,
    },
    /// A base image was resolved (in the local store or a registry).
    BaseImage {
        /// The FROM (or `COPY --from`) step it belongs to.
        id: Option<usize>,
        /// The name as written.
        name: String,
        /// The manifest digest it resolved to.
        digest: Digest,
    },
    /// A step's changes were written as a layer (tar, compressed, hashed, stored,
    /// the diff kept as a snapshot).
    LayerWritten {
        /// Step id.
        id: usize,
        /// The layer blob's digest.
        digest: Digest,
        /// The blob's size in bytes (compressed).
        size: u64,
        /// How long it took, from the moment the step's content was complete.
        duration: std::time::Duration,
    },
    /// The image was written.
    ImageWritten {
        /// The manifest digest.
        digest: Digest,
    },
    /// A line of a RUN step's output.
    StepOutput {
        /// Step id.
        id: usize,
        /// 1 for stdout, 2 for stderr.
        stream: u8,
        /// The line, without its newline.
        line: String,
    },
    /// The image was pushed (sent by the facade after the build).
    Pushed {
        /// The full reference.
        name: String,
        /// The manifest digest the registry stored.
        digest: Digest,
    },
}

/// Where a build sends its [`Event`]s.
pub trait Progress: Send + Sync {
    /// Called for every event, in order.
    fn event(&self, event: &Event);
}

/// A [`Progress`] that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &Event) {}
}

/// Where base images that are not in the local store come from: a registry in a real
/// build (the facade implements this with `pybuild-registry`), a fake in tests.
pub trait ImageSource: Send + Sync {
    /// The name under which `name` is kept in the local store (docker's short form
    /// with a tag: `python:3.11-slim`, `127.0.0.1:5000/app:latest`).
    fn local_name(&self, name: &str) -> String {
        pybuild_store::normalize_tag(name)
    }

    /// Fetch `name` for `platform` into `store` and return the image manifest's
    /// descriptor (not tagged: the solver tags it under [`ImageSource::local_name`]).
    /// `on_bytes(digest, done, total)` reports the bytes of each blob as they arrive.
    fn pull(
        &self,
        store: &Store,
        name: &str,
        platform: &Platform,
        on_bytes: &(dyn Fn(&Digest, u64, u64) + Sync),
    ) -> Result<Descriptor, BoxError>;
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadInfo {
    /// sha256 of the content.
    pub digest: Digest,
    /// `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
    /// `ETag`, as the server sent it.
    pub etag: Option<String>,
}

/// What an earlier download of a URL said, for a conditional request (RFC 9110
/// `If-None-Match` / `If-Modified-Since`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The earlier `ETag`.
    pub etag: Option<String>,
    /// The earlier `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// The answer to a (possibly conditional) download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The earlier content is current (`304 Not Modified`); nothing was written.
    NotModified,
    /// The content, written to the caller's writer.
    Body(DownloadInfo),
}

/// Where `ADD https://...` sources come from (the facade's HTTP client; a fake in
/// tests).
pub trait Downloader: Send + Sync {
    /// GET `url`, writing the body to `out`. With `known`, the request is
    /// conditional and may answer [`Fetched::NotModified`] without a body.
    fn download(
        &self,
        url: &str,
        known: Option<&Validators>,
        out: &mut dyn io::Write,
    ) -> Result<Fetched, BoxError>;
}

/// The effects a build may use beyond the store and the context.
#[derive(Clone)]
pub struct Backends<'a> {
    /// Where events go.
    pub progress: &'a dyn Progress,
    /// Where missing base images come from (`None`: only the local store).
    pub images: Option<&'a dyn ImageSource>,
    /// Where `ADD <url>` downloads come from (`None`: such an ADD is an error).
    pub downloader: Option<&'a dyn Downloader>,
    /// Where RUN steps execute (`None`: a RUN step is an error).
    pub sandbox: Option<&'a dyn pybuild_sandbox::Sandbox>,
    /// Set to stop a running step (Ctrl-C): the build then fails with an error.
    pub cancel: Option<pybuild_sandbox::CancelToken>,
}

impl std::fmt::Debug for Backends<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("images", &self.images.is_some())
            .field("sandbox", &self.sandbox.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a secret's value comes from (`--secret id=ID,src=FILE|env=VAR`).
#[derive(Clone)]
pub enum SecretSource {
    /// A file, read when a step mounts it.
    File(PathBuf),
    /// An environment variable of the pybuild process.
    Env(String),
    /// A value given directly (library callers).
    Value(Vec<u8>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Env(var) => f.debug_tuple("Env").field(var).finish(),
            SecretSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl SecretSource {
    /// The secret's bytes.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            SecretSource::File(path) => fs::read(path),
            SecretSource::Env(var) => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| io::Error::other(format!("environment variable {var} is not set"))),
            SecretSource::Value(v) => Ok(v.clone()),
        }
    }
}

/// The build's secrets by id. `Debug` shows ids only: values must never reach a log.
#[derive(Clone, Default)]
pub struct Secrets(std::collections::BTreeMap<String, SecretSource>);

impl Secrets {
    /// Add (or replace) a secret.
    pub fn insert(&mut self, id: impl Into<String>, source: SecretSource) {
        self.0.insert(id.into(), source);
    }

    /// The secret `id`, if given.
    pub fn get(&self, id: &str) -> Option<&SecretSource> {
        self.0.get(id)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// `--secret`s, for `RUN --mount=type=secret`.
    pub secrets: Secrets,
    /// `--ssh default`: the agent socket `RUN --mount=type=ssh` forwards.
    pub ssh_agent: Option<PathBuf>,
    /// `--pull`: resolve every base image in the registry even when the store has it.
    pub pull: bool,
    /// `--no-cache`: do every step (results are still recorded).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (names or indexes) not to take from the cache.
    pub no_cache_filter: Vec<String>,
    /// Layer compression.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: config and history times, and the clamp of layer mtimes.
    pub source_date_epoch: Option<i64>,
    /// OCI media types (true) or Docker schema 2 (false).
    pub oci_mediatypes: bool,
    /// `--label`s, applied to the final image after the Dockerfile's.
    pub labels: Vec<(String, String)>,
    /// `--squash`: the layers the Dockerfile adds become one.
    pub squash: bool,
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            secrets: Secrets::default(),
            ssh_agent: None,
            pull: false,
            no_cache: false,
            no_cache_filter: Vec::new(),
            compression: Compression::default(),
            source_date_epoch: None,
            oci_mediatypes: true,
            labels: Vec::new(),
            squash: false,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Solved {
    /// The image manifest's descriptor (in the store, untagged).
    pub manifest: Descriptor,
    /// The config blob's digest (docker's "image ID").
    pub config_digest: Digest,
    /// The image config.
    pub config: ImageConfig,
    /// Base images used, as written, with the manifest digests they resolved to.
    pub base_images: Vec<(String, Digest)>,
    /// Filesystem steps taken from the cache, and all filesystem steps.
    pub cached_steps: usize,
    /// All filesystem steps.
    pub fs_steps: usize,
}

/// One layer of a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Layer {
    digest: Digest,
    size: u64,
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "diffId")]
    diff_id: Digest,
}

/// A cache record as stored (see `Store::put_cache_record` for the `blobs` and
/// `snapshots` contract).
#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    v: u32,
    blobs: Vec<Digest>,
    snapshots: Vec<Digest>,
    /// `None` for a step that changed nothing (an empty RUN).
    #[serde(default)]
    layer: Option<Layer>,
    /// When the layer was first made (seconds since the epoch): a cached step's
    /// history keeps it, so rebuilding unchanged input gives the same image ID.
    #[serde(default)]
    created: Option<i64>,
}

/// A stage's image as built so far.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Layer>,
    key: Digest,
    /// How many of `layers` and of the history entries come from the base image
    /// (`--squash` keeps those).
    base_layers: usize,
    base_history: usize,
    /// Creation time of the newest layer step so far (history and config times).
    created: Option<i64>,
}

impl State {
    fn tree(&self, store: &Store) -> LowerTree {
        LowerTree::new(
            self.layers
                .iter()
                .rev()
                .map(|l| store.snapshot_path(&l.diff_id))
                .collect(),
        )
    }
}

/// Build `graph`'s target stage from `context` into `store`.
pub fn solve(
    store: &Store,
    context: &Context,
    graph: &BuildGraph,
    options: &SolveOptions,
    backends: &Backends<'_>,
) -> Result<Solved> {
    let _lease = store.lease()?;
    let platform = graph.target_platform.to_oci();
    let pulled = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let ids = std::sync::atomic::AtomicUsize::new(0);
    let mut solver = Solver {
        store,
        context,
        graph,
        options,
        progress: backends.progress,
        images: backends.images,
        sandbox: backends.sandbox,
        downloader: backends.downloader,
        cancel: backends.cancel.clone(),
        current_step: None,
        pulled: &pulled,
        platform,
        states: vec![None; graph.stages.len()],
        ids: &ids,
        now: options.source_date_epoch.unwrap_or_else(time::now),
        base_images: Vec::new(),
        cached_steps: 0,
        fs_steps: 0,
    };
    let total_steps = graph
        .order
        .iter()
        .map(|&i| {
            1 + graph.stages[i]
                .steps
                .iter()
                .filter(|s| is_fs_step(&s.instruction.kind))
                .count()
        })
        .sum();
    backends
        .progress
        .event(&Event::BuildStarted { total_steps });
    // Stages run as soon as the stages they depend on are done; independent ones run
    // in parallel, each on its own thread with its own copy of the finished states
    // (BuildKit's solver does the same for independent LLB vertices).
    let mut remaining: Vec<usize> = graph.order.clone();
    while !remaining.is_empty() {
        let ready: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                graph.stages[i]
                    .deps
                    .iter()
                    .all(|&d| solver.states[d].is_some() || !graph.is_needed(d))
            })
            .collect();
        if ready.is_empty() {
            return Err(Error::BadImage {
                image: graph.stages[remaining[0]].display_name(),
                message: "its dependencies can never be built".into(),
            });
        }
        remaining.retain(|i| !ready.contains(i));
        let results: Vec<StageOutcome<'_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ready
                .iter()
                .map(|&i| {
                    let mut runner = solver.runner();
                    let stage = &graph.stages[i];
                    (
                        i,
                        scope.spawn(move || {
                            let result = runner.run_stage(stage);
                            if result.is_err()
                                && let Some(cancel) = &runner.cancel
                            {
                                // Stop the siblings: the build has failed.
                                cancel.cancel();
                            }
                            result.map(|state| (state, runner))
                        }),
                    )
                })
                .collect();
            handles.into_iter().map(|(i, h)| (i, h.join())).collect()
        });
        let mut first_error = None;
        for (i, result) in results {
            match result {
                Ok(Ok((state, runner))) => {
                    solver.states[i] = Some(state);
                    solver.cached_steps += runner.cached_steps;
                    solver.fs_steps += runner.fs_steps;
                    solver.base_images.extend(runner.base_images);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(explain_single_id(e));
                }
                Err(_) => {
                    first_error.get_or_insert(Error::BadImage {
                        image: graph.stages[i].display_name(),
                        message: "internal error: the stage's thread panicked".into(),
                    });
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    let state = solver.states[graph.target]
        .take()
        .ok_or_else(|| Error::BadImage {
            image: graph.stages[graph.target].display_name(),
            message: "the target stage was not built".into(),
        })?;
    let solved = solver.write_image(state)?;
    context.save_stat_cache().map_err(|e| Error::BadImage {
        image: "build context".into(),
        message: e.to_string(),
    })?;
    Ok(solved)
}

/// A stage's index and what its thread returned.
type StageOutcome<'a> = (usize, std::thread::Result<Result<(State, Solver<'a>)>>);

struct Solver<'a> {
    store: &'a Store,
    context: &'a Context,
    graph: &'a BuildGraph,
    options: &'a SolveOptions,
    progress: &'a dyn Progress,
    images: Option<&'a dyn ImageSource>,
    sandbox: Option<&'a dyn pybuild_sandbox::Sandbox>,
    downloader: Option<&'a dyn Downloader>,
    cancel: Option<pybuild_sandbox::CancelToken>,
    /// The progress id of the step running now (for its output).
    current_step: Option<usize>,
    /// Base images resolved in this build (a name is pulled at most once per build;
    /// shared by the stages running in parallel, held while pulling).
    pulled: &'a std::sync::Mutex<std::collections::BTreeMap<String, Descriptor>>,
    platform: Platform,
    /// The finished stages this runner may read (a snapshot taken when it started).
    states: Vec<Option<State>>,
    /// Step ids, unique across the stages running in parallel.
    ids: &'a std::sync::atomic::AtomicUsize,
    now: i64,
    base_images: Vec<(String, Digest)>,
    cached_steps: usize,
    fs_steps: usize,
}

/// Whether BuildKit shows a step in its progress (it counts FROM and the steps that
/// produce filesystem operations).
fn is_fs_step(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Copy(_) | Kind::Add(_) | Kind::Run { .. } | Kind::Workdir(_)
    )
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    line.to_string()
}

fn step_error(step_text: &str, span: Span, message: impl Into<String>) -> Error {
    Error::Step {
        instruction: first_line(step_text),
        span,
        message: message.into(),
        hint: None,
    }
}

fn key_of(parent: &Digest, step: serde_json::Value) -> Digest {
    Digest::of(&canonical_json(&json!({
        "v": CACHE_KEY_VERSION,
        "parent": parent,
        "step": step,
    })))
}

fn compression_json(c: Compression) -> serde_json::Value {
    match c {
        Compression::None => json!({"type": "none"}),
        Compression::Gzip { level } => json!({"type": "gzip", "level": level}),
        Compression::Zstd { level } => json!({"type": "zstd", "level": level}),
    }
}

/// Clean an absolute image path (`/a/./b/../c/` → `/a/c`).
fn clean_abs(path: &str) -> String {
    format!("/{}", rootfs::components(path).join("/"))
}

impl<'a> Solver<'a> {
    /// A runner for one stage: the shared parts, a copy of the finished states, and
    /// its own counters.
    fn runner(&self) -> Solver<'a> {
        Solver {
            store: self.store,
            context: self.context,
            graph: self.graph,
            options: self.options,
            progress: self.progress,
            images: self.images,
            sandbox: self.sandbox,
            downloader: self.downloader,
            cancel: self.cancel.clone(),
            current_step: None,
            pulled: self.pulled,
            platform: self.platform.clone(),
            states: self.states.clone(),
            ids: self.ids,
            now: self.now,
            base_images: Vec::new(),
            cached_steps: 0,
            fs_steps: 0,
        }
    }

    fn start(&mut self, name: String) -> usize {
        let id = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.progress.event(&Event::StepStarted { id, name });
        id
    }

    fn use_cache(&self, stage: &Stage) -> bool {
        if self.options.no_cache {
            return false;
        }
        let name = stage.name.as_deref().unwrap_or("");
        !self
            .options
            .no_cache_filter
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name) || *f == stage.index.to_string())
    }

    fn run_stage(&mut self, stage: &Stage) -> Result<State> {
        let result = self.run_stage_steps(stage);
        if let (Err(e), Some(id)) = (&result, self.current_step) {
            self.progress.event(&Event::StepFailed {
                id,
                message: e.to_string(),
            });
        }
        result
    }

    fn run_stage_steps(&mut self, stage: &Stage) -> Result<State> {
        let total = 1 + stage
            .steps
            .iter()
            .filter(|s| is_fs_step(&s.instruction.kind))
            .count();
        let label = stage.display_name();
        let id = self.start(format!(
            "[{label} 1/{total}] {}",
            first_line(&stage.from.original)
        ));
        self.current_step = Some(id);
        let mut state: State = match &stage.base {
            Base::Scratch => self.scratch(),
            Base::Image(name) => self.base_image(name, stage)?,
            Base::Stage(i) => self.states[*i].clone().ok_or_else(|| Error::BadImage {
                image: self.graph.stages[*i].display_name(),
                message: "stage used before it was built".into(),
            })?,
        };
        self.progress.event(&Event::StepFinished { id });
        let mut flags = StageFlags::default();
        let mut position = 1;
        let use_cache = self.use_cache(stage);
        // ONBUILD triggers of the base run first, as if written right after FROM, and
        // are not inherited further (BuildKit `dispatchOnBuildTriggers`).
        let triggers = std::mem::take(&mut state.config.config.on_build);
        for step in self.trigger_steps(stage, &triggers)? {
            let shown = is_fs_step(&step.instruction.kind);
            let id = shown.then(|| {
                self.start(format!(
                    "[{label} ONBUILD] {}",
                    first_line(&step.instruction.original)
                ))
            });
            self.current_step = id;
            let cached = self.run_step(stage, &step, &mut state, &mut flags, use_cache)?;
            if let Some(id) = id {
                self.fs_steps += 1;
                self.cached_steps += usize::from(cached);
                self.progress.event(&if cached {
                    Event::StepCached { id }
                } else {
                    Event::StepFinished { id }
                });
            }
        }
        for step in &stage.steps {
            let shown = is_fs_step(&step.instruction.kind);
            let id = if shown {
                position += 1;
                Some(self.start(format!(
                    "[{label} {position}/{total}] {}",
                    first_line(&step.instruction.original)
                )))
            } else {
                None
            };
            self.current_step = id;
            let cached = self.run_step(stage, step, &mut state, &mut flags, use_cache)?;
            if let Some(id) = id {
                self.fs_steps += 1;
                if cached {
                    self.cached_steps += 1;
                    self.progress.event(&Event::StepCached { id });
                } else {
                    self.progress.event(&Event::StepFinished { id });
                }
            }
        }
        Ok(state)
    }

    /// Parse a base image's ONBUILD triggers into steps of `stage`.
    fn trigger_steps(&self, stage: &Stage, triggers: &[String]) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for trigger in triggers {
            let fail = |message: String| Error::Step {
                instruction: first_line(&stage.from.original),
                span: stage.from.span,
                message: format!("ONBUILD trigger {trigger:?} of the base image: {message}"),
                hint: None,
            };
            let parsed = pybuild_dockerfile::parse(trigger).map_err(|e| fail(e.to_string()))?;
            for instruction in pybuild_dockerfile::instructions::parse_all(&parsed)
                .map_err(|e| fail(e.to_string()))?
            {
                if matches!(instruction.kind, Kind::From { .. } | Kind::Onbuild(_)) {
                    return Err(fail(format!(
                        "{} is not allowed as a trigger",
                        instruction.name()
                    )));
                }
                let inputs = match &instruction.kind {
                    Kind::Copy(spec) | Kind::Add(spec) if spec.from.is_some() => {
                        return Err(fail("COPY --from in a trigger is not supported".into()));
                    }
                    Kind::Copy(spec) | Kind::Add(spec) => vec![Input::Context(
                        spec.sources.iter().map(|s| s.value.clone()).collect(),
                    )],
                    _ => Vec::new(),
                };
                steps.push(Step {
                    // Errors in a trigger point at the FROM line that pulled it in.
                    instruction: pybuild_dockerfile::instructions::Instruction {
                        span: stage.from.span,
                        keyword_span: stage.from.keyword_span,
                        ..instruction
                    },
                    args: Vec::new(),
                    env: Vec::new(),
                    proxy_env: Vec::new(),
                    inputs,
                });
            }
        }
        Ok(steps)
    }

    fn scratch(&self) -> State {
        let mut config = ImageConfig {
            architecture: self.platform.architecture.clone(),
            os: self.platform.os.clone(),
            variant: self.platform.variant.clone(),
            ..ImageConfig::default()
        };
        config.config.set_env("PATH", DEFAULT_PATH);
        State {
            config,
            layers: Vec::new(),
            base_layers: 0,
            base_history: 0,
            created: None,
            key: key_of(
                &Digest::of(b"scratch"),
                json!({"op": "scratch", "platform": self.platform}),
            ),
        }
    }

    /// A base image from the local store, its layers unpacked as snapshots.
    fn base_image(&mut self, name: &str, stage: &Stage) -> Result<State> {
        let desc = self.find_image(name, stage)?;
        let image = self.store.image(&desc, Some(&self.platform))?;
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.manifest.layers.len() {
            return Err(Error::BadImage {
                image: name.into(),
                message: format!(
                    "{} layers but {} diff IDs",
                    image.manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in image.manifest.layers.iter().zip(diff_ids) {
            let layer = Layer {
                digest: desc.digest.clone(),
                size: desc.size,
                media_type: desc.media_type.clone(),
                diff_id: diff_id.clone(),
            };
            self.ensure_layer_snapshot(&layer, name)?;
            layers.push(layer);
        }
        self.progress.event(&Event::BaseImage {
            id: self.current_step,
            name: name.into(),
            digest: image.descriptor.digest.clone(),
        });
        self.base_images
            .push((name.to_string(), image.descriptor.digest.clone()));
        let mut config = image.config;
        // The base's history and created time stay; ours are appended at the end.
        config.rootfs.diff_ids.clear();
        Ok(State {
            key: key_of(
                &image.descriptor.digest,
                json!({"op": "image", "platform": self.platform}),
            ),
            base_layers: layers.len(),
            base_history: config.history.len(),
            config,
            layers,
            created: None,
        })
    }

    /// The manifest of a base image: from the store, else (or always with `--pull`)
    /// from the image source, tagged in the store under its local name.
    fn find_image(&mut self, name: &str, stage: &Stage) -> Result<Descriptor> {
        let local = match self.images {
            Some(source) => source.local_name(name),
            None => pybuild_store::normalize_tag(name),
        };
        // Held while pulling: parallel stages wanting the same image wait for one pull.
        let pulled = self.pulled;
        let mut pulled = pulled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(desc) = pulled.get(&local) {
            return Ok(desc.clone());
        }
        let fail = |message: String, hint: Option<String>| Error::Step {
            instruction: first_line(&stage.from.original),
            span: stage.from.span,
            message,
            hint,
        };
        // `name@sha256:...` pins content: a manifest with that digest in the store is
        // the image, whatever its tags (and a registry is never asked, even with --pull).
        let pinned = name
            .rsplit_once('@')
            .and_then(|(_, d)| d.parse::<Digest>().ok())
            .filter(|d| self.store.has_blob(d))
            .and_then(|d| {
                let bytes = self.store.read_blob(&d).ok()?;
                let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                let media_type = value["mediaType"]
                    .as_str()
                    .unwrap_or(media_type::OCI_MANIFEST)
                    .to_string();
                Some(Descriptor::new(media_type, d, bytes.len() as u64))
            });
        let from_store = if pinned.is_some() {
            pinned
        } else if self.options.pull {
            None
        } else {
            self.store.resolve(&local)?
        };
        let desc = match (from_store, self.images) {
            (Some(desc), _) => desc,
            (None, Some(source)) => {
                let progress = self.progress;
                let id = self.current_step;
                let on_bytes = move |digest: &Digest, done: u64, total: u64| {
                    progress.event(&Event::Transfer {
                        id,
                        digest: digest.clone(),
                        done,
                        total,
                    });
                };
                let desc = source
                    .pull(self.store, name, &self.platform, &on_bytes)
                    .map_err(|e| {
                        fail(
                            format!("image {name:?} is not in the local store and pulling it failed: {e}"),
                            Some("check the registry is reachable; behind a mirror, use --registry-mirror HOST=MIRROR or the config file's mirrors".into()),
                        )
                    })?;
                self.store.set_tag(&local, &desc)?;
                desc
            }
            (None, None) => {
                return Err(fail(
                    format!("image {name:?} is not in the local store ({local})"),
                    Some(
                        "build it first with `pybuild build -t NAME`, or `pybuild load -i FILE`"
                            .into(),
                    ),
                ));
            }
        };
        pulled.insert(local, desc.clone());
        Ok(desc)
    }

    /// Unpack a layer blob into its snapshot unless it is there, checking the diff ID.
    fn ensure_layer_snapshot(&self, layer: &Layer, image: &str) -> Result<()> {
        let store = self.store;
        let diff_id = layer.diff_id.clone();
        store.ensure_snapshot(&layer.diff_id, |dir| {
            let blob = store.open_blob(&layer.digest)?;
            let stats = pybuild_layer::apply_layer(
                io::BufReader::with_capacity(1 << 20, blob),
                dir,
                &ApplyOptions::for_this_process(ApplyMode::Snapshot),
            )
            .map_err(|e| -> pybuild_store::BoxError {
                let userns = pybuild_sandbox::UserNs::current();
                match (&e, userns.single_id_explanation()) {
                    (pybuild_layer::Error::UnmappedOwner { .. }, Some(why)) => format!(
                        "layer {} of image {image} cannot be unpacked: {e}; {why}",
                        layer.digest
                    )
                    .into(),
                    _ => e.into(),
                }
            })?;
            if stats.diff_id != diff_id {
                return Err(format!(
                    "layer {} of image {image} unpacks to {} but its config says {diff_id}",
                    layer.digest, stats.diff_id
                )
                .into());
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Run one step; whether its result came from the cache.
    fn run_step(
        &mut self,
        stage: &Stage,
        step: &Step,
        state: &mut State,
        flags: &mut StageFlags,
        use_cache: bool,
    ) -> Result<bool> {
        let instr = &step.instruction;
        let mut env: Vec<(String, String)> = step.args.clone();
        for (k, v) in state.config.config.env_pairs() {
            env.retain(|(ek, _)| *ek != k);
            env.push((k, v));
        }
        let kind = pybuild_graph::expand(&instr.kind, &env, self.graph.escape).map_err(|e| {
            step_error(
                &instr.original,
                e.span().unwrap_or(instr.span),
                e.to_string(),
            )
        })?;
        match &kind {
            Kind::Copy(spec) | Kind::Add(spec) => {
                let is_add = matches!(kind, Kind::Add(_));
                let cached = self.copy(stage, step, spec, is_add, state, use_cache, &env)?;
                let created_by = format!("{} # buildkit", first_line(&instr.original));
                self.history(state, created_by, false);
                Ok(cached)
            }
            Kind::Workdir(dir) => {
                let old = state
                    .config
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let path = if dir.value.starts_with('/') {
                    clean_abs(&dir.value)
                } else {
                    clean_abs(&format!("{old}/{}", dir.value))
                };
                state.config.config.working_dir = Some(path.clone());
                let (cached, made) = self.workdir(step, &path, state, use_cache)?;
                self.history(state, format!("WORKDIR {path}"), !made);
                Ok(cached)
            }
            Kind::Run {
                command,
                mounts,
                network,
                security,
                heredocs,
            } => {
                let id = self.current_step;
                self.run(
                    stage, step, command, mounts, *network, *security, heredocs, state, use_cache,
                    id,
                )
            }
            Kind::Arg(_) | Kind::From { .. } => Ok(false),
            other => {
                if let Some(line) = config::apply(other, &mut state.config.config, flags) {
                    if let Kind::Maintainer(author) = other {
                        state.config.author = Some(author.clone());
                        self.history(state, format!("MAINTAINER {author}"), true);
                    } else {
                        self.history(state, line, true);
                    }
                }
                Ok(false)
            }
        }
    }

    fn history(&self, state: &mut State, created_by: String, empty_layer: bool) {
        state.config.history.push(History {
            created: Some(time::rfc3339(state.created.unwrap_or(self.now))),
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer,
        });
    }

    /// Look a key up; a usable record's layer.
    fn cached(&self, key: &Digest) -> Result<Option<(Option<Layer>, Option<i64>)>> {
        let Some(bytes) = self.store.get_cache_record(key)? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            // An unreadable record (older format, damaged): ignore it, it is rewritten.
            return Ok(None);
        };
        if record.v != CACHE_KEY_VERSION {
            return Ok(None);
        }
        if let Some(layer) = &record.layer {
            if !self.store.has_blob(&layer.digest) {
                return Ok(None);
            }
            if !self.store.has_snapshot(&layer.diff_id) {
                self.ensure_layer_snapshot(layer, "(build cache)")?;
            }
        }
        Ok(Some((record.layer, record.created)))
    }

    /// Write a filled diff directory as a layer and keep it as the snapshot.
    fn commit(&self, diff: pybuild_store::TempDir, key: &Digest) -> Result<Layer> {
        let started = std::time::Instant::now();
        let mut writer = self.store.blob_writer()?;
        let info = pybuild_layer::write_layer(
            diff.path(),
            &WriteOptions {
                compression: self.options.compression,
                mtime_clamp: self.options.source_date_epoch,
            },
            &mut writer,
        )
        .map_err(|e| Error::BadImage {
            image: "layer being built".into(),
            message: e.to_string(),
        })?;
        let (digest, size) = writer.commit(Some(&info.digest))?;
        let src = diff.path().to_path_buf();
        self.store.ensure_snapshot(&info.diff_id, |dst| {
            // `dst` is an empty directory; rename(2) may replace an empty directory.
            fs::rename(&src, dst).map_err(|e| Box::new(e) as BoxError)
        })?;
        drop(diff);
        let layer = Layer {
            digest: digest.clone(),
            size,
            media_type: info.media_type.to_string(),
            diff_id: info.diff_id.clone(),
        };
        let record = CacheRecord {
            v: CACHE_KEY_VERSION,
            blobs: vec![digest],
            snapshots: vec![info.diff_id],
            layer: Some(layer.clone()),
            created: Some(self.now),
        };
        self.store.put_cache_record(key, &canonical_json(&record))?;
        if let Some(id) = self.current_step {
            self.progress.event(&Event::LayerWritten {
                id,
                digest: layer.digest.clone(),
                size: layer.size,
                duration: started.elapsed(),
            });
        }
        Ok(layer)
    }

    /// Record that the step with `key` changed nothing.
    fn record_empty(&self, key: &Digest) -> Result<()> {
        let record = CacheRecord {
            v: CACHE_KEY_VERSION,
            blobs: Vec::new(),
            snapshots: Vec::new(),
            layer: None,
            created: Some(self.now),
        };
        self.store.put_cache_record(key, &canonical_json(&record))?;
        Ok(())
    }

    fn layer_settings(&self) -> serde_json::Value {
        json!({
            "compression": compression_json(self.options.compression),
            "sourceDateEpoch": self.options.source_date_epoch,
        })
    }

    /// WORKDIR: create the directory when the image lacks it. Returns (cached, made a
    /// layer).
    fn workdir(
        &mut self,
        step: &Step,
        path: &str,
        state: &mut State,
        use_cache: bool,
    ) -> Result<(bool, bool)> {
        let instr = &step.instruction;
        let tree = state.tree(self.store);
        let io_err = |e: io::Error| step_error(&instr.original, instr.span, e.to_string());
        if let Some(found) = tree.stat(path).map_err(io_err)?
            && found.meta.is_dir()
        {
            return Ok((false, false));
        }
        // BuildKit creates the directory as the current USER.
        let owner = match state.config.config.user.as_deref() {
            None | Some("") => Owner { uid: 0, gid: 0 },
            Some(user) => resolve_owner(user, &tree)
                .map_err(|e| step_error(&instr.original, instr.span, e.to_string()))?,
        };
        let key = key_of(
            &state.key,
            json!({"op": "mkdir", "path": path, "uid": owner.uid, "gid": owner.gid,
                   "mtime": self.now_for_dirs(), "layer": self.layer_settings()}),
        );
        if use_cache && let Some((Some(layer), created)) = self.cached(&key)? {
            state.layers.push(layer);
            state.key = key;
            state.created = Some(self.created_time(created));
            return Ok((true, true));
        }
        let dir = self.store.temp_dir()?;
        let mut builder = DiffBuilder::new(dir.path(), Some(&tree), owner, self.now);
        let comps = builder
            .resolve(&rootfs::components(path), true)
            .map_err(io_err)?;
        builder.ensure_dir(&comps).map_err(io_err)?;
        builder.finish().map_err(io_err)?;
        let layer = self.commit(dir, &key)?;
        state.layers.push(layer);
        state.key = key;
        state.created = Some(self.now);
        Ok((false, true))
    }

    /// COPY and ADD.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        stage: &Stage,
        step: &Step,
        spec: &CopySpec,
        is_add: bool,
        state: &mut State,
        use_cache: bool,
        env: &[(String, String)],
    ) -> Result<bool> {
        let instr = &step.instruction;
        let err = |message: String| step_error(&instr.original, instr.span, message);
        let tree = state.tree(self.store);
        let owner = match &spec.chown {
            Some(c) => Some(resolve_owner(&c.value, &tree).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(c) => Some(Chmod::parse(&c.value).ok_or_else(|| {
                err(format!(
                    "invalid --chmod={}: expected an octal or symbolic mode",
                    c.value
                ))
            })?),
            None => None,
        };
        let exclude = PatternMatcher::new(
            &spec
                .exclude
                .iter()
                .map(|e| e.value.clone())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| err(e.to_string()))?;

        // Destination: relative to WORKDIR; a trailing `/` (or `.`) or several sources
        // mean a directory.
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let raw_dest = &spec.dest.value;
        let dest_abs = if raw_dest.starts_with('/') {
            raw_dest.clone()
        } else {
            format!("{workdir}/{raw_dest}")
        };
        let dest_marked_dir = raw_dest.ends_with('/')
            || raw_dest == "."
            || raw_dest.ends_with("/.")
            || raw_dest.is_empty();
        let dest_comps = rootfs::components(&dest_abs);

        // Sources, turned into (match root kind, entries relative to it).
        let mut groups: Vec<Group> = Vec::new();
        let from_input = spec.from.as_ref().map(|_| {
            step.inputs
                .iter()
                .find(|i| matches!(i, Input::Stage(_) | Input::Image(_)))
                .cloned()
        });
        let mut content_key = ListHasher::default();
        // `ADD <url>` sources: downloaded files (or, before a cache miss, the places
        // they go), kept until the layer is written.
        let mut downloads: Vec<RemoteSource> = Vec::new();
        for src in &spec.sources {
            let heredoc = src.value.strip_prefix("<<").and_then(|rest| {
                let name = rest.trim_start_matches('-').trim_matches(['"', '\'']);
                spec.heredocs.iter().find(|h| h.name == name)
            });
            if let Some(doc) = heredoc {
                // BuildKit expands a COPY heredoc body as one word with quotes and
                // escapes kept literally.
                let body = if doc.expand {
                    pybuild_dockerfile::shell::Lexer::new(self.graph.escape)
                        .raw_quotes(true)
                        .raw_escapes(true)
                        .expand_word(&doc.content, &env)
                        .map_err(|e| err(e.to_string()))?
                } else {
                    doc.content.clone()
                };
                content_key
                    .push(json!({"heredoc": doc.name, "sha256": Digest::of(body.as_bytes())}));
                groups.push(Group {
                    remote: false,
                    name: doc.name.clone(),
                    path: doc.name.clone(),
                    is_dir: false,
                    entries: vec![GroupEntry {
                        rel: String::new(),
                        content: Content::Bytes(body.into_bytes()),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        mtime: (self.now_for_dirs(), 0),
                    }],
                });
                continue;
            }
            if is_add && (src.value.starts_with("http://") || src.value.starts_with("https://")) {
                let remote = self.remote_source(src, spec, &instr.original)?;
                let name = url_file_name(&src.value);
                content_key.push(remote.key.clone());
                groups.push(Group {
                    name: name.clone(),
                    path: name,
                    is_dir: false,
                    remote: true,
                    entries: vec![GroupEntry {
                        rel: String::new(),
                        content: Content::File(remote.path.clone()),
                        // BuildKit's HTTP source writes 0600 unless --chmod says otherwise.
                        mode: 0o600,
                        uid: 0,
                        gid: 0,
                        mtime: (remote.last_modified.unwrap_or(self.now_for_dirs()), 0),
                    }],
                });
                downloads.push(remote);
                continue;
            }
            if is_add && src.value.starts_with("git@") {
                return Err(Error::Step {
                    instruction: first_line(&instr.original),
                    span: src.span,
                    message: format!("ADD {}: git sources are not supported yet", src.value),
                    hint: Some("clone the repository into the build context and COPY it".into()),
                });
            }
            match &from_input {
                None => self.context_group(
                    src,
                    &exclude,
                    &mut groups,
                    &mut content_key,
                    &instr.original,
                )?,
                Some(input) => {
                    let (source_tree, identity) = match input {
                        Some(Input::Stage(i)) => {
                            let s = self.states[*i].as_ref().ok_or_else(|| {
                                err(format!(
                                    "stage {} is not built",
                                    self.graph.stages[*i].display_name()
                                ))
                            })?;
                            (s.tree(self.store), s.key.clone())
                        }
                        Some(Input::Image(name)) => {
                            let s = self.base_image(name, stage)?;
                            (s.tree(self.store), s.key.clone())
                        }
                        _ => return Err(err("COPY --from names nothing buildable".into())),
                    };
                    let path = clean_abs(&src.value);
                    let merged = source_tree.walk(&path).map_err(|e| err(e.to_string()))?;
                    if merged.is_empty() {
                        return Err(Error::Step {
                            instruction: first_line(&instr.original),
                            span: src.span,
                            message: format!(
                                "{}: not found in {}",
                                src.value,
                                spec.from.as_ref().map(|f| f.value.as_str()).unwrap_or("")
                            ),
                            hint: None,
                        });
                    }
                    // A stage's key identifies its whole filesystem, so the key of
                    // what is copied is that key plus the path.
                    content_key.push(json!({"from": identity, "path": path}));
                    let is_dir = merged[0].meta.is_dir();
                    let mut entries = Vec::new();
                    for e in merged {
                        let ft = e.meta.file_type();
                        let content = if ft.is_dir() {
                            Content::Dir
                        } else if ft.is_symlink() {
                            Content::Symlink(
                                fs::read_link(&e.path)
                                    .map_err(|x| err(x.to_string()))?
                                    .to_string_lossy()
                                    .into_owned(),
                            )
                        } else if ft.is_file() {
                            Content::File(e.path.clone())
                        } else {
                            continue;
                        };
                        entries.push(GroupEntry {
                            rel: e.rel_path,
                            content,
                            mode: e.meta.mode() & 0o7777,
                            uid: e.meta.uid(),
                            gid: e.meta.gid(),
                            mtime: (e.meta.mtime(), e.meta.mtime_nsec() as u32),
                        });
                    }
                    let name = rootfs::components(&path).pop().unwrap_or_default();
                    groups.push(Group {
                        remote: false,
                        name,
                        path: path.clone(),
                        is_dir,
                        entries,
                    });
                }
            }
        }

        // Several sources (or a wildcard matching several) need a directory target.
        let multiple = groups.len() > 1;
        if spec.sources.len() > 1 && !dest_marked_dir {
            return Err(Error::Step {
                instruction: first_line(&instr.original),
                span: spec.dest.span,
                message: format!(
                    "when using {} with more than one source file, the destination must be a directory and end with a /",
                    if is_add { "ADD" } else { "COPY" }
                ),
                hint: Some(format!("write the destination as {raw_dest}/")),
            });
        }
        let dest_is_existing_dir = !spec.link
            && tree
                .stat(&dest_abs)
                .map_err(|e| err(e.to_string()))?
                .is_some_and(|f| f.meta.is_dir());

        // The items, in order, with their final image paths.
        let mut items: Vec<Item> = Vec::new();
        // ADD unpacks a source that is itself an archive file, never a file inside a
        // copied directory (BuildKit's file backend calls `unpack` per source path,
        // and `isArchivePath` is false for a directory).
        let mut unpack_candidates: Vec<Vec<String>> = Vec::new();
        for group in groups {
            let base: Vec<String> = if spec.parents {
                // `--parents`: the source keeps its path (as requested, relative to
                // the context or stage root) under the destination, directories
                // included (BuildKit `COPY --parents`, Dockerfile 1.7).
                let mut c = dest_comps.clone();
                c.extend(rootfs::components(&group.path));
                c
            } else if group.is_dir {
                dest_comps.clone()
            } else if dest_marked_dir || multiple || dest_is_existing_dir {
                let mut c = dest_comps.clone();
                c.push(group.name.clone());
                c
            } else {
                dest_comps.clone()
            };
            for e in group.entries {
                if group.is_dir && e.rel.is_empty() {
                    // The source directory itself: its contents are copied, the
                    // destination keeps (or gets) its own metadata.
                    // BuildKit (fsutil `copyDirectory`): a destination directory the
                    // copy creates takes the source directory's mode and mtime (and
                    // the --chown owner); an existing one is left as it is.
                    let mode = match &chmod {
                        Some(c) => c.apply(e.mode, true),
                        None => e.mode,
                    };
                    items.push(Item {
                        target: base.clone(),
                        content: Content::Dir,
                        mode,
                        owner: owner.unwrap_or(Owner {
                            uid: e.uid,
                            gid: e.gid,
                        }),
                        mtime: e.mtime,
                    });
                    continue;
                }
                let mut target = base.clone();
                target.extend(rootfs::components(&e.rel));
                let is_dir = matches!(e.content, Content::Dir);
                let mode = match &chmod {
                    Some(c) if !matches!(e.content, Content::Symlink(_)) => c.apply(e.mode, is_dir),
                    _ => e.mode,
                };
                let owner = owner.unwrap_or(Owner {
                    uid: e.uid,
                    gid: e.gid,
                });
                if is_add && !group.is_dir && (!group.remote || spec.unpack == Some(true)) {
                    unpack_candidates.push(target.clone());
                }
                items.push(Item {
                    target,
                    content: e.content,
                    mode,
                    owner,
                    mtime: e.mtime,
                });
            }
        }
        // Drop the placeholder for a destination directory that already exists: the
        // image's own metadata stays.
        let items: Vec<Item> = items
            .into_iter()
            .filter(|i| {
                !(matches!(i.content, Content::Dir)
                    && i.target == dest_comps
                    && (dest_is_existing_dir || dest_comps.is_empty()))
            })
            .collect();

        let mut listing = ListHasher::default();
        for i in &items {
            let what = match &i.content {
                Content::Dir => json!("dir"),
                Content::Symlink(t) => json!({"symlink": t}),
                Content::Bytes(b) => json!({"file": Digest::of(b)}),
                // Files are identified by their content key entry (context
                // digests or the source stage's key), in the same order.
                Content::File(_) => json!("file"),
            };
            listing.push(json!([
                i.target.join("/"),
                what,
                i.mode,
                i.owner.uid,
                i.owner.gid
            ]));
        }
        let mut step = json!({
            "op": if is_add { "add" } else { "copy" },
            "sources": content_key.finish(),
            "items": listing.finish(),
            "link": spec.link,
            "layer": self.layer_settings(),
            "mtime": self.now_for_dirs(),
        });
        if is_add {
            // Which items ADD may unpack, and into where.
            step["unpack"] = json!({
                "items": unpack_candidates.iter().map(|t| t.join("/")).collect::<Vec<_>>(),
                "into": dest_comps.join("/"),
            });
        }
        let key = key_of(&state.key, step);
        if use_cache && let Some((Some(layer), created)) = self.cached(&key)? {
            state.layers.push(layer);
            state.key = key;
            state.created = Some(self.created_time(created));
            return Ok(true);
        }
        // A miss: fetch the bodies the key was decided without.
        let mut items = items;
        for remote in downloads.iter_mut().filter(|r| r.pending.is_some()) {
            let mtime = self.fetch_pending(remote, spec, &instr.original)?;
            for item in &mut items {
                if matches!(&item.content, Content::File(p) if *p == remote.path) {
                    item.mtime = (mtime.unwrap_or(self.now_for_dirs()), 0);
                }
            }
        }
        let dir = self.store.temp_dir()?;
        let lower = (!spec.link).then_some(&tree);
        let mut builder = DiffBuilder::new(
            dir.path(),
            lower,
            owner.unwrap_or(Owner { uid: 0, gid: 0 }),
            self.now,
        );
        let io_err = |e: io::Error| err(e.to_string());
        if items.is_empty() {
            let resolved = builder.resolve(&dest_comps, true).map_err(io_err)?;
            builder.ensure_dir(&resolved).map_err(io_err)?;
        }
        for item in &items {
            if is_add
                && let Content::File(path) = &item.content
                && spec.unpack != Some(false)
                && spec.from.is_none()
                && unpack_candidates.contains(&item.target)
                && let Some(()) = self
                    .try_unpack(path, &dest_comps, &mut builder)
                    .map_err(io_err)?
            {
                continue;
            }
            builder.put(item).map_err(io_err)?;
        }
        builder.finish().map_err(io_err)?;
        let layer = self.commit(dir, &key)?;
        state.layers.push(layer);
        state.key = key;
        state.created = Some(self.now);
        Ok(false)
    }

    /// An `ADD <url>` source, as far as its cache key needs it, downloading as
    /// little as possible (BuildKit's HTTP source does the same):
    /// - with `--checksum`, the checksum is the content's identity: no request at
    ///   all until the step misses the cache;
    /// - else a conditional GET with the validators (`ETag`, `Last-Modified`) of the
    ///   last download of this URL: `304 Not Modified` means the content recorded
    ///   then, and the body is only fetched if the step then misses the cache;
    /// - else (first time, or the server does not validate) the body is downloaded.
    ///
    /// The key holds `Last-Modified` too when known: it becomes the file's mtime,
    /// so it is part of the layer.
    fn remote_source(
        &self,
        src: &pybuild_dockerfile::Spanned<String>,
        spec: &CopySpec,
        original: &str,
    ) -> Result<RemoteSource> {
        let dir = self.store.temp_dir()?;
        let path = dir.path().join("download");
        let url = src.value.clone();
        if let Some(sum) = &spec.checksum {
            return Ok(RemoteSource {
                key: json!({"url": url, "sha256": sum.value}),
                path,
                last_modified: None,
                pending: Some(sum.value.clone()),
                src: src.clone(),
                _dir: dir,
            });
        }
        let record_key = http_record_key(&url);
        let known: Option<HttpRecord> = self
            .store
            .get_cache_record(&record_key)?
            .and_then(|bytes| serde_json::from_slice::<HttpRecord>(&bytes).ok())
            .filter(|r| {
                r.v == CACHE_KEY_VERSION && (r.etag.is_some() || r.last_modified.is_some())
            });
        let validators = known.as_ref().map(|r| Validators {
            etag: r.etag.clone(),
            last_modified: r.last_modified,
        });
        let (digest, last_modified, pending) = match self.fetch(
            src,
            &path,
            validators.as_ref(),
            original,
        )? {
            Fetched::NotModified => match known {
                Some(r) => (r.sha256.clone(), r.last_modified, Some(r.sha256)),
                None => {
                    return Err(step_error(
                        original,
                        src.span,
                        format!(
                            "ADD {url}: the server answered 304 Not Modified to an unconditional GET"
                        ),
                    ));
                }
            },
            Fetched::Body(info) => {
                let record = HttpRecord {
                    v: CACHE_KEY_VERSION,
                    sha256: info.digest.to_string(),
                    etag: info.etag.clone(),
                    last_modified: info.last_modified,
                };
                self.store
                    .put_cache_record(&record_key, &canonical_json(&record))?;
                (info.digest.to_string(), info.last_modified, None)
            }
        };
        Ok(RemoteSource {
            key: json!({"url": url, "sha256": digest, "lastModified": last_modified}),
            path,
            last_modified,
            pending,
            src: src.clone(),
            _dir: dir,
        })
    }

    /// Download a source whose key was decided without its body (the step missed
    /// the cache), checking it is the content the key names. Returns its
    /// `Last-Modified`.
    fn fetch_pending(
        &self,
        remote: &mut RemoteSource,
        spec: &CopySpec,
        original: &str,
    ) -> Result<Option<i64>> {
        let Some(expected) = remote.pending.take() else {
            return Ok(remote.last_modified);
        };
        let info = match self.fetch(&remote.src, &remote.path, None, original)? {
            Fetched::Body(info) => info,
            Fetched::NotModified => {
                return Err(step_error(
                    original,
                    remote.src.span,
                    format!(
                        "ADD {}: the server answered 304 Not Modified to an unconditional GET",
                        remote.src.value
                    ),
                ));
            }
        };
        if expected != info.digest.to_string() {
            let hint = if spec.checksum.is_some() {
                "the file changed on the server, or --checksum is wrong"
            } else {
                "the file changed on the server during the build: build again"
            };
            return Err(Error::Step {
                instruction: first_line(original),
                span: remote.src.span,
                message: format!(
                    "ADD {}: checksum mismatch: expected {expected}, got {}",
                    remote.src.value, info.digest
                ),
                hint: Some(hint.into()),
            });
        }
        if spec.checksum.is_none() {
            remote.last_modified = info.last_modified;
        }
        Ok(info.last_modified)
    }

    /// One GET of an ADD source into `path` (created or truncated).
    fn fetch(
        &self,
        src: &pybuild_dockerfile::Spanned<String>,
        path: &std::path::Path,
        known: Option<&Validators>,
        original: &str,
    ) -> Result<Fetched> {
        let fail = |message: String| step_error(original, src.span, message);
        let Some(downloader) = self.downloader else {
            return Err(fail(format!(
                "ADD {}: this build cannot download",
                src.value
            )));
        };
        let mut file = fs::File::create(path).map_err(|e| fail(e.to_string()))?;
        downloader
            .download(&src.value, known, &mut file)
            .map_err(|e| fail(format!("ADD {}: {e}", src.value)))
    }

    /// A cached layer's creation time, unless SOURCE_DATE_EPOCH pins every time.
    fn created_time(&self, recorded: Option<i64>) -> i64 {
        match self.options.source_date_epoch {
            Some(epoch) => epoch,
            None => recorded.unwrap_or(self.now),
        }
    }

    /// The time given to directories a step creates (part of the key, since it ends
    /// up in the layer): `SOURCE_DATE_EPOCH` when set, else a constant, so that a
    /// cache hit does not depend on when the first build ran.
    fn now_for_dirs(&self) -> i64 {
        self.options.source_date_epoch.unwrap_or(0)
    }

    /// ADD of a local archive: extract it into the destination `dest` (created as a
    /// directory, with or without a trailing `/`, as BuildKit's `unpack` does with
    /// `MkdirAll(dest)`) instead of copying it. `Some(())` when it was an archive.
    fn try_unpack(
        &self,
        path: &std::path::Path,
        dest: &[String],
        builder: &mut DiffBuilder<'_>,
    ) -> io::Result<Option<()>> {
        let Some(_) = archive_reader(path)? else {
            return Ok(None);
        };
        // The archive goes *into* the destination directory.
        let comps = builder.resolve(dest, true)?;
        builder.ensure_dir(&comps)?;
        let target = builder.root_path().join(comps.join("/"));
        let Some(reader) = archive_reader(path)? else {
            return Ok(None);
        };
        pybuild_layer::apply_layer(
            reader,
            &target,
            &ApplyOptions {
                mode: ApplyMode::Merge,
                same_owner: true,
                allow_devices: ApplyOptions::for_this_process(ApplyMode::Merge).allow_devices,
            },
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(Some(()))
    }

    /// Resolve one context source into a group per match.
    fn context_group(
        &self,
        src: &pybuild_dockerfile::Spanned<String>,
        exclude: &PatternMatcher,
        groups: &mut Vec<Group>,
        content_key: &mut ListHasher,
        original: &str,
    ) -> Result<()> {
        let ctx_err = |e: pybuild_context::Error| Error::Step {
            instruction: first_line(original),
            span: src.span,
            message: e.to_string(),
            hint: matches!(e, pybuild_context::Error::SourceNotFound { .. }).then(|| {
                "the path is relative to the build context; check it exists there and that \
                 .dockerignore does not exclude it"
                    .to_string()
            }),
        };
        let matches = self.context.resolve(&src.value).map_err(ctx_err)?;
        for m in matches {
            let entries = self.context.walk(&m, exclude).map_err(ctx_err)?;
            let mut group_entries = Vec::new();
            for e in entries {
                let rel = if m.rel_path.is_empty() {
                    e.rel_path.clone()
                } else if e.rel_path == m.rel_path {
                    String::new()
                } else {
                    e.rel_path
                        .strip_prefix(&format!("{}/", m.rel_path))
                        .unwrap_or(&e.rel_path)
                        .to_string()
                };
                let (content, what) = match &e.kind {
                    EntryKind::Dir => (Content::Dir, json!("dir")),
                    EntryKind::File { digest, .. } => {
                        (Content::File(e.path.clone()), json!({"file": digest}))
                    }
                    EntryKind::Symlink { target } => {
                        (Content::Symlink(target.clone()), json!({"symlink": target}))
                    }
                    _ => continue,
                };
                content_key.push(json!([m.rel_path, rel, what, e.mode]));
                group_entries.push(GroupEntry {
                    rel,
                    content,
                    mode: e.mode,
                    // Files from the context belong to root unless --chown says
                    // otherwise (BuildKit does not keep the host's owners).
                    uid: 0,
                    gid: 0,
                    mtime: (e.mtime, e.mtime_nsec),
                });
            }
            // A symlinked source keeps the name it was asked by (BuildKit copies
            // `alink` as `alink`, not as its target's name).
            let name = m.requested.rsplit('/').next().unwrap_or("").to_string();
            groups.push(Group {
                remote: false,
                name,
                path: m.requested.clone(),
                is_dir: m.is_dir,
                entries: group_entries,
            });
        }
        Ok(())
    }

    /// Replace the layers above the base by one layer with the same merged content;
    /// their history entries stay, all but the last marked `empty_layer`.
    fn squash(&mut self, state: &mut State) -> Result<()> {
        let new = &state.layers[state.base_layers..];
        let key = key_of(
            &state.key,
            json!({"op": "squash",
                   "layers": new.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
                   "layer": self.layer_settings()}),
        );
        let layer = match self.cached(&key)? {
            Some((Some(layer), _)) => layer,
            _ => {
                let dirs: Vec<PathBuf> = new
                    .iter()
                    .map(|l| self.store.snapshot_path(&l.diff_id))
                    .collect();
                let refs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
                let dir = self.store.temp_dir()?;
                squash::squash(&refs, dir.path()).map_err(|e| Error::BadImage {
                    image: "squashed layer".into(),
                    message: e.to_string(),
                })?;
                self.commit(dir, &key)?
            }
        };
        state.layers.truncate(state.base_layers);
        state.layers.push(layer);
        let base_history = state.base_history.min(state.config.history.len());
        let ours = &mut state.config.history[base_history..];
        // The squashed layer is attributed to the last step that made a layer.
        let last = ours.iter().rposition(|h| !h.empty_layer).unwrap_or(0);
        for (i, h) in ours.iter_mut().enumerate() {
            h.empty_layer = i != last;
        }
        Ok(())
    }

    /// Write the target's config and manifest blobs.
    fn write_image(&mut self, mut state: State) -> Result<Solved> {
        if self.options.squash && state.layers.len() > state.base_layers + 1 {
            self.squash(&mut state)?;
        }
        let oci = self.options.oci_mediatypes;
        // The newest layer's time (BuildKit's exporter does the same), so an unchanged
        // rebuild writes the same config and the same image ID.
        let created = time::rfc3339(state.created.unwrap_or(self.now));
        for (k, v) in &self.options.labels {
            state.config.config.labels.insert(k.clone(), v.clone());
        }
        state.config.created = Some(created);
        state.config.architecture = self.platform.architecture.clone();
        state.config.os = self.platform.os.clone();
        state.config.variant = self.platform.variant.clone();
        state.config.rootfs.kind = "layers".into();
        state.config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        let config_bytes = canonical_json(&state.config);
        let (config_digest, config_size) = self.store.put_blob(&config_bytes)?;
        let layers = state
            .layers
            .iter()
            .map(|l| {
                Descriptor::new(
                    layer_media_type(&l.media_type, oci),
                    l.digest.clone(),
                    l.size,
                )
            })
            .collect();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(
                if oci {
                    media_type::OCI_MANIFEST
                } else {
                    media_type::DOCKER_MANIFEST
                }
                .into(),
            ),
            config: Descriptor::new(
                if oci {
                    media_type::OCI_CONFIG
                } else {
                    media_type::DOCKER_CONFIG
                },
                config_digest.clone(),
                config_size,
            ),
            layers,
            annotations: Default::default(),
        };
        let (digest, size) = self.store.put_json(&manifest)?;
        self.progress.event(&Event::ImageWritten {
            digest: digest.clone(),
        });
        let mut descriptor = Descriptor::new(
            manifest.media_type.clone().unwrap_or_default(),
            digest,
            size,
        );
        descriptor.platform = Some(self.platform.clone());
        Ok(Solved {
            manifest: descriptor,
            config_digest,
            config: state.config,
            base_images: std::mem::take(&mut self.base_images),
            cached_steps: self.cached_steps,
            fs_steps: self.fs_steps,
        })
    }
}

/// The file name ADD gives a download: the URL path's last segment (BuildKit's HTTP
/// source), `index.html` when the path ends in `/`.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    match after_scheme.split_once('/') {
        Some((_, p)) => match p.rsplit('/').next() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => "index.html".to_string(),
        },
        None => "index.html".to_string(),
    }
}

/// ADD's archive detection (docker's `archive.IsArchivePath`): the file is a tar,
/// plain or compressed with gzip, bzip2, xz or zstd (told by content, never by name),
/// when its decompressed stream starts with a tar header. Returns the decompressed
/// stream, or `None` for any other file, which ADD then copies as it is.
fn archive_reader(path: &std::path::Path) -> io::Result<Option<Box<dyn io::Read>>> {
    use io::Read;
    use pybuild_layer::Detected;
    let open = || -> io::Result<Box<dyn io::Read>> {
        let file = io::BufReader::new(fs::File::open(path)?);
        let mut head = [0u8; pybuild_layer::DETECT_LEN];
        let n = fs::File::open(path)?.read(&mut head)?;
        Ok(match pybuild_layer::detect_compression(&head[..n]) {
            Detected::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            Detected::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
            Detected::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
            Detected::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
            Detected::Plain => Box::new(file),
        })
    };
    // A tar's first header block carries the `ustar` magic at offset 257 (POSIX and
    // GNU formats; pre-POSIX v7 archives are not recognized, as in most tools).
    let mut block = [0u8; 512];
    let mut reader = open()?;
    let mut n = 0;
    while n < block.len() {
        match reader.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(r) => n += r,
            // Not decodable as what its magic claims: not an archive, copy it.
            Err(_) => return Ok(None),
        }
    }
    if n < 262 || &block[257..262] != b"ustar" {
        return Ok(None);
    }
    open().map(Some)
}

/// A list of canonical JSON values, hashed as it is built: a COPY of 100,000 files
/// must not hold 100,000 JSON trees to compute its key. The key holds the digest of
/// the values' canonical encodings, one per line, with their count.
#[derive(Default)]
struct ListHasher {
    hasher: sha2::Sha256,
    count: u64,
}

impl ListHasher {
    fn push(&mut self, value: serde_json::Value) {
        use sha2::Digest as _;
        self.hasher.update(canonical_json(&value));
        self.hasher.update(b"\n");
        self.count += 1;
    }

    fn finish(self) -> serde_json::Value {
        use sha2::Digest as _;
        json!({
            "count": self.count,
            "sha256": Digest::from_sha256(self.hasher.finalize().into()),
        })
    }
}

/// A layer's media type in the requested flavour (the blob is the same either way).
fn layer_media_type(stored: &str, oci: bool) -> String {
    use media_type::*;
    let gzip = stored == OCI_LAYER_GZIP || stored == DOCKER_LAYER_GZIP;
    let plain = stored == OCI_LAYER_TAR || stored == pybuild_layer::DOCKER_LAYER_TAR;
    match (gzip, plain, oci) {
        (true, _, true) => OCI_LAYER_GZIP.into(),
        (true, _, false) => DOCKER_LAYER_GZIP.into(),
        (_, true, true) => OCI_LAYER_TAR.into(),
        (_, true, false) => pybuild_layer::DOCKER_LAYER_TAR.into(),
        _ => stored.into(),
    }
}

/// One source of a COPY, resolved: its entries relative to the match.
struct Group {
    /// The match's base name (a file source's name in a directory destination).
    name: String,
    /// Downloaded from a URL (ADD unpacks those only with an explicit `--unpack`).
    remote: bool,
    /// The match's path as requested (for `--parents`), `/`-separated.
    path: String,
    is_dir: bool,
    entries: Vec<GroupEntry>,
}

struct GroupEntry {
    rel: String,
    content: Content,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
}

/// An `ADD <url>` source of a step being solved.
struct RemoteSource {
    /// Its entry in the step's content key.
    key: serde_json::Value,
    /// Where its body is, or goes once fetched.
    path: PathBuf,
    /// `Last-Modified` (the file's mtime), when known.
    last_modified: Option<i64>,
    /// `Some(digest)` while the body is not fetched: the content the key names.
    pending: Option<String>,
    src: pybuild_dockerfile::Spanned<String>,
    /// Holds `path`; removed when the step is done.
    _dir: pybuild_store::TempDir,
}

/// What the last download of a URL said: a cache record under
/// [`http_record_key`]. No blobs, no snapshots: it only saves a download.
#[derive(Debug, Serialize, Deserialize)]
struct HttpRecord {
    v: u32,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(
        rename = "lastModified",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_modified: Option<i64>,
}

/// The cache-record key of a URL's [`HttpRecord`] (the URL itself is not stored).
fn http_record_key(url: &str) -> Digest {
    Digest::of(&canonical_json(&json!({
        "v": CACHE_KEY_VERSION,
        "op": "http-validators",
        "url": url,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: a change to the key encoding (field names, version, canonical JSON)
    /// silently invalidates or, worse, aliases every user's cache; it must be a
    /// deliberate change that also bumps `CACHE_KEY_VERSION`.
    #[test]
    fn cache_key_encoding_is_stable() {
        let parent = Digest::of(b"parent");
        let key = key_of(
            &parent,
            json!({"op": "copy", "items": [["app/x", {"file": "sha256:00"}, 420, 0, 0]]}),
        );
        assert_eq!(
            key.to_string(),
            "sha256:ffb21f979592337b59cfef7bbc37296475018729b4db9be525fbf6a8b3bc38d0"
        );
        // Object key order never matters: the encoding is canonical.
        let reordered = key_of(
            &parent,
            json!({"items": [["app/x", {"file": "sha256:00"}, 420, 0, 0]], "op": "copy"}),
        );
        assert_eq!(key, reordered);
        assert_ne!(key, key_of(&Digest::of(b"other"), json!({"op": "copy"})));
    }

    #[test]
    fn layer_media_types_follow_the_requested_flavour() {
        use media_type::*;
        assert_eq!(layer_media_type(OCI_LAYER_GZIP, false), DOCKER_LAYER_GZIP);
        assert_eq!(layer_media_type(DOCKER_LAYER_GZIP, true), OCI_LAYER_GZIP);
        assert_eq!(layer_media_type(OCI_LAYER_ZSTD, false), OCI_LAYER_ZSTD);
    }
}
