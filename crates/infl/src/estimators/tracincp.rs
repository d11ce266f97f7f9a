//! TracInCP (Pruthi et al. 2020) over chosen layers, from per-example factor files
//! ([`infl_io::factors`]), matching Captum's `TracInCP(layers=[...])`.
//!
//! `score(i, j) = Σ_c lr_c Σ_L ⟨∇_L ℓ_i, ∇_L ℓ_j⟩` and `self(j) = Σ_c lr_c Σ_L ‖∇_L ℓ_j‖²`,
//! each layer's gradient including its bias when the file says the layer has one, as Captum
//! does; learning rates weigh each checkpoint once (Captum's convention). Each
//! (checkpoint, layer) is one engine term, so scores, streamed top-k and self-influence are
//! the engine's, on every backend:
//! - a linear layer with one position per example: `a` and `g` as they are, scored
//!   `(g_i·g_j)(a_i·a_j + bias)`;
//! - a layer with `S > 1` positions (a sequence, conv patches), in one of two forms that
//!   give the same numbers ([`LayerForm`]): the *ghost* form, a term over the positions
//!   scored `Σ_{s,t}(g_s·g'_t)(a_s·a'_t + bias)` (`S²(K + D)` per pair, nothing
//!   materialised), or the *materialised* gradient `Σ_s g_s ⊗ a_s` (and its bias `Σ_s g_s`),
//!   flattened and scored as a plain dot product `(1·1)(v_i·v_j)` (`K·D` per pair, plus
//!   `N·K·D` memory). [`LayerForm::ByCost`], the default, takes the cheaper per pair:
//!   ghost when `S²(K + D) < K·D`;
//! - a dense per-example gradient (`P.grad`): the plain dot product.

use infl_core::{Bias, Matrix};
use infl_io::LayerFactors;

use super::{Audience, Estimator, Indexing, Input, Options, Registration};
use crate::engine::{FactorMatrices, FactorTerm, Progress, TermSet};
use crate::run::{FactorCheckpoint, NamedFactors, Prepared, Run, SplitFactors};
use crate::{Backend, Error, Result};

pub(super) const REGISTRATION: Registration = Registration {
    name: "tracincp",
    label: "TracInCP",
    about: "TracInCP over chosen layers, from factor files (Pruthi et al. 2020; as Captum)",
    build: |o| Box::new(TracInCP::from(o)),
    input: Input::Factors,
    audience: Audience::Users,
    indexing: Indexing::Embeddings,
};

/// TracInCP settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracInCP {
    /// Learning rate for checkpoints whose files record none (Captum's default is 1.0).
    pub default_learning_rate: f32,
    /// How layers with several positions per example are scored.
    pub form: LayerForm,
}

/// How TracInCP scores a layer with `S > 1` positions per example (the numbers are the
/// same; the cost differs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerForm {
    /// The cheaper per pair of examples: ghost when `S²(K + D) < K·D`.
    #[default]
    ByCost,
    /// `Σ_{s,t}(g_s·g'_t)(a_s·a'_t + bias)` over position pairs.
    Ghost,
    /// The flattened gradient `Σ_s g_s ⊗ a_s`, scored as a plain dot product.
    Materialised,
}

impl LayerForm {
    /// Whether a layer of `positions` positions, `outputs` K and `inputs` D is scored in
    /// the ghost form.
    pub fn ghost(self, positions: usize, outputs: usize, inputs: usize) -> bool {
        match self {
            _ if positions <= 1 => false,
            Self::Ghost => true,
            Self::Materialised => false,
            Self::ByCost => {
                let ghost = positions
                    .saturating_mul(positions)
                    .saturating_mul(outputs + inputs);
                ghost < outputs.saturating_mul(inputs)
            }
        }
    }
}

impl Default for TracInCP {
    fn default() -> Self {
        Self::from(&Options::default())
    }
}

impl From<&Options> for TracInCP {
    fn from(o: &Options) -> Self {
        Self {
            default_learning_rate: o.default_learning_rate,
            form: LayerForm::default(),
        }
    }
}

