//! Figures (SVG and PNG, plotters): loss curves with the envelope, IsoFLOP curves with their minima,
//! N*(C) and D*(C) with fitted lines and intervals, and fitted laws against the data.

use super::data::{Dataset, Point};
use super::downstream::{self, DownstreamFit, PairSet};
use super::error::FitError;
use super::law::LawFit;
use super::report::{DownstreamReport, Fitted, LawReport, Report};
use super::stats::{percentile, Interval};
use super::{compute, envelope, hparams, overtrain, parametric};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Register the bundled DejaVu Sans as "sans-serif" for PNG text (SVG names the family only).
pub fn register_font() {
    REGISTER.call_once(|| {
        // The font is bundled and known to parse; a failure would only lose PNG text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Viridis-like colour for t in [0, 1] (stops short of the pale yellow end).
pub fn viridis(t: f64) -> RGBColor {
    const S: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0) * 0.85
    } else {
        0.0
    };
    let x = t * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let l = |a: f64, b: f64| (a + f * (b - a)).round() as u8;
    RGBColor(
        l(S[i].0, S[i + 1].0),
        l(S[i].1, S[i + 1].1),
        l(S[i].2, S[i + 1].2),
    )
}

fn sci(v: &f64) -> String {
    let s = format!("{v:.0e}");
    s.replace("e0", "")
}

fn norm_log(v: f64, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
    } else {
        0.5
    }
}

fn span(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    vals.filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)))
}

fn pad_log((lo, hi): (f64, f64), f: f64) -> (f64, f64) {
    let r = (hi / lo).ln().max(1e-3);
    (lo * (-f * r).exp(), hi * (f * r).exp())
}

type R = Result<(), String>;

fn e<T: std::fmt::Debug>(x: T) -> String {
    format!("{x:?}")
}

const CAPTION: u32 = 26;
const LABEL: u32 = 20;
const TICK: u32 = 16;

/// The frame of a chart in the figures' one style: caption, margins, axis titles and tick formats (the
/// label fonts and the absent minor grid are the same for all). [`Frame::new`] gives the usual sizes.
pub(super) struct Frame<'s> {
    pub(super) caption: &'s str,
    pub(super) caption_size: u32,
    pub(super) margin: u32,
    /// Height of the x tick-label area (pixels).
    pub(super) x_area: u32,
    /// Width of the y tick-label area (pixels).
    pub(super) y_area: u32,
    pub(super) x_desc: &'s str,
    pub(super) y_desc: &'s str,
    pub(super) x_fmt: &'s dyn Fn(&f64) -> String,
    pub(super) y_fmt: &'s dyn Fn(&f64) -> String,
}

impl<'s> Frame<'s> {
    /// Caption size `CAPTION`, margin 20, label areas 55 (x) and 80 (y), scientific ticks on both axes.
    pub(super) fn new(caption: &'s str, x_desc: &'s str, y_desc: &'s str) -> Self {
        Frame {
            caption,
            caption_size: CAPTION,
            margin: 20,
            x_area: 55,
            y_area: 80,
            x_desc,
            y_desc,
            x_fmt: &sci,
            y_fmt: &sci,
        }
    }
    /// [`Frame::new`] with a 75-pixel y label area and y ticks to two decimals (losses, errors).
    pub(super) fn loss(caption: &'s str, x_desc: &'s str, y_desc: &'s str) -> Self {
        Frame {
            y_area: 75,
            y_fmt: &two_decimals,
            ..Frame::new(caption, x_desc, y_desc)
        }
    }
}

/// `v` with two decimals (loss ticks).
fn two_decimals(v: &f64) -> String {
    format!("{v:.2}")
}

/// A chart with axes `X` and `Y` drawing on a `DB`.
pub(super) type Chart<'a, DB, X, Y> = ChartContext<'a, DB, Cartesian2d<X, Y>>;

/// A chart on `area` with axes `x` and `y` (plain ranges or `.log_scale()`), its mesh drawn in `frame`.
pub(super) fn chart<'a, DB, X, Y>(
    area: &'a DrawingArea<DB, Shift>,
    frame: &Frame,
    x: X,
    y: Y,
) -> Result<Chart<'a, DB, X::CoordDescType, Y::CoordDescType>, String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut ch = ChartBuilder::on(area)
        .caption(frame.caption, ("sans-serif", frame.caption_size))
        .margin(frame.margin)
        .x_label_area_size(frame.x_area)
        .y_label_area_size(frame.y_area)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .axis_desc_style(("sans-serif", LABEL))
        .label_style(("sans-serif", TICK))
        .x_label_formatter(frame.x_fmt)
        .y_label_formatter(frame.y_fmt)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    Ok(ch)
}

/// Draw the series labels of `ch` in a box at `pos`, in the figures' one style.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    ch: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> R {
    ch.configure_series_labels()
        .position(pos)
        .label_font(("sans-serif", TICK))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()
        .map_err(e)
}

/// [`chart`] with a logarithmic x axis over `x` (FLOPs, parameters, learning rates all span decades).
pub(super) fn log_chart<'a, DB, Y>(
    area: &'a DrawingArea<DB, Shift>,
    frame: &Frame,
    x: (f64, f64),
    y: Y,
) -> Result<Chart<'a, DB, LogCoord<f64>, Y::CoordDescType>, String>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart(area, frame, (x.0..x.1).log_scale(), y)
}

