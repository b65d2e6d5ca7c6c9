//! Training figures: loss and accuracy per epoch, and the confusion matrix.

use std::path::Path;

use plotters::prelude::*;

use super::{colour, draw_png, legend};
use crate::error::Result;
use crate::records::History;

/// (label, values) of the train and test curves of one panel.
type Curves<'a> = [(&'a str, &'a Vec<f64>); 2];

/// Loss (left) and accuracy (right) per epoch, train and test.
pub fn training_curves(h: &History, name: &str, path: &Path) -> Result<()> {
    let epochs = h.epochs().max(1) as f64;
    draw_png(path, (1200, 500), |root| {
        let panels = root.split_evenly((1, 2));
        let loss_max = h.train_loss.iter().chain(&h.test_loss).copied().filter(|x| x.is_finite()).fold(0.1, f64::max);
        let specs: [(&str, f64, Curves, f64); 2] = [
            ("loss", loss_max * 1.1, [("train", &h.train_loss), ("test", &h.test_loss)], 1.0),
            ("accuracy (%)", 100.0, [("train", &h.train_accuracy), ("test", &h.test_accuracy)], 100.0),
        ];
        for (area, (label, top, series, scale)) in panels.iter().zip(specs) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{name}: {label}"), ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(0.5..epochs + 0.5, 0.0..top)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(label)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 14))
                .draw()?;
            for (i, (which, values)) in series.iter().enumerate() {
                let points: Vec<(f64, f64)> =
                    values.iter().enumerate().map(|(e, &v)| ((e + 1) as f64, v * scale)).collect();
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                    .label(*which)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(3)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
            }
            legend(&mut chart).draw()?;
        }
        Ok(())
    })
}

/// Confusion matrix as a heat map with counts; rows true class (0 at the top), columns predicted.
pub fn confusion(counts: &[u64], classes: usize, title: &str, path: &Path) -> Result<()> {
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let top = classes as f64 - 0.5;
    draw_png(path, (760, 700), |root| {
        // Cells are centred on integer coordinates; row t is drawn at height classes - 1 - t.
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(45)
            .build_cartesian_2d(-0.5..top, -0.5..top)?;
        let last = classes as f64 - 1.0;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(classes)
            .y_labels(classes)
            .x_label_formatter(&|x| format!("{:.0}", x.round()))
            .y_label_formatter(&|y| format!("{:.0}", last - y.round()))
            .label_style(("sans-serif", 14))
            .draw()?;
        for t in 0..classes {
            for p in 0..classes {
                let c = counts[t * classes + p];
                let shade = 1.0 - 0.85 * (c as f64 / max);
                let fill = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
                let (x, y) = (p as f64, last - t as f64);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    fill.filled(),
                )))?;
                let text_colour = if shade < 0.5 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    c.to_string(),
                    (x - 0.3, y + 0.15),
                    ("sans-serif", 13).into_font().color(&text_colour),
                )))?;
            }
        }
        Ok(())
    })
}
