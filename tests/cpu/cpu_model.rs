//! The whole CPU model: forward against an independent f64 implementation of the contract, gradient
//! against finite differences, loss at initialisation, training, determinism, accumulation, errors.

use isoflop::backend::{AdamWStep, Backend, BackendError, DecayMode, LossSum, TokenBatch};
use isoflop::cpu::CpuBackend;
use isoflop::model::{init_params, ModelConfig, ParamLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg(d: usize, l: usize, t: usize, v: usize) -> ModelConfig {
    ModelConfig {
        d_model: d,
        n_layers: l,
        seq_len: t,
        vocab_size: v,
    }
}

/// `b` rows of `T + 1` random ids in `1..V`, with a few pad (0) ids sprinkled in.
fn batch(c: &ModelConfig, b: usize, seed: u64) -> Vec<u16> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..b * (c.seq_len + 1))
        .map(|i| {
            if i % 7 == 3 {
                0
            } else {
                r.random_range(1..c.vocab_size as u16)
            }
        })
        .collect()
}

/// `b` rows of `toks` as a validated batch for `c`.
fn tb(c: &ModelConfig, toks: &[u16], b: usize) -> TokenBatch {
    TokenBatch::new(c, toks, b).expect("a valid batch")
}

/// Initial parameters with the norm scales moved off 1, so every tensor's gradient is generic.
fn params(c: &ModelConfig, seed: u64) -> Vec<f32> {
    let mut p = init_params(c, seed);
    let lay = ParamLayout::new(c);
    let mut r = ChaCha8Rng::seed_from_u64(seed + 1);
    for t in lay.tensors.iter().filter(|t| !t.decayed()) {
        p[t.range()]
            .iter_mut()
            .for_each(|x| *x += r.random_range(-0.3..0.3));
    }
    p
}

// ------------------------------------------------------------ independent f64 forward

type M = Vec<Vec<f64>>;

