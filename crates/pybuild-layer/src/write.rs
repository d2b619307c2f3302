//! Diff directory → deterministic layer tar ([`write_layer`]), and tar stream →
//! compressed, hashed blob ([`compress_tar`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::pipeline::Pipeline;
use crate::reader::{self, TarReader};
use crate::{Error, LayerInfo, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, WriteOptions, xattr};

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
/// Largest value of an 8-byte octal header field (mode, uid, gid, dev numbers).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal header field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// File contents are copied in chunks of this size.
const COPY_CHUNK: usize = 256 << 10;

// USTAR header field offsets (POSIX pax(1), "ustar Interchange Format").
const OFF_NAME: usize = 0;
const OFF_LINKNAME: usize = 157;
const OFF_PREFIX: usize = 345;

/// Tar type flags.
pub(crate) mod kind {
    pub const REGULAR: u8 = b'0';
    pub const HARD_LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIRECTORY: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
}

/// Write the diff directory `dir` as a layer tar, compressed, into `out`, hashing the
/// uncompressed tar (diffID) and the compressed stream (digest) in one pass.
///
/// Deterministic: the same tree gives the same bytes on any machine. Order: each
/// directory's entry, then (if opaque) its `.wh..wh..opq` marker, then its children
/// sorted by name bytes, depth first (containerd's `filepath.Walk` order). A 0/0
/// character device `x` becomes an empty entry `.wh.x` (mode 0, owner 0:0) in `x`'s
/// place. Sockets are skipped (a tar cannot hold them). A file whose name starts with
/// `.wh.` cannot be represented and is an error, as are overlay redirects and
/// metacopy files (their content is not in the diff dir).
pub fn write_layer(
    dir: &Path,
    options: &WriteOptions,
    out: impl Write,
) -> Result<LayerInfo, Error> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let pipeline = Pipeline::new(options.compression, out)?;
    let compression = pipeline.compression();
    let mut walker = Walker {
        root: dir,
        clamp: options.mtime_clamp,
        tar: TarWriter::new(pipeline),
        links: HashMap::new(),
        buf: vec![0u8; COPY_CHUNK],
    };
    walker.walk()?;
    let TarWriter {
        out: mut pipeline,
        entries,
    } = walker.tar;
    pipeline
        .write_all(&[0u8; 2 * BLOCK])
        .map_err(|source| Error::Output { source })?;
    let f = pipeline.finish()?;
    Ok(LayerInfo {
        diff_id: f.diff_id,
        digest: f.digest,
        size: f.size,
        uncompressed_size: f.uncompressed_size,
        media_type: compression.media_type(true),
        entries,
    })
}

/// Compress and hash an already-built tar stream in one pass (`ADD rootfs.tar`
/// imports, re-compressing a layer). A gzip or zstd input is decompressed first
/// (detected by magic bytes), so the diffID is always that of the plain tar. The tar
/// is parsed on the way through (to count entries and reject a stream that is not a
/// tar), but its bytes are passed on unchanged, trailing padding included:
/// `mtime_clamp` does not apply.
pub fn compress_tar(
    tar: impl Read,
    options: &WriteOptions,
    out: impl Write,
) -> Result<LayerInfo, Error> {
    let pipeline = Pipeline::new(options.compression, out)?;
    let compression = pipeline.compression();
    let input = reader::decompress(tar)?;
    let mut tar = TarReader::new(Tee {
        inner: input,
        out: pipeline,
        write_error: None,
    });
    let entries = match count_entries(&mut tar) {
        Ok(n) => n,
        Err(e) => {
            // A failure of the output surfaces through the reader; report it as what
            // it is.
            return Err(match tar.get_mut().write_error.take() {
                Some(source) => Error::Output { source },
                None => e,
            });
        }
    };
    let f = tar.into_inner().out.finish()?;
    Ok(LayerInfo {
        diff_id: f.diff_id,
        digest: f.digest,
        size: f.size,
        uncompressed_size: f.uncompressed_size,
        media_type: compression.media_type(true),
        entries,
    })
}

fn count_entries<R: Read>(tar: &mut TarReader<R>) -> Result<u64, Error> {
    let mut entries = 0;
    while tar.next_entry()?.is_some() {
        entries += 1;
    }
    // Whatever follows the end-of-archive blocks is part of the tar as given.
    tar.drain()?;
    Ok(entries)
}

/// A reader that copies everything read into the pipeline.
struct Tee<R, W: Write> {
    inner: R,
    out: Pipeline<W>,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(buf.get(..n).unwrap_or(buf)) {
            let text = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(format!("writing output: {text}")));
        }
        Ok(n)
    }
}

