//! Criterion benches of the scaling-law fitter on the Chinchilla fixture (240 points): the full
//! 4,500-start Approach 3 grid, and a 1,000-replicate bootstrap refitted from the best start.
use criterion::{criterion_group, criterion_main, Criterion};
use isoflop::fit::data::{read_points, Columns, Point};
use isoflop::fit::law::LawOptions;
use isoflop::fit::optim::{bootstrap, lbfgs, HuberObjective, LbfgsOptions};
use isoflop::fit::parametric;
use isoflop::fit::table::Table;
use isoflop::model::accounting::FlopConvention;
use std::path::Path;

fn chinchilla() -> Vec<Point> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chinchilla_fig4_epoch_extracted.csv");
    let t = Table::read(&path).expect("fixture");
    let mut notes = vec![];
    let mut pts =
        read_points(&t, &Columns::new(FlopConvention::Standard), &mut notes).expect("fixture");
    pts.sort_by(|a, b| a.loss.total_cmp(&b.loss));
    pts.truncate(240);
    pts
}

fn bench_fit(c: &mut Criterion) {
    let pts = chinchilla();
    let starts = parametric::default_starts();
    let opts = LawOptions {
        bootstrap: 0,
        ..LawOptions::default()
    };
    let mut g = c.benchmark_group("fit");
    g.sample_size(10);
    g.bench_function("approach3_grid_4500_starts_240_points", |b| {
        b.iter(|| parametric::fit(&pts, &starts, &opts).expect("fit"))
    });
    let best = parametric::fit(&pts, &starts, &opts).expect("fit").theta;
    let data = parametric::lse_data(&pts);
    let model = parametric::model();
    g.bench_function("approach3_bootstrap_1000", |b| {
        b.iter(|| {
            bootstrap(data.len(), 1000, 0, |idx| {
                let s = data.select(idx);
                let o = HuberObjective {
                    model: &model,
                    data: &s,
                    delta: 1e-3,
                    on_loss: false,
                };
                lbfgs(&o, &best, &LbfgsOptions::default()).map(|m| m.theta)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_fit);
criterion_main!(benches);
