//! `build`: a Dockerfile and a context directory in, an image in the store (and any
//! requested exports) out.
//!
//! This is the library's one-call entry point for builds: it plans the graph, opens
//! the context with its `.dockerignore` and stat cache, runs the solver, tags the
//! result only once the whole image is in the store, and writes the outputs.

use std::path::{Path, PathBuf};

use pybuild_context::{Context, PatternMatcher};
use pybuild_oci::{Descriptor, Digest};
use pybuild_store::Store;

pub use pybuild_layer::Compression;
pub use pybuild_sandbox::CancelToken;
pub use pybuild_solver::{Event, NoProgress, Progress, SecretSource, Secrets, SolveOptions};

use crate::registry::{RegistrySettings, RegistrySource, local_name};
use crate::{DockerfileSource, Error, PlanOptions, Result};

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The image, tagged in the local store under these names (none: untagged).
    Store {
        /// Image names (`-t`, or `type=image,name=...`).
        names: Vec<String>,
    },
    /// The image as an OCI image layout directory (`type=oci,dest=DIR,tar=false`).
    OciDir(PathBuf),
    /// The image as an OCI layout tar archive (`type=oci,dest=FILE`).
    OciArchive(PathBuf),
    /// The image as a `docker load`-able tar archive (`type=docker,dest=FILE`).
    DockerArchive(PathBuf),
    /// The root file system, written into a directory (`type=local,dest=DIR`).
    LocalDir(PathBuf),
    /// The root file system as a tar archive (`type=tar,dest=FILE`).
    RootfsTar(PathBuf),
    /// The image pushed to a registry under each of these names (`--push`,
    /// `type=image,push=true`, `type=registry`).
    Push {
        /// Full image references.
        names: Vec<String>,
    },
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// Where the Dockerfile is on disk (for `<Dockerfile>.dockerignore`), if it is a file.
    pub dockerfile_path: Option<PathBuf>,
    /// The build context directory; `None` builds with an empty context.
    pub context_dir: Option<PathBuf>,
    /// Build args, target and platform.
    pub plan: PlanOptions,
    /// Cache, compression and reproducibility settings.
    pub solve: SolveOptions,
    /// What to produce. The image always lands in the store; tags come from
    /// [`Output::Store`].
    pub outputs: Vec<Output>,
    /// `--iidfile`: write the image ID (config digest) here.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`: write BuildKit-style build metadata (JSON) here.
    pub metadata_file: Option<PathBuf>,
    /// Registry settings for pulling base images and pushing.
    pub registry: RegistrySettings,
    /// The program RUN steps re-execute as their sandbox's init: one whose `main`
    /// calls [`crate::sandbox_init_if_requested`] first (the pybuild binary does).
    /// `None`: the current executable.
    pub sandbox_program: Option<PathBuf>,
    /// Set it (from a Ctrl-C handler, say) to stop the running step.
    pub cancel: Option<CancelToken>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image manifest's descriptor.
    pub manifest: Descriptor,
    /// The image ID: the config digest, as docker shows it.
    pub image_id: Digest,
    /// The names it was tagged with in the store.
    pub tags: Vec<String>,
    /// Base images, as written, with the digests they resolved to.
    pub base_images: Vec<(String, Digest)>,
    /// Filesystem steps that came from the cache.
    pub cached_steps: usize,
    /// All filesystem steps.
    pub fs_steps: usize,
}

/// The stat cache file of a context directory: one per canonical context path, in the
/// store's `state/` directory.
fn stat_cache_file(store: &Store, context_dir: &Path) -> PathBuf {
    let canonical = context_dir
        .canonicalize()
        .unwrap_or_else(|_| context_dir.to_path_buf());
    let id = Digest::of(canonical.as_os_str().as_encoded_bytes());
    store
        .root()
        .join("state")
        .join("context-stat")
        .join(format!("{}.json", id.hex()))
}

/// Run a build: plan `request.dockerfile` with `request.plan`, then
/// [`build_planned`].
pub fn build(
    store: &Store,
    request: &BuildRequest,
    progress: &dyn Progress,
) -> Result<BuildResult> {
    let graph = crate::plan(&request.dockerfile, &request.plan)?;
    build_planned(store, request, &graph, progress)
}

