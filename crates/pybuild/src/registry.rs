//! Registries as the build and the `pull`/`push`/`login`/`logout` commands use them:
//! settings (the TOML file plus command-line mirrors), credentials (docker's
//! `config.json`), and the image source the solver pulls missing base images from.

use std::path::PathBuf;
use std::sync::Arc;

use pybuild_oci::{Descriptor, Platform};
use pybuild_registry::{
    Client, ClientOptions, Credentials, DockerAuth, Progress as RegistryProgress, PushOptions,
    Reference, RegistryConfig,
};
use pybuild_store::{BoxError, Store};

use crate::{Error, Result};

pub use pybuild_registry::NoProgress;

/// Registry settings for one run.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// `--config FILE` / `PYBUILD_CONFIG`; `None` looks in the default places.
    pub config_file: Option<PathBuf>,
    /// `--registry-mirror HOST=MIRROR`, tried before the settings file's mirrors.
    pub mirrors: Vec<(String, String)>,
}

impl RegistrySettings {
    /// A client for these settings, with docker's credentials.
    pub fn client(&self) -> Result<Client> {
        let mut config = RegistryConfig::load(self.config_file.as_deref())?;
        for (host, mirror) in &self.mirrors {
            config.add_mirror(host, mirror);
        }
        Ok(Client::with_options(
            config,
            Arc::new(DockerAuth::default_location()),
            ClientOptions::from_env(),
        ))
    }
}

/// The name an image is kept under in the local store: docker's short form with a tag
/// (`python:3.11-slim` for `docker.io/library/python:3.11-slim`, `app:latest` for `app`),
/// so every spelling of one reference finds the same image.
pub fn local_name(name: &str) -> String {
    match Reference::parse(name) {
        Ok(reference) => pybuild_store::normalize_tag(&reference.familiar()),
        Err(_) => pybuild_store::normalize_tag(name),
    }
}

/// The solver's image source: pulls through a registry client.
pub(crate) struct RegistrySource {
    pub(crate) client: Client,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource").finish_non_exhaustive()
    }
}

impl pybuild_solver::ImageSource for RegistrySource {
    fn local_name(&self, name: &str) -> String {
        local_name(name)
    }

    fn pull(
        &self,
        store: &Store,
        name: &str,
        platform: &Platform,
        on_bytes: &(dyn Fn(&pybuild_oci::Digest, u64, u64) + Sync),
    ) -> Result<Descriptor, BoxError> {
        let reference = Reference::parse(name)?;
        let progress = |event: &pybuild_registry::Event| {
            if let pybuild_registry::Event::BlobProgress { digest, done, size } = event {
                on_bytes(digest, *done, *size);
            }
        };
        let pulled = pybuild_registry::pull(&self.client, store, &reference, platform, &progress)?;
        record_sources(store, &pulled.descriptor, &reference);
        Ok(pulled.descriptor)
    }
}

impl pybuild_solver::Downloader for RegistrySource {
    fn download(
        &self,
        url: &str,
        known: Option<&pybuild_solver::Validators>,
        out: &mut dyn std::io::Write,
    ) -> Result<pybuild_solver::Fetched, BoxError> {
        let fetched = pybuild_registry::download_if_changed(
            &self.client,
            url,
            known.and_then(|k| k.etag.as_deref()),
            known.and_then(|k| k.last_modified),
            out,
        )?;
        Ok(match fetched {
            None => pybuild_solver::Fetched::NotModified,
            Some(d) => pybuild_solver::Fetched::Body(pybuild_solver::DownloadInfo {
                digest: d.digest,
                last_modified: d.last_modified,
                etag: d.etag,
            }),
        })
    }
}

/// Where the store's blobs are known to exist in registries (`registry/repository`
/// per blob digest), learnt from pulls and pushes: a push to another repository of
/// the same registry mounts them from there instead of uploading (what containerd
/// records as `distribution.source` labels). Losing an entry only costs an upload,
/// so the file is rewritten atomically without a lock.
fn sources_file(store: &Store) -> PathBuf {
    store.root().join("state").join("blob-sources.json")
}

