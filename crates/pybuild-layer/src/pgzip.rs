//! Parallel gzip whose bytes do not depend on the number of threads.
//!
//! The uncompressed stream is cut into fixed [`BLOCK`]-sized blocks (by stream
//! offset, never by how the caller's writes were sized). Each block is compressed
//! on its own as raw deflate, primed with the previous block's last 32 KiB as the
//! preset dictionary, and ended with a sync flush (the last block: with the final
//! block bit), so the compressed blocks concatenate into one valid deflate stream.
//! One gzip member wraps it: the same 10-byte header as flate2's `GzBuilder` with
//! mtime 0 (no name, no comment, OS 255), then the CRC-32 and ISIZE of the whole
//! stream. A block's compressed bytes are a function of the level, the block and the
//! 32 KiB before it only, so 1 worker and N workers write the same bytes.
//!
//! A block that would not shrink (random data, or data that is already compressed:
//! wheels, archives, images) is written as stored deflate blocks instead, see
//! [`incompressible`]: deflate at level 6 spends as long on such a block as on
//! text (97 MB/s here on random data, against 155 MB/s on a tar of /usr) to win
//! nothing. The test looks only at the block's bytes, so it keeps the output a
//! function of the block.
//!
//! Workers get blocks through a bounded in-flight window (at most
//! `2 × workers` blocks dispatched but not yet written), and the results are written
//! in order on the caller's thread. A stream of at most one block is compressed
//! inline, without starting any thread.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Uncompressed bytes per block. A constant: the output depends on it, so changing
/// it changes every gzip layer's digest.
pub(crate) const BLOCK: usize = 1 << 20;
/// Deflate's window: how much of the previous block primes the next one.
const WINDOW: usize = 32 << 10;
/// More workers buy little for one layer stream and cost memory.
const MAX_WORKERS: usize = 4;
/// Recycled buffers kept beyond what is in flight.
const SPARE_BUFFERS: usize = 2;

/// The default worker count: the machine's parallelism, capped.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// The gzip header flate2's `GzBuilder::new().mtime(0)` writes: no flags, mtime 0,
/// XFL by level (2 for 9, 4 for 0 and 1, else 0), OS 255 ("unknown").
fn header(level: u32) -> [u8; 10] {
    let xfl = if level >= 9 {
        2
    } else if level <= 1 {
        4
    } else {
        0
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// Compress one block into `out` (cleared first). A function of `(level, dict,
/// data, last)` only.
///
/// Every block gets a fresh compressor: measured with zlib-rs 0.6.8, a compressor
/// that is `reset()` and then given a dictionary can emit different (valid) bytes
/// than a new one for the same block, which would make the output depend on which
/// worker compressed what. A new one costs an allocation and ~0.3 MiB of zeroing
/// per 1 MiB block.
fn compress_block(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let level = if level > 0 && incompressible(data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let c = &mut c;
    // A stored block never refers back, so it needs no dictionary.
    if level > 0 && !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    out.clear();
    // Enough for one call at any level (stored blocks add 5 bytes per 64 KiB, the
    // sync flush 5 more); the loop below grows it if not.
    out.reserve(data.len() + data.len() / 64 + 256);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut pos = 0;
    loop {
        // zlib: keep more than 6 bytes of room around a sync flush so the flush
        // marker is not repeated.
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let (in_before, out_before) = (c.total_in(), c.total_out());
        let status = c
            .compress_vec(&data[pos..], out, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in() - in_before).map_err(io::Error::other)?;
        pos += consumed;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            Status::Ok | Status::BufError => {
                if !last && pos == data.len() && room_left {
                    // Sync flush complete: all input taken, output not full.
                    return Ok(());
                }
                if consumed == 0 && c.total_out() == out_before && room_left {
                    return Err(io::Error::other("deflate made no progress"));
                }
            }
        }
    }
}

/// Blocks smaller than this are always deflated: the test costs more than it saves.
const MIN_STORE_TEST: usize = 64 << 10;
/// Order-0 entropy, in bits per byte, at or above which a block may be stored.
/// Huffman coding alone could save at most `(8 - H) / 8` of it: under 0.25 %.
const STORE_ENTROPY: f64 = 7.98;
/// The sample that is deflated to look for repeats the byte histogram cannot see
/// (say a 16 KiB random run repeated): deflate's window, from the block's middle.
const STORE_SAMPLE: usize = WINDOW;

/// Whether deflating `data` would gain (almost) nothing, so that stored blocks
/// cost the same bytes for none of the work. Two tests, both on `data` alone:
/// the byte histogram's entropy must be near 8 bits, and a fast (level 1) deflate
/// of a 32 KiB sample must not shrink it by 1 % or more (LZ matches). A wrong
/// "yes" costs at most a few percent of one block's size, never correctness.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < MIN_STORE_TEST {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    #[allow(clippy::cast_precision_loss)] // block sizes are far below 2^52
    let total = data.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / total;
            -p * p.log2()
        })
        .sum();
    if entropy < STORE_ENTROPY {
        return false;
    }
    let start = (data.len() - STORE_SAMPLE) / 2;
    let sample = &data[start..start + STORE_SAMPLE];
    let mut c = Compress::new(flate2::Compression::new(1), false);
    let mut out = Vec::with_capacity(STORE_SAMPLE + STORE_SAMPLE / 16);
    // Output only grows, so a buffer that fills up already answers "no gain"
    // (zlib-rs's level 1 expands noise by ~2 % rather than storing it).
    match c.compress_vec(sample, &mut out, FlushCompress::Finish) {
        Ok(_) => out.len() * 100 >= sample.len() * 99,
        Err(_) => false,
    }
}

