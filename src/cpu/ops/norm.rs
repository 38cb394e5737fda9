//! L2 norm of a buffer, reduced in f64 in a fixed order.

use rayon::prelude::*;

/// Elements per partial sum (fixed, so the reduction order never depends on the thread count).
const CHUNK: usize = 1 << 14;

/// `√Σ x²`: squares summed in f64 sequentially within fixed-size chunks, then the chunk sums in order.
pub fn global_norm(x: &[f32]) -> f64 {
    let partials: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    partials.iter().sum::<f64>().sqrt()
}
