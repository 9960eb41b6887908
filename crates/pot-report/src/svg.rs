//! Line charts as inline SVG, written by hand.
//!
//! Why not `plotters`: its SVG backend lays out axis labels with font metrics, which needs its
//! `ttf` (font-kit, system fontconfig/freetype) or `ab_glyph` (a font file we would embed)
//! features; our charts are three plain line charts, and the browser lays out `<text>` itself.
//! About 150 lines here cost less than a font stack in every build of pot.

use std::fmt::Write;

use crate::html::escape;

/// Plot area and margins in SVG user units (the SVG scales with the page).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

pub struct Chart {
    body: String,
    x: (f64, f64),
    y: (f64, f64),
}

impl Chart {
    /// A chart over `x` and `y` (each `(min, max)`, widened when empty), with axes, ticks,
    /// grid lines and the axis titles.
    pub fn new(x: (f64, f64), y: (f64, f64), x_title: &str, y_title: &str) -> Self {
        let widen = |(lo, hi): (f64, f64)| if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
        let mut chart = Self {
            body: String::new(),
            x: widen(x),
            y: widen(y),
        };
        chart.axes(x_title, y_title);
        chart
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        let y = y.clamp(self.y.0, self.y.1);
        HEIGHT - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - TOP - BOTTOM)
    }

    fn axes(&mut self, x_title: &str, y_title: &str) {
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
        let mut s = String::new();
        for t in ticks(self.y) {
            let y = self.py(t);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(self.x) {
            let x = self.px(t);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y1 + 16.0,
                label(t)
            );
        }
        let _ = write!(
            s,
            r#"<rect class="frame" x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}"/><text class="title" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="title" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            x1 - x0,
            y1 - y0,
            (x0 + x1) / 2.0,
            HEIGHT - 4.0,
            escape(x_title),
            (y0 + y1) / 2.0,
            escape(y_title)
        );
        self.body.push_str(&s);
    }

    /// A polyline through the points (points with a non-finite coordinate break nothing: they
    /// are skipped).
    pub fn line(&mut self, points: &[(f64, f64)], class: &str) {
        let coords: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        if !coords.is_empty() {
            let _ = write!(
                self.body,
                r#"<polyline class="{class}" points="{}"/>"#,
                coords.join(" ")
            );
        }
    }

    /// The region between two curves over the same x values.
    pub fn band(&mut self, lower: &[(f64, f64)], upper: &[(f64, f64)], class: &str) {
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let coords: Vec<String> = lower
            .iter()
            .filter(finite)
            .chain(upper.iter().rev().filter(finite))
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        if coords.len() >= 3 {
            let _ = write!(
                self.body,
                r#"<polygon class="{class}" points="{}"/>"#,
                coords.join(" ")
            );
        }
    }

    /// A horizontal reference line across the plot, labelled at its right end.
    pub fn hline(&mut self, y: f64, class: &str, text: &str) {
        if !(y.is_finite() && y >= self.y.0 && y <= self.y.1) {
            return;
        }
        let py = self.py(y);
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{LEFT:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/><text class="note" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            py - 4.0,
            escape(text)
        );
    }

    /// A vertical marker line, labelled at its top.
    pub fn vline(&mut self, x: f64, class: &str, text: &str) {
        if !(x.is_finite() && x >= self.x.0 && x <= self.x.1) {
            return;
        }
        let px = self.px(x);
        let anchor = if px > WIDTH / 2.0 { "end" } else { "start" };
        let dx = if anchor == "end" { -4.0 } else { 4.0 };
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{:.1}"/><text class="note" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            HEIGHT - BOTTOM,
            px + dx,
            TOP + 12.0,
            escape(text)
        );
    }

    /// One marker per point with a tooltip; points above the range sit on its top edge as
    /// triangles (the value is in the tooltip).
    pub fn points(&mut self, points: &[(f64, f64, String)], class: &str) {
        for (x, y, tip) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            let (px, py) = (self.px(*x), self.py(*y));
            if *y > self.y.1 {
                let _ = write!(
                    self.body,
                    r#"<path class="{class}" d="M{:.1},{:.1} l4,7 h-8 z"><title>{}</title></path>"#,
                    px,
                    py,
                    escape(tip)
                );
            } else {
                let _ = write!(
                    self.body,
                    r#"<circle class="{class}" cx="{px:.1}" cy="{py:.1}" r="3"><title>{}</title></circle>"#,
                    escape(tip)
                );
            }
        }
    }

    /// The finished `<svg>` element with an accessible name.
    pub fn finish(self, name: &str) -> String {
        format!(
            r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">{}</svg>"#,
            escape(name),
            self.body
        )
    }
}

/// About five round tick values inside the range (steps of 1, 2 or 5 times a power of ten).
fn ticks((lo, hi): (f64, f64)) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![lo];
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick value as short as it can be without losing the step's precision.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(ticks((0.0, 10.0)), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks((0.0, 0.035));
        assert!(t.len() >= 3 && t.len() <= 7, "{t:?}");
        assert!(t.iter().all(|&v| (0.0..=0.035).contains(&v)));
        assert_eq!(label(0.005), "0.005");
        assert_eq!(label(40.0), "40");
    }

    #[test]
    fn text_is_escaped_and_out_of_range_values_are_clamped() {
        let mut c = Chart::new((1.0, 10.0), (0.0, 1.0), "<x>", "y & z");
        c.points(&[(2.0, 5.0, "\"high\"".into())], "score");
        c.line(&[(1.0, f64::NAN), (2.0, 0.5)], "mean");
        let svg = c.finish("a <chart>");
        assert!(svg.contains("&lt;x&gt;") && svg.contains("y &amp; z"));
        assert!(svg.contains("&quot;high&quot;") && svg.contains("<path"));
        assert!(!svg.contains("NaN"));
    }
}
