//! PNG plots (plotters, bitmap backend) for `infl demo`, `infl eval` and `infl topk
//! --plot`: line charts (ROC curves, found-vs-inspected curves), bar charts, scatter plots,
//! and the one home of image drawing: [`Tile`]s (small grey or RGB images with captions) in
//! grids and explanation rows (a test image, its proponents and opponents).
//!
//! Text needs a TrueType font: DejaVu Sans (Debian's `fonts-dejavu-core`) or the file named
//! by `INFL_FONT`. Without one, [`init_font`] fails and the caller skips the plots (or, for
//! `--plot`, refuses before any work). A PNG is drawn to a temporary file in the
//! destination folder and renamed into place ([`Publish::Atomically`]), or straight into a
//! folder that the caller publishes whole ([`Publish::IntoStagedFolder`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use infl::io::{Inputs, Publication};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Where a sans-serif TTF is looked for (after `$INFL_FONT`).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font as plotters' "sans-serif" (once per process); returns its path.
pub fn init_font() -> Result<PathBuf, String> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = std::env::var_os("INFL_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from))
            .collect();
        for p in &candidates {
            if let Ok(bytes) = std::fs::read(p) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(p.clone());
                }
            }
        }
        Err(format!(
            "no TrueType font found (looked at $INFL_FONT and {}); install fonts-dejavu-core \
             or set INFL_FONT",
            FONT_CANDIDATES.join(", ")
        ))
    })
    .clone()
}

/// How a figure reaches its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Drawn into a temporary PNG beside the path, then renamed to it (a [`Publication`] of
    /// one file: its rules, and no temporary file left on interrupt).
    Atomically,
    /// Drawn straight at the path, inside a folder staged by the caller's publication
    /// ([`infl::io::StagedFolder`]), which publishes the folder whole.
    IntoStagedFolder,
}

/// A PNG of `size` drawn by `draw`, white first.
fn png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> std::io::Result<()> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(std::io::Error::other)?;
    draw(root.clone()).map_err(std::io::Error::other)?;
    root.present().map_err(std::io::Error::other)
}

/// [`png`] published at `path` as `publish` says.
fn publish_png(
    path: &Path,
    publish: Publish,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    let drawn = match publish {
        Publish::IntoStagedFolder => png(path, size, draw).map_err(anyhow::Error::from),
        Publish::Atomically => (|| {
            let mut publication = Publication::plan(&Inputs::none(), [path])?;
            publication.stage_path(path, |tmp| png(tmp, size, draw))?;
            Ok(publication.publish()?)
        })(),
    };
    drawn.with_context(|| format!("drawing {}", path.display()))
}

/// [`publish_png`], atomically (every figure but `--plot`'s).
fn atomic_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    publish_png(path, Publish::Atomically, size, draw)
}

/// One curve of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: RGBColor,
}

/// Colours of a chart's series, in order (tab10's blue, red and green first, then the
/// rest of tab10 but [`IDEAL`]'s purple); more series than colours reuse them.
pub const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// The colour of the `i`-th series of a chart.
pub fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The colour of a reference curve (e.g. the ideal detector), distinct from [`PALETTE`].
pub const IDEAL: RGBColor = RGBColor(148, 103, 189);

/// Whether a line chart shows the chance line `y = x / x_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanceLine {
    /// Dashed grey, labelled "chance" (ROC curves).
    Drawn,
    /// None.
    Omitted,
}

/// The frame of a line chart on `[0, x_max] × [0, 1]`.
#[derive(Clone, Copy, Debug)]
pub struct LineChart<'a> {
    /// Caption above the chart.
    pub title: &'a str,
    /// Description of the x axis.
    pub x_desc: &'a str,
    /// Description of the y axis.
    pub y_desc: &'a str,
    /// Right end of the x axis.
    pub x_max: f64,
    /// Whether the chance line is drawn.
    pub chance: ChanceLine,
}