fn mat(p: &[f32], off: usize, rows: usize, cols: usize) -> M {
    (0..rows)
        .map(|i| (0..cols).map(|j| p[off + i * cols + j] as f64).collect())
        .collect()
}
fn mm(a: &M, b: &M) -> M {
    a.iter()
        .map(|row| {
            (0..b[0].len())
                .map(|j| row.iter().zip(b).map(|(x, br)| x * br[j]).sum())
                .collect()
        })
        .collect()
}
fn ln(x: &[f64], s: &[f64]) -> Vec<f64> {
    let n = x.len() as f64;
    let mu = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n;
    x.iter()
        .zip(s)
        .map(|(v, s)| (v - mu) / (var + 1e-6).sqrt() * s)
        .collect()
}
fn add(a: &M, b: &M) -> M {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
        .collect()
}
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// The contract, written directly from its description, one sequence at a time, in f64.
fn reference_loss(c: &ModelConfig, p: &[f32], tokens: &[u16], b: usize) -> f64 {
    let (d, t, v) = (c.d_model, c.seq_len, c.vocab_size);
    let lay = ParamLayout::new(c);
    let vec_of =
        |off: usize, n: usize| -> Vec<f64> { p[off..off + n].iter().map(|&x| x as f64).collect() };
    let mut loss = 0.0;
    for row in tokens.chunks(t + 1).take(b) {
        let mut x: M = row[..t]
            .iter()
            .map(|&id| vec_of(lay.embed + id as usize * d, d))
            .collect();
        for bo in &lay.blocks {
            let xn: M = x.iter().map(|r| ln(r, &vec_of(bo.ln1, d))).collect();
            let (q, k, vv) = (
                mm(&xn, &mat(p, bo.wq, d, d)),
                mm(&xn, &mat(p, bo.wk, d, d)),
                mm(&xn, &mat(p, bo.wv, d, d)),
            );
            let mut y = vec![vec![0.0; d]; t];
            for h in 0..d / 64 {
                let head = |m: &M, s: usize, pos: usize| -> Vec<f64> {
                    let z = ln(&m[pos][h * 64..h * 64 + 64], &vec_of(s, 64));
                    (0..64)
                        .map(|i| {
                            let j = i % 32;
                            let a = pos as f64 * 10000f64.powf(-2.0 * j as f64 / 64.0);
                            if i < 32 {
                                z[i] * a.cos() - z[i + 32] * a.sin()
                            } else {
                                z[i] * a.cos() + z[i - 32] * a.sin()
                            }
                        })
                        .collect()
                };
                let qh: M = (0..t).map(|i| head(&q, bo.q_norm, i)).collect();
                let kh: M = (0..t).map(|i| head(&k, bo.k_norm, i)).collect();
                for i in 0..t {
                    let s: Vec<f64> = (0..=i)
                        .map(|j| qh[i].iter().zip(&kh[j]).map(|(a, b)| a * b).sum::<f64>() / 8.0)
                        .collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                    for cc in 0..64 {
                        y[i][h * 64 + cc] = (0..=i)
                            .map(|j| (s[j] - mx).exp() / z * vv[j][h * 64 + cc])
                            .sum();
                    }
                }
            }
            let hres = add(&x, &mm(&y, &mat(p, bo.wo, d, d)));
            let xn2: M = hres.iter().map(|r| ln(r, &vec_of(bo.ln2, d))).collect();
            let g: M = mm(&xn2, &mat(p, bo.w1, d, 4 * d))
                .into_iter()
                .map(|r| r.into_iter().map(gelu).collect())
                .collect();
            x = add(&hres, &mm(&g, &mat(p, bo.w2, 4 * d, d)));
        }
        let xf: M = x
            .iter()
            .map(|r| ln(r, &vec_of(lay.final_norm, d)))
            .collect();
        let logits = mm(&xf, &mat(p, lay.head, d, v));
        for (i, &target) in row[1..].iter().enumerate() {
            if target == 0 {
                continue;
            }
            let mx = logits[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits[i].iter().map(|x| (x - mx).exp()).sum();
            loss += z.ln() + mx - logits[i][target as usize];
        }
    }
    loss
}

#[test]
fn forward_matches_independent_f64_model() {
    let c = cfg(128, 2, 9, 50);
    let p = params(&c, 3);
    let toks = batch(&c, 2, 4);
    let mut be = CpuBackend::new(c, p.clone()).unwrap();
    let got = be.forward_loss(&tb(&c, &toks, 2)).unwrap();
    let want = reference_loss(&c, &p, &toks, 2);
    let pads = toks
        .chunks(10)
        .map(|r| r[1..].iter().filter(|&&x| x == 0).count())
        .sum::<usize>();
    assert_eq!(got.count as usize, 2 * 9 - pads);
    assert!(
        (got.sum - want).abs() < 1e-5 * want.abs(),
        "cpu {} vs f64 {want}",
        got.sum
    );
    // and forward_backward reports the same loss
    assert_eq!(be.forward_backward(&tb(&c, &toks, 2)).unwrap(), got);
}

// ------------------------------------------------------------ gradient vs finite differences

#[test]
fn gradient_matches_finite_differences_for_every_tensor() {
    let c = cfg(64, 2, 8, 50);
    let p = params(&c, 5);
    let toks = batch(&c, 2, 6);
    let mut be = CpuBackend::new(c, p.clone()).unwrap();
    be.forward_backward(&tb(&c, &toks, 2)).unwrap();
    let g = be.read_grads().unwrap();
    let lay = ParamLayout::new(&c);
    let mut loss_at = |q: &[f32]| -> f64 {
        be.write_params(q).unwrap();
        be.forward_loss(&tb(&c, &toks, 2)).unwrap().sum
    };
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let eps = 1e-2f32;
    let mut failures = Vec::new();
    for spec in &lay.tensors {
        let gt = &g[spec.range()];
        let gmax = gt.iter().fold(0.0f32, |a, &x| a.max(x.abs())) as f64;
        assert!(gmax > 0.0, "{}: gradient is identically zero", spec.name);
        // the 3 largest coordinates and 3 random ones
        let mut idx: Vec<usize> = (0..gt.len()).collect();
        idx.sort_by(|&a, &b| gt[b].abs().total_cmp(&gt[a].abs()));
        let mut coords: Vec<usize> = idx[..3.min(idx.len())].to_vec();
        coords.extend((0..3).map(|_| r.random_range(0..gt.len())));
        for i in coords {
            let mut q = p.clone();
            q[spec.offset + i] += eps;
            let fp = loss_at(&q);
            q[spec.offset + i] -= 2.0 * eps;
            let fm = loss_at(&q);
            let fd = (fp - fm) / (2.0 * eps as f64);
            let a = gt[i] as f64;
            if (a - fd).abs() > 3e-2 * a.abs().max(fd.abs()) + 1e-2 * gmax + 2e-3 {
                failures.push(format!(
                    "{}[{i}]: analytic {a:.5e} vs fd {fd:.5e}",
                    spec.name
                ));
            }
        }
        // and the directional derivative along the gradient of the tensor (all coordinates at once)
        let norm = gt.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let h = eps as f64 / norm;
        let mut q = p.clone();
        let step = |q: &mut Vec<f32>, s: f64| {
            for (k, &gk) in gt.iter().enumerate() {
                q[spec.offset + k] = p[spec.offset + k] + (s * h * gk as f64) as f32;
            }
        };
        step(&mut q, 1.0);
        let fp = loss_at(&q);
        step(&mut q, -1.0);
        let fm = loss_at(&q);
        let fd = (fp - fm) / (2.0 * eps as f64);
        if (fd - norm).abs() > 3e-2 * norm + 2e-3 {
            failures.push(format!(
                "{}: |g| {norm:.5e} vs directional fd {fd:.5e}",
                spec.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "gradient mismatches:\n{}",
        failures.join("\n")
    );
}

// ------------------------------------------------------------ loss at initialisation

#[test]
fn loss_at_initialisation_is_log_vocab() {
    let c = cfg(64, 1, 16, 32101);
    let mut be = CpuBackend::new(c, init_params(&c, 11)).unwrap();
    let toks = batch(&c, 2, 12);
    let loss = be.forward_loss(&tb(&c, &toks, 2)).unwrap();
    let want = (32101f64).ln();
    assert!(
        (loss.mean() - want).abs() < 0.1,
        "mean loss {} vs ln V {want}",
        loss.mean()
    );
}

// ------------------------------------------------------------ training

fn adamw(step: u64, lr: f32, count: u64) -> AdamWStep {
    AdamWStep {
        step,
        lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-20,
        weight_decay: 0.1,
        decay_mode: DecayMode::Coupled,
        grad_scale: 1.0 / count as f32,
    }
}

fn train_step(be: &mut CpuBackend, toks: &[u16], b: usize, step: u64, lr: f32) -> LossSum {
    be.zero_grads().unwrap();
    let c = *be.config();
    let loss = be.forward_backward(&tb(&c, toks, b)).unwrap();
    be.adamw_step(&adamw(step, lr, loss.count)).unwrap();
    loss
}

#[test]
fn training_memorises_a_repeated_batch() {
    let c = cfg(64, 1, 16, 64);
    let mut be = CpuBackend::new(c, init_params(&c, 21)).unwrap();
    // distinct first ids, so every prefix determines its next id
    let mut r = ChaCha8Rng::seed_from_u64(22);
    let b = 4;
    let toks: Vec<u16> = (0..b * 17)
        .map(|i| {
            if i % 17 == 0 {
                4 + (i / 17) as u16
            } else {
                r.random_range(4..64)
            }
        })
        .collect();
    let first = train_step(&mut be, &toks, b, 1, 1e-2).mean();
    let mut last = first;
    for step in 2..=300 {
        last = train_step(&mut be, &toks, b, step, 1e-2).mean();
        if last < 0.05 {
            break;
        }
    }
    // Xavier head logits have variance ≈ 1 here: initial loss ≈ ln V + 1/2
    assert!(
        (first - 64f64.ln() - 0.5).abs() < 0.3,
        "initial loss {first}"
    );
    assert!(last < 0.1, "loss after training {last} (from {first})");
    // Memorised: every next id is the model's top-1 prediction (so greedy decoding reproduces the rows)
    // and the mean log-probability is that of the final loss.
    let s = be.forward_scores(&tb(&c, &toks, b)).unwrap();
    assert!(s.hit_BxT.iter().all(|&h| h), "hits {:?}", s.hit_BxT);
    let mean = s.logp_BxT.iter().map(|&l| l as f64).sum::<f64>() / s.logp_BxT.len() as f64;
    let after = be.forward_loss(&tb(&c, &toks, b)).unwrap().mean();
    assert!(
        (mean + after).abs() < 1e-5,
        "mean ln p {mean} vs loss {after}"
    );
    assert!(
        mean > -0.1 && s.logp_BxT.iter().all(|&l| l <= 1e-6),
        "{:?}",
        s.logp_BxT
    );
}

#[test]
fn forward_only_backend_scores_without_gradient_state() {
    let c = cfg(64, 2, 16, 50);
    let p = params(&c, 31);
    let total = ParamLayout::new(&c).total;
    let mut full = CpuBackend::new(c, p.clone()).unwrap();
    let mut fwd = CpuBackend::new_forward_only(c, p).unwrap();
    // Parameters only: no gradient accumulator, no AdamW moments.
    assert_eq!(full.state_floats(), 4 * total);
    assert_eq!(fwd.state_floats(), total);
    let toks = batch(&c, 3, 32);
    let s = fwd.forward_scores(&tb(&c, &toks, 3)).unwrap();
    assert_eq!(s, full.forward_scores(&tb(&c, &toks, 3)).unwrap());
    // Σ ln p over the targets is minus the summed loss; pad targets score (0, false).
    let loss = fwd.forward_loss(&tb(&c, &toks, 3)).unwrap();
    let sum: f64 = s.logp_BxT.iter().map(|&x| x as f64).sum();
    assert!(
        (sum + loss.sum).abs() < 1e-4 * loss.sum,
        "{sum} vs {}",
        loss.sum
    );
    let targets: Vec<u16> = toks.chunks(17).flat_map(|r| r[1..].to_vec()).collect();
    for (i, &t) in targets.iter().enumerate() {
        if t == 0 {
            assert_eq!((s.logp_BxT[i], s.hit_BxT[i]), (0.0, false));
        }
    }
    // Training calls are refused, naming the reason.
    let e = fwd
        .forward_backward(&tb(&c, &toks, 3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("forward-only"), "{e}");
    assert!(fwd.adamw_step(&adamw(1, 1e-3, 1)).is_err());
    assert!(fwd.read_moments().is_err() && fwd.read_grads().is_err());
}

// ------------------------------------------------------------ determinism and accumulation

fn run_steps(c: &ModelConfig, p: &[f32], toks: &[u16], threads: usize) -> (Vec<u64>, Vec<f32>) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| {
            let mut be = CpuBackend::new(*c, p.to_vec()).unwrap();
            let losses = (1..=3)
                .map(|s| train_step(&mut be, toks, 3, s, 1e-3).sum.to_bits())
                .collect();
            (losses, be.read_params().unwrap())
        })
}

#[test]
fn training_is_bitwise_deterministic_across_runs_and_thread_counts() {
    let c = cfg(128, 2, 33, 300);
    let p = params(&c, 31);
    let toks = batch(&c, 3, 32);
    let (l1, p1) = run_steps(&c, &p, &toks, 1);
    let (l2, p2) = run_steps(&c, &p, &toks, 1);
    let (l3, p3) = run_steps(&c, &p, &toks, 3);
    assert_eq!(l1, l2);
    assert!(p1 == p2, "same seed, same params");
    assert_eq!(l1, l3, "losses differ between 1 and 3 threads");
    assert!(p1 == p3, "params differ between 1 and 3 threads");
    assert!(p1 != p, "training moved the parameters");
}

#[test]
fn micro_batches_accumulate_to_the_full_batch_gradient() {
    let c = cfg(64, 2, 12, 80);
    let p = params(&c, 41);
    let toks = batch(&c, 4, 42);
    let mut full = CpuBackend::new(c, p.clone()).unwrap();
    let lf = full.forward_backward(&tb(&c, &toks, 4)).unwrap();
    let mut acc = CpuBackend::new(c, p).unwrap();
    let half = toks.len() / 2;
    let mut la = acc.forward_backward(&tb(&c, &toks[..half], 2)).unwrap();
    la.add(acc.forward_backward(&tb(&c, &toks[half..], 2)).unwrap());
    assert_eq!(lf.count, la.count);
    assert!((lf.sum - la.sum).abs() < 1e-9 * lf.sum);
    let (gf, ga) = (full.read_grads().unwrap(), acc.read_grads().unwrap());
    for spec in &ParamLayout::new(&c).tensors {
        let r = spec.range();
        let diff = gf[r.clone()]
            .iter()
            .zip(&ga[r.clone()])
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = gf[r]
            .iter()
            .map(|&a| (a as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 1e-5 * norm,
            "{}: |full − accumulated| {diff:e} vs |full| {norm:e}",
            spec.name
        );
    }
    // zero_grads really zeroes, and a second pass doubles
    acc.zero_grads().unwrap();
    assert!(acc.read_grads().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn grad_norm_and_state_round_trips() {
    let c = cfg(64, 1, 8, 40);
    let p = params(&c, 51);
    let mut be = CpuBackend::new(c, p.clone()).unwrap();
    assert_eq!(be.grad_norm().unwrap(), 0.0);
    be.forward_backward(&tb(&c, &batch(&c, 2, 52), 2)).unwrap();
    let g = be.read_grads().unwrap();
    let want = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    assert!((be.grad_norm().unwrap() - want).abs() < 1e-9 * want && want > 0.0);
    be.adamw_step(&adamw(1, 1e-3, 10)).unwrap();
    let (m, v) = be.read_moments().unwrap();
    assert!(m.iter().any(|&x| x != 0.0) && v.iter().all(|&x| x >= 0.0));
    let mut other = CpuBackend::new(c, be.read_params().unwrap()).unwrap();
    other.write_moments(&m, &v).unwrap();
    assert_eq!(other.read_moments().unwrap(), (m, v));
    assert!(be.device().to_string().starts_with("cpu ("));
}

// ------------------------------------------------------------ errors

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let c = cfg(64, 1, 8, 40);
    let p = init_params(&c, 1);
    match CpuBackend::new(c, p[1..].to_vec()) {
        Err(BackendError::Shape { expected, got, .. }) => {
            assert_eq!((expected, got), (p.len(), p.len() - 1))
        }
        other => panic!("expected a shape error, got {:?}", other.err()),
    }
    let mut bad_cfg = c;
    bad_cfg.d_model = 100;
    assert!(CpuBackend::new(bad_cfg, vec![]).is_err());
    let mut be = CpuBackend::new(c, p.clone()).unwrap();
    let toks = batch(&c, 2, 2);
    let e = BackendError::from(TokenBatch::new(&c, &toks[1..], 2).unwrap_err());
    assert!(
        matches!(e, BackendError::BadBatch(_)) && e.to_string().contains("18 ids"),
        "{e}"
    );
    let mut wrong = toks.clone();
    wrong[12] = 40;
    let e = BackendError::from(TokenBatch::new(&c, &wrong, 2).unwrap_err());
    assert!(
        matches!(e, BackendError::BadBatch(_))
            && e.to_string().contains("token id 40 at row 1, column 3"),
        "{e}"
    );
    assert!(TokenBatch::new(&c, &[], 0).is_err());
    assert!(be.write_params(&p[..10]).is_err());
    assert!(be.write_moments(&p, &p[..3]).is_err());
}

#[test]
fn token_batch_splits_rows_into_inputs_and_targets() {
    let c = cfg(64, 1, 3, 40);
    // Two rows of T + 1 = 4 ids; 0 is the pad id.
    let b = TokenBatch::new(&c, &[5, 6, 0, 7, 8, 9, 10, 0], 2).unwrap();
    assert_eq!(b.inputs_BxT(), &[5, 6, 0, 8, 9, 10]);
    assert_eq!(b.targets_BxT(), &[6, 0, 7, 9, 10, 0]);
    assert_eq!((b.b(), b.t(), b.n(), b.non_pad_targets()), (2, 3, 6, 4));
    let e = TokenBatch::new(&c, &[1; 7], 2).unwrap_err().to_string();
    assert_eq!(e, "expected 2 rows of 4 ids (seq_len + 1) = 8 ids, got 7");
    let e = BackendError::from(TokenBatch::new(&c, &[], 0).unwrap_err()).to_string();
    assert_eq!(e, "bad batch: a batch needs at least one sequence");
}

#[test]
fn backend_refuses_a_batch_built_for_another_model() {
    let c = cfg(64, 1, 8, 40);
    let mut be = CpuBackend::new(c, init_params(&c, 1)).unwrap();
    // Built for seq_len 9: refused before any work, naming both lengths.
    let long = cfg(64, 1, 9, 40);
    let e = be
        .forward_loss(&tb(&long, &batch(&long, 2, 3), 2))
        .unwrap_err();
    assert!(matches!(e, BackendError::BadBatch(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "bad batch: the batch has rows of 9 positions but the model's seq_len is 8"
    );
    // Built for a vocabulary of 100: the first id outside 40 is named by row and column, also in the
    // last column (a target only).
    let wide = cfg(64, 1, 8, 100);
    let mut toks = batch(&c, 2, 4);
    toks[17] = 45;
    let e = be.forward_backward(&tb(&wide, &toks, 2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad batch: token id 45 at row 1, column 8 is outside the vocabulary of 40"
    );
    toks[12] = 99;
    let e = be.forward_scores(&tb(&wide, &toks, 2)).unwrap_err();
    assert!(
        e.to_string().contains("token id 99 at row 1, column 3"),
        "{e}"
    );
    // Nothing was accumulated by the refused calls, and the backend still works.
    assert!(be.read_grads().unwrap().iter().all(|&g| g == 0.0));
    assert!(be.forward_loss(&tb(&c, &batch(&c, 2, 5), 2)).is_ok());
}

#[test]
fn zero_grads_reports_errors_at_once_and_device_is_described() {
    let c = cfg(64, 1, 8, 40);
    let mut fwd = CpuBackend::new_forward_only(c, init_params(&c, 1)).unwrap();
    let e = fwd.zero_grads().unwrap_err();
    assert!(
        matches!(e, BackendError::ForwardOnly { call: "zero_grads" }),
        "{e}"
    );
    assert!(e.to_string().contains("forward-only"), "{e}");
    let d = fwd.device();
    assert_eq!(d.kind, isoflop::device::DeviceKind::Cpu);
    assert_eq!(d.precision, isoflop::backend::Precision::F32);
    assert_eq!(d.threads, Some(rayon::current_num_threads()));
    assert_eq!(
        d.to_string(),
        format!("cpu ({} threads)", rayon::current_num_threads())
    );
}
