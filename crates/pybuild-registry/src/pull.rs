//! Resolving references and pulling images into the local store.
//!
//! Manifests are negotiated with `Accept` listing the OCI index and manifest and
//! Docker's schema2 manifest and manifest list (distribution-spec "Pulling
//! manifests"); the body is hashed and compared with the digest asked for or, for a
//! tag, with `Docker-Content-Digest` when the registry sends one. Manifests are
//! refused past 4 MiB (the limit the distribution spec suggests registries
//! enforce). Blobs stream into [`pybuild_store::BlobWriter`], which only makes them
//! visible once their digest matches; a body longer than the descriptor's size is
//! cut off and rejected; a dropped connection resumes with `Range: bytes=N-` when the
//! registry answers 206, and starts over otherwise.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pybuild_oci::{
    Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform, from_json, media_type,
};
use pybuild_store::{Lease, Store};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};

use crate::client::{Client, Ctx};
use crate::config::Endpoint;
use crate::{Error, Event, Progress, Reference};

/// Largest manifest or index accepted.
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// Largest image config accepted (configs are read into memory).
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// Most layers an image may have. Docker refuses more than 125 and an overlay mount
/// cannot stack many more; a manifest listing thousands is hostile or broken.
pub const LAYER_LIMIT: usize = 1000;
/// The slowest blob transfer accepted, in bytes per second, measured over a
/// read-timeout window (see the blob loop): slower is treated as a stalled connection.
pub const MIN_RATE: u64 = 1024;
/// Layers downloaded at the same time.
pub const PULL_CONCURRENCY: usize = 3;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A reference resolved to one platform's manifest and config.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference resolved.
    pub reference: Reference,
    /// The platform-specific manifest's digest.
    pub manifest_digest: Digest,
    /// Its media type (OCI or Docker).
    pub manifest_media_type: String,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The manifest exactly as received (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    /// The image config.
    pub config: ImageConfig,
    /// The config exactly as received.
    pub config_bytes: Vec<u8>,
    /// The index the tag pointed at, for multi-platform images.
    pub index_digest: Option<Digest>,
    /// The index's media type and bytes.
    pub index: Option<(String, Vec<u8>)>,
    /// The platform chosen (from the index entry, else the config).
    pub platform: Platform,
    /// The endpoint that answered (a mirror or the registry).
    pub endpoint: Endpoint,
}

/// An image pulled into the store (not tagged: the caller tags).
#[derive(Debug)]
pub struct PulledImage {
    /// The platform manifest's descriptor (with its platform), ready for `set_tag`.
    pub descriptor: Descriptor,
    /// The config's digest (the image ID).
    pub config_digest: Digest,
    /// The index's descriptor when the tag named a multi-platform index (stored, but
    /// not complete: only one platform's blobs were pulled).
    pub index: Option<Descriptor>,
    /// Keeps the store's prune away from the new blobs until dropped; drop it after
    /// tagging.
    pub lease: Lease,
}

/// `os/arch[/variant]`.
pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether an index entry's platform satisfies the wanted one. A wanted variant
/// must match (arm64's `v8` also matches an entry without variant, its default); no
/// wanted variant accepts any.
fn platform_matches(want: &Platform, have: &Platform) -> bool {
    if want.os != have.os || want.architecture != have.architecture {
        return false;
    }
    match (&want.variant, &have.variant) {
        (None, _) => true,
        (Some(w), Some(h)) => w == h,
        (Some(w), None) => want.architecture == "arm64" && w == "v8",
    }
}

