//! Forgetting events (Toneva et al. 2019, "An empirical study of example forgetting during
//! deep neural network learning") and the noisy-label rule of InterpretDL's
//! `ForgettingEventsInterpreter`, whose conventions are kept exactly:
//!
//! - A [`ForgettingRecorder`] is fed, at every presentation of a training example, the
//!   model's predicted label and whether it equals the given label, from the
//!   training-mode forward pass *before* the optimizer step. It implements
//!   [`TrainingObserver`], so any training loop can feed it (infl-nn's trainer does).
//!   Examples are kept in the order of their first presentation (InterpretDL's `stats`
//!   dict order), and that order is the order of every id list below.
//! - [`ForgettingRecorder::forgetting`]`(epochs)` looks at each example's first `epochs`
//!   presentations: a forgetting event is a transition correct → wrong between two
//!   consecutive presentations. The count is −1 for an example never classified
//!   correctly. `forgotten` holds the predicted labels at each forgetting event, or every
//!   prediction for a never-learned example (and nothing for one learned and never
//!   forgotten). `count_forgotten` maps a count to the ids with that count.
//! - [`ForgettingRecorder::noisy_labels`] (InterpretDL's `find_noisy_labels`, the TIDY
//!   rule) uses *all* presentations: each example's score is the mean (0-based)
//!   presentation index at which it was classified correctly; examples never correct are
//!   skipped; an example is flagged when its score exceeds mean + 5·std of the scores
//!   (population std); flagged ids are sorted by score, descending (ties keep the order of
//!   first presentation, as Python's stable sort does). Sums are computed with NumPy's
//!   pairwise summation, so the threshold is bit-for-bit NumPy's.
//! - Histories are saved to and loaded from safetensors ([`ForgettingRecorder::save`]), so
//!   an analysis can be rerun without retraining. Format: `ids` `[N]` i64 (first
//!   presentation order), `offsets` `[N+1]` i64 (example `e`'s presentations are
//!   `offsets[e]..offsets[e+1]`), `predicted` `[M]` i64 and `correct` `[M]` i64 (0 or 1),
//!   metadata `format` = `infl forgetting history v1`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use infl_core::{Presentation, TrainingObserver};
use infl_io::{OutTensor, TensorFile, write_safetensors};

use crate::{Error, Result};

/// The recorded presentations of one training example, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleHistory {
    /// The example's id.
    pub id: usize,
    /// Whether each presentation was classified correctly.
    pub correct: Vec<bool>,
    /// The predicted label at each presentation.
    pub predicted: Vec<i64>,
}

impl ExampleHistory {
    /// Fraction of presentations classified correctly (0 with no presentation).
    pub fn accuracy(&self) -> f64 {
        if self.correct.is_empty() {
            return 0.0;
        }
        self.correct.iter().filter(|&&c| c).count() as f64 / self.correct.len() as f64
    }

    /// The TIDY score: the mean 0-based presentation index at which the example was
    /// classified correctly; `None` if it never was.
    pub fn mean_correct_index(&self) -> Option<f64> {
        let (mut sum, mut n) = (0u64, 0u64);
        for (i, &c) in self.correct.iter().enumerate() {
            if c {
                sum += i as u64;
                n += 1;
            }
        }
        (n > 0).then(|| sum as f64 / n as f64)
    }
}

/// Forgetting statistics of one example over its first `epochs` presentations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleForgetting {
    /// The example's id.
    pub id: usize,
    /// Number of forgetting events, −1 if never classified correctly.
    pub count: i64,
    /// 0-based presentation at which it was first classified correctly.
    pub first_learned: Option<usize>,
    /// 1-based presentation numbers at which it was forgotten (InterpretDL's
    /// `unlearned_per_presentation`).
    pub forgotten_at: Vec<usize>,
    /// Predicted labels at those presentations; every prediction if never learned.
    pub forgotten_labels: Vec<i64>,
}

/// Forgetting statistics of every example (InterpretDL's
/// `compute_and_order_forgetting_stats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgettingStats {
    /// Number of presentations looked at per example.
    pub epochs: usize,
    /// Per example, in order of first presentation.
    pub examples: Vec<ExampleForgetting>,
    /// Count of forgetting events (−1: never learned) → ids, in order of first presentation.
    pub count_forgotten: BTreeMap<i64, Vec<usize>>,
    /// Id → predicted labels at its forgetting events (all predictions if never learned).
    pub forgotten: BTreeMap<usize, Vec<i64>>,
}

