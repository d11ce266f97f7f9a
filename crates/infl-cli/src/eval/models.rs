//! The models `infl eval` retrains: logistic regression (infl-nn's [`LogReg`], fitted to
//! convergence, deterministic) and infl-nn's MLP (SGD, seeded); each writes its reference
//! run (checkpoints and final-layer features) for the estimators and retrains as an
//! [`infl::counterfactual::Retrainer`].

use std::path::Path;

use anyhow::{Context, Result};
use infl::counterfactual::{Outcome, Retrainer, TrainSet};
use infl_nn::logreg::loss_and_margin;
use infl_nn::{
    CheckpointMeta, Dataset, FactorFiles, FitConfig, LogReg, LogRegData, Mlp, Preconditioner,
    RunWriter, Split, TrainConfig, TrainHooks,
};
use ndarray::{Array2, ArrayView2, Axis};

use super::Data;

/// How an LDS subset's loss is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsetScale {
    /// The subset's mean loss `1/|S|` (as dattri's retraining does).
    Mean,
    /// Koh & Liang's `1/N` over the full set's `N` (the penalty keeps its weight).
    FullN,
}

/// Example weights of a training set: Koh & Liang's `1/N` over the full set's `N` for
/// leave-one-out (and the full set); for LDS subsets as `scale` says.
fn weights(set: &TrainSet, n: usize, scale: SubsetScale) -> Vec<f64> {
    let mask = set.mask(n);
    let scale = match (set, scale) {
        (TrainSet::Subset(rows), SubsetScale::Mean) => 1.0 / rows.len() as f64,
        _ => 1.0 / n as f64,
    };
    mask.iter().map(|&m| if m { scale } else { 0.0 }).collect()
}

/// Loss and margin of every row of `logits` for `labels`, in f64.
fn outcome_of(logits: ArrayView2<'_, f32>, labels: &[i64]) -> Outcome {
    let (loss, margin) = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(z, &y)| loss_and_margin(z.mapv(f64::from).view(), y as usize))
        .unzip();
    Outcome { loss, margin }
}

/// Logistic regression: the reference fit, its preconditioner, and retraining from it.
pub struct LogRegModel {
    train: LogRegData,
    test: LogRegData,
    reference: LogReg,
    preconditioner: Option<Preconditioner>,
    config: FitConfig,
    scale: SubsetScale,
}

impl LogRegModel {
    /// Fits the reference model on every training example (from zero; then polished with
    /// the Cholesky factor of its own Hessian as preconditioner, which every retraining
    /// reuses).
    pub fn fit(data: &Data, config: FitConfig, scale: SubsetScale) -> Result<Self> {
        let train = LogRegData::new(data.train_x.view(), &data.train_y, data.classes)?;
        let test = LogRegData::new(data.test_x.view(), &data.test_y, data.classes)?;
        let w = weights(&TrainSet::Full, train.len(), scale);
        let rough = FitConfig {
            tolerance: 1e-6,
            ..config
        };
        let (start, _) = LogReg::fit(&train, &w, &rough, None, None)
            .context("fitting the reference logistic regression")?;
        let preconditioner = (train.dim() <= infl_nn::logreg::PRECONDITIONER_MAX_DIM)
            .then(|| Preconditioner::fit(&start, &train, &w, config.l2))
            .transpose()?;
        let (reference, report) =
            LogReg::fit(&train, &w, &config, Some(&start), preconditioner.as_ref())
                .context("fitting the reference logistic regression")?;
        eprintln!(
            "reference logistic regression: gradient norm {:.1e} ({} Newton steps)",
            report.gradient_norm, report.newton_steps
        );
        Ok(Self {
            train,
            test,
            reference,
            preconditioner,
            config,
            scale,
        })
    }

    /// Writes the reference model as one checkpoint `final` whose features are the inputs.
    pub fn write_run(&self, dir: &Path, data: &Data) -> Result<()> {
        let model = self.reference.to_mlp()?;
        write_checkpoint(dir, "final", &model, data)
    }
}

impl Retrainer for LogRegModel {
    fn retrain(&self, set: &TrainSet, _seed: u64) -> infl::Result<Outcome> {
        let w = weights(set, self.train.len(), self.scale);
        let (model, _) = LogReg::fit(
            &self.train,
            &w,
            &self.config,
            Some(&self.reference),
            self.preconditioner.as_ref(),
        )
        .map_err(|e| infl::Error::Config {
            what: "retraining".into(),
            details: e.to_string(),
        })?;
        let e = model.evaluate(&self.test);
        Ok(Outcome {
            loss: e.loss,
            margin: e.margin,
        })
    }
}

