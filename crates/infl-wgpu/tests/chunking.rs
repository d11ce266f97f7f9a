//! GPU-specific checks: tiny injected limits (many blocks, split dispatches, gathered GEMM
//! columns), exact top-k under heavy ties, streaming with offsets, a proptest over random
//! shapes, errors matched through `infl_core::Error`, and adapter selection.

mod common;

use infl_core::testing::{
    Problem, check_gemm, check_scores, check_self_influence, check_topk, rand_matrix,
};
use infl_core::{Backend, Bias, Factors, Matrix, Term, TopK, TopKRows};
use infl_wgpu::{AdapterPolicy, BlockCaps, ChunkLimits, GpuError, Options, WgpuBackend};
use proptest::prelude::*;

fn tiny(binding: u64, workgroups: u32) -> Option<WgpuBackend> {
    common::open(Options {
        limits: Some(ChunkLimits {
            max_binding_bytes: binding,
            max_workgroups_per_dim: workgroups,
        }),
        ..Options::default()
    })
}

#[test]
fn tiny_limits_force_many_chunks() {
    let Some(b) = tiny(8 << 10, 2) else { return };
    assert_eq!(b.limits().max_workgroups_per_dim, 2);
    let mut p = Problem::new(137, 257, 33, 5, 2, 1);
    check_scores(&b, &p);
    p.bias = Bias::Included;
    check_scores(&b, &p);
    check_topk(&b, &p, 7);
    check_topk(&b, &p, 1);
    check_self_influence(&b, &Problem::new(1, 257, 63, 10, 3, 2));
    // k = 63: 8 KiB holds 512 floats, so both GEMM operands and the output are chunked and
    // the non-transposed b is gathered column block by column block.
    check_gemm(&b, 137, 257, 63, 3);
}

#[test]
fn small_caps_and_tiles() {
    let Some(b) = common::open(Options {
        caps: BlockCaps {
            query_rows: 5,
            train_rows: 7,
        },
        tiles: infl_wgpu::Tiles {
            train: 8,
            query: 4,
            depth: 3,
        },
        ..Options::default()
    }) else {
        return;
    };
    let p = Problem::new(63, 137, 17, 3, 2, 9);
    check_scores(&b, &p);
    check_topk(&b, &p, 3);
    check_topk(&b, &p, 7);
    check_self_influence(&b, &p);
    check_gemm(&b, 63, 137, 17, 4);
}

/// Factors with entries in {-1, 0, 1}: scores are small integers, so ties are everywhere
/// and the result must equal sorting exactly, indices included.
fn tie_problem(nq: usize, nt: usize, seed: u64) -> Problem {
    let q = |m: Matrix| {
        Matrix::from_fn(m.rows(), m.cols(), |r, c| {
            (m.view().row(r)[c] * 1.5).round()
        })
    };
    let mut p = Problem::new(nq, nt, 3, 2, 2, seed);
    for d in &mut p.data {
        d.weight = 1.0;
        for m in d.matrices_mut() {
            *m = q(m.clone());
        }
    }
    p
}

#[test]
fn topk_is_exact_under_ties() {
    let Some(full) = common::gpu() else { return };
    let Some(chunked) = tiny(2 << 10, 3) else {
        return;
    };
    for (b, nt) in [(&full, 300), (&chunked, 300), (&full, 1000)] {
        let p = tie_problem(9, nt, nt as u64);
        let terms = p.terms();
        let want_scores = infl_core::backend::reference::scores(&terms).unwrap();
        for k in [1, 5, 40, nt - 1] {
            let mut acc = TopK::new(9, k).unwrap();
            b.topk(&terms, 0, &mut acc).unwrap();
            assert_eq!(
                acc.finish(),
                TopKRows::from_full(&want_scores, nt, k),
                "k={k}"
            );
        }
    }
}