/// Resolve `reference` to `platform`'s manifest and config, trying mirrors first.
pub fn resolve(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<Resolved, Error> {
    let ctx = Ctx::new(&reference.registry, &reference.repository, false);
    let endpoints = client.endpoints(&reference.registry, true);
    let mut last_err = None;
    for ep in &endpoints {
        match resolve_at(client, ep, &ctx, reference, platform, progress) {
            Ok(r) => return Ok(r),
            // A digest problem or missing platform is about the image, not the
            // endpoint: another endpoint would not help (and a mirror must not be
            // able to turn an error into a different image).
            Err(e @ (Error::NoMatchingPlatform { .. } | Error::DigestMismatch { .. }))
                if !ep.mirror =>
            {
                return Err(e);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| ctx.protocol("resolve", "no endpoint")))
}

fn resolve_at(
    client: &Client,
    ep: &Endpoint,
    ctx: &Ctx,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<Resolved, Error> {
    let api_ref = reference.api_reference();
    let (mt, bytes, digest) = fetch_manifest(
        client,
        ep,
        ctx,
        &api_ref,
        reference.digest.as_ref(),
        progress,
    )?;
    progress.event(&Event::Resolved {
        reference: reference.to_string(),
        digest: digest.clone(),
        host: ep.host.clone(),
    });
    let what = format!("manifest {api_ref}");
    let invalid = |reason: String| Error::InvalidContent {
        registry: ctx.registry.clone(),
        repository: ctx.repository.clone(),
        what: what.clone(),
        reason,
    };
    let (index_digest, index, mt, bytes, digest, chosen) = if media_type::is_index(&mt) {
        let idx: ImageIndex = from_json("index", &bytes).map_err(|e| invalid(e.to_string()))?;
        let mut available = Vec::new();
        let mut chosen = None;
        for d in &idx.manifests {
            if !media_type::is_manifest(&d.media_type) {
                continue;
            }
            let Some(p) = &d.platform else { continue };
            // BuildKit's attestation manifests are listed as unknown/unknown.
            if p.os == "unknown" {
                continue;
            }
            let name = platform_string(p);
            if !available.contains(&name) {
                available.push(name);
            }
            if chosen.is_none() && platform_matches(platform, p) {
                chosen = Some(d.clone());
            }
        }
        let Some(chosen) = chosen else {
            return Err(Error::NoMatchingPlatform {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                reference: api_ref,
                platform: platform_string(platform),
                available,
            });
        };
        let (cmt, cbytes, cdigest) = fetch_manifest(
            client,
            ep,
            ctx,
            &chosen.digest.to_string(),
            Some(&chosen.digest),
            progress,
        )?;
        if !media_type::is_manifest(&cmt) {
            return Err(invalid(format!(
                "index entry {} is a {cmt}, not an image manifest",
                chosen.digest
            )));
        }
        (
            Some(digest),
            Some((mt, bytes)),
            cmt,
            cbytes,
            cdigest,
            Some(chosen),
        )
    } else if media_type::is_manifest(&mt) {
        (None, None, mt, bytes, digest, None)
    } else {
        return Err(invalid(format!("unsupported media type {mt}")));
    };
    let manifest: ImageManifest =
        from_json("manifest", &bytes).map_err(|e| invalid(e.to_string()))?;
    if ![media_type::OCI_CONFIG, media_type::DOCKER_CONFIG]
        .contains(&manifest.config.media_type.as_str())
    {
        return Err(invalid(format!(
            "its config is a {}, not an image config (an artifact, not an image)",
            manifest.config.media_type
        )));
    }
    if manifest.layers.len() > LAYER_LIMIT {
        return Err(invalid(format!(
            "{} layers, more than the {LAYER_LIMIT} allowed",
            manifest.layers.len()
        )));
    }
    let config_bytes = fetch_small_blob(client, ep, ctx, &manifest.config, CONFIG_LIMIT, progress)?;
    let config: ImageConfig =
        from_json("config", &config_bytes).map_err(|e| Error::InvalidContent {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: format!("config {}", manifest.config.digest),
            reason: e.to_string(),
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidContent {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: format!("config {}", manifest.config.digest),
            reason: format!(
                "it lists {} diff IDs for the manifest's {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let platform = chosen.and_then(|d| d.platform).unwrap_or_else(|| Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        os_version: config.os_version.clone(),
        os_features: config.os_features.clone(),
        variant: config.variant.clone(),
    });
    Ok(Resolved {
        reference: reference.clone(),
        manifest_digest: digest,
        manifest_media_type: mt,
        manifest,
        manifest_bytes: bytes,
        config,
        config_bytes,
        index_digest,
        index,
        platform,
        endpoint: ep.clone(),
    })
}

/// GET a manifest; returns (media type, bytes, digest), verified.
pub(crate) fn fetch_manifest(
    client: &Client,
    ep: &Endpoint,
    ctx: &Ctx,
    api_ref: &str,
    expected: Option<&Digest>,
    progress: &dyn Progress,
) -> Result<(String, Vec<u8>, Digest), Error> {
    let op = format!("GET manifest {api_ref}");
    let url = ep.api_url(&ctx.repository, &format!("manifests/{api_ref}"));
    let resp = client.send(ep, ctx, &op, true, progress, &|http| {
        Ok(http.get(&url).header(ACCEPT, MANIFEST_ACCEPT))
    })?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(Error::NotFound {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                what: format!("manifest {api_ref}"),
            });
        }
        _ => return Err(ctx.status_error(&op, resp)),
    }
    let too_large = || Error::TooLarge {
        registry: ctx.registry.clone(),
        repository: ctx.repository.clone(),
        what: format!("manifest {api_ref}"),
        limit: MANIFEST_LIMIT,
    };
    if resp.content_length().is_some_and(|n| n > MANIFEST_LIMIT) {
        return Err(too_large());
    }
    let header_digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let mut bytes = Vec::new();
    resp.take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ctx.protocol(&op, format!("reading the body: {e}")))?;
    if bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(too_large());
    }
    let actual = Digest::of(&bytes);
    if let Some(expected) = expected.or(header_digest.as_ref()) {
        if *expected != actual {
            return Err(Error::DigestMismatch {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                what: format!("manifest {api_ref}"),
                expected: expected.clone(),
                actual,
            });
        }
    }
    // The body's own mediaType wins over a generic Content-Type.
    let body_mt = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            if v.get("schemaVersion").and_then(serde_json::Value::as_u64) == Some(1) {
                return Some("schema1".to_string());
            }
            v.get("mediaType")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        });
    let known = |m: &str| media_type::is_manifest(m) || media_type::is_index(m);
    let mt = match (body_mt, content_type) {
        (Some(m), _) if known(&m) => m,
        (_, Some(c)) if known(&c) => c,
        (Some(m), _) if m == "schema1" => {
            return Err(Error::InvalidContent {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                what: format!("manifest {api_ref}"),
                reason: "Docker schema 1 manifests are not supported".into(),
            });
        }
        (m, c) => {
            return Err(Error::InvalidContent {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                what: format!("manifest {api_ref}"),
                reason: format!(
                    "unsupported media type {}",
                    m.or(c).unwrap_or_else(|| "(none)".into())
                ),
            });
        }
    };
    Ok((mt, bytes, actual))
}

