//! The pictures `cascade tune` draws, as one SVG an operator opens in a browser: the
//! cost/accuracy frontier (every setting, the Pareto front, the current and the chosen
//! setting) and the threshold sweep (MCC against each threshold of the first stage).

use std::fmt::Write as _;

const W: f64 = 460.0;
const H: f64 = 320.0;
const PAD: f64 = 50.0;

struct Axes {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    left: f64,
    /// The data had one x (or one y) value: the axis is widened around it, and says so.
    flat_x: bool,
    flat_y: bool,
}

impl Axes {
    fn fit(points: impl Iterator<Item = (f64, f64)>, left: f64) -> Axes {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        // one value: five ticks of the same number would say nothing; widen around it
        let (flat_x, flat_y) = (x1 - x0 < 1e-9, y1 - y0 < 1e-9);
        let widen = |v: f64| (v.abs() * 0.1).max(0.05);
        let dx = if flat_x { widen(x0) } else { (x1 - x0) * 0.05 };
        let dy = if flat_y { widen(y0) } else { (y1 - y0) * 0.08 };
        Axes { x0: x0 - dx, x1: x1 + dx, y0: y0 - dy, y1: y1 + dy, left, flat_x, flat_y }
    }
    fn x(&self, v: f64) -> f64 {
        self.left + PAD + (v - self.x0) / (self.x1 - self.x0) * (W - 2.0 * PAD)
    }
    fn y(&self, v: f64) -> f64 {
        H - PAD - (v - self.y0) / (self.y1 - self.y0) * (H - 2.0 * PAD)
    }
    fn frame(&self, s: &mut String, title: &str, xl: &str, yl: &str) {
        let (l, r, t, b) = (self.left + PAD, self.left + W - PAD, PAD, H - PAD);
        let _ =
            write!(s, r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#999"/>"##, r - l, b - t);
        let _ = write!(
            s,
            r##"<text x="{}" y="30" font-size="13" text-anchor="middle">{}</text>"##,
            (l + r) / 2.0,
            esc(title)
        );
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            (l + r) / 2.0,
            H - 12.0,
            esc(xl)
        );
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" transform="rotate(-90 {} {})" text-anchor="middle">{}</text>"##,
            self.left + 14.0,
            H / 2.0,
            self.left + 14.0,
            H / 2.0,
            esc(yl)
        );
        for (flat, what) in [(self.flat_x, xl), (self.flat_y, yl)] {
            if flat {
                let y = if what == xl { t + 14.0 } else { t + 28.0 };
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{y}" font-size="10" fill="#a33" text-anchor="middle">every point has the same {}</text>"##,
                    (l + r) / 2.0,
                    esc(what)
                );
            }
        }
        for k in 0..=4 {
            let (vx, vy) =
                (self.x0 + (self.x1 - self.x0) * k as f64 / 4.0, self.y0 + (self.y1 - self.y0) * k as f64 / 4.0);
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle">{vx:.2}</text>"##,
                self.x(vx),
                b + 14.0
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{:.1}" font-size="9" text-anchor="end">{vy:.3}</text>"##,
                l - 4.0,
                self.y(vy) + 3.0
            );
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One threshold's sweep: MCC at each value, the rest of the setting as chosen.
pub struct Sweep {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// The chosen value of this threshold (marked on the plot).
    pub chosen_at: Option<f64>,
}

/// What `draw` shows.
pub struct Picture<'a> {
    pub title: String,
    /// (ms per request, MCC) of every setting, the Pareto front, the current and the chosen.
    pub points: &'a [(f64, f64)],
    pub front: &'a [(f64, f64)],
    pub current: (f64, f64),
    pub chosen: (f64, f64),
    pub sweeps: &'a [Sweep],
    /// Lines under the plots: the chosen setting's figures in-sample and by held-out group.
    pub notes: Vec<String>,
}