/// Loss against FLOPs: training curves coloured by N, the envelope, final points and L(C).
fn fig_loss<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ds: &Dataset,
    rep: &Report,
    fit: &Fitted,
) -> R {
    let (nlo, nhi) = span(
        ds.points
            .iter()
            .map(|p| p.n)
            .chain(ds.curves.iter().map(|c| c.n)),
    );
    let fin_c = span(ds.points.iter().map(|p| p.c));
    let fin_l = span(ds.points.iter().map(|p| p.loss));
    let (x_lo, x_hi, y_lo, y_hi) = if ds.curves.is_empty() {
        let (a, b) = pad_log(fin_c, 0.05);
        let pad = 0.05 * (fin_l.1 - fin_l.0).max(1e-3);
        (a, b, fin_l.0 - pad, fin_l.1 + pad)
    } else {
        let all_c = span(ds.curves.iter().flat_map(|c| c.c.iter().copied()));
        let x_lo = envelope::long_range(&ds.curves).0;
        let all_l = span(ds.curves.iter().flat_map(|c| c.loss.iter().copied()));
        let fin = span(ds.curves.iter().map(|c| c.loss[c.loss.len() - 1]));
        let y_hi = (fin.1 * 1.6).min(all_l.1 * 1.02);
        (
            x_lo,
            all_c.1 * 1.05,
            all_l.0 - 0.03 * (y_hi - all_l.0),
            y_hi,
        )
    };
    let mut ch = log_chart(
        root,
        &Frame::loss(
            &format!("Loss against training FLOPs ({})", rep.convention),
            &format!("training FLOPs C ({})", rep.convention),
            "loss",
        ),
        (x_lo, x_hi),
        y_lo..y_hi,
    )?;
    let inside = |c: f64, l: f64| c >= x_lo && c <= x_hi && l >= y_lo && l <= y_hi;
    for (k, cv) in ds.curves.iter().enumerate() {
        let col = viridis(norm_log(cv.n, nlo, nhi));
        let pts: Vec<(f64, f64)> =
            cv.c.iter()
                .zip(&cv.loss)
                .map(|(&c, &l)| (c, l))
                .filter(|&(c, l)| inside(c, l))
                .collect();
        let s = ch
            .draw_series(LineSeries::new(pts, col.stroke_width(2)))
            .map_err(e)?;
        if k == 0 {
            s.label(format!("runs (colour: N {} … {})", sci(&nlo), sci(&nhi)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2))
                });
        }
    }
    if ds.curves.is_empty() {
        ch.draw_series(
            ds.points
                .iter()
                .map(|p| Circle::new((p.c, p.loss), 4, viridis(norm_log(p.n, nlo, nhi)).filled())),
        )
        .map_err(e)?
        .label(format!("runs (colour: N {} … {})", sci(&nlo), sci(&nhi)))
        .legend(|(x, y)| Circle::new((x + 10, y), 4, viridis(0.5).filled()));
    }
    if let Some(a1) = &rep.approach1 {
        let env = &a1.envelope;
        ch.draw_series(LineSeries::new(
            env.c.iter().zip(&env.loss).map(|(&c, &l)| (c, l)),
            BLACK.stroke_width(4),
        ))
        .map_err(e)?
        .label("envelope (approach 1)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(4)));
    }
    if let Some(a2) = &rep.approach2 {
        let m: Vec<(f64, f64)> = a2
            .budgets
            .iter()
            .filter(|b| b.used)
            .map(|b| (b.c, b.loss_opt))
            .filter(|&(c, l)| inside(c, l))
            .collect();
        if !m.is_empty() {
            ch.draw_series(m.iter().map(|&p| TriangleMarker::new(p, 8, BLACK.filled())))
                .map_err(e)?
                .label("IsoFLOP minima (approach 2)")
                .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, BLACK.filled()));
        }
    }
    if let (Some(cf), Some(cr)) = (&fit.compute, &rep.compute) {
        let p = &cr.law.params;
        let (lo, hi) = (x_lo, x_hi);
        let line: Vec<(f64, f64)> = (0..=200)
            .map(|i| lo * (hi / lo).powf(i as f64 / 200.0))
            .map(|c| (c, compute::predict(cf, c)))
            .filter(|&(c, l)| inside(c, l))
            .collect();
        let red = RGBColor(214, 39, 40);
        ch.draw_series(DashedLineSeries::new(line, 10, 6, red.stroke_width(3)))
            .map_err(e)?
            .label(format!(
                "{}L(C) = {:.3} + {:.3e}·C^-{:.4}",
                not_sane(&cr.law),
                p.value("E"),
                p.value("lambda"),
                p.value("alpha")
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(3)));
    }
    legend(&mut ch, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(e)
}

