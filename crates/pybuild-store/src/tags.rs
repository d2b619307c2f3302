//! Tags (descriptors in `index.json`), image closures, and reading images.

use std::collections::BTreeSet;
use std::fs;
use std::io;

use pybuild_oci::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform,
    canonical_json, from_json, media_type,
};

use crate::error::{Error, io_err};
use crate::fsutil::write_atomic;
use crate::lock::Exclusive;
use crate::{Store, host_platform, normalize_tag, platform_string};

/// How deep indexes may nest (index → index → ... → manifest). Real images use one
/// level; the bound keeps a hostile or broken chain from recursing without end.
const MAX_DEPTH: usize = 8;

/// An image read from the store: its manifest and config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor (for an index, the entry chosen for the platform).
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The image configuration.
    pub config: ImageConfig,
    /// The config's descriptor (as in the manifest).
    pub config_descriptor: Descriptor,
}

/// What a blob is to the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A manifest or an index (by media type; anything else is just a blob).
    Node,
    /// An image config: read for its diff IDs.
    Config,
    /// A layer: present or not, never read.
    Layer,
}

/// Something wrong inside an image's closure.
#[derive(Debug)]
pub(crate) enum Issue {
    /// A blob is not in the store.
    Missing(Digest),
    /// A blob's size disagrees with the descriptor pointing at it.
    Size {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A manifest, index or config that cannot be read or decoded.
    Bad {
        role: Role,
        digest: Digest,
        error: Error,
    },
    /// Indexes nested deeper than [`MAX_DEPTH`].
    TooDeep(Digest),
}

impl Issue {
    /// The issue as the error `set_tag` refuses with.
    pub(crate) fn into_error(self, tag: &str) -> Error {
        match self {
            Issue::Missing(missing) => Error::IncompleteImage {
                tag: tag.to_string(),
                missing,
            },
            Issue::Size {
                digest,
                expected,
                actual,
            } => Error::InvalidDescriptor {
                digest,
                reason: format!("descriptor says {expected} bytes, blob has {actual}"),
            },
            Issue::Bad { error, .. } => error,
            Issue::TooDeep(digest) => Error::InvalidDescriptor {
                digest,
                reason: format!("indexes nested more than {MAX_DEPTH} deep"),
            },
        }
    }
}

/// Every blob reachable from some descriptors, the diff IDs their configs name, and
/// whatever was found wrong on the way.
#[derive(Debug, Default)]
pub(crate) struct Closure {
    pub(crate) blobs: BTreeSet<Digest>,
    pub(crate) diff_ids: BTreeSet<Digest>,
    pub(crate) issues: Vec<Issue>,
}

impl Store {
    /// Add `desc` and everything it references to `out`.
    pub(crate) fn walk(&self, desc: &Descriptor, role: Role, depth: usize, out: &mut Closure) {
        if !out.blobs.insert(desc.digest.clone()) {
            return;
        }
        let path = self.blob_path(&desc.digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                if m.len() != desc.size {
                    out.issues.push(Issue::Size {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: m.len(),
                    });
                    return;
                }
            }
            _ => {
                out.issues.push(Issue::Missing(desc.digest.clone()));
                return;
            }
        }
        let bad = |error| Issue::Bad {
            role,
            digest: desc.digest.clone(),
            error,
        };
        match role {
            Role::Layer => {}
            Role::Config => {
                // Only image configs carry diff IDs; an artifact's config is opaque.
                let mt = desc.media_type.as_str();
                if mt == media_type::OCI_CONFIG || mt == media_type::DOCKER_CONFIG {
                    match self.read_json::<ImageConfig>(&desc.digest, "config") {
                        Ok(config) => out.diff_ids.extend(config.rootfs.diff_ids),
                        Err(e) => out.issues.push(bad(e)),
                    }
                }
            }
            Role::Node => {
                if depth >= MAX_DEPTH {
                    out.issues.push(Issue::TooDeep(desc.digest.clone()));
                    return;
                }
                let mt = desc.media_type.as_str();
                if media_type::is_index(mt) {
                    match self.read_json::<ImageIndex>(&desc.digest, "index") {
                        Ok(index) => {
                            for child in &index.manifests {
                                self.walk(child, Role::Node, depth + 1, out);
                            }
                        }
                        Err(e) => out.issues.push(bad(e)),
                    }
                } else if media_type::is_manifest(mt) {
                    match self.read_json::<ImageManifest>(&desc.digest, "manifest") {
                        Ok(manifest) => {
                            self.walk(&manifest.config, Role::Config, depth + 1, out);
                            for layer in &manifest.layers {
                                self.walk(layer, Role::Layer, depth + 1, out);
                            }
                        }
                        Err(e) => out.issues.push(bad(e)),
                    }
                }
            }
        }
    }