/// A block for a worker.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    out: Vec<u8>,
    last: bool,
}

/// A worker's answer; the buffers come back for reuse.
struct Done {
    seq: u64,
    result: io::Result<()>,
    data: Vec<u8>,
    out: Vec<u8>,
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    loop {
        // The lock is held only while waiting; nothing in there panics.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else {
            return; // the encoder is finished or dropped
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            compress_block(level, &job.dict, &job.data, job.last, &mut job.out)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("gzip worker panicked")));
        let answer = Done {
            seq: job.seq,
            result,
            data: job.data,
            out: job.out,
        };
        if done.send(answer).is_err() {
            return;
        }
    }
}

/// The worker threads. Dropping it closes the job queue and joins them.
struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn spawn(level: u32, workers: usize) -> io::Result<Self> {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut pool = Pool {
            jobs: Some(job_tx),
            done: done_rx,
            handles: Vec::with_capacity(workers),
        };
        for _ in 0..workers {
            let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
            let handle = std::thread::Builder::new()
                .name("pybuild-gzip".into())
                .spawn(move || worker(level, &jobs, &done))?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for handle in self.handles.drain(..) {
            // A worker's panic is already reported through its `Done`.
            let _ = handle.join();
        }
    }
}

/// A `Write` that gzips into `W`, compressing blocks on up to `workers` threads.
pub(crate) struct ParGzEncoder<W: Write> {
    inner: W,
    level: u32,
    workers: usize,
    /// The block being filled (at most [`BLOCK`] bytes).
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes before `block`: its dictionary.
    window: Vec<u8>,
    crc: Crc,
    header_written: bool,
    pool: Option<Pool>,
    /// Next block number to dispatch, and to write.
    next_seq: u64,
    next_out: u64,
    /// Compressed blocks that arrived ahead of `next_out`.
    ready: BTreeMap<u64, Vec<u8>>,
    spare_data: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
}

