//! The round as one self-contained HTML page for people: a header with the winner, four inline
//! SVG charts (composite with bootstrap whiskers, build cost against composite, the judge ×
//! implementation heatmap, the hidden-test matrix) and the report's tables below them.
//!
//! No script, no external asset, no web font: the page opens from disk anywhere. Every string
//! that comes from the data (model names, notes, test names, reasons) goes through [`esc`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::text::{
    BUDGET_LABEL, DASH, Headline, aggregation_name, clip, clip_middle, gates_text, isolation_text,
    num1, number, or_dash, short, signed_number, str_or_dash, tier_name, tokens,
    unisolated_warning, usd, wall,
};
use crate::aggregate::{Aggregate, ImplRow, JudgmentRow, Tier, num};
use crate::base::junit::TestOutcome;
use crate::config::rubric::Aggregation;

/// Width of every chart, in CSS pixels (the page is laid out for 1280 px).
const W: f64 = 1120.0;
/// Categorical colours (Tableau 10), one per implementation, shared by the bar and scatter charts.
const PALETTE: [&str; 20] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#2b4c6f", "#a8561a", "#346b2f", "#8f2d36", "#3f7f7a", "#a8892a",
    "#6d4a67", "#c2626d", "#5e4536", "#6f6a67",
];
/// Approximate advance of one character, as a fraction of the font size (sans and mono alike).
const CHAR_W: f64 = 0.6;

/// Escapes text for HTML element content and quoted attribute values (SVG included). Control
/// characters other than tab and newline become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(c),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

fn text_w(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * CHAR_W
}

/// A round step for about `target` intervals over `[0, max]`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(max: f64, target: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / target;
    let mag = 10f64.powf(raw.log10().floor());
    let m = match raw / mag {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 2.5 => 2.5,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    m * mag
}

/// Ticks from 0 to `max` by `step`, `max` itself included.
fn ticks(max: f64, step: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut k = 0.0;
    while k * step <= max + step * 1e-6 {
        v.push(k * step);
        k += 1.0;
    }
    if v.last().is_some_and(|l| (max - l) > step * 0.3) {
        v.push(max);
    }
    v
}

/// A tick value with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let mut d = 0;
    while d < 6 {
        let s = step * 10f64.powi(d);
        if (s - s.round()).abs() < 1e-6 {
            break;
        }
        d += 1;
    }
    format!("{v:.prec$}", prec = d as usize)
}

/// Red (0) through yellow to green (1).
fn heat(t: f64) -> (u8, u8, u8) {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [215.0, 48.0, 39.0]),
        (0.5, [254.0, 224.0, 139.0]),
        (1.0, [26.0, 152.0, 80.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let (a, b) = if t <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let f = (t - a.0) / (b.0 - a.0);
    let ch = |i: usize| (a.1[i] + (b.1[i] - a.1[i]) * f).round() as u8;
    (ch(0), ch(1), ch(2))
}

fn color_of(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The composite scale's maximum: the rubric's, else the largest number shown.
fn scale_max(a: &Aggregate) -> f64 {
    if a.composite_max > 0.0 {
        return a.composite_max;
    }
    a.implementations
        .iter()
        .flat_map(|r| {
            r.composite_ci
                .map_or([r.composite, None], |[_, h]| [r.composite, Some(h)])
        })
        .flatten()
        .fold(1.0, f64::max)
}

/// Column labels above a grid: horizontal when they fit the column, else at 45°.
/// Returns the SVG and the height it takes.
fn column_heads(names: &[String], x0: f64, col_w: f64, top: f64) -> (String, f64) {
    const SIZE: f64 = 12.0;
    let labels: Vec<String> = names.iter().map(|n| clip(n, 24)).collect();
    let widest = labels.iter().map(|l| text_w(l, SIZE)).fold(0.0, f64::max);
    let mut o = String::new();
    if widest <= col_w - 6.0 {
        let h = 24.0;
        for (i, (l, full)) in labels.iter().zip(names).enumerate() {
            let cx = x0 + col_w * (i as f64 + 0.5);
            let _ = write!(
                o,
                r#"<text class="head" x="{cx:.1}" y="{:.1}" text-anchor="middle"><title>{}</title>{}</text>"#,
                top + 16.0,
                esc(full),
                esc(l)
            );
        }
        (o, h)
    } else {
        let h = widest * std::f64::consts::FRAC_1_SQRT_2 + 16.0;
        let y = top + h - 6.0;
        for (i, (l, full)) in labels.iter().zip(names).enumerate() {
            let cx = x0 + col_w * (i as f64 + 0.5) - 3.0;
            let _ = write!(
                o,
                r#"<text class="head" x="{cx:.1}" y="{y:.1}" transform="rotate(-45 {cx:.1} {y:.1})"><title>{}</title>{}</text>"#,
                esc(full),
                esc(l)
            );
        }
        (o, h)
    }
}

fn svg_open(o: &mut String, h: f64, label: &str) {
    let _ = write!(
        o,
        r#"<svg class="chart" width="{W:.0}" height="{h:.0}" viewBox="0 0 {W:.0} {h:.0}" role="img" aria-label="{}">"#,
        esc(label)
    );
}

fn composite_rule(a: &Aggregate) -> String {
    let terms: Vec<String> = a
        .criteria
        .iter()
        .map(|c| {
            if c.weight == 1.0 {
                esc(&c.id)
            } else {
                format!("{} \u{d7} {}", num(c.weight), esc(&c.id))
            }
        })
        .collect();
    let terms = if terms.is_empty() {
        "no criteria".to_string()
    } else {
        terms.join(" + ")
    };
    match a.aggregation {
        Aggregation::Median => format!(
            "composite = rubric-weighted sum of the per-criterion medians over peer judgments ({terms}); self-judgments and dropouts excluded"
        ),
        Aggregation::Mean => format!(
            "composite = mean of the peer judges\u{2019} composite scores ({terms}); self-judgments and dropouts excluded"
        ),
    }
}

fn bootstrap_rule(a: &Aggregate) -> String {
    format!(
        "{}% bootstrap interval: judges resampled with replacement, {} draws, seed {}",
        num(a.bootstrap.level * 100.0),
        a.bootstrap.draws,
        a.bootstrap.seed
    )
}

/// Chart 1: composite per implementation, best first, whiskers for the bootstrap interval.
fn chart_composite(a: &Aggregate) -> String {
    let max = scale_max(a);
    let rows = &a.implementations;
    let label_w = rows
        .iter()
        .map(|r| {
            (text_w(&clip(&r.implementation, 34), 13.0) * 1.1)
                .max(text_w(&clip(&r.model_slug, 40), 10.5))
        })
        .fold(0.0, f64::max);
    let x0 = (label_w + 60.0).clamp(150.0, 340.0);
    let x1 = W - 130.0;
    let sx = |v: f64| x0 + (v.clamp(0.0, max) / max) * (x1 - x0);
    let row_h = 36.0;
    let top = 12.0;
    let bottom = top + row_h * rows.len().max(1) as f64;
    let h = bottom + 48.0;
    let step = nice_step(max, 6.0);
    let mut o = String::new();
    svg_open(&mut o, h, "Composite score per implementation");
    for t in ticks(max, step) {
        let x = sx(t);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            tick_label(t, step)
        );
    }
    let _ = write!(
        o,
        r#"<line class="axis" x1="{x0}" y1="{bottom:.1}" x2="{x1}" y2="{bottom:.1}"/><line class="axis" x1="{x0}" y1="{top:.1}" x2="{x0}" y2="{bottom:.1}"/><text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">composite (0–{})</text>"#,
        f64::midpoint(x0, x1),
        bottom + 38.0,
        num(max)
    );
    if rows.is_empty() {
        let _ = write!(
            o,
            r#"<text class="missing" x="{:.1}" y="{:.1}">no implementations</text>"#,
            x0 + 10.0,
            top + row_h / 2.0 + 4.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let yc = top + row_h * (i as f64 + 0.5);
        let rank = or_dash(r.rank);
        let _ = write!(
            o,
            r#"<text class="rank" x="8" y="{:.1}">{rank}</text><text class="name" x="{:.1}" y="{:.1}" text-anchor="end"><title>{}</title>{}</text><text class="slug" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            yc + 5.0,
            x0 - 10.0,
            yc - 2.0,
            esc(&r.implementation),
            esc(&clip(&r.implementation, 34)),
            x0 - 10.0,
            yc + 12.0,
            esc(&clip(&r.model_slug, 40)),
        );
        if let Some(c) = r.composite {
            let _ = write!(
                o,
                r#"<rect x="{x0}" y="{:.1}" width="{:.1}" height="18" fill="{}"><title>{}: composite {}</title></rect>"#,
                yc - 9.0,
                (sx(c) - x0).max(1.0),
                color_of(i),
                esc(&r.implementation),
                num(c)
            );
            let mut right = sx(c);
            let mut label = num(c);
            if let Some([lo, hi]) = r.composite_ci {
                let (l, hx) = (sx(lo), sx(hi));
                right = right.max(hx);
                let _ = write!(
                    o,
                    r#"<g class="whisker"><line x1="{l:.1}" y1="{yc:.1}" x2="{hx:.1}" y2="{yc:.1}"/><line x1="{l:.1}" y1="{:.1}" x2="{l:.1}" y2="{:.1}"/><line x1="{hx:.1}" y1="{:.1}" x2="{hx:.1}" y2="{:.1}"/></g>"#,
                    yc - 7.0,
                    yc + 7.0,
                    yc - 7.0,
                    yc + 7.0
                );
                let _ = write!(label, "  [{}\u{2013}{}]", num1(lo), num1(hi));
            }
            let _ = write!(
                o,
                r#"<text class="value" x="{:.1}" y="{:.1}">{label}</text>"#,
                right + 8.0,
                yc + 4.0
            );
        } else {
            let why = if r.build_ok {
                "no score: no usable peer judgment".to_string()
            } else {
                format!(
                    "build failed: {}",
                    short(r.build_reason.as_deref().unwrap_or("unknown"), 90)
                )
            };
            let _ = write!(
                o,
                r#"<rect class="nobar" x="{x0}" y="{:.1}" width="{:.1}" height="18"/><text class="missing" x="{:.1}" y="{:.1}">{}</text>"#,
                yc - 9.0,
                x1 - x0,
                x0 + 8.0,
                yc + 4.0,
                esc(&why)
            );
        }
    }
    o.push_str("</svg>");
    o
}

struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn hits(&self, b: &Rect) -> bool {
        self.x0 < b.x1 && b.x0 < self.x1 && self.y0 < b.y1 && b.y0 < self.y1
    }
}

/// Chart 2: build cost against composite.
fn chart_cost(a: &Aggregate) -> String {
    let max = scale_max(a);
    let rows = &a.implementations;
    let unscored: Vec<(usize, &ImplRow)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.composite.is_none())
        .collect();
    let (x0, x1) = (90.0, W - 40.0);
    let (y0, y1) = (16.0, 286.0);
    let strip = if unscored.is_empty() {
        None
    } else {
        Some((y1 + 14.0, y1 + 40.0))
    };
    let axis_y = strip.map_or(y1, |(_, b)| b + 8.0);
    let h = axis_y + 48.0;
    let max_cost = rows.iter().map(|r| r.cost_usd).fold(0.0, f64::max);
    let cost_step = nice_step(if max_cost > 0.0 { max_cost } else { 1.0 }, 6.0);
    let cost_max = if max_cost > 0.0 {
        ((max_cost * 1.04) / cost_step).ceil() * cost_step
    } else {
        cost_step * 6.0
    };
    let sx = |v: f64| x0 + (v.clamp(0.0, cost_max) / cost_max) * (x1 - x0);
    let sy = |v: f64| y1 - (v.clamp(0.0, max) / max) * (y1 - y0);
    let mut o = String::new();
    svg_open(&mut o, h, "Build cost against composite");
    let step = nice_step(max, 6.0);
    for t in ticks(max, step) {
        let y = sy(t);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 8.0,
            y + 4.0,
            tick_label(t, step)
        );
    }
    for t in ticks(cost_max, cost_step) {
        let x = sx(t);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{axis_y:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">${}</text>"#,
            axis_y + 16.0,
            tick_label(t, cost_step)
        );
    }
    let _ = write!(
        o,
        r#"<line class="axis" x1="{x0}" y1="{axis_y:.1}" x2="{x1}" y2="{axis_y:.1}"/><line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{axis_y:.1}"/><text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">build cost, USD (representative sample)</text><text class="axis-title" x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">composite (0–{})</text>"#,
        f64::midpoint(x0, x1),
        axis_y + 38.0,
        f64::midpoint(y0, y1),
        f64::midpoint(y0, y1),
        num(max)
    );
    if let Some((sa, sb)) = strip {
        let _ = write!(
            o,
            r#"<rect class="strip" x="{x0}" y="{sa:.1}" width="{:.1}" height="{:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">no score</text>"#,
            x1 - x0,
            sb - sa,
            x0 - 8.0,
            f64::midpoint(sa, sb) + 4.0
        );
    }
    // Points first, then labels placed around them without overlapping.
    let mut pts: Vec<(usize, &ImplRow, f64, f64)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let x = sx(r.cost_usd);
        match (r.composite, strip) {
            (Some(c), _) => {
                let y = sy(c);
                if let Some([lo, hi]) = r.composite_ci {
                    let _ = write!(
                        o,
                        r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{}" stroke-width="2" opacity="0.55"/>"#,
                        sy(lo),
                        sy(hi),
                        color_of(i)
                    );
                }
                let _ = write!(
                    o,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="{}" stroke="#fff" stroke-width="1.5"><title>{}: {} at {}</title></circle>"##,
                    color_of(i),
                    esc(&r.implementation),
                    num(c),
                    usd(r.cost_usd)
                );
                pts.push((i, r, x, y));
            }
            (None, Some((sa, sb))) => {
                let y = f64::midpoint(sa, sb);
                let _ = write!(
                    o,
                    r##"<path d="M{:.1} {:.1} l10 10 m0 -10 l-10 10" stroke="#777" stroke-width="2.5"><title>{}: no score, {}</title></path>"##,
                    x - 5.0,
                    y - 5.0,
                    esc(&r.implementation),
                    usd(r.cost_usd)
                );
                pts.push((i, r, x, y));
            }
            (None, None) => {}
        }
    }
    point_labels(&mut o, &pts, x0, axis_y);
    o.push_str("</svg>");
    o
}

