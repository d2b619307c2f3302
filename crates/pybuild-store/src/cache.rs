//! Build-cache records: `ROOT/cache/<key hex>.json`.

use std::fs;
use std::io;
use std::path::PathBuf;

use pybuild_oci::Digest;

use crate::Store;
use crate::error::{Error, io_err};
use crate::fsutil::write_atomic;

/// What a cache record keeps alive through a prune.
#[derive(Debug, Default)]
pub(crate) struct CacheRefs {
    pub(crate) blobs: Vec<Digest>,
    pub(crate) snapshots: Vec<Digest>,
}

/// Read the `blobs` and `snapshots` arrays of a record (see
/// [`Store::put_cache_record`]).
pub(crate) fn parse_cache_refs(bytes: &[u8]) -> Result<CacheRefs, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_string())?;
    let digests = |key: &str| -> Result<Vec<Digest>, String> {
        let Some(list) = object.get(key) else {
            return Ok(Vec::new());
        };
        let list = list
            .as_array()
            .ok_or_else(|| format!("{key:?} is not an array"))?;
        list.iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| format!("{key:?} holds a non-string"))?
                    .parse::<Digest>()
                    .map_err(|e| format!("{key:?}: {e}"))
            })
            .collect()
    };
    Ok(CacheRefs {
        blobs: digests("blobs")?,
        snapshots: digests("snapshots")?,
    })
}

impl Store {
    pub(crate) fn cache_record_path(&self, key: &Digest) -> PathBuf {
        self.cache_dir().join(format!("{}.json", key.hex()))
    }

    /// Store (or replace) the build-cache record for `key`, atomically.
    ///
    /// The content belongs to the caller, with one contract the store relies on:
    /// it is a JSON object whose optional top-level `"blobs"` array lists, as
    /// `"sha256:..."` strings, every blob the record needs (layers, configs,
    /// manifests: the store does not follow references *from* these blobs), and whose
    /// optional `"snapshots"` array lists the diff IDs of the snapshots it needs.
    /// [`Store::prune`] keeps exactly those alive for as long as the record exists
    /// (unless `PruneOptions::all`, which drops every record). A record that breaks
    /// the contract is refused with [`Error::InvalidCacheRecord`].
    pub fn put_cache_record(&self, key: &Digest, bytes: &[u8]) -> Result<(), Error> {
        parse_cache_refs(bytes).map_err(|reason| Error::InvalidCacheRecord {
            key: key.clone(),
            reason,
        })?;
        write_atomic(
            &self.tmp_dir(),
            self.lease()?,
            &self.cache_record_path(key),
            bytes,
            0o644,
        )
    }

    /// The record stored for `key`, if any.
    pub fn get_cache_record(&self, key: &Digest) -> Result<Option<Vec<u8>>, Error> {
        let path = self.cache_record_path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Delete the record for `key` (for a caller that finds it stale); whether one
    /// existed.
    pub fn remove_cache_record(&self, key: &Digest) -> Result<bool, Error> {
        let path = self.cache_record_path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_record_contract() {
        let d = Digest::of(b"x");
        let ok = format!(r#"{{"blobs":["{d}"],"snapshots":["{d}"],"other":1}}"#);
        let refs = parse_cache_refs(ok.as_bytes()).expect("valid");
        assert_eq!(refs.blobs, std::slice::from_ref(&d));
        assert_eq!(refs.snapshots, [d]);
        assert!(parse_cache_refs(b"{}").is_ok());
        assert!(parse_cache_refs(b"[]").is_err());
        assert!(parse_cache_refs(b"nope").is_err());
        assert!(parse_cache_refs(br#"{"blobs":"sha256:00"}"#).is_err());
        assert!(parse_cache_refs(br#"{"blobs":["sha256:00"]}"#).is_err());
        assert!(parse_cache_refs(br#"{"snapshots":[1]}"#).is_err());
    }
}
