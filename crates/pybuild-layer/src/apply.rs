//! Layer tar → files under a target directory, refusing anything that would reach
//! outside it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use pybuild_oci::Digest;

use crate::reader::{self, Entry, Kind, TarReader};
use crate::write::nofollow;
use crate::{ApplyMode, ApplyOptions, ApplyStats, Error, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, xattr};

/// File contents are copied in chunks of this size.
const COPY_CHUNK: usize = 256 << 10;
/// Mode of directories the layer does not list but needs (containerd's choice).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Read a layer (gzip, zstd or plain tar, told apart by magic bytes, never by media
/// type) and apply it under `target`, which must be an existing directory (empty, for
/// [`ApplyMode::Snapshot`]).
///
/// Safety rules (the layer is untrusted):
/// - names are taken relative to `target`: a leading `/` or `./` is dropped, as
///   BuildKit does; any `..` component is refused with [`Error::UnsafeEntry`], even one
///   that would stay inside (no legitimate layer has one); so are names with NUL;
/// - every existing parent component must be a real directory: a symlink there
///   (from this layer or a lower one) is refused, never followed;
/// - regular files, symlinks, devices and FIFOs replace what was there by first
///   removing it, then creating afresh (`O_EXCL|O_NOFOLLOW`), so nothing is ever
///   written through an existing link; a directory replaces a non-directory, an
///   existing directory is kept and gets the entry's metadata;
/// - a hard link must name an existing non-directory inside `target`, reached without
///   symlinks; if that is a symlink, the symlink itself is linked (never followed);
/// - `.wh.` names of `.`/`..`/nothing are refused; overlay's own xattrs are dropped.
///
/// The whole decompressed stream is hashed into [`ApplyStats::diff_id`]. On error,
/// what was extracted so far stays (inside `target`): the caller discards the target.
pub fn apply_layer(
    reader: impl Read,
    target: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    let meta = fs::metadata(target).map_err(|e| Error::io(target, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            target,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let stream = reader::decompress(reader)?;
    let mut tar = TarReader::new(Hashing {
        inner: stream,
        hasher: Sha256::new(),
    });
    let mut applier = Applier {
        root: target,
        options,
        written: HashSet::new(),
        dirs: BTreeMap::new(),
        parent_ok: None,
        buf: vec![0u8; COPY_CHUNK],
        stats: Counts::default(),
    };
    while let Some(entry) = tar.next_entry()? {
        applier.stats.entries += 1;
        applier.apply(&mut tar, &entry)?;
    }
    tar.drain()?;
    applier.finish_dirs()?;
    let hash = tar.into_inner().hasher.finalize();
    let c = applier.stats;
    Ok(ApplyStats {
        entries: c.entries,
        bytes: c.bytes,
        diff_id: Digest::from_sha256(hash.into()),
        skipped_devices: c.skipped_devices,
        skipped_xattrs: c.skipped_xattrs,
    })
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    entries: u64,
    bytes: u64,
    skipped_devices: u64,
    skipped_xattrs: u64,
}

/// A directory's mode and mtime, applied after all entries (children change a
/// directory's mtime, and a read-only mode would stop them being created).
struct DirMeta {
    mode: u32,
    mtime: (i64, u32),
}

struct Applier<'a> {
    root: &'a Path,
    options: &'a ApplyOptions,
    /// Relative paths this layer has written (entries and the directories made for
    /// them): whiteouts and opaque markers only remove what lower layers had.
    written: HashSet<Vec<u8>>,
    /// Directory entries whose mode/mtime are applied at the end, by relative path.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// The last parent directory verified to be a real directory; valid until
    /// something is removed (only a removal can turn a verified directory into
    /// something else).
    parent_ok: Option<Vec<u8>>,
    buf: Vec<u8>,
    stats: Counts,
}

/// The entry name as path components: no empty, `.` or (refused) `..` parts.
fn components<'p>(name: &str, raw: &'p [u8]) -> Result<Vec<&'p [u8]>, Error> {
    if raw.contains(&0) {
        return Err(Error::unsafe_entry(name, "name contains a NUL byte"));
    }
    let comps: Vec<&[u8]> = raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(Error::unsafe_entry(name, "path has a '..' component"));
    }
    Ok(comps)
}

fn rel_of(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn errno(path: &Path) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| Error::io(path, e.into())
}