    /// Read a blob (verified) and decode it.
    pub(crate) fn read_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T, Error> {
        let bytes = self.read_blob(digest)?;
        from_json(what, &bytes).map_err(|source| Error::Decode {
            digest: digest.clone(),
            source,
        })
    }

    /// The current `index.json` (a missing file reads as an empty index). Readers
    /// take no lock: the file is only ever replaced whole, by rename.
    pub(crate) fn read_index(&self) -> Result<ImageIndex, Error> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path,
                reason: format!("not an OCI image index: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageIndex::new()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Read-modify-write `index.json` under `index.lock`. `change` returns its result
    /// and whether it modified the index (no write otherwise).
    fn update_index<R>(
        &self,
        change: impl FnOnce(&mut ImageIndex) -> (R, bool),
    ) -> Result<R, Error> {
        let _lock = Exclusive::acquire(&self.index_lock_path())?;
        // Re-read under the lock: what we read before may be stale by now.
        let mut index = self.read_index()?;
        let (result, changed) = change(&mut index);
        if changed {
            write_atomic(
                &self.tmp_dir(),
                self.lease()?,
                &self.index_path(),
                &canonical_json(&index),
                0o644,
            )?;
        }
        Ok(result)
    }

    /// Every tag in `index.json` with its descriptor, sorted by name. Entries without
    /// a `org.opencontainers.image.ref.name` annotation (put there by other tools)
    /// are not tags and are left out (they still keep their blobs alive).
    pub fn list_tags(&self) -> Result<Vec<(String, Descriptor)>, Error> {
        let index = self.read_index()?;
        let mut tags: Vec<(String, Descriptor)> = index
            .manifests
            .into_iter()
            .filter_map(|d| Some((d.annotations.get(ANNOTATION_REF_NAME)?.clone(), d)))
            .collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tags)
    }

    /// The descriptor tagged `name` (as stored, with its ref-name annotation). An
    /// exact match wins; otherwise [`normalize_tag`]`(name)` is tried, so `app`
    /// finds `app:latest`.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, Error> {
        let index = self.read_index()?;
        let find = |n: &str| {
            index
                .manifests
                .iter()
                .find(|d| ref_name(d) == Some(n))
                .cloned()
        };
        Ok(find(name).or_else(|| {
            let normalized = normalize_tag(name);
            (normalized != name).then(|| find(&normalized)).flatten()
        }))
    }

    /// Tag the image `desc` (a manifest or an index) as `name`, replacing any
    /// existing tag of that name. The name is stored verbatim (callers normalize with
    /// [`normalize_tag`]). Refuses with [`Error::IncompleteImage`] unless every blob of
    /// the image — manifest, config, layers, recursively through indexes — is
    /// present with the size its descriptor states. The check and the update happen
    /// under a lease, so a prune cannot remove part of the image in between.
    pub fn set_tag(&self, name: &str, desc: &Descriptor) -> Result<(), Error> {
        check_name(name)?;
        let mt = desc.media_type.as_str();
        if !media_type::is_manifest(mt) && !media_type::is_index(mt) {
            return Err(Error::InvalidDescriptor {
                digest: desc.digest.clone(),
                reason: format!("media type {mt:?} is not an image manifest or index"),
            });
        }
        let _lease = self.lease()?;
        let mut closure = Closure::default();
        self.walk(desc, Role::Node, 0, &mut closure);
        if let Some(issue) = closure.issues.into_iter().next() {
            return Err(issue.into_error(name));
        }
        let mut entry = desc.clone();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        self.update_index(|index| {
            let mut slot = None;
            let mut i = 0;
            index.manifests.retain(|d| {
                let keep = ref_name(d) != Some(name);
                if !keep && slot.is_none() {
                    slot = Some(i);
                }
                if keep {
                    i += 1;
                }
                keep
            });
            // Replace in place (keeps the index's order stable), else append.
            let at = slot.unwrap_or(index.manifests.len());
            index.manifests.insert(at, entry);
            ((), true)
        })
    }

    /// Remove the tag `name` (exact, else [`normalize_tag`]`(name)`); whether one was
    /// removed. The image's blobs stay until the next prune.
    pub fn remove_tag(&self, name: &str) -> Result<bool, Error> {
        self.update_index(|index| {
            let before = index.manifests.len();
            index.manifests.retain(|d| ref_name(d) != Some(name));
            if index.manifests.len() == before {
                let normalized = normalize_tag(name);
                index
                    .manifests
                    .retain(|d| ref_name(d) != Some(normalized.as_str()));
            }
            let removed = index.manifests.len() != before;
            (removed, removed)
        })
    }

    /// Read the image `desc` names. An index (or manifest list) is followed to the
    /// manifest for `platform` (default: [`host_platform`], linux on this CPU); a
    /// requested variant must match, an unrequested one is ignored. Manifest and
    /// config are verified against their digests as they are read.
    pub fn image(&self, desc: &Descriptor, platform: Option<&Platform>) -> Result<Image, Error> {
        let want = platform.cloned().unwrap_or_else(host_platform);
        let mut desc = desc.clone();
        for _ in 0..MAX_DEPTH {
            let bytes = self.read_blob(&desc.digest)?;
            let mt = desc.media_type.as_str();
            let is_index = media_type::is_index(mt)
                || (!media_type::is_manifest(mt) && looks_like_index(&bytes));
            let decode_err = |source| Error::Decode {
                digest: desc.digest.clone(),
                source,
            };
            if is_index {
                let index: ImageIndex = from_json("index", &bytes).map_err(decode_err)?;
                let chosen =
                    select_platform(&index, &want).ok_or_else(|| Error::NoMatchingPlatform {
                        digest: desc.digest.clone(),
                        platform: platform_string(&want),
                    })?;
                desc = chosen.clone();
                continue;
            }
            let manifest: ImageManifest = from_json("manifest", &bytes).map_err(decode_err)?;
            let config = self.read_json::<ImageConfig>(&manifest.config.digest, "config")?;
            return Ok(Image {
                config_descriptor: manifest.config.clone(),
                descriptor: desc,
                manifest,
                config,
            });
        }
        Err(Error::InvalidDescriptor {
            digest: desc.digest,
            reason: format!("indexes nested more than {MAX_DEPTH} deep"),
        })
    }
}

