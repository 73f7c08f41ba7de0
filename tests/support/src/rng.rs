//! A tiny deterministic PRNG (xorshift64*), so tests need no extra crate, and the seed of
//! a run: `TOKA_SEED` replays a run whose seed a failure printed.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*: fast, reproducible, good enough for schedules and workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Starts from `state` exactly as given (it must not be 0).
    pub fn with_state(state: u64) -> Self {
        Rng(state)
    }

    /// Seeds through a splitmix64 step, so that small or similar seeds give unrelated
    /// streams; never 0.
    pub fn splitmix(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Seeds with `seed` times the golden-ratio constant, made odd (so never 0).
    pub fn golden(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The seed of this run: `TOKA_SEED` if set, else the clock's nanoseconds.
///
/// # Panics
/// If `TOKA_SEED` is not a `u64`.
pub fn seed_from_env_or_time() -> u64 {
    match std::env::var("TOKA_SEED") {
        Ok(s) => s.trim().parse().expect("TOKA_SEED must be a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x70CA),
    }
}