/// One tar member as this writer emits it.
struct Member<'a> {
    path: &'a [u8],
    link: &'a [u8],
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    dev: (u32, u32),
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Member<'a> {
    fn new(path: &'a [u8], kind: u8) -> Self {
        Member {
            path,
            link: b"",
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            dev: (0, 0),
            xattrs: &[],
        }
    }
}

struct TarWriter<W: Write> {
    out: Pipeline<W>,
    entries: u64,
}

impl<W: Write> TarWriter<W> {
    fn new(out: Pipeline<W>) -> Self {
        Self { out, entries: 0 }
    }

    /// Write a member's header, preceded by a PAX header when some value does not fit
    /// USTAR (long or non-ASCII names, large numbers, xattrs). Only the records needed
    /// are written, sorted by key, so the output depends on nothing but the member.
    fn header(&mut self, m: &Member<'_>) -> Result<(), Error> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut header = tar::Header::new_ustar();
        let mut numeric = |key: &str, value: i64, max: u64| -> u64 {
            match u64::try_from(value) {
                Ok(v) if v <= max => v,
                _ => {
                    pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
                    0
                }
            }
        };
        let uid = numeric("uid", i64::try_from(m.uid).unwrap_or(i64::MAX), MAX_OCTAL_8);
        let gid = numeric("gid", i64::try_from(m.gid).unwrap_or(i64::MAX), MAX_OCTAL_8);
        let size = numeric(
            "size",
            i64::try_from(m.size).unwrap_or(i64::MAX),
            MAX_OCTAL_12,
        );
        let mtime = numeric("mtime", m.mtime, MAX_OCTAL_12);
        header.set_mode(m.mode & 0o7777);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_size(size);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::new(m.kind));
        if m.kind == kind::CHAR || m.kind == kind::BLOCK {
            // Linux majors are 12 bits and minors 20: always within the octal field.
            let output = |source| Error::Output { source };
            header
                .set_device_major(m.dev.0 & MAX_OCTAL_8 as u32)
                .map_err(output)?;
            header
                .set_device_minor(m.dev.1 & MAX_OCTAL_8 as u32)
                .map_err(output)?;
        }
        let bytes = header.as_mut_bytes();
        match split_ustar_path(m.path) {
            Some((prefix, name)) => {
                put(bytes, OFF_NAME, NAME_LEN, name);
                put(bytes, OFF_PREFIX, PREFIX_LEN, prefix);
            }
            None => {
                pax.push((b"path".to_vec(), m.path.to_vec()));
                put(bytes, OFF_NAME, NAME_LEN, m.path);
            }
        }
        if m.link.len() > NAME_LEN || !m.link.is_ascii() {
            pax.push((b"linkpath".to_vec(), m.link.to_vec()));
        }
        put(bytes, OFF_LINKNAME, NAME_LEN, m.link);
        for (name, value) in m.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax.push((key, value.clone()));
        }
        header.set_cksum();

        if !pax.is_empty() {
            pax.sort();
            let mut data = Vec::new();
            for (key, value) in &pax {
                pax_record(&mut data, key, value);
            }
            let mut ph = tar::Header::new_ustar();
            ph.set_mode(0);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(data.len() as u64);
            ph.set_entry_type(tar::EntryType::new(kind::PAX));
            put(
                ph.as_mut_bytes(),
                OFF_NAME,
                NAME_LEN,
                &pax_header_name(m.path),
            );
            ph.set_cksum();
            self.write(ph.as_bytes())?;
            self.write(&data)?;
            self.pad(data.len() as u64)?;
        }
        self.write(header.as_bytes())?;
        self.entries += 1;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(bytes)
            .map_err(|source| Error::Output { source })
    }

    /// Zero-fill the member's data up to the next block boundary.
    fn pad(&mut self, size: u64) -> Result<(), Error> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// Copy `value` into a header field, truncated to it. Overlong values go in a PAX
