//! Every surrogate: its primitive S(x), its derivative S'(x) on a linear and on a log axis. All
//! derivatives have unit area (each primitive rises from 0 to 1), so the curves compare shapes
//! at equal total gradient. The sampled values are written beside the figure as CSV.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{colour, draw_png, legend};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::surrogate::Surrogate;

const X_RANGE: f64 = 1.5;
const SAMPLES: usize = 601;

fn xs() -> impl Iterator<Item = f64> + Clone {
    (0..SAMPLES).map(|i| -X_RANGE + 2.0 * X_RANGE * i as f64 / (SAMPLES - 1) as f64)
}

/// Draws `surrogates.png` and writes `surrogates.csv` into `dir`.
pub fn surrogates(surrogates: &[Surrogate], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let png = dir.join("surrogates.png");
    let csv = dir.join("surrogates.csv");
    let mut text = String::from("x");
    for s in surrogates {
        let _ = write!(text, ",{0}_primitive,{0}_derivative", s.name());
    }
    text.push('\n');
    for x in xs() {
        let _ = write!(text, "{x}");
        for s in surrogates {
            let _ = write!(text, ",{},{}", s.primitive(x), s.derivative(x));
        }
        text.push('\n');
    }
    write_atomically(&csv, |tmp| std::fs::write(tmp, &text).map_err(|e| Error::write(&csv, e)))?;

    let peak = surrogates.iter().map(|s| s.derivative(0.0)).fold(1.0, f64::max);
    draw_png(&png, (1500, 520), |root| {
        let panels = root.split_evenly((1, 3));
        let titles = ["primitive S(x)", "derivative S'(x)", "derivative S'(x), log axis"];
        for (p, (area, title)) in panels.iter().zip(titles).enumerate() {
            let mut builder = ChartBuilder::on(area);
            builder.caption(title, ("sans-serif", 20)).margin(10).x_label_area_size(40).y_label_area_size(55);
            let x_desc = "x = v - threshold";
            if p == 2 {
                let mut chart = builder.build_cartesian_2d(-X_RANGE..X_RANGE, (1e-6..peak * 2.0).log_scale())?;
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_label_formatter(&|y| format!("{y:.0e}"))
                    .label_style(("sans-serif", 13))
                    .draw()?;
                for (i, s) in surrogates.iter().enumerate() {
                    let points = xs().map(|x| (x, s.derivative(x))).filter(|&(_, y)| y > 1e-6);
                    chart.draw_series(LineSeries::new(points, colour(i).stroke_width(2)))?;
                }
            } else {
                let top = if p == 0 { 1.05 } else { peak * 1.05 };
                let mut chart = builder.build_cartesian_2d(-X_RANGE..X_RANGE, -0.02..top)?;
                chart.configure_mesh().x_desc(x_desc).label_style(("sans-serif", 13)).draw()?;
                for (i, s) in surrogates.iter().enumerate() {
                    let f = |x: f64| {
                        if p == 0 { s.primitive(x) } else { s.derivative(x) }
                    };
                    chart
                        .draw_series(LineSeries::new(xs().map(|x| (x, f(x))), colour(i).stroke_width(2)))?
                        .label(s.to_string())
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour(i).stroke_width(3)));
                }
                if p == 1 {
                    legend(&mut chart).draw()?;
                }
            }
        }
        Ok(())
    })?;
    Ok(vec![png, csv])
}
