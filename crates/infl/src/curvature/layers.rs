//! Curvature of chosen layers read from factor files, as operators for the iterative
//! solvers (CG, LiSSA, Arnoldi; exact when small):
//! - [`FactorFisher`]: the Fisher `F = Σ_i ∇_i ∇_iᵀ` of the per-example gradients the files
//!   hold, cross-layer blocks included (K-FAC and EK-FAC approximate its diagonal blocks).
//!   With the files' `L.g` (true labels) it is the *empirical* Fisher; with gradients
//!   computed for labels sampled from the model (Kronfluence's default,
//!   `use_empirical_fisher=False`), stored as `L.g_sampled`, the *true* Fisher — which
//!   equals the Gauss–Newton matrix of softmax cross-entropy in expectation.
//! - [`NetworkHessian`]: the exact Hessian of an infl-nn MLP's summed loss over all its
//!   parameters (Pearlmutter's R-operator, [`infl_nn::hvp`]), restricted to the chosen
//!   layers' block.
//!
//! Both are summed over examples (the convention's factor applies on top, as for the
//! final layer) and never assembled. Vectors are laid out as the chosen layers' `[K, D']`
//! gradients, in order, concatenated ([`terms`](super::terms)' layout).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};
use infl_core::{Bias, Matrix, ranges};
use infl_io::LayerFactors;
use ndarray::{Array2, ArrayView2};

use super::{HessianOperator, check_block, par, phase, stacked, terms::f64_rows, unstack};
use crate::engine::Progress;
use crate::run::{NamedFactors, SplitFactors};
use crate::{Error, Result};

/// Factor rows converted to f64 at once (bounds the memory of a product).
const CHUNK_ROWS: usize = 4096;

/// `split` with each chosen layer's output gradients replaced by its `L.g_sampled` (labels
/// sampled from the model), read from `split`'s file: what the true Fisher (and
/// Kronfluence's default K-FAC fit) is fitted on. Refused, naming the tensor, when the file
/// has none.
pub fn with_sampled_gradients(split: &SplitFactors) -> Result<SplitFactors> {
    let file = infl_io::FactorFile::open(&split.source)?;
    let layers = (split.layers.iter())
        .map(|l| {
            let LayerFactors::Linear {
                a, positions, bias, ..
            } = &l.factors
            else {
                return Ok(l.clone());
            };
            let g = file.sampled_gradients(&l.name)?.ok_or_else(|| {
                let tensor = format!("{}.{}", l.name, infl_io::SAMPLED_SUFFIX);
                let details = "expected output gradients for labels sampled from the model \
                               (the true Fisher; infl-nn and infl.torch write them with \
                               cross-entropy, unless --no-sampled); use --curvature fisher for \
                               the empirical Fisher of the files' `.g`";
                Error::data(&split.source, tensor, details)
            })?;
            let factors = LayerFactors::Linear {
                a: a.clone(),
                g,
                positions: *positions,
                bias: *bias,
            };
            Ok(NamedFactors {
                name: l.name.clone(),
                factors,
            })
        })
        .collect::<Result<_>>()?;
    Ok(SplitFactors {
        layers,
        ..split.clone()
    })
}

/// One chosen layer's place in a flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The layer.
    pub name: String,
    /// Offset of its `[K, D']` gradient.
    pub offset: usize,
    /// Outputs `K`.
    pub outputs: usize,
    /// Inputs `D` (`D' = D + 1` with the bias).
    pub inputs: usize,
    /// Whether the bias is a parameter.
    pub bias: Bias,
    /// Rows per example.
    pub positions: usize,
}

impl Block {
    /// `D'`.
    pub fn width(&self) -> usize {
        self.inputs + usize::from(self.bias == Bias::Included)
    }

    /// `K · D'`.
    pub fn len(&self) -> usize {
        self.outputs * self.width()
    }

