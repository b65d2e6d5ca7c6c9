//! The gradient-decay figure: the gradient's norm per time step (spiking networks) or per layer
//! (layered models), one curve per surrogate, on a log axis; the values go beside it as CSV.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::{colour, draw_png, legend};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::records::GradientDecay;

pub fn gradient_decay(decay: &GradientDecay, name: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let png = dir.join("gradient_decay.png");
    let csv = dir.join("gradient_decay.csv");
    let steps = decay.norms.first().map_or(0, Vec::len);
    let mut text = String::from("position");
    for s in &decay.surrogates {
        let _ = write!(text, ",{}", s.name());
    }
    text.push('\n');
    for n in 0..steps {
        let _ = write!(text, "{n}");
        for norms in &decay.norms {
            let _ = write!(text, ",{}", norms[n]);
        }
        text.push('\n');
    }
    write_atomically(&csv, |tmp| std::fs::write(tmp, &text).map_err(|e| Error::write(&csv, e)))?;
    let positive = decay.norms.iter().flatten().copied().filter(|v| *v > 0.0 && v.is_finite());
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo / 2.0, hi * 2.0) } else { (1e-12, 1.0) };
    draw_png(&png, (1000, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{name}: {}, {}", decay.measured, decay.source), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..(steps.max(2) - 1) as f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(decay.axis)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("gradient norm, RMS over samples")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, (s, norms)) in decay.surrogates.iter().zip(&decay.norms).enumerate() {
            let c = colour(i);
            let points = norms.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(n, &v)| (n as f64, v));
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                .label(s.to_string())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(3)));
        }
        legend(&mut chart).draw()?;
        Ok(())
    })?;
    Ok(vec![png, csv])
}
