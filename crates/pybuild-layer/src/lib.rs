//! pybuild's layer engine: turning a snapshot into a layer blob, and a layer blob back
//! into files.
//!
//! # Diff directories and layer tars
//!
//! A **diff directory** (a snapshot) holds one layer's changes in overlayfs's own
//! format, because that is what the kernel leaves in an overlay mount's upper dir:
//! regular files, directories, symlinks, hard links, device nodes and FIFOs as they
//! are; a **deleted path** is a character device 0/0 with that name; a directory that
//! replaces the lower one wholesale (an **opaque** directory) carries the xattr
//! `trusted.overlay.opaque=y` (or `user.overlay.opaque=y` for unprivileged mounts).
//!
//! A **layer** is a tar stream expressing the same thing the OCI way (image-spec
//! `layer.md`, "Representing Changes"): a deleted `dir/x` is an empty entry
//! `dir/.wh.x`, an opaque `dir` has an entry `dir/.wh..wh..opq`. The layer's
//! **diffID** is the sha256 of the uncompressed tar; its **digest** the sha256 of the
//! compressed blob.
//!
//! # Writing ([`write_layer`], [`compress_tar`])
//!
//! The tar is produced, hashed, compressed and hashed again in one streaming pass
//! (tar → sha256 (diffID) → gzip/zstd → sha256 (digest) → output): a layer is read
//! from disk exactly once and never held in memory, and both digests are known the
//! moment the last byte is written. Output is deterministic: entries in a fixed order
//! (each directory's children sorted by name bytes, depth first, like Go's
//! `filepath.Walk` that containerd's differ uses), headers built field by field (no
//! user/group names, no atime/ctime, PAX records only when a value does not fit
//! USTAR, sorted), a gzip header without timestamp or file name. The same tree gives
//! the same bytes on any machine with the same compressor settings.
//!
//! # Applying ([`apply_layer`])
//!
//! Layers come from untrusted registries, so the extractor assumes a hostile tar:
//! - nothing is ever written outside `target`: a `..` path component is refused
//!   outright (a leading `/` or `./` is accepted and means "relative to `target`", as
//!   BuildKit cleans such names); every parent component that exists must be a real
//!   directory, never a symlink (symlinks are never followed, whether this layer or a
//!   lower one made them); files are created fresh (`O_CREAT|O_EXCL|O_NOFOLLOW`) after
//!   removing whatever was there, so writes never go through an existing symlink or
//!   hard link; hard link targets must name an existing non-directory inside
//!   `target` (a symlink as link target is linked itself, never dereferenced);
//! - the tar is parsed by this crate's own reader, which bounds every in-memory
//!   header (PAX records and GNU long names at 1 MiB each, as Go's `archive/tar` does)
//!   so a decompression bomb cannot exhaust memory, and treats every inconsistency
//!   (bad checksum, short data, truncated compression) as [`Error::Corrupt`];
//! - overlayfs's private xattrs (`trusted.overlay.*`, `user.overlay.*`) are never
//!   taken from a layer: redirects or opaque markers are only ever derived from the
//!   OCI whiteout entries.
//!
//! The decompressed stream is hashed as it is read, so callers compare
//! [`ApplyStats::diff_id`] with the image config's `rootfs.diff_ids`.

mod apply;
mod pgzip;
mod pipeline;
mod reader;
mod write;
mod xattr;

use std::path::PathBuf;

pub use apply::apply_layer;
pub use write::{compress_tar, write_layer};

use pybuild_oci::{Digest, media_type};

/// The whiteout prefix of the OCI layer format.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker entry.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// Docker's media type for an uncompressed layer (not in `pybuild-oci`: only the
/// docker-format export needs it).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Errors of this crate. Every message names the entry or path concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing the layer stream to the caller's output failed.
    #[error("writing layer output: {source}")]
    Output {
        /// The writer's error.
        source: std::io::Error,
    },
    /// A layer entry that would write outside the target, or through a symlink.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something this crate cannot represent or do (an entry type, a compression,
    /// an overlay feature, a privileged operation without privileges).
    #[error("unsupported {what}: {reason}")]
    Unsupported {
        /// What was unsupported (an entry name, a path, a format).
        what: String,
        /// Why.
        reason: String,
    },
    /// An entry's owner has no id in this process's user namespace (a rootless build
    /// whose namespace maps too few ids): writing it would record a wrong owner.
    #[error("entry {entry:?} is owned by {uid}:{gid}, which is not mapped in this user namespace")]
    UnmappedOwner {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// The entry's uid.
        uid: u32,
        /// The entry's gid.
        gid: u32,
    },
    /// The layer stream does not decode: truncated, bad checksum, bad compression.
    #[error("corrupt layer{}: {reason}", at_entry(entry))]
    Corrupt {
        /// The entry being read when it went wrong, if any (empty otherwise).
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

fn at_entry(entry: &str) -> String {
    if entry.is_empty() {
        String::new()
    } else {
        format!(" at entry {entry:?}")
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(entry: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            entry: entry.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::UnsafeEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (deflate), `level` 0-9.
    Gzip {
        /// 0 (store) to 9 (best); 6 is gzip's and BuildKit's default.
        level: u32,
    },
    /// zstd, single-threaded (multithreaded zstd output depends on the thread count).
    Zstd {
        /// zstd level (1-22; 3 is zstd's default).
        level: i32,
    },
}

impl Default for Compression {
    /// gzip level 6: what every registry and runtime accepts.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The layer media type: OCI's when `oci`, else Docker's. Docker has no zstd
    /// media type, so zstd is always OCI's.
    pub fn media_type(&self, oci: bool) -> &'static str {
        match (self, oci) {
            (Compression::None, true) => media_type::OCI_LAYER_TAR,
            (Compression::None, false) => DOCKER_LAYER_TAR,
            (Compression::Gzip { .. }, true) => media_type::OCI_LAYER_GZIP,
            (Compression::Gzip { .. }, false) => media_type::DOCKER_LAYER_GZIP,
            (Compression::Zstd { .. }, _) => media_type::OCI_LAYER_ZSTD,
        }
    }
}

/// Options of [`write_layer`] and [`compress_tar`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// The blob's compression.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: entries with a later mtime get this one instead. Only
    /// [`write_layer`] uses it ([`compress_tar`] passes a tar through unchanged).
    pub mtime_clamp: Option<i64>,
}

/// What [`write_layer`] and [`compress_tar`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as written.
    pub digest: Digest,
    /// Bytes written (compressed).
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type of the blob.
    pub media_type: &'static str,
    /// Tar entries (files, directories, links, whiteouts, opaque markers; PAX and
    /// GNU extension headers are not counted).
    pub entries: u64,
}

