//! [`Builder`]: the one-call build API for programs that embed pybuild.
//!
//! ```no_run
//! // In `main`, before anything else (RUN steps re-execute the program):
//! pybuild::sandbox_init_if_requested();
//!
//! let built = pybuild::Builder::new("fixtures/python-app")
//!     .tag("my-python-app")
//!     .build_arg("PIP_INDEX_URL", "http://127.0.0.1:3141/simple")
//!     .registry_mirror("docker.io", "127.0.0.1:5000")
//!     .on_event(|event| eprintln!("{event:?}"))
//!     .build()?;
//! println!("{}", built.image_id);
//! # Ok::<(), pybuild::Error>(())
//! ```
//!
//! Everything the command line can do is reachable here; the CLI itself resolves its
//! options into the same [`BuildRequest`] this type fills in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::{BuildRequest, BuildResult, CancelToken, Event, Output, SecretSource};
use crate::registry::RegistrySettings;
use crate::{DockerfileSource, Error, PlanOptions, Result};

/// A progress sink made from a closure.
struct FnProgress<F>(F);

impl<F: Fn(&Event) + Send + Sync> crate::build::Progress for FnProgress<F> {
    fn event(&self, event: &Event) {
        (self.0)(event)
    }
}

/// Builds one image: set the options, then call [`Builder::build`].
pub struct Builder {
    context: PathBuf,
    dockerfile: Option<PathBuf>,
    dockerfile_text: Option<String>,
    plan: PlanOptions,
    solve: crate::build::SolveOptions,
    tags: Vec<String>,
    outputs: Vec<Output>,
    push: bool,
    registry: RegistrySettings,
    root: Option<PathBuf>,
    iidfile: Option<PathBuf>,
    metadata_file: Option<PathBuf>,
    cancel: Option<CancelToken>,
    sandbox_program: Option<PathBuf>,
    progress: Option<Arc<dyn crate::build::Progress>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("context", &self.context)
            .field("dockerfile", &self.dockerfile)
            .field("tags", &self.tags)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A build of the context directory `context`, with `context/Dockerfile`.
    pub fn new(context: impl Into<PathBuf>) -> Self {
        Self {
            context: context.into(),
            dockerfile: None,
            dockerfile_text: None,
            plan: PlanOptions::default(),
            solve: crate::build::SolveOptions::default(),
            tags: Vec::new(),
            outputs: Vec::new(),
            push: false,
            registry: RegistrySettings::default(),
            root: None,
            iidfile: None,
            metadata_file: None,
            cancel: None,
            sandbox_program: None,
            progress: None,
        }
    }

