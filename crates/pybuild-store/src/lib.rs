//! pybuild's local image store. The store directory **is** an OCI image layout
//! (OCI image-spec v1.1, `image-layout.md`), so other tools read it as it is:
//! `skopeo inspect oci:ROOT:my-python-app:latest`, `skopeo copy oci:ROOT:NAME ...`.
//!
//! # Layout
//!
//! ```text
//! ROOT/oci-layout               {"imageLayoutVersion":"1.0.0"}            (image-layout.md)
//! ROOT/index.json               OCI image index; one descriptor per tag, the tag in the
//!                               org.opencontainers.image.ref.name annotation, verbatim
//!                               (the full normalized name, see normalize_tag)
//! ROOT/blobs/sha256/<hex>       content-addressed blobs, mode 0444
//! ROOT/snapshots/<diffid-hex>/  unpacked layer diffs (overlay format), keyed by diff ID
//! ROOT/cache/<key-hex>.json     build-cache records (opaque to the store but for the
//!                               "blobs"/"snapshots" arrays, see Store::put_cache_record)
//! ROOT/cache-mounts/<id>/       RUN --mount=type=cache directories (never in images)
//! ROOT/state/                   small bookkeeping of the layers above (context stat
//!                               caches, where blobs exist in registries)
//! ROOT/tmp/                     every write in progress; same file system as the rest,
//!                               so a rename out of it is atomic
//! ROOT/locks/index.lock         serializes index.json updates
//! ROOT/locks/gc.lock            shared by writers and builds, exclusive for prune
//! ```
//!
//! The first three entries are all the image-layout spec defines; a reader of the
//! layout ignores the others.
//!
//! # Atomicity
//!
//! Nothing is ever written in place. A blob, `index.json`, `oci-layout` or a cache
//! record is written to a fresh file in `ROOT/tmp`, fsynced, renamed over its final
//! name and the directory fsynced; a snapshot is filled in a fresh directory in
//! `ROOT/tmp`, made durable (one `syncfs`, or an fsync of each of its files and
//! directories when other processes' dirty data would make `syncfs` slower), and
//! the directory renamed into place. A blob's digest is computed while it streams and compared with the
//! caller's expectation *before* the rename, so a blob file only ever exists under
//! the digest of its content. Readers therefore never take locks: every name they can
//! see points at complete content.
//!
//! # Locking
//!
//! Two advisory `flock(2)` locks (through `fs4`) let processes share a store:
//!
//! - `index.lock`, exclusive around every read-modify-write of `index.json`: the
//!   updater re-reads the index under the lock, so concurrent `set_tag`s of different
//!   names never lose each other's updates.
//! - `gc.lock`, held *shared* by [`Store::lease`] (a build holds one for its whole run)
//!   and by every temp file or directory for its life, and taken *exclusively*, without
//!   waiting, by [`Store::prune`] and by the start-up cleaning of `ROOT/tmp`. Hence a
//!   prune never removes what a running build is creating, and a process opening the
//!   store never deletes another's half-written temp files.
//!
//! Nothing can deadlock: `gc.lock` is only ever *tried* exclusively, never waited
//! for, so a waiter for it (shared) only waits for a prune or cleaning that waits
//! for nothing; and prune never takes `index.lock`.
//!
//! # Crash safety
//!
//! Kill -9 (or power loss, thanks to the fsyncs) at any point leaves:
//!
//! - a blob name either absent or naming complete, verified content (rename is atomic
//!   and happens after the hash check and fsync);
//! - `index.json` either old or new, never torn (same reason), and a tag only ever
//!   naming an image whose closure was checked present under a lease, so a concurrent
//!   prune cannot have removed part of it in between;
//! - a snapshot directory either absent or complete;
//! - partial work only in `ROOT/tmp`, which the next open that finds the store idle
//!   (or the next prune) empties. Locks die with their process.
//!
//! What can be left behind is garbage (an untagged blob), never corruption; `prune`
//! collects it and [`Store::verify`] re-checks everything.

mod blob;
mod cache;
mod durable;
mod error;
mod fsutil;
mod gc;
mod lock;
mod snapshot;
mod tags;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pybuild_oci::{ImageIndex, Platform, canonical_json};

pub use blob::{BlobWriter, READ_BLOB_LIMIT};
pub use error::{BoxError, Error};
pub use gc::{Problem, PruneOptions, PruneReport, VerifyReport};
pub use lock::Lease;
pub use snapshot::TempDir;
pub use tags::Image;

use error::io_err;
use fsutil::{remove_tree, write_atomic};
use lock::Exclusive;

/// The image-layout version this store writes and accepts (major version 1).
const LAYOUT_VERSION: &str = "1.0.0";