fn read_sources(store: &Store) -> std::collections::BTreeMap<String, Vec<String>> {
    std::fs::read(sources_file(store))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Remember that the blobs of `desc` exist in `reference`'s repository.
fn record_sources(store: &Store, desc: &Descriptor, reference: &Reference) {
    let Ok(image) = store.image(desc, None) else {
        return;
    };
    let repo = reference.name();
    let mut sources = read_sources(store);
    for digest in image
        .manifest
        .layers
        .iter()
        .map(|l| &l.digest)
        .chain(std::iter::once(&image.config_descriptor.digest))
    {
        let entry = sources.entry(digest.to_string()).or_default();
        if !entry.contains(&repo) {
            entry.push(repo.clone());
            // A few repositories per blob are plenty.
            if entry.len() > 8 {
                entry.remove(0);
            }
        }
    }
    let file = sources_file(store);
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = crate::atomic::write(&file, &pybuild_oci::canonical_json(&sources));
}

/// A repository of `reference`'s registry, other than its own, holding the first
/// layer of `desc` (the client mounts every blob from it, uploading what it lacks).
fn mount_source(store: &Store, desc: &Descriptor, reference: &Reference) -> Option<String> {
    let image = store.image(desc, None).ok()?;
    let first = image.manifest.layers.first()?;
    let prefix = format!("{}/", reference.registry);
    read_sources(store)
        .get(&first.digest.to_string())?
        .iter()
        .rev()
        .find(|r| r.starts_with(&prefix) && **r != reference.name())
        .map(|r| r[prefix.len()..].to_string())
}

/// `pybuild pull NAME`: fetch an image for `platform` and tag it locally.
pub fn pull(
    store: &Store,
    settings: &RegistrySettings,
    name: &str,
    platform: &Platform,
    progress: &dyn RegistryProgress,
) -> Result<(String, Descriptor)> {
    let reference = Reference::parse(name)?;
    let client = settings.client()?;
    let pulled = pybuild_registry::pull(&client, store, &reference, platform, progress)?;
    let local = local_name(name);
    store.set_tag(&local, &pulled.descriptor)?;
    record_sources(store, &pulled.descriptor, &reference);
    Ok((local, pulled.descriptor))
}

/// `pybuild push NAME [DEST]` and `build --push`: send a local image to a registry.
/// Returns the pushed reference and the manifest digest the registry stored.
pub fn push(
    store: &Store,
    settings: &RegistrySettings,
    name: &str,
    dest: Option<&str>,
    progress: &dyn RegistryProgress,
) -> Result<(String, pybuild_registry::PushResult)> {
    let local = local_name(name);
    let desc = store
        .resolve(&local)?
        .ok_or_else(|| Error::ImageNotFound { name: name.into() })?;
    let reference = Reference::parse(dest.unwrap_or(name))?;
    push_descriptor(store, settings, &desc, &reference, progress)
}

pub(crate) fn push_descriptor(
    store: &Store,
    settings: &RegistrySettings,
    desc: &Descriptor,
    reference: &Reference,
    progress: &dyn RegistryProgress,
) -> Result<(String, pybuild_registry::PushResult)> {
    let client = settings.client()?;
    let options = PushOptions {
        mount_from: mount_source(store, desc, reference),
        ..PushOptions::default()
    };
    let result = pybuild_registry::push(&client, store, desc, reference, &options, progress)?;
    record_sources(store, desc, reference);
    Ok((reference.to_string(), result))
}

/// `pybuild login`: store the credentials in docker's `config.json` (where docker,
/// podman and skopeo also read them). They are checked by the next pull or push.
pub fn login(registry: &str, username: &str, password: &str) -> Result<PathBuf> {
    let auth = DockerAuth::default_location();
    auth.store_credentials(registry, &Credentials::basic(username, password))?;
    Ok(auth.path().to_path_buf())
}

/// `pybuild logout`: forget the credentials for `registry`; whether there were any.
pub fn logout(registry: &str) -> Result<bool> {
    Ok(DockerAuth::default_location().remove_credentials(registry)?)
}
