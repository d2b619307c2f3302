//! A small tar reader for untrusted layers, and stream decompression.
//!
//! Why not the `tar` crate's reader: it reads PAX and GNU long-name headers into
//! memory whatever their size, so a compressed layer a few MB large can make it
//! allocate gigabytes. This reader bounds them (1 MiB, Go's `archive/tar` limit),
//! follows Go's `archive/tar` (what containerd and Docker use) wherever readers
//! disagree, so a layer means the same thing here as in the runtimes, and reports
//! every inconsistency as [`Error::Corrupt`] naming the entry.

use std::io::{self, BufReader, Chain, Cursor, Read};

use crate::xattr::Xattrs;
use crate::{DETECT_LEN, Detected, Error, detect_compression};

const BLOCK: usize = 512;
/// Largest PAX extended header or GNU long name/link accepted (Go's
/// `maxSpecialFileSize`).
const MAX_SPECIAL: u64 = 1 << 20;

/// The raw stream with its sniffed first bytes put back in front.
type Input<R> = Chain<Cursor<Vec<u8>>, R>;

/// A decompressed layer stream.
pub(crate) enum Decoded<R: Read> {
    Plain(Input<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Input<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Input<R>>>>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
        }
    }
}

/// Look at the first bytes of `reader` and decompress accordingly (gzip members are
/// concatenated, zstd frames too, as Go's readers do).
pub(crate) fn decompress<R: Read>(mut reader: R) -> Result<Decoded<R>, Error> {
    let mut head = vec![0u8; DETECT_LEN];
    let mut got = 0;
    while got < head.len() {
        match reader.read(head.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::corrupt("", format!("reading layer stream: {e}"))),
        }
    }
    head.truncate(got);
    let detected = detect_compression(&head);
    let chained = Cursor::new(head).chain(reader);
    Ok(match detected {
        Detected::Plain => Decoded::Plain(chained),
        Detected::Gzip => Decoded::Gzip(Box::new(flate2::read::MultiGzDecoder::new(chained))),
        Detected::Zstd => Decoded::Zstd(Box::new(
            zstd::stream::read::Decoder::new(chained)
                .map_err(|e| Error::corrupt("", format!("zstd: {e}")))?,
        )),
        Detected::Bzip2 | Detected::Xz => {
            return Err(Error::unsupported(
                format!("{detected:?} compressed layer"),
                "layers are plain, gzip or zstd tar streams",
            ));
        }
    })
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One tar entry's header, with PAX and GNU extensions applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The raw name (PAX `path` > GNU long name > USTAR prefix/name).
    pub path: Vec<u8>,
    /// The raw link target, for links.
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Bytes of data that follow (0 for everything but regular files).
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records, in the order given.
    pub xattrs: Xattrs,
}

impl Entry {
    /// The name for messages.
    pub(crate) fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Streams entries out of a tar.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// The current entry's name, for messages.
    current: String,
    done: bool,
}

