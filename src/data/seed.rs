//! Seeded random streams: every random decision of the pipeline comes from ChaCha8 (identical on every
//! machine) keyed by the user's seed, a purpose and the epoch, so that no two decisions share a stream.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Split = 0,
    Subset = 1,
    EpochOrder = 2,
    Flip = 3,
}

/// Number of `Purpose` values: stream ids are `epoch * PURPOSES + purpose`.
const PURPOSES: u64 = 4;

pub(crate) fn rng(seed: u64, purpose: Purpose, epoch: u64) -> ChaCha8Rng {
    let stream =
        epoch.checked_mul(PURPOSES).and_then(|base| base.checked_add(purpose as u64)).expect("epoch numbers stay far below 2^62");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
