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
        let (dx, dy) = ((x1 - x0).max(1e-6) * 0.05, (y1 - y0).max(1e-6) * 0.08);
        Axes { x0: x0 - dx, x1: x1 + dx, y0: y0 - dy, y1: y1 + dy, left }
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

pub fn draw(
    title: &str,
    points: &[(f64, f64)],
    front: &[(f64, f64)],
    current: (f64, f64),
    chosen: (f64, f64),
    sweeps: &[(String, Vec<(f64, f64)>)],
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif">"##,
        2.0 * W,
        H + 30.0
    );
    let _ = write!(s, r##"<text x="10" y="{}" font-size="12" fill="#444">{}</text>"##, H + 20.0, esc(title));
    // the frontier
    let a = Axes::fit(points.iter().copied().chain([current, chosen]), 0.0);
    a.frame(&mut s, "cost / accuracy frontier", "model ms per request", "MCC");
    let step = (points.len() / 4000).max(1);
    for (x, y) in points.iter().step_by(step) {
        let _ = write!(s, r##"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="#bbb"/>"##, a.x(*x), a.y(*y));
    }
    let line: Vec<String> = front.iter().map(|(x, y)| format!("{:.1},{:.1}", a.x(*x), a.y(*y))).collect();
    let _ = write!(s, r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1.5"/>"##, line.join(" "));
    for ((x, y), colour, label) in [(current, "#1f6fd0", "current"), (chosen, "#d0301f", "chosen")] {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{label}</text>"##,
            a.x(x),
            a.y(y),
            a.x(x) + 7.0,
            a.y(y) - 6.0
        );
    }
    // the sweep
    let b = Axes::fit(sweeps.iter().flat_map(|(_, p)| p.iter().copied()), W);
    b.frame(&mut s, "threshold sweep (the rest as chosen)", "threshold", "MCC");
    for ((name, pts), colour) in sweeps.iter().zip(["#1f6fd0", "#d0301f", "#2a9d3a", "#9d2a8c"]) {
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", b.x(*x), b.y(*y))).collect();
        let _ =
            write!(s, r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##, line.join(" "));
        if let Some((x, y)) = pts.last() {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}" text-anchor="end">{}</text>"##,
                b.x(*x),
                b.y(*y) - 5.0,
                esc(name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
