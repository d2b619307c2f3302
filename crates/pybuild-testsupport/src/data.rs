//! Generated test data.

/// `len` bytes that do not compress (an xorshift64 stream, as incompressible to
/// deflate and zstd as `/dev/urandom`), the same for the same `seed` and different
/// for different seeds: reproducible without a file or an RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_reproducible_per_seed() {
        assert_eq!(noise(1000, 3), noise(1000, 3));
        assert_ne!(noise(1000, 3), noise(1000, 4));
        assert_eq!(noise(1001, 3).len(), 1001);
        // Every byte value shows up: no structure a compressor could use.
        let sample = noise(1 << 16, 9);
        let mut seen = [false; 256];
        for b in sample {
            seen[usize::from(b)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
