//! TracInCPFastRandProj (Pruthi et al. 2020, appendix F; Captum's
//! `TracInCPFastRandProj`): TracInCPFast with both factors randomly projected.
//!
//! Per checkpoint `c`, example `i`: `J_ci P_J` and `a_ci P_a` with one pair of Gaussian
//! matrices for every checkpoint, `P_J` `[K, k_J]` and `P_a` `[D, k_a]`,
//! `k_J = min(⌊√p⌋, K)`, `k_a = min(⌊√p⌋, D)`, entries `N(0, 1/k)` (so `E[P Pᵀ] = I` and
//! every score is unbiased). The example's embedding is
//! `e_i = concat_c √lr_c · vec((J_ci P_J) ⊗ (a_ci P_a))` and a score is `e_i·e_j`
//! `= Σ_c lr_c (J P_J·J' P_J)(a P_a·a' P_a)`: one engine term per checkpoint with the
//! projected factors, so scores, top-k and self-influence (`‖e_i‖²`) are the engine's.
//! With no projection dimension, or `K·D ≤ p`, nothing is projected and the numbers are
//! TracInCPFast's (Captum's rule). No bias term, as Captum.
//!
//! **Seeds.** infl cannot reproduce torch's RNG, so a projected run matches Captum in
//! distribution, not seed for seed. The matrices are drawn from ChaCha8 keyed by the seed
//! (stream 0 for `P_J`, 1 for `P_a`, row-major), with Box–Muller through `libm`'s
//! portable `log`/`cos`/`sin`: the same bits on every platform and thread count.

use infl_core::{Backend, Bias, Matrix, Rhs};

use super::{Audience, Estimator, Indexing, Input, Options, Registration, TracInCPFast};
use crate::engine::{FactorMatrices, Progress};
use crate::run::{Prepared, Run};
use crate::{Error, Result};

pub(super) const REGISTRATION: Registration = Registration {
    name: "tracincp-fast-rand-proj",
    label: "TracInCPFastRandProj",
    about: "TracInCPFast with random projections (Pruthi et al. 2020; as Captum's \
            TracInCPFastRandProj; --projection-dim, --seed)",
    build: |o| Box::new(TracInCPFastRandProj::from(o)),
    input: Input::Features,
    audience: Audience::Users,
    indexing: Indexing::Embeddings,
};

/// TracInCPFastRandProj settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracInCPFastRandProj {
    /// The unprojected estimator (its bias is always left out, as Captum).
    pub fast: TracInCPFast,
    /// Captum's `projection_dim` `p` (`None`: no projection, Captum's default).
    pub projection_dim: Option<usize>,
    /// Seed of the projection matrices (Captum's default is 0).
    pub seed: u64,
}

impl Default for TracInCPFastRandProj {
    fn default() -> Self {
        Self::from(&Options::default())
    }
}

impl From<&Options> for TracInCPFastRandProj {
    fn from(o: &Options) -> Self {
        Self {
            fast: TracInCPFast {
                bias: Bias::Excluded,
                ..TracInCPFast::from(o)
            },
            projection_dim: o.projection_dim,
            seed: o.seed,
        }
    }
}

/// The projection matrices of one run: `P_J` `[K, k_J]` and `P_a` `[D, k_a]`.
#[derive(Clone, Debug)]
pub struct Projections {
    /// Projects the loss gradients `J` `[N, K]`.
    pub jacobian: Matrix,
    /// Projects the layer inputs `a` `[N, D]`.
    pub input: Matrix,
}

impl Projections {
    /// Captum's sizes for `K` outputs, `D` inputs and dimension `p`, or `None` when
    /// `K·D ≤ p` (nothing to gain: no projection).
    pub fn sizes(outputs: usize, inputs: usize, p: usize) -> Option<(usize, usize)> {
        if outputs.saturating_mul(inputs) <= p {
            return None;
        }
        let root = (p as f64).sqrt().floor() as usize;
        Some((root.min(outputs).max(1), root.min(inputs).max(1)))
    }

    /// Seeded Gaussian matrices with entries `N(0, 1/k)` (see the module docs), or `None`
    /// when [`sizes`](Self::sizes) says no projection.
    pub fn draw(outputs: usize, inputs: usize, p: usize, seed: u64) -> Result<Option<Self>> {
        let Some((kj, ka)) = Self::sizes(outputs, inputs, p) else {
            return Ok(None);
        };
        Ok(Some(Self {
            jacobian: gaussian(outputs, kj, seed, 0)?,
            input: gaussian(inputs, ka, seed, 1)?,
        }))
    }
}

