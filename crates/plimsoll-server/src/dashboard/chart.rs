//! The memory chart: used memory over time against the alert levels, as an
//! inline SVG (no script, no library).

use super::html::{escape, human_bytes};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;

/// One point of the series: (ms since the epoch, bytes).
pub type Point = (u64, u64);

/// Levels drawn as dashed lines, as shares of maxmemory.
pub const LEVELS: [f64; 3] = [0.2, 0.5, 0.9];

/// The chart of `used` against `maxmemory` (0: unbounded, no levels), with
/// an optional forecast line from the last point to the time of full.
pub fn chart(used: &[Point], maxmemory: u64, forecast: Option<&[Point]>) -> String {
    let mut out = format!(
        "<svg class=\"chart\" id=\"memory-chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"Redis memory over time\">"
    );
    if used.len() < 2 {
        out.push_str(&format!(
            "<text x=\"{LEFT}\" y=\"{}\">Collecting samples…</text></svg>",
            HEIGHT / 2.0
        ));
        return out;
    }
    let t0 = used[0].0;
    let t1 = forecast
        .and_then(|f| f.last().map(|p| p.0))
        .unwrap_or(0)
        .max(used[used.len() - 1].0)
        .max(t0 + 1);
    let top_value = used
        .iter()
        .map(|p| p.1)
        .chain(forecast.unwrap_or(&[]).iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(maxmemory)
        .max(1) as f64
        * 1.05;
    let x = |t: u64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |v: u64| TOP + (1.0 - v as f64 / top_value) * (HEIGHT - TOP - BOTTOM);
    let path = |points: &[Point]| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { "L" },
                    x(p.0.max(t0)),
                    y(p.1)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Axis: 0 and the top.
    out.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#d8dee4\"/>\
         <text x=\"4\" y=\"{b}\">0</text><text x=\"4\" y=\"{t}\">{}</text>",
        escape(&human_bytes(top_value as u64)),
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT,
        t = TOP + 8.0,
    ));
    if maxmemory > 0 {
        for (level, color) in LEVELS.iter().zip(["#9a6700", "#bc4c00", "#cf222e"]) {
            let v = (maxmemory as f64 * level) as u64;
            out.push_str(&format!(
                "<line class=\"level\" data-level=\"{pct}\" x1=\"{LEFT}\" x2=\"{r}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\"/>\
                 <text x=\"4\" y=\"{ty:.1}\">{pct}%</text>",
                pct = (level * 100.0) as u32,
                r = WIDTH - RIGHT,
                yy = y(v),
                ty = y(v) + 4.0,
            ));
        }
        out.push_str(&format!(
            "<line class=\"level\" data-level=\"100\" x1=\"{LEFT}\" x2=\"{r}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#1b2733\"/>",
            r = WIDTH - RIGHT,
            yy = y(maxmemory),
        ));
    }
    out.push_str(&format!("<path class=\"used\" d=\"{}\"/>", path(used)));
    if let Some(forecast) = forecast.filter(|f| f.len() >= 2) {
        out.push_str(&format!(
            "<path class=\"forecast\" id=\"forecast\" d=\"{}\"><title>forecast</title></path>",
            path(forecast)
        ));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_the_series_levels_and_forecast() {
        let used: Vec<Point> = (0..10).map(|i| (1_000 * i, 100 + 10 * i)).collect();
        let forecast = [(9_000, 190), (20_000, 1_000)];
        let svg = chart(&used, 1_000, Some(&forecast));
        assert!(svg.contains("class=\"used\""));
        assert!(svg.contains("id=\"forecast\""));
        for level in [20, 50, 90] {
            assert!(svg.contains(&format!("data-level=\"{level}\"")), "{level}");
        }
        assert!(chart(&used[..1], 1_000, None).contains("Collecting"));
        assert!(
            !chart(&used, 0, None).contains("data-level"),
            "no levels without maxmemory"
        );
    }
}
