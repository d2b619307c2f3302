//! Pushing an image (or a multi-platform index) from the local store.
//!
//! Per blob (config and layers, in parallel, bounded), following the
//! distribution spec's "Pushing blobs":
//! 1. `HEAD /v2/<name>/blobs/<digest>`: 200 means the registry has it; skip.
//! 2. With a mount source, `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`:
//!    201 means mounted; 202 opens an ordinary upload session (its `Location` is used).
//! 3. Otherwise `POST /v2/<name>/blobs/uploads/` opens a session (202 + `Location`).
//! 4. A blob up to the chunk size goes in one `PUT <location>?digest=<digest>`; a larger
//!    one in `PATCH`es with `Content-Range: <start>-<end>` (inclusive offsets), each
//!    answer's `Location` used for the next request, and a final `PUT ?digest=`.
//!
//! Blobs stream from the store's files; a layer is never held in memory. A failed
//! upload (dropped connection, 5xx) starts over from the `HEAD`, since the registry
//! may have completed it. Manifests go last, children of an index by digest before
//! the index under the tag, each with its media type as `Content-Type`.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pybuild_oci::{Descriptor, Digest, ImageIndex, ImageManifest, from_json, media_type};
use pybuild_store::Store;
use reqwest::StatusCode;
use reqwest::blocking::{Body, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};

use crate::client::{Client, Ctx};
use crate::config::Endpoint;
use crate::pull::{expect_success, for_each_concurrent};
use crate::{Error, Event, Progress, Reference};

/// Settings of a push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs larger than this are uploaded in chunks of this size (16 MiB).
    pub chunk_size: u64,
    /// Blobs uploaded at the same time (3).
    pub concurrency: usize,
    /// A repository on the same registry that holds the blobs already (the image
    /// was pulled from or pushed to it): blobs are mounted from it instead of
    /// uploaded, where the registry allows.
    pub mount_from: Option<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            chunk_size: 16 << 20,
            concurrency: 3,
            mount_from: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// The digest of the manifest (or index) put under the tag.
    pub digest: Digest,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Blobs mounted from [`PushOptions::mount_from`].
    pub mounted: usize,
}