#[test]
fn topk_streams_over_offsets() {
    let Some(b) = tiny(4 << 10, 4) else { return };
    let p = Problem::new(20, 200, 9, 4, 2, 77);
    let terms = p.terms();
    let want = infl_core::backend::reference::scores(&terms).unwrap();
    let mut acc = TopK::new(20, 6).unwrap();
    for part in [150..200, 0..60, 60..150] {
        let terms: Vec<Term<'_>> = terms
            .iter()
            .map(|t| Term {
                train: t.train.slice_rows(part.start, part.end),
                ..*t
            })
            .collect();
        b.topk(&terms, part.start, &mut acc).unwrap();
    }
    let got = acc.finish();
    let exp = TopKRows::from_full(&want, 200, 6);
    for (g, w) in got.proponents.iter().zip(&exp.proponents) {
        let gi: Vec<_> = g.iter().map(|r| r.index).collect();
        let wi: Vec<_> = w.iter().map(|r| r.index).collect();
        assert_eq!(gi, wi);
    }
}

#[test]
fn errors_are_reported_not_panics() {
    let Some(b) = tiny(256, 8) else { return };
    // One row of 4096 + 10 floats does not fit in a 256-byte binding.
    let p = Problem::new(2, 3, 4096, 10, 1, 0);
    let mut out = vec![0.0; 6];
    let e = b.scores(&p.terms(), &mut out).unwrap_err();
    assert!(e.to_string().contains("binding"), "{e}");
    // The GPU's own error survives the `Backend` boundary and can be matched.
    match e.backend_error::<GpuError>() {
        Some(GpuError::TooLarge {
            op, needed, limit, ..
        }) => {
            assert_eq!(*op, "scores");
            assert_eq!(*needed, (4096 + 10) * 4);
            assert_eq!(*limit, 256);
        }
        other => panic!("expected GpuError::TooLarge, got {other:?} from {e}"),
    }
    assert!(matches!(e, infl_core::Error::Backend { ref backend, .. } if backend == "wgpu"));
    // Shape errors come from infl-core's checks.
    let a = rand_matrix(2, 3, 1);
    let g = rand_matrix(2, 1, 2);
    let terms = [Term {
        weight: 1.0,
        bias: Bias::Excluded,
        query: Factors::new(a.view(), g.view()).unwrap(),
        train: Factors::new(a.view(), g.view()).unwrap(),
    }];
    assert!(b.scores(&terms, &mut [0.0; 3]).is_err());
}

#[test]
fn adapter_policies() {
    match WgpuBackend::select(AdapterPolicy::HardwareOnly, Options::default()) {
        Ok(Some(b)) => assert!(!b.is_software(), "HardwareOnly picked a software adapter"),
        Ok(None) => eprintln!("HardwareOnly: no hardware adapter, CPU fallback"),
        Err(e) => panic!("HardwareOnly must not fail for lack of an adapter: {e}"),
    }
    match WgpuBackend::select(AdapterPolicy::AnyIncludingSoftware, Options::default()) {
        Ok(Some(b)) => assert!(b.name().contains(&b.adapter_info().name)),
        Ok(None) => panic!("AnyIncludingSoftware never answers None"),
        Err(e) if common::gpu_required() => panic!("{e}"),
        Err(e) => {
            assert!(e.to_string().contains("adapter"), "{e}");
            eprintln!("SKIPPED: no adapter: {e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random shapes, term counts, k and chunk limits: GPU equals the reference.
    #[test]
    fn random_shapes_match_reference(
        nq in 1usize..70,
        nt in 1usize..150,
        da in 1usize..40,
        dg in 1usize..12,
        terms in 1usize..4,
        k in 1usize..12,
        binding_kib in prop::sample::select(vec![2u64, 5, 64, 1 << 20]),
        workgroups in 1u32..5,
        seed in any::<u64>(),
    ) {
        let Some(b) = tiny(binding_kib << 10, workgroups) else { return Ok(()) };
        let mut p = Problem::new(nq, nt, da, dg, terms, seed);
        if seed % 2 == 0 {
            p.bias = Bias::Included;
        }
        check_scores(&b, &p);
        check_topk(&b, &p, k.min(nt));
        check_self_influence(&b, &p);
        check_gemm(&b, nq, nt, da, seed);
    }
}
