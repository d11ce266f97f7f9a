//! Step 4, evaluate: each method as a detector of the mislabelled examples, judged by
//! [`infl::eval::evaluate`] — forgetting events with InterpretDL's noisy-label (TIDY) rule,
//! then every estimator's self-influence (flagging its top `round(noise · N)`) — with the
//! forgetting statistics, the top suspects and the explanations of the test images;
//! prints the table.

use std::collections::BTreeMap;

use infl::eval::{self, Detection, INSPECT, MethodResult, inspect_key};
use infl::forgetting::{ForgettingRecorder, NoisyLabels};
use infl::{Ranked, metrics};
use serde::Serialize;

use super::attribute::{Attribution, Explained, SelfInfluence};
use super::load::Loaded;
use super::train::{History, Trained};

/// Suspects listed per method in `results.json`.
const SUSPECTS_LISTED: usize = 50;

/// The name column of the table is at least this wide.
const NAME_WIDTH: usize = 30;

/// A method seen as a detector of mislabelled examples.
pub struct Detector {
    /// The method, as shown in tables.
    pub name: String,
    /// One score per training example (higher = more suspicious).
    pub scores: Vec<f64>,
    /// The examples it flags.
    pub flagged: Vec<usize>,
    /// How they were chosen.
    pub rule: String,
    /// Training examples by decreasing score.
    pub ranking: Vec<usize>,
}

impl Detector {
    fn detection(&self) -> Detection<'_> {
        Detection {
            name: &self.name,
            scores: &self.scores,
            flagged: &self.flagged,
            rule: &self.rule,
        }
    }
}

/// A detector and how well it did.
pub struct Judged {
    /// The detector.
    pub detector: Detector,
    /// Its metrics.
    pub result: MethodResult,
}

/// Forgetting events per example, as `results.json` summarises them.
#[derive(Serialize, Debug)]
pub struct ForgettingSummary {
    /// Number of examples per count of forgetting events (−1: never learned).
    examples_per_count: BTreeMap<i64, usize>,
    /// Mislabelled examples per count of forgetting events.
    mislabelled_per_count: BTreeMap<i64, usize>,
    tidy_threshold: Option<f64>,
    never_correct: usize,
}

/// One of a method's top suspects.
#[derive(Serialize, Debug)]
pub struct SuspectRecord {
    rank: usize,
    index: usize,
    score: Option<f64>,
    given_label: i64,
    predicted: usize,
    original_label: i64,
    mislabelled: bool,
}

/// A proponent or opponent of a test image.
#[derive(Serialize, Debug)]
pub struct Influencer {
    pub index: usize,
    pub score: f32,
    pub given_label: i64,
    pub mislabelled: bool,
}

/// A test image with its strongest proponents and opponents.
#[derive(Serialize, Debug)]
pub struct Explanation {
    pub test_index: usize,
    pub label: i64,
    pub predicted: usize,
    pub proponents: Vec<Influencer>,
    pub opponents: Vec<Influencer>,
}

/// Every method judged, with what `results.json` and the plots show besides.
pub struct Evaluation {
    /// Forgetting events with the TIDY rule.
    pub forgetting_events: Judged,
    /// The default estimator's self-influence.
    pub default: Judged,
    /// The other estimators' self-influence, in registry order.
    pub others: Vec<Judged>,
    /// The simple baselines: loss, margin, AUM.
    pub baselines: Vec<Judged>,
    /// Forgetting statistics.
    pub forgetting: ForgettingSummary,
    /// Top suspects of forgetting events (`forgetting`) and of the default estimator
    /// (`self_influence`).
    pub top_suspects: BTreeMap<String, Vec<SuspectRecord>>,
    /// The default estimator's explanations of the test images in the run.
    pub explanations: Vec<Explanation>,
}

impl Evaluation {
    /// Every method, in table order.
    pub fn methods(&self) -> impl Iterator<Item = &Judged> {
        [&self.forgetting_events, &self.default]
            .into_iter()
            .chain(&self.others)
            .chain(&self.baselines)
    }
}