/// The noisy-label rule (InterpretDL's `find_noisy_labels`).
#[derive(Clone, Debug, PartialEq)]
pub struct NoisyLabels {
    /// `(id, score)` for every example classified correctly at least once, in order of
    /// first presentation.
    pub scores: Vec<(usize, f64)>,
    /// mean + 5·std of the scores; `None` when no example was ever correct.
    pub threshold: Option<f64>,
    /// Ids whose score exceeds the threshold, by score descending.
    pub flagged: Vec<usize>,
}

/// Records presentations and computes forgetting statistics; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgettingRecorder {
    examples: Vec<ExampleHistory>,
    index: HashMap<usize, usize>,
}

impl TrainingObserver for ForgettingRecorder {
    fn observe(&mut self, batch: &[Presentation]) {
        for p in batch {
            self.record(*p);
        }
    }
}

/// NumPy's pairwise summation of float64 (`pairwise_sum` in `loops_utils.h`): blocks of
/// at most 128 summed with eight accumulators, larger arrays split in two.
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut r = 0.0;
        for &x in a {
            r += x;
        }
        r
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

impl ForgettingRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one presentation.
    pub fn record(&mut self, p: Presentation) {
        let e = *self.index.entry(p.id).or_insert_with(|| {
            self.examples.push(ExampleHistory {
                id: p.id,
                correct: Vec::new(),
                predicted: Vec::new(),
            });
            self.examples.len() - 1
        });
        self.examples[e].correct.push(p.correct);
        self.examples[e].predicted.push(p.predicted);
    }

    /// Number of distinct examples seen.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// True before the first presentation.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Every example's history, in order of first presentation.
    pub fn histories(&self) -> &[ExampleHistory] {
        &self.examples
    }

    /// The history of example `id`.
    pub fn history(&self, id: usize) -> Option<&ExampleHistory> {
        self.index.get(&id).map(|&e| &self.examples[e])
    }

    /// Forgetting statistics over each example's first `epochs` presentations.
    pub fn forgetting(&self, epochs: usize) -> ForgettingStats {
        let mut examples = Vec::with_capacity(self.examples.len());
        let mut count_forgotten: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut forgotten = BTreeMap::new();
        for h in &self.examples {
            let m = epochs.min(h.correct.len());
            let (acc, pred) = (&h.correct[..m], &h.predicted[..m]);
            let forgotten_at: Vec<usize> = (1..m).filter(|&t| acc[t - 1] && !acc[t]).collect();
            let first_learned = acc.iter().position(|&c| c);
            let (count, labels) = match first_learned {
                None => (-1, pred.to_vec()),
                Some(_) => (
                    forgotten_at.len() as i64,
                    forgotten_at.iter().map(|&t| pred[t]).collect(),
                ),
            };
            count_forgotten.entry(count).or_default().push(h.id);
            forgotten.insert(h.id, labels.clone());
            examples.push(ExampleForgetting {
                id: h.id,
                count,
                first_learned,
                forgotten_at: forgotten_at.iter().map(|t| t + 1).collect(),
                forgotten_labels: labels,
            });
        }
        ForgettingStats {
            epochs,
            examples,
            count_forgotten,
            forgotten,
        }
    }

    /// The noisy-label rule over all presentations.
    pub fn noisy_labels(&self) -> NoisyLabels {
        let scores: Vec<(usize, f64)> = self
            .examples
            .iter()
            .filter_map(|h| h.mean_correct_index().map(|s| (h.id, s)))
            .collect();
        if scores.is_empty() {
            return NoisyLabels {
                scores,
                threshold: None,
                flagged: Vec::new(),
            };
        }
        let v: Vec<f64> = scores.iter().map(|s| s.1).collect();
        let n = v.len() as f64;
        let mean = numpy_sum(&v) / n;
        let sq: Vec<f64> = v
            .iter()
            .map(|x| {
                let d = x - mean;
                d * d
            })
            .collect();
        let std = (numpy_sum(&sq) / n).sqrt();
        let threshold = mean + 5.0 * std;
        let mut noisy: Vec<(usize, f64)> =
            scores.iter().copied().filter(|s| s.1 > threshold).collect();
        noisy.sort_by(|a, b| b.1.total_cmp(&a.1));
        NoisyLabels {
            flagged: noisy.into_iter().map(|s| s.0).collect(),
            threshold: Some(threshold),
            scores,
        }
    }

    /// Saves the histories as safetensors (atomically); see the [module docs](self).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let n = self.examples.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let (mut predicted, mut correct) = (Vec::new(), Vec::new());
        offsets.push(0i64);
        for h in &self.examples {
            predicted.extend_from_slice(&h.predicted);
            correct.extend(h.correct.iter().map(|&c| i64::from(c)));
            offsets.push(predicted.len() as i64);
        }
        let m = predicted.len();
        let ids = self.examples.iter().map(|h| h.id as i64).collect();
        write_safetensors(
            path,
            vec![
                ("ids".into(), OutTensor::I64(vec![n], ids)),
                ("offsets".into(), OutTensor::I64(vec![n + 1], offsets)),
                ("predicted".into(), OutTensor::I64(vec![m], predicted)),
                ("correct".into(), OutTensor::I64(vec![m], correct)),
            ],
            HashMap::from([(
                "format".to_string(),
                "infl forgetting history v1".to_string(),
            )]),
        )?;
        Ok(())
    }

    /// Loads histories saved by [`ForgettingRecorder::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = TensorFile::open(path)?;
        let saved = SavedHistory {
            ids: file.integers("ids")?,
            offsets: file.integers("offsets")?,
            predicted: file.integers("predicted")?,
            correct: file.integers("correct")?,
        };
        saved.check(path)?;
        let mut rec = Self::new();
        for (e, &id) in saved.ids.iter().enumerate() {
            let id = usize::try_from(id).map_err(|_| {
                Error::data(
                    path,
                    "ids",
                    format!("expected non-negative ids, found {id} at [{e}]"),
                )
            })?;
            if rec.index.insert(id, e).is_some() {
                return Err(Error::data(
                    path,
                    "ids",
                    format!("expected distinct ids, found {id} twice"),
                ));
            }
            let (a, b) = (saved.offsets[e] as usize, saved.offsets[e + 1] as usize);
            rec.examples.push(ExampleHistory {
                id,
                correct: saved.correct[a..b].iter().map(|&c| c == 1).collect(),
                predicted: saved.predicted[a..b].to_vec(),
            });
        }
        Ok(rec)
    }
}

