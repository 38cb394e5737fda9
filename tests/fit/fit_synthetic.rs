//! Every fit recovers the parameters of the law its synthetic data was drawn from (seeded noise),
//! within the intervals it reports.

use crate::util as fit_support;

use fit_support::*;
use isoflop::fit::data::Point;
use isoflop::fit::isoflop::MinMethod;
use isoflop::fit::law::LawOptions;
use isoflop::fit::{compute, envelope, isoflop as iso, overtrain, parametric};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn opts(reps: usize) -> LawOptions {
    LawOptions {
        bootstrap: reps,
        seed: 1,
        ..LawOptions::default()
    }
}

const BUDGETS: [f64; 7] = [1e17, 3e17, 1e18, 3e18, 1e19, 3e19, 1e20];

#[test]
fn approach3_recovers_chinchilla_law() {
    let pts = isoflop_points(&BUDGETS, 9, 0.8, 0.005, 11);
    let f = parametric::fit(&pts, &parametric::default_starts(), &opts(200)).unwrap();
    let [e, a, b, al, be] = TRUTH;
    for (name, want) in [
        ("E", e),
        ("A", a),
        ("B", b),
        ("alpha", al),
        ("beta", be),
        ("a", be / (al + be)),
    ] {
        let iv = f.params.get(name).unwrap();
        assert!(iv.contains(want), "{name}: truth {want} outside {iv:?}");
        assert!(
            iv.hi - iv.lo < want.abs(),
            "{name}: interval too wide {iv:?}"
        );
    }
    assert!(f.rmse_log < 0.01);
}

#[test]
fn approach2_recovers_allocation_exponents() {
    let pts = isoflop_points(&BUDGETS, 9, 0.8, 0.005, 12);
    let [_, _, _, al, be] = TRUTH;
    let f = iso::fit(&pts, 0.1, MinMethod::Parabola, 0.95);
    assert_eq!(f.budgets.len(), 7);
    assert!(f.budgets.iter().all(|b| b.used && b.se_ln_n.is_some()));
    let n = f.n_opt.unwrap();
    let d = f.d_opt.unwrap();
    assert!(n.exponent.contains(be / (al + be)), "a: {:?}", n.exponent);
    assert!(d.exponent.contains(al / (al + be)), "b: {:?}", d.exponent);
    assert!(n.exponent.hi - n.exponent.lo < 0.1);
    // The prefactor too: k of N* = k·C^a against G·6^(−a).
    let k_true = n_opt(1.0);
    assert!(
        n.coefficient.contains(k_true),
        "k: {k_true} vs {:?}",
        n.coefficient
    );
    // Akima minima interpolate the noise (exact without it; at σ = 0.005 the flat bottoms of these
    // profiles move them by ~0.2 decades), so check them on quieter data.
    let quiet = isoflop_points(&BUDGETS, 9, 0.8, 0.001, 12);
    let ak = iso::fit(&quiet, 0.1, MinMethod::Akima, 0.95).n_opt.unwrap();
    assert!(
        ak.exponent.contains(be / (al + be)),
        "Akima a {:?}",
        ak.exponent
    );
    assert!(
        (ak.exponent.value - be / (al + be)).abs() < 0.05,
        "Akima a {:?}",
        ak.exponent
    );
}

#[test]
fn approach1_recovers_allocation_exponent() {
    let cv = curves(1e7, 1e9, 25, &[100.0], 60, 0.002, 13);
    let [_, _, _, al, be] = TRUTH;
    let f = envelope::fit(&cv, 250, 100, 3, 0.95);
    let n = f.n_opt.unwrap();
    assert!(f.fitted_points > 50, "{}", f.fitted_points);
    assert!(n.exponent.contains(be / (al + be)), "a: {:?}", n.exponent);
    assert!(n.exponent.hi - n.exponent.lo < 0.15, "{:?}", n.exponent);
    let d = f.d_opt.unwrap();
    assert!(d.exponent.contains(al / (al + be)), "b: {:?}", d.exponent);
}