/// IsoFLOP curves: loss against N per budget, the fitted parabolas and their minima.
fn fig_isoflop<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, rep: &Report) -> R {
    let Some(a2) = &rep.approach2 else {
        return Ok(());
    };
    let bs: Vec<_> = a2.budgets.iter().filter(|b| b.n_points >= 3).collect();
    let (nlo, nhi) = pad_log(
        span(bs.iter().flat_map(|b| b.runs.iter().map(|r| r.0))),
        0.04,
    );
    let (llo, lhi) = span(bs.iter().flat_map(|b| b.runs.iter().map(|r| r.1)));
    let pad = 0.05 * (lhi - llo).max(1e-3);
    let (clo, chi) = span(bs.iter().map(|b| b.c));
    let mut ch = log_chart(
        root,
        &Frame::loss(
            "IsoFLOP profiles (parabola in ln N)",
            "parameters N",
            "loss",
        ),
        (nlo, nhi),
        (llo - pad)..(lhi + pad),
    )?;
    let (ylo, yhi) = (llo - pad, lhi + pad);
    for b in &bs {
        let col = viridis(norm_log(b.c, clo, chi));
        ch.draw_series(b.runs.iter().map(|&p| Circle::new(p, 5, col.filled())))
            .map_err(e)?
            .label(format!("C = {:.1e}", b.c))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, col.filled()));
        let curve: Vec<(f64, f64)> = b
            .curve
            .iter()
            .copied()
            .filter(|&(_, l)| l >= ylo && l <= yhi)
            .collect();
        ch.draw_series(LineSeries::new(curve, col.stroke_width(2)))
            .map_err(e)?;
    }
    let shown = |b: &&&super::isoflop::BudgetMin| {
        b.n_opt.is_finite() && b.loss_opt >= ylo && b.loss_opt <= yhi
    };
    ch.draw_series(
        bs.iter()
            .filter(shown)
            .filter(|b| !b.used)
            .map(|b| TriangleMarker::new((b.n_opt, b.loss_opt), 9, BLACK.stroke_width(2))),
    )
    .map_err(e)?;
    ch.draw_series(
        bs.iter()
            .filter(shown)
            .filter(|b| b.used)
            .map(|b| TriangleMarker::new((b.n_opt, b.loss_opt), 9, BLACK.filled())),
    )
    .map_err(e)?
    .label("minimum (open: not used)")
    .legend(|(x, y)| TriangleMarker::new((x + 10, y), 8, BLACK.filled()));
    legend(&mut ch, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(e)
}

struct Line {
    label: String,
    color: RGBColor,
    /// The line with its band (`lo`/`hi`; NaN where there is none).
    pts: Vec<(f64, Interval)>,
    dashed: bool,
    /// Opacity of the band's fill.
    band_alpha: f64,
    /// Legend entry of the band, if it gets one.
    band_label: Option<String>,
}

/// Points read off the Approach 1 envelope: (C, N* or D*, entered the fit).
struct EnvPoints {
    color: RGBColor,
    label: String,
    pts: Vec<(f64, f64, bool)>,
}