/// The tensors of a saved history, as read.
struct SavedHistory {
    ids: Vec<i64>,
    offsets: Vec<i64>,
    predicted: Vec<i64>,
    correct: Vec<i64>,
}

impl SavedHistory {
    /// Checks that the offsets delimit `predicted` and `correct` and that `correct` is 0/1.
    fn check(&self, path: &Path) -> Result<()> {
        let (offsets, correct) = (&self.offsets, &self.correct);
        let m = self.predicted.len();
        if offsets.len() != self.ids.len() + 1 {
            return Err(Error::data(
                path,
                "offsets",
                format!(
                    "expected {} entries (one more than `ids`), found {}",
                    self.ids.len() + 1,
                    offsets.len()
                ),
            ));
        }
        if correct.len() != m {
            return Err(Error::data(
                path,
                "correct",
                format!(
                    "expected {m} entries (as `predicted`), found {}",
                    correct.len()
                ),
            ));
        }
        if offsets[0] != 0
            || offsets.windows(2).any(|w| w[1] < w[0])
            || offsets[offsets.len() - 1] != m as i64
        {
            return Err(Error::data(
                path,
                "offsets",
                format!(
                    "expected non-decreasing offsets from 0 to {m} (the length of `predicted`)"
                ),
            ));
        }
        match correct.iter().position(|&c| c != 0 && c != 1) {
            Some(i) => Err(Error::data(
                path,
                "correct",
                format!("expected 0 or 1, found {} at [{i}]", correct[i]),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rows: &[(usize, &[(i64, bool)])]) -> ForgettingRecorder {
        let mut r = ForgettingRecorder::new();
        // Interleave presentations epoch by epoch, as training does.
        let most = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for t in 0..most {
            let batch: Vec<Presentation> = rows
                .iter()
                .filter(|r| t < r.1.len())
                .map(|&(id, h)| Presentation {
                    id,
                    predicted: h[t].0,
                    correct: h[t].1,
                })
                .collect();
            r.observe(&batch);
        }
        r
    }

    #[test]
    fn events_by_hand() {
        let r = rec(&[
            (
                7,
                &[(1, true), (2, false), (1, true), (3, false), (1, true)],
            ),
            (3, &[(0, false), (5, false), (0, false)]),
            (9, &[(4, true), (4, true), (4, true)]),
            (2, &[(6, false), (2, true), (2, true), (8, false)]),
        ]);
        let s = r.forgetting(5);
        assert_eq!(s.count_forgotten[&2], vec![7]);
        assert_eq!(s.count_forgotten[&-1], vec![3]);
        assert_eq!(s.count_forgotten[&0], vec![9]);
        assert_eq!(s.count_forgotten[&1], vec![2]);
        assert_eq!(s.forgotten[&7], vec![2, 3]);
        assert_eq!(s.forgotten[&3], vec![0, 5, 0]);
        assert!(s.forgotten[&9].is_empty());
        assert_eq!(s.forgotten[&2], vec![8]);
        assert_eq!(s.examples[0].forgotten_at, vec![2, 4]);
        assert_eq!(s.examples[3].first_learned, Some(1));
        // Only the first 3 presentations: example 2 is not yet forgotten.
        let s3 = r.forgetting(3);
        assert_eq!(s3.count_forgotten[&0], vec![9, 2]);
        assert_eq!(r.history(7).unwrap().accuracy(), 0.6);
        assert_eq!(r.history(2).unwrap().mean_correct_index(), Some(1.5));
        assert_eq!(r.history(3).unwrap().mean_correct_index(), None);
    }

    #[test]
    fn noisy_rule_by_hand() {
        // 30 examples correct from the start (score 2 over 5 presentations), one learned
        // only at the last presentation (score 4), one never (skipped).
        let clean: &[(i64, bool)] = &[(0, true); 5];
        let late: &[(i64, bool)] = &[(1, false), (1, false), (1, false), (1, false), (0, true)];
        let never: &[(i64, bool)] = &[(1, false); 5];
        let mut rows: Vec<(usize, &[(i64, bool)])> = (0..30).map(|i| (i, clean)).collect();
        rows.push((100, late));
        rows.push((101, never));
        let n = rec(&rows).noisy_labels();
        assert_eq!(n.scores.len(), 31);
        // mean = (30·2 + 4)/31, std = sqrt(Σ(x−mean)²/31)
        let mean = 64.0 / 31.0;
        let std = ((30.0 * (2.0f64 - mean).powi(2) + (4.0f64 - mean).powi(2)) / 31.0).sqrt();
        assert!((n.threshold.unwrap() - (mean + 5.0 * std)).abs() < 1e-12);
        assert_eq!(n.flagged, vec![100]);
        assert!(ForgettingRecorder::new().noisy_labels().threshold.is_none());
    }

    #[test]
    fn numpy_sum_is_exact_on_integers_and_blocks() {
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            assert_eq!(numpy_sum(&v), (n * n.saturating_sub(1) / 2) as f64);
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let r = rec(&[(5, &[(1, true), (2, false)]), (0, &[(0, false)])]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.safetensors");
        r.save(&p).unwrap();
        assert_eq!(ForgettingRecorder::load(&p).unwrap(), r);
        infl_io::write_safetensors(
            &p,
            vec![
                ("ids".into(), OutTensor::I64(vec![1], vec![0])),
                ("offsets".into(), OutTensor::I64(vec![2], vec![0, 2])),
                ("predicted".into(), OutTensor::I64(vec![2], vec![0, 1])),
                ("correct".into(), OutTensor::I64(vec![2], vec![0, 2])),
            ],
            HashMap::new(),
        )
        .unwrap();
        let e = ForgettingRecorder::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("h.safetensors") && e.contains("correct") && e.contains("found 2"),
            "{e}"
        );
    }
}