#[test]
fn loss_against_compute_recovers_law() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let noise = Normal::<f64>::new(0.0, 0.003).unwrap();
    let (e, lam, al) = (1.7, 300.0, 0.15);
    let c: Vec<f64> = (0..30)
        .map(|i| 1e17 * 1e4f64.powf(i as f64 / 29.0))
        .collect();
    let l: Vec<f64> = c
        .iter()
        .map(|&c| (e + lam * c.powf(-al)) * noise.sample(&mut rng).exp())
        .collect();
    let f = compute::fit(&c, &l, &opts(300)).unwrap();
    for (name, want) in [("E", e), ("lambda", lam), ("alpha", al)] {
        let iv = f.law.params.get(name).unwrap();
        assert!(iv.contains(want), "{name}: truth {want} outside {iv:?}");
    }
    assert!((compute::predict(&f, 1e19) / (e + lam * 1e19f64.powf(-al)) - 1.0).abs() < 0.01);
}

#[test]
fn overtraining_law_recovers_parameters() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let noise = Normal::<f64>::new(0.0, 0.005).unwrap();
    let (e, a, b, al) = (1.9, 300.0, 1000.0, 0.3);
    let mut pts = vec![];
    for i in 0..6 {
        let n = 1e7 * 100f64.powf(i as f64 / 5.0);
        for m in [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0] {
            let d = m * n;
            let loss = (e + a * n.powf(-al) + b * d.powf(-al)) * noise.sample(&mut rng).exp();
            pts.push(Point {
                n,
                d,
                c: 6.0 * n * d,
                loss,
            });
        }
    }
    let f = overtrain::fit(&pts, &overtrain::default_starts(), &opts(200)).unwrap();
    for (name, want) in [
        ("E", e),
        ("a", a),
        ("b", b),
        ("alpha", al),
        ("M_opt", (b / a).powf(1.0 / al)),
    ] {
        let iv = f.params.get(name).unwrap();
        assert!(iv.contains(want), "{name}: truth {want} outside {iv:?}");
    }
}

/// `isoflop compare` on synthetic arms: 2 seeds × 16 budgets per arm from L(C) = E + k·(C/1e18)^(−α), with
/// noise shared by matched runs (same seed and data order) plus noise of each arm's own.
mod compare_synthetic {
    use super::*;
    use isoflop::fit::compare::{compare, ArmData, CompareOptions, CompareReport};
    use isoflop::fit::data::Dataset;

    type Law = (f64, f64, f64);

    fn l_of((e, k, al): Law, c: f64) -> f64 {
        e + k * (c / 1e18).powf(-al)
    }

