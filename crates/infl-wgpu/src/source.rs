//! The WGSL sources of the kernels, embedded from the top-level `shaders/` folder.
//!
//! This is the only place that names shader files: one `include_str!` per shader, so a
//! test can check that every file in `shaders/` is listed here and that every entry
//! parses and validates with naga.

/// One compute shader of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Fused score tile `Σ w (G_q G_tᵀ) ⊙ (A_q A_tᵀ + bias)` (`shaders/fused_scores.wgsl`).
    FusedScores,
    /// Per-row top-k selection of a score block (`shaders/topk_rows.wgsl`).
    TopkRows,
    /// Self-influence `Σ w ‖g‖² (‖a‖² + bias)` (`shaders/self_influence.wgsl`).
    SelfInfluence,
    /// General tiled matrix product (`shaders/gemm.wgsl`).
    Gemm,
}

impl Shader {
    /// Every shader, in table order.
    pub const ALL: [Shader; 4] = [
        Shader::FusedScores,
        Shader::TopkRows,
        Shader::SelfInfluence,
        Shader::Gemm,
    ];

    /// Position in [`Shader::ALL`], for tables indexed by shader (the backend's pipelines).
    pub const fn index(self) -> usize {
        // Fieldless enum: discriminants are 0.. in declaration order, the order of `ALL`
        // (checked by a test).
        self as usize
    }

    /// The file name in `shaders/`.
    pub fn file_name(&self) -> &'static str {
        self.entry().0
    }

    /// The WGSL source.
    pub fn source(&self) -> &'static str {
        self.entry().1
    }

    fn entry(&self) -> (&'static str, &'static str) {
        macro_rules! shader {
            ($file:literal) => {
                ($file, include_str!(concat!("../../../shaders/", $file)))
            };
        }
        match self {
            Shader::FusedScores => shader!("fused_scores.wgsl"),
            Shader::TopkRows => shader!("topk_rows.wgsl"),
            Shader::SelfInfluence => shader!("self_influence.wgsl"),
            Shader::Gemm => shader!("gemm.wgsl"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, s) in Shader::ALL.iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?}");
        }
    }
}