/// The tag annotation of an index entry.
pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str)
}

/// Tag names are stored verbatim in an annotation and passed to tools as
/// `oci:ROOT:NAME`; refuse what could never be typed there.
fn check_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    Ok(())
}

/// A document with a `manifests` array is an index, whatever its descriptor said.
fn looks_like_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("manifests").is_some_and(|m| m.is_array()))
}

/// The index entry for `want`: same OS and architecture, and same variant when one
/// is asked for. An index with a single entry without platform information (some
/// tools write those) is taken as it is.
pub(crate) fn select_platform<'a>(
    index: &'a ImageIndex,
    want: &Platform,
) -> Option<&'a Descriptor> {
    let matching = index.manifests.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.variant == want.variant)
        })
    });
    matching.or_else(|| match index.manifests.as_slice() {
        [only] if only.platform.is_none() => Some(only),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, byte: u8) -> Descriptor {
        Descriptor {
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                os_version: None,
                os_features: Vec::new(),
                variant: variant.map(str::to_string),
            }),
            ..Descriptor::new(media_type::OCI_MANIFEST, Digest::of(&[byte]), 1)
        }
    }

    fn want(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn platform_selection() {
        let mut index = ImageIndex::new();
        index.manifests = vec![
            entry("amd64", None, 1),
            entry("arm", Some("v6"), 2),
            entry("arm", Some("v7"), 3),
            entry("arm64", Some("v8"), 4),
        ];
        let pick = |p: Platform| select_platform(&index, &p).map(|d| d.digest.clone());
        assert_eq!(pick(want("amd64", None)), Some(Digest::of(&[1])));
        assert_eq!(pick(want("arm", Some("v7"))), Some(Digest::of(&[3])));
        assert_eq!(pick(want("arm64", None)), Some(Digest::of(&[4])));
        assert_eq!(pick(want("s390x", None)), None);
        assert_eq!(pick(want("arm64", Some("v9"))), None);
        let mut single = ImageIndex::new();
        single.manifests = vec![Descriptor::new(
            media_type::OCI_MANIFEST,
            Digest::of(b"m"),
            1,
        )];
        assert!(select_platform(&single, &want("amd64", None)).is_some());
    }

    #[test]
    fn names() {
        assert!(check_name("app:latest").is_ok());
        assert!(check_name("localhost:5000/a/b:1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a\nb").is_err());
    }

    #[test]
    fn index_sniffing() {
        assert!(looks_like_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!looks_like_index(br#"{"schemaVersion":2,"layers":[]}"#));
        assert!(!looks_like_index(b"garbage"));
    }
}