    fn arms(a: Law, b: Law, seed: u64) -> Vec<ArmData> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shared = Normal::new(0.0, 0.004).unwrap();
        let own = Normal::new(0.0, 0.004).unwrap();
        let budgets: Vec<f64> = (0..16)
            .map(|i| 1e17 * 1000f64.powf(i as f64 / 15.0))
            .collect();
        let mut out: Vec<ArmData> = ["A", "B"]
            .iter()
            .map(|n| ArmData {
                name: n.to_string(),
                ds: Dataset::default(),
                point_keys: vec![],
                curve_keys: vec![],
            })
            .collect();
        for (i, &c) in budgets.iter().enumerate() {
            for s in 0..2 {
                let common: f64 = shared.sample(&mut rng);
                for (arm, law) in out.iter_mut().zip([a, b]) {
                    let n = (c / 120.0).sqrt();
                    let loss = l_of(law, c) * (common + own.sample(&mut rng)).exp();
                    arm.ds.points.push(Point {
                        n,
                        d: c / (6.0 * n),
                        c,
                        loss,
                    });
                    arm.point_keys.push(format!("b{i}-s{s}"));
                }
            }
        }
        out
    }

    fn run(a: Law, b: Law, seed: u64) -> CompareReport {
        let o = CompareOptions {
            bootstrap: 200,
            seed,
            ..CompareOptions::default()
        };
        compare("synthetic", &arms(a, b, seed), &o).unwrap()
    }

    const A: Law = (2.0, 0.8, 0.3);
    const SEEDS: u64 = 40;

    /// B is worse at small compute and better at large: they cross at C× = 3e18 (inside the observed
    /// 1e17 … 1e20). The reported C× interval covers the truth in ≥ 90% of seeds.
    #[test]
    fn crossing_pair_covers_the_true_crossover() {
        let cx: f64 = 3e18;
        let al_b: f64 = 0.35;
        let k_b = (l_of(A, cx) - 1.85) / (cx / 1e18).powf(-al_b);
        let b = (1.85, k_b, al_b);
        assert!((l_of(A, cx) - l_of(b, cx)).abs() < 1e-12);
        let mut covered = 0;
        let mut found = 0;
        for seed in 0..SEEDS {
            let r = run(A, b, seed);
            let x = &r.comparisons[0].crossover;
            found += x.found as u32;
            if let (true, Some([lo, hi])) = (x.found, x.interval) {
                covered += (lo <= cx && cx <= hi) as u32;
            }
        }
        eprintln!(
            "crossing: found in {found}/{SEEDS}, C× interval covers the truth in {covered}/{SEEDS}"
        );
        assert!(covered as f64 >= 0.9 * SEEDS as f64, "{covered}/{SEEDS}");
    }

    /// B is lower by 0.03 at every compute: no crossover below C_MAX, and B significantly lower in the
    /// middle of the observed range.
    #[test]
    fn parallel_pair_never_crosses() {
        let b = (A.0 - 0.03, A.1, A.2);
        let (mut no_cross, mut b_lower) = (0, 0);
        let mut p_cross = vec![];
        for seed in 0..SEEDS {
            let r = run(A, b, seed);
            let c = &r.comparisons[0];
            no_cross += !c.crossover.found as u32;
            let obs: Vec<_> = c.delta.iter().filter(|d| d.c <= c.observed[1]).collect();
            b_lower += (obs[obs.len() / 2].delta.hi < 0.0) as u32;
            p_cross.push(c.crossover.probability);
        }
        let mean_p = p_cross.iter().sum::<f64>() / p_cross.len() as f64;
        eprintln!(
            "parallel: no crossover in {no_cross}/{SEEDS} (mean bootstrap probability of one {mean_p:.3}), B lower mid-range in {b_lower}/{SEEDS}"
        );
        assert!(no_cross as f64 >= 0.9 * SEEDS as f64, "{no_cross}/{SEEDS}");
        assert!(b_lower as f64 >= 0.9 * SEEDS as f64, "{b_lower}/{SEEDS}");
    }

    /// Identical laws (noise only): no crossover, and the ΔL interval covers 0 in ≥ 90% of seeds on average
    /// over the observed compute (≥ 80% at every C; the band is pointwise, so it covers 0 at every compute
    /// at once less often).
    #[test]
    fn identical_pair_gives_no_crossover_and_covers_zero() {
        let (mut no_cross, mut everywhere) = (0, 0);
        let mut covers: Vec<u32> = vec![];
        for seed in 0..SEEDS {
            let r = run(A, A, seed);
            let c = &r.comparisons[0];
            no_cross += !c.crossover.found as u32;
            let obs: Vec<bool> = c
                .delta
                .iter()
                .filter(|d| d.c <= c.observed[1])
                .map(|d| d.delta.contains(0.0))
                .collect();
            covers.resize(obs.len(), 0);
            for (k, o) in obs.iter().enumerate() {
                covers[k] += *o as u32;
            }
            everywhere += obs.iter().all(|&o| o) as u32;
        }
        let worst = *covers.iter().min().unwrap();
        eprintln!(
            "identical: no crossover in {no_cross}/{SEEDS}; ΔL interval covers 0 in {:.1}/{SEEDS} seeds on average over the observed C, ≥ {worst}/{SEEDS} at every C, at all C at once in {everywhere}/{SEEDS}",
            covers.iter().sum::<u32>() as f64 / covers.len() as f64
        );
        assert!(no_cross as f64 >= 0.9 * SEEDS as f64, "{no_cross}/{SEEDS}");
        // Percentile intervals from 32 points per arm under-cover a little at the ends of the range.
        let mean = covers.iter().sum::<u32>() as f64 / covers.len() as f64;
        assert!(mean >= 0.9 * SEEDS as f64, "{covers:?}");
        assert!(worst as f64 >= 0.8 * SEEDS as f64, "{covers:?}");
        // The very same data in both arms: ΔL is exactly 0 in every replicate.
        let same = arms(A, A, 0);
        let twins = vec![
            same[0].clone(),
            ArmData {
                name: "A2".into(),
                ..same[0].clone()
            },
        ];
        let o = CompareOptions {
            bootstrap: 50,
            ..CompareOptions::default()
        };
        let r = compare("twins", &twins, &o).unwrap();
        let c = &r.comparisons[0];
        assert!(!c.crossover.found && c.crossover.probability == 0.0);
        assert!(c
            .delta
            .iter()
            .all(|d| d.delta.value == 0.0 && d.delta.lo == 0.0 && d.delta.hi == 0.0));
    }
}

