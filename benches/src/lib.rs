//! Criterion benchmarks of infl (see `benches/`), and the synthetic data they share.

pub mod index_data {
    //! Seeded synthetic embeddings for the index benchmarks (`benches/benches/index.rs`,
    //! `benches/examples/index_build.rs`): low rank plus noise, with heavy-tailed norms,
    //! as gradient embeddings are (a few directions dominate; norms span orders of
    //! magnitude).
    //!
    //! Row `i` is `‖·‖ = exp(σ z_i)` (log-normal, σ = 1) times the unit vector of
    //! `u_i V / √r + 0.5 ε_i / √E`, with `u_i ~ N(0, I_r)`, `r = 8`, `V` `[r, E]` and `ε_i`
    //! Gaussian. Every row is drawn from its own SplitMix64 stream keyed by `(seed, i)`, so
    //! the data is the same whatever the thread count.

    use infl::index::Recipe;
    use infl::{Bias, FactorMatrices, FactorTerm, Matrix, TermSet};

    /// Rank of the shared low-rank part.
    pub const RANK: usize = 8;

    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// A standard normal (Box–Muller, one of the pair).
        fn normal(&mut self) -> f64 {
            let u1 = ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn stream(seed: u64, i: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ 0xD1B5_4A32_D192_ED03);
        let k = s.next();
        SplitMix(k ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    /// `[n, width]` embeddings (see the module docs); `seed` picks both the basis and the
    /// rows (use another seed for queries *from another basis*, or [`rows_of`] for
    /// queries from the same one).
    pub fn embeddings(n: usize, width: usize, seed: u64) -> Matrix {
        rows_of(n, width, seed, seed)
    }

    /// `[n, width]` rows drawn with the basis of `basis_seed` and row streams of `seed`.
    pub fn rows_of(n: usize, width: usize, basis_seed: u64, seed: u64) -> Matrix {
        let mut b = stream(basis_seed, u64::MAX);
        let basis: Vec<f64> = (0..RANK * width).map(|_| b.normal()).collect();
        let mut data = vec![0.0f32; n * width];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = n.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            for (c, chunk) in data.chunks_mut(per * width.max(1)).enumerate() {
                let basis = &basis;
                scope.spawn(move || {
                    for (r, row) in chunk.chunks_mut(width.max(1)).enumerate() {
                        fill_row(row, basis, seed, (c * per + r) as u64);
                    }
                });
            }
        });
        Matrix::from_vec(n, width, data).expect("shape")
    }

    fn fill_row(row: &mut [f32], basis: &[f64], seed: u64, i: u64) {
        let width = row.len();
        let mut s = stream(seed, i);
        let u: Vec<f64> = (0..RANK).map(|_| s.normal()).collect();
        let mut x: Vec<f64> = (0..width)
            .map(|j| {
                let low: f64 = (0..RANK).map(|r| u[r] * basis[r * width + j]).sum();
                low / (RANK as f64).sqrt() + 0.5 * s.normal() / (width as f64).sqrt()
            })
            .collect();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let scale = s.normal().exp() / norm;
        x.iter_mut().for_each(|v| *v *= scale);
        row.iter_mut().zip(&x).for_each(|(o, v)| *o = *v as f32);
    }

    /// The one-term set whose embeddings are `train` (and `test`): `a` = the rows, `g` = a
    /// column of ones, one position, no bias.
    pub fn one_term(train: Matrix, test: Option<Matrix>) -> TermSet {
        let ones = |m: Matrix| FactorMatrices {
            g: Matrix::from_fn(m.rows(), 1, |_, _| 1.0),
            a: m,
        };
        TermSet {
            terms: vec![FactorTerm {
                label: "synthetic".into(),
                weight: 1.0,
                bias: Bias::Excluded,
                positions: 1,
                train: ones(train),
                test: test.map(ones),
            }],
        }
    }

    /// The recipe of a synthetic set (no estimator made it).
    pub fn recipe(set: &TermSet) -> Recipe {
        Recipe {
            method: "synthetic".into(),
            settings: vec![("generator".into(), "infl-benches index_data".into())],
            checkpoints: vec!["synthetic".into()],
            learning_rates: vec![1.0],
            layers: vec!["synthetic".into()],
            terms: Recipe::term_shapes(set),
        }
    }
}