/// record; the truncated copy is only for readers that ignore PAX.
fn put(bytes: &mut [u8; BLOCK], offset: usize, len: usize, value: &[u8]) {
    let n = value.len().min(len);
    if let (Some(dst), Some(src)) = (bytes.get_mut(offset..offset + n), value.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// Split a path into USTAR's prefix and name fields, or `None` when it needs a PAX
/// `path` record (Go's `splitUSTARPath`, plus: non-ASCII names always go to PAX, as Go
/// does, since USTAR fields are ASCII).
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if !path.is_ascii() {
        return None;
    }
    if path.len() <= NAME_LEN {
        return Some((b"", path));
    }
    let mut length = path.len();
    if length > PREFIX_LEN + 1 {
        length = PREFIX_LEN + 1;
    } else if path.get(length - 1) == Some(&b'/') {
        length -= 1;
    }
    let i = path.get(..length)?.iter().rposition(|b| *b == b'/')?;
    let name_len = path.len() - i - 1;
    if i == 0 || name_len > NAME_LEN || name_len == 0 || i > PREFIX_LEN {
        return None;
    }
    Some((path.get(..i)?, path.get(i + 1..)?))
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself included.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() + base != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The PAX header's own name: `dir/PaxHeaders.0/base` (Go's choice), ASCII only.
fn pax_header_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, base) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(base);
    name.retain(|b| b.is_ascii() && *b != 0);
    name.truncate(NAME_LEN);
    name
}

/// A directory being walked: its path relative to the root (no trailing slash, empty
/// for the root), its children's names in order, and the next one to visit.
struct Frame {
    rel: Vec<u8>,
    names: Vec<Vec<u8>>,
    next: usize,
}

struct Walker<'a, W: Write> {
    root: &'a Path,
    clamp: Option<i64>,
    tar: TarWriter<W>,
    /// (dev, inode) → the path of the first member with it, for hard links.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn sorted_names(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        names.push(entry.file_name().as_bytes().to_vec());
    }
    names.sort_unstable();
    Ok(names)
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        rel.extend_from_slice(parent);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