/// Accumulated extension headers for the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<Xattrs>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            current: String::new(),
            done: false,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn corrupt(&self, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(self.current.clone(), reason)
    }

    fn stream_error(&self, e: io::Error) -> Error {
        self.corrupt(format!("reading layer stream: {e}"))
    }

    /// Read into `buf` until full or end of stream; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(buf.get_mut(got..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(e)),
            }
        }
        Ok(got)
    }

    /// Read and discard `n` bytes, which must be there.
    fn skip(&mut self, mut n: u64) -> Result<(), Error> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
            let got = self.fill(buf.get_mut(..want).unwrap_or_default())?;
            if got == 0 {
                return Err(self.corrupt(format!("stream ends {n} bytes early")));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Read the current entry's data. Returns 0 only when all of it has been read;
    /// a stream that ends before is [`Error::Corrupt`].
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        loop {
            match self.inner.read(buf.get_mut(..want).unwrap_or_default()) {
                Ok(0) => {
                    return Err(self.corrupt(format!(
                        "stream ends {} bytes before the end of the entry's data",
                        self.remaining
                    )));
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(e)),
            }
        }
    }

    /// Read the rest of the stream after the end-of-archive marker (so the caller's
    /// hash covers the whole tar).
    pub(crate) fn drain(&mut self) -> Result<(), Error> {
        self.current.clear();
        let mut buf = [0u8; 8192];
        while self.fill(&mut buf)? > 0 {}
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive (a zero block, or the
    /// stream ending cleanly at a header boundary, as Go accepts). The previous
    /// entry's unread data is skipped first.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining.saturating_add(self.padding);
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest)?;
        self.current.clear();

        let mut pending = Pending::default();
        loop {
            let mut block = [0u8; BLOCK];
            let got = self.fill(&mut block)?;
            if got == 0 || block.iter().all(|b| *b == 0) {
                if got != 0 && got != BLOCK {
                    return Err(self.corrupt("stream ends inside a header"));
                }
                self.done = true;
                if pending.pax.is_some()
                    || pending.long_name.is_some()
                    || pending.long_link.is_some()
                {
                    return Err(self.corrupt("extension header without an entry after it"));
                }
                return Ok(None);
            }
            if got != BLOCK {
                return Err(self.corrupt("stream ends inside a header"));
            }
            let header = Header(&block);
            self.current = String::from_utf8_lossy(&header.name()).into_owned();
            if !header.checksum_ok() {
                return Err(self.corrupt("header checksum mismatch"));
            }
            let typeflag = block[156];
            let size = header.number(124, 12).map_err(|r| self.corrupt(r))?;
            let size = u64::try_from(size).map_err(|_| self.corrupt("negative size"))?;
            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    let data = self.special(size)?;
                    match typeflag {
                        b'x' => {
                            if pending.pax.is_some() {
                                return Err(self.corrupt("two PAX headers for one entry"));
                            }
                            pending.pax = Some(parse_pax(&data).map_err(|r| self.corrupt(r))?);
                        }
                        // Global PAX records: ignored, as containerd does.
                        b'g' => {}
                        b'L' => pending.long_name = Some(trim_nul(&data).to_vec()),
                        _ => pending.long_link = Some(trim_nul(&data).to_vec()),
                    }
                    continue;
                }
                _ => {}
            }
            let entry = self.entry(header, typeflag, size, pending)?;
            self.current = entry.name();
            self.remaining = entry.size;
            self.padding = pad(entry.size);
            return Ok(Some(entry));
        }
    }

    /// Read an extension header's data (bounded) and its padding.
    fn special(&mut self, size: u64) -> Result<Vec<u8>, Error> {
        if size > MAX_SPECIAL {
            return Err(self.corrupt(format!(
                "extension header of {size} bytes (limit {MAX_SPECIAL})"
            )));
        }
        let mut data = vec![0u8; size as usize];
        if self.fill(&mut data)? != data.len() {
            return Err(self.corrupt("stream ends inside an extension header"));
        }
        self.skip(pad(size))?;
        Ok(data)
    }

    fn entry(
        &self,
        header: Header<'_>,
        typeflag: u8,
        size: u64,
        pending: Pending,
    ) -> Result<Entry, Error> {
        let c = |r: String| self.corrupt(r);
        let mut path = pending.long_name.unwrap_or_else(|| header.name());
        let mut link = pending
            .long_link
            .unwrap_or_else(|| trim_nul(header.field(157, 100)).to_vec());
        let mut entry = Entry {
            path: Vec::new(),
            link: Vec::new(),
            kind: Kind::File,
            mode: (header.number(100, 8).map_err(c)? & 0o7777) as u32,
            uid: u64::try_from(header.number(108, 8).map_err(c)?)
                .map_err(|_| self.corrupt("negative uid"))?,
            gid: u64::try_from(header.number(116, 8).map_err(c)?)
                .map_err(|_| self.corrupt("negative gid"))?,
            mtime: header.number(136, 12).map_err(c)?,
            mtime_nsec: 0,
            size,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        };
        for (key, value) in pending.pax.unwrap_or_default() {
            let text = || String::from_utf8_lossy(&value).into_owned();
            let num = |what: &str| -> Result<u64, Error> {
                text()
                    .parse::<u64>()
                    .map_err(|_| self.corrupt(format!("PAX {what} {:?} is not a number", text())))
            };
            match key.as_slice() {
                b"path" => path = value,
                b"linkpath" => link = value,
                b"size" => entry.size = num("size")?,
                b"uid" => entry.uid = num("uid")?,
                b"gid" => entry.gid = num("gid")?,
                b"mtime" => {
                    (entry.mtime, entry.mtime_nsec) = parse_pax_time(&text())
                        .ok_or_else(|| self.corrupt(format!("PAX mtime {:?}", text())))?;
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = k.get(b"SCHILY.xattr.".len()..).unwrap_or_default();
                    entry.xattrs.push((name.to_vec(), value));
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(Error::unsupported(
                        format!("entry {:?}", self.current),
                        "PAX sparse files",
                    ));
                }
                _ => {}
            }
        }
        entry.kind = match typeflag {
            // Go: a legacy regular file whose name ends in '/' is a directory.
            b'\0' if path.ends_with(b"/") => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                return Err(Error::unsupported(
                    format!("entry {:?}", String::from_utf8_lossy(&path)),
                    format!("tar entry type {:?}", char::from(other)),
                ));
            }
        };
        if matches!(entry.kind, Kind::Char | Kind::Block) {
            entry.dev_major = u32::try_from(header.number(329, 8).map_err(c)?)
                .map_err(|_| self.corrupt("device major out of range"))?;
            entry.dev_minor = u32::try_from(header.number(337, 8).map_err(c)?)
                .map_err(|_| self.corrupt("device minor out of range"))?;
        }
        if entry.kind != Kind::File {
            // Go's reader: header-only types carry no data whatever `size` says, so
            // the next header is read right after this one.
            entry.size = 0;
        }
        entry.path = path;
        entry.link = link;
        Ok(entry)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|c| *c == 0) {
        Some(i) => b.get(..i).unwrap_or(b),
        None => b,
    }
}

