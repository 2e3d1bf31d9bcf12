//! Percentile-distribution plot as hand-written SVG, laid out like
//! HdrHistogram's plotter: the x axis is `1/(1-percentile)` on a log scale, so
//! 90 %, 99 %, 99.9 % ... are evenly spaced and the tail gets the room; the y
//! axis is latency on a log scale so every channel stays readable.

use std::fmt::Write as _;

use crate::hist::DistPoint;

/// One line of the plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour (`#rrggbb`).
    pub color: String,
    /// Drawn thin and dashed (baseline runs).
    pub faint: bool,
    /// Whether the line gets a legend entry.
    pub in_legend: bool,
    /// (quantile, ns) points, quantiles ascending and below 1.
    pub points: Vec<DistPoint>,
}

/// Colours for successive channels.
pub const PALETTE: [&str; 10] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];

const W: f64 = 960.0;
const H: f64 = 580.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;

fn x_of(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-12)).log10()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ns_label(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{} µs", ns / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn pct_label(decade: i32) -> String {
    // 1 - 10^-d as a percentage: 0%, 90%, 99%, 99.9%, 99.99%, ...
    match decade {
        d if d <= 0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        d => format!("99.{}%", "9".repeat((d - 2) as usize)),
    }
}

/// Renders the plot as a standalone SVG document.
pub fn render(title: &str, subtitle: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut xmax, mut vmin, mut vmax) = (0.0f64, f64::MAX, 0.0f64);
    for &(q, v) in all {
        xmax = xmax.max(x_of(q));
        let v = (v.max(1)) as f64;
        vmin = vmin.min(v);
        vmax = vmax.max(v);
    }
    if vmax == 0.0 {
        vmin = 1.0;
        vmax = 10.0;
    }
    let xmax = xmax.ceil().clamp(2.0, 7.0);
    let ylo = vmin.log10().floor();
    let yhi = vmax.log10().ceil().max(ylo + 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / xmax * pw;
    let py = |v: f64| TOP + ph - (v.max(1.0).log10() - ylo) / (yhi - ylo) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="40" fill="#555" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        escape(subtitle)
    );
    // Horizontal grid: decades labelled, 2x and 5x faint.
    let mut d = ylo as i32;
    while d as f64 <= yhi {
        let base = 10f64.powi(d);
        for (m, strong) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = base * m;
            if v.log10() > yhi + 1e-9 {
                continue;
            }
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" />"##,
                LEFT + pw,
                if strong { "#ccc" } else { "#eee" }
            );
            if strong {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 6.0,
                    y + 4.0,
                    ns_label(v)
                );
            }
        }
        d += 1;
    }
    // Vertical grid: 0%, 90%, 99%, ...
    for dec in 0..=(xmax as i32) {
        let x = px(dec as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ccc" />"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            pct_label(dec)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (x = 1/(1-percentile), log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">round-trip latency (log scale)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Lines, faint ones first so channels draw on top.
    let mut ordered: Vec<&Series> = series.iter().filter(|s| s.faint).collect();
    ordered.extend(series.iter().filter(|s| !s.faint));
    for line in ordered {
        if line.points.is_empty() {
            continue;
        }
        let mut pts = String::new();
        for &(q, v) in &line.points {
            let _ = write!(pts, "{:.1},{:.1} ", px(x_of(q).min(xmax)), py(v as f64));
        }
        let style = if line.faint {
            r#"stroke-width="1" stroke-dasharray="4 3" opacity="0.8""#
        } else {
            r#"stroke-width="2""#
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" {style} points="{}"><title>{}</title></polyline>"#,
            line.color,
            pts.trim_end(),
            escape(&line.label)
        );
    }
    // Legend.
    let lx = LEFT + pw + 16.0;
    let mut ly = TOP + 10.0;
    for line in series.iter().filter(|s| s.in_legend) {
        let dash = if line.faint {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 24.0,
            line.color
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&line.label)
        );
        ly += 20.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_document() {
        assert_eq!(pct_label(0), "0%");
        assert_eq!(pct_label(1), "90%");
        assert_eq!(pct_label(2), "99%");
        assert_eq!(pct_label(4), "99.99%");
        let svg = render(
            "t <&>",
            "sub",
            &[Series {
                label: "a\"b".into(),
                color: PALETTE[0].into(),
                faint: false,
                in_legend: true,
                points: vec![(0.0, 100), (0.5, 150), (0.99, 400), (0.9999, 9000)],
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains("a&quot;b"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