/// Judges every method against the injected noise and prints the table.
pub fn evaluate(loaded: &Loaded, trained: &Trained, attribution: &Attribution) -> Evaluation {
    let truth = &loaded.noisy.mislabelled;
    let judge = |detector: Detector| Judged {
        result: eval::evaluate(&detector.detection(), truth),
        detector,
    };
    let tidy = trained.recorder.noisy_labels();
    let forgetting_events = judge(forgetting_detector(&tidy, loaded.n_train()));
    let flag = loaded.noisy.count(); // round(noise · N)
    let default = judge(self_influence_detector(&attribution.default, flag));
    let others = (attribution.others.iter())
        .map(|s| judge(self_influence_detector(s, flag)))
        .collect();
    let baselines = baseline_detectors(&trained.history, flag)
        .into_iter()
        .map(judge)
        .collect();
    let suspects = |d: &Detector| top_suspects(d, loaded, &attribution.default.predicted);
    let evaluation = Evaluation {
        forgetting: forgetting_summary(&trained.recorder, &tidy, trained.epochs.len(), truth),
        top_suspects: BTreeMap::from([
            ("self_influence".to_string(), suspects(&default.detector)),
            (
                "forgetting".to_string(),
                suspects(&forgetting_events.detector),
            ),
        ]),
        explanations: attribution
            .explained
            .as_ref()
            .map_or_else(Vec::new, |e| explanations(e, loaded)),
        forgetting_events,
        default,
        others,
        baselines,
    };
    print_table(&evaluation, loaded.noisy.count());
    evaluation
}

/// Forgetting events scored by the TIDY score (mean presentation index at which an
/// example was classified correctly); examples never classified correctly, which the rule
/// skips, rank above all others.
fn forgetting_detector(tidy: &NoisyLabels, n: usize) -> Detector {
    let mut scores = vec![f64::INFINITY; n];
    for &(id, s) in &tidy.scores {
        scores[id] = s;
    }
    Detector {
        name: "forgetting events (TIDY)".to_string(),
        ranking: metrics::ranking(&scores),
        scores,
        flagged: tidy.flagged.clone(),
        rule: "InterpretDL noisy-label rule: mean correct presentation > mean + 5 std".to_string(),
    }
}

