//! Spike raster (neuron vs time, populations stacked and coloured) above the population rates.

use std::path::Path;

use plotters::prelude::*;

use super::{colour, draw_png, legend, time_label};
use crate::error::Result;
use crate::recording::Recording;

/// At most this many neuron rows are drawn; larger networks show every k-th neuron.
pub const MAX_ROWS: u64 = 1_000;
/// Rates are re-binned to about this many bins across the run for the lower panel.
const RATE_BINS: usize = 200;

/// Draws the raster; `note`, when not empty, is appended to the title.
pub fn raster(rec: &Recording, note: &str, path: &Path) -> Result<()> {
    let pops: Vec<_> = rec.populations.iter().enumerate().filter(|(_, p)| p.spikes.is_some()).collect();
    let total: u64 = pops.iter().map(|(_, p)| p.size).sum();
    let stride = total.div_ceil(MAX_ROWS).max(1);
    let duration = rec.info.duration_ms.max(rec.info.dt_ms);
    draw_png(path, (1200, 900), |root| {
        let (upper, lower) = root.split_vertically(620);
        let shown_rows: u64 = pops.iter().map(|(_, p)| p.size.div_ceil(stride)).sum();
        let subsample = if stride > 1 { format!(", 1 in {stride} neurons shown") } else { String::new() };
        let mut chart = ChartBuilder::on(&upper)
            .caption(
                format!("{}: {:.0} ms, seed {}{subsample}{note}", rec.info.network_name, duration, rec.info.seed),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration, 0.0..shown_rows.max(1) as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (ms)")
            .y_desc("neuron (populations stacked)")
            .x_label_formatter(&|x| time_label(*x, duration))
            .y_label_formatter(&|y| format!("{:.0}", y * stride as f64))
            .label_style(("sans-serif", 15))
            .draw()?;
        let mut offset = 0.0;
        for (i, p) in &pops {
            let (times, ids) = p.spikes.as_ref().expect("filtered above");
            let c = colour(*i);
            let points = times
                .iter()
                .zip(ids)
                .filter(|(_, id)| **id % stride == 0)
                .map(move |(&t, &id)| Circle::new((t, offset + (id / stride) as f64 + 0.5), 1, c.filled()));
            chart
                .draw_series(points)?
                .label(format!("{} ({} neurons)", p.name, p.size))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
            offset += p.size.div_ceil(stride) as f64;
        }
        legend(&mut chart).draw()?;

        let rebinned: Vec<(usize, Vec<(f64, f64)>)> = rec
            .populations
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.rate_hz.is_empty())
            .map(|(i, p)| {
                let group = p.rate_hz.len().div_ceil(RATE_BINS).max(1);
                let width = p.rate_bin_ms * group as f64;
                let bins = p
                    .rate_hz
                    .chunks(group)
                    .enumerate()
                    .map(|(b, chunk)| (b as f64 * width, chunk.iter().sum::<f64>() / chunk.len() as f64));
                let steps = bins.flat_map(|(t0, r)| [(t0, r), ((t0 + width).min(duration), r)]).collect();
                (i, steps)
            })
            .collect();
        let max_rate = rebinned.iter().flat_map(|(_, s)| s.iter().map(|&(_, r)| r)).fold(1.0, f64::max);
        let mut rates = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration, 0.0..max_rate * 1.1)?;
        rates
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (ms)")
            .y_desc("population rate (Hz)")
            .x_label_formatter(&|x| time_label(*x, duration))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, steps) in rebinned {
            rates.draw_series(LineSeries::new(steps, colour(i).stroke_width(2)))?;
        }
        Ok(())
    })
}