/// At most `max` of `n` indices, evenly spread, always keeping the first and last.
fn thin(n: usize, max: usize) -> Vec<usize> {
    if n <= max || max < 2 {
        return (0..n).collect();
    }
    let mut v: Vec<usize> = (0..max)
        .map(|i| ((i as f64) * (n - 1) as f64 / (max - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// One panel of N*(C) or D*(C).
fn panel_opt<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    ylab: &str,
    marks: &[(f64, Interval)],
    env: Option<&EnvPoints>,
    lines: &[Line],
    xr: (f64, f64),
) -> R {
    let yr = pad_log(
        span(
            marks
                .iter()
                .map(|m| m.1.value)
                .chain(env.iter().flat_map(|e| e.pts.iter().map(|p| p.1)))
                .chain(lines.iter().flat_map(|l| l.pts.iter().map(|p| p.1.value))),
        ),
        0.08,
    );
    let mut ch = log_chart(
        area,
        &Frame::new(title, "training FLOPs C", ylab),
        xr,
        (yr.0..yr.1).log_scale(),
    )?;
    let clampy = |v: f64| v.clamp(yr.0, yr.1);
    for l in lines {
        let band: Vec<(f64, f64)> = l
            .pts
            .iter()
            .filter(|p| p.1.lo.is_finite())
            .map(|p| (p.0, clampy(p.1.lo)))
            .chain(
                l.pts
                    .iter()
                    .rev()
                    .filter(|p| p.1.hi.is_finite())
                    .map(|p| (p.0, clampy(p.1.hi))),
            )
            .collect();
        if band.len() > 2 {
            let fill = l.color.mix(l.band_alpha).filled();
            ch.draw_series([Polygon::new(band, fill)]).map_err(e)?;
        }
    }
    if let Some(env) = env {
        let inside = |p: &&(f64, f64, bool)| p.1 >= yr.0 && p.1 <= yr.1;
        let col = env.color;
        ch.draw_series(
            env.pts
                .iter()
                .filter(inside)
                .map(|p| Circle::new((p.0, p.1), 4, col.stroke_width(1))),
        )
        .map_err(e)?;
        ch.draw_series(
            env.pts
                .iter()
                .filter(inside)
                .filter(|p| p.2)
                .map(|p| Circle::new((p.0, p.1), 4, col.filled())),
        )
        .map_err(e)?;
    }
    for l in lines {
        let pts: Vec<(f64, f64)> = l
            .pts
            .iter()
            .map(|p| (p.0, p.1.value))
            .filter(|p| p.1 >= yr.0 && p.1 <= yr.1)
            .collect();
        let col = l.color;
        let s = if l.dashed {
            ch.draw_series(DashedLineSeries::new(pts, 10, 6, col.stroke_width(3)))
                .map_err(e)?
        } else {
            ch.draw_series(LineSeries::new(pts, col.stroke_width(3)))
                .map_err(e)?
        };
        s.label(l.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
    }
    // Legend entries for the bands and the envelope points, after the lines they belong to (the
    // shapes themselves are drawn underneath the lines, above).
    for l in lines {
        if let Some(lab) = &l.band_label {
            let fill = l.color.mix(l.band_alpha).filled();
            let col = l.color;
            ch.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(e)?
                .label(lab.clone())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + Rectangle::new([(0, -6), (20, 6)], fill)
                        + Rectangle::new([(0, -6), (20, 6)], col.mix(0.4).stroke_width(1))
                });
        }
    }
    if let Some(env) = env {
        let col = env.color;
        ch.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(e)?
            .label(env.label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
    }
    if !marks.is_empty() {
        for m in marks {
            if m.1.lo.is_finite() {
                ch.draw_series([PathElement::new(
                    vec![(m.0, clampy(m.1.lo)), (m.0, clampy(m.1.hi))],
                    BLACK.stroke_width(2),
                )])
                .map_err(e)?;
            }
        }
        ch.draw_series(
            marks
                .iter()
                .map(|m| Circle::new((m.0, m.1.value), 5, BLACK.filled())),
        )
        .map_err(e)?
        .label("IsoFLOP minima (±95%)")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    }
    legend(&mut ch, SeriesLabelPosition::UpperLeft)
}

/// N*(C) and D*(C): IsoFLOP minima and the power laws of every approach, with intervals.
fn fig_optimal<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ds: &Dataset,
    rep: &Report,
    fit: &Fitted,
) -> R {
    let mut xr = span(ds.points.iter().map(|p| p.c));
    if let Some(a1) = &rep.approach1 {
        xr = (xr.0.min(a1.c_range[0]), xr.1.max(a1.c_range[1]));
    }
    let xr = pad_log(xr, 0.08);
    let grid: Vec<f64> = (0..=60)
        .map(|i| xr.0 * (xr.1 / xr.0).powf(i as f64 / 60.0))
        .collect();
    let (blue, gray, green, red) = (
        RGBColor(31, 119, 180),
        RGBColor(120, 120, 120),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    );
    let halves = root.split_evenly((1, 2));
    for (k, area) in halves.iter().enumerate() {
        let pick = |a: &super::isoflop::IsoFlopFit| {
            if k == 0 {
                a.n_opt.clone()
            } else {
                a.d_opt.clone()
            }
        };
        let mut lines = vec![];
        let mut marks = vec![];
        if let Some(a2) = &rep.approach2 {
            let z = 1.96;
            for b in a2.budgets.iter().filter(|b| b.used) {
                let (v, se) = if k == 0 {
                    (b.n_opt, b.se_ln_n)
                } else {
                    (b.d_opt, b.se_ln_d)
                };
                let (lo, hi) = se.map_or((f64::NAN, f64::NAN), |s| {
                    (v * (-z * s).exp(), v * (z * s).exp())
                });
                marks.push((b.c, Interval { value: v, lo, hi }));
            }
            if let Some(p) = pick(a2) {
                lines.push(Line {
                    label: format!("approach 2: ∝ C^{:.3}", p.exponent.value),
                    color: blue,
                    pts: grid.iter().map(|&c| (c, p.predict(c))).collect(),
                    dashed: false,
                    band_alpha: 0.15,
                    band_label: None,
                });
            }
        }
        if let Some(p) = rep.approach2_akima.as_ref().and_then(pick) {
            lines.push(Line {
                label: format!("approach 2, Akima: ∝ C^{:.3}", p.exponent.value),
                color: gray,
                pts: grid
                    .iter()
                    .map(|&c| (c, Interval::bare(p.predict(c).value)))
                    .collect(),
                dashed: true,
                band_alpha: 0.0,
                band_label: None,
            });
        }
        let mut env_pts = None;
        if let Some(a1) = &rep.approach1 {
            let (law, boot) = if k == 0 {
                (&a1.n_opt, &a1.n_boot)
            } else {
                (&a1.d_opt, &a1.d_boot)
            };
            if let Some(p) = law {
                // The band comes from the bootstrap over runs: the t interval of the line is nominal
                // (the grid points are not independent) and is not drawn.
                let pts = grid
                    .iter()
                    .map(|&c| {
                        let value = p.predict(c).value;
                        let (lo, hi) = boot.band(c).unwrap_or((f64::NAN, f64::NAN));
                        (c, Interval { value, lo, hi })
                    })
                    .collect();
                lines.push(Line {
                    label: format!("approach 1: ∝ C^{:.3}", p.exponent.value),
                    color: green,
                    pts,
                    dashed: false,
                    band_alpha: 0.1,
                    band_label: (boot.band(grid[0]).is_some()).then(|| {
                        format!(
                            "approach 1: {:.0}% band, bootstrap over runs ({} reps)",
                            100.0 * boot.level,
                            boot.reps.len()
                        )
                    }),
                });
            }
            let env = &a1.envelope;
            let fitted = envelope::interior(env);
            let ys = if k == 0 { &env.n } else { &env.d };
            let pts: Vec<(f64, f64, bool)> = thin(env.c.len(), 60)
                .into_iter()
                .map(|i| (env.c[i], ys[i], fitted.binary_search(&i).is_ok()))
                .filter(|p| p.1.is_finite() && p.1 > 0.0)
                .collect();
            if !pts.is_empty() {
                env_pts = Some(EnvPoints {
                    color: RGBColor(20, 90, 20),
                    label: format!(
                        "envelope {}*(C) (approach 1; open: not fitted)",
                        if k == 0 { "N" } else { "D" }
                    ),
                    pts,
                });
            }
        }
        if let Some(f3) = sane_approach3(rep, fit) {
            let (ex, name) = if k == 0 { ("a", "N") } else { ("b", "D") };
            let pts = grid
                .iter()
                .map(|&c| {
                    (
                        c,
                        Interval::bare(if k == 0 {
                            parametric::n_opt(f3, c)
                        } else {
                            parametric::d_opt(f3, c)
                        }),
                    )
                })
                .collect();
            lines.push(Line {
                label: format!("approach 3: {name}_opt ∝ C^{:.3}", f3.params.value(ex)),
                color: red,
                pts,
                dashed: true,
                band_alpha: 0.0,
                band_label: None,
            });
        }
        let (title, ylab) = if k == 0 {
            ("Compute-optimal parameters N*(C)", "N*")
        } else {
            ("Compute-optimal tokens D*(C)", "D*")
        };
        panel_opt(area, title, ylab, &marks, env_pts.as_ref(), &lines, xr)?;
    }
    root.present().map_err(e)
}

/// Goodness of fit of a law over (N, D) points: observed against fitted loss, and residuals against C.
fn fig_law<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    pts: &[Point],
    pred: &dyn Fn(&Point) -> f64,
) -> R {
    let (nlo, nhi) = span(pts.iter().map(|p| p.n));
    let fitted: Vec<f64> = pts.iter().map(pred).collect();
    let halves = root.split_evenly((1, 2));
    let lr = span(pts.iter().map(|p| p.loss).chain(fitted.iter().copied()));
    let lp = 0.04 * (lr.1 - lr.0).max(1e-3);
    let lr = (lr.0 - lp, lr.1 + lp);
    let mut ch = chart(
        &halves[0],
        &Frame {
            caption_size: CAPTION - 4,
            x_fmt: &two_decimals,
            ..Frame::loss(title, "fitted loss", "observed loss")
        },
        lr.0..lr.1,
        lr.0..lr.1,
    )?;
    ch.draw_series(LineSeries::new(
        [(lr.0, lr.0), (lr.1, lr.1)],
        BLACK.mix(0.6).stroke_width(2),
    ))
    .map_err(e)?;
    ch.draw_series(
        pts.iter()
            .zip(&fitted)
            .map(|(p, &f)| Circle::new((f, p.loss), 4, viridis(norm_log(p.n, nlo, nhi)).filled())),
    )
    .map_err(e)?
    .label(format!("runs (colour: N {} … {})", sci(&nlo), sci(&nhi)))
    .legend(|(x, y)| Circle::new((x + 10, y), 4, viridis(0.5).filled()));
    legend(&mut ch, SeriesLabelPosition::UpperLeft)?;
    let res: Vec<f64> = pts
        .iter()
        .zip(&fitted)
        .map(|(p, f)| p.loss.ln() - f.ln())
        .collect();
    let rmax = res.iter().fold(1e-4f64, |m, r| m.max(r.abs())) * 1.1;
    let cr = pad_log(span(pts.iter().map(|p| p.c)), 0.04);
    let mut ch = log_chart(
        &halves[1],
        &Frame {
            caption_size: CAPTION - 4,
            y_area: 75,
            y_fmt: &|v| format!("{v:.3}"),
            ..Frame::new("Residuals", "training FLOPs C", "ln observed − ln fitted")
        },
        cr,
        -rmax..rmax,
    )?;
    ch.draw_series(LineSeries::new(
        [(cr.0, 0.0), (cr.1, 0.0)],
        BLACK.mix(0.6).stroke_width(2),
    ))
    .map_err(e)?;
    ch.draw_series(
        pts.iter()
            .zip(&res)
            .map(|(p, &r)| Circle::new((p.c, r), 4, viridis(norm_log(p.n, nlo, nhi)).filled())),
    )
    .map_err(e)?;
    root.present().map_err(e)
}

/// Draw `$body` on a white `$name.svg` and `$name.png` in `$dir`, pushing both paths to `$out`.
macro_rules! render {
    (@one $backend:ident, $path:ident, $size:expr, |$root:ident| $body:expr) => {{
        let $root = $backend::new(&$path, $size).into_drawing_area();
        $root
            .fill(&WHITE)
            .map_err(e)
            .and_then(|()| $body)
            .map_err(|why| FitError::BadInput {
                path: $path.clone(),
                what: format!("plot failed: {why}"),
            })?;
    }};
    ($dir:expr, $name:expr, $size:expr, $out:expr, |$root:ident| $body:expr) => {{
        let svg = $dir.join(format!("{}.svg", $name));
        let png = $dir.join(format!("{}.png", $name));
        render!(@one SVGBackend, svg, $size, |$root| $body);
        render!(@one BitMapBackend, png, $size, |$root| $body);
        $out.push(svg);
        $out.push(png);
    }};
}

/// Caption prefix flagging a law fit whose parameters are not a usable law (see `LawReport::problems`).
fn not_sane(l: &LawReport) -> &'static str {
    if l.sane {
        ""
    } else {
        "NOT SANE: "
    }
}

