//! Exact Hessian-vector products of the summed cross-entropy loss over all of an
//! [`Mlp`]'s parameters, by Pearlmutter's R-operator through the hand-written backward
//! pass, in f64.
//!
//! For a direction `V` (`dW_l`, `db_l` per layer), with `R(·)` the directional derivative
//! along `V`: forward `R z_l = R a_l W_lᵀ + a_l dW_lᵀ + db_l`, `R a_{l+1} = R z_l ⊙ 1[z_l > 0]`
//! (`R a_0 = 0`); at the head `R g_L = p ⊙ (R z_L − ⟨p, R z_L⟩)` (softmax cross-entropy,
//! `g_L = p − onehot(y)`); backward `R g_{l−1} = (R g_l W_l + g_l dW_l) ⊙ 1[z_{l−1} > 0]`
//! (ReLU's second derivative is zero almost everywhere, as autograd has it). The product
//! is `(H V)_{W_l} = Σ_i R g_{l,i} a_{l,i}ᵀ + g_{l,i} R a_{l,i}ᵀ` and `(H V)_{b_l} = Σ_i R
//! g_{l,i}`. Tested against central differences of f64 gradients.
//!
//! [`Product::GaussNewton`] drops the terms through the loss gradient `g` (the
//! `g_l dW_l` of the backward pass and the `g_l R a_lᵀ` of the product): what is left is
//! `Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i`, `J_i` the Jacobian of the logits — the
//! generalised Gauss–Newton matrix, which is the true Fisher of softmax cross-entropy
//! (the expectation of `∇ℓ∇ℓᵀ` over labels drawn from the model) and positive
//! semi-definite, where the Hessian of a ReLU network need not be.
//!
//! **Layout** (infl's, so that the estimators' operators use it unchanged): a parameter
//! vector is every layer in order, each as `[out, in + 1]` row-major with the bias as the
//! last column ([`Mlp::parameter_layout`]).
//!
//! **Cost and determinism**: one product costs about two forward-backward passes over the
//! examples. Examples are visited in fixed chunks of rows in order and the vectors of a
//! block in parallel (rayon), each vector's sums in the same order whatever the number of
//! threads: results do not depend on it. f64 throughout (the solvers' own precision):
//! an f32 product is not symmetric enough for CG at tight tolerances.

use infl_core::ranges;
use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, linalg::general_mat_mul, s,
};
use rayon::prelude::*;

use crate::{Error, Mlp, Result};

/// Examples per chunk of the products' forward passes.
const CHUNK: usize = 256;

/// A layer's block of a parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerBlock {
    /// Offset of the block in the vector.
    pub offset: usize,
    /// Outputs (rows of the block).
    pub outputs: usize,
    /// Inputs; the block has `inputs + 1` columns (the bias last).
    pub inputs: usize,
}

impl LayerBlock {
    /// `outputs · (inputs + 1)`.
    pub fn len(&self) -> usize {
        self.outputs * (self.inputs + 1)
    }

    /// Never empty (layers have at least one input and output).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which curvature a product applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Product {
    /// The exact Hessian.
    #[default]
    Hessian,
    /// The generalised Gauss–Newton matrix (the true Fisher; see the module docs).
    GaussNewton,
}

/// The model's layers in f64.
struct Layers64 {
    weights: Vec<Array2<f64>>,
    biases: Vec<Array1<f64>>,
}

impl Layers64 {
    fn of(model: &Mlp) -> Self {
        Self {
            weights: (model.layers().iter())
                .map(|l| l.weight.mapv(f64::from))
                .collect(),
            biases: (model.layers().iter())
                .map(|l| l.bias.mapv(f64::from))
                .collect(),
        }
    }
}

/// A chunk's forward and backward pass in f64: layer inputs (ReLU masks), probabilities
/// and output gradients, kept from the lowest wanted layer up (empty below it).
struct Pass {
    inputs: Vec<Array2<f64>>,
    probs: Array2<f64>,
    grads: Vec<Array2<f64>>,
}

