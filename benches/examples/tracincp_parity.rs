//! Parity data for the TracInCP-over-3-layers benchmark: builds the bench's problem
//! (`benches/benches/common/tracincp.rs`) at a small size, scores it with infl (full
//! scores, top-k, self-influence) and writes the factors, learning rates and infl's
//! results to one safetensors file, which `benches/torch_tracin.py --check-against FILE`
//! recomputes with torch and compares. Not timed.
//!
//! `cargo run --release -p infl-benches --example tracincp_parity -- [OUT] [N T C K]`
//! (default `target/tracincp_parity.safetensors`, N = 2,000, T = 40, C = 3, k = 10).

#[path = "../benches/common/tracincp.rs"]
mod common;

use common::{LAYERS, Size, learning_rate, score_flops, self_flops, term_set};
use infl::Engine;
use infl_cpu::CpuBackend;
use safetensors::{Dtype, tensor::TensorView};

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes(x: impl Iterator<Item = usize>) -> Vec<u8> {
    x.flat_map(|v| (v as i64).to_le_bytes()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "target/tracincp_parity.safetensors".into());
    let num = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let s = Size {
        n: num(1, 2_000),
        t: num(2, 40),
        c: num(3, 3),
    };
    let k = num(4, 10);
    let set = term_set(s);
    let engine = Engine::new(CpuBackend::with_threads(2).expect("thread pool"));
    let scores = engine.scores(&set, &()).expect("scores");
    let top = engine.topk(&set, k, &()).expect("topk");
    let self_inf = engine.self_influence(&set).expect("self-influence");

    // (name, shape, dtype, bytes)
    let mut tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    for (i, term) in set.terms.iter().enumerate() {
        let (c, l) = (i / LAYERS.len(), i % LAYERS.len());
        let test = term.test.as_ref().expect("test factors");
        for (what, m) in [
            ("a_train", &term.train.a),
            ("g_train", &term.train.g),
            ("a_test", &test.a),
            ("g_test", &test.g),
        ] {
            tensors.push((
                format!("c{c}.l{l}.{what}"),
                vec![m.rows(), m.cols()],
                Dtype::F32,
                f32_bytes(m.data()),
            ));
        }
    }
    let lrs: Vec<f32> = (0..s.c).map(learning_rate).collect();
    tensors.push(("lr".into(), vec![s.c], Dtype::F32, f32_bytes(&lrs)));
    tensors.push((
        "infl.scores".into(),
        vec![s.t, s.n],
        Dtype::F32,
        f32_bytes(&scores),
    ));
    tensors.push((
        "infl.self".into(),
        vec![s.n],
        Dtype::F32,
        f32_bytes(&self_inf),
    ));
    for (name, rows) in [
        ("proponents", &top.proponents),
        ("opponents", &top.opponents),
    ] {
        let flat = || rows.iter().flat_map(|r| r.iter());
        tensors.push((
            format!("infl.{name}.values"),
            vec![s.t, k],
            Dtype::F32,
            f32_bytes(&flat().map(|r| r.score).collect::<Vec<_>>()),
        ));
        tensors.push((
            format!("infl.{name}.indices"),
            vec![s.t, k],
            Dtype::I64,
            i64_bytes(flat().map(|r| r.index)),
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, dtype, bytes)| {
            let view = TensorView::new(*dtype, shape.clone(), bytes).expect("tensor view");
            (name.clone(), view)
        })
        .collect();
    let metadata = [
        ("n", s.n),
        ("t", s.t),
        ("checkpoints", s.c),
        ("layers", LAYERS.len()),
        ("k", k),
    ]
    .into_iter()
    .map(|(key, v)| (key.to_string(), v.to_string()))
    .collect();
    safetensors::tensor::serialize_to_file(views, Some(metadata), std::path::Path::new(&out))
        .expect("write safetensors");
    println!(
        "wrote {out}: N = {}, T = {}, {} checkpoints x {} layers, k = {k} \
         ({} FLOP per score pass, {} for self-influence)",
        s.n,
        s.t,
        s.c,
        LAYERS.len(),
        score_flops(s),
        self_flops(s)
    );
}
