//! Concept figures of an ICBM: the images that turn each concept on most, the classifier's
//! class x concept weights, and one image's explanation.

use std::path::Path;

use nalgebra::DMatrix;
use plotters::prelude::*;

use super::draw_png;
use crate::data::idx::Split;
use crate::error::Result;
use crate::records::Explanation;

/// Draws a grey-scale image (white background, dark ink) with its top-left corner at `at`.
fn draw_image<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    pixels: &[u8],
    width: usize,
    scale: i32,
    at: (i32, i32),
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    for (i, &p) in pixels.iter().enumerate() {
        let (x, y) = ((i % width) as i32, (i / width) as i32);
        let shade = 255 - p;
        let colour = RGBColor(shade, shade, shade);
        let corner = (at.0 + x * scale, at.1 + y * scale);
        area.draw(&Rectangle::new([corner, (corner.0 + scale, corner.1 + scale)], colour.filled()))?;
    }
    Ok(())
}

/// One row per concept: its label and the images that activate it most.
pub fn concept_grid(top: &[Vec<usize>], split: &Split, title: &str, path: &Path) -> Result<()> {
    let width = split.images.cols;
    let scale = 2;
    let cell = width as i32 * scale + 4;
    let per_row = top.first().map_or(0, Vec::len) as i32;
    let columns = 2;
    let rows = top.len().div_ceil(columns) as i32;
    let label = 44;
    let size = ((columns as i32 * (label + per_row * cell) + 20) as u32, (rows * cell + 50) as u32);
    draw_png(path, size, |root| {
        root.draw(&Text::new(title.to_owned(), (10, 10), ("sans-serif", 20)))?;
        for (c, images) in top.iter().enumerate() {
            let (col, row) = ((c / rows as usize) as i32, (c % rows as usize) as i32);
            let x0 = 10 + col * (label + per_row * cell);
            let y0 = 44 + row * cell;
            root.draw(&Text::new(format!("c{c}"), (x0, y0 + cell / 3), ("sans-serif", 15)))?;
            for (k, &i) in images.iter().enumerate() {
                draw_image(root, split.images.image(i), width, scale, (x0 + label + k as i32 * cell, y0))?;
            }
        }
        Ok(())
    })
}

fn diverging(v: f64, max: f64) -> RGBColor {
    let t = (v / max).clamp(-1.0, 1.0);
    let fade = |t: f64| (255.0 * (1.0 - t.abs())) as u8;
    if t >= 0.0 { RGBColor(255, fade(t), fade(t)) } else { RGBColor(fade(t), fade(t), 255) }
}

/// The classifier's weights as a heat map: rows classes, columns concepts, red positive, blue
/// negative.
pub fn concept_weights(weights: &DMatrix<f32>, classes: &[&str], title: &str, path: &Path) -> Result<()> {
    let (n_classes, n_concepts) = weights.shape();
    let max = weights.amax().max(1e-12) as f64;
    let cell = 24;
    let left = 110;
    let size = ((left + n_concepts as i32 * cell + 20) as u32, (60 + n_classes as i32 * cell + 40) as u32);
    draw_png(path, size, |root| {
        root.draw(&Text::new(format!("{title} (colour scale +-{max:.2})"), (10, 10), ("sans-serif", 18)))?;
        for r in 0..n_classes {
            let y = 44 + r as i32 * cell;
            let name = classes.get(r).map_or(r.to_string(), |s| s.to_string());
            root.draw(&Text::new(name, (8, y + 5), ("sans-serif", 13)))?;
            for c in 0..n_concepts {
                let x = left + c as i32 * cell;
                let fill = diverging(weights[(r, c)] as f64, max);
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], fill.filled()))?;
            }
        }
        let y = 48 + n_classes as i32 * cell;
        for c in (0..n_concepts).step_by(4) {
            root.draw(&Text::new(format!("c{c}"), (left + c as i32 * cell, y), ("sans-serif", 12)))?;
        }
        Ok(())
    })
}

/// The image beside the contributions of the concepts that fired to the predicted class.
pub fn explanation(e: &Explanation, split: &Split, classes: &[&str], path: &Path) -> Result<()> {
    let name = |k: usize| classes.get(k).map_or(k.to_string(), |s| s.to_string());
    let (lo, hi) = e.fired.iter().fold((0.0f64, 0.0f64), |(lo, hi), &(_, w)| (lo.min(w as f64), hi.max(w as f64)));
    let span = (hi - lo).max(1e-6) * 0.1;
    draw_png(path, (1000, 480), |root| {
        let (left, right) = root.split_horizontally(260);
        left.draw(&Text::new(format!("test image {}", e.index), (20, 40), ("sans-serif", 16)))?;
        draw_image(&left, split.images.image(e.index), split.images.cols, 8, (18, 70))?;
        left.draw(&Text::new(format!("true: {}", name(e.label)), (20, 310), ("sans-serif", 16)))?;
        left.draw(&Text::new(format!("predicted: {}", name(e.predicted)), (20, 334), ("sans-serif", 16)))?;
        let bars = e.fired.len().max(1);
        let mut chart = ChartBuilder::on(&right)
            .caption(
                format!(
                    "{} of {} concepts fired; contribution to \"{}\" (bias {:+.2})",
                    e.fired.len(),
                    e.concepts,
                    name(e.predicted),
                    e.bias
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..bars as f64 - 0.5, (lo - span)..(hi + span))?;
        let fired = e.fired.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars)
            .x_label_formatter(&|x| {
                let k = x.round();
                if k >= 0.0 && (k as usize) < fired.len() { format!("c{}", fired[k as usize].0) } else { String::new() }
            })
            .x_desc("concept (fired, H(x) = 1)")
            .y_desc("classifier weight = contribution")
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(e.fired.iter().enumerate().map(|(k, &(_, w))| {
            let colour = if w >= 0.0 { RGBColor(214, 39, 40) } else { RGBColor(31, 119, 180) };
            Rectangle::new([(k as f64 - 0.35, 0.0), (k as f64 + 0.35, w as f64)], colour.filled())
        }))?;
        Ok(())
    })
}
