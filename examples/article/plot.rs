//! Line charts written as PNG and SVG with `plotters`.
//!
//! Text is rendered with DejaVu Sans embedded from the `dejavu` crate
//! (plotters' `ab_glyph` feature), so no system fonts are needed.
//! Logarithmic axes are drawn by plotting log-transformed values on a linear
//! axis with explicit ticks, which keeps one code path for every chart.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::model::Error;

/// Axis scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Base-10 logarithmic.
    Log10,
    /// Base-2 logarithmic (batch sizes).
    Log2,
}

impl Scale {
    fn fwd(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
            Scale::Log2 => v.log2(),
        }
    }
}

/// One axis of a chart.
pub struct Axis {
    /// Axis title.
    pub label: String,
    /// Scaling.
    pub scale: Scale,
    /// Visible range, in data units.
    pub range: (f64, f64),
    /// Tick positions, in data units.
    pub ticks: Vec<f64>,
    /// Tick label format.
    pub fmt: fn(f64) -> String,
}

/// A plotted line (with markers and optional error bars).
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// Points in data units; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional `(low, high)` error bar for each point.
    pub err: Option<Vec<(f64, f64)>>,
    /// Index into the palette.
    pub color: usize,
    /// Draw point markers.
    pub markers: bool,
    /// Thin grey reference line instead of a data series.
    pub reference: bool,
    /// Dashed line.
    pub dashed: bool,
    /// Draw `err` as a shaded band instead of error bars.
    pub band: bool,
}

/// Crosses at given points (e.g. diverged runs), with one legend entry.
pub struct Crosses {
    /// Legend entry.
    pub label: String,
    /// Points in data units.
    pub points: Vec<(f64, f64)>,
}

/// A complete chart.
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Lines.
    pub series: Vec<Series>,
    /// Marked points.
    pub crosses: Option<Crosses>,
}

/// A colour-blind-friendly palette (Okabe–Ito: black, orange, sky blue,
/// bluish green, blue, vermillion, reddish purple, yellow; then grey).
const PALETTE: [RGBColor; 9] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
    RGBColor(128, 128, 128),
];

/// Colour of palette entry `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_fonts() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        let fonts = [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ];
        for (style, bytes) in fonts {
            if register_font("sans-serif", style, bytes).is_err() {
                result = Err("cannot load the embedded DejaVu Sans font".into());
            }
        }
    });
    result
}

const SIZE: (u32, u32) = (960, 600);

/// Writes `stem.png` and `stem.svg` into `dir`; returns the paths.
pub fn save(chart: &Chart, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, Error> {
    register_fonts()?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(chart, &root)?;
        root.present()?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(chart, &root)?;
        root.present()?;
    }
    Ok(vec![png, svg])
}