/// `isoflop predict`'s computations: a fit's laws (as written to bootstrap.json) predict a run and a
/// budget 10× beyond the largest fitted compute, and the intervals cover the truth.
#[test]
fn predictions_cover_the_truth() {
    use isoflop::fit::data::Dataset;
    use isoflop::fit::predict::{self, Laws, PredictOptions, Target};
    use isoflop::fit::report::{self, FitKind, FitOptions};
    let popts = PredictOptions {
        level: 0.95,
        max_extrapolation: 100.0,
    };
    // Chinchilla's law: Approach 3, Approach 2 and L(C) on the IsoFLOP minima.
    let ds = Dataset {
        source: "synthetic".into(),
        points: isoflop_points(&BUDGETS, 9, 0.8, 0.005, 11),
        ..Dataset::default()
    };
    let o = FitOptions {
        kinds: vec![FitKind::Approach2, FitKind::Approach3, FitKind::Compute],
        explicit: true,
        law: opts(200),
        // A fifth of the default grid (CI time); approach3_recovers_chinchilla_law covers the full one.
        starts3: isoflop::fit::optim::grid(&[
            isoflop::fit::optim::range(0.0, 25.0, 5.0),
            isoflop::fit::optim::range(0.0, 25.0, 5.0),
            vec![-1.0, 0.0, 1.0],
            vec![0.0, 0.5, 1.0],
            vec![0.0, 0.5, 1.0],
        ]),
        ..FitOptions::default()
    };
    let (rep, fitted) = report::run(&ds, &o).unwrap();
    // Through JSON, as predict reads it.
    let laws: Laws =
        serde_json::from_str(&serde_json::to_string(&Laws::of(&rep, &fitted, &o)).unwrap())
            .unwrap();
    let c = 1e21;
    let (n, d) = (2.0 * n_opt(c), c / (12.0 * n_opt(c)));
    let sized = Target::new(Some(n), Some(d), None, None, "test").unwrap();
    let p = predict::predict(&laws, "approach3", &sized, &popts);
    assert!((p.extrapolation - 10.0).abs() < 1e-9, "{}", p.extrapolation);
    assert!(p.warning.is_none());
    let loss = p.loss.unwrap();
    assert!(
        loss.contains(law(n, d)),
        "L(N, D) {} outside {loss:?}",
        law(n, d)
    );
    assert!(loss.hi - loss.lo < 0.05 * loss.value, "{loss:?}");
    let n_true = n_opt(c);
    let l_opt = law(n_true, c / (6.0 * n_true));
    let optimal = Target::new(None, None, None, Some(c), "test").unwrap();
    for name in ["approach3", "approach2", "approach2_akima"] {
        let p = predict::predict(&laws, name, &optimal, &popts);
        let no = p.n_opt.unwrap();
        assert!(no.contains(n_true), "{name}: N* {n_true} outside {no:?}");
        let dd = p.d_opt.unwrap();
        assert!(dd.contains(c / (6.0 * n_true)), "{name}: D* outside {dd:?}");
    }
    for name in ["approach3", "compute"] {
        let lo = predict::predict(&laws, name, &optimal, &popts)
            .loss_opt
            .unwrap();
        assert!(lo.contains(l_opt), "{name}: L* {l_opt} outside {lo:?}");
    }
    // 1000× beyond: warned.
    let far = Target::new(None, None, None, Some(1e23), "test").unwrap();
    let w = predict::predict(&laws, "compute", &far, &popts)
        .warning
        .unwrap();
    assert!(w.contains("1000×"), "{w}");

    // The over-training law: a 5B model 4× over-trained, from runs up to 1B.
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let noise = Normal::<f64>::new(0.0, 0.005).unwrap();
    let (e, a, b, al) = (1.9, 300.0, 1000.0, 0.3);
    let ot = |n: f64, m: f64| e + a * n.powf(-al) + b * (m * n).powf(-al);
    let mut pts = vec![];
    for i in 0..5 {
        let n = 1e7 * 100f64.powf(i as f64 / 4.0);
        for m in [10.0, 20.0, 80.0, 320.0] {
            pts.push(Point {
                n,
                d: m * n,
                c: 6.0 * n * n * m,
                loss: ot(n, m) * noise.sample(&mut rng).exp(),
            });
        }
    }
    let ds = Dataset {
        source: "synthetic".into(),
        points: pts,
        ..Dataset::default()
    };
    let o = FitOptions {
        kinds: vec![FitKind::Overtrain],
        explicit: true,
        law: opts(200),
        ..FitOptions::default()
    };
    let (rep, fitted) = report::run(&ds, &o).unwrap();
    let laws = Laws::of(&rep, &fitted, &o);
    let t = Target::new(Some(5e9), None, Some(80.0), None, "test").unwrap();
    let p = predict::predict(&laws, "overtrain", &t, &popts);
    let loss = p.loss.unwrap();
    assert!(
        loss.contains(ot(5e9, 80.0)),
        "{} outside {loss:?}",
        ot(5e9, 80.0)
    );
    // Compute optimum of the law: M* = (b/a)^(1/α) at every C.
    let m_opt = (b / a).powf(1.0 / al);
    let no = p.n_opt.unwrap();
    let n_true = (t.flops / (6.0 * m_opt)).sqrt();
    assert!(no.contains(n_true), "N* {n_true} outside {no:?}");
}