struct Header<'a>(&'a [u8; BLOCK]);

impl Header<'_> {
    fn field(&self, offset: usize, len: usize) -> &[u8] {
        self.0.get(offset..offset + len).unwrap_or_default()
    }

    /// USTAR name, joined with the prefix when the format has one. GNU headers use
    /// the prefix bytes for other fields; star's prefix is shorter.
    fn name(&self) -> Vec<u8> {
        let name = trim_nul(self.field(0, 100));
        let magic = self.field(257, 8);
        let prefix = if magic == b"ustar\x0000" {
            if self.field(508, 4) == b"tar\0" {
                trim_nul(self.field(345, 131))
            } else {
                trim_nul(self.field(345, 155))
            }
        } else {
            b""
        };
        if prefix.is_empty() {
            name.to_vec()
        } else {
            [prefix, b"/", name].concat()
        }
    }

    /// The stored checksum matches the unsigned or (old writers) signed sum of the
    /// header with the checksum field taken as spaces.
    fn checksum_ok(&self) -> bool {
        let Ok(stored) = self.number(148, 8) else {
            return false;
        };
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { *b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || stored == signed
    }

    /// A numeric field: octal text (spaces and NULs around it allowed), or GNU
    /// base-256 when the high bit is set (Go's `parseNumeric`).
    fn number(&self, offset: usize, len: usize) -> Result<i64, String> {
        let b = self.field(offset, len);
        if let Some(first) = b.first().copied().filter(|f| f & 0x80 != 0) {
            let inv = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 != 0 {
                    return Err("base-256 number overflows".into());
                }
                x = (x << 8) | u64::from(c);
            }
            let x = i64::try_from(x).map_err(|_| "base-256 number overflows".to_string())?;
            return Ok(if inv == 0xff { !x } else { x });
        }
        let text: &[u8] = {
            let start = b
                .iter()
                .position(|c| *c != 0 && *c != b' ')
                .unwrap_or(b.len());
            let end = b
                .iter()
                .rposition(|c| *c != 0 && *c != b' ')
                .map_or(start, |e| e + 1);
            b.get(start..end).unwrap_or_default()
        };
        if text.is_empty() {
            return Ok(0);
        }
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| i64::from_str_radix(t, 8).ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| format!("bad numeric field {:?}", String::from_utf8_lossy(text)))
    }
}

/// Parse PAX records `"<len> <key>=<value>\n"` (Go's `parsePAXRecord`).
fn parse_pax(mut data: &[u8]) -> Result<Xattrs, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("PAX record without length")?;
        let len: usize = std::str::from_utf8(data.get(..space).unwrap_or_default())
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or("bad PAX record length")?;
        if len <= space + 1 || len > data.len() {
            return Err("bad PAX record length".into());
        }
        let record = data.get(space + 1..len).ok_or("bad PAX record length")?;
        data = data.get(len..).unwrap_or_default();
        let record = record
            .strip_suffix(b"\n")
            .ok_or("PAX record without newline")?;
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let (key, value) = (
            record.get(..eq).unwrap_or_default(),
            record.get(eq + 1..).unwrap_or_default(),
        );
        if key.is_empty() {
            return Err("PAX record with an empty key".into());
        }
        out.push((key.to_vec(), value.to_vec()));
    }
    Ok(out)
}

/// `secs[.fraction]`, possibly negative, to (seconds, nanoseconds ≥ 0).
fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_pax_time("1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time(""), None);
        assert_eq!(parse_pax_time("1.2.3"), None);
    }

    #[test]
    fn pax_records() {
        let recs = parse_pax(b"9 path=a\n22 SCHILY.xattr.k=v\0w\n").expect("parses");
        assert_eq!(recs[0], (b"path".to_vec(), b"a".to_vec()));
        assert_eq!(recs[1], (b"SCHILY.xattr.k".to_vec(), b"v\0w".to_vec()));
        for bad in [
            &b"8 path=a\n"[..],
            b"x path=a\n",
            b"8 patha\n\n",
            b"0 =\n",
            b"99999999999999999999999 a=b\n",
            b"3 =\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn numbers_octal_and_base256() {
        let mut block = [0u8; BLOCK];
        block[124..136].copy_from_slice(b"00000000017\0");
        block[136..148].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]);
        block[108..116].copy_from_slice(&[0xff; 8]);
        block[116..124].copy_from_slice(b"  12 \0\0\0");
        let h = Header(&block);
        assert_eq!(h.number(124, 12), Ok(15));
        assert_eq!(h.number(136, 12), Ok(256));
        assert_eq!(h.number(108, 8), Ok(-1));
        assert_eq!(h.number(116, 8), Ok(0o12));
        block[100..108].copy_from_slice(b"0009\0\0\0\0");
        assert!(Header(&block).number(100, 8).is_err());
    }

    #[test]
    fn oversized_pax_header_is_refused_without_allocating() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut tar = TarReader::new(&h.as_bytes()[..]);
        let err = tar.next_entry().expect_err("refused");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