/// Width of the legend panel to the right of the plot, in pixels.
const LEGEND_W: u32 = 270;

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let area = root.titled(
        &chart.title,
        ("sans-serif", 23).into_font().style(FontStyle::Bold),
    )?;
    let (plot_area, legend_area) = area.split_horizontally(SIZE.0 - LEGEND_W);
    let (xs, ys) = (chart.x.scale, chart.y.scale);
    let xr = xs.fwd(chart.x.range.0)..xs.fwd(chart.x.range.1);
    let yr = ys.fwd(chart.y.range.0)..ys.fwd(chart.y.range.1);
    let xt: Vec<f64> = chart.x.ticks.iter().map(|&t| xs.fwd(t)).collect();
    let yt: Vec<f64> = chart.y.ticks.iter().map(|&t| ys.fwd(t)).collect();
    let mut cc = ChartBuilder::on(&plot_area)
        .margin(14)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(
            TickAxis {
                range: xr,
                ticks: xt,
            },
            TickAxis {
                range: yr,
                ticks: yt,
            },
        )?;
    let (xfmt, yfmt) = (chart.x.fmt, chart.y.fmt);
    let inv = |s: Scale, v: f64| match s {
        Scale::Linear => v,
        Scale::Log10 => 10f64.powf(v),
        Scale::Log2 => 2f64.powf(v),
    };
    cc.configure_mesh()
        .x_desc(chart.x.label.as_str())
        .y_desc(chart.y.label.as_str())
        .axis_desc_style(("sans-serif", 20))
        .label_style(("sans-serif", 16))
        .x_label_formatter(&|v| xfmt(inv(xs, *v)))
        .y_label_formatter(&|v| yfmt(inv(ys, *v)))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;

    let tf = |p: &(f64, f64)| (xs.fwd(p.0), ys.fwd(p.1));
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let style_of = |s: &Series| {
        let col = if s.reference {
            PALETTE[8]
        } else {
            color(s.color)
        };
        col.stroke_width(if s.reference { 2 } else { 3 })
    };
    for s in &chart.series {
        let style = style_of(s);
        let pts: Vec<(f64, f64)> = s.points.iter().map(tf).filter(finite).collect();
        if s.dashed {
            cc.draw_series(DashedLineSeries::new(pts.iter().copied(), 10, 6, style))?;
        } else {
            cc.draw_series(LineSeries::new(pts.iter().copied(), style))?;
        }
        if s.markers {
            cc.draw_series(pts.iter().map(|&p| Circle::new(p, 4, style.color.filled())))?;
        }
        if let (Some(err), true) = (&s.err, s.band) {
            let lo = s.points.iter().zip(err).map(|(p, e)| tf(&(p.0, e.0)));
            let hi = s.points.iter().zip(err).map(|(p, e)| tf(&(p.0, e.1)));
            let mut poly: Vec<(f64, f64)> = lo.filter(finite).collect();
            let mut top: Vec<(f64, f64)> = hi.filter(finite).collect();
            top.reverse();
            poly.extend(top);
            cc.draw_series(std::iter::once(Polygon::new(
                poly,
                style.color.mix(0.15).filled(),
            )))?;
        } else if let Some(err) = &s.err {
            for (p, &(lo, hi)) in s.points.iter().zip(err) {
                let (a, b) = (tf(&(p.0, lo)), tf(&(p.0, hi)));
                if finite(&a) && finite(&b) {
                    cc.draw_series(std::iter::once(PathElement::new(
                        vec![a, b],
                        style.color.stroke_width(2),
                    )))?;
                }
            }
        }
    }
    let red = RGBColor(200, 0, 0);
    if let Some(cr) = &chart.crosses {
        let pts: Vec<(f64, f64)> = cr.points.iter().map(tf).filter(finite).collect();
        cc.draw_series(pts.iter().map(|&p| Cross::new(p, 8, red.stroke_width(3))))?;
    }

    // The legend, in its own panel so that it never hides data.
    let font: TextStyle<'_> = ("sans-serif", 17).into();
    let mut y = 30;
    for s in &chart.series {
        let style = style_of(s);
        if s.dashed {
            legend_area.draw(&DashedPathElement::new(vec![(8, y), (48, y)], 10, 6, style))?;
        } else {
            legend_area.draw(&PathElement::new(vec![(8, y), (48, y)], style))?;
        }
        if s.markers {
            legend_area.draw(&Circle::new((28, y), 4, style.color.filled()))?;
        }
        y = legend_text(&legend_area, &s.label, y, &font)?;
    }
    if let Some(cr) = &chart.crosses {
        legend_area.draw(&Cross::new((28, y), 6, red.stroke_width(3)))?;
        legend_text(&legend_area, &cr.label, y, &font)?;
    }
    Ok(())
}

/// Writes a legend label (wrapped at the panel width) next to the sample at
/// height `y`; returns the height of the next entry.
fn legend_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    label: &str,
    mut y: i32,
    font: &TextStyle<'_>,
) -> Result<i32, Error>
where
    DB::ErrorType: 'static,
{
    let max_w = LEGEND_W.saturating_sub(64);
    let mut line = String::new();
    let mut lines = Vec::new();
    for word in label.split(' ') {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        let (w, _) = area.estimate_text_size(&candidate, font)?;
        if w > max_w && !line.is_empty() {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    lines.push(line);
    for l in lines {
        area.draw(&Text::new(l, (56, y - 9), font.clone()))?;
        y += 22;
    }
    Ok(y + 8)
}

/// A linear axis with explicit tick positions (plotters' `with_key_points`
/// on `f64` ranges loses the ability to format labels).
struct TickAxis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// Tick label: integer.
pub fn fmt_int(v: f64) -> String {
    format!("{}", v.round() as i64)
}

/// Tick label: percent with no decimals (input is a fraction).
pub fn fmt_pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// Tick label: compact number for log axes.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let e = v.abs().log10().round() as i32;
        if (v / 10f64.powi(e) - 1.0).abs() < 1e-6 {
            format!("1e{e}")
        } else {
            format!("{v:.0e}")
        }
    }
}

