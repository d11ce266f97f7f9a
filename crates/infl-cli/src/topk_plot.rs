//! `infl topk --plot DIR`: one PNG per test example — the test image, its strongest
//! proponents (helpful) and opponents (harmful) training images, each captioned with its
//! id, label and score, as the InfluenceCalculations tool draws them — for any `--method`.
//!
//! The images come from the optional `images` tensor ([`infl::io::Images`]: `[N, H, W]` or
//! `[N, H, W, C]`, C = 1 or 3; U8 0..255 or float in [0, 1]) of the **last checkpoint's**
//! training and test files (feature files, or factor files with `--factors`; `infl demo`
//! writes MNIST's there). They are read and checked before any scoring: a missing tensor,
//! a count that is not the file's examples, or test images of another size than the
//! training ones are refused naming the file. The PNGs (`test-R.png`, `R` the test row,
//! zero-padded) are drawn into a folder staged beside DIR and published whole with the
//! other outputs, replacing a DIR that holds only such PNGs; anything else in DIR is
//! refused before the work starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use infl::io::{FolderContent, Images, Publication};
use infl::{Attributed, Progress, Ranked, Run, SplitInfo, TopKRows};

use crate::cli::Source;
use crate::plots::{self, ExplainRow, Heading, Publish, Tile};

/// Training images per list in a figure unless `--plot-top` says otherwise.
const DEFAULT_TOP: usize = 5;

/// The files of a plot folder (what a later `--plot` into the same folder may replace).
pub const FILES: FolderContent = FolderContent {
    describe: "test-*.png",
    accepts: |name| name.starts_with("test-") && name.ends_with(".png"),
};

/// `--plot` and `--plot-top` of `infl topk`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Also draw one PNG per test example into this folder (test-R.png: the test image,
    /// its top proponents and opponents with ids, labels and scores), from the `images`
    /// tensor of the last checkpoint's files ([N, H, W] or [N, H, W, C], C = 1 or 3; U8
    /// 0..255 or float in [0, 1]). The folder is written whole; an existing one may hold
    /// only test-*.png files (it is replaced).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Proponents and opponents shown per test example (default 5, at most -k).
    #[arg(long, requires = "plot", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub plot_top: Option<u32>,
}

impl PlotArgs {
    /// Refuses `--plot` on a shard (its lists are partial) and without a font, before any
    /// work.
    pub fn check(&self, shard: Option<infl::Shard>) -> Result<()> {
        if self.plot.is_none() {
            return Ok(());
        }
        ensure!(
            shard.is_none(),
            "--plot: a shard's lists are partial; plot the merged lists of an unsharded run"
        );
        plots::init_font()
            .map_err(|e| anyhow::anyhow!(e))
            .context("--plot needs a font for the captions")?;
        Ok(())
    }

    /// Images shown per list: `--plot-top` (default 5), at most `k`.
    pub fn top(&self, k: usize) -> usize {
        self.plot_top.map_or(DEFAULT_TOP, |t| t as usize).min(k)
    }
}

/// The training and test images of a run, checked against it.
pub struct RunImages {
    train: Images,
    test: Images,
}

impl RunImages {
    /// The `images` of the last checkpoint's training and test files of `source`, one per
    /// example of `run`, the test images of the training images' size.
    pub fn read(source: &Source, run: &Run) -> Result<Self> {
        let (train, test) = last_files(source)?;
        let train = read(&train, run.n_train())?;
        let test = read(&test, run.n_test())?;
        let size = |i: &Images| [i.height, i.width, i.channels];
        if size(&train) != size(&test) {
            bail!(
                "{}: tensor `images`: expected test images of the training images' size [H, W, \
                 C] = {:?} ({}), found {:?}",
                test.path().display(),
                size(&train),
                train.path().display(),
                size(&test)
            );
        }
        Ok(Self { train, test })
    }
}

/// The last checkpoint's training and test files.
fn last_files(source: &Source) -> Result<(PathBuf, PathBuf)> {
    let last = match source {
        Source::Features { layout, .. } => layout
            .entries
            .last()
            .map(|e| (e.train.clone(), e.test.clone())),
        Source::Factors(run) => run
            .entries
            .last()
            .map(|e| (e.train.clone(), e.test.clone())),
    };
    match last {
        Some((train, Some(test))) => Ok((train, test)),
        _ => bail!("--plot: the run has no test files to plot"),
    }
}

