//! Synthetic scaling-law data for the fit tests: sweeps drawn from known laws with seeded noise.

use isoflop::fit::data::{Curve, Point};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::fmt::Write as _;

/// Chinchilla's published law (Hoffmann et al. 2022): E, A, B, α, β.
pub const TRUTH: [f64; 5] = [1.69, 406.4, 410.7, 0.34, 0.28];

/// L(N, D) of [`TRUTH`].
pub fn law(n: f64, d: f64) -> f64 {
    let [e, a, b, al, be] = TRUTH;
    e + a / n.powf(al) + b / d.powf(be)
}

/// N_opt(C) of [`TRUTH`]: G·(C/6)^a.
pub fn n_opt(c: f64) -> f64 {
    let [_, a, b, al, be] = TRUTH;
    let g = ((al * a) / (be * b)).powf(1.0 / (al + be));
    g * (c / 6.0).powf(be / (al + be))
}

/// IsoFLOP sweep: per budget, `per` sizes log-spaced over ±`half_decades` around N_opt(C), D = C/(6N),
/// loss × exp(noise).
pub fn isoflop_points(
    budgets: &[f64],
    per: usize,
    half_decades: f64,
    sigma: f64,
    seed: u64,
) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, sigma).unwrap();
    let mut pts = vec![];
    for &c in budgets {
        let n0 = n_opt(c);
        for k in 0..per {
            let t = -half_decades + 2.0 * half_decades * k as f64 / (per - 1) as f64;
            let n = n0 * 10f64.powf(t);
            let d = c / (6.0 * n);
            pts.push(Point {
                n,
                d,
                c,
                loss: law(n, d) * noise.sample(&mut rng).exp(),
            });
        }
    }
    pts
}

/// Training curves of `sizes` runs log-spaced over [n_lo, n_hi], run k trained to D = `m_max[k % len]`·N, with
/// `steps` log-spaced records from D = N, losses from [`law`] × exp(noise).
pub fn curves(
    n_lo: f64,
    n_hi: f64,
    sizes: usize,
    m_max: &[f64],
    steps: usize,
    sigma: f64,
    seed: u64,
) -> Vec<Curve> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, sigma).unwrap();
    (0..sizes)
        .map(|k| {
            let n = n_lo * (n_hi / n_lo).powf(k as f64 / (sizes - 1) as f64);
            let m_max = m_max[k % m_max.len()];
            let d: Vec<f64> = (0..steps)
                .map(|s| n * m_max.powf(s as f64 / (steps - 1) as f64))
                .collect();
            Curve {
                run: format!("run{k:02}"),
                n,
                c: d.iter().map(|d| 6.0 * n * d).collect(),
                loss: d
                    .iter()
                    .map(|&d| law(n, d) * noise.sample(&mut rng).exp())
                    .collect(),
                d,
            }
        })
        .collect()
}

/// A sweep export: runs.csv and steps.csv text in the sweep's column layout.
pub fn sweep_csvs(curves: &[Curve]) -> (String, String) {
    let mut runs = String::from("run_id,n_params,tokens,flops_kaplan,flops_standard,flops_attention,flops_exact,eval_loss\n");
    let mut steps = String::from(
        "run_id,step,tokens,flops_kaplan,flops_standard,flops_attention,flops_exact,loss\n",
    );
    for cv in curves {
        for (s, ((c, d), l)) in cv.c.iter().zip(&cv.d).zip(&cv.loss).enumerate() {
            let _ = writeln!(
                steps,
                "{},{},{},{},{},{},{},{}",
                cv.run,
                s,
                d,
                0.8 * c,
                c,
                1.05 * c,
                1.1 * c,
                l
            );
        }
        let k = cv.c.len() - 1;
        let _ = writeln!(
            runs,
            "{},{},{},{},{},{},{},{}",
            cv.run,
            cv.n,
            cv.d[k],
            0.8 * cv.c[k],
            cv.c[k],
            1.05 * cv.c[k],
            1.1 * cv.c[k],
            cv.loss[k]
        );
    }
    (runs, steps)
}

/// The hyperparameter surface of the `hparams` tests: lr*(N) = a·N^b and B*(N) = c·N^d.
pub const HP_TRUTH: [f64; 4] = [0.5, -0.3, 2.0, 0.3];

/// Final loss of the synthetic search: quadratic in ln lr and ln B around [`HP_TRUTH`]'s optima, plus
/// a β2 effect (0.99 better than 0.95 by 0.01 below B*/8, worse by 0.005 above).
pub fn hp_loss(n: f64, lr: f64, b: f64, beta2: f64) -> f64 {
    let [a, be, c, d] = HP_TRUTH;
    let (lr_opt, b_opt) = (a * n.powf(be), c * n.powf(d));
    // β2 = 0.99 helps only far below B*, so the best-β2 envelope keeps its minimum at B*.
    let beta = if beta2 == 0.95 {
        0.0
    } else if 8.0 * b < b_opt {
        -0.01
    } else {
        0.005
    };
    2.0 + 50.0 / n.powf(0.3)
        + 0.08 * (lr / lr_opt).ln().powi(2)
        + 0.03 * (b / b_opt).ln().powi(2)
        + beta
}

/// One synthetic search run: (N, tokens, lr, batch, β2, loss).
pub type HpRow = (f64, f64, f64, f64, f64, f64);

/// A search over `sizes`: 7 learning rates a factor 2 apart (centred on the true lr* times a seeded
/// factor in [0.7, 1.4], times `shift[i]` for size i) × 7 batch sizes 32…2048 × `beta2s`, 20 tokens
/// per parameter, loss + N(0, `sigma`).
pub fn hp_search(
    sizes: &[f64],
    shift: &[f64],
    beta2s: &[f64],
    sigma: f64,
    seed: u64,
) -> Vec<HpRow> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, sigma).unwrap();
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let centre = HP_TRUTH[0] * n.powf(HP_TRUTH[1]) * rng.random_range(0.7..1.4) * shift[i];
        for k in -3i32..=3 {
            let lr = centre * 2f64.powi(k);
            for j in 5..=11 {
                let b = 2f64.powi(j);
                for &b2 in beta2s {
                    let loss = hp_loss(n, lr, b, b2) + noise.sample(&mut rng);
                    out.push((n, 20.0 * n, lr, b, b2, loss));
                }
            }
        }
    }
    out
}

/// [`hp_search`] rows as a runs.csv (sweep export columns).
pub fn hp_csv(rows: &[HpRow]) -> String {
    let mut s = String::from("name,n_params,tokens,flops_standard,lr,batch_size,beta2,eval_loss\n");
    for (i, (n, d, lr, b, b2, l)) in rows.iter().enumerate() {
        let _ = writeln!(s, "r{i},{n},{d},{},{lr},{b},{b2},{l}", 6.0 * n * d);
    }
    s
}
