//! The one-pass output pipeline: tar bytes → sha256 (diffID) → compressor →
//! sha256 (digest) → the caller's writer.

use std::io::{self, BufWriter, Write};

use pybuild_oci::{Digest, Sha256Writer};

use crate::pgzip::ParGzEncoder;
use crate::{Compression, Error};

/// Tar-side buffer: headers are 512 bytes, so batch them before they reach the
/// hasher and the compressor.
const TAR_BUFFER: usize = 1 << 20;
/// Blob-side buffer: compressors emit small chunks; the caller's writer is often a
/// file.
const OUT_BUFFER: usize = 256 << 10;

/// The compressor stage.
enum Encoder<W: Write> {
    None(W),
    Gzip(ParGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(compression: Compression, inner: W) -> Result<Self, Error> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip { level } => {
                if level > 9 {
                    return Err(Error::unsupported(
                        format!("gzip level {level}"),
                        "gzip levels are 0 to 9",
                    ));
                }
                // Parallel, and the same bytes whatever the thread count; the
                // header is GzBuilder's with mtime 0 (no name, OS byte 255).
                Encoder::Gzip(ParGzEncoder::new(inner, level))
            }
            Compression::Zstd { level } => {
                // Single-threaded (the crate's default without the `zstdmt` feature):
                // multithreaded zstd frames depend on the worker count.
                let mut enc = zstd::stream::write::Encoder::new(inner, level).map_err(|e| {
                    Error::unsupported(format!("zstd level {level}"), e.to_string())
                })?;
                // A content checksum lets readers detect corruption beyond the
                // digest check (zstd's own `-C` default).
                enc.include_checksum(true)
                    .map_err(|e| Error::unsupported("zstd checksum", e.to_string()))?;
                Encoder::Zstd(enc)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

type Stages<W> = BufWriter<Sha256Writer<Encoder<Sha256Writer<BufWriter<W>>>>>;

/// Where a layer's tar bytes go. Write errors here are the output's (or the
/// compressor's), never the source's.
pub(crate) struct Pipeline<W: Write> {
    stages: Stages<W>,
    compression: Compression,
}

/// What the pipeline measured.
pub(crate) struct Finished {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub digest: Digest,
    pub size: u64,
}

impl<W: Write> Pipeline<W> {
    pub(crate) fn new(compression: Compression, out: W) -> Result<Self, Error> {
        let blob = Sha256Writer::new(BufWriter::with_capacity(OUT_BUFFER, out));
        let encoder = Encoder::new(compression, blob)?;
        let stages = BufWriter::with_capacity(TAR_BUFFER, Sha256Writer::new(encoder));
        Ok(Self {
            stages,
            compression,
        })
    }

    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// Flush every stage, end the compressed stream, and report both digests.
    pub(crate) fn finish(self) -> Result<Finished, Error> {
        let output = |source| Error::Output { source };
        let tar_hasher = self
            .stages
            .into_inner()
            .map_err(|e| output(e.into_error()))?;
        let (diff_id, uncompressed_size, encoder) = tar_hasher.finish();
        let blob_hasher = encoder.finish().map_err(output)?;
        let (digest, size, mut out) = blob_hasher.finish();
        out.flush().map_err(output)?;
        Ok(Finished {
            diff_id,
            uncompressed_size,
            digest,
            size,
        })
    }
}

impl<W: Write> Write for Pipeline<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stages.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stages.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stages.flush()
    }
}