    /// Use this Dockerfile instead of `context/Dockerfile` (`-f`).
    pub fn dockerfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.dockerfile = Some(path.into());
        self
    }

    /// Use this Dockerfile text (`-f -`).
    pub fn dockerfile_text(mut self, text: impl Into<String>) -> Self {
        self.dockerfile_text = Some(text.into());
        self
    }

    /// Name the image in the store (`-t`); repeatable.
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tags.push(name.into());
        self
    }

    /// A build argument (`--build-arg NAME=VALUE`).
    pub fn build_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.plan.build_args.push((name.into(), value.into()));
        self
    }

    /// The stage to build (`--target`).
    pub fn target(mut self, stage: impl Into<String>) -> Self {
        self.plan.target = Some(stage.into());
        self
    }

    /// The platform to build for (`--platform os/arch[/variant]`).
    pub fn platform(mut self, platform: &str) -> Result<Self> {
        let parsed = crate::Platform::parse(platform).map_err(|reason| Error::Invalid {
            what: "platform",
            reason,
        })?;
        self.plan.target_platform = Some(parsed);
        Ok(self)
    }

    /// A label on the image (`--label`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.solve.labels.push((key.into(), value.into()));
        self
    }

    /// Also write the image (or its file system) here (`--output`).
    pub fn output(mut self, output: Output) -> Self {
        self.outputs.push(output);
        self
    }

    /// Push every tag to its registry after the build (`--push`).
    pub fn push(mut self, yes: bool) -> Self {
        self.push = yes;
        self
    }

    /// Do every step, whatever the cache holds (`--no-cache`).
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.solve.no_cache = yes;
        self
    }

    /// Resolve base images in their registry even when the store has them (`--pull`).
    pub fn pull(mut self, yes: bool) -> Self {
        self.solve.pull = yes;
        self
    }

    /// Merge the Dockerfile's layers into one (`--squash`).
    pub fn squash(mut self, yes: bool) -> Self {
        self.solve.squash = yes;
        self
    }

    /// Layer compression.
    pub fn compression(mut self, compression: crate::build::Compression) -> Self {
        self.solve.compression = compression;
        self
    }

    /// Pin every time in the image (`SOURCE_DATE_EPOCH`), for reproducible digests.
    pub fn source_date_epoch(mut self, seconds: i64) -> Self {
        self.solve.source_date_epoch = Some(seconds);
        self
    }

    /// A secret for `RUN --mount=type=secret,id=ID` (`--secret`).
    pub fn secret(mut self, id: impl Into<String>, source: SecretSource) -> Self {
        self.solve.secrets.insert(id, source);
        self
    }

    /// Pull `host`'s images through `mirror` first (`--registry-mirror`).
    pub fn registry_mirror(mut self, host: impl Into<String>, mirror: impl Into<String>) -> Self {
        self.registry.mirrors.push((host.into(), mirror.into()));
        self
    }

    /// The registry settings file (`--config`).
    pub fn registry_config(mut self, file: impl Into<PathBuf>) -> Self {
        self.registry.config_file = Some(file.into());
        self
    }

    /// The store directory (`--root`); default [`crate::store::Store::default_root`].
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// Write the image ID here (`--iidfile`).
    pub fn iidfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.iidfile = Some(path.into());
        self
    }

    /// Write BuildKit-style metadata here (`--metadata-file`).
    pub fn metadata_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.metadata_file = Some(path.into());
        self
    }

    /// Stop the build when this token is cancelled (from another thread).
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The program RUN steps re-execute as their sandbox's init (default: the current
    /// executable, whose `main` must call [`crate::sandbox_init_if_requested`]).
    pub fn sandbox_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.sandbox_program = Some(program.into());
        self
    }

    /// Receive every progress [`Event`] (called from the build's threads).
    pub fn on_event(mut self, sink: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(FnProgress(sink)));
        self
    }

    /// Receive progress through a [`crate::build::Progress`] implementation.
    pub fn progress(mut self, sink: Arc<dyn crate::build::Progress>) -> Self {
        self.progress = Some(sink);
        self
    }

    /// The request this builder describes (what the CLI builds itself).
    pub fn request(&self) -> Result<BuildRequest> {
        let (dockerfile, dockerfile_path) = match (&self.dockerfile_text, &self.dockerfile) {
            (Some(text), _) => (DockerfileSource::from_bytes("-", text.as_bytes()), None),
            (None, Some(path)) => (DockerfileSource::read(path)?, Some(path.clone())),
            (None, None) => {
                let path = self.context.join("Dockerfile");
                (DockerfileSource::read(&path)?, Some(path))
            }
        };
        let mut outputs = vec![Output::Store {
            names: self.tags.clone(),
        }];
        outputs.extend(self.outputs.iter().cloned());
        if self.push {
            outputs.push(Output::Push {
                names: self.tags.clone(),
            });
        }
        Ok(BuildRequest {
            dockerfile,
            dockerfile_path,
            context_dir: Some(self.context.clone()),
            plan: self.plan.clone(),
            solve: self.solve.clone(),
            outputs,
            iidfile: self.iidfile.clone(),
            metadata_file: self.metadata_file.clone(),
            registry: self.registry.clone(),
            sandbox_program: self.sandbox_program.clone(),
            cancel: self.cancel.clone(),
        })
    }

    /// Run the build.
    pub fn build(self) -> Result<BuildResult> {
        let request = self.request()?;
        let store = crate::open_store(self.root.as_deref().map(Path::new))?;
        let progress: Arc<dyn crate::build::Progress> = match &self.progress {
            Some(p) => p.clone(),
            None => Arc::new(crate::build::NoProgress),
        };
        crate::build::build(&store, &request, progress.as_ref())
    }
}
