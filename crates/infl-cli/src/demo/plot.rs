//! Step 5, plot: the PNG figures of the evaluation (`roc.png`, `found.png`,
//! `suspects-self-influence.png`, `suspects-forgetting.png`, `explanations.png`), unless
//! `--no-plots` or no font is found.

use std::path::Path;

use anyhow::Result;
use infl::Progress;
use infl::io::mnist::MnistSplit;
use infl::metrics;
use plotters::style::RGBColor;

use super::DemoArgs;
use super::attribute::Attribution;
use super::evaluate::{Evaluation, Explanation, Influencer, fmt_opt};
use super::load::Loaded;
use crate::plots::{
    self, ChanceLine, ExplainRow, Heading, IDEAL, LineChart, Publish, Series, Tile,
};
use crate::progress::Bar;

const TEMPLATE: &str = "  plots [{bar:30}] {pos}/{len} {msg}";

/// Figures drawn at most (the progress bar's length).
const FIGURES: u64 = 5;

/// The frame of an example whose label the demo corrupted.
const RED: RGBColor = RGBColor(220, 30, 30);

/// Suspects shown per grid, and the grid's columns.
const SUSPECTS_SHOWN: usize = 32;
const SUSPECT_COLUMNS: usize = 8;

/// The figures drawn, or why none was.
pub struct Figures {
    /// File names (in the output folder), in drawing order.
    pub drawn: Vec<String>,
    /// Why the plots were skipped (`--no-plots`, or no font).
    pub skipped: Option<String>,
}

/// What the figures show.
struct Canvas<'a> {
    loaded: &'a Loaded,
    evaluation: &'a Evaluation,
    /// The model's prediction for each training example.
    predicted: &'a [usize],
    /// The default estimator's label (e.g. `TracInCPFast`).
    label: &'a str,
}

/// Draws every figure into `args.out` (skipped with `--no-plots` or without a font).
pub fn plot(
    args: &DemoArgs,
    loaded: &Loaded,
    attribution: &Attribution,
    evaluation: &Evaluation,
) -> Result<Figures> {
    if args.no_plots {
        return Ok(Figures::skipped("--no-plots".to_string()));
    }
    if let Err(e) = plots::init_font() {
        eprintln!("warning: plots skipped: {e}");
        return Ok(Figures::skipped(e));
    }
    let canvas = Canvas {
        loaded,
        evaluation,
        predicted: &attribution.default.predicted,
        label: attribution.default.registration.label,
    };
    Ok(Figures {
        drawn: canvas.draw_all(&args.out, args.noise)?,
        skipped: None,
    })
}

impl Figures {
    fn skipped(why: String) -> Self {
        Self {
            drawn: Vec::new(),
            skipped: Some(why),
        }
    }
}

