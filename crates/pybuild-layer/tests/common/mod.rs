//! Helpers shared by the integration tests: a fixture diff dir with every kind of
//! entry, tree comparison, xattr access, and a raw tar builder for hostile layers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

/// The fixed mtime every fixture entry gets.
pub const FIXTURE_MTIME: i64 = 1_700_000_000;
pub const LONG_NAME_LEN: usize = 200;

/// Whether the tests run as root (mknod, chown, trusted.* xattrs). `/proc/self` is
/// owned by the process's effective uid.
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Deterministic pseudo-random bytes (xorshift64*), so the "random" 3 MiB file is the
/// same in every copy of the fixture.
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn long_name() -> String {
    "n".repeat(LONG_NAME_LEN)
}

pub fn long_target() -> String {
    format!("/{}", "segment/".repeat(40))
}

/// A path of long components: over 255 bytes in total, so the tar needs either the
/// USTAR prefix or a PAX path.
pub fn deep_dir() -> String {
    format!(
        "deep/{}/{}/{}",
        "p".repeat(90),
        "q".repeat(90),
        "r".repeat(90)
    )
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// All xattrs of a path (not following symlinks), sorted.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let size = rustix::fs::llistxattr_query(path).expect("listxattr");
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..]).expect("listxattr");
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let os = OsStr::from_bytes(name);
        let size = rustix::fs::lgetxattr_query(path, os).expect("getxattr");
        let mut value = vec![0u8; size];
        let n = rustix::fs::lgetxattr(path, os, &mut value[..]).expect("getxattr");
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// mknod; a 0/0 character device gets mode 0, like overlayfs's whiteouts.
pub fn mknod(path: &Path, file_type: FileType, major: u32, minor: u32) {
    let whiteout = file_type == FileType::CharacterDevice && major == 0 && minor == 0;
    rustix::fs::mknodat(
        CWD,
        path,
        file_type,
        Mode::from_raw_mode(if whiteout { 0 } else { 0o644 }),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

pub fn set_times(path: &Path, atime: i64, mtime: i64) {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(&p, data).expect("write");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(&p).expect("mkdir");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Build the fixture diff dir under `root` (which must exist and be empty). The
/// steps run in reverse when `reverse`, and atimes differ by `atime`, but the
/// resulting tree is the same.
pub fn build_fixture(root: &Path, reverse: bool, atime: i64) {
    let root_user = is_root();
    type Step = Box<dyn Fn(&Path)>;
    let mut steps: Vec<Step> = vec![
        Box::new(|r| write(r, "empty", b"", 0o644)),
        Box::new(|r| write(r, "big.bin", &pseudo_random(3 << 20, 42), 0o600)),
        Box::new(|r| write(r, "dir/sub/deep/file.txt", b"nested\n", 0o640)),
        Box::new(|r| {
            fs::create_dir_all(r.join("dir")).expect("mkdir");
            std::os::unix::fs::symlink("sub/deep/file.txt", r.join("dir/link")).expect("symlink");
        }),
        Box::new(|r| {
            write(r, "hl/a", b"shared content\n", 0o644);
            fs::hard_link(r.join("hl/a"), r.join("hl/b")).expect("hard link");
        }),
        Box::new(|r| {
            rustix::fs::mknodat(
                CWD,
                r.join("fifo"),
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .expect("mkfifo");
        }),
        Box::new(|r| write(r, "bin/su", b"#!/bin/sh\n", 0o4755)),
        Box::new(|r| write(r, "bin/sgid", b"#!/bin/sh\n", 0o2711)),
        Box::new(|r| mkdir(r, "tmp", 0o1777)),
        Box::new(|r| write(r, "ünïcødé-文件.txt", "unicode ✓\n".as_bytes(), 0o644)),
        Box::new(|r| write(r, &format!("long/{}", long_name()), b"long name\n", 0o644)),
        Box::new(|r| {
            std::os::unix::fs::symlink(long_target(), r.join("longlink")).expect("symlink")
        }),
        Box::new(|r| {
            write(r, "attrs.txt", b"xattr\n", 0o644);
            set_xattr(&r.join("attrs.txt"), "user.test", b"1");
        }),
        Box::new(|r| write(r, &format!("{}/leaf.txt", deep_dir()), b"deep\n", 0o644)),
        // Component order: "a/" and its children come before "a-b" although '-' < '/'.
        Box::new(|r| write(r, "a/b.txt", b"a/b\n", 0o644)),
        Box::new(|r| write(r, "a-b", b"a-b\n", 0o644)),
        Box::new(|r| write(r, "a.txt", b"a.txt\n", 0o644)),
        Box::new(|r| write(r, "a0", b"a0\n", 0o644)),
    ];
    if root_user {
        steps.push(Box::new(|r| {
            mknod(&r.join("deleted"), FileType::CharacterDevice, 0, 0)
        }));
        steps.push(Box::new(|r| {
            fs::create_dir_all(r.join("dir")).expect("mkdir");
            mknod(&r.join("dir/gone"), FileType::CharacterDevice, 0, 0);
        }));
        steps.push(Box::new(|r| {
            mkdir(r, "opq", 0o755);
            set_xattr(&r.join("opq"), "trusted.overlay.opaque", b"y");
            write(r, "opq/inner.txt", b"inner\n", 0o644);
        }));
        steps.push(Box::new(|r| {
            fs::create_dir_all(r.join("dev")).expect("mkdir");
            mknod(&r.join("dev/null1"), FileType::CharacterDevice, 1, 3);
            mknod(&r.join("dev/blk"), FileType::BlockDevice, 7, 200);
        }));
        steps.push(Box::new(|r| {
            write(r, "owned.txt", b"owned\n", 0o640);
            std::os::unix::fs::lchown(r.join("owned.txt"), Some(1234), Some(5678)).expect("chown");
            std::os::unix::fs::symlink("owned.txt", r.join("owned-link")).expect("symlink");
            std::os::unix::fs::lchown(r.join("owned-link"), Some(42), Some(43)).expect("lchown");
        }));
    }
    if reverse {
        steps.reverse();
    }
    for step in &steps {
        step(root);
    }
    // Directories made implicitly get the umask's mode: pin them.
    for d in [
        "dir",
        "dir/sub",
        "dir/sub/deep",
        "hl",
        "bin",
        "long",
        "a",
        "deep",
    ] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let deep = deep_dir();
    let mut prefix = PathBuf::new();
    for comp in deep.split('/') {
        prefix.push(comp);
        fs::set_permissions(root.join(&prefix), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    if root_user {
        fs::set_permissions(root.join("dev"), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    set_tree_times(root, atime, FIXTURE_MTIME);
}

/// Give every entry under `root` the same mtime (children first, since touching a
/// child does not change the parent but creating one does).
pub fn set_tree_times(root: &Path, atime: i64, mtime: i64) {
    let mut all = Vec::new();
    collect(root, root, &mut all);
    all.sort();
    for rel in all.iter().rev() {
        set_times(&root.join(rel), atime, mtime);
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        out.push(path.strip_prefix(root).expect("prefix").to_path_buf());
        if entry.file_type().expect("type").is_dir() {
            collect(root, &path, out);
        }
    }
}

/// Every relative path under `root`, sorted.
pub fn list_tree(root: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    collect(root, root, &mut all);
    all.sort();
    all
}

/// Compare two trees entry by entry: type, mode, owner, mtime (seconds), size and
/// content, link target, device numbers, xattrs, and hard-link counts.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = list_tree(expected);
    let b = list_tree(actual);
    assert_eq!(a, b, "different sets of paths");
    for rel in &a {
        let (pa, pb) = (expected.join(rel), actual.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).expect("lstat"),
            fs::symlink_metadata(&pb).expect("lstat"),
        );
        let what = rel.display();
        assert_eq!(ma.file_type(), mb.file_type(), "{what}: type");
        assert_eq!(ma.uid(), mb.uid(), "{what}: uid");
        assert_eq!(ma.gid(), mb.gid(), "{what}: gid");
        assert_eq!(ma.mtime(), mb.mtime(), "{what}: mtime");
        assert_eq!(ma.rdev(), mb.rdev(), "{what}: rdev");
        assert_eq!(ma.nlink(), mb.nlink(), "{what}: nlink");
        assert_eq!(xattrs(&pa), xattrs(&pb), "{what}: xattrs");
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).ok(),
                fs::read_link(&pb).ok(),
                "{what}: target"
            );
        } else {
            assert_eq!(
                ma.mode(),
                mb.mode(),
                "{what}: mode {:o} vs {:o}",
                ma.mode(),
                mb.mode()
            );
        }
        if ma.file_type().is_file() {
            assert_eq!(fs::read(&pa).ok(), fs::read(&pb).ok(), "{what}: content");
        }
    }
}

/// A hand-made tar, for names and structures the `tar` crate's builder refuses.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one member; `name` and `link` go into the header fields unchecked.
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: u8,
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        self.entry_sized(name, kind, link, data, data.len() as u64, mode)
    }

    /// As `entry`, but with a size field that may disagree with the data given.
    pub fn entry_sized(
        &mut self,
        name: &[u8],
        kind: u8,
        link: &[u8],
        data: &[u8],
        size: u64,
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::new(kind));
        let b = h.as_mut_bytes();
        b[..name.len()].copy_from_slice(name);
        b[157..157 + link.len()].copy_from_slice(link);
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Append a PAX extended header with these records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + base.to_string().len();
            if len.to_string().len() + base != len {
                len = base + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.entry(b"PaxHeaders.0/x", b'x', b"", &data, 0o644)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// A scratch area: `parent/target` is where layers go, `parent/outside` a directory
/// and `parent/outside.txt` a file an escaping entry would hit.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("target")).expect("mkdir");
        fs::create_dir(dir.path().join("outside")).expect("mkdir");
        fs::write(dir.path().join("outside.txt"), b"original\n").expect("write");
        fs::set_permissions(
            dir.path().join("outside.txt"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        Self { dir }
    }

    pub fn parent(&self) -> &Path {
        self.dir.path()
    }

    pub fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Nothing outside `target` changed: the parent holds exactly what `new` made,
    /// `outside/` is still empty and `outside.txt` unchanged.
    pub fn assert_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(self.parent())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside", "outside.txt", "target"],
            "something was created outside target"
        );
        assert_eq!(
            fs::read_dir(self.outside()).expect("read_dir").count(),
            0,
            "something was created in outside/"
        );
        assert_eq!(
            fs::read(self.parent().join("outside.txt")).expect("read"),
            b"original\n"
        );
        let m = fs::metadata(self.parent().join("outside.txt")).expect("stat");
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o644,
            "outside.txt mode changed"
        );
    }
}