impl<W: Write> Walker<'_, W> {
    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.clamp {
            Some(clamp) if meta.mtime() > clamp => clamp,
            _ => meta.mtime(),
        }
    }

    /// Depth first with an explicit stack: a hostile or just very deep tree cannot
    /// overflow the call stack.
    fn walk(&mut self) -> Result<(), Error> {
        let mut stack = vec![Frame {
            rel: Vec::new(),
            names: sorted_names(self.root)?,
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.get(frame.next) else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            let rel = join(&frame.rel, name);
            let parent = frame.rel.clone();
            let name = name.clone();
            if let Some(child) = self.member(&parent, &name, rel)? {
                stack.push(child);
            }
        }
        Ok(())
    }

    /// Emit one path; a directory comes back as a frame to descend into.
    fn member(&mut self, parent: &[u8], name: &[u8], rel: Vec<u8>) -> Result<Option<Frame>, Error> {
        let full = self.full(&rel);
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::io(&full, e))?;
        let ft = meta.file_type();
        let display = || full.display().to_string();

        if ft.is_char_device() && meta.rdev() == 0 {
            // overlayfs's whiteout: the OCI form is an empty `.wh.NAME` entry.
            if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(Error::unsupported(
                    display(),
                    "a whiteout of a name starting with .wh. cannot be represented in a layer",
                ));
            }
            let mut wh = WHITEOUT_PREFIX.as_bytes().to_vec();
            wh.extend_from_slice(name);
            let path = join(parent, &wh);
            let mut m = Member::new(&path, kind::REGULAR);
            m.mtime = self.mtime(&meta);
            self.tar.header(&m)?;
            return Ok(None);
        }
        if ft.is_socket() {
            // Sockets are bound by running programs; tar has no type for them and
            // BuildKit's differ skips them too.
            return Ok(None);
        }
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Err(Error::unsupported(
                display(),
                "a file whose name starts with .wh. would read as a whiteout",
            ));
        }

        let all_xattrs = xattr::list(&full).map_err(|e| Error::io(&full, e))?;
        let mut opaque = false;
        for (key, value) in &all_xattrs {
            let key = key.as_slice();
            if (key.ends_with(b".overlay.redirect") || key.ends_with(b".overlay.metacopy"))
                && xattr::is_overlay_private(key)
            {
                return Err(Error::unsupported(
                    display(),
                    format!(
                        "overlay {} (mount without redirect_dir/metacopy): the content is not in the diff dir",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            if (key == b"trusted.overlay.opaque" || key == b"user.overlay.opaque") && value == b"y"
            {
                opaque = true;
            }
        }
        let xattrs: xattr::Xattrs = all_xattrs
            .into_iter()
            .filter(|(k, _)| !xattr::is_overlay_private(k))
            .collect();

        let uid = u64::from(meta.uid());
        let gid = u64::from(meta.gid());
        let mtime = self.mtime(&meta);
        let mode = meta.mode() & 0o7777;

        if ft.is_dir() {
            let mut path = rel.clone();
            path.push(b'/');
            let mut m = Member::new(&path, kind::DIRECTORY);
            (m.mode, m.uid, m.gid, m.mtime, m.xattrs) = (mode, uid, gid, mtime, &xattrs);
            self.tar.header(&m)?;
            if opaque {
                // The marker goes first among the children: readers that apply it as
                // they meet it must not delete this layer's own files.
                let marker = join(&rel, WHITEOUT_OPAQUE.as_bytes());
                let mut m = Member::new(&marker, kind::REGULAR);
                m.mtime = mtime;
                self.tar.header(&m)?;
            }
            let names = sorted_names(&full)?;
            return Ok(Some(Frame {
                rel,
                names,
                next: 0,
            }));
        }

        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                let mut m = Member::new(&rel, kind::HARD_LINK);
                m.link = &first;
                (m.mode, m.uid, m.gid, m.mtime, m.xattrs) = (mode, uid, gid, mtime, &xattrs);
                self.tar.header(&m)?;
                return Ok(None);
            }
            self.links.insert(key, rel.clone());
        }

        let mut m = Member::new(&rel, kind::REGULAR);
        (m.mode, m.uid, m.gid, m.mtime, m.xattrs) = (mode, uid, gid, mtime, &xattrs);
        if ft.is_file() {
            m.size = meta.len();
            // Open before writing the header, so a file that vanished is an error
            // before anything inconsistent reaches the stream.
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(nofollow())
                .open(&full)
                .map_err(|e| Error::io(&full, e))?;
            self.tar.header(&m)?;
            self.copy_data(file, &full, m.size)?;
            return Ok(None);
        }
        let target;
        if ft.is_symlink() {
            target = fs::read_link(&full).map_err(|e| Error::io(&full, e))?;
            m.kind = kind::SYMLINK;
            m.link = target.as_os_str().as_bytes();
        } else if ft.is_char_device() || ft.is_block_device() {
            m.kind = if ft.is_char_device() {
                kind::CHAR
            } else {
                kind::BLOCK
            };
            m.dev = (
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev()),
            );
        } else if ft.is_fifo() {
            m.kind = kind::FIFO;
        } else {
            return Err(Error::unsupported(display(), "unknown file type"));
        }
        self.tar.header(&m)?;
        Ok(None)
    }

    /// Copy exactly `size` bytes (the size in the header already written), then pad.
    fn copy_data(&mut self, mut file: File, path: &Path, size: u64) -> Result<(), Error> {
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match file.read(chunk) {
                Ok(0) => {
                    return Err(Error::io(
                        path,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being written to the layer",
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            let data = self.buf.get(..n).unwrap_or_default();
            self.tar.write(data)?;
            left -= n as u64;
        }
        self.tar.pad(size)
    }
}

/// `O_NOFOLLOW` for `OpenOptionsExt::custom_flags`.
pub(crate) fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for (key, value, expect) in [
            (&b"path"[..], &b"a"[..], &b"9 path=a\n"[..]),
            // 4 + 6 + 3 = 13, plus two digits.
            (b"path", b"abcdef", b"15 path=abcdef\n"),
            // 4 + 3 + 3 = 10: one digit would make it 11, so two: 12.
            (b"path", b"abc", b"12 path=abc\n"),
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, key, value);
            assert_eq!(out, expect, "{}", String::from_utf8_lossy(expect));
            let text = String::from_utf8(out.clone()).expect("ascii");
            let len: usize = text
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("len");
            assert_eq!(len, out.len());
        }
        // Around the 2 → 3 digit boundary.
        for n in 85..105 {
            let value = vec![b'x'; n];
            let mut out = Vec::new();
            pax_record(&mut out, b"path", &value);
            let text = String::from_utf8(out.clone()).expect("ascii");
            let len: usize = text
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("len");
            assert_eq!(len, out.len(), "value length {n}");
        }
    }

    #[test]
    fn ustar_split_follows_go() {
        assert_eq!(split_ustar_path(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = [vec![b'd'; 120], b"/file".to_vec()].concat();
        assert_eq!(split_ustar_path(&long), Some((&long[..120], &b"file"[..])));
        // A single component longer than 100 bytes cannot be split.
        assert_eq!(split_ustar_path(&[b'x'; 200]), None);
        // Non-ASCII always goes to PAX.
        assert_eq!(split_ustar_path("é".as_bytes()), None);
        // A last component over 100 bytes cannot be split either.
        let long = [b"d/".to_vec(), vec![b'f'; 150]].concat();
        assert_eq!(split_ustar_path(&long), None);
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"dir/"), b"PaxHeaders.0/dir");
        assert_eq!(pax_header_name("ü".as_bytes()), b"PaxHeaders.0/");
    }
}
