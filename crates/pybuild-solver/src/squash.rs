//! `--squash`: the layers a Dockerfile adds, merged into one diff directory in overlay
//! format, as overlayfs itself would see them stacked (buildah's `--squash`; BuildKit
//! refuses the option, moby/buildkit#819).
//!
//! Layers are applied bottom to top onto the target: a whiteout replaces whatever the
//! earlier layers put at its path (and stays a whiteout, since the base image below may
//! still have the path); an opaque directory drops what earlier layers put in it; a
//! directory that replaces a whiteout becomes opaque, or the base's old content would
//! show through again.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, mknodat};

use crate::diff::set_mtime;
use crate::rootfs::{is_opaque, is_whiteout};

fn set_opaque(path: &Path) -> io::Result<()> {
    rustix::fs::lsetxattr(
        path,
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(io::Error::from)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    set_mtime(path, (meta.mtime(), meta.mtime_nsec() as u32))
}

/// Merge the diff directories `layers` (bottom first) into `target` (empty).
pub(crate) fn squash(layers: &[&Path], target: &Path) -> io::Result<()> {
    for layer in layers {
        merge(layer, target)?;
    }
    Ok(())
}

fn merge(src: &Path, dst: &Path) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let meta = fs::symlink_metadata(&s)?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            remove_any(&d)?;
            mknodat(CWD, &d, FileType::CharacterDevice, Mode::empty(), 0)?;
            continue;
        }
        if ft.is_dir() {
            let existing = fs::symlink_metadata(&d).ok();
            let replaces_whiteout = existing.as_ref().is_some_and(is_whiteout);
            let opaque = is_opaque(&s);
            if existing.as_ref().is_some_and(|m| !m.is_dir()) || (opaque && existing.is_some()) {
                remove_any(&d)?;
            }
            if fs::symlink_metadata(&d).is_err() {
                fs::create_dir(&d)?;
            }
            if opaque || replaces_whiteout {
                set_opaque(&d)?;
            }
            merge(&s, &d)?;
            lchown(&d, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            set_times(&d, &meta)?;
            continue;
        }
        remove_any(&d)?;
        if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else if ft.is_fifo() {
            mknodat(
                CWD,
                &d,
                FileType::Fifo,
                Mode::from_raw_mode(meta.mode() & 0o7777),
                0,
            )?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            mknodat(
                CWD,
                &d,
                kind,
                Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )?;
        } else {
            // Sockets cannot be in a layer.
            continue;
        }
        lchown(&d, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        set_times(&d, &meta)?;
    }
    Ok(())
}