impl<W: Write> std::fmt::Debug for ParGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParGzEncoder")
            .field("level", &self.level)
            .field("workers", &self.workers)
            .field("next_seq", &self.next_seq)
            .field("next_out", &self.next_out)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ParGzEncoder<W> {
    /// `level` must be 0 to 9 (checked by the caller).
    pub(crate) fn new(inner: W, level: u32) -> Self {
        Self::with_workers(inner, level, default_workers())
    }

    pub(crate) fn with_workers(inner: W, level: u32, workers: usize) -> Self {
        Self {
            inner,
            level,
            workers: workers.max(1),
            block: Vec::new(),
            window: Vec::new(),
            crc: Crc::new(),
            header_written: false,
            pool: None,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            spare_data: Vec::new(),
            spare_out: Vec::new(),
        }
    }

    fn write_out(&mut self, compressed: &[u8]) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&header(self.level))?;
            self.header_written = true;
        }
        self.inner.write_all(compressed)
    }

    /// Hand the current block (full, or the last) to a worker or compress it here.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let fresh = self
            .spare_data
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        let data = std::mem::replace(&mut self.block, fresh);
        let dict = std::mem::replace(
            &mut self.window,
            data[data.len().saturating_sub(WINDOW)..].to_vec(),
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut out = self.spare_out.pop().unwrap_or_default();

        if self.pool.is_none() && (self.workers == 1 || (last && seq == 0)) {
            compress_block(self.level, &dict, &data, last, &mut out)?;
            self.write_out(&out)?;
            self.next_out += 1;
            self.recycle(data, out);
            return Ok(());
        }

        if self.pool.is_none() {
            self.pool = Some(Pool::spawn(self.level, self.workers)?);
        }
        // Bound memory: wait for the oldest blocks before queueing more.
        while self.next_seq - self.next_out > 2 * self.workers as u64 {
            self.collect(true)?;
        }
        let job = Job {
            seq,
            dict,
            data,
            out,
            last,
        };
        let sent = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            return Err(io::Error::other("gzip workers are gone"));
        }
        // Write whatever is already done, without waiting.
        while self.collect(false)? {}
        Ok(())
    }

    fn recycle(&mut self, mut data: Vec<u8>, out: Vec<u8>) {
        if self.spare_data.len() < SPARE_BUFFERS {
            data.clear();
            self.spare_data.push(data);
        }
        self.recycle_out(out);
    }

    fn recycle_out(&mut self, mut out: Vec<u8>) {
        if self.spare_out.len() < 2 * SPARE_BUFFERS {
            out.clear();
            self.spare_out.push(out);
        }
    }

    /// Take one worker answer (waiting for it if `block`) and write every block now
    /// in order. Returns whether an answer was taken.
    fn collect(&mut self, block: bool) -> io::Result<bool> {
        let Some(pool) = &self.pool else {
            return Ok(false);
        };
        let done = if block {
            match pool.done.recv() {
                Ok(d) => d,
                Err(_) => return Err(io::Error::other("gzip workers are gone")),
            }
        } else {
            match pool.done.try_recv() {
                Ok(d) => d,
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(io::Error::other("gzip workers are gone"));
                }
            }
        };
        done.result?;
        self.ready.insert(done.seq, done.out);
        self.recycle(done.data, Vec::new());
        while let Some(out) = self.ready.remove(&self.next_out) {
            self.write_out(&out)?;
            self.next_out += 1;
            self.recycle_out(out);
        }
        Ok(true)
    }

    /// Compress what is left, write the trailer, stop the workers, and return the
    /// inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.next_out < self.next_seq {
            self.collect(true)?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE: the length modulo 2^32, which is what `amount` counts.
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        drop(self.pool.take());
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.block.len() == BLOCK {
                // More data follows, so this full block is not the last.
                self.dispatch(false)?;
            }
            if self.block.capacity() == 0 {
                self.block.reserve_exact(BLOCK);
            }
            let n = (BLOCK - self.block.len()).min(buf.len());
            let (now, rest) = buf.split_at(n);
            self.crc.update(now);
            self.block.extend_from_slice(now);
            buf = rest;
        }
        Ok(())
    }

    /// Writes out the blocks already compressed and flushes the inner writer. It
    /// does not cut the current block short: that would make the bytes depend on
    /// when the caller flushed.
    fn flush(&mut self) -> io::Result<()> {
        while self.collect(false)? {}
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use pybuild_testsupport::data::noise;

    /// Compressible but not trivial, like a tar of a tree: words and numbers from
    /// an LCG, raw pseudo-random runs, and copies of earlier stretches at distances
    /// up to twice the window (matches that cross block boundaries).
    fn corpus(len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "layer ",
            "tar ",
            "gzip ",
            "deflate ",
            "pybuild ",
            "usr/lib/",
            "python3 ",
            "\n",
            "site-packages/",
            "__init__.py ",
            "0755 ",
            "root ",
            "\0\0\0\0",
            "ustar",
        ];
        let mut out: Vec<u8> = Vec::with_capacity(len + 4096);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 16
        };
        while out.len() < len {
            let r = next();
            match r % 16 {
                0 => {
                    for _ in 0..1 + next() % 64 {
                        out.extend_from_slice(&next().to_le_bytes()[..6]);
                    }
                }
                1..=3 if out.len() > 300 => {
                    let dist = 1 + (next() as usize) % (2 * WINDOW).min(out.len() - 1);
                    let n = 3 + (next() as usize) % 300;
                    let start = out.len() - dist;
                    for i in 0..n {
                        out.push(out[start + i % dist]);
                    }
                }
                4..=6 => out.extend_from_slice(format!("{} ", next() % 100_000).as_bytes()),
                _ => out.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()].as_bytes()),
            }
        }
        out.truncate(len);
        out
    }

    fn encode(data: &[u8], level: u32, workers: usize, chunk: usize) -> Vec<u8> {
        let mut enc = ParGzEncoder::with_workers(Vec::new(), level, workers);
        for piece in data.chunks(chunk.max(1)) {
            enc.write_all(piece).expect("write");
        }
        enc.finish().expect("finish")
    }

    fn decode(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn old_encoder(data: &[u8], level: u32) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::new(level));
        enc.write_all(data).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn same_bytes_for_any_worker_count_and_write_size() {
        let data = corpus(5 * BLOCK + 12_345);
        let one = encode(&data, 6, 1, 1 << 20);
        for (workers, chunk) in [(1, 4096), (2, 1 << 20), (3, 777_777), (4, 3 * BLOCK)] {
            assert!(
                encode(&data, 6, workers, chunk) == one,
                "{workers} workers, writes of {chunk}"
            );
        }
        assert!(decode(&one) == data);
    }

    #[test]
    fn every_level_round_trips_and_keeps_the_header() {
        let data = corpus(2 * BLOCK + 1);
        for level in 0..=9 {
            let gz = encode(&data, level, 2, 100_000);
            assert_eq!(gz[..10], old_encoder(b"", level)[..10], "level {level}");
            assert!(decode(&gz) == data, "level {level}");
            assert!(gz == encode(&data, level, 1, 100_000), "level {level}");
        }
    }

    #[test]
    fn tiny_streams_match_the_previous_encoder() {
        // A stream of part of one block is one deflate call with `Finish`, as
        // flate2's GzEncoder made it: an empty layer's and a small one's bytes did
        // not change.
        for len in [0, 1, 1000, 20_000] {
            let data = corpus(len);
            assert!(encode(&data, 6, 4, 4096) == old_encoder(&data, 6), "{len}");
        }
    }

    #[test]
    fn random_blocks_are_stored_and_the_rest_still_deflated() {
        // Text, then 2 MiB of noise, then text: the noise blocks are stored (5
        // bytes of header per 64 KiB), the text blocks still shrink.
        let mut data = corpus(BLOCK);
        data.extend_from_slice(&noise(2 * BLOCK, 7));
        data.extend_from_slice(&corpus(BLOCK));
        let gz = encode(&data, 6, 2, 100_000);
        assert!(decode(&gz) == data);
        assert!(
            gz == encode(&data, 6, 1, 4096),
            "worker count changed the bytes"
        );
        let mut stored = Vec::new();
        compress_block(
            6,
            &data[BLOCK - WINDOW..BLOCK],
            &data[BLOCK..2 * BLOCK],
            false,
            &mut stored,
        )
        .expect("compress");
        // zlib's stored blocks: 5 bytes of header each, well under 0.1 %.
        assert!(stored.len() <= BLOCK + BLOCK / 1000, "{}", stored.len());
        assert!(incompressible(&data[BLOCK..2 * BLOCK]));
        assert!(!incompressible(&data[..BLOCK]), "text taken for noise");
        let text = decode(&encode(&data[..BLOCK], 6, 1, BLOCK));
        assert!(text == data[..BLOCK]);
    }

    #[test]
    fn repeated_noise_is_deflated_not_stored() {
        // Every byte value equally likely (entropy ~8 bits), yet 16 KiB repeated:
        // deflate's matches shrink it to a fraction, so the block must not be stored.
        let run = noise(16 << 10, 11);
        let block: Vec<u8> = run.iter().copied().cycle().take(BLOCK).collect();
        assert!(!incompressible(&block));
        let gz = encode(&block, 6, 1, BLOCK);
        assert!(gz.len() < BLOCK / 10, "{}", gz.len());
        assert!(decode(&gz) == block);
    }

    #[test]
    fn exact_block_multiples_and_the_dictionary_help() {
        let data = corpus(3 * BLOCK);
        let gz = encode(&data, 6, 2, BLOCK);
        assert!(decode(&gz) == data);
        // The dictionary keeps the cost of cutting blocks small.
        let whole = old_encoder(&data, 6);
        assert!(
            gz.len() <= whole.len() + whole.len() / 100,
            "{} vs {}",
            gz.len(),
            whole.len()
        );
    }
}
