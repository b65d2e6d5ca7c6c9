//! Figures, drawn with plotters on a bitmap with an embedded font (DejaVu Sans, licence beside
//! it), so drawing needs no system fonts. Every figure is written atomically.

mod concepts;
mod gradient_decay;
mod raster;
mod surrogates;
mod sweep;
mod traces;
mod training;

pub use concepts::{concept_grid, concept_weights, explanation};
pub use gradient_decay::gradient_decay;
pub use raster::raster;
pub use surrogates::surrogates;
pub use sweep::{delays, sweep};
pub use traces::traces;
pub use training::{confusion, training_curves};

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;

const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType file"));
    });
}

/// Colour of the i-th population, shared by every figure.
/// A time axis label: whole milliseconds, or tenths on runs shorter than 20 ms (a trained
/// spiking stack's few steps), where whole numbers would repeat.
fn time_label(x: f64, duration_ms: f64) -> String {
    if duration_ms >= 20.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

pub fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLOURS[i % COLOURS.len()]
}

/// The legend every figure uses: white box, black frame.
fn legend<'a, 'b, DB, CT>(chart: &'b mut ChartContext<'a, DB, CT>) -> plotters::chart::SeriesLabelStyle<'a, 'b, DB, CT>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    let mut style = chart.configure_series_labels();
    style.background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14));
    style
}

/// Draws a PNG of `size` pixels with `draw`, atomically.
fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    register_font();
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| Error::write(path, e))?;
        draw(&root).map_err(|e| Error::write(path, e))?;
        root.present().map_err(|e| Error::write(path, e))
    })
}