/// Approach 3's fit when it is sane: N_opt(C) of a fit with G = 0 or an infinite B spans hundreds of
/// decades, which no axis can show (plotters would stall on it), and means nothing.
fn sane_approach3<'a>(rep: &Report, fit: &'a Fitted) -> Option<&'a LawFit> {
    fit.approach3
        .as_ref()
        .filter(|_| rep.approach3.as_ref().is_some_and(|l| l.sane))
}

/// Write every figure the report supports into `dir`; returns the files written.
pub fn write_all(
    dir: &Path,
    ds: &Dataset,
    rep: &Report,
    fit: &Fitted,
) -> Result<Vec<PathBuf>, FitError> {
    register_font();
    let mut out = vec![];
    if !ds.points.is_empty() || !ds.curves.is_empty() {
        render!(dir, "loss_vs_flops", (1200, 800), out, |root| fig_loss(
            &root, ds, rep, fit
        ));
    }
    if rep.approach2.is_some() {
        render!(dir, "isoflop", (1200, 800), out, |root| fig_isoflop(
            &root, rep
        ));
    }
    if rep.approach2.as_ref().is_some_and(|a| a.n_opt.is_some())
        || rep.approach1.as_ref().is_some_and(|a| a.n_opt.is_some())
        || sane_approach3(rep, fit).is_some()
    {
        render!(dir, "optimal", (1600, 700), out, |root| fig_optimal(
            &root, ds, rep, fit
        ));
    }
    // The laws of (N, D): figure name, fit, report, the names of the coefficient and exponent of each
    // term, the second term's variable, and the prediction at a point.
    type LawPredict = fn(&LawFit, &Point) -> f64;
    let laws: [(&str, _, _, [&str; 4], &str, LawPredict); 2] = [
        (
            "parametric",
            &fit.approach3,
            &rep.approach3,
            ["A", "alpha", "B", "beta"],
            "D",
            |f, q| parametric::predict(f, q.n, q.d),
        ),
        (
            "overtrain",
            &fit.overtrain,
            &rep.overtrain,
            ["a", "alpha", "b", "alpha"],
            "(MN)",
            |f, q| overtrain::predict(f, q.n, q.d / q.n),
        ),
    ];
    for (name, law, law_rep, [c1, e1, c2, e2], x2, predict) in laws {
        let Some(law) = law else { continue };
        let p = &law.params;
        let title = format!(
            "{}L = {:.3} + {:.1}/N^{:.4} + {:.1}/{x2}^{:.4}",
            law_rep.as_ref().map_or("", not_sane),
            p.value("E"),
            p.value(c1),
            p.value(e1),
            p.value(c2),
            p.value(e2)
        );
        render!(dir, name, (1600, 700), out, |root| fig_law(
            &root,
            &title,
            &fit.law_points,
            &|q: &Point| predict(law, q)
        ));
    }
    if let (Some(d), Some((f, pairs))) = (&rep.downstream, &fit.downstream) {
        render!(dir, "downstream", (1000, 750), out, |root| fig_downstream(
            &root, d, f, pairs
        ));
    }
    Ok(out)
}