/// GET a small blob into memory, size and digest verified.
fn fetch_small_blob(
    client: &Client,
    ep: &Endpoint,
    ctx: &Ctx,
    desc: &Descriptor,
    limit: u64,
    progress: &dyn Progress,
) -> Result<Vec<u8>, Error> {
    if desc.size > limit {
        return Err(Error::TooLarge {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: format!("blob {}", desc.digest),
            limit,
        });
    }
    let op = format!("GET blob {}", desc.digest);
    let url = ep.api_url(&ctx.repository, &format!("blobs/{}", desc.digest));
    let resp = client.send(ep, ctx, &op, true, progress, &|http| Ok(http.get(&url)))?;
    let resp = expect_success(ctx, &op, &format!("blob {}", desc.digest), resp)?;
    let mut bytes = Vec::new();
    resp.take(desc.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ctx.protocol(&op, format!("reading the body: {e}")))?;
    if bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(&bytes);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: format!("blob {}", desc.digest),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// A 2xx response, or the error for the answer (404 → [`Error::NotFound`]).
pub(crate) fn expect_success(
    ctx: &Ctx,
    op: &str,
    what: &str,
    resp: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, Error> {
    if resp.status().is_success() {
        Ok(resp)
    } else if resp.status() == StatusCode::NOT_FOUND {
        Err(Error::NotFound {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: what.to_string(),
        })
    } else {
        Err(ctx.status_error(op, resp))
    }
}

/// Pull `reference` for `platform` into `store`: config and layers (those not
/// already present), then the manifest and, for a multi-platform tag, the index.
/// Nothing is tagged.
pub fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<PulledImage, Error> {
    // Held from before the first blob until the caller has tagged the result.
    let lease = store.lease()?;
    let resolved = resolve(client, reference, platform, progress)?;
    let ctx = Ctx::new(&reference.registry, &reference.repository, false);
    // Endpoints for blobs: the one that served the manifest, then the others.
    let mut endpoints = vec![resolved.endpoint.clone()];
    endpoints.extend(
        client
            .endpoints(&reference.registry, true)
            .into_iter()
            .filter(|e| *e != resolved.endpoint),
    );

    let config_desc = &resolved.manifest.config;
    if store.has_blob(&config_desc.digest) {
        progress.event(&Event::BlobSkipped {
            digest: config_desc.digest.clone(),
            size: config_desc.size,
        });
    } else {
        let (d, _) = store.put_blob(&resolved.config_bytes)?;
        debug_assert_eq!(d, config_desc.digest);
    }

    let layers: Vec<&Descriptor> = resolved.manifest.layers.iter().collect();
    for_each_concurrent(&layers, PULL_CONCURRENCY, |layer| {
        if store.has_blob(&layer.digest) {
            progress.event(&Event::BlobSkipped {
                digest: layer.digest.clone(),
                size: layer.size,
            });
            return Ok(());
        }
        let mut last = None;
        for ep in &endpoints {
            match download_blob(client, store, ep, &ctx, layer, progress) {
                Ok(()) => return Ok(()),
                Err(e @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. }))
                    if !ep.mirror =>
                {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ctx.protocol("GET blob", "no endpoint")))
    })?;

    let (manifest_digest, manifest_size) = store.put_blob(&resolved.manifest_bytes)?;
    debug_assert_eq!(manifest_digest, resolved.manifest_digest);
    let mut descriptor = Descriptor::new(
        resolved.manifest_media_type.clone(),
        manifest_digest,
        manifest_size,
    );
    descriptor.platform = Some(resolved.platform.clone());
    let index = match &resolved.index {
        Some((mt, bytes)) => {
            let (d, size) = store.put_blob(bytes)?;
            Some(Descriptor::new(mt.clone(), d, size))
        }
        None => None,
    };
    Ok(PulledImage {
        descriptor,
        config_digest: config_desc.digest.clone(),
        index,
        lease,
    })
}

/// Run `f` on every item with at most `limit` threads; the first error stops the
/// others from starting new items and is returned.
pub(crate) fn for_each_concurrent<T: Sync>(
    items: &[T],
    limit: usize,
    f: impl Fn(&T) -> Result<(), Error> + Sync,
) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = limit.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::SeqCst);
                        let mut slot = first_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stream one blob into the store, verified, resuming after dropped connections.