impl Pass {
    fn run(net: &Layers64, x: ArrayView2<'_, f32>, labels: &[i64], lowest: usize) -> Self {
        let layers = net.weights.len();
        let mut inputs = Vec::with_capacity(layers);
        let mut a = x.mapv(f64::from);
        let mut z = Array2::zeros((0, 0));
        for l in 0..layers {
            z = a.dot(&net.weights[l].t()) + &net.biases[l];
            inputs.push(a);
            a = z.mapv(|v| v.max(0.0));
        }
        let mut probs = z;
        for mut p in probs.rows_mut() {
            let max = p.fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            p.mapv_inplace(|x| (x - max).exp());
            let sum = p.sum();
            p /= sum;
        }
        let mut g = probs.clone();
        for (mut row, &y) in g.rows_mut().into_iter().zip(labels) {
            row[y as usize] -= 1.0;
        }
        let mut grads = vec![Array2::zeros((0, 0)); layers];
        grads[layers - 1] = g;
        for l in (lowest + 1..layers).rev() {
            let mut prev = grads[l].dot(&net.weights[l]);
            relu_mask(&mut prev, &inputs[l]);
            grads[l - 1] = prev;
        }
        inputs[..lowest]
            .iter_mut()
            .for_each(|a| *a = Array2::zeros((0, 0)));
        Self {
            inputs,
            probs,
            grads,
        }
    }
}

/// `m[i, j] = 0` where the layer input `a[i, j] = relu(z) ≤ 0`.
fn relu_mask(m: &mut Array2<f64>, a: &Array2<f64>) {
    ndarray::Zip::from(m).and(a).for_each(|m, &a| {
        if a <= 0.0 {
            *m = 0.0;
        }
    });
}

/// The forward and backward passes of a set of examples, kept for many products of the
/// curvature's block on some layers ([`Mlp::hvp_plan`]). Holds, per example, the inputs
/// and output gradients of the layers from the lowest wanted one up, in f64.
pub struct HvpPlan {
    net: Layers64,
    /// Per model layer, its block in the plan's vectors (wanted layers only, in order).
    blocks: Vec<Option<LayerBlock>>,
    wanted: Vec<bool>,
    passes: Vec<Pass>,
}

impl std::fmt::Debug for HvpPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HvpPlan")
            .field("wanted", &self.wanted)
            .field("chunks", &self.passes.len())
            .finish_non_exhaustive()
    }
}

impl Mlp {
    /// The blocks of a parameter vector (see the module docs), layers in order.
    pub fn parameter_layout(&self) -> Vec<LayerBlock> {
        let mut offset = 0;
        (self.layers().iter())
            .map(|l| {
                let block = LayerBlock {
                    offset,
                    outputs: l.outputs(),
                    inputs: l.inputs(),
                };
                offset += block.len();
                block
            })
            .collect()
    }

    /// Runs and keeps the passes of the examples `x` `[N, in]` with `labels` for products
    /// of the curvature's principal block on the layers `wanted` (0-based, any order). The
    /// plan's vectors hold the wanted layers' blocks only, in layer order
    /// ([`HvpPlan::blocks`]).
    pub fn hvp_plan(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[i64],
        wanted: &[usize],
    ) -> Result<HvpPlan> {
        self.check_input(&x)?;
        if labels.len() != x.nrows() {
            let details = format!("expected {} labels, found {}", x.nrows(), labels.len());
            return Err(Error::shape("Mlp::hvp_plan", details));
        }
        let shape = Array2::<f32>::zeros((labels.len(), self.classes()));
        crate::mlp::check_labels(labels, shape.view())?;
        let layers = self.layers().len();
        let Some(&lowest) = wanted.iter().min() else {
            return Err(Error::config("layers", "no layer wanted"));
        };
        if let Some(bad) = wanted.iter().find(|&&l| l >= layers) {
            let details = format!("layer {bad}; the model has {layers}");
            return Err(Error::config("layers", details));
        }
        let net = Layers64::of(self);
        let passes = (ranges(x.nrows(), CHUNK).collect::<Vec<_>>().into_par_iter())
            .map(|rows| Pass::run(&net, x.slice(s![rows.clone(), ..]), &labels[rows], lowest))
            .collect();
        let wanted: Vec<bool> = (0..layers).map(|l| wanted.contains(&l)).collect();
        let mut offset = 0;
        let blocks = (self.parameter_layout().into_iter().zip(&wanted))
            .map(|(b, &w)| {
                w.then(|| {
                    let block = LayerBlock { offset, ..b };
                    offset += block.len();
                    block
                })
            })
            .collect();
        Ok(HvpPlan {
            blocks,
            wanted,
            net,
            passes,
        })
    }