    /// True for a layer without parameters (never, for a loaded layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The blocks of the chosen layers of `split` (linear layers only; a dense gradient is
/// refused, naming it).
pub fn layout(split: &SplitFactors) -> Result<Vec<Block>> {
    let mut offset = 0;
    (split.layers.iter())
        .map(|l| match &l.factors {
            LayerFactors::Linear {
                a,
                g,
                positions,
                bias,
            } => {
                let block = Block {
                    name: l.name.clone(),
                    offset,
                    outputs: g.cols(),
                    inputs: a.cols(),
                    bias: *bias,
                    positions: *positions,
                };
                offset += block.len();
                Ok(block)
            }
            LayerFactors::Dense { .. } => Err(Error::data(
                &split.source,
                format!("{}.grad", l.name),
                format!(
                    "the Fisher and Hessian operators need linear factors (`{0}.a`, `{0}.g`); \
                     leave the dense gradient `{0}` out of the chosen layers",
                    l.name
                ),
            )),
        })
        .collect()
}

/// The Fisher of the per-example gradients of factor files (see the module docs).
#[derive(Debug)]
pub struct FactorFisher<'s> {
    split: &'s SplitFactors,
    /// Output gradients per layer: the files' `L.g`, or sampled-label ones.
    gradients: Vec<Matrix>,
    blocks: Vec<Block>,
}

impl<'s> FactorFisher<'s> {
    /// The empirical Fisher of `split`'s chosen layers (their `L.g`).
    pub fn empirical(split: &'s SplitFactors) -> Result<Self> {
        let blocks = layout(split)?;
        let gradients = (split.layers.iter())
            .filter_map(|l| match &l.factors {
                LayerFactors::Linear { g, .. } => Some(g.clone()),
                LayerFactors::Dense { .. } => None,
            })
            .collect();
        Ok(Self {
            split,
            gradients,
            blocks,
        })
    }

    /// The true Fisher: the empirical Fisher of [`with_sampled_gradients`]`(split)`.
    pub fn sampled(split: &'s SplitFactors) -> Result<Self> {
        let sampled = with_sampled_gradients(split)?;
        let mut fisher = Self::empirical(split)?;
        fisher.gradients = (sampled.layers.into_iter())
            .filter_map(|l| match l.factors {
                LayerFactors::Linear { g, .. } => Some(g),
                LayerFactors::Dense { .. } => None,
            })
            .collect();
        Ok(fisher)
    }

    /// The blocks of the operator's vectors.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn inputs(&self, l: usize) -> &Matrix {
        match &self.split.layers[l].factors {
            LayerFactors::Linear { a, .. } => a,
            LayerFactors::Dense { .. } => unreachable!("refused by layout"),
        }
    }
}