fn hp_runs(rows: &[HpRow]) -> Vec<isoflop::fit::hparams::HpRun> {
    rows.iter()
        .map(
            |&(n, d, lr, batch, beta2, loss)| isoflop::fit::hparams::HpRun {
                n,
                d,
                c: 6.0 * n * d,
                lr,
                batch,
                beta2,
                loss,
            },
        )
        .collect()
}

#[test]
fn hparams_recovers_lr_and_batch_laws_and_flags_edge_optima() {
    use isoflop::fit::hparams::{fit, HpOptions};
    // Five sizes searched around their optimum; a sixth whose lr grid sits 30× above its optimum.
    let sizes = [1e6, 3e6, 1e7, 3e7, 1e8, 3e8];
    let shift = [1.0, 1.0, 1.0, 1.0, 1.0, 30.0];
    let runs = hp_runs(&hp_search(&sizes, &shift, &[0.95], 0.003, 7));
    let o = HpOptions {
        bootstrap: 200,
        seed: 3,
        ..HpOptions::default()
    };
    let h = fit(&runs, &o).unwrap();
    let [a, b, c, d] = HP_TRUTH;
    let lr = h.lr_law.as_ref().expect("lr law");
    let bl = h.batch_law.as_ref().expect("batch law");
    assert_eq!(
        (lr.n_points, bl.n_points),
        (5, 5),
        "the edge size is left out"
    );
    assert_eq!(lr.bootstrap_ok, 200);
    for (what, iv, truth) in [
        ("lr exponent", lr.b, b),
        ("lr coefficient", lr.a, a),
        ("B exponent", bl.b, d),
        ("B coefficient", bl.a, c),
    ] {
        assert!(iv.contains(truth), "{what}: {iv:?} misses {truth}");
    }
    // Informative intervals, not merely wide ones.
    assert!(lr.b.hi - lr.b.lo < 0.05, "{:?}", lr.b);
    assert!(bl.b.hi - bl.b.lo < 0.15, "{:?}", bl.b);
    let edge = &h.sizes[5];
    assert!(!edge.lr_used && !edge.batch_used);
    assert!(edge.curves.iter().all(|c| c.min.as_ref().unwrap().on_edge));
    assert!(
        h.notes
            .iter()
            .any(|n| n.contains("on edge") && n.contains("smallest lr")),
        "{:?}",
        h.notes
    );
    assert!(h
        .notes
        .iter()
        .any(|n| n.contains("1 size(s) left out of the lr law")));
    // Seeded: the same fit twice gives the same intervals bit for bit.
    let h2 = fit(&runs, &o).unwrap();
    assert_eq!(h2.lr_law.unwrap().b, lr.b);
    // The fragment pastes into a spec: the rules evaluate the fitted laws at the rules' N.
    #[derive(serde::Deserialize)]
    struct Frag {
        train: Train,
    }
    #[derive(serde::Deserialize)]
    struct Train {
        lr: isoflop::sweep::rules::Rule,
        batch_size: isoflop::sweep::rules::Rule,
    }
    let f: Frag = toml::from_str(&h.fragment).unwrap();
    let n = 1e7;
    // The fragment keeps 7 significant digits of a and b.
    let got = f.train.lr.value("lr", 0, n as u64).unwrap();
    assert!((got / lr.at(n) - 1.0).abs() < 1e-5, "{got} vs {}", lr.at(n));
    let got = f.train.batch_size.value("batch_size", 0, n as u64).unwrap();
    assert!((got / bl.at(n) - 1.0).abs() < 1e-5);
}