/// Entries a store root may hold before its `oci-layout` file exists (a crash during
/// the very first open leaves some of them); anything else means the directory is not
/// ours and must not be turned into a store.
const OWN_ENTRIES: &[&str] = &[
    "oci-layout",
    "index.json",
    "blobs",
    "snapshots",
    "cache",
    "tmp",
    "locks",
    "cache-mounts",
    "state",
];

/// The local image store: an OCI image layout plus snapshots, build-cache records
/// and the locks that let several processes share it. Cheap to clone; all state is
/// on disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open the store at `root`, creating the layout if the directory is missing or
    /// empty, and validating `oci-layout` if present. A non-empty directory that is
    /// not an OCI layout is refused rather than adopted (a mistyped `--root` must not
    /// scatter files into someone's home). Stale temp entries are removed when no
    /// other user of the store is active.
    pub fn open(root: &Path) -> Result<Store, Error> {
        // Absolute, so the store keeps working if the process changes directory.
        let root = std::path::absolute(root).map_err(io_err(root))?;
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let store = Store { root };
        let layout_path = store.root.join("oci-layout");
        let has_layout = match fs::read(&layout_path) {
            Ok(bytes) => {
                check_layout_file(&layout_path, &bytes)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                store.check_adoptable()?;
                false
            }
            Err(e) => return Err(io_err(&layout_path)(e)),
        };
        for dir in [
            store.tmp_dir(),
            store.locks_dir(),
            store.root.join("blobs").join("sha256"),
            store.snapshots_dir(),
            store.cache_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        if !store.index_path().exists() {
            let _lock = Exclusive::acquire(&store.index_lock_path())?;
            // Re-check under the lock: another process may have created it (and
            // tagged something) since.
            if !store.index_path().exists() {
                write_atomic(
                    &store.tmp_dir(),
                    store.lease()?,
                    &store.index_path(),
                    &canonical_json(&ImageIndex::new()),
                    0o644,
                )?;
            }
        }
        // oci-layout last: its presence marks a fully initialized layout.
        if !has_layout {
            let text = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
            write_atomic(
                &store.tmp_dir(),
                store.lease()?,
                &layout_path,
                text.as_bytes(),
                0o644,
            )?;
        }
        store.clean_tmp_if_idle()?;
        Ok(store)
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the store lives when not told: `/var/lib/pybuild` for root (uid 0 of the
    /// host: root of a user namespace whose uid 0 is an ordinary user, as in a
    /// rootless build, counts as that user), otherwise `$XDG_DATA_HOME/pybuild` (when
    /// set to an absolute path, as the XDG base-directory spec requires), otherwise
    /// `$HOME/.local/share/pybuild`. (`$PYBUILD_ROOT` is the command line's business.)
    pub fn default_root() -> PathBuf {
        default_root_for(
            rustix::process::geteuid().is_root() && root_is_host_root(),
            std::env::var_os("XDG_DATA_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Hold the store's garbage-collection lock shared until the guard is dropped:
    /// [`Store::prune`] refuses to run meanwhile. A build takes one before writing its
    /// first blob and keeps it until its results are tagged or recorded in the cache.
    /// Waits only while a prune is running.
    pub fn lease(&self) -> Result<Lease, Error> {
        Lease::acquire(&self.gc_lock_path())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub(crate) fn gc_lock_path(&self) -> PathBuf {
        self.locks_dir().join("gc.lock")
    }

    pub(crate) fn index_lock_path(&self) -> PathBuf {
        self.locks_dir().join("index.lock")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where `RUN --mount=type=cache` directories persist between builds, one
    /// subdirectory per cache id (`ROOT/cache-mounts/<sha256 of the id>`). Never part
    /// of an image; `prune` with `all` empties it.
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root.join("cache-mounts")
    }

    /// Refuse to initialize a directory holding anything but our own entries.
    fn check_adoptable(&self) -> Result<(), Error> {
        let entries = fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.root))?;
            let name = entry.file_name();
            if !OWN_ENTRIES.iter().any(|own| name == *own) {
                return Err(Error::Corrupt {
                    path: self.root.clone(),
                    reason: format!(
                        "not an OCI image layout (no oci-layout file) and not empty (has {:?})",
                        name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Empty `ROOT/tmp` if nobody holds a lease (every live temp entry is covered
    /// by one, so when the exclusive lock is free everything there is a crash's
    /// leftover). Returns the number of entries and bytes removed.
    pub(crate) fn clean_tmp_if_idle(&self) -> Result<(usize, u64), Error> {
        let Some(_lock) = Exclusive::try_acquire(&self.gc_lock_path())? else {
            return Ok((0, 0));
        };
        self.clean_tmp_locked()
    }

    /// Empty `ROOT/tmp`; the caller holds `gc.lock` exclusively.
    pub(crate) fn clean_tmp_locked(&self) -> Result<(usize, u64), Error> {
        let tmp = self.tmp_dir();
        let mut count = 0;
        let mut bytes = 0;
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            bytes += fsutil::tree_size(&path);
            remove_tree(&path).map_err(io_err(&path))?;
            count += 1;
        }
        Ok((count, bytes))
    }
}

/// Whether uid 0 of this process's user namespace is uid 0 of the host: true outside
/// user namespaces, false in a rootless build's (`/proc/self/uid_map` maps 0 elsewhere).
fn root_is_host_root() -> bool {
    let Ok(map) = fs::read_to_string("/proc/self/uid_map") else {
        return true;
    };
    map.lines().all(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        !matches!(f[..], ["0", outside, _] if outside != "0")
    })
}

/// [`Store::default_root`] from its inputs (separate so it can be tested without
/// changing the process environment).
fn default_root_for(
    is_root: bool,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/pybuild");
    }
    if let Some(xdg) = xdg_data_home.filter(|v| Path::new(v).is_absolute()) {
        return PathBuf::from(xdg).join("pybuild");
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/pybuild"),
        // No home at all: the system location; opening it fails with a clear
        // permission error rather than writing somewhere surprising.
        None => PathBuf::from("/var/lib/pybuild"),
    }
}

/// Check an `oci-layout` file: a JSON object whose `imageLayoutVersion` has major
/// version 1.
fn check_layout_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let version = value
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .ok_or_else(|| corrupt("no imageLayoutVersion".into()))?;
    if version.split('.').next() != Some("1") {
        return Err(corrupt(format!(
            "unsupported imageLayoutVersion {version:?} (expected 1.x)"
        )));
    }
    Ok(())
}

/// Normalize an image name for use as a tag: append `:latest` when the name has
/// neither a tag nor a digest. Registry host (with or without port) and path are
/// kept as given, so `localhost:5000/app` becomes `localhost:5000/app:latest` and
/// `a@sha256:...` is unchanged. The command line stores and looks up tags through
/// this, so `pybuild images`, `inspect`, `rmi` and `skopeo inspect oci:ROOT:NAME`
/// agree on names.
pub fn normalize_tag(name: &str) -> String {
    if name.is_empty() || name.contains('@') {
        return name.to_string();
    }
    // A ':' after the last '/' is a tag; one before it belongs to a registry port.
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The platform images default to: `linux` on the host's CPU architecture
/// ([`Platform::host`]).
pub fn host_platform() -> Platform {
    Platform::host()
}

/// `os/arch[/variant]`, as Docker writes platforms.
pub(crate) fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_tag_appends_latest_only_when_untagged() {
        assert_eq!(normalize_tag("my-python-app"), "my-python-app:latest");
        assert_eq!(normalize_tag("app:1.0"), "app:1.0");
        assert_eq!(
            normalize_tag("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_tag("localhost:5000/app:v2"),
            "localhost:5000/app:v2"
        );
        assert_eq!(
            normalize_tag("docker.io/library/python"),
            "docker.io/library/python:latest"
        );
        let pinned = format!("a@sha256:{}", "0".repeat(64));
        assert_eq!(normalize_tag(&pinned), pinned);
        assert_eq!(normalize_tag(""), "");
    }

    #[test]
    fn default_root_rules() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_root_for(true, some("/x"), some("/home/u")),
            Path::new("/var/lib/pybuild")
        );
        assert_eq!(
            default_root_for(false, some("/data"), some("/home/u")),
            Path::new("/data/pybuild")
        );
        // Relative or empty XDG_DATA_HOME is ignored, per the XDG spec.
        for xdg in [some("rel"), some(""), None] {
            assert_eq!(
                default_root_for(false, xdg, some("/home/u")),
                Path::new("/home/u/.local/share/pybuild")
            );
        }
        assert_eq!(
            default_root_for(false, None, None),
            Path::new("/var/lib/pybuild")
        );
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Store>();
        send_sync::<BlobWriter>();
        send_sync::<TempDir>();
        send_sync::<Lease>();
        send_sync::<Error>();
    }

    #[test]
    fn layout_file_versions() {
        let p = Path::new("oci-layout");
        assert!(check_layout_file(p, br#"{"imageLayoutVersion":"1.0.0"}"#).is_ok());
        assert!(check_layout_file(p, br#"{"imageLayoutVersion":"1.1.0"}"#).is_ok());
        assert!(check_layout_file(p, br#"{"imageLayoutVersion":"2.0.0"}"#).is_err());
        assert!(check_layout_file(p, b"{}").is_err());
        assert!(check_layout_file(p, b"nope").is_err());
    }
}