/// Writes checkpoint `name` of `model` with the features of every training and test
/// example into `dir`.
fn write_checkpoint(dir: &Path, name: &str, model: &Mlp, data: &Data) -> Result<()> {
    let writer = RunWriter::new(dir, FactorFiles::Skip)?;
    let (train_ids, test_ids) = data.ids();
    writer.write(
        name,
        model,
        &CheckpointMeta {
            learning_rate: Some(1.0),
            epoch: None,
        },
        Split {
            x: data.train_x.view(),
            labels: &data.train_y,
            ids: &train_ids,
            images: None,
        },
        Some(Split {
            x: data.test_x.view(),
            labels: &data.test_y,
            ids: &test_ids,
            images: None,
        }),
    )?;
    Ok(())
}

/// The MLP and its SGD settings.
pub struct MlpModel<'d> {
    data: &'d Data,
    hidden: Vec<usize>,
    config: TrainConfig,
}

/// Writes a checkpoint after every epoch.
struct EveryEpoch<'a> {
    dir: &'a Path,
    data: &'a Data,
}

impl TrainHooks for EveryEpoch<'_> {
    fn on_epoch_end(&mut self, epoch: usize, model: &Mlp, lr: f32) -> infl_nn::Result<()> {
        let (train_ids, test_ids) = self.data.ids();
        RunWriter::new(self.dir, FactorFiles::Skip)?.write(
            &format!("epoch-{epoch}"),
            model,
            &CheckpointMeta {
                learning_rate: Some(lr),
                epoch: Some(epoch),
            },
            Split {
                x: self.data.train_x.view(),
                labels: &self.data.train_y,
                ids: &train_ids,
                images: None,
            },
            Some(Split {
                x: self.data.test_x.view(),
                labels: &self.data.test_y,
                ids: &test_ids,
                images: None,
            }),
        )
    }
}

impl<'d> MlpModel<'d> {
    /// The MLP `hidden` trained with `config` (its seed is replaced by each job's).
    pub fn new(data: &'d Data, hidden: Vec<usize>, config: TrainConfig) -> Self {
        Self {
            data,
            hidden,
            config,
        }
    }

    fn train(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[i64],
        seed: u64,
        hooks: &mut dyn TrainHooks,
    ) -> Result<Mlp> {
        let mut model = Mlp::new(
            self.data.train_x.ncols(),
            &self.hidden,
            self.data.classes,
            seed,
        )?;
        let config = TrainConfig {
            seed,
            ..self.config.clone()
        };
        let data = Dataset {
            x,
            labels,
            ids: None,
        };
        infl_nn::train(
            &mut model,
            data,
            &config,
            &mut |_: &[infl::Presentation]| {},
            hooks,
        )?;
        Ok(model)
    }

    /// Trains the reference model (seed `seed`, every example), writing a checkpoint per
    /// epoch into `dir`.
    pub fn write_run(&self, dir: &Path, seed: u64) -> Result<()> {
        let mut hooks = EveryEpoch {
            dir,
            data: self.data,
        };
        self.train(
            self.data.train_x.view(),
            &self.data.train_y,
            seed,
            &mut hooks,
        )?;
        Ok(())
    }
}

impl Retrainer for MlpModel<'_> {
    fn retrain(&self, set: &TrainSet, seed: u64) -> infl::Result<Outcome> {
        let rows: Vec<usize> = set
            .mask(self.data.train_y.len())
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| m.then_some(i))
            .collect();
        let x: Array2<f32> = self.data.train_x.select(Axis(0), &rows);
        let labels: Vec<i64> = rows.iter().map(|&i| self.data.train_y[i]).collect();
        let model =
            self.train(x.view(), &labels, seed, &mut ())
                .map_err(|e| infl::Error::Config {
                    what: "retraining".into(),
                    details: format!("{e:#}"),
                })?;
        let logits = model
            .logits(self.data.test_x.view())
            .map_err(|e| infl::Error::Config {
                what: "retraining".into(),
                details: e.to_string(),
            })?;
        Ok(outcome_of(logits.view(), &self.data.test_y))
    }
}