    /// `out = H v` for every row of `v` (`[m, P]`, the module's layout), `H` the Hessian
    /// (or Gauss–Newton matrix, per `product`) of the *summed* cross-entropy loss of the
    /// examples `x` `[N, in]` with labels `labels`, at this model's parameters.
    pub fn hessian_vector_products(
        &self,
        product: Product,
        x: ArrayView2<'_, f32>,
        labels: &[i64],
        v: ArrayView2<'_, f64>,
        out: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        let all: Vec<usize> = (0..self.layers().len()).collect();
        self.hvp_plan(x, labels, &all)?.apply(product, v, out)
    }
}

impl HvpPlan {
    /// Per model layer, its block in the plan's vectors (`None` for a layer not wanted).
    pub fn blocks(&self) -> &[Option<LayerBlock>] {
        &self.blocks
    }

    /// The width of the plan's vectors: the wanted layers' parameters.
    pub fn parameters(&self) -> usize {
        self.blocks.iter().flatten().map(LayerBlock::len).sum()
    }

    /// `out = H_W v` for every row of `v` (`[m, P_W]`, the wanted layers' blocks): the
    /// curvature's principal block on the wanted layers `W`.
    pub fn apply(
        &self,
        product: Product,
        v: ArrayView2<'_, f64>,
        mut out: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        let p = self.parameters();
        if v.ncols() != p || out.dim() != v.dim() || !out.is_standard_layout() {
            let details = format!(
                "expected vectors [m, {p}] and a standard-layout output of the same shape; found \
                 {:?} and {:?}",
                v.dim(),
                out.dim()
            );
            return Err(Error::shape("Mlp::hessian_vector_products", details));
        }
        out.fill(0.0);
        (out.axis_iter_mut(Axis(0)).into_par_iter())
            .zip(v.axis_iter(Axis(0)).into_par_iter())
            .for_each(|(mut o, v)| {
                let v = v.as_standard_layout();
                let dirs = directions(v.as_slice().expect("standard layout"), &self.blocks);
                let o = o.as_slice_mut().expect("rows of a standard-layout block");
                for pass in &self.passes {
                    self.accumulate(product, pass, &dirs, o);
                }
            });
        Ok(())
    }

