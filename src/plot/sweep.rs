//! The sweep figure: final test accuracy per surrogate (mean with a bar of +-1 standard
//! deviation, and every seed as a dot), beside the mean test-accuracy curves.

use std::path::Path;

use plotters::prelude::*;

use super::{colour, draw_png, legend};
use crate::error::Result;
use crate::records::sweep::{Row, RunResult};

pub fn sweep(rows: &[Row], results: &[RunResult], name: &str, path: &Path) -> Result<()> {
    let accuracies = results
        .iter()
        .map(|r| 100.0 * r.final_accuracy())
        .chain(rows.iter().flat_map(|r| r.curve.iter().map(|a| 100.0 * a)));
    let (lo, hi) = accuracies.filter(|a| a.is_finite()).fold((100.0f64, 0.0f64), |(lo, hi), a| (lo.min(a), hi.max(a)));
    let (lo, hi) = ((lo - 1.0).max(0.0).floor(), (hi + 1.0).min(100.0).ceil());
    let epochs = rows.iter().map(|r| r.curve.len()).max().unwrap_or(1).max(2);
    draw_png(path, (1300, 560), |root| {
        let root = root.titled(&format!("{name}: surrogate sweep"), ("sans-serif", 22))?;
        let (left, right) = root.split_horizontally(620);
        let n = rows.len().max(1);
        let mut chart = ChartBuilder::on(&left)
            .caption("final test accuracy (mean +- std over seeds; dots: seeds)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, lo..hi)?;
        let labels: Vec<String> = rows.iter().map(|r| r.surrogate.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let k = x.round();
                if k >= 0.0 && (k as usize) < labels.len() { labels[k as usize].clone() } else { String::new() }
            })
            .y_desc("test accuracy (%)")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let (x, c) = (i as f64, colour(i));
            let (m, s) = (100.0 * r.mean, 100.0 * r.std);
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, m - s), (x, m + s)], c.stroke_width(3))))?;
            for end in [m - s, m + s] {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.15, end), (x + 0.15, end)],
                    c.stroke_width(2),
                )))?;
            }
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.25, m - 0.02), (x + 0.25, m + 0.02)],
                c.filled(),
            )))?;
            chart.draw_series(r.accuracies.iter().map(|&a| Circle::new((x + 0.3, 100.0 * a), 3, c.filled())))?;
        }
        let mut chart = ChartBuilder::on(&right)
            .caption("test accuracy per epoch (mean over seeds)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(1.0..epochs as f64, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epochs.min(20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("test accuracy (%)")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    r.curve.iter().enumerate().map(|(e, &a)| ((e + 1) as f64, 100.0 * a)),
                    c.stroke_width(2),
                ))?
                .label(r.surrogate.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut chart).position(SeriesLabelPosition::LowerRight).draw()?;
        Ok(())
    })
}

/// The delay sweep of the recall task: final test accuracy against the delay, a line per
/// surrogate (mean over seeds, a bar of +-1 standard deviation), with chance and 95% marked.
pub fn delays(by_delay: &[(u32, Vec<Row>)], name: &str, path: &Path) -> Result<()> {
    let surrogates: Vec<String> =
        by_delay.first().map(|(_, rows)| rows.iter().map(|r| r.surrogate.clone()).collect()).unwrap_or_default();
    let max_delay = by_delay.iter().map(|(d, _)| *d).max().unwrap_or(1).max(1) as f64;
    draw_png(path, (900, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{name}: recall accuracy against delay (mean +- std over seeds)"), ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..max_delay * 1.05, 0.0..101.0)?;
        chart
            .configure_mesh()
            .x_desc("delay D (steps between cue and recall)")
            .y_desc("test accuracy (%)")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 95.0), (max_delay * 1.05, 95.0)],
            BLACK.mix(0.4).stroke_width(1),
        )))?;
        for (i, s) in surrogates.iter().enumerate() {
            let c = colour(i);
            let points: Vec<(f64, f64, f64)> = by_delay
                .iter()
                .filter_map(|(d, rows)| rows.iter().find(|r| &r.surrogate == s).map(|r| (*d as f64, r.mean, r.std)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.iter().map(|&(d, m, _)| (d, 100.0 * m)), c.stroke_width(2)))?
                .label(s.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(points.iter().map(|&(d, m, _)| Circle::new((d, 100.0 * m), 4, c.filled())))?;
            for &(d, m, sd) in &points {
                let (lo, hi) = (100.0 * (m - sd), 100.0 * (m + sd));
                chart.draw_series(std::iter::once(PathElement::new(vec![(d, lo), (d, hi)], c.stroke_width(2))))?;
            }
        }
        legend(&mut chart).position(SeriesLabelPosition::LowerLeft).draw()?;
        Ok(())
    })
}