/// Push the image (manifest or index) `desc` from `store` to `reference` (its tag,
/// `latest` by default; a digest-only reference pushes by digest).
pub fn push(
    client: &Client,
    store: &Store,
    desc: &Descriptor,
    reference: &Reference,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushResult, Error> {
    let mut ctx = Ctx::new(&reference.registry, &reference.repository, true);
    if let Some(from) = &options.mount_from {
        ctx.scopes.push(format!("repository:{from}:pull"));
    }
    if let Some(d) = &reference.digest {
        if *d != desc.digest {
            return Err(ctx.protocol(
                "push",
                format!("the reference names {d} but the image is {}", desc.digest),
            ));
        }
    }
    let ep = client
        .endpoints(&reference.registry, false)
        .pop()
        .ok_or_else(|| ctx.protocol("push", "no endpoint"))?;

    // The manifests to push, children before the index.
    let mut manifests: Vec<Descriptor> = Vec::new();
    if media_type::is_index(&desc.media_type) {
        let index: ImageIndex = read_json(store, &ctx, desc)?;
        for child in index.manifests {
            if !media_type::is_manifest(&child.media_type) {
                return Err(ctx.protocol(
                    "push",
                    format!(
                        "index entry {} is a {}, not an image manifest",
                        child.digest, child.media_type
                    ),
                ));
            }
            manifests.push(child);
        }
    } else if !media_type::is_manifest(&desc.media_type) {
        return Err(ctx.protocol(
            "push",
            format!(
                "{} is a {}, not a manifest or index",
                desc.digest, desc.media_type
            ),
        ));
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    let singles: Vec<&Descriptor> = if manifests.is_empty() {
        vec![desc]
    } else {
        manifests.iter().collect()
    };
    for m in &singles {
        let manifest: ImageManifest = read_json(store, &ctx, m)?;
        for b in std::iter::once(manifest.config).chain(manifest.layers) {
            if seen.insert(b.digest.clone()) {
                blobs.push(b);
            }
        }
    }

    let uploaded = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let mounted = AtomicUsize::new(0);
    for_each_concurrent(&blobs, options.concurrency, |blob| {
        let outcome = push_blob(client, store, &ep, &ctx, blob, options, progress)?;
        match outcome {
            Outcome::Skipped => &skipped,
            Outcome::Mounted => &mounted,
            Outcome::Uploaded => &uploaded,
        }
        .fetch_add(1, Ordering::SeqCst);
        Ok(())
    })?;

    for m in &manifests {
        put_manifest(client, store, &ep, &ctx, m, &m.digest.to_string(), progress)?;
    }
    let target = match (&reference.digest, reference.tag_or_latest()) {
        (_, Some(tag)) => tag.to_string(),
        (Some(d), None) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    put_manifest(client, store, &ep, &ctx, desc, &target, progress)?;
    Ok(PushResult {
        digest: desc.digest.clone(),
        uploaded: uploaded.into_inner(),
        skipped: skipped.into_inner(),
        mounted: mounted.into_inner(),
    })
}

fn read_json<T: for<'de> serde::Deserialize<'de>>(
    store: &Store,
    ctx: &Ctx,
    desc: &Descriptor,
) -> Result<T, Error> {
    let bytes = store.read_blob(&desc.digest)?;
    from_json("manifest", &bytes).map_err(|e| Error::InvalidContent {
        registry: ctx.registry.clone(),
        repository: ctx.repository.clone(),
        what: format!("local {}", desc.digest),
        reason: e.to_string(),
    })
}

fn put_manifest(
    client: &Client,
    store: &Store,
    ep: &Endpoint,
    ctx: &Ctx,
    desc: &Descriptor,
    target: &str,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let bytes = store.read_blob(&desc.digest)?;
    let op = format!("PUT manifest {target}");
    let url = ep.api_url(&ctx.repository, &format!("manifests/{target}"));
    let resp = client.send(ep, ctx, &op, true, progress, &|http| {
        Ok(http
            .put(&url)
            .header(CONTENT_TYPE, desc.media_type.as_str())
            .body(bytes.clone()))
    })?;
    let resp = expect_success(ctx, &op, &format!("manifest {target}"), resp)?;
    // The registry names what it stored; it must be what we sent.
    if let Some(d) = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok())
    {
        if d != desc.digest {
            return Err(Error::DigestMismatch {
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                what: format!("pushed manifest {target}"),
                expected: desc.digest.clone(),
                actual: d,
            });
        }
    }
    progress.event(&Event::ManifestPushed {
        digest: desc.digest.clone(),
        reference: target.to_string(),
    });
    Ok(())
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded,
}

fn push_blob(
    client: &Client,
    store: &Store,
    ep: &Endpoint,
    ctx: &Ctx,
    blob: &Descriptor,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    if !store.has_blob(&blob.digest) {
        return Err(Error::Store(pybuild_store::Error::NotFound {
            what: format!("blob {}", blob.digest),
        }));
    }
    let mut attempt = 0;
    loop {
        match try_push_blob(client, store, ep, ctx, blob, options, progress) {
            Ok(o) => return Ok(o),
            Err(e) => {
                let transient = matches!(&e, Error::Transport { .. })
                    || matches!(&e, Error::Status { status, .. } if *status >= 500);
                if !transient || attempt >= client.options().retries {
                    return Err(e);
                }
                attempt += 1;
                progress.event(&Event::Retry {
                    operation: format!("upload blob {}", blob.digest),
                    attempt: attempt + 1,
                    reason: e.to_string(),
                });
                std::thread::sleep(client.backoff(attempt - 1));
            }
        }
    }
}

fn blob_exists(
    client: &Client,
    ep: &Endpoint,
    ctx: &Ctx,
    digest: &Digest,
    progress: &dyn Progress,
) -> Result<bool, Error> {
    let op = format!("HEAD blob {digest}");
    let url = ep.api_url(&ctx.repository, &format!("blobs/{digest}"));
    let resp = client.send(ep, ctx, &op, true, progress, &|http| Ok(http.head(&url)))?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(ctx.status_error(&op, resp)),
    }
}

fn try_push_blob(
    client: &Client,
    store: &Store,
    ep: &Endpoint,
    ctx: &Ctx,
    blob: &Descriptor,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let d = &blob.digest;
    if blob_exists(client, ep, ctx, d, progress)? {
        progress.event(&Event::BlobSkipped {
            digest: d.clone(),
            size: blob.size,
        });
        return Ok(Outcome::Skipped);
    }
    let uploads = ep.api_url(&ctx.repository, "blobs/uploads/");
    let mut location = None;
    if let Some(from) = options
        .mount_from
        .as_deref()
        .filter(|f| *f != ctx.repository)
    {
        let op = format!("mount blob {d} from {from}");
        let mut url = parse_url(ctx, &op, &uploads)?;
        url.query_pairs_mut()
            .append_pair("mount", &d.to_string())
            .append_pair("from", from);
        let resp = client.send(ep, ctx, &op, true, progress, &|http| {
            Ok(http.post(url.clone()).header(CONTENT_LENGTH, "0"))
        })?;
        match resp.status() {
            StatusCode::CREATED => {
                progress.event(&Event::BlobMounted {
                    digest: d.clone(),
                    from: from.to_string(),
                });
                return Ok(Outcome::Mounted);
            }
            // Not mountable (the blob is not there, or the registry does not
            // mount): the answer is an ordinary upload session.
            StatusCode::ACCEPTED => location = Some(session_location(ctx, &op, &uploads, &resp)?),
            _ => {}
        }
    }
    let mut location = match location {
        Some(l) => l,
        None => {
            let op = format!("start upload of blob {d}");
            let resp = client.send(ep, ctx, &op, true, progress, &|http| {
                Ok(http.post(&uploads).header(CONTENT_LENGTH, "0"))
            })?;
            if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
                return Err(ctx.status_error(&op, resp));
            }
            session_location(ctx, &op, &uploads, &resp)?
        }
    };

    progress.event(&Event::BlobStarted {
        digest: d.clone(),
        size: blob.size,
    });
    let chunk = options.chunk_size.max(1);
    let upload_timeout = |len: u64| {
        // The whole request must finish in this time; allow 256 KiB/s on top of
        // the idle timeout.
        client.options().read_timeout + Duration::from_secs(len / (256 << 10))
    };
    let mut offset = 0u64;
    if blob.size > chunk {
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let op = format!("upload blob {d} bytes {offset}-{}", offset + len - 1);
            let url = location.clone();
            // The body is re-opened for every attempt (an authentication retry
            // needs it again).
            let resp = client.send(ep, ctx, &op, false, progress, &|http| {
                let body = Body::sized(open_at(store, d, offset)?.take(len), len);
                Ok(http
                    .patch(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                    .header(CONTENT_LENGTH, len.to_string())
                    .timeout(upload_timeout(len))
                    .body(body))
            })?;
            if !resp.status().is_success() {
                return Err(ctx.status_error(&op, resp));
            }
            location = session_location(ctx, &op, location.as_str(), &resp).unwrap_or(location);
            offset += len;
            progress.event(&Event::BlobProgress {
                digest: d.clone(),
                done: offset,
                size: blob.size,
            });
        }
    }
    let op = format!("upload blob {d}");
    let mut url = location;
    url.query_pairs_mut().append_pair("digest", &d.to_string());
    let remaining = blob.size - offset;
    let resp = client.send(ep, ctx, &op, false, progress, &|http| {
        let rb = http
            .put(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, remaining.to_string())
            .timeout(upload_timeout(remaining));
        Ok(if remaining > 0 {
            rb.body(Body::sized(open_at(store, d, offset)?, remaining))
        } else {
            rb
        })
    })?;
    // 201 is the spec's answer; some registries say 202 or 204.
    if !resp.status().is_success() {
        return Err(ctx.status_error(&op, resp));
    }
    progress.event(&Event::BlobDone {
        digest: d.clone(),
        transferred: blob.size,
    });
    Ok(Outcome::Uploaded)
}

/// The blob's file, positioned at `offset`.
fn open_at(store: &Store, d: &Digest, offset: u64) -> Result<std::fs::File, Error> {
    let mut file = store.open_blob(d)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| pybuild_store::Error::Io {
            path: store.blob_path(d),
            source: e,
        })?;
    Ok(file)
}

fn parse_url(ctx: &Ctx, op: &str, url: &str) -> Result<reqwest::Url, Error> {
    reqwest::Url::parse(url).map_err(|e| ctx.protocol(op, format!("bad URL: {e}")))
}

/// The upload session URL from `Location`, resolved against the request URL
/// (registries may send a relative path).
fn session_location(
    ctx: &Ctx,
    op: &str,
    base: &str,
    resp: &Response,
) -> Result<reqwest::Url, Error> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ctx.protocol(op, "upload answer without Location"))?;
    parse_url(ctx, op, base)?
        .join(loc)
        .map_err(|e| ctx.protocol(op, format!("bad Location: {e}")))
}