/// Run a build whose graph the caller already planned (with
/// [`crate::plan_with_warnings`], to show the warnings first): `graph` must be
/// `request.dockerfile` planned with `request.plan`, which is not consulted again.
pub fn build_planned(
    store: &Store,
    request: &BuildRequest,
    graph: &crate::BuildGraph,
    progress: &dyn Progress,
) -> Result<BuildResult> {
    let empty;
    let context_dir = match &request.context_dir {
        Some(dir) => dir.as_path(),
        None => {
            empty = store.temp_dir()?;
            empty.path()
        }
    };
    let (patterns, _) =
        pybuild_context::load_dockerignore(context_dir, request.dockerfile_path.as_deref())
            .map_err(Error::Context)?;
    let matcher = PatternMatcher::new(&patterns).map_err(Error::Context)?;
    let mut context = Context::new(context_dir, matcher).map_err(Error::Context)?;
    if request.context_dir.is_some() {
        let file = stat_cache_file(store, context_dir);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        context = context.with_stat_cache(file);
    }
    let source = RegistrySource {
        client: request.registry.client()?,
    };
    let program = match &request.sandbox_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|source| Error::Read {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?,
    };
    let sandbox = pybuild_sandbox::NamespaceSandbox::new(program);
    let backends = pybuild_solver::Backends {
        progress,
        images: Some(&source),
        downloader: Some(&source),
        sandbox: Some(&sandbox),
        cancel: request.cancel.clone(),
    };
    let solved = pybuild_solver::solve(store, &context, graph, &request.solve, &backends).map_err(
        |error| Error::Build {
            name: request.dockerfile.name.clone(),
            text: request.dockerfile.text.clone(),
            error: Box::new(error),
        },
    )?;

    let mut tags = Vec::new();
    for output in &request.outputs {
        match output {
            Output::Store { names } => {
                for name in names {
                    let tag = local_name(name);
                    store.set_tag(&tag, &solved.manifest)?;
                    tags.push(tag);
                }
            }
            Output::Push { .. } => {}
            other => crate::export::write_output(store, &solved.manifest, &tags, other)?,
        }
    }
    // Pushes last: the image is complete and tagged locally whatever the registry does.
    let mut pushed = Vec::new();
    for output in &request.outputs {
        if let Output::Push { names } = output {
            for name in names {
                let reference = pybuild_registry::Reference::parse(name)?;
                let on_event = |event: &pybuild_registry::Event| {
                    if let pybuild_registry::Event::BlobProgress { digest, done, size } = event {
                        progress.event(&Event::Transfer {
                            id: None,
                            digest: digest.clone(),
                            done: *done,
                            total: *size,
                        });
                    }
                };
                let (full, result) = crate::registry::push_descriptor(
                    store,
                    &request.registry,
                    &solved.manifest,
                    &reference,
                    &on_event,
                )?;
                progress.event(&Event::Pushed {
                    name: full.clone(),
                    digest: result.digest.clone(),
                });
                pushed.push(full);
            }
        }
    }
    if let Some(path) = &request.iidfile {
        crate::atomic::write(path, solved.config_digest.to_string().as_bytes())?;
    }
    if let Some(path) = &request.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": solved.manifest.digest,
            "containerimage.config.digest": solved.config_digest,
            "containerimage.descriptor": solved.manifest,
        });
        // The base images as resolved, so a build can be pinned to them.
        let bases: serde_json::Map<String, serde_json::Value> = solved
            .base_images
            .iter()
            .map(|(name, digest)| (name.clone(), serde_json::json!(digest)))
            .collect();
        if !bases.is_empty() {
            meta["pybuild.base-images"] = serde_json::Value::Object(bases);
        }
        let names: Vec<String> = tags.iter().chain(&pushed).cloned().collect();
        if !names.is_empty() {
            meta["image.name"] = serde_json::Value::String(names.join(","));
        }
        let mut text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        text.push(b'\n');
        crate::atomic::write(path, &text)?;
    }
    Ok(BuildResult {
        manifest: solved.manifest,
        image_id: solved.config_digest,
        tags,
        base_images: solved.base_images,
        cached_steps: solved.cached_steps,
        fs_steps: solved.fs_steps,
    })
}