impl Estimator for TracInCP {
    fn registration(&self) -> &'static Registration {
        &REGISTRATION
    }

    fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("bias".into(), "each layer's, when it has one".into()),
            ("form".into(), format!("{:?}", self.form)),
        ]
    }

    /// One term per (checkpoint, layer).
    fn prepare(
        &self,
        _backend: &dyn Backend,
        run: &Run,
        _progress: &dyn Progress,
    ) -> Result<Prepared> {
        let run = run.factors(self.label())?;
        let first = run
            .first()
            .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))?;
        let mut terms = Vec::new();
        let mut learning_rates = Vec::with_capacity(run.len());
        for c in run {
            let lr = c.learning_rate_or(self.default_learning_rate)?;
            learning_rates.push(lr);
            terms.extend(self.checkpoint_terms(c, lr)?);
        }
        Ok(Prepared {
            learning_rates,
            checkpoints: run.iter().map(|c| c.name.clone()).collect(),
            set: TermSet { terms },
            train: first.train.info(),
            test: first.test.as_ref().map(SplitFactors::info),
        })
    }
}

impl TracInCP {
    /// The terms of one checkpoint, one per layer.
    fn checkpoint_terms(&self, c: &FactorCheckpoint, lr: f32) -> Result<Vec<FactorTerm>> {
        c.train
            .layers
            .iter()
            .enumerate()
            .map(|(l, train)| {
                let test = c.test.as_ref().map(|t| &t.layers[l]);
                let (shape, train_m) = self.term_factors(train)?;
                Ok(FactorTerm {
                    label: format!("checkpoint {}, layer {}", c.name, train.name),
                    weight: lr,
                    bias: shape.bias,
                    positions: shape.positions,
                    train: train_m,
                    test: test
                        .map(|t| self.term_factors(t).map(|(_, m)| m))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// A layer's factors as an engine term's: as they are for one position or the ghost
    /// form, else the materialised gradient against a constant 1.
    fn term_factors(&self, layer: &NamedFactors) -> Result<(TermShape, FactorMatrices)> {
        match &layer.factors {
            LayerFactors::Linear {
                a,
                g,
                positions,
                bias,
            } if *positions == 1 || self.form.ghost(*positions, g.cols(), a.cols()) => Ok((
                TermShape {
                    bias: *bias,
                    positions: *positions,
                },
                FactorMatrices {
                    a: a.clone(),
                    g: g.clone(),
                },
            )),
            LayerFactors::Linear {
                a,
                g,
                positions,
                bias,
            } => Ok((
                TermShape::PLAIN,
                against_one(materialise(a, g, *positions, *bias)?)?,
            )),
            LayerFactors::Dense { grad } => Ok((TermShape::PLAIN, against_one(grad.clone())?)),
        }
    }
}

/// How a term's rows are scored: its bias, and rows per example.
#[derive(Clone, Copy, Debug)]
struct TermShape {
    bias: Bias,
    positions: usize,
}

impl TermShape {
    /// One row per example, no bias (a vector against a constant 1).
    const PLAIN: Self = Self {
        bias: Bias::Excluded,
        positions: 1,
    };
}

/// `[n, width]` vectors scored by their plain dot product: `a` = the vectors, `g` = 1.
pub(crate) fn against_one(v: Matrix) -> Result<FactorMatrices> {
    let ones = Matrix::from_vec(v.rows(), 1, vec![1.0; v.rows()])?;
    Ok(FactorMatrices { a: v, g: ones })
}

/// Per example `i` (rows `i·S .. (i+1)·S`): `vec(Σ_s g_s ⊗ a_s)` (row `k`, column `d` at
/// `k·D + d`, PyTorch's weight layout), followed by `Σ_s g_s` when the bias is included.
/// Accumulated in f64.
pub(crate) fn materialise(a: &Matrix, g: &Matrix, positions: usize, bias: Bias) -> Result<Matrix> {
    let (d, k) = (a.cols(), g.cols());
    let n = a.rows() / positions;
    let width = k * d + if bias == Bias::Included { k } else { 0 };
    let (av, gv) = (a.view(), g.view());
    let mut out = Vec::new();
    out.try_reserve_exact(n * width).map_err(|_| {
        Error::config(
            "memory",
            format!("materialising {n} per-example gradients of {width} values does not fit"),
        )
    })?;
    let mut acc = vec![0f64; width];
    for i in 0..n {
        acc.fill(0.0);
        for s in i * positions..(i + 1) * positions {
            let (ar, gr) = (av.row(s), gv.row(s));
            for (kk, &gk) in gr.iter().enumerate() {
                let row = &mut acc[kk * d..(kk + 1) * d];
                for (x, &ad) in row.iter_mut().zip(ar) {
                    *x += f64::from(gk) * f64::from(ad);
                }
            }
            if bias == Bias::Included {
                for (x, &gk) in acc[k * d..].iter_mut().zip(gr) {
                    *x += f64::from(gk);
                }
            }
        }
        out.extend(acc.iter().map(|&x| x as f32));
    }
    Ok(Matrix::from_vec(n, width, out)?)
}
