//! Membrane traces of the recorded neurons, one line each.

use std::path::Path;

use plotters::prelude::*;

use super::{colour, draw_png, legend, time_label};
use crate::error::Result;
use crate::recording::Recording;

pub fn traces(rec: &Recording, path: &Path) -> Result<()> {
    let dt = rec.info.dt_ms;
    let duration = rec.info.duration_ms.max(dt);
    let values = rec.traces.iter().flat_map(|t| t.v.iter().map(|&v| v as f64));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi.max(lo + 1.0)) } else { (0.0, 1.0) };
    let pad = 0.05 * (hi - lo);
    draw_png(path, (1200, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{}: membrane potential", rec.info.network_name), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("time (ms)")
            .y_desc("v (mV)")
            .x_label_formatter(&|x| time_label(*x, duration))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        let mut line = 0;
        for t in &rec.traces {
            let cols = t.node_ids.len();
            for (c, id) in t.node_ids.iter().enumerate() {
                let col = colour(line);
                let points =
                    t.v.iter().skip(c).step_by(cols.max(1)).enumerate().map(|(k, &v)| (k as f64 * dt, v as f64));
                chart
                    .draw_series(LineSeries::new(points, col.stroke_width(1)))?
                    .label(format!("{} #{id}", t.population))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col.stroke_width(2)));
                line += 1;
            }
        }
        legend(&mut chart).draw()?;
        Ok(())
    })
}