impl HessianOperator for FactorFisher<'_> {
    fn dim(&self) -> usize {
        self.blocks.iter().map(Block::len).sum()
    }

    /// Per chunk of examples: `s_i = ∇_i · v` summed over the layers (`Σ_s g_sᵀ V ã_s`,
    /// one GEMM per layer), then `out += Σ_i s_i ∇_i` (`(G ⊙ s)ᵀ Ã`).
    fn apply(&self, v: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        check_block(self.dim(), v, out.as_ref(), "fisher")?;
        let m = v.nrows();
        let vs: Vec<Mat<f64>> = (self.blocks.iter())
            .map(|b| stacked(v, b.offset, b.outputs, b.width()))
            .collect();
        let mut sums: Vec<Mat<f64>> = (self.blocks.iter())
            .map(|b| Mat::zeros(m * b.outputs, b.width()))
            .collect();
        let positions = self.blocks.iter().map(|b| b.positions).max().unwrap_or(1);
        for examples in ranges(self.split.len(), (CHUNK_ROWS / positions).max(1)) {
            let chunk: Vec<(Mat<f64>, Mat<f64>)> = (self.blocks.iter().enumerate())
                .map(|(l, b)| {
                    let rows = examples.start * b.positions..examples.end * b.positions;
                    (
                        f64_rows(self.inputs(l), rows.clone(), b.bias),
                        f64_rows(&self.gradients[l], rows, Bias::Excluded),
                    )
                })
                .collect();
            let mut s = Mat::<f64>::zeros(examples.len(), m);
            for ((b, (a, g)), vs) in self.blocks.iter().zip(&chunk).zip(&vs) {
                let p = a * vs.transpose(); // [rows, m·K]
                for r in 0..a.nrows() {
                    for j in 0..m {
                        let dot: f64 = (0..b.outputs)
                            .map(|k| g[(r, k)] * p[(r, j * b.outputs + k)])
                            .sum();
                        s[(r / b.positions, j)] += dot;
                    }
                }
            }
            for ((b, (a, g)), sum) in self.blocks.iter().zip(&chunk).zip(&mut sums) {
                let k = b.outputs;
                let weighted = Mat::from_fn(a.nrows(), m * k, |r, c| {
                    g[(r, c % k)] * s[(r / b.positions, c / k)]
                });
                matmul(
                    sum.as_mut(),
                    Accum::Add,
                    weighted.transpose(),
                    a.as_ref(),
                    1.0,
                    par(),
                );
            }
        }
        for (b, sum) in self.blocks.iter().zip(&sums) {
            unstack(sum, b.offset, b.outputs, out.as_mut());
        }
        Ok(())
    }

    fn examples(&self) -> Option<usize> {
        Some(self.split.len())
    }

    /// The Fisher of a copy of the sampled examples' factors.
    fn apply_examples(
        &self,
        rows: &[usize],
        v: MatRef<'_, f64>,
        out: MatMut<'_, f64>,
    ) -> Result<()> {
        super::check_rows(rows, self.split.len())?;
        let sample = self.split.select(rows);
        let gradients = (self.gradients.iter())
            .zip(&self.blocks)
            .map(|(g, b)| select_examples(g, rows, b.positions))
            .collect();
        let op = FactorFisher {
            split: &sample,
            gradients,
            blocks: self.blocks.clone(),
        };
        op.apply(v, out)
    }

    /// `Σ_i ∇_i∇_iᵀ` by GEMMs over chunks of materialised gradients (the phase's units
    /// are examples).
    fn assemble(&self, progress: &dyn Progress) -> Result<Mat<f64>> {
        let n = self.dim();
        let mut f = Mat::zeros(n, n);
        let rows = (CHUNK_ROWS * CHUNK_ROWS / n.max(1)).clamp(1, CHUNK_ROWS);
        progress.start(phase::HESSIAN, self.split.len() as u64);
        for examples in ranges(self.split.len(), rows) {
            let count = examples.len() as u64;
            let mut grads = Mat::<f64>::zeros(examples.len(), n);
            for (l, b) in self.blocks.iter().enumerate() {
                let g = super::terms::gradients(
                    self.inputs(l),
                    &self.gradients[l],
                    b.positions,
                    b.bias,
                    examples.clone(),
                );
                (grads.as_mut())
                    .submatrix_mut(0, b.offset, examples.len(), b.len())
                    .copy_from(&g);
            }
            matmul(
                f.as_mut(),
                Accum::Add,
                grads.transpose(),
                grads.as_ref(),
                1.0,
                par(),
            );
            progress.advance(count);
        }
        progress.finish();
        Ok(f)
    }

    /// `Σ_i ‖∇_i‖²`.
    fn trace(&self) -> Result<f64> {
        let mut total = 0.0;
        for (l, b) in self.blocks.iter().enumerate() {
            for examples in ranges(self.split.len(), (CHUNK_ROWS / b.positions).max(1)) {
                let g = super::terms::gradients(
                    self.inputs(l),
                    &self.gradients[l],
                    b.positions,
                    b.bias,
                    examples,
                );
                total += g.squared_norm_l2();
            }
        }
        Ok(total)
    }
}

/// The rows of examples `rows` of a matrix with `positions` rows per example.
fn select_examples(m: &Matrix, rows: &[usize], positions: usize) -> Matrix {
    let all: Vec<usize> = (rows.iter())
        .flat_map(|&i| i * positions..(i + 1) * positions)
        .collect();
    m.select_rows(&all)
}

/// The exact Hessian of an infl-nn MLP's summed cross-entropy over the training examples,
/// restricted to the chosen layers (see the module docs).
#[derive(Debug)]
pub struct NetworkHessian {
    product: infl_nn::Product,
    /// The training examples' passes, kept for every product.
    plan: infl_nn::HvpPlan,
    model: infl_nn::Mlp,
    inputs: Matrix,
    labels: Vec<i64>,
    blocks: Vec<Block>,
    /// The model layer of each block.
    layers: Vec<usize>,
}