pub fn draw(p: &Picture) -> String {
    let mut s = String::new();
    let lines = p.notes.len() as f64 + 1.0;
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif">"##,
        2.0 * W,
        H + 10.0 + 16.0 * lines
    );
    let _ = write!(s, r##"<text x="10" y="{}" font-size="12" fill="#444">{}</text>"##, H + 20.0, esc(&p.title));
    for (i, n) in p.notes.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="10" y="{}" font-size="12" fill="#222">{}</text>"##,
            H + 36.0 + 16.0 * i as f64,
            esc(n)
        );
    }
    // the frontier
    let a = Axes::fit(p.points.iter().copied().chain([p.current, p.chosen]), 0.0);
    a.frame(&mut s, "cost / accuracy frontier", "model ms per request", "MCC");
    let step = (p.points.len() / 4000).max(1);
    for (x, y) in p.points.iter().step_by(step) {
        let _ = write!(s, r##"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="#bbb"/>"##, a.x(*x), a.y(*y));
    }
    let line: Vec<String> = p.front.iter().map(|(x, y)| format!("{:.1},{:.1}", a.x(*x), a.y(*y))).collect();
    let _ = write!(s, r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1.5"/>"##, line.join(" "));
    for ((x, y), colour, label) in [(p.current, "#1f6fd0", "current"), (p.chosen, "#d0301f", "chosen")] {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{label}</text>"##,
            a.x(x),
            a.y(y),
            a.x(x) + 7.0,
            a.y(y) - 6.0
        );
    }
    // the sweep, with the chosen value of each threshold marked
    let b = Axes::fit(p.sweeps.iter().flat_map(|w| w.points.iter().copied()), W);
    b.frame(&mut s, "threshold sweep (the rest as chosen)", "threshold", "MCC");
    for (w, colour) in p.sweeps.iter().zip(["#1f6fd0", "#d0301f", "#2a9d3a", "#9d2a8c"]) {
        let line: Vec<String> = w.points.iter().map(|(x, y)| format!("{:.1},{:.1}", b.x(*x), b.y(*y))).collect();
        let _ =
            write!(s, r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##, line.join(" "));
        if let Some((x, y)) = w.points.last() {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}" text-anchor="end">{}</text>"##,
                b.x(*x),
                b.y(*y) - 5.0,
                esc(&w.name)
            );
        }
        if let Some(v) = w.chosen_at {
            let x = b.x(v);
            let _ = write!(
                s,
                r##"<line class="chosen-value" x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10" fill="{colour}">chosen {v:.2}</text>"##,
                PAD,
                H - PAD,
                x + 3.0,
                PAD + 12.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_frontier_says_so_and_the_chosen_value_is_marked() {
        let one = [(2.0, 0.5)];
        let sweeps =
            [Sweep { name: "first.exit_low".into(), points: vec![(0.1, 0.4), (0.3, 0.5)], chosen_at: Some(0.3) }];
        let svg = draw(&Picture {
            title: "t".into(),
            points: &one,
            front: &one,
            current: (2.0, 0.5),
            chosen: (2.0, 0.5),
            sweeps: &sweeps,
            notes: vec!["chosen: in-sample MCC 0.500; leave-one-group-out MCC 0.420".into()],
        });
        assert!(svg.contains("every point has the same model ms per request"), "{svg}");
        assert!(svg.contains("every point has the same MCC"), "{svg}");
        // five ticks, five different numbers
        let ticks: std::collections::BTreeSet<&str> = svg
            .split("font-size=\"9\" text-anchor=\"middle\">")
            .skip(1)
            .take(5)
            .map(|t| t.split('<').next().unwrap_or(""))
            .collect();
        assert_eq!(ticks.len(), 5, "{ticks:?}");
        assert!(svg.contains("class=\"chosen-value\"") && svg.contains("chosen 0.30"), "{svg}");
        assert!(svg.contains("leave-one-group-out MCC 0.420"), "{svg}");
    }
}