/// The scatter's labels, each placed beside its point where it overlaps no point and no label
/// placed before it.
fn point_labels(o: &mut String, pts: &[(usize, &ImplRow, f64, f64)], x0: f64, axis_y: f64) {
    let mut taken: Vec<Rect> = pts
        .iter()
        .map(|(_, _, x, y)| Rect {
            x0: x - 8.0,
            y0: y - 8.0,
            x1: x + 8.0,
            y1: y + 8.0,
        })
        .collect();
    for (_, r, x, y) in pts {
        let label = clip(&r.implementation, 30);
        let w = text_w(&label, 12.0);
        let mut candidates = Vec::new();
        for dy in [0.0, -14.0, 14.0, -28.0, 28.0, -42.0, 42.0] {
            candidates.push((x + 11.0, y + 4.0 + dy, false));
            candidates.push((x - 11.0, y + 4.0 + dy, true));
        }
        let fits = |(lx, ly, end): (f64, f64, bool)| {
            let bx = if end { lx - w } else { lx };
            let b = Rect {
                x0: bx,
                y0: ly - 11.0,
                x1: bx + w,
                y1: ly + 3.0,
            };
            let inside = b.x0 >= x0 + 2.0 && b.x1 <= W - 4.0 && b.y0 >= 0.0 && b.y1 <= axis_y;
            (inside && !taken.iter().any(|t| t.hits(&b))).then_some(b)
        };
        let (pick, rect) = candidates
            .iter()
            .find_map(|c| fits(*c).map(|b| (*c, b)))
            .unwrap_or_else(|| {
                let c = candidates[0];
                (
                    c,
                    Rect {
                        x0: c.0,
                        y0: c.1 - 11.0,
                        x1: c.0 + w,
                        y1: c.1 + 3.0,
                    },
                )
            });
        taken.push(rect);
        let _ = write!(
            o,
            r#"<text class="plabel" x="{:.1}" y="{:.1}"{}>{}</text>"#,
            pick.0,
            pick.1,
            if pick.2 { r#" text-anchor="end""# } else { "" },
            esc(&label)
        );
    }
}

/// Chart 3: every judgment's composite, judges × implementations.
fn chart_heatmap(a: &Aggregate) -> String {
    let max = scale_max(a);
    let rows = &a.implementations;
    let mut judges: BTreeSet<&str> = a.judging_cost.iter().map(|j| j.judge.as_str()).collect();
    for r in rows {
        judges.extend(r.judgments.iter().map(|j| j.judge.as_str()));
    }
    let judges: Vec<&str> = judges.into_iter().collect();
    let x0 = 220.0;
    let right_w = 110.0;
    let n = rows.len().max(1) as f64;
    let col_w = ((W - x0 - right_w - 10.0) / n).clamp(30.0, 140.0);
    let row_h = 32.0;
    let names: Vec<String> = rows.iter().map(|r| r.implementation.clone()).collect();
    let (heads, head_h) = column_heads(&names, x0, col_w, 4.0);
    let top = 4.0 + head_h + 4.0;
    let grid_bottom = top + row_h * judges.len() as f64;
    let peer_y = grid_bottom + 10.0;
    let legend_y = peer_y + row_h + 22.0;
    let h = legend_y + 44.0;
    let xr = x0 + col_w * n + 16.0;
    let mut o = String::new();
    svg_open(&mut o, h, "Judge by implementation heatmap");
    o.push_str(r##"<defs><pattern id="pipe-hatch" patternUnits="userSpaceOnUse" width="8" height="8" patternTransform="rotate(45)"><rect width="8" height="8" fill="#e4e4e4"/><line x1="0" y1="0" x2="0" y2="8" stroke="#a8a8a8" stroke-width="3"/></pattern><linearGradient id="pipe-heat"><stop offset="0" stop-color="#d73027"/><stop offset="0.5" stop-color="#fee08b"/><stop offset="1" stop-color="#1a9850"/></linearGradient></defs>"##);
    o.push_str(&heads);
    let _ = write!(
        o,
        r#"<text class="head" x="{:.1}" y="{:.1}">leniency</text><text class="head" x="{:.1}" y="{:.1}" text-anchor="end">judge ↓ / implementation →</text>"#,
        xr,
        top - 8.0,
        x0 - 10.0,
        top - 8.0
    );
    let grid = HeatGrid {
        a,
        max,
        col_w,
        row_h,
    };
    for (ji, judge) in judges.iter().enumerate() {
        let y = top + row_h * ji as f64;
        let _ = write!(
            o,
            r#"<text class="name" x="{:.1}" y="{:.1}" text-anchor="end"><title>{}</title>{}</text>"#,
            x0 - 10.0,
            y + row_h / 2.0 + 3.0,
            esc(judge),
            esc(&clip(judge, 26))
        );
        for (ci, r) in rows.iter().enumerate() {
            let j = r.judgments.iter().find(|j| j.judge == *judge);
            grid.cell(&mut o, x0 + col_w * ci as f64, y, j, r, judge);
        }
        let len = a.leniency.iter().find(|l| l.judge == *judge);
        let _ = write!(
            o,
            r#"<text class="tick" x="{xr:.1}" y="{:.1}">{}</text>"#,
            y + row_h / 2.0 + 3.0,
            len.map_or_else(
                || DASH.to_string(),
                |l| format!("{} ({} judged)", signed_number(l.offset), l.judged)
            )
        );
    }
    // The peer composite under the grid, on the same colour scale.
    let _ = write!(
        o,
        r#"<line class="axis" x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><text class="name" x="{:.1}" y="{:.1}" text-anchor="end">peer composite</text>"#,
        peer_y - 5.0,
        x0 + col_w * n - 3.0,
        peer_y - 5.0,
        x0 - 10.0,
        peer_y + row_h / 2.0 + 3.0
    );
    for (ci, r) in rows.iter().enumerate() {
        let x = x0 + col_w * ci as f64;
        let (w, hh) = (col_w - 3.0, row_h - 3.0);
        let (cx, cy) = (x + w / 2.0, peer_y + hh / 2.0 + 4.5);
        if let Some(c) = r.composite {
            let (fill, ink) = heat(c / max).into_fill();
            let _ = write!(
                o,
                r##"<rect x="{x:.1}" y="{peer_y:.1}" width="{w:.1}" height="{hh:.1}" fill="{fill}" stroke="#333"/><text class="cellval strong" x="{cx:.1}" y="{cy:.1}" text-anchor="middle" fill="{ink}">{}</text>"##,
                num(c)
            );
        } else {
            let _ = write!(
                o,
                r#"<rect class="nojudge" x="{x:.1}" y="{peer_y:.1}" width="{w:.1}" height="{hh:.1}"/><text class="cellnote" x="{cx:.1}" y="{cy:.1}" text-anchor="middle">no score</text>"#
            );
        }
    }
    heat_legend(&mut o, x0, legend_y, max);
    o.push_str("</svg>");
    o
}

/// The heatmap's grid: cell sizes and the colour scale.
struct HeatGrid<'a> {
    a: &'a Aggregate,
    max: f64,
    col_w: f64,
    row_h: f64,
}

impl HeatGrid<'_> {
    /// One judge's judgment of one implementation: its composite coloured, a dropout hatched,
    /// a self-judgment outlined; `n/a` where the judge did not judge it.
    fn cell(
        &self,
        o: &mut String,
        x: f64,
        y: f64,
        j: Option<&JudgmentRow>,
        r: &ImplRow,
        judge: &str,
    ) {
        let (a, max, col_w, row_h) = (self.a, self.max, self.col_w, self.row_h);
        let (w, hh) = (col_w - 3.0, row_h - 3.0);
        let (cx, cy) = (x + w / 2.0, y + hh / 2.0 + 4.5);
        let who = format!("{} \u{2192} {}", esc(judge), esc(&r.implementation));
        match j {
            None => {
                let why = if r.build_ok {
                    "not judged"
                } else {
                    "build failed, not judged"
                };
                let _ = write!(
                    o,
                    r#"<rect class="nojudge" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{hh:.1}"><title>{who}: {why}</title></rect><text class="cellnote" x="{cx:.1}" y="{cy:.1}" text-anchor="middle">n/a</text>"#
                );
            }
            Some(j) if j.dropout.is_some() || j.composite.is_none() => {
                let why = j.dropout.as_deref().map_or_else(
                    || "incomplete scores".to_string(),
                    |d| {
                        format!(
                            "dropout{}: {}",
                            infrastructure_mark(j.infrastructure, d),
                            short(d, 200)
                        )
                    },
                );
                let _ = write!(
                    o,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{hh:.1}" fill="url(#pipe-hatch)" stroke="#999"><title>{who}: {}</title></rect><text class="cellval" x="{cx:.1}" y="{cy:.1}" text-anchor="middle" fill="#444">{DASH}</text>"##,
                    esc(&why)
                );
            }
            Some(j) => {
                let c = j.composite.unwrap_or_default();
                let (fill, ink) = heat(c / max).into_fill();
                let scores: Vec<String> = a
                    .criteria
                    .iter()
                    .map(|k| {
                        format!(
                            "{} {}",
                            esc(&k.id),
                            number(j.scores.get(&k.id).copied().flatten())
                        )
                    })
                    .collect();
                let _ = write!(
                    o,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{hh:.1}" fill="{fill}"><title>{who} ({}): {} ({}){}</title></rect><text class="cellval" x="{cx:.1}" y="{cy:.1}" text-anchor="middle" fill="{ink}">{}</text>"#,
                    tier_name(j.tier),
                    num(c),
                    scores.join(", "),
                    j.verdict
                        .as_deref()
                        .map(|v| format!(", {}", esc(v)))
                        .unwrap_or_default(),
                    num(c)
                );
                if j.tier == Tier::SelfJudge {
                    let _ = write!(
                        o,
                        r#"<rect class="selfmark" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                        x + 1.5,
                        y + 1.5,
                        w - 3.0,
                        hh - 3.0
                    );
                    // The tag only where it cannot touch the value.
                    if col_w >= 90.0 {
                        let _ = write!(
                            o,
                            r#"<text class="selftag" x="{:.1}" y="{:.1}" fill="{ink}">self</text>"#,
                            x + 7.0,
                            y + 13.0
                        );
                    }
                }
            }
        }
    }
}

/// The heatmap's legend: the colour scale, dropouts, self-judgments, cells not judged.
fn heat_legend(o: &mut String, x0: f64, legend_y: f64, max: f64) {
    let lx = x0;
    let _ = write!(
        o,
        r##"<rect x="{lx:.1}" y="{legend_y:.1}" width="200" height="12" fill="url(#pipe-heat)" stroke="#999"/><text class="tick" x="{lx:.1}" y="{:.1}">0</text><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">composite</text>"##,
        legend_y + 26.0,
        lx + 200.0,
        legend_y + 26.0,
        num(max),
        lx + 100.0,
        legend_y + 26.0
    );
    let l2 = lx + 240.0;
    let _ = write!(
        o,
        r##"<rect x="{l2:.1}" y="{:.1}" width="26" height="18" fill="url(#pipe-hatch)" stroke="#999"/><text class="tick" x="{:.1}" y="{:.1}">dropout: no usable judgment</text>"##,
        legend_y - 3.0,
        l2 + 32.0,
        legend_y + 10.0
    );
    let l3 = l2 + 250.0;
    let _ = write!(
        o,
        r##"<rect x="{l3:.1}" y="{:.1}" width="26" height="18" fill="#fee08b"/><rect class="selfmark" x="{:.1}" y="{:.1}" width="23" height="15"/><text class="tick" x="{:.1}" y="{:.1}">self-judgment (not in the composite)</text>"##,
        legend_y - 3.0,
        l3 + 1.5,
        legend_y - 1.5,
        l3 + 32.0,
        legend_y + 10.0
    );
    let l4 = l3 + 270.0;
    let _ = write!(
        o,
        r#"<rect class="nojudge" x="{l4:.1}" y="{:.1}" width="26" height="18"/><text class="tick" x="{:.1}" y="{:.1}">n/a: not judged</text>"#,
        legend_y - 3.0,
        l4 + 32.0,
        legend_y + 10.0
    );
}

trait IntoFill {
    fn into_fill(self) -> (String, &'static str);
}

impl IntoFill for (u8, u8, u8) {
    fn into_fill(self) -> (String, &'static str) {
        let (r, g, b) = self;
        let lum = (0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b)) / 255.0;
        (
            format!("#{r:02x}{g:02x}{b:02x}"),
            if lum < 0.5 { "#fff" } else { "#111" },
        )
    }
}

/// Display names for tests: the prefix every name shares (up to a separator) dropped, the
/// middle of long names cut. Returns the names and the dropped prefix.
fn abbreviate(names: &[String]) -> (Vec<String>, String) {
    let mut prefix = String::new();
    if names.len() >= 2 {
        let first: Vec<char> = names[0].chars().collect();
        let mut n = first.len();
        for s in &names[1..] {
            n = n.min(
                first
                    .iter()
                    .zip(s.chars())
                    .take_while(|(a, b)| **a == *b)
                    .count(),
            );
        }
        // Back to the last separator, and never the whole of a name.
        let cut = first[..n]
            .iter()
            .rposition(|c| matches!(c, '_' | ':' | '.' | '/' | ' ' | '-'))
            .map_or(0, |p| p + 1);
        if names.iter().all(|s| s.chars().count() > cut) {
            prefix = first[..cut].iter().collect();
        }
    }
    let shown = names
        .iter()
        .map(|s| {
            clip_middle(
                &s.chars().skip(prefix.chars().count()).collect::<String>(),
                52,
            )
        })
        .collect();
    (shown, prefix)
}

/// Chart 4: hidden tests × implementations.
fn chart_tests(a: &Aggregate) -> String {
    let rows = &a.implementations;
    let mut tests: Vec<String> = Vec::new();
    for r in rows {
        for t in &r.hidden_tests {
            if !tests.contains(&t.name) {
                tests.push(t.name.clone());
            }
        }
    }
    let mut o = String::new();
    if tests.is_empty() {
        svg_open(&mut o, 40.0, "Hidden test matrix");
        o.push_str(r#"<text class="missing" x="10" y="24">no hidden test ran for any implementation</text></svg>"#);
        return o;
    }
    let (shown, _) = abbreviate(&tests);
    const MONO: f64 = 11.5;
    let label_w = shown.iter().map(|s| text_w(s, MONO)).fold(0.0, f64::max) + 16.0;
    let x0 = label_w.max(120.0);
    let right_w = 90.0;
    let n = rows.len().max(1) as f64;
    let col_w = ((W - x0 - right_w - 10.0) / n).clamp(24.0, 120.0);
    let row_h = 19.0;
    let names: Vec<String> = rows.iter().map(|r| r.implementation.clone()).collect();
    let (heads, head_h) = column_heads(&names, x0, col_w, 4.0);
    let top = 4.0 + head_h + 4.0;
    let grid_bottom = top + row_h * tests.len() as f64;
    let legend_y = grid_bottom + row_h + 30.0;
    let h = legend_y + 22.0;
    let xr = x0 + col_w * n + 12.0;
    svg_open(&mut o, h, "Hidden test matrix");
    o.push_str(r##"<defs><pattern id="pipe-hatch-t" patternUnits="userSpaceOnUse" width="8" height="8" patternTransform="rotate(45)"><rect width="8" height="8" fill="#ececec"/><line x1="0" y1="0" x2="0" y2="8" stroke="#c4c4c4" stroke-width="3"/></pattern></defs>"##);
    o.push_str(&heads);
    let _ = write!(
        o,
        r#"<text class="head" x="{xr:.1}" y="{:.1}">passed by</text>"#,
        top - 8.0
    );
    for (ti, (name, label)) in tests.iter().zip(&shown).enumerate() {
        let y = top + row_h * ti as f64;
        if ti % 2 == 1 {
            let _ = write!(
                o,
                r#"<rect class="zebra" x="0" y="{y:.1}" width="{:.1}" height="{row_h}"/>"#,
                xr + right_w - 10.0
            );
        }
        let _ = write!(
            o,
            r#"<text class="test" x="{:.1}" y="{:.1}" text-anchor="end"><title>{}</title>{}</text>"#,
            x0 - 8.0,
            y + 13.5,
            esc(name),
            esc(label)
        );
        let (mut passed, mut ran) = (0, 0);
        for (ci, r) in rows.iter().enumerate() {
            if r.hidden_tests.is_empty() {
                continue;
            }
            let x = x0 + col_w * ci as f64;
            if let Some(p) = test_cell(&mut o, r, name, (x, y), (col_w - 3.0, row_h - 3.0)) {
                ran += 1;
                passed += u32::from(p);
            }
        }
        let _ = write!(
            o,
            r#"<text class="tick" x="{xr:.1}" y="{:.1}">{passed}/{ran}</text>"#,
            y + 13.5
        );
    }
    untested_columns(&mut o, rows, x0, col_w, (top, grid_bottom));
    // Totals under each column.
    let _ = write!(
        o,
        r#"<line class="axis" x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><text class="name" x="{:.1}" y="{:.1}" text-anchor="end">passed / collected</text>"#,
        grid_bottom + 2.0,
        x0 + col_w * n - 3.0,
        grid_bottom + 2.0,
        x0 - 8.0,
        grid_bottom + 17.0
    );
    for (ci, r) in rows.iter().enumerate() {
        let cx = x0 + col_w * ci as f64 + (col_w - 3.0) / 2.0;
        let _ = write!(
            o,
            r#"<text class="value" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}/{}</text>"#,
            grid_bottom + 17.0,
            r.tests_passed,
            r.tests_total
        );
    }
    tests_legend(&mut o, x0, legend_y);
    o.push_str("</svg>");
    o
}

/// One implementation's outcome of one test, at `(x, y)`, `size` wide and high: whether it passed,
/// none when its gate did not collect the test.
fn test_cell(
    o: &mut String,
    r: &ImplRow,
    name: &str,
    (x, y): (f64, f64),
    (w, hh): (f64, f64),
) -> Option<bool> {
    let (cx, cy) = (x + w / 2.0, y + hh / 2.0 + 5.5);
    let Some(t) = r.hidden_tests.iter().find(|t| t.name == name) else {
        let _ = write!(
            o,
            r#"<rect class="nojudge" x="{x:.1}" y="{:.1}" width="{w:.1}" height="{hh:.1}"><title>{}: not collected</title></rect>"#,
            y + 1.5,
            esc(&r.implementation)
        );
        return None;
    };
    let (class, mark, word) = match t.outcome {
        _ if t.passed => ("pass", "\u{2713}", "passed"),
        TestOutcome::Error => ("error", "!", "error"),
        TestOutcome::Skipped => ("skip", "s", "skipped"),
        TestOutcome::Passed | TestOutcome::Failed => ("fail", "\u{2717}", "failed"),
    };
    let _ = write!(
        o,
        r#"<rect class="{class}" x="{x:.1}" y="{:.1}" width="{w:.1}" height="{hh:.1}"><title>{} — {}: {word}{}</title></rect><text class="mark" x="{cx:.1}" y="{cy:.1}" text-anchor="middle">{mark}</text>"#,
        y + 1.5,
        esc(&r.implementation),
        esc(name),
        if t.flaky { " (flaky)" } else { "" }
    );
    if t.flaky {
        let _ = write!(
            o,
            r#"<rect class="flaky" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
            x + 1.5,
            y + 3.0,
            w - 3.0,
            hh - 3.0
        );
    }
    Some(t.passed)
}

/// The columns of implementations without tests: one tall hatched cell each, saying why.
fn untested_columns(o: &mut String, rows: &[ImplRow], x0: f64, col_w: f64, span: (f64, f64)) {
    let (top, grid_bottom) = span;
    for (ci, r) in rows.iter().enumerate() {
        if !r.hidden_tests.is_empty() {
            continue;
        }
        let x = x0 + col_w * ci as f64;
        let (cx, cy) = (x + (col_w - 3.0) / 2.0, f64::midpoint(top, grid_bottom));
        let why = if r.build_ok {
            "no tests ran"
        } else {
            "build failed \u{2014} no tests ran"
        };
        let _ = write!(
            o,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="url(#pipe-hatch-t)"><title>{}: {}</title></rect><text class="cellnote" x="{cx:.1}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {cx:.1} {cy:.1})">{why}</text>"#,
            top + 1.5,
            col_w - 3.0,
            grid_bottom - top - 3.0,
            esc(&r.implementation),
            esc(r.gate_reason.as_deref().unwrap_or(why))
        );
    }
}

/// The test matrix's legend: the outcomes and the flaky mark.
fn tests_legend(o: &mut String, x0: f64, legend_y: f64) {
    let items = [
        ("pass", "\u{2713}", "passed"),
        ("fail", "\u{2717}", "failed"),
        ("error", "!", "error"),
        ("skip", "s", "skipped"),
        ("nojudge", "", "not collected"),
    ];
    let mut lx = x0;
    for (class, mark, word) in items {
        let _ = write!(
            o,
            r#"<rect class="{class}" x="{lx:.1}" y="{:.1}" width="22" height="16"/><text class="mark" x="{:.1}" y="{:.1}" text-anchor="middle">{mark}</text><text class="tick" x="{:.1}" y="{:.1}">{word}</text>"#,
            legend_y - 12.0,
            lx + 11.0,
            legend_y + 1.0,
            lx + 28.0,
            legend_y
        );
        lx += 40.0 + text_w(word, 12.0);
    }
    let _ = write!(
        o,
        r#"<rect x="{lx:.1}" y="{:.1}" width="22" height="16" class="pass"/><rect class="flaky" x="{:.1}" y="{:.1}" width="19" height="13"/><text class="tick" x="{:.1}" y="{:.1}">flaky</text>"#,
        legend_y - 12.0,
        lx + 1.5,
        legend_y - 10.5,
        lx + 28.0,
        legend_y
    );
}

const CSS: &str = r"
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1d232b;font:14px/1.45 'Liberation Sans','DejaVu Sans',Arial,Helvetica,sans-serif}
main{max-width:1260px;margin:0 auto;padding:24px 20px 48px}
header{margin-bottom:18px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 10px}
h3{font-size:15px;margin:14px 0 6px}
.meta{color:#56606b;margin:0 0 10px}
.meta b{color:#1d232b;font-weight:600}
.notice{background:#fff6d6;border:1px solid #e9cf6f;border-radius:6px;padding:8px 12px;margin:10px 0}
.notice.danger{background:#fde8e6;border-color:#d9423b}
.winner{font-size:16px;background:#fff;border-left:5px solid #59a14f;padding:10px 14px;border-radius:4px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
section.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px 14px;margin:0 0 18px}
figure{margin:0}
figcaption{color:#56606b;font-size:12.5px;margin-top:6px;max-width:1100px}
svg.chart{display:block;max-width:100%;height:auto}
svg text{font-family:'Liberation Sans','DejaVu Sans',Arial,sans-serif;font-size:12px;fill:#1d232b}
svg .tick{fill:#56606b}
svg .axis-title{font-size:12.5px;fill:#3a434d;font-weight:600}
svg .name{font-size:13px;font-weight:600}
svg .slug{font-size:10.5px;fill:#6b7580}
svg .rank{font-size:15px;font-weight:700;fill:#8a939c}
svg .value{font-size:12px;font-weight:600}
svg .missing{font-size:12px;font-style:italic;fill:#7a838c}
svg .plabel{font-size:12px;font-weight:600}
svg .head{font-size:12px;font-weight:600;fill:#3a434d}
svg .cellval{font-size:13px;font-weight:600}
svg .cellval.strong{font-weight:700}
svg .cellnote{font-size:11px;fill:#80888f;font-style:italic}
svg .selftag{font-size:9px;font-weight:700}
svg .test{font-family:'Liberation Mono','DejaVu Sans Mono',monospace;font-size:11.5px}
svg .mark{font-size:12px;font-weight:700;fill:#fff}
.grid{stroke:#e6e8eb;stroke-width:1}
.axis{stroke:#8a939c;stroke-width:1}
.whisker line{stroke:#1d232b;stroke-width:1.6}
.nobar{fill:#f1f2f4;stroke:#d5d8dc;stroke-dasharray:4 3}
.strip{fill:#f4f4f6}
.nojudge{fill:#f3f4f6;stroke:#dfe2e6}
.selfmark{fill:none;stroke:#111;stroke-width:2;stroke-dasharray:5 3}
.zebra{fill:#f7f8fa}
rect.pass{fill:#2e9e52}
rect.fail{fill:#d9423b}
rect.error{fill:#e8833a}
rect.skip{fill:#a9afb6}
rect.flaky{fill:none;stroke:#ffd84d;stroke-width:2}
table{border-collapse:collapse;font-size:13px;margin:4px 0 6px;background:#fff}
th,td{padding:5px 7px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc}
.scroll{overflow-x:auto}
td.nw{white-space:nowrap}
td.slug{color:#56606b;font-size:12px;white-space:nowrap}
.small{color:#56606b;font-size:12.5px}
.low{color:#b3261e;font-weight:600}
.ok{color:#2e7d32;font-weight:600}
.bad{color:#b3261e;font-weight:600}
code{font-family:'Liberation Mono','DejaVu Sans Mono',monospace;font-size:12.5px;background:#f1f3f5;padding:0 3px;border-radius:3px}
details{margin:6px 0}
summary{cursor:pointer;font-weight:600}
td.note{max-width:560px;white-space:pre-wrap}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px}
";

fn figure(o: &mut String, title: &str, svg: &str, caption: &str) {
    let _ = writeln!(
        o,
        "<section class=\"card\"><h2>{title}</h2><figure>{svg}<figcaption>{caption}</figcaption></figure></section>"
    );
}

fn pass_fail(x: Option<bool>) -> &'static str {
    match x {
        None => DASH,
        Some(true) => "<span class=\"ok\">pass</span>",
        Some(false) => "<span class=\"bad\">fail</span>",
    }
}

fn header(o: &mut String, a: &Aggregate) {
    let max = num(a.composite_max);
    let _ = write!(
        o,
        "<header><h1>{} \u{b7} {}</h1><p class=\"meta\">round <b>{}</b> \u{b7} task <b>{}</b> \u{b7} rubric <b>{}</b> ({} aggregation; {}) \u{b7} composite out of <b>{max}</b>{}</p>",
        esc(&a.name),
        esc(&a.date),
        esc(&a.round),
        esc(&a.task),
        esc(&a.rubric),
        aggregation_name(a.aggregation),
        a.criteria
            .iter()
            .map(|c| format!(
                "{} {}\u{2013}{} \u{d7} {}",
                esc(&c.label),
                num(c.min),
                num(c.max),
                num(c.weight)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        a.source
            .as_ref()
            .map(|s| format!(" \u{b7} imported from <b>{}</b>", esc(s)))
            .unwrap_or_default()
    );
    if a.replayed {
        o.push_str("<p class=\"notice\"><b>Replayed round.</b> Every model answer comes from recordings, not from live calls: the numbers show the pipeline, not today\u{2019}s models.</p>");
    }
    if let Some(w) = unisolated_warning(a) {
        let _ = write!(
            o,
            "<p class=\"notice danger\"><b>Warning: unisolated gates.</b> {}</p>",
            esc(&w)
        );
    }
    winner(o, a);
    o.push_str("</header>\n");
}

/// The headline: who takes the round, with what, and what the round cost.
fn winner(o: &mut String, a: &Aggregate) {
    let max = num(a.composite_max);
    let h = Headline::of(a);
    let n = h.implementations;
    let tail = format!(
        " {n} implementation{}, {} spent on builds; {} of {n} pass every hidden test.",
        if n == 1 { "" } else { "s" },
        usd(h.build_cost),
        h.passing
    );
    match h.top {
        Some(top) => {
            let parts: Vec<String> = a
                .criteria
                .iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        esc(&c.id),
                        number(top.peer.get(&c.id).copied().flatten())
                    )
                })
                .collect();
            let tie = if top.inseparable_from.is_empty() {
                String::new()
            } else {
                format!(
                    " Its interval overlaps {}: the data cannot separate them.",
                    top.inseparable_from
                        .iter()
                        .map(|s| format!("<b>{}</b>", esc(s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = write!(
                o,
                "<p class=\"winner\">Winner: <b>{}</b> (<code>{}</code>) takes the round with <b>{}/{max}</b> ({}).{tie}{tail}</p>",
                esc(&top.implementation),
                esc(&top.model_slug),
                number(top.composite),
                parts.join(", ")
            );
        }
        None => {
            let _ = write!(
                o,
                "<p class=\"winner\">No implementation has a composite score.{tail}</p>"
            );
        }
    }
}

fn scoreboard(o: &mut String, a: &Aggregate) {
    let max = num(a.composite_max);
    o.push_str("<section class=\"card\"><h2>Scoreboard</h2><div class=\"scroll\"><table><thead><tr><th class=\"n\">#</th><th>implementation</th><th>model</th>");
    let _ = write!(
        o,
        "<th class=\"n\">composite /{max}</th><th class=\"n\">{}% interval</th>",
        num(a.bootstrap.level * 100.0)
    );
    for c in &a.criteria {
        let _ = write!(
            o,
            "<th class=\"n\" title=\"{}\">{} /{}</th>",
            esc(&c.label),
            esc(&c.id),
            num(c.max)
        );
    }
    o.push_str("<th>build</th><th class=\"n\">tests</th><th>hard-fail</th><th>verdict</th><th class=\"n\">cost</th><th class=\"n\">tokens</th><th class=\"n\">wall</th><th class=\"n\">loc</th><th title=\"implementations whose bootstrap intervals overlap this one\">overlaps</th></tr></thead><tbody>");
    for r in &a.implementations {
        let _ = write!(
            o,
            "<tr><td class=\"n\">{}</td><td><b>{}</b></td><td class=\"slug\">{}</td><td class=\"n\"><b>{}</b></td><td class=\"n\">{}</td>",
            or_dash(r.rank),
            esc(&r.implementation),
            esc(&r.model_slug),
            number(r.composite),
            r.composite_ci.map_or_else(
                || DASH.to_string(),
                |[l, h]| format!("{}\u{2013}{}", num1(l), num1(h))
            )
        );
        for c in &a.criteria {
            let _ = write!(
                o,
                "<td class=\"n\">{}</td>",
                number(r.peer.get(&c.id).copied().flatten())
            );
        }
        let _ = write!(
            o,
            "<td>{}</td><td class=\"n\">{}/{}</td><td>{}</td><td class=\"nw\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            pass_fail(Some(r.build_ok)),
            r.tests_passed,
            r.tests_total,
            pass_fail(r.passed_hard_fail),
            esc(str_or_dash(r.verdict.as_deref())),
            usd(r.total_cost_usd),
            tokens(r.total_tokens),
            wall(r.wall_ms),
            or_dash(r.loc),
            if r.inseparable_from.is_empty() {
                DASH.to_string()
            } else {
                esc(&r.inseparable_from.join(", "))
            }
        );
    }
    let _ = write!(
        o,
        "</tbody></table></div><p class=\"small\">{}. interval = {}. tests = hidden tests passed/collected in the gate. overlaps = implementations whose intervals overlap this one: ranks the data cannot separate. hard-fail = majority of peer judges saying every hard-fail check passes. verdict = most frequent verdict over all judgments, a tie going to the worse. cost and tokens over all samples; wall = the representative sample\u{2019}s build time; loc = non-blank, non-comment lines.</p>",
        composite_rule(a),
        bootstrap_rule(a)
    );
    let failed: Vec<&ImplRow> = a.implementations.iter().filter(|r| !r.build_ok).collect();
    if !failed.is_empty() {
        o.push_str("<h3>Failed builds</h3><ul>");
        for r in failed {
            let _ = write!(
                o,
                "<li><b>{}</b>: {}</li>",
                esc(&r.implementation),
                esc(r.build_reason.as_deref().unwrap_or("unknown"))
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");
}

/// The models the endpoint throttled, and for how long (nothing when none was).
fn throttled(o: &mut String, a: &Aggregate) {
    if a.throttled.is_empty() {
        return;
    }
    o.push_str("<section class=\"card\"><h2>Throttling</h2><table><thead><tr><th>model</th><th class=\"n\">builds</th><th class=\"n\">judging</th></tr></thead><tbody>");
    let secs = |ms: u64| format!("{:.1}\u{a0}s", ms as f64 / 1000.0);
    for t in &a.throttled {
        let _ = write!(
            o,
            "<tr><td><b>{}</b></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&t.model),
            secs(t.build_ms),
            secs(t.judge_ms)
        );
    }
    o.push_str("</tbody></table><p class=\"small\">Time the model\u{2019}s calls spent throttled by the endpoint: waiting after a 429, or queued behind a concurrency limit a 429 lowered. The run log (<code>log.jsonl</code>) has every wait.</p></section>\n");
}

/// Command builds whose CLI had the network: named, with where their usage came from.
fn unmetered(o: &mut String, a: &Aggregate) {
    if a.unmetered.is_empty() {
        return;
    }
    o.push_str("<section class=\"card\"><h2>Unmetered builds</h2><table><thead><tr><th>build</th><th>usage from</th></tr></thead><tbody>");
    for u in &a.unmetered {
        let task = u
            .task
            .as_deref()
            .map(|t| format!("{t}/"))
            .unwrap_or_default();
        let _ = write!(
            o,
            "<tr><td><b>{}</b></td><td>{}</td></tr>",
            esc(&format!("{task}{}#{}", u.model, u.sample)),
            esc(super::text::usage_source(&u.usage_source))
        );
    }
    o.push_str("</tbody></table><p class=\"small\">These builds ran with <code>network = true</code>: the CLI called its endpoint itself, so pipe did not meter, limit or record its calls. Their usage and cost are what the CLI reported, and they cannot be replayed.</p></section>\n");
}

/// The nodes a spending cap kept from calling their model.
fn budget(o: &mut String, a: &Aggregate) {
    let skipped: Vec<_> = a.problems.iter().filter(|p| p.kind == "budget").collect();
    if skipped.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<section class=\"card\"><h2>Skipped (budget)</h2><p>A spending cap (<code>max_cost_usd</code>) kept {} node(s) from calling their model; what they would have fed is missing above. Raise the cap and run the round again to resume them.</p><ul>",
        skipped.len()
    );
    for p in skipped {
        let _ = write!(
            o,
            "<li><code>{}</code>: {}</li>",
            esc(&p.node),
            esc(&short(&p.message, 400))
        );
    }
    o.push_str("</ul></section>\n");
}

/// What a dropout that is not the judge's fault says of itself: ` (budget)` for a spending cap,
/// ` (infrastructure)` for the rest; nothing for the judge's own dropout.
fn infrastructure_mark(infrastructure: bool, dropout: &str) -> &'static str {
    match () {
        () if !infrastructure => "",
        () if dropout.starts_with(BUDGET_LABEL) => " (budget)",
        () => " (infrastructure)",
    }
}

/// Which sandbox ran each gate (nothing for imported rounds, which do not say).
fn sandboxes(o: &mut String, a: &Aggregate) {
    if a.sandboxes.is_empty() {
        return;
    }
    o.push_str("<section class=\"card\"><h2>Sandboxes</h2><table><thead><tr><th>sandbox</th><th>isolation</th><th>gates</th></tr></thead><tbody>");
    for u in &a.sandboxes {
        let isolation = esc(isolation_text(&u.sandbox));
        let _ = write!(
            o,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td></tr>",
            esc(&u.sandbox),
            if u.isolated {
                isolation
            } else {
                format!("<span class=\"bad\">\u{26a0} {isolation}</span>")
            },
            esc(&gates_text(a, &u.gates))
        );
    }
    o.push_str("</tbody></table><p class=\"small\">Where each gate ran the hidden tests, as its own gate.json records it; a gate cached from an earlier run keeps the sandbox it ran in.</p></section>\n");
}

fn agreement(o: &mut String, a: &Aggregate) {
    o.push_str("<section class=\"card\"><h2>Agreement</h2><div class=\"grid2\"><div><h3>Krippendorff\u{2019}s \u{3b1} per criterion</h3><table><thead><tr><th>criterion</th><th class=\"n\">\u{3b1}</th><th class=\"n\">implementations</th><th class=\"n\">judges</th><th>reading</th></tr></thead><tbody>");
    for r in &a.alpha {
        let reading = match r.alpha {
            None => "not computable".to_string(),
            Some(_) if r.low => {
                "<span class=\"low\">too low to draw conclusions</span>".to_string()
            }
            Some(x) if x >= 0.8 => "<span class=\"ok\">reliable</span>".to_string(),
            Some(_) => "tentative".to_string(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{reading}</td></tr>",
            esc(&r.criterion),
            r.alpha
                .map_or_else(|| DASH.to_string(), |x| format!("{x:.3}")),
            r.implementations,
            r.judges
        );
    }
    o.push_str("</tbody></table><p class=\"small\">interval \u{3b1} over the judge \u{d7} implementation matrix, self-judgments included; 1 = perfect agreement, 0 = chance; below 0.667 the scores disagree too much to rank on.</p>");
    let sp = &a.self_preference;
    let _ = write!(
        o,
        "<h3>Self-preference</h3><p>{} judge{} scored their own implementation: {} above their peers\u{2019} composite, {} below; mean \u{394} {}.</p></div>",
        sp.judges,
        if sp.judges == 1 { "" } else { "s" },
        sp.above,
        sp.below,
        signed_number(sp.mean_delta)
    );
    o.push_str("<div><h3>Leniency</h3><table><thead><tr><th>judge</th><th class=\"n\">offset</th><th class=\"n\">peers judged</th></tr></thead><tbody>");
    for r in &a.leniency {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.judge),
            signed_number(r.offset),
            r.judged
        );
    }
    o.push_str("</tbody></table><p class=\"small\">mean of (this judge\u{2019}s composite \u{2212} the implementation\u{2019}s peer composite) over the peers it judged; + = more generous than the panel.</p></div></div>");
    let first = a.criteria.first().map_or("score", |c| c.id.as_str());
    let _ = write!(
        o,
        "<h3>Spread of {} scores</h3><table><thead><tr><th>implementation</th><th class=\"n\">min</th><th class=\"n\">max</th><th class=\"n\">range</th><th class=\"n\">stdev</th><th>judges</th></tr></thead><tbody>",
        esc(first)
    );
    for r in &a.agreement {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&r.implementation),
            number(r.min),
            number(r.max),
            number(r.range),
            r.stdev
                .map_or_else(|| DASH.to_string(), |s| format!("{s:.2}")),
            esc(&r.judges)
        );
    }
    let _ = write!(
        o,
        "</tbody></table><p class=\"small\">over every judgment with a {} score, self included; stdev is the sample standard deviation (n \u{2212} 1).</p>",
        esc(first)
    );
    if !a.self_bias.is_empty() {
        o.push_str(
            "<h3>Self-bias</h3><div class=\"scroll\"><table><thead><tr><th>implementation</th>",
        );
        for c in &a.criteria {
            let _ = write!(
                o,
                "<th class=\"n\">self {0}</th><th class=\"n\">peer median</th><th class=\"n\">\u{394} {0}</th>",
                esc(&c.id)
            );
        }
        o.push_str("</tr></thead><tbody>");
        for r in &a.self_bias {
            let _ = write!(o, "<tr><td>{}</td>", esc(&r.implementation));
            for c in &a.criteria {
                let [s, p, d] = r
                    .by_criterion
                    .get(&c.id)
                    .copied()
                    .unwrap_or([None, None, None]);
                let _ = write!(
                    o,
                    "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                    number(s),
                    number(p),
                    signed_number(d)
                );
            }
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div><p class=\"small\">\u{394} = the model\u{2019}s score of its own implementation \u{2212} the peer median; + = rates itself above its peers.</p>");
    }
    o.push_str("</section>\n");
}

fn judging(o: &mut String, a: &Aggregate) {
    o.push_str("<section class=\"card\"><h2>Judges</h2><div class=\"scroll\"><table><thead><tr><th>judge</th><th>model</th><th>tier</th><th class=\"n\">judgments</th><th class=\"n\">dropouts</th><th class=\"n\">tokens</th><th class=\"n\">wall</th><th class=\"n\">cost</th><th>top three</th></tr></thead><tbody>");
    for r in &a.judging_cost {
        let top = a
            .judge_ranking
            .iter()
            .find(|k| k.judge == r.judge)
            .map(|k| k.top.join(" \u{b7} "))
            .unwrap_or_default();
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&r.judge),
            esc(&r.model_slug),
            tier_name(r.tier),
            r.judgments,
            r.dropouts,
            if r.measured {
                tokens(r.tokens)
            } else {
                DASH.to_string()
            },
            if r.measured {
                wall(r.wall_ms)
            } else {
                DASH.to_string()
            },
            if r.measured {
                usd(r.cost_usd)
            } else {
                DASH.to_string()
            },
            esc(&top)
        );
    }
    let first = a.criteria.first().map_or("score", |c| c.id.as_str());
    let _ = write!(
        o,
        "</tbody></table></div><p class=\"small\">cost measured per judge over its judgments, repair turns included. top three = the judge\u{2019}s ranking by its own {} score.</p>",
        esc(first)
    );
    o.push_str("<h3>Judgments and notes</h3>");
    for r in &a.implementations {
        if r.judgments.is_empty() {
            continue;
        }
        let _ = write!(
            o,
            "<details><summary>{} <span class=\"small\">({} judgments, blind label {})</span></summary><div class=\"scroll\"><table><thead><tr><th>judge</th><th>tier</th>",
            esc(&r.implementation),
            r.judgments.len(),
            esc(&r.label)
        );
        for c in &a.criteria {
            let _ = write!(o, "<th class=\"n\">{}</th>", esc(&c.id));
        }
        o.push_str("<th class=\"n\">composite</th><th>hard-fail</th><th>verdict</th><th>note</th></tr></thead><tbody>");
        for j in &r.judgments {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td>",
                esc(&j.judge),
                tier_name(j.tier)
            );
            for c in &a.criteria {
                let _ = write!(
                    o,
                    "<td class=\"n\">{}</td>",
                    number(j.scores.get(&c.id).copied().flatten())
                );
            }
            let note = match (&j.note, &j.dropout) {
                (_, Some(d)) => format!(
                    "<i>dropout{}:</i> {}",
                    infrastructure_mark(j.infrastructure, d),
                    esc(d)
                ),
                (Some(n), None) => esc(n),
                (None, None) => DASH.to_string(),
            };
            let _ = write!(
                o,
                "<td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"note\">{note}</td></tr>",
                number(j.composite),
                pass_fail(j.hard_fail_pass),
                esc(str_or_dash(j.verdict.as_deref()))
            );
        }
        o.push_str("</tbody></table></div></details>");
    }
    o.push_str("</section>\n");
}

/// The page.
pub fn render(a: &Aggregate) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><title>{} \u{b7} {}</title><style>{CSS}</style></head><body><main>\n",
        esc(&a.name),
        esc(&a.date)
    );
    header(&mut o, a);
    let max = num(scale_max(a));
    figure(
        &mut o,
        "Composite score",
        &chart_composite(a),
        &format!(
            "Bars: {}, on the rubric\u{2019}s 0\u{2013}{max} scale, best first. Whiskers: the {}; implementations whose whiskers overlap cannot be ranked apart. Grey rows have no composite (failed build or no usable peer judgment).",
            composite_rule(a),
            bootstrap_rule(a)
        ),
    );
    figure(
        &mut o,
        "Cost against score",
        &chart_cost(a),
        "x: build cost of the representative sample in USD (recorded token usage \u{d7} the model\u{2019}s price table, cache reads at their own price; judging not included). y: the composite of the chart above, the vertical line its bootstrap interval. Up and to the left is better; implementations without a composite sit in the \u{201c}no score\u{201d} strip.",
    );
    figure(
        &mut o,
        "Judges \u{d7} implementations",
        &chart_heatmap(a),
        &format!(
            "Each cell: one judgment\u{2019}s composite (the rubric-weighted sum of that judge\u{2019}s criterion scores), coloured on the 0\u{2013}{max} scale. Dashed outline: a self-judgment, shown but left out of the composite. Hatched \u{2014}: a dropout, no usable judgment (hover for the reason). Bottom row: the implementation\u{2019}s peer composite. Leniency: the judge\u{2019}s mean offset from the peer composite."
        ),
    );
    let tests: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in &a.implementations {
            for t in &r.hidden_tests {
                if !v.contains(&t.name) {
                    v.push(t.name.clone());
                }
            }
        }
        v
    };
    let (_, prefix) = abbreviate(&tests);
    let dropped = if prefix.is_empty() {
        String::new()
    } else {
        format!(
            " Names are shown without their common prefix <code>{}</code>; long names lose their middle (hover for the full name).",
            esc(&prefix)
        )
    };
    figure(
        &mut o,
        "Hidden tests",
        &chart_tests(a),
        &format!(
            "One row per hidden test, one column per implementation (best first), from the gate\u{2019}s test report of the representative sample. A gate passes only when tests ran and all of them passed. \u{201c}passed by\u{201d}: implementations passing the test / implementations that ran it.{dropped}"
        ),
    );
    scoreboard(&mut o, a);
    agreement(&mut o, a);
    judging(&mut o, a);
    sandboxes(&mut o, a);
    throttled(&mut o, a);
    unmetered(&mut o, a);
    budget(&mut o, a);
    let problems: Vec<_> = a.problems.iter().filter(|p| p.kind != "budget").collect();
    if !problems.is_empty() {
        o.push_str("<section class=\"card\"><h2>Infrastructure problems</h2><ul>");
        for p in problems {
            let _ = write!(
                o,
                "<li><code>{}</code> ({}): {}</li>",
                esc(&p.node),
                esc(&p.kind),
                esc(&short(&p.message, 400))
            );
        }
        o.push_str("</ul></section>\n");
    }
    let _ = writeln!(
        o,
        "<p class=\"small\">Generated by pipe from <code>aggregate.json</code> of round {}.</p></main></body></html>",
        esc(&a.round)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{
        AlphaRow, BootstrapConfig, CriterionInfo, HiddenTest, LeniencyRow, SelfPreference,
    };
    use std::collections::BTreeMap;

    fn judgment(judge: &str, tier: Tier, spec: Option<f64>, note: Option<&str>) -> JudgmentRow {
        JudgmentRow {
            judge: judge.into(),
            tier,
            scores: BTreeMap::from([("spec".to_string(), spec)]),
            composite: spec,
            hard_fail_pass: Some(true),
            verdict: Some("ship".into()),
            note: note.map(str::to_string),
            dropout: spec.is_none().then(|| "invalid <answer>".to_string()),
            infrastructure: false,
        }
    }

    fn row(name: &str, composite: Option<f64>, judgments: Vec<JudgmentRow>) -> ImplRow {
        ImplRow {
            implementation: name.into(),
            model_slug: format!("vendor/{name}"),
            label: "impl-XXXX".into(),
            sample: 1,
            samples: 1,
            run_path: None,
            build_ok: composite.is_some(),
            agent: None,
            build_reason: composite.is_none().then(|| "refused <path>".to_string()),
            gate_passed: false,
            gate_reason: None,
            tests_passed: 1,
            tests_total: 2,
            peer: BTreeMap::from([("spec".to_string(), composite)]),
            expert: BTreeMap::new(),
            all: BTreeMap::new(),
            composite,
            composite_ci: composite.map(|c| [c - 1.0, c + 1.0]),
            rank: composite.map(|_| 1),
            inseparable_from: Vec::new(),
            mean: None,
            verdict: None,
            passed_hard_fail: None,
            judgments,
            hidden_tests: if composite.is_some() {
                vec![
                    HiddenTest {
                        name: "test_<img src=x onerror=alert(1)>".into(),
                        passed: true,
                        outcome: TestOutcome::Passed,
                        flaky: false,
                    },
                    HiddenTest {
                        name: "test_other".into(),
                        passed: false,
                        outcome: TestOutcome::Failed,
                        flaky: true,
                    },
                ]
            } else {
                Vec::new()
            },
            loc: None,
            wall_ms: 1000,
            tokens: 10,
            input_tokens: 5,
            output_tokens: 5,
            cache_read_tokens: 0,
            cost_usd: 0.01,
            test_exit_code: None,
            total_cost_usd: 0.01,
            total_tokens: 10,
            median_wall_seconds: None,
            median_loc: None,
        }
    }

    fn hostile() -> Aggregate {
        let evil = "<script>alert('x')</script>";
        Aggregate {
            round: "r-2026".into(),
            name: "round <b>bold</b>".into(),
            date: "2026-05-08".into(),
            task: "task & \"quotes\"".into(),
            replayed: true,
            source: None,
            rubric: "rubric".into(),
            aggregation: Aggregation::Median,
            criteria: vec![CriterionInfo {
                id: "spec".into(),
                label: "Spec <i>".into(),
                min: 0.0,
                max: 10.0,
                weight: 1.0,
            }],
            composite_max: 10.0,
            verdicts: vec!["ship".into()],
            implementations: vec![
                row(
                    "<svg onload=alert(1)>",
                    Some(8.0),
                    vec![
                        judgment("judge<script>", Tier::Peer, Some(8.0), Some(evil)),
                        judgment("self", Tier::SelfJudge, Some(9.0), Some(evil)),
                        judgment("gone", Tier::Peer, None, None),
                    ],
                ),
                row("failed", None, Vec::new()),
            ],
            self_bias: Vec::new(),
            agreement: Vec::new(),
            judge_ranking: Vec::new(),
            judging_cost: Vec::new(),
            alpha: vec![AlphaRow {
                criterion: "spec".into(),
                alpha: Some(0.5),
                implementations: 1,
                judges: 3,
                low: true,
            }],
            leniency: vec![LeniencyRow {
                judge: "judge<script>".into(),
                offset: Some(-1.0),
                judged: 1,
            }],
            self_preference: SelfPreference {
                judges: 1,
                above: 1,
                below: 0,
                mean_delta: Some(1.0),
            },
            bootstrap: BootstrapConfig::default(),
            avg_score: None,
            problems: Vec::new(),
            suite: None,
            throttled: Vec::new(),
            unmetered: Vec::new(),
            sandboxes: vec![crate::aggregate::SandboxUse {
                sandbox: "unisolated<script>".into(),
                isolated: false,
                gates: vec![format!("{evil}#1")],
            }],
        }
    }

    #[test]
    fn data_strings_render_as_text() {
        let html = render(&hostile());
        let lower = html.to_lowercase();
        assert!(!lower.contains("<script"), "an unescaped <script> tag");
        assert!(!lower.contains("<img"), "an unescaped <img> tag");
        assert!(!lower.contains("<svg onload"), "an unescaped <svg> tag");
        assert!(!lower.contains("<b>bold"), "an unescaped <b> tag");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("judge&lt;script&gt;"));
        assert!(html.contains("invalid &lt;answer&gt;"));
        assert!(html.contains("refused &lt;path&gt;"));
        assert!(html.contains("task &amp; &quot;quotes&quot;"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn unisolated_gates_get_a_warning_and_their_own_row() {
        let mut a = hostile();
        let html = render(&a);
        assert!(html.contains("<b>Warning: unisolated gates.</b> 1 of 1 gates ran unisolated"));
        assert!(html.contains("<h2>Sandboxes</h2>"));
        a.sandboxes[0].isolated = true;
        a.sandboxes[0].sandbox = "docker".into();
        let html = render(&a);
        assert!(
            !html.contains("unisolated gates"),
            "no warning when all are isolated"
        );
        assert!(html.contains("<td><b>docker</b></td>"));
        a.sandboxes.clear();
        assert!(
            !render(&a).contains("<h2>Sandboxes</h2>"),
            "imports do not say"
        );
    }

    #[test]
    fn escape_covers_markup_and_controls() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\u{7}"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{fffd}"
        );
    }

    #[test]
    fn marks_replay_dropouts_self_and_failures() {
        let html = render(&hostile());
        assert!(html.contains("Replayed round."));
        assert!(html.contains("url(#pipe-hatch)"));
        assert!(html.contains("class=\"selfmark\""));
        assert!(html.contains("build failed: refused &lt;path&gt;"));
        assert!(html.contains("build failed \u{2014} no tests ran"));
    }

    #[test]
    fn test_names_lose_the_common_prefix() {
        let names = vec![
            "test_alpha_one".to_string(),
            "test_alpha_two".to_string(),
            "test_beta".to_string(),
        ];
        let (shown, prefix) = abbreviate(&names);
        assert_eq!(prefix, "test_");
        assert_eq!(shown, vec!["alpha_one", "alpha_two", "beta"]);
        let long = "x".repeat(80);
        assert_eq!(clip_middle(&long, 52).chars().count(), 52);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(30.0, 6.0), 5.0);
        assert_eq!(ticks(30.0, 5.0).len(), 7);
        assert_eq!(tick_label(0.002, 0.001), "0.002");
        assert_eq!(tick_label(25.0, 5.0), "25");
    }
}