/// A `[rows, cols]` matrix of `N(0, 1/cols)` entries from ChaCha8 (`seed`, `stream`).
fn gaussian(rows: usize, cols: usize, seed: u64, stream: u64) -> Result<Matrix> {
    let std = 1.0 / (cols as f64).sqrt();
    let v = crate::seeded::standard_normals(seed, stream, rows * cols);
    Ok(Matrix::from_vec(
        rows,
        cols,
        v.iter().map(|x| (x * std) as f32).collect(),
    )?)
}

impl Estimator for TracInCPFastRandProj {
    fn registration(&self) -> &'static Registration {
        &REGISTRATION
    }

    fn settings(&self) -> Vec<(String, String)> {
        let mut s = self.fast.settings();
        s.retain(|(k, _)| k != "include_bias");
        s.push((
            "projection_dim".into(),
            self.projection_dim.map_or("none".into(), |p| p.to_string()),
        ));
        s.push(("seed".into(), self.seed.to_string()));
        s
    }

    /// TracInCPFast (bias excluded) when a projection dimension is set. With `K·D ≤ p`
    /// nothing is projected, but whether that holds depends on the run, so the exact
    /// estimator is offered whenever `p` is given (rescoring is then merely redundant).
    fn unprojected(&self) -> Option<Box<dyn Estimator>> {
        self.projection_dim
            .map(|_| Box::new(self.fast) as Box<dyn Estimator>)
    }

    /// TracInCPFast's terms with projected factors.
    fn prepare(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Prepared> {
        let prepared = self.fast.prepare(backend, run, progress)?;
        match self.projections(&prepared)? {
            Some(p) => project(backend, prepared, &p),
            None => Ok(prepared),
        }
    }
}

impl TracInCPFastRandProj {
    /// [`prepare`](Estimator::prepare) with given projection matrices (e.g. Captum's, to
    /// check the definition against its numbers) instead of seeded ones.
    pub fn prepare_with(
        &self,
        backend: &dyn Backend,
        run: &Run,
        projections: &Projections,
    ) -> Result<Prepared> {
        project(backend, self.fast.prepare(backend, run, &())?, projections)
    }

    /// The projection for a prepared run (sizes from its first term), if any.
    pub fn projections(&self, prepared: &Prepared) -> Result<Option<Projections>> {
        let (Some(p), Some(first)) = (self.projection_dim, prepared.set.terms.first()) else {
            return Ok(None);
        };
        if p == 0 {
            return Err(Error::config(
                "projection_dim",
                "expected a positive projection dimension, found 0",
            ));
        }
        Projections::draw(first.train.g.cols(), first.train.a.cols(), p, self.seed)
    }
}

/// Every term's factors replaced by their projections `J P_J`, `a P_a`.
fn project(backend: &dyn Backend, mut prepared: Prepared, p: &Projections) -> Result<Prepared> {
    let (k, d) = (p.jacobian.rows(), p.input.rows());
    for term in &mut prepared.set.terms {
        if term.train.g.cols() != k || term.train.a.cols() != d {
            return Err(Error::config(
                "projections",
                format!(
                    "{}: expected projections of {} outputs and {} inputs, found {k} and {d}",
                    term.label,
                    term.train.g.cols(),
                    term.train.a.cols()
                ),
            ));
        }
        let project = |f: &FactorMatrices| -> Result<FactorMatrices> {
            Ok(FactorMatrices {
                a: product(backend, &f.a, &p.input)?,
                g: product(backend, &f.g, &p.jacobian)?,
            })
        };
        term.train = project(&term.train)?;
        term.test = term.test.as_ref().map(project).transpose()?;
    }
    Ok(prepared)
}

/// `x · p` on the backend.
fn product(backend: &dyn Backend, x: &Matrix, p: &Matrix) -> Result<Matrix> {
    let mut out = vec![0.0f32; x.rows() * p.cols()];
    backend.gemm(x.view(), p.view(), Rhs::AsIs, &mut out)?;
    Ok(Matrix::from_vec(x.rows(), p.cols(), out)?)
}