/// Loss against lr, one panel per batch size, one colour per size, optima marked (hollow: on edge).
fn fig_hp_lr<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &hparams::HparamsFit,
    bs: &[f64],
    cols: usize,
) -> R {
    let (nlo, nhi) = span(h.sizes.iter().map(|s| s.n));
    let rows = bs.len().div_ceil(cols);
    let panels = root.split_evenly((rows, cols));
    for (b, area) in bs.iter().zip(panels.iter()) {
        let curves: Vec<(f64, &hparams::LrCurve)> = h
            .sizes
            .iter()
            .flat_map(|s| {
                s.batches
                    .iter()
                    .filter(|r| r.batch_size == *b)
                    .map(move |r| (s.n, &s.curves[r.curve]))
            })
            .collect();
        let xr = pad_log(
            span(curves.iter().flat_map(|c| c.1.lr.iter().copied())),
            0.05,
        );
        let (llo, lhi) = span(curves.iter().flat_map(|c| c.1.loss.iter().copied()));
        // Diverged runs can sit far above the rest: cap the axis at twice the spread of the minima.
        let mins = span(
            curves
                .iter()
                .flat_map(|c| c.1.loss.iter().copied().reduce(f64::min)),
        );
        let lhi = lhi.min(mins.1 + 2.0 * (mins.1 - llo).max(0.05 * llo));
        let pad = 0.05 * (lhi - llo).max(1e-3);
        let (ylo, yhi) = (llo - pad, lhi + pad);
        let mut ch = log_chart(
            area,
            &Frame {
                margin: 15,
                x_area: 50,
                y_area: 70,
                y_fmt: &|v| format!("{v:.2}"),
                ..Frame::new(
                    &format!("batch size {b}"),
                    "peak learning rate",
                    "final loss",
                )
            },
            xr,
            ylo..yhi,
        )?;
        let inside = |p: &(f64, f64)| p.1 >= ylo && p.1 <= yhi;
        for (n, c) in &curves {
            let col = viridis(norm_log(*n, nlo, nhi));
            ch.draw_series(
                c.lr.iter()
                    .zip(&c.loss)
                    .map(|(&x, &y)| (x, y))
                    .filter(inside)
                    .map(|p| Circle::new(p, 4, col.filled())),
            )
            .map_err(e)?;
            let Some(m) = &c.min else { continue };
            let line: Vec<(f64, f64)> = m
                .curve
                .iter()
                .map(|&(x, y)| (x.exp(), y))
                .filter(inside)
                .collect();
            ch.draw_series(LineSeries::new(line, col.stroke_width(2)))
                .map_err(e)?
                .label(format!("N = {}", sci(n)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3))
                });
            let style = if m.on_edge {
                BLACK.stroke_width(2)
            } else {
                BLACK.filled()
            };
            if inside(&(m.opt, m.loss_opt)) {
                ch.draw_series([TriangleMarker::new((m.opt, m.loss_opt), 8, style)])
                    .map_err(e)?;
            }
        }
        legend(&mut ch, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(e)
}

/// One panel of `hparams_laws`: title, law, and per size (N, optimum, used in the law).
type LawPanel<'a> = (&'a str, &'a Option<hparams::HpLaw>, Vec<(f64, f64, bool)>);