    /// Adds one chunk's product to `out` (one direction; the module docs' R-operator,
    /// restricted to the wanted layers).
    fn accumulate(
        &self,
        product: Product,
        pass: &Pass,
        dirs: &[Option<Direction<'_>>],
        out: &mut [f64],
    ) {
        let (net, wanted) = (&self.net, &self.wanted);
        let layers = net.weights.len();
        let lowest = wanted.iter().position(|&w| w).unwrap_or(layers);
        // Forward: R z_l and R a_l (None while zero, below the lowest wanted layer).
        let mut r_inputs: Vec<Option<Array2<f64>>> = vec![None; layers];
        let mut rz = None;
        for l in lowest..layers {
            let mut z = (dirs[l].as_ref()).map(|(dw, db)| pass.inputs[l].dot(&dw.t()) + db);
            if let Some(ra) = &r_inputs[l] {
                match &mut z {
                    Some(z) => general_mat_mul(1.0, ra, &net.weights[l].t(), 1.0, z),
                    None => z = Some(ra.dot(&net.weights[l].t())),
                }
            }
            if l + 1 < layers {
                if let Some(z) = &mut z {
                    relu_mask(z, &pass.inputs[l + 1]);
                }
                r_inputs[l + 1] = z;
            } else {
                rz = z;
            }
        }
        let Some(mut rg) = rz else { return };
        // Head: R g_L = p ⊙ (R z_L − ⟨p, R z_L⟩).
        for (mut r, p) in rg.rows_mut().into_iter().zip(pass.probs.rows()) {
            let dot = r.dot(&p);
            r.zip_mut_with(&p, |r, &p| *r = p * (*r - dot));
        }
        // Backward, accumulating the wanted layers' products.
        for l in (lowest..layers).rev() {
            if let Some(b) = self.blocks[l] {
                let mut block = ArrayViewMut2::from_shape(
                    (b.outputs, b.inputs + 1),
                    &mut out[b.offset..b.offset + b.len()],
                )
                .expect("the layout fits the vector");
                let mut w = block.slice_mut(s![.., ..b.inputs]);
                general_mat_mul(1.0, &rg.t(), &pass.inputs[l], 1.0, &mut w);
                if let (Some(ra), Product::Hessian) = (&r_inputs[l], product) {
                    general_mat_mul(1.0, &pass.grads[l].t(), ra, 1.0, &mut w);
                }
                let mut bias = block.column_mut(b.inputs);
                bias += &rg.sum_axis(Axis(0));
            }
            if l > lowest {
                let mut prev = rg.dot(&net.weights[l]);
                if let (Some((dw, _)), Product::Hessian) = (&dirs[l], product) {
                    general_mat_mul(1.0, &pass.grads[l], dw, 1.0, &mut prev);
                }
                relu_mask(&mut prev, &pass.inputs[l]);
                rg = prev;
            }
        }
    }
}

/// A layer's direction: `(dW, db)`.
type Direction<'v> = (ArrayView2<'v, f64>, ArrayView1<'v, f64>);

/// One vector's per-layer directions (`None` for layers without a block).
fn directions<'v>(v: &'v [f64], blocks: &[Option<LayerBlock>]) -> Vec<Option<Direction<'v>>> {
    (blocks.iter())
        .map(|b| {
            b.map(|b| {
                let m = ArrayView2::from_shape(
                    (b.outputs, b.inputs + 1),
                    &v[b.offset..b.offset + b.len()],
                )
                .expect("the layout fits the vector");
                (
                    m.slice_move(s![.., ..b.inputs]),
                    m.index_axis_move(Axis(1), b.inputs),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summed loss's gradient in f64 at `net`, in the module's layout.
    fn gradient(
        net: &Layers64,
        x: ArrayView2<'_, f32>,
        labels: &[i64],
        layout: &[LayerBlock],
    ) -> Vec<f64> {
        let pass = Pass::run(net, x, labels, 0);
        let mut out = vec![0.0; layout.iter().map(LayerBlock::len).sum()];
        for (l, b) in layout.iter().enumerate() {
            for o in 0..b.outputs {
                for i in 0..=b.inputs {
                    out[b.offset + o * (b.inputs + 1) + i] = (0..x.nrows())
                        .map(|n| {
                            let a = if i < b.inputs {
                                pass.inputs[l][(n, i)]
                            } else {
                                1.0
                            };
                            pass.grads[l][(n, o)] * a
                        })
                        .sum();
                }
            }
        }
        out
    }

    fn shifted(net: &Layers64, v: &[f64], layout: &[LayerBlock], eps: f64) -> Layers64 {
        let mut weights = net.weights.clone();
        let mut biases = net.biases.clone();
        for (l, b) in layout.iter().enumerate() {
            for o in 0..b.outputs {
                for i in 0..b.inputs {
                    weights[l][(o, i)] += eps * v[b.offset + o * (b.inputs + 1) + i];
                }
                biases[l][o] += eps * v[b.offset + o * (b.inputs + 1) + b.inputs];
            }
        }
        Layers64 { weights, biases }
    }

    fn data(n: usize, d: usize, k: usize) -> (Array2<f32>, Vec<i64>) {
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            (((i * 31 + j * 17) % 23) as f32 - 11.0) / 7.0
        });
        let labels = (0..n).map(|i| ((i * 7) % k) as i64).collect();
        (x, labels)
    }

    #[test]
    fn products_match_central_differences_of_gradients() {
        let model = Mlp::new(6, &[9, 7], 4, 3).unwrap();
        let (x, labels) = data(300, 6, 4);
        let layout = model.parameter_layout();
        let p: usize = layout.iter().map(LayerBlock::len).sum();
        let v = Array2::from_shape_fn((2, p), |(r, j)| {
            (((j * 13 + r * 5) % 19) as f64 - 9.0) / 9.0
        });
        let mut hv = Array2::zeros((2, p));
        model
            .hessian_vector_products(Product::Hessian, x.view(), &labels, v.view(), hv.view_mut())
            .unwrap();
        let net = Layers64::of(&model);
        let eps = 1e-6;
        for r in 0..2 {
            let dir = v.row(r).to_vec();
            let plus = gradient(
                &shifted(&net, &dir, &layout, eps),
                x.view(),
                &labels,
                &layout,
            );
            let minus = gradient(
                &shifted(&net, &dir, &layout, -eps),
                x.view(),
                &labels,
                &layout,
            );
            let scale = hv.row(r).iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(scale > 1e-3, "a non-trivial product");
            for j in 0..p {
                let fd = (plus[j] - minus[j]) / (2.0 * eps);
                assert!(
                    (fd - hv[(r, j)]).abs() <= 1e-6 * scale,
                    "parameter {j}: finite differences {fd}, R-operator {}",
                    hv[(r, j)]
                );
            }
        }
    }

    #[test]
    fn products_are_symmetric_and_thread_count_independent() {
        let model = Mlp::new(5, &[8], 3, 1).unwrap();
        let (x, labels) = data(600, 5, 3);
        let p = model.parameters();
        let v = Array2::from_shape_fn((3, p), |(r, j)| {
            (((j * 11 + r * 3) % 17) as f64 - 8.0) / 8.0
        });
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut hv = Array2::zeros((3, p));
                model
                    .hessian_vector_products(
                        Product::Hessian,
                        x.view(),
                        &labels,
                        v.view(),
                        hv.view_mut(),
                    )
                    .unwrap();
                hv
            })
        };
        let hv = run(1);
        assert_eq!(hv, run(3));
        // vᵢᵀ H vⱼ = vⱼᵀ H vᵢ.
        let a = v.row(0).dot(&hv.row(1));
        let b = v.row(1).dot(&hv.row(0));
        assert!((a - b).abs() <= 1e-10 * a.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn gauss_newton_is_the_expected_outer_product_of_sampled_gradients() {
        // G = Σ_i Σ_y p_i(y) ∇ℓ_i(y) ∇ℓ_i(y)ᵀ: the true Fisher, summed over every label.
        let model = Mlp::new(4, &[6], 3, 5).unwrap();
        let (x, labels) = data(40, 4, 3);
        let layout = model.parameter_layout();
        let p = model.parameters();
        let v = Array2::from_shape_fn((1, p), |(_, j)| (((j * 7) % 13) as f64 - 6.0) / 6.0);
        let mut gn = Array2::zeros((1, p));
        model
            .hessian_vector_products(
                Product::GaussNewton,
                x.view(),
                &labels,
                v.view(),
                gn.view_mut(),
            )
            .unwrap();
        let net = Layers64::of(&model);
        let mut expected = vec![0.0; p];
        for i in 0..x.nrows() {
            let row = x.slice(s![i..i + 1, ..]);
            let probs = Pass::run(&net, row, &[0], 0).probs;
            for y in 0..3 {
                let grad = gradient(&net, row, &[y as i64], &layout);
                let dot: f64 = grad.iter().zip(v.row(0)).map(|(g, v)| g * v).sum();
                for j in 0..p {
                    expected[j] += probs[(0, y)] * dot * grad[j];
                }
            }
        }
        let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for j in 0..p {
            assert!(
                (expected[j] - gn[(0, j)]).abs() <= 1e-10 * scale,
                "parameter {j}"
            );
        }
        // And it differs from the Hessian of the ReLU network.
        let mut h = Array2::zeros((1, p));
        model
            .hessian_vector_products(Product::Hessian, x.view(), &labels, v.view(), h.view_mut())
            .unwrap();
        assert!((&h - &gn).iter().any(|d| d.abs() > 1e-6 * scale));
    }

    #[test]
    fn a_plan_on_some_layers_is_the_principal_block() {
        let model = Mlp::new(5, &[6, 4], 3, 2).unwrap();
        let (x, labels) = data(100, 5, 3);
        let layout = model.parameter_layout();
        let p = model.parameters();
        let v = Array2::from_shape_fn((2, p), |(r, j)| (((j * 5 + r) % 9) as f64 - 4.0) / 4.0);
        for product in [Product::Hessian, Product::GaussNewton] {
            for wanted in [vec![2], vec![0, 2], vec![1]] {
                let mut masked = v.clone();
                for (l, b) in layout.iter().enumerate() {
                    if !wanted.contains(&l) {
                        masked
                            .slice_mut(s![.., b.offset..b.offset + b.len()])
                            .fill(0.0);
                    }
                }
                let mut full = Array2::zeros((2, p));
                model
                    .hessian_vector_products(
                        product,
                        x.view(),
                        &labels,
                        masked.view(),
                        full.view_mut(),
                    )
                    .unwrap();
                let plan = model.hvp_plan(x.view(), &labels, &wanted).unwrap();
                let compact = |m: &Array2<f64>| {
                    let cols: Vec<usize> = (layout.iter().enumerate())
                        .filter(|(l, _)| wanted.contains(l))
                        .flat_map(|(_, b)| b.offset..b.offset + b.len())
                        .collect();
                    m.select(Axis(1), &cols)
                };
                assert_eq!(plan.parameters(), compact(&v).ncols());
                let mut got = Array2::zeros((2, plan.parameters()));
                plan.apply(product, compact(&v).view(), got.view_mut())
                    .unwrap();
                let want = compact(&full);
                let diff = (&got - &want).mapv(f64::abs).fold(0.0f64, |m, &x| m.max(x));
                let scale = want.mapv(f64::abs).fold(0.0f64, |m, &x| m.max(x));
                assert!(
                    scale > 0.0 && diff <= 1e-12 * scale,
                    "{product:?} {wanted:?}: {diff}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let model = Mlp::new(5, &[4], 3, 0).unwrap();
        let (x, labels) = data(10, 5, 3);
        let p = model.parameters();
        let mut out = Array2::zeros((1, p));
        let short = Array2::zeros((1, p - 1));
        assert!(
            model
                .hessian_vector_products(
                    Product::Hessian,
                    x.view(),
                    &labels,
                    short.view(),
                    out.view_mut()
                )
                .is_err()
        );
        let v = Array2::zeros((1, p));
        assert!(
            model
                .hessian_vector_products(
                    Product::Hessian,
                    x.view(),
                    &labels[..9],
                    v.view(),
                    out.view_mut()
                )
                .is_err()
        );
        let bad = vec![5; 10];
        assert!(
            model
                .hessian_vector_products(Product::Hessian, x.view(), &bad, v.view(), out.view_mut())
                .is_err()
        );
    }
}