/// Powers of ten covering `lo..=hi`.
pub fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a..=b)
        .map(|e| 10f64.powi(e))
        .filter(|v| *v >= lo * 0.999 && *v <= hi * 1.001)
        .collect()
}

/// A grid of grayscale images (each `h × w`, values clipped to [0, 1]) with
/// one label per row, written as PNG and SVG.
pub fn save_images(
    rows: &[(String, Vec<ndarray::Array2<f32>>)],
    title: &str,
    dir: &Path,
    stem: &str,
) -> Result<Vec<PathBuf>, Error> {
    register_fonts()?;
    const PX: i32 = 9;
    const LABEL_W: i32 = 190;
    let cols = rows.iter().map(|r| r.1.len()).max().unwrap_or(0) as i32;
    let (h, w) = rows
        .first()
        .and_then(|r| r.1.first())
        .map_or((8, 8), |a| a.dim());
    let cell = (w as i32 * PX + 6, h as i32 * PX + 6);
    let size = (
        (LABEL_W + cols * cell.0 + 10) as u32,
        (44 + rows.len() as i32 * cell.1 + 10) as u32,
    );
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    fn draw_grid<DB: DrawingBackend>(
        root: &DrawingArea<DB, Shift>,
        rows: &[(String, Vec<ndarray::Array2<f32>>)],
        title: &str,
        cell: (i32, i32),
    ) -> Result<(), Error>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            ("sans-serif", 19).into_font().style(FontStyle::Bold),
        ))?;
        for (r, (label, imgs)) in rows.iter().enumerate() {
            let y0 = 44 + r as i32 * cell.1;
            root.draw(&Text::new(
                label.clone(),
                (10, y0 + cell.1 / 2 - 9),
                ("sans-serif", 16).into_font(),
            ))?;
            for (k, img) in imgs.iter().enumerate() {
                let x0 = LABEL_W + k as i32 * cell.0;
                for ((y, x), &v) in img.indexed_iter() {
                    let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8;
                    let (px, py) = (x0 + x as i32 * PX, y0 + y as i32 * PX);
                    root.draw(&Rectangle::new(
                        [(px, py), (px + PX, py + PX)],
                        RGBColor(g, g, g).filled(),
                    ))?;
                }
            }
        }
        Ok(())
    }
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_grid(&root, rows, title, cell)?;
        root.present()?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_grid(&root, rows, title, cell)?;
        root.present()?;
    }
    Ok(vec![png, svg])
}

/// Plot colour (palette index) and dash of a normalizer: the WS variants are
/// dashed, GN+WS in GN's colour.
pub fn kind_style(k: crate::model::NormKind) -> (usize, bool) {
    use crate::model::NormKind;
    match k {
        NormKind::None => (0, false),
        NormKind::Batch => (1, false),
        NormKind::Layer => (2, false),
        NormKind::Instance => (3, false),
        NormKind::Group => (4, false),
        NormKind::GroupWs => (4, true),
        NormKind::BatchChannelWs => (5, true),
    }
}

/// Percentage ticks at a round step inside `lo..=hi`.
pub fn pct_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo) * 100.0;
    let step = [1.0, 2.0, 5.0, 10.0, 20.0]
        .into_iter()
        .find(|s| span / s <= 10.0)
        .unwrap_or(25.0);
    let mut t = Vec::new();
    let mut v = (lo * 100.0 / step).ceil() * step;
    while v <= hi * 100.0 + 1e-9 {
        t.push(v / 100.0);
        v += step;
    }
    t
}