fn timestamps(mtime: (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.0,
        tv_nsec: mtime.1.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Applier<'_> {
    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// Check that every parent of `comps` (all but the last) is a real directory,
    /// creating missing ones when `create`. Returns `false` when one is missing and
    /// `create` is off.
    fn parents(&mut self, name: &str, comps: &[&[u8]], create: bool) -> Result<bool, Error> {
        let Some((_, parents)) = comps.split_last() else {
            return Ok(true);
        };
        let parent_rel = rel_of(parents);
        if parents.is_empty() || self.parent_ok.as_deref() == Some(parent_rel.as_slice()) {
            return Ok(true);
        }
        for i in 1..=parents.len() {
            let rel = rel_of(&parents[..i]);
            let full = self.full(&rel);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::unsafe_entry(
                        name,
                        format!(
                            "parent {:?} is a symlink (never followed)",
                            String::from_utf8_lossy(&rel)
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(Error::unsafe_entry(
                        name,
                        format!(
                            "parent {:?} is not a directory",
                            String::from_utf8_lossy(&rel)
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(false);
                    }
                    fs::DirBuilder::new()
                        .mode(IMPLICIT_DIR_MODE)
                        .create(&full)
                        .map_err(io_err(&full))?;
                    self.written.insert(rel);
                }
                Err(e) => return Err(Error::io(full, e)),
            }
        }
        self.parent_ok = Some(parent_rel);
        Ok(true)
    }

    /// Remove whatever is at `full` (a directory recursively; std's `remove_dir_all`
    /// does not follow symlinks).
    fn remove(&mut self, full: &Path) -> Result<(), Error> {
        let result = match fs::symlink_metadata(full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => fs::remove_dir_all(full),
            Ok(_) => fs::remove_file(full),
        };
        self.parent_ok = None;
        result.map_err(io_err(full))
    }

    fn apply<R: Read>(&mut self, tar: &mut TarReader<R>, entry: &Entry) -> Result<(), Error> {
        let name = entry.name();
        let comps = components(&name, &entry.path)?;
        let Some(base) = comps.last().copied() else {
            // The root itself ("./" or "/"): the target's own metadata is the
            // caller's, as in containerd.
            return Ok(());
        };
        if base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, &comps, entry);
        }
        self.parents(&name, &comps, true)?;
        let rel = rel_of(&comps);
        let full = self.full(&rel);
        match entry.kind {
            Kind::Dir => self.directory(&rel, &full, entry)?,
            Kind::File => self.file(tar, &full, entry)?,
            Kind::Symlink => {
                self.remove(&full)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&entry.link), &full)
                    .map_err(io_err(&full))?;
                self.metadata(&full, entry, false)?;
            }
            Kind::HardLink => self.hard_link(&name, &rel, &full, entry)?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                let file_type = match entry.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.options.allow_devices {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                self.remove(&full)?;
                let dev = rustix::fs::makedev(entry.dev_major, entry.dev_minor);
                rustix::fs::mknodat(CWD, &full, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(errno(&full))?;
                self.metadata(&full, entry, true)?;
            }
        }
        self.written.insert(rel);
        Ok(())
    }

    fn directory(&mut self, rel: &[u8], full: &Path, entry: &Entry) -> Result<(), Error> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                self.remove(full)?;
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(full)
                    .map_err(io_err(full))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(full)
                    .map_err(io_err(full))?;
            }
            Err(e) => return Err(Error::io(full, e)),
        }
        self.chown(full, entry)?;
        self.xattrs(full, entry)?;
        self.dirs.insert(
            rel.to_vec(),
            DirMeta {
                mode: entry.mode,
                mtime: (entry.mtime, entry.mtime_nsec),
            },
        );
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        full: &Path,
        entry: &Entry,
    ) -> Result<(), Error> {
        self.remove(full)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nofollow())
            .open(full)
            .map_err(io_err(full))?;
        loop {
            let n = tar.read_data(&mut self.buf)?;
            if n == 0 {
                break;
            }
            file.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(io_err(full))?;
            self.stats.bytes += n as u64;
        }
        // Owner first: chown clears setuid/setgid, so the mode comes after it.
        if self.options.same_owner {
            let (uid, gid) = ids(&entry.name(), entry)?;
            rustix::fs::fchown(&file, Some(uid), Some(gid)).map_err(owner_errno(full, entry))?;
        }
        file.set_permissions(Permissions::from_mode(entry.mode))
            .map_err(io_err(full))?;
        for (key, value) in &entry.xattrs {
            if xattr::is_overlay_private(key) {
                continue;
            }
            match rustix::fs::fsetxattr(
                &file,
                OsStr::from_bytes(key),
                value,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => {}
                Err(Errno::PERM | Errno::NOTSUP) => self.stats.skipped_xattrs += 1,
                Err(e) => return Err(Error::io(full, e.into())),
            }
        }
        rustix::fs::futimens(&file, &timestamps((entry.mtime, entry.mtime_nsec)))
            .map_err(errno(full))?;
        Ok(())
    }

    fn hard_link(
        &mut self,
        name: &str,
        rel: &[u8],
        full: &Path,
        entry: &Entry,
    ) -> Result<(), Error> {
        let link_comps = components(name, &entry.link)?;
        if link_comps.is_empty() {
            return Err(Error::unsafe_entry(name, "hard link to the root directory"));
        }
        let link_rel = rel_of(&link_comps);
        if link_rel == rel {
            return Err(Error::corrupt(name, "hard link to itself"));
        }
        if !self.parents(name, &link_comps, false)? {
            return Err(Error::unsafe_entry(
                name,
                format!(
                    "hard link target {:?} does not exist",
                    String::from_utf8_lossy(&entry.link)
                ),
            ));
        }
        let source = self.full(&link_rel);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => {
                return Err(Error::unsafe_entry(name, "hard link to a directory"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::unsafe_entry(
                    name,
                    format!(
                        "hard link target {:?} does not exist",
                        String::from_utf8_lossy(&entry.link)
                    ),
                ));
            }
            Err(e) => return Err(Error::io(source, e)),
        }
        self.remove(full)?;
        // linkat(2) without AT_SYMLINK_FOLLOW (what std uses on Linux): a symlink is
        // linked as itself, never resolved.
        fs::hard_link(&source, full).map_err(io_err(full))
    }

    /// Owner, mode (not for symlinks: Linux has no lchmod, and symlink modes mean
    /// nothing), xattrs, mtime — all without following a final symlink.
    fn metadata(&mut self, full: &Path, entry: &Entry, chmod: bool) -> Result<(), Error> {
        self.chown(full, entry)?;
        if chmod {
            // The path is what this entry just created (not a symlink), so fchmodat's
            // lack of NOFOLLOW does not matter.
            rustix::fs::chmodat(CWD, full, Mode::from_raw_mode(entry.mode), AtFlags::empty())
                .map_err(errno(full))?;
        }
        self.xattrs(full, entry)?;
        rustix::fs::utimensat(
            CWD,
            full,
            &timestamps((entry.mtime, entry.mtime_nsec)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno(full))
    }

    fn chown(&mut self, full: &Path, entry: &Entry) -> Result<(), Error> {
        if !self.options.same_owner {
            return Ok(());
        }
        let (uid, gid) = ids(&entry.name(), entry)?;
        rustix::fs::chownat(CWD, full, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(owner_errno(full, entry))
    }

    fn xattrs(&mut self, full: &Path, entry: &Entry) -> Result<(), Error> {
        for (key, value) in &entry.xattrs {
            // Overlay's own attributes (opaque, redirect, metacopy) would change how a
            // snapshot is mounted: they only ever come from whiteout entries.
            if xattr::is_overlay_private(key) {
                continue;
            }
            match xattr::set(full, key, value) {
                Ok(()) => {}
                // Unprivileged `trusted.*`/`security.*`, `user.*` on a symlink, or no
                // xattr support: counted, as containerd logs and goes on.
                Err(Errno::PERM | Errno::NOTSUP) => self.stats.skipped_xattrs += 1,
                Err(e) => return Err(Error::io(full, e.into())),
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, name: &str, comps: &[&[u8]], entry: &Entry) -> Result<(), Error> {
        let Some((base, parents)) = comps.split_last() else {
            return Ok(());
        };
        let parent_rel = rel_of(parents);
        if *base == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(name, comps, &parent_rel);
        }
        if base.starts_with(b".wh..wh.") {
            // AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not content; Docker
            // skips it too.
            return Ok(());
        }
        let victim = base.get(WHITEOUT_PREFIX.len()..).unwrap_or_default();
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(Error::unsafe_entry(
                name,
                "whiteout of '.', '..' or nothing",
            ));
        }
        let mut victim_comps = parents.to_vec();
        victim_comps.push(victim);
        let rel = rel_of(&victim_comps);
        match self.options.mode {
            ApplyMode::Snapshot => {
                self.parents(name, &victim_comps, true)?;
                let full = self.full(&rel);
                if self.written.contains(&rel) {
                    // This layer has its own `x`: in overlay form it already hides the
                    // lower one (a whiteout only applies to lower layers).
                    return Ok(());
                }
                self.remove(&full)?;
                match rustix::fs::mknodat(CWD, &full, FileType::CharacterDevice, Mode::empty(), 0) {
                    Ok(()) => {}
                    Err(Errno::PERM) => {
                        return Err(Error::unsupported(
                            format!("entry {name:?}"),
                            "a snapshot whiteout is a 0/0 character device, which needs root (mknod)",
                        ));
                    }
                    Err(e) => return Err(Error::io(full, e.into())),
                }
                rustix::fs::utimensat(
                    CWD,
                    &full,
                    &timestamps((entry.mtime, entry.mtime_nsec)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno(&full))?;
            }
            ApplyMode::Merge => {
                if !self.parents(name, &victim_comps, false)? || self.written.contains(&rel) {
                    return Ok(());
                }
                let full = self.full(&rel);
                self.remove(&full)?;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, name: &str, comps: &[&[u8]], dir_rel: &[u8]) -> Result<(), Error> {
        match self.options.mode {
            ApplyMode::Snapshot => {
                if dir_rel.is_empty() {
                    return Err(Error::unsupported(
                        format!("entry {name:?}"),
                        "an opaque marker for the layer root has no overlay form",
                    ));
                }
                // `comps` ends in the marker, so this makes/verifies the directory.
                self.parents(name, comps, true)?;
                let full = self.full(dir_rel);
                // In a user namespace trusted xattrs are refused: overlay mounts there
                // use `userxattr`, which reads the user.* form.
                let set = match xattr::set(&full, b"trusted.overlay.opaque", b"y") {
                    Err(Errno::PERM) => xattr::set(&full, b"user.overlay.opaque", b"y"),
                    other => other,
                };
                match set {
                    Ok(()) => Ok(()),
                    Err(Errno::PERM) => Err(Error::unsupported(
                        format!("entry {name:?}"),
                        "an opaque snapshot directory needs trusted.overlay.opaque (root) or \
                         user.overlay.opaque (a user namespace)",
                    )),
                    Err(e) => Err(Error::io(full, e.into())),
                }
            }
            ApplyMode::Merge => {
                if !self.parents(name, comps, false)? {
                    return Ok(());
                }
                self.clear_lower(dir_rel)
            }
        }
    }

    /// Remove everything under `dir_rel` that this layer did not write, descending
    /// into the directories it did write (their lower contents are hidden too).
    fn clear_lower(&mut self, dir_rel: &[u8]) -> Result<(), Error> {
        let mut stack = vec![dir_rel.to_vec()];
        while let Some(rel) = stack.pop() {
            let full = self.full(&rel);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                // A symlink or file in that place has no children to hide.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(full, e)),
            }
            let mut names = Vec::new();
            for child in fs::read_dir(&full).map_err(io_err(&full))? {
                let child = child.map_err(io_err(&full))?;
                names.push(child.file_name().as_bytes().to_vec());
            }
            for child in names {
                let mut child_rel = rel.clone();
                if !child_rel.is_empty() {
                    child_rel.push(b'/');
                }
                child_rel.extend_from_slice(&child);
                if self.written.contains(&child_rel) {
                    stack.push(child_rel);
                } else {
                    let child_full = self.full(&child_rel);
                    self.remove(&child_full)?;
                }
            }
        }
        Ok(())
    }

    /// Directory modes and mtimes, deepest first (a descendant's path sorts after its
    /// ancestor's, so reverse order visits children first). Each path is checked
    /// again: a later entry may have replaced the directory or a parent.
    fn finish_dirs(&mut self) -> Result<(), Error> {
        let dirs = std::mem::take(&mut self.dirs);
        self.parent_ok = None;
        for (rel, meta) in dirs.iter().rev() {
            let name = String::from_utf8_lossy(rel).into_owned();
            let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
            match self.parents(&name, &comps, false) {
                Ok(true) => {}
                // Gone, or a later entry turned a parent into a symlink or file: the
                // directory this metadata was for no longer exists here.
                Ok(false) | Err(Error::UnsafeEntry { .. }) => continue,
                Err(e) => return Err(e),
            }
            let full = self.full(rel);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            rustix::fs::chmodat(CWD, &full, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(errno(&full))?;
            rustix::fs::utimensat(
                CWD,
                &full,
                &timestamps(meta.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno(&full))?;
        }
        Ok(())
    }
}

/// chown's error: `EINVAL` means the owner has no id in this user namespace.
fn owner_errno<'a>(path: &'a Path, entry: &'a Entry) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| {
        if e == Errno::INVAL {
            Error::UnmappedOwner {
                entry: entry.name(),
                uid: u32::try_from(entry.uid).unwrap_or(u32::MAX),
                gid: u32::try_from(entry.gid).unwrap_or(u32::MAX),
            }
        } else {
            Error::io(path, e.into())
        }
    }
}

/// The entry's uid/gid as kernel ids; -1 means "unchanged" to chown and is refused.
fn ids(name: &str, entry: &Entry) -> Result<(rustix::fs::Uid, rustix::fs::Gid), Error> {
    let bad = || {
        Error::corrupt(
            name,
            format!("uid/gid {}:{} out of range", entry.uid, entry.gid),
        )
    };
    let uid = u32::try_from(entry.uid)
        .ok()
        .filter(|u| *u != u32::MAX)
        .ok_or_else(bad)?;
    let gid = u32::try_from(entry.gid)
        .ok()
        .filter(|g| *g != u32::MAX)
        .ok_or_else(bad)?;
    Ok((
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    ))
}