/// The checked `images` of `path`, `n` of them.
fn read(path: &Path, n: usize) -> Result<Images> {
    let Some(images) = Images::open(path)? else {
        bail!(
            "{}: no tensor `images`: --plot draws the examples from the `images` tensor of the \
             last checkpoint's files ([N, H, W] or [N, H, W, C] with C = 1 or 3; U8 0..255 or \
             float in [0, 1]); add it beside the features, or drop --plot",
            path.display()
        );
    };
    if images.count != n {
        bail!(
            "{}: tensor `images`: expected {n} images (one per example of the file), found \
             shape {:?}",
            path.display(),
            images.shape()
        );
    }
    Ok(images)
}

/// What a figure shows: the lists and who the examples are.
pub struct Figures<'a> {
    /// The estimator's name for people.
    pub label: &'a str,
    /// The top-k lists and the examples' ids, labels and predictions.
    pub top: &'a Attributed<TopKRows>,
    /// Images per list.
    pub shown: usize,
}

/// Draws one PNG per test example into a staged folder for `dir` and stages it in
/// `publication` (published with the other outputs). Returns the number drawn.
pub fn stage(
    publication: &mut Publication,
    dir: &Path,
    images: &RunImages,
    figures: &Figures<'_>,
    progress: &dyn Progress,
) -> Result<usize> {
    let prepared = &figures.top.prepared;
    let Some(test) = &prepared.test else {
        bail!("--plot: the run has no test examples to plot");
    };
    let n = test.ids.len();
    let width = (n.max(2) - 1).to_string().len();
    let staged = publication.stage_folder(dir)?;
    progress.start("plots", n as u64);
    for row in 0..n {
        let path = staged.path().join(format!("test-{row:0width$}.png"));
        figures.draw(&path, row, images, test, &prepared.train)?;
        progress.advance(1);
    }
    progress.finish();
    publication.finish_folder(staged)?;
    Ok(n)
}

impl Figures<'_> {
    /// Test example `row`'s figure at `path`.
    fn draw(
        &self,
        path: &Path,
        row: usize,
        images: &RunImages,
        test: &SplitInfo,
        train: &SplitInfo,
    ) -> Result<()> {
        let id = test.ids[row];
        let label = describe_label(test, row);
        let caption = vec![format!("id {id}"), label.clone()];
        let tiles = |list: &[Ranked]| -> Result<Vec<Tile>> {
            (list.iter().take(self.shown))
                .map(|r| {
                    let label = (train.labels.as_ref()).and_then(|l| l.get(r.index));
                    let caption = vec![
                        match label {
                            Some(l) => format!("id {} label {l}", train.ids[r.index]),
                            None => format!("id {}", train.ids[r.index]),
                        },
                        format_score(r.score),
                    ];
                    tile(&images.train, r.index, caption)
                })
                .collect()
        };
        let explain = ExplainRow {
            test: tile(&images.test, row, caption)?,
            proponents: tiles(&self.top.values.proponents[row])?,
            opponents: tiles(&self.top.values.opponents[row])?,
        };
        let title = format!("{}: test example {row} (id {id}, {label})", self.label);
        let legend = "caption: training id, label, score (positive: helped this prediction; \
                      negative: hurt it)";
        let heading = Heading {
            title: &title,
            legend,
        };
        plots::explanations(path, Publish::IntoStagedFolder, heading, &[explain])
    }
}

/// Image `i` of `images` as a tile.
fn tile(images: &Images, i: usize, caption: Vec<String>) -> Result<Tile> {
    let pixels = images
        .image(i)
        .with_context(|| format!("{}: tensor `images`: no image {i}", images.path().display()))?;
    let size = (images.height, images.width, images.channels);
    Ok(Tile::picture(&pixels, size, caption))
}

/// `label L` (and `pred P` where the estimator predicts), or `no label`.
fn describe_label(split: &SplitInfo, i: usize) -> String {
    let label = split.labels.as_ref().and_then(|l| l.get(i));
    let predicted = split.predicted.get(i);
    match (label, predicted) {
        (Some(l), Some(p)) => format!("label {l} pred {p}"),
        (Some(l), None) => format!("label {l}"),
        (None, Some(p)) => format!("pred {p}"),
        (None, None) => "no label".to_string(),
    }
}

/// A score in a few characters: fixed point in [1e-3, 1e4), else scientific.
fn format_score(s: f32) -> String {
    let a = s.abs();
    if a == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{s:+.4}")
    } else {
        format!("{s:+.2e}")
    }
}