/// lr*(N) and B*(N): the optima (hollow: left out) with the fitted laws and their bands.
fn fig_hp_laws<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &hparams::HparamsFit) -> R {
    let panels = root.split_evenly((1, 2));
    let xr = pad_log(span(h.sizes.iter().map(|s| s.n)), 0.1);
    let sets: [LawPanel; 2] = [
        (
            "optimal learning rate lr*(N)",
            &h.lr_law,
            // A size left out shows its best search's (edge) lr, hollow.
            h.sizes
                .iter()
                .map(|s| {
                    let edge = s
                        .batches
                        .iter()
                        .filter(|r| r.lr_opt.is_finite())
                        .min_by(|a, b| a.loss_opt.total_cmp(&b.loss_opt))
                        .map_or(f64::NAN, |r| r.lr_opt);
                    (s.n, if s.lr_used { s.lr_opt } else { edge }, s.lr_used)
                })
                .collect(),
        ),
        (
            "optimal batch size B*(N)",
            &h.batch_law,
            h.sizes
                .iter()
                .map(|s| (s.n, s.batch_opt, s.batch_used))
                .collect(),
        ),
    ];
    for ((title, law, pts), area) in sets.iter().zip(panels.iter()) {
        let grid: Vec<f64> = (0..=60)
            .map(|k| (xr.0.ln() + (xr.1 / xr.0).ln() * k as f64 / 60.0).exp())
            .collect();
        let line: Vec<(f64, f64, f64, f64)> = law.as_ref().map_or(vec![], |l| {
            grid.iter()
                .map(|&x| {
                    let (lo, hi) = l.band(x, h.level);
                    (x, l.at(x), lo, hi)
                })
                .collect()
        });
        let yr = pad_log(
            span(pts.iter().map(|p| p.1).chain(line.iter().map(|p| p.1))),
            0.15,
        );
        if !(yr.0.is_finite() && yr.1.is_finite() && yr.1 > yr.0) {
            continue;
        }
        let mut ch = log_chart(
            area,
            &Frame::new(
                title,
                "parameters N (n_params)",
                if title.contains("batch") {
                    "B* (sequences)"
                } else {
                    "lr*"
                },
            ),
            xr,
            (yr.0..yr.1).log_scale(),
        )?;
        let clampy = |v: f64| v.clamp(yr.0, yr.1);
        let col = RGBColor(33, 145, 140);
        if let Some(l) = law {
            let band: Vec<(f64, f64)> = line
                .iter()
                .filter(|p| p.2.is_finite())
                .map(|p| (p.0, clampy(p.2)))
                .chain(
                    line.iter()
                        .rev()
                        .filter(|p| p.3.is_finite())
                        .map(|p| (p.0, clampy(p.3))),
                )
                .collect();
            if band.len() > 2 {
                ch.draw_series([Polygon::new(band, col.mix(0.25).filled())])
                    .map_err(e)?
                    .label(format!(
                        "{:.0}% band ({} replicates)",
                        h.level * 100.0,
                        l.bootstrap_ok
                    ))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 20, y + 6)], col.mix(0.25).filled())
                    });
            }
            let pts: Vec<(f64, f64)> = line
                .iter()
                .map(|p| (p.0, p.1))
                .filter(|p| p.1 >= yr.0 && p.1 <= yr.1)
                .collect();
            ch.draw_series(LineSeries::new(pts, col.stroke_width(3)))
                .map_err(e)?
                .label(format!(
                    "{:.3e}·N^{:.3} [{:.3}, {:.3}]",
                    l.a.value, l.b.value, l.b.lo, l.b.hi
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3))
                });
        }
        let ok: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.2 && p.1.is_finite())
            .map(|p| (p.0, p.1))
            .collect();
        let out: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| !p.2 && p.1.is_finite())
            .map(|p| (p.0, clampy(p.1)))
            .collect();
        ch.draw_series(ok.iter().map(|&p| Circle::new(p, 6, BLACK.filled())))
            .map_err(e)?
            .label("optimum (fitted)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
        if !out.is_empty() {
            ch.draw_series(
                out.iter()
                    .map(|&p| Circle::new(p, 6, BLACK.stroke_width(2))),
            )
            .map_err(e)?
            .label("on edge (left out)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.stroke_width(2)));
        }
        legend(&mut ch, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(e)
}

/// Excess loss over each search's optimum against lr / lr*(N) of the law (the curves collapse onto
/// one when the rule is right), at each size's batch size nearest B*.
fn fig_hp_collapse<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &hparams::HparamsFit,
) -> R {
    let (nlo, nhi) = span(h.sizes.iter().map(|s| s.n));
    let mut sets: Vec<(f64, Vec<(f64, f64)>)> = Vec::new();
    for s in &h.sizes {
        let target = if s.batch_opt.is_finite() {
            s.batch_opt
        } else {
            s.batches
                .iter()
                .filter(|r| r.usable)
                .min_by(|a, b| a.loss_opt.total_cmp(&b.loss_opt))
                .map_or(f64::NAN, |r| r.batch_size)
        };
        let Some(r) = s.batches.iter().filter(|r| r.usable).min_by(|a, b| {
            (a.batch_size / target)
                .ln()
                .abs()
                .total_cmp(&(b.batch_size / target).ln().abs())
        }) else {
            continue;
        };
        let c = &s.curves[r.curve];
        let Some(m) = &c.min else { continue };
        let lr_ref = h.lr_law.as_ref().map_or(m.opt, |l| l.at(s.n));
        sets.push((
            s.n,
            c.lr.iter()
                .zip(&c.loss)
                .map(|(&x, &y)| (x / lr_ref, (y - m.loss_opt).max(0.0)))
                .collect(),
        ));
    }
    let xr = pad_log(
        span(sets.iter().flat_map(|s| s.1.iter().map(|p| p.0))),
        0.05,
    );
    let near: Vec<f64> = sets
        .iter()
        .flat_map(|s| s.1.iter().filter(|p| p.0 > 0.1 && p.0 < 10.0).map(|p| p.1))
        .collect();
    let yhi = near.iter().copied().fold(0.0f64, f64::max).max(1e-3) * 1.1;
    let mut ch = log_chart(
        root,
        &Frame {
            x_fmt: &|v| format!("{v:.2}"),
            y_fmt: &|v| format!("{v:.3}"),
            ..Frame::new(
                if h.lr_law.is_some() {
                    "Excess loss against lr / lr*(N) of the fitted law"
                } else {
                    "Excess loss against lr / lr* (no law fitted)"
                },
                "lr / lr*(N)",
                "loss − optimal loss",
            )
        },
        xr,
        -0.03 * yhi..yhi,
    )?;
    for (n, pts) in &sets {
        let col = viridis(norm_log(*n, nlo, nhi));
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1 <= yhi).collect();
        ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(e)?
            .label(format!("N = {}", sci(n)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
            .map_err(e)?;
    }
    legend(&mut ch, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(e)
}

/// Write the figures of `isoflop fit --approach hparams` into `dir`: `hparams_lr` (loss against lr,
/// one panel per batch size), `hparams_laws` (lr*(N), B*(N)) and `hparams_collapse`.
pub fn write_hparams(dir: &Path, h: &hparams::HparamsFit) -> Result<Vec<PathBuf>, FitError> {
    register_font();
    let mut out = vec![];
    let mut bs: Vec<f64> = h
        .sizes
        .iter()
        .flat_map(|s| s.batches.iter().map(|r| r.batch_size))
        .collect();
    bs.sort_by(f64::total_cmp);
    bs.dedup();
    if bs.is_empty() {
        return Ok(out);
    }
    let cols = bs.len().min(3);
    let rows = bs.len().div_ceil(cols);
    let size = (650 * cols as u32, 520 * rows as u32);
    render!(dir, "hparams_lr", size, out, |root| fig_hp_lr(
        &root, h, &bs, cols
    ));
    if h.sizes.iter().any(|s| s.lr_opt.is_finite()) {
        render!(dir, "hparams_laws", (1600, 700), out, |root| fig_hp_laws(
            &root, h
        ));
        render!(dir, "hparams_collapse", (1200, 800), out, |root| {
            fig_hp_collapse(&root, h)
        });
    }
    Ok(out)
}

/// Task error against loss: the runs, Err(L) = ε − k·exp(−γ·L) with its bootstrap band (pointwise
/// percentiles of the replicates' curves), and the random-chance error.
fn fig_downstream<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &DownstreamReport,
    f: &DownstreamFit,
    pairs: &PairSet,
) -> R {
    let [lmin, lmax] = d.loss_range;
    let pad = 0.08 * (lmax - lmin).max(1e-3);
    let (x0, x1) = (lmin - 2.0 * pad, lmax + pad);
    let xs: Vec<f64> = (0..=200)
        .map(|i| x0 + (x1 - x0) * i as f64 / 200.0)
        .collect();
    let curve: Vec<f64> = xs
        .iter()
        .map(|&x| downstream::error_at(&f.best.theta, x))
        .collect();
    let q = 0.5 - 0.5 * d.level;
    let band: Vec<(f64, f64)> = if f.replicates.is_empty() {
        vec![]
    } else {
        xs.iter()
            .map(|&x| {
                let v: Vec<f64> = f
                    .replicates
                    .iter()
                    .map(|t| downstream::error_at(t, x))
                    .filter(|v| v.is_finite())
                    .collect();
                (percentile(&v, q), percentile(&v, 1.0 - q))
            })
            .collect()
    };
    // y range: the points, the curve and the chance line; the band is clipped to it (a bootstrap
    // replicate fitted to three distinct losses can swing far outside).
    let ys = pairs
        .pairs
        .iter()
        .map(|p| p.error)
        .chain(curve.iter().copied())
        .chain([d.chance])
        .filter(|v| v.is_finite());
    let (ylo, yhi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let yp = 0.08 * (yhi - ylo).max(1e-3);
    let (y0, y1) = ((ylo - yp).max(0.0), (yhi + yp).min(1.0));
    let title = format!(
        "{}{} = {:.3} − {:.3}·exp(−{:.3}·L)",
        if d.sane { "" } else { "NOT SANE: " },
        d.error_col,
        d.params.value("epsilon"),
        d.params.value("k"),
        d.params.value("gamma")
    );
    let mut ch = chart(
        root,
        &Frame {
            caption_size: CAPTION - 4,
            x_fmt: &two_decimals,
            ..Frame::loss(
                &title,
                &format!("loss ({})", d.loss_col),
                &format!("task error ({})", d.error_col),
            )
        },
        x0..x1,
        y0..y1,
    )?;
    if !band.is_empty() {
        let clip = |v: f64| v.clamp(y0, y1);
        let poly: Vec<(f64, f64)> = xs
            .iter()
            .zip(&band)
            .map(|(&x, b)| (x, clip(b.0)))
            .chain(xs.iter().zip(&band).rev().map(|(&x, b)| (x, clip(b.1))))
            .collect();
        ch.draw_series(std::iter::once(Polygon::new(poly, BLUE.mix(0.15))))
            .map_err(e)?
            .label(format!("{:.0}% bootstrap band", 100.0 * d.level))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLUE.mix(0.15).filled())
            });
    }
    ch.draw_series(LineSeries::new(
        xs.iter().zip(&curve).map(|(&x, &y)| (x, y.clamp(y0, y1))),
        BLUE.stroke_width(2),
    ))
    .map_err(e)?
    .label("fitted Err(L)")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    ch.draw_series(LineSeries::new(
        [(x0, d.chance), (x1, d.chance)],
        BLACK.mix(0.6).stroke_width(2),
    ))
    .map_err(e)?
    .label(format!(
        "random chance {:.3} ({})",
        d.chance, d.chance_source
    ))
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.6).stroke_width(2)));
    ch.draw_series(
        pairs
            .pairs
            .iter()
            .map(|p| Circle::new((p.loss, p.error), 5, BLACK.filled())),
    )
    .map_err(e)?
    .label(format!("runs ({})", pairs.pairs.len()))
    .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    legend(&mut ch, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(e)
}