impl Canvas<'_> {
    /// Draws every figure into `dir`; returns their file names.
    fn draw_all(&self, dir: &Path, noise: f64) -> Result<Vec<String>> {
        let bar = Bar::templated(TEMPLATE);
        bar.start("", FIGURES);
        let mut drawn = Vec::new();
        let mut draw = |name: &str, f: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
            bar.set_message(name.to_string());
            f(&dir.join(name))?;
            drawn.push(name.to_string());
            bar.advance(1);
            Ok(())
        };
        draw("roc.png", &|p| self.roc(p))?;
        draw("found.png", &|p| self.found(p, noise))?;
        let by_self_influence = format!("Top suspects by {} self-influence", self.label);
        let default = &self.evaluation.default.detector.ranking;
        draw("suspects-self-influence.png", &|p| {
            self.suspects(p, &by_self_influence, default)
        })?;
        let by_forgetting = "Top suspects by forgetting events (TIDY score)";
        let forgetting = &self.evaluation.forgetting_events.detector.ranking;
        draw("suspects-forgetting.png", &|p| {
            self.suspects(p, by_forgetting, forgetting)
        })?;
        if !self.evaluation.explanations.is_empty() {
            draw("explanations.png", &|p| self.explanations(p))?;
        }
        bar.finish();
        Ok(drawn)
    }

    fn truth(&self) -> &[bool] {
        &self.loaded.noisy.mislabelled
    }

    /// ROC curve of every method.
    fn roc(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = (self.evaluation.methods().enumerate())
            .map(|(i, m)| Series {
                label: format!("{} (AUC {})", m.result.name, fmt_opt(m.result.roc_auc)),
                points: metrics::roc_curve(&m.detector.scores, self.truth()),
                color: plots::series_color(i),
            })
            .collect();
        let title = format!(
            "Finding {} mislabelled of {} training images: ROC",
            self.loaded.noisy.count(),
            self.loaded.n_train()
        );
        let frame = LineChart {
            title: &title,
            x_desc: "false positive rate",
            y_desc: "true positive rate",
            x_max: 1.0,
            chance: ChanceLine::Drawn,
        };
        plots::line_chart(path, &frame, &series)
    }

    /// Share of the mislabelled examples found against the share of the data inspected,
    /// for every method and for an ideal one, up to `4 × noise` (within [0.2, 1]).
    fn found(&self, path: &Path, noise: f64) -> Result<()> {
        let max_f = (4.0 * noise).clamp(0.2, 1.0);
        let mut series: Vec<Series> = (self.evaluation.methods().enumerate())
            .map(|(i, m)| Series {
                label: m.result.name.clone(),
                points: metrics::found_curve(&m.detector.scores, self.truth(), max_f),
                color: plots::series_color(i),
            })
            .collect();
        let ideal = (self.loaded.noisy.count() as f64 / self.loaded.n_train() as f64).min(max_f);
        series.push(Series {
            label: "ideal".to_string(),
            points: vec![(0.0, 0.0), (ideal, 1.0), (max_f, 1.0)],
            color: IDEAL,
        });
        let frame = LineChart {
            title: "Mislabelled examples found vs. data inspected",
            x_desc: "fraction of training data inspected (ranked by score)",
            y_desc: "fraction of mislabelled examples found",
            x_max: max_f,
            chance: ChanceLine::Omitted,
        };
        plots::line_chart(path, &frame, &series)
    }

    /// The first [`SUSPECTS_SHOWN`] training images of `ranking`.
    fn suspects(&self, path: &Path, title: &str, ranking: &[usize]) -> Result<()> {
        let (l, predicted) = (self.loaded, self.predicted);
        let tiles: Vec<Tile> = (ranking.iter().take(SUSPECTS_SHOWN).enumerate())
            .map(|(r, &i)| {
                let caption = vec![
                    format!("#{} idx {i}", r + 1),
                    format!("{}->{} ({})", l.noisy.labels[i], predicted[i], l.clean[i]),
                ];
                let mut t = tile(&l.data.mnist.train, i, caption);
                t.frame = l.noisy.mislabelled[i].then_some(RED);
                t
            })
            .collect();
        let legend = "red frame: label really corrupted by the demo; caption: rank, index, given \
                      label -> model prediction (original label)";
        plots::image_grid(path, title, legend, &tiles, SUSPECT_COLUMNS)
    }

    /// Each explained test image with its proponents and opponents.
    fn explanations(&self, path: &Path) -> Result<()> {
        let rows: Vec<ExplainRow> = (self.evaluation.explanations.iter())
            .map(|e| self.explain_row(e))
            .collect();
        let estimator = self.label;
        let title =
            format!("{estimator}: training images that most helped / hurt each test prediction");
        let legend = format!(
            "caption: training index, given label, {estimator} score; red frame: label \
             corrupted by the demo"
        );
        let heading = Heading {
            title: &title,
            legend: &legend,
        };
        plots::explanations(path, Publish::Atomically, heading, &rows)
    }

    fn explain_row(&self, e: &Explanation) -> ExplainRow {
        let train = &self.loaded.data.mnist.train;
        let influencers = |v: &[Influencer]| -> Vec<Tile> {
            v.iter()
                .map(|r| {
                    let caption = vec![
                        format!("idx {} label {}", r.index, r.given_label),
                        format!("{:+.3}", r.score),
                    ];
                    let mut t = tile(train, r.index, caption);
                    t.frame = r.mislabelled.then_some(RED);
                    t
                })
                .collect()
        };
        let caption = vec![
            format!("test {}", e.test_index),
            format!("label {} pred {}", e.label, e.predicted),
        ];
        ExplainRow {
            test: tile(&self.loaded.data.mnist.test, e.test_index, caption),
            proponents: influencers(&e.proponents),
            opponents: influencers(&e.opponents),
        }
    }
}

fn tile(split: &MnistSplit, i: usize, caption: Vec<String>) -> Tile {
    Tile::ink(split.image(i), split.cols, split.rows, caption)
}
