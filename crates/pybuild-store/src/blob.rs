//! Content-addressed blobs: `ROOT/blobs/sha256/<hex>`, written once, read-only.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use pybuild_oci::{Digest, Sha256Writer, canonical_json};
use serde::Serialize;

use crate::Store;
use crate::error::{Error, io_err};
use crate::fsutil::{TempFile, write_atomic};

/// The largest blob [`Store::read_blob`] reads into memory (64 MiB). Manifests,
/// indexes and configs are far smaller; layers are streamed with
/// [`Store::open_blob`].
pub const READ_BLOB_LIMIT: u64 = 64 << 20;

/// Mode of a committed blob: content-addressed files must never change in place.
const BLOB_MODE: u32 = 0o444;

/// Streams a new blob into a temp file under `ROOT/tmp`, hashing as it goes.
/// [`commit`](BlobWriter::commit) checks the digest and moves the file into
/// `blobs/`; dropping the writer without committing removes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    // Declared before `temp` so the file is closed before the guard unlinks it.
    writer: Option<Sha256Writer<BufWriter<File>>>,
    // `None` only once committed.
    temp: Option<TempFile>,
    temp_path: PathBuf,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.count())
    }

    /// Finish the blob: flush and fsync it, compare its digest with `expected` (when
    /// given) and, only if they agree, rename it to `blobs/sha256/<hex>` (replacing
    /// an identical — or damaged — copy already there) read-only. On a mismatch
    /// the temp file is removed and nothing becomes visible.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let temp_path = self.temp_path.clone();
        let writer = self.writer.take().ok_or_else(|| Error::Io {
            path: temp_path.clone(),
            source: io::Error::other("blob writer already finished"),
        })?;
        let (digest, size, buffered) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| io_err(&temp_path)(e.into_error()))?;
        if let Some(expected) = expected {
            if *expected != digest {
                // `self` drops here and removes the temp file.
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.blobs_dir.join(digest.hex());
        let temp = self.temp.take().ok_or_else(|| Error::Io {
            path: temp_path.clone(),
            source: io::Error::other("blob writer already finished"),
        })?;
        temp.persist(Some(file), &dest, BLOB_MODE)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Where the blob with digest `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir(d).join(d.hex())
    }

    fn blobs_dir(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm())
    }

    /// Whether the blob exists (its content is not re-hashed; see [`Store::verify`]).
    pub fn has_blob(&self, d: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(d)).is_ok_and(|m| m.is_file())
    }

    /// Start streaming a new blob. The writer holds a [`Lease`](crate::Lease) until it
    /// is committed or dropped.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let mut temp = TempFile::create(&self.tmp_dir(), "blob", self.lease()?)?;
        let file = temp.take_file()?;
        Ok(BlobWriter {
            writer: Some(Sha256Writer::new(BufWriter::with_capacity(1 << 16, file))),
            temp_path: temp.path().to_path_buf(),
            temp: Some(temp),
            blobs_dir: self.root.join("blobs").join("sha256"),
        })
    }

    /// Store `bytes` as a blob; returns its digest and size. Content already present
    /// (same digest, same size) is not written again.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), Error> {
        let digest = Digest::of(bytes);
        let size = bytes.len() as u64;
        let dest = self.blob_path(&digest);
        let present = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size);
        if !present {
            write_atomic(&self.tmp_dir(), self.lease()?, &dest, bytes, BLOB_MODE)?;
        }
        Ok((digest, size))
    }

    /// Stream a blob from `reader` (to its end). With `expected`, content that hashes
    /// differently is refused ([`Error::DigestMismatch`]) and leaves no trace.
    pub fn put_blob_from(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), Error> {
        let mut writer = self.blob_writer()?;
        let temp_path = writer.temp_path.clone();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // Read and write errors are told apart: a failing source (network,
            // decompressor) is not a store problem.
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Error::Read { source }),
            };
            let chunk = buf.get(..n).unwrap_or(&buf);
            writer.write_all(chunk).map_err(io_err(&temp_path))?;
        }
        writer.commit(expected)
    }

    /// Store a value as a blob in [`canonical_json`] form (stable digests).
    pub fn put_json<T: Serialize>(&self, value: &T) -> Result<(Digest, u64), Error> {
        self.put_blob(&canonical_json(value))
    }

    /// Read a whole blob into memory, verifying that it still hashes to `d` (so
    /// on-disk corruption is reported as [`Error::Corrupt`], never returned as
    /// content). Refuses blobs over [`READ_BLOB_LIMIT`]: this is for JSON documents.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(d);
        let file = self.open_blob(d)?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size > READ_BLOB_LIMIT {
            return Err(Error::TooLarge {
                digest: d.clone(),
                size,
                limit: READ_BLOB_LIMIT,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // `take` guards against a file that grows after the size check.
        file.take(READ_BLOB_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > READ_BLOB_LIMIT {
            return Err(Error::TooLarge {
                digest: d.clone(),
                size: bytes.len() as u64,
                limit: READ_BLOB_LIMIT,
            });
        }
        check_content(&path, d, Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// Open a blob for streaming (not verified; layers are verified by whoever
    /// consumes them, or by [`Store::verify`]).
    pub fn open_blob(&self, d: &Digest) -> Result<File, Error> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {d}"),
                }
            } else {
                io_err(&path)(source)
            }
        })
    }
}

/// The digest of a blob file's content, streamed.
pub(crate) fn hash_file(path: &Path) -> Result<Digest, Error> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256Writer::new(io::sink());
    io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hasher.finish().0)
}

fn check_content(path: &Path, expected: &Digest, actual: Digest) -> Result<(), Error> {
    if *expected == actual {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("content hashes to {actual}, not {expected}"),
        })
    }
}