#[test]
fn hparams_best_beta2_per_batch_size() {
    use isoflop::fit::hparams::{fit, HpOptions};
    // B*/8 is 63 at N = 1e8 and 87 at 3e8: β2 = 0.99 wins at B = 32 (and 64), 0.95 elsewhere.
    let runs = hp_runs(&hp_search(
        &[1e8, 3e8],
        &[1.0, 1.0],
        &[0.95, 0.99],
        0.0005,
        9,
    ));
    let h = fit(
        &runs,
        &HpOptions {
            bootstrap: 0,
            ..HpOptions::default()
        },
    )
    .unwrap();
    let raised = h
        .sizes
        .iter()
        .flat_map(|s| &s.batches)
        .filter(|r| r.beta2 == 0.99);
    assert_eq!(raised.count(), 3);
    for s in &h.sizes {
        let b_opt = HP_TRUTH[2] * s.n.powf(HP_TRUTH[3]);
        for r in &s.batches {
            let want = if 8.0 * r.batch_size < b_opt {
                0.99
            } else {
                0.95
            };
            assert_eq!(r.beta2, want, "N {} B {}", s.n, r.batch_size);
            let saves = r.beta2_saves.unwrap();
            if want == 0.99 {
                assert!((saves - 0.01).abs() < 0.003, "saves {saves}");
            } else {
                assert_eq!(saves, 0.0);
            }
        }
    }
}

#[test]
fn hparams_splits_sizes_by_budget_and_fits_in_tokens_too() {
    use isoflop::fit::hparams::{fit, HpOptions};
    // Every size searched at 20 and at 80 tokens per parameter: two budgets per size.
    let mut rows = hp_search(&[1e6, 1e7, 1e8], &[1.0; 3], &[0.95], 0.002, 11);
    let more: Vec<HpRow> = hp_search(&[1e6, 1e7, 1e8], &[1.0; 3], &[0.95], 0.002, 12)
        .into_iter()
        .map(|(n, d, lr, b, b2, l)| (n, 4.0 * d, lr, b, b2, l))
        .collect();
    rows.extend(more);
    let h = fit(
        &hp_runs(&rows),
        &HpOptions {
            bootstrap: 100,
            ..HpOptions::default()
        },
    )
    .unwrap();
    assert_eq!(h.sizes.len(), 6);
    assert!(h.sizes.iter().all(|s| s.n_runs == 49 && s.lr_used));
    let lr = h.lr_law.as_ref().unwrap();
    assert_eq!(lr.n_points, 6);
    assert!(lr.b.contains(HP_TRUTH[1]), "{:?}", lr.b);
    // lr* depends on N alone here, so in D the law is the N law seen through a scatter of M.
    let lt = h.lr_law_tokens.as_ref().expect("law in D");
    assert_eq!((lt.variable.as_str(), lt.n_points), ("D", 6));
    assert!(lt.r2 < lr.r2);
}
