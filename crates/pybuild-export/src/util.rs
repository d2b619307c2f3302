//! Helpers shared by the exporters: a hashing reader, an image's blob closure, tar
//! entries with fixed metadata, atomic file writes.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use pybuild_oci::{
    Descriptor, Digest, ImageIndex, ImageManifest, Sha256Writer, from_json, media_type,
};
use pybuild_store::Store;

use crate::error::{Error, io_err, out_err};

/// How deep indexes may nest (the store's own bound is the same order of magnitude;
/// real images use one level).
const MAX_DEPTH: usize = 8;

/// A reader that hashes and counts everything read through it.
#[derive(Debug)]
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256Writer<io::Sink>,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Writer::new(io::sink()),
        }
    }

    /// Read the rest of the stream (so the digest covers all of it), then return
    /// the digest and the byte count.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let (digest, size, _) = self.hasher.finish();
        Ok((digest, size))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.write_all(buf.get(..n).unwrap_or(buf))?;
        Ok(n)
    }
}

/// Whether a blob described by `desc` with content `bytes` is an index: by media
/// type, or (for descriptors without a useful one) by having a `manifests` array.
fn is_index(desc: &Descriptor, bytes: &[u8]) -> bool {
    if media_type::is_index(&desc.media_type) {
        return true;
    }
    if media_type::is_manifest(&desc.media_type) {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some_and(|m| m.is_array()))
}

/// Every blob of the image `desc` names — the manifest (or index, recursively its
/// manifests), configs and layers — each once, in a stable order (parents before
/// children). Manifests and indexes are read verified; configs and layers are only
/// listed.
pub(crate) fn closure(store: &Store, desc: &Descriptor) -> Result<Vec<Descriptor>, Error> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk(store, desc, 0, &mut out, &mut seen)?;
    Ok(out)
}

fn walk(
    store: &Store,
    desc: &Descriptor,
    depth: usize,
    out: &mut Vec<Descriptor>,
    seen: &mut HashSet<Digest>,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidImage {
            digest: desc.digest.clone(),
            reason: format!("indexes nested more than {MAX_DEPTH} deep"),
        });
    }
    if !seen.insert(desc.digest.clone()) {
        return Ok(());
    }
    out.push(plain(desc));
    let bytes = store.read_blob(&desc.digest)?;
    let decode = |e: pybuild_oci::Error| Error::InvalidImage {
        digest: desc.digest.clone(),
        reason: e.to_string(),
    };
    if is_index(desc, &bytes) {
        let index: ImageIndex = from_json("index", &bytes).map_err(decode)?;
        for child in &index.manifests {
            walk(store, child, depth + 1, out, seen)?;
        }
    } else {
        let manifest: ImageManifest = from_json("manifest", &bytes).map_err(decode)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if seen.insert(blob.digest.clone()) {
                out.push(plain(blob));
            }
        }
    }
    Ok(())
}

/// A descriptor without annotations or platform: what a blob is, for copying it.
fn plain(desc: &Descriptor) -> Descriptor {
    Descriptor::new(desc.media_type.clone(), desc.digest.clone(), desc.size)
}

/// A descriptor fit for an `index.json` entry: the store's own tag annotation
/// dropped (the caller sets the names it exports under).
pub(crate) fn entry_descriptor(desc: &Descriptor) -> Descriptor {
    let mut d = desc.clone();
    d.annotations.remove(pybuild_oci::ANNOTATION_REF_NAME);
    d
}

/// A tar header for a regular file or directory with fixed metadata: owner 0:0,
/// mtime 0, mode 0644 (files) or 0755 (directories). Fixed so the same image gives
/// the same archive bytes.
pub(crate) fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Append a directory entry.
pub(crate) fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<(), Error> {
    let mut h = header(tar::EntryType::Directory, 0);
    tar.append_data(&mut h, path, io::empty()).map_err(out_err)
}

/// Append a file from memory.
pub(crate) fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), Error> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes).map_err(out_err)
}

/// Append a store blob as `path`, verifying its digest and size while it streams.
/// A blob that turns out to be damaged fails the export (the partial archive is the
/// caller's to discard).
pub(crate) fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    desc: &Descriptor,
    path: &str,
) -> Result<(), Error> {
    let file = store.open_blob(&desc.digest)?;
    let blob_path = store.blob_path(&desc.digest);
    let size = file.metadata().map_err(io_err(&blob_path))?.len();
    if size != desc.size {
        return Err(Error::InvalidImage {
            digest: desc.digest.clone(),
            reason: format!("blob is {size} bytes, its descriptor says {}", desc.size),
        });
    }
    let mut reader = HashReader::new(file.take(size));
    let mut h = header(tar::EntryType::Regular, size);
    tar.append_data(&mut h, path, &mut reader)
        .map_err(out_err)?;
    let (actual, _) = reader.drain_and_finish().map_err(io_err(&blob_path))?;
    check_digest(&format!("blob {}", desc.digest), &desc.digest, actual)
}

/// Compare digests, naming what was checked.
pub(crate) fn check_digest(what: &str, expected: &Digest, actual: Digest) -> Result<(), Error> {
    if *expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.clone(),
            actual,
        })
    }
}

/// Write `bytes` to `dest` atomically: a temp file in the same directory, fsynced,
/// renamed over `dest`, the directory fsynced.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&temp).map_err(io_err(&temp))?;
        f.write_all(bytes).map_err(io_err(&temp))?;
        f.sync_all().map_err(io_err(&temp))?;
        fs::rename(&temp, dest).map_err(io_err(dest))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// fsync a directory so a rename in it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