/// The simple detectors that a method must beat: per-example loss and margin at the last
/// checkpoint and averaged over checkpoints; the margin averaged over checkpoints is the
/// area under the margin (AUM, Pleiss et al. 2020) sampled once per epoch (at the
/// checkpoint, not at each minibatch presentation). Low margin = suspicious. Each flags
/// its top `flag`.
fn baseline_detectors(history: &History, flag: usize) -> Vec<Detector> {
    let mean = |rows: &[Vec<f64>]| -> Vec<f64> {
        let n = rows.first().map_or(0, Vec::len);
        (0..n)
            .map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let last = |rows: &[Vec<f64>]| rows.last().cloned().unwrap_or_default();
    let negate = |v: Vec<f64>| v.into_iter().map(|x| -x).collect::<Vec<f64>>();
    [
        ("loss (last checkpoint)", last(&history.loss)),
        ("loss (mean over checkpoints)", mean(&history.loss)),
        ("margin (last checkpoint)", negate(last(&history.margin))),
        (
            "AUM (margin, mean over checkpoints)",
            negate(mean(&history.margin)),
        ),
    ]
    .into_iter()
    .map(|(name, scores)| {
        let ranking = metrics::ranking(&scores);
        Detector {
            name: name.to_string(),
            flagged: ranking[..flag.min(ranking.len())].to_vec(),
            rule: "top round(noise rate x N) by the score".to_string(),
            scores,
            ranking,
        }
    })
    .collect()
}

/// Self-influence flagging its top `flag` examples.
fn self_influence_detector(s: &SelfInfluence, flag: usize) -> Detector {
    let ranking = metrics::ranking(&s.scores);
    Detector {
        name: format!("{} self-influence", s.registration.label),
        scores: s.scores.clone(),
        flagged: ranking[..flag.min(ranking.len())].to_vec(),
        rule: "top round(noise rate x N) by self-influence".to_string(),
        ranking,
    }
}

fn forgetting_summary(
    recorder: &ForgettingRecorder,
    tidy: &NoisyLabels,
    epochs: usize,
    mislabelled: &[bool],
) -> ForgettingSummary {
    let stats = recorder.forgetting(epochs);
    let mut mislabelled_per_count = BTreeMap::new();
    for e in &stats.examples {
        if mislabelled[e.id] {
            *mislabelled_per_count.entry(e.count).or_insert(0) += 1;
        }
    }
    ForgettingSummary {
        examples_per_count: (stats.count_forgotten.iter())
            .map(|(c, v)| (*c, v.len()))
            .collect(),
        mislabelled_per_count,
        tidy_threshold: tidy.threshold,
        never_correct: mislabelled.len() - tidy.scores.len(),
    }
}

/// The detector's first [`SUSPECTS_LISTED`] suspects.
fn top_suspects(d: &Detector, loaded: &Loaded, predicted: &[usize]) -> Vec<SuspectRecord> {
    (d.ranking.iter().take(SUSPECTS_LISTED).enumerate())
        .map(|(r, &i)| SuspectRecord {
            rank: r + 1,
            index: i,
            score: d.scores[i].is_finite().then_some(d.scores[i]),
            given_label: loaded.noisy.labels[i],
            predicted: predicted[i],
            original_label: loaded.clean[i],
            mislabelled: loaded.noisy.mislabelled[i],
        })
        .collect()
}

fn explanations(explained: &Explained, loaded: &Loaded) -> Vec<Explanation> {
    let influencer = |r: &Ranked| Influencer {
        index: r.index,
        score: r.score,
        given_label: loaded.noisy.labels[r.index],
        mislabelled: loaded.noisy.mislabelled[r.index],
    };
    let rows = &explained.rows;
    (rows.proponents.iter().zip(&rows.opponents).enumerate())
        .map(|(q, (proponents, opponents))| Explanation {
            test_index: q,
            label: loaded.test_labels[q],
            predicted: explained.test_predicted.get(q).copied().unwrap_or(0),
            proponents: proponents.iter().map(influencer).collect(),
            opponents: opponents.iter().map(influencer).collect(),
        })
        .collect()
}

/// `"n/a"` or the value with three decimals.
pub fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

fn print_table(evaluation: &Evaluation, n_noisy: usize) {
    let w = (evaluation.methods())
        .map(|m| m.result.name.len())
        .fold(NAME_WIDTH, usize::max);
    let inspect: Vec<String> = INSPECT.iter().map(|&f| inspect_key(f)).collect();
    println!();
    println!(
        "{:<w$} {:>7} {:>8} {:>9} {:>7} {:>6}   found after inspecting",
        "method", "ROC AUC", "flagged", "precision", "recall", "F1"
    );
    let heads: Vec<String> = inspect.iter().map(|k| format!("{k:>6}")).collect();
    println!(
        "{:<w$} {:>7} {:>8} {:>9} {:>7} {:>6}   {}",
        "",
        "",
        "",
        "",
        "",
        "",
        heads.join(" ")
    );
    for m in evaluation.methods().map(|j| &j.result) {
        let f = &m.flagged;
        let found: Vec<String> = (inspect.iter())
            .map(|k| format!("{:>5.1}%", 100.0 * m.found_after_inspecting[k]))
            .collect();
        println!(
            "{:<w$} {:>7} {:>8} {:>9.3} {:>7.3} {:>6.3}   {}",
            m.name,
            fmt_opt(m.roc_auc),
            f.count,
            f.precision,
            f.recall,
            f.f1,
            found.join(" ")
        );
    }
    println!("({n_noisy} mislabelled training examples)");
    if n_noisy > 0 && evaluation.forgetting_events.result.flagged.count == 0 {
        println!(
            "note: the TIDY rule flagged nothing: its threshold (mean + 5 std of the scores) is \
             made for low noise rates (about 1%) and long training; its ranking (ROC AUC, found \
             after inspecting) is still meaningful"
        );
    }
    println!();
}
