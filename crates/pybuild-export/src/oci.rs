//! OCI image layouts (image-spec v1.1 `image-layout.md`): as a directory and as a
//! tar stream.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use pybuild_oci::{ANNOTATION_REF_NAME, Descriptor, ImageIndex, canonical_json, from_json};
use pybuild_store::Store;

use crate::error::{Error, io_err, out_err};
use crate::util::{self, HashReader};

/// `oci-layout`'s content (image-layout.md: `imageLayoutVersion` "1.0.0").
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// One image to export and the names to give it. Each name becomes one
/// `index.json` entry with an `org.opencontainers.image.ref.name` annotation; an
/// image without names gets one entry without it (reachable by digest only).
pub type NamedImage = (Descriptor, Vec<String>);

/// The `index.json` entries for `images`.
fn index_entries(images: &[NamedImage]) -> Vec<Descriptor> {
    let mut entries = Vec::new();
    for (desc, names) in images {
        let base = util::entry_descriptor(desc);
        if names.is_empty() {
            entries.push(base);
            continue;
        }
        for name in names {
            let mut d = base.clone();
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_string(), name.clone());
            entries.push(d);
        }
    }
    entries
}

/// Every blob of every image, once, sorted by digest (a fixed archive order).
fn all_blobs(store: &Store, images: &[NamedImage]) -> Result<Vec<Descriptor>, Error> {
    let mut blobs = BTreeMap::new();
    for (desc, _) in images {
        for blob in util::closure(store, desc)? {
            blobs.entry(blob.digest.clone()).or_insert(blob);
        }
    }
    Ok(blobs.into_values().collect())
}

/// Write `images` as an OCI image layout in `dir` (created if missing): the
/// `oci-layout` file, `blobs/sha256/<hex>` for every manifest, index, config and
/// layer, and `index.json` with one entry per name
/// (`org.opencontainers.image.ref.name`), so `skopeo inspect oci:DIR:NAME` works.
///
/// An existing layout in `dir` is added to, as `skopeo copy` to `oci:DIR:NAME`
/// does: its other entries stay, entries with one of our names are replaced. Blobs
/// are hard-linked from the store when it is on the same file system (they are
/// read-only and content-addressed there), else copied; each is verified against
/// its digest first. Every file appears atomically (temp file, fsync, rename);
/// `index.json` is written last, so an interrupted export never names a missing
/// blob.
pub fn write_oci_layout_dir(store: &Store, images: &[NamedImage], dir: &Path) -> Result<(), Error> {
    let _lease = store.lease()?;
    let blobs_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(io_err(&blobs_dir))?;
    let layout_path = dir.join("oci-layout");
    match fs::read(&layout_path) {
        Ok(bytes) => {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                    what: layout_path.display().to_string(),
                    source,
                })?;
            let version = v.get("imageLayoutVersion").and_then(|v| v.as_str());
            if version.is_none_or(|v| v.split('.').next() != Some("1")) {
                return Err(Error::InvalidArchive {
                    reason: format!(
                        "{}: unsupported imageLayoutVersion {version:?}",
                        layout_path.display()
                    ),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            util::write_atomic(&layout_path, OCI_LAYOUT)?;
        }
        Err(e) => return Err(io_err(&layout_path)(e)),
    }
    for blob in all_blobs(store, images)? {
        place_blob(store, &blob, &blobs_dir)?;
    }
    util::fsync_dir(&blobs_dir)?;

    let index_path = dir.join("index.json");
    let mut index = match fs::read(&index_path) {
        Ok(bytes) => {
            from_json::<ImageIndex>("index", &bytes).map_err(|e| Error::InvalidArchive {
                reason: format!("{}: {e}", index_path.display()),
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => ImageIndex::new(),
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    let entries = index_entries(images);
    let ours: Vec<&str> = entries
        .iter()
        .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
        .collect();
    index.manifests.retain(|d| {
        !d.annotations
            .get(ANNOTATION_REF_NAME)
            .is_some_and(|n| ours.contains(&n.as_str()))
            && !entries.contains(d)
    });
    index.manifests.extend(entries);
    util::write_atomic(&index_path, &canonical_json(&index))
}

/// Put one blob into `blobs_dir`: verify the store's copy, then hard-link it (or
/// copy it, hashing again as it goes) to a temp name and rename that into place.
fn place_blob(store: &Store, desc: &Descriptor, blobs_dir: &Path) -> Result<(), Error> {
    let src = store.blob_path(&desc.digest);
    let dest = blobs_dir.join(desc.digest.hex());
    let temp = blobs_dir.join(format!(".{}.tmp-{}", desc.digest.hex(), std::process::id()));
    let _ = fs::remove_file(&temp);
    let what = format!("blob {}", desc.digest);
    let result = (|| {
        if fs::hard_link(&src, &temp).is_ok() {
            // Linked: the content is the store's; verify it before it becomes visible.
            let file = File::open(&temp).map_err(io_err(&temp))?;
            let (actual, size) = HashReader::new(file)
                .drain_and_finish()
                .map_err(io_err(&src))?;
            util::check_digest(&what, &desc.digest, actual)?;
            check_size(desc, size)?;
        } else {
            let file = store.open_blob(&desc.digest)?;
            let mut reader = HashReader::new(file);
            let mut out = File::create(&temp).map_err(io_err(&temp))?;
            io::copy(&mut reader, &mut out).map_err(io_err(&temp))?;
            out.sync_all().map_err(io_err(&temp))?;
            let (actual, size) = reader.drain_and_finish().map_err(io_err(&src))?;
            util::check_digest(&what, &desc.digest, actual)?;
            check_size(desc, size)?;
        }
        fs::rename(&temp, &dest).map_err(io_err(&dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn check_size(desc: &Descriptor, size: u64) -> Result<(), Error> {
    if size == desc.size {
        Ok(())
    } else {
        Err(Error::InvalidImage {
            digest: desc.digest.clone(),
            reason: format!("blob is {size} bytes, its descriptor says {}", desc.size),
        })
    }
}

/// Write `images` as an OCI image layout in a tar stream (what `docker buildx build
/// --output type=oci` and `skopeo copy ... oci-archive:FILE` produce). Entries, in
/// this fixed order: `oci-layout`, `index.json`, `blobs/`, `blobs/sha256/`, then the
/// blobs sorted by digest; owner 0:0, mtime 0, so the same images always give the
/// same bytes. Every blob is verified against its digest as it streams.
///
/// Returns the writer. On error, what was written is incomplete: write to a temp
/// file and rename it only on success.
pub fn write_oci_archive<W: Write>(
    store: &Store,
    images: &[NamedImage],
    out: W,
) -> Result<W, Error> {
    let _lease = store.lease()?;
    let blobs = all_blobs(store, images)?;
    let mut index = ImageIndex::new();
    index.manifests = index_entries(images);
    let mut tar = tar::Builder::new(out);
    util::append_bytes(&mut tar, "oci-layout", OCI_LAYOUT)?;
    util::append_bytes(&mut tar, "index.json", &canonical_json(&index))?;
    util::append_dir(&mut tar, "blobs/")?;
    util::append_dir(&mut tar, "blobs/sha256/")?;
    for blob in &blobs {
        let path = format!("blobs/sha256/{}", blob.digest.hex());
        util::append_blob(&mut tar, store, blob, &path)?;
    }
    tar.into_inner().map_err(out_err)
}

/// Read the whole of `reader` into memory, at most `limit` bytes.
pub(crate) fn read_limited(reader: impl Read, limit: u64, member: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Input {
            member: member.to_string(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(Error::InvalidArchive {
            reason: format!("{member} is larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}