fn download_blob(
    client: &Client,
    store: &Store,
    ep: &Endpoint,
    ctx: &Ctx,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let op = format!("GET blob {}", desc.digest);
    let url = ep.api_url(&ctx.repository, &format!("blobs/{}", desc.digest));
    let size_mismatch = |actual: u64| Error::SizeMismatch {
        registry: ctx.registry.clone(),
        repository: ctx.repository.clone(),
        digest: desc.digest.clone(),
        expected: desc.size,
        actual,
    };
    progress.event(&Event::BlobStarted {
        digest: desc.digest.clone(),
        size: desc.size,
    });
    let mut writer = store.blob_writer()?;
    let mut transferred = 0u64;
    let mut interruptions = 0u32;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let offset = writer.written();
        let resp = client.send(ep, ctx, &op, true, progress, &|http| {
            let rb = http.get(&url);
            Ok(if offset > 0 {
                rb.header(RANGE, format!("bytes={offset}-"))
            } else {
                rb
            })
        })?;
        let resp = expect_success(ctx, &op, &format!("blob {}", desc.digest), resp)?;
        if offset > 0 {
            let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
                && resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
            if !resumed {
                // The registry ignored the range: start over with a fresh file.
                writer = store.blob_writer()?;
            }
        }
        let start = writer.written();
        if let Some(len) = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if start + len > desc.size {
                return Err(size_mismatch(start + len));
            }
        }
        let mut resp = resp;
        let mut last_report = start;
        // A server that sends a byte now and then never trips the per-read timeout;
        // a transfer slower than MIN_RATE over a whole read-timeout window is cut and
        // retried (resuming) like a dropped connection.
        let window = client.options().read_timeout;
        let mut window_start = std::time::Instant::now();
        let mut window_bytes = 0u64;
        let outcome = loop {
            if window_start.elapsed() >= window {
                let floor = (MIN_RATE as f64 * window.as_secs_f64()) as u64;
                if window_bytes < floor {
                    break Err(format!(
                        "transfer stalled: {window_bytes} bytes in {:.0} s (less than {} bytes/s)",
                        window.as_secs_f64(),
                        MIN_RATE
                    ));
                }
                window_start = std::time::Instant::now();
                window_bytes = 0;
            }
            match resp.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    window_bytes += n as u64;
                    // Never accept more than the descriptor promises.
                    let total = writer.written() + n as u64;
                    if total > desc.size {
                        return Err(size_mismatch(total));
                    }
                    std::io::Write::write_all(&mut writer, &buf[..n]).map_err(|e| {
                        pybuild_store::Error::Io {
                            path: store.root().join("tmp"),
                            source: e,
                        }
                    })?;
                    transferred += n as u64;
                    if total - last_report >= 1 << 20 {
                        last_report = total;
                        progress.event(&Event::BlobProgress {
                            digest: desc.digest.clone(),
                            done: total,
                            size: desc.size,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        let reason = match outcome {
            Ok(()) if writer.written() == desc.size => break,
            Ok(()) => format!(
                "connection closed after {} of {} bytes",
                writer.written(),
                desc.size
            ),
            Err(e) => e,
        };
        interruptions += 1;
        if interruptions > client.options().retries {
            if writer.written() < desc.size && reason.starts_with("connection closed") {
                return Err(size_mismatch(writer.written()));
            }
            return Err(Error::Transport {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                operation: op,
                reason,
            });
        }
        progress.event(&Event::Retry {
            operation: op.clone(),
            attempt: interruptions + 1,
            reason,
        });
        std::thread::sleep(client.backoff(interruptions - 1));
    }
    writer.commit(Some(&desc.digest)).map_err(|e| match e {
        pybuild_store::Error::DigestMismatch { expected, actual } => Error::DigestMismatch {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            what: format!("blob {expected}"),
            expected,
            actual,
        },
        other => Error::Store(other),
    })?;
    progress.event(&Event::BlobDone {
        digest: desc.digest.clone(),
        transferred,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: os.into(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn platform_matching() {
        assert!(platform_matches(
            &p("linux", "amd64", None),
            &p("linux", "amd64", None)
        ));
        assert!(!platform_matches(
            &p("linux", "amd64", None),
            &p("linux", "arm64", None)
        ));
        assert!(platform_matches(
            &p("linux", "arm", None),
            &p("linux", "arm", Some("v7"))
        ));
        assert!(platform_matches(
            &p("linux", "arm", Some("v7")),
            &p("linux", "arm", Some("v7"))
        ));
        assert!(!platform_matches(
            &p("linux", "arm", Some("v6")),
            &p("linux", "arm", Some("v7"))
        ));
        assert!(platform_matches(
            &p("linux", "arm64", Some("v8")),
            &p("linux", "arm64", None)
        ));
        assert_eq!(
            platform_string(&p("linux", "arm", Some("v7"))),
            "linux/arm/v7"
        );
    }

    #[test]
    fn concurrency_helper_reports_first_error() {
        let items: Vec<u32> = (0..20).collect();
        let seen = AtomicUsize::new(0);
        for_each_concurrent(&items, 3, |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("all ok");
        assert_eq!(seen.load(Ordering::SeqCst), 20);
        let err = for_each_concurrent(&items, 3, |i| {
            if *i == 5 {
                Err(Error::InvalidReference {
                    reference: "x".into(),
                    reason: "boom".into(),
                })
            } else {
                Ok(())
            }
        })
        .expect_err("fails");
        assert!(err.to_string().contains("boom"));
    }
}