impl NetworkHessian {
    /// The Hessian (or Gauss–Newton matrix, per `product`) of `model` on the examples
    /// `inputs` `[N, in]` (the first layer's inputs) with `labels`, restricted to `blocks`
    /// (layers `fcK` of the model).
    pub fn new(
        product: infl_nn::Product,
        model: infl_nn::Mlp,
        inputs: Matrix,
        labels: Vec<i64>,
        blocks: Vec<Block>,
    ) -> Result<Self> {
        let shapes = model.parameter_layout();
        let layers = (blocks.iter())
            .map(|b| {
                let l = (0..shapes.len())
                    .find(|&l| infl_nn::Mlp::layer_name(l) == b.name)
                    .ok_or_else(|| {
                        let details = format!(
                            "layer `{}` is not a layer of the model (fc1..fc{})",
                            b.name,
                            shapes.len()
                        );
                        Error::config("hessian", details)
                    })?;
                let s = shapes[l];
                if (s.outputs, s.inputs, b.positions) != (b.outputs, b.inputs, 1) {
                    let details = format!(
                        "layer `{}`: the factors have {} outputs, {} inputs and {} position(s); \
                         the model's layer is [{}, {}]",
                        b.name, b.outputs, b.inputs, b.positions, s.outputs, s.inputs
                    );
                    return Err(Error::config("hessian", details));
                }
                Ok(l)
            })
            .collect::<Result<Vec<usize>>>()?;
        if inputs.cols() != model.inputs() || labels.len() != inputs.rows() {
            let details = format!(
                "{} examples of {} inputs with {} labels; the model takes {} inputs",
                inputs.rows(),
                inputs.cols(),
                labels.len(),
                model.inputs()
            );
            return Err(Error::config("hessian", details));
        }
        Ok(Self {
            product,
            plan: plan(&model, &inputs, &labels, &layers)?,
            model,
            inputs,
            labels,
            blocks,
            layers,
        })
    }
}

impl HessianOperator for NetworkHessian {
    fn dim(&self) -> usize {
        self.blocks.iter().map(Block::len).sum()
    }

    fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        self.apply_with(&self.plan, v, out)
    }

    fn examples(&self) -> Option<usize> {
        Some(self.inputs.rows())
    }

    /// A plan of the sampled examples (their passes), applied once.
    fn apply_examples(
        &self,
        rows: &[usize],
        v: MatRef<'_, f64>,
        out: MatMut<'_, f64>,
    ) -> Result<()> {
        super::check_rows(rows, self.inputs.rows())?;
        let labels: Vec<i64> = rows.iter().map(|&r| self.labels[r]).collect();
        let plan = plan(
            &self.model,
            &self.inputs.select_rows(rows),
            &labels,
            &self.layers,
        )?;
        self.apply_with(&plan, v, out)
    }
}

/// The passes of `inputs` for the model layers `layers`.
fn plan(
    model: &infl_nn::Mlp,
    inputs: &Matrix,
    labels: &[i64],
    layers: &[usize],
) -> Result<infl_nn::HvpPlan> {
    let x = ArrayView2::from_shape((inputs.rows(), inputs.cols()), inputs.data())
        .map_err(|e| Error::config("hessian", e.to_string()))?;
    Ok(model.hvp_plan(x, labels, layers)?)
}

impl NetworkHessian {
    /// Copies the chosen blocks (the user's order; the bias column when included) into the
    /// plan's layout (layer order, every bias), applies it, and reads the blocks back.
    fn apply_with(
        &self,
        plan: &infl_nn::HvpPlan,
        v: MatRef<'_, f64>,
        mut out: MatMut<'_, f64>,
    ) -> Result<()> {
        check_block(self.dim(), v, out.as_ref(), "hessian")?;
        let m = v.nrows();
        let places: Vec<infl_nn::LayerBlock> = (self.layers.iter())
            .map(|&l| plan.blocks()[l].expect("a plan of the chosen layers"))
            .collect();
        // Entry (k, c) of block b: `ours` in the chosen layout, `theirs` in the plan's.
        let entries = || {
            (self.blocks.iter().zip(&places)).flat_map(|(b, p)| {
                (0..b.outputs).flat_map(move |k| {
                    (0..b.width()).map(move |c| {
                        (
                            b.offset + k * b.width() + c,
                            p.offset + k * (p.inputs + 1) + c,
                        )
                    })
                })
            })
        };
        let mut compact = Array2::<f64>::zeros((m, plan.parameters()));
        for j in 0..m {
            entries().for_each(|(ours, theirs)| compact[(j, theirs)] = v[(j, ours)]);
        }
        let mut product = Array2::<f64>::zeros((m, plan.parameters()));
        plan.apply(self.product, compact.view(), product.view_mut())?;
        for j in 0..m {
            entries().for_each(|(ours, theirs)| out[(j, ours)] = product[(j, theirs)]);
        }
        Ok(())
    }
}