/// A line chart framed by `frame`, with a legend.
pub fn line_chart(path: &Path, frame: &LineChart<'_>, series: &[Series]) -> Result<()> {
    atomic_png(path, (720, 540), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(frame.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..frame.x_max, 0.0..1.0f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(frame.x_desc)
            .y_desc(frame.y_desc)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        draw_curves(&mut chart, frame, series)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// A line chart's drawing context.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The chance line (when drawn) and the series, each with its legend entry.
fn draw_curves(chart: &mut Chart<'_, '_>, frame: &LineChart<'_>, series: &[Series]) -> Result<()> {
    if frame.chance == ChanceLine::Drawn {
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (frame.x_max, 1.0)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label("chance")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    }
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    Ok(())
}

/// A small image with a caption (two lines at most) and a frame colour.
#[derive(Clone, Debug)]
pub struct Tile {
    /// Pixels as drawn: RGB, row-major, `width × height × 3`.
    pub rgb: Vec<u8>,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Caption lines under the image.
    pub caption: Vec<String>,
    /// Frame colour (e.g. red for a truly mislabelled example).
    pub frame: Option<RGBColor>,
}

/// The largest side of a tile as drawn, in image pixels: larger images are subsampled.
const MAX_SIDE: usize = 128;
/// Tiles are enlarged (by a whole factor) to about this many screen pixels.
const TARGET_SIDE: usize = 96;
const CAPTION_H: i32 = 34;
const PAD: i32 = 10;

impl Tile {
    /// MNIST-style ink: grey values 0 (background) .. 255 (ink), drawn dark on white.
    pub fn ink(pixels: &[u8], width: usize, height: usize, caption: Vec<String>) -> Self {
        let rgb = pixels.iter().flat_map(|&v| [255 - v; 3]).collect();
        Self {
            rgb,
            width,
            height,
            caption,
            frame: None,
        }
    }

    /// An image as stored (`[height, width, channels]` bytes, 0 black .. 255 white; grey
    /// with 1 channel, RGB with 3), subsampled to at most [`MAX_SIDE`] pixels a side.
    pub fn picture(
        pixels: &[u8],
        (height, width, channels): (usize, usize, usize),
        caption: Vec<String>,
    ) -> Self {
        let step = height.max(width).div_ceil(MAX_SIDE).max(1);
        let (h, w) = (height.div_ceil(step), width.div_ceil(step));
        let mut rgb = Vec::with_capacity(h * w * 3);
        for y in (0..height).step_by(step) {
            for x in (0..width).step_by(step) {
                let at = (y * width + x) * channels;
                match channels {
                    3 => rgb.extend_from_slice(&pixels[at..at + 3]),
                    _ => rgb.extend([pixels[at]; 3]),
                }
            }
        }
        Self {
            rgb,
            width: w,
            height: h,
            caption,
            frame: None,
        }
    }

    /// Screen pixels per image pixel.
    fn scale(&self) -> i32 {
        (TARGET_SIDE / self.width.max(self.height).max(1)).max(1) as i32
    }
}

/// The title and one-line legend at the top of an image grid.
fn draw_heading(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    legend: &str,
) -> Result<()> {
    for (text, y, size) in [(title, 8, 20), (legend, 32, 13)] {
        root.draw(&Text::new(
            text.to_string(),
            (PAD, y),
            ("sans-serif", size).into_font(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

fn draw_tile(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    t: &Tile,
    x0: i32,
    y0: i32,
) -> Result<()> {
    let (w, h, s) = (t.width as i32, t.height as i32, t.scale());
    for (i, px) in t.rgb.chunks_exact(3).enumerate() {
        if px == [255, 255, 255] {
            continue; // the background is white already
        }
        let (x, y) = (i as i32 % w, i as i32 / w);
        root.draw(&Rectangle::new(
            [
                (x0 + x * s, y0 + y * s),
                (x0 + (x + 1) * s, y0 + (y + 1) * s),
            ],
            RGBColor(px[0], px[1], px[2]).filled(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    let frame = t.frame.unwrap_or(RGBColor(200, 200, 200));
    root.draw(&Rectangle::new(
        [(x0 - 2, y0 - 2), (x0 + w * s + 1, y0 + h * s + 1)],
        frame.stroke_width(if t.frame.is_some() { 3 } else { 1 }),
    ))
    .map_err(|e| anyhow!("{e}"))?;
    for (i, line) in t.caption.iter().take(2).enumerate() {
        root.draw(&Text::new(
            line.clone(),
            (x0 - 2, y0 + h * s + 4 + 15 * i as i32),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// Size of a tile cell (image, caption and padding), in pixels.
fn cell(t: &Tile) -> (i32, i32) {
    let s = t.scale();
    let w = (t.width as i32 * s).max(96) + PAD;
    (w, t.height as i32 * s + CAPTION_H + PAD)
}

/// A grid of tiles, `columns` wide, under a title (and an optional legend line).
pub fn image_grid(
    path: &Path,
    title: &str,
    legend: &str,
    tiles: &[Tile],
    columns: usize,
) -> Result<()> {
    let Some(first) = tiles.first() else {
        return Ok(());
    };
    let (cw, ch) = cell(first);
    let cols = columns.max(1).min(tiles.len()) as i32;
    let rows = tiles.len().div_ceil(columns.max(1)) as i32;
    let header = 56;
    let size = (
        (cols * cw + 2 * PAD).max(480) as u32,
        (rows * ch + header + PAD) as u32,
    );
    atomic_png(path, size, |root| {
        draw_heading(&root, title, legend)?;
        for (i, t) in tiles.iter().enumerate() {
            let (r, c) = (i as i32 / cols, i as i32 % cols);
            draw_tile(&root, t, PAD + 2 + c * cw, header + r * ch)?;
        }
        Ok(())
    })
}

/// One row of the explanations figure: a test image, its proponents and its opponents.
#[derive(Clone, Debug)]
pub struct ExplainRow {
    /// The test image.
    pub test: Tile,
    /// Its strongest proponents, strongest first.
    pub proponents: Vec<Tile>,
    /// Its strongest opponents, most negative first.
    pub opponents: Vec<Tile>,
}

/// The heading of an explanation figure.
#[derive(Clone, Copy, Debug)]
pub struct Heading<'a> {
    /// The title line.
    pub title: &'a str,
    /// The legend line under it.
    pub legend: &'a str,
}

/// Test images (left), their proponents (middle) and opponents (right), one row each (the
/// rows' tiles the size of the first test image's).
pub fn explanations(
    path: &Path,
    publish: Publish,
    heading: Heading<'_>,
    rows: &[ExplainRow],
) -> Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let (cw, ch) = cell(&first.test);
    let k = rows
        .iter()
        .map(|r| r.proponents.len().max(r.opponents.len()))
        .max()
        .unwrap_or(0) as i32;
    let gap = 28;
    let header = 80;
    let width = PAD + cw + gap + 2 * k * cw + gap + PAD;
    let size = (
        width.max(480) as u32,
        (header + rows.len() as i32 * ch + PAD) as u32,
    );
    publish_png(path, publish, size, |root| {
        draw_heading(&root, heading.title, heading.legend)?;
        let xp = PAD + cw + gap;
        let xo = xp + k * cw + gap;
        for (x, label) in [
            (PAD, "test image"),
            (xp, "proponents (helped most)"),
            (xo, "opponents (hurt most)"),
        ] {
            root.draw(&Text::new(
                label.to_string(),
                (x, 56),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        }
        for (r, row) in rows.iter().enumerate() {
            let y = header + r as i32 * ch;
            draw_tile(&root, &row.test, PAD + 2, y)?;
            for (j, t) in row.proponents.iter().enumerate() {
                draw_tile(&root, t, xp + 2 + j as i32 * cw, y)?;
            }
            for (j, t) in row.opponents.iter().enumerate() {
                draw_tile(&root, t, xo + 2 + j as i32 * cw, y)?;
            }
        }
        Ok(())
    })
}

/// One bar of a [`bar_chart`]: a value with an interval.
#[derive(Clone, Debug)]
pub struct IntervalBar {
    /// Label under the bar.
    pub label: String,
    /// Height.
    pub value: f64,
    /// Interval drawn as a whisker.
    pub low: f64,
    /// Upper end of the whisker.
    pub high: f64,
}

/// Vertical bars with interval whiskers on `[y_min, 1]` (correlations).
pub fn bar_chart(path: &Path, title: &str, y_desc: &str, bars: &[IntervalBar]) -> Result<()> {
    let y_min = bars
        .iter()
        .map(|b| b.low.min(b.value))
        .fold(0.0f64, f64::min)
        .max(-1.0)
        - 0.05;
    let n = bars.len().max(1);
    atomic_png(path, (160 + 90 * n as u32, 540), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(10)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..n as f64, y_min..1.05f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, b) in bars.iter().enumerate() {
            let x = i as f64;
            let color = series_color(i);
            chart
                .draw_series([Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, b.value)],
                    color.filled(),
                )])
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series([PathElement::new(
                    [(x + 0.5, b.low), (x + 0.5, b.high)],
                    BLACK.stroke_width(2),
                )])
                .map_err(|e| anyhow!("{e}"))?;
            // The label above the bar and its whisker, with the value.
            let top = b.high.max(b.value).max(0.0) + 0.02;
            chart
                .draw_series([Text::new(
                    format!("{} {:.3}", b.label, b.value),
                    (x + 0.08, top + 0.03),
                    ("sans-serif", 12),
                )])
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
}

/// A scatter plot of `series` (points only) with a legend, axes fitted to the points.
pub fn scatter(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let range = |f: fn((f64, f64)) -> f64| {
        let (lo, hi) = points()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
        let pad = ((hi - lo).abs() * 0.05).max(1e-12);
        if lo.is_finite() {
            (lo - pad)..(hi + pad)
        } else {
            -1.0..1.0
        }
    };
    let (xr, yr) = (range(|p| p.0), range(|p| p.1));
    atomic_png(path, (720, 540), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(xr, yr)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.1e}"))
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?
                .label(&s.label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}