/// How [`apply_layer`] lays out what it extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Write an overlay-format diff directory: `.wh.x` becomes a 0/0 character device
    /// `x`, `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory
    /// (`user.overlay.opaque=y` where trusted xattrs are refused, as in a user
    /// namespace, whose overlay mounts use `userxattr`). Needs root or a user
    /// namespace (0/0 whiteouts may be made there since Linux 5.8) as soon as the
    /// layer has whiteouts.
    Snapshot,
    /// Apply onto an existing full tree: `.wh.x` deletes `x` (recursively),
    /// `.wh..wh..opq` removes everything in its directory that this layer did not
    /// itself write.
    Merge,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Snapshot or merge.
    pub mode: ApplyMode,
    /// Give entries their uid/gid from the tar (true when running as root, also root
    /// of a user namespace). An owner the namespace does not map is
    /// [`Error::UnmappedOwner`].
    pub same_owner: bool,
    /// Create character and block devices (root, not rootless: a user namespace
    /// cannot, see [`ApplyOptions::for_this_process`]); when false they are
    /// skipped and counted in [`ApplyStats::skipped_devices`]. FIFOs are always made.
    pub allow_devices: bool,
}

impl ApplyOptions {
    /// The options this process can honour: owners when it is root (of the host or of
    /// a user namespace), devices only when it is root of the host (initial user
    /// namespace); `mknod` of a device is refused in any other.
    pub fn for_this_process(mode: ApplyMode) -> Self {
        let root = rustix::process::geteuid().is_root();
        Self {
            mode,
            same_owner: root,
            allow_devices: root && !in_user_namespace(),
        }
    }
}

/// Whether this process runs in a user namespace other than the initial one (its
/// `/proc/self/uid_map` is not the identity map of all ids).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// Entries processed (PAX and GNU extension headers are not counted).
    pub entries: u64,
    /// Regular-file content bytes written.
    pub bytes: u64,
    /// sha256 of the decompressed tar as read (all of it, trailing padding too).
    pub diff_id: Digest,
    /// Character/block devices skipped because `allow_devices` was false.
    pub skipped_devices: u64,
    /// xattrs the filesystem refused with EPERM or ENOTSUP (e.g. `security.*` or
    /// `trusted.*` without privileges, `user.*` on a symlink); the rest are errors.
    pub skipped_xattrs: u64,
}

/// A stream's compression, as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// gzip: `1f 8b`.
    Gzip,
    /// zstd: `28 b5 2f fd`.
    Zstd,
    /// bzip2: `BZh` and a block size digit `1`-`9`.
    Bzip2,
    /// xz: `fd 37 7a 58 5a 00`.
    Xz,
    /// Anything else: taken to be a plain tar.
    Plain,
}

/// How many leading bytes [`detect_compression`] looks at; give it at least this
/// many when the stream has them.
pub const DETECT_LEN: usize = 6;

/// Detect the compression of a stream from its first bytes (at least
/// [`DETECT_LEN`] of them when the stream is that long). Never trusts a media type.
///
/// bzip2 also needs its block-size digit: a plain tar whose first member is named
/// `BZh...` would otherwise be taken for bzip2.
pub fn detect_compression(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Detected::Xz
    } else if head.starts_with(b"BZh") && matches!(head.get(3), Some(b'1'..=b'9')) {
        Detected::Bzip2
    } else {
        Detected::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect_compression(&[0x1f, 0x8b, 8, 0]), Detected::Gzip);
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Detected::Zstd
        );
        assert_eq!(detect_compression(b"BZh91AY&SY"), Detected::Bzip2);
        assert_eq!(
            detect_compression(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0]),
            Detected::Xz
        );
        // A tar whose first member is named "BZhello" is a tar.
        assert_eq!(detect_compression(b"BZhello\0\0"), Detected::Plain);
        assert_eq!(detect_compression(b""), Detected::Plain);
        assert_eq!(detect_compression(&[0x1f]), Detected::Plain);
        assert_eq!(detect_compression(b"etc/\0\0\0"), Detected::Plain);
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::default().media_type(true),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            Compression::default().media_type(false),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            Compression::None.media_type(false),
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(
            Compression::Zstd { level: 3 }.media_type(false),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn error_messages_name_the_entry() {
        let e = Error::corrupt("usr/bin/x", "truncated");
        assert_eq!(
            e.to_string(),
            "corrupt layer at entry \"usr/bin/x\": truncated"
        );
        assert_eq!(
            Error::corrupt("", "bad gzip").to_string(),
            "corrupt layer: bad gzip"
        );
    }
}
