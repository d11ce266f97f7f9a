//! Class 5, factor files (issue 9): `--factors` folders of per-example factors (TracInCP
//! over chosen layers) as a hostile user would hand them over, for every scoring
//! subcommand and every public estimator that reads factor files.
//!
//! Every scene starts from a scratch copy of the MLP factor fixtures
//! (`fixtures/captum_tracincp/mlp/factors`: checkpoints 1, 2 and 10; layers fc1, fc2, fc3,
//! each `[N, D]` with its bias; 40 training and 7 test examples) in `root/factors`, scored
//! with `--layers fc1,fc2`; a case may switch to the CNN ([`cnn`]: checkpoints 2 and 5;
//! `conv1` with 9 positions `[N, 9, 18]` / `[N, 9, 3]`, the dense `norm.weight.grad` and
//! `norm.bias.grad`, and `fc`; 24 training and 5 test examples). Valid variants are checked
//! against Captum's recorded numbers where there are some ([`Golden`]).

use std::path::PathBuf;

use super::files::{St, edit, edit_header};
use super::harness::{self, Call, Case, Expect, Golden, Scene};
use super::{Entry, OUT_FILE, SCORES, SELF, SUBS, TOPK, arg, fails, input, instantiate_on, te, tr};

/// The estimators a user can choose that read factor folders.
pub fn factor_methods() -> Vec<&'static str> {
    use infl::estimators::{Audience, Input};
    let m: Vec<&'static str> = infl::estimators::REGISTRY
        .iter()
        .filter(|r| r.audience == Audience::Users && r.input == Input::Factors)
        .map(|r| r.name)
        .collect();
    assert!(!m.is_empty(), "no public estimator reads factor files");
    m
}

/// The cases of class 5 (factor files), GPU twins included when `with_gpu`: the entries
/// for every estimator that reads only factor files, and influence functions' curvatures
/// and solver flags for `--method influence` (which reads features or factor files).
pub fn cases(with_gpu: bool) -> Vec<Case> {
    let mut cases = instantiate_on(
        "factors",
        entries(),
        with_gpu,
        factor_methods(),
        Call::factor_scoring,
    );
    let influence = infl::Estimator::name(&infl::InfluenceFunction::default());
    cases.extend(instantiate_on(
        "factors",
        curvature(),
        with_gpu,
        vec![influence],
        Call::factor_scoring,
    ));
    cases
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A file of the scene's factor folder.
fn ff(s: &Scene, name: &str) -> PathBuf {
    s.factors().join(name)
}

/// Edits factor file `name` of the scene's folder.
fn fedit(s: &Scene, name: &str, f: impl FnOnce(&mut St)) {
    edit(&ff(s, name), f)
}

/// Element `at` (row-major) of the F32 tensor `tensor` of factor file `file` becomes `v`.
fn fset(s: &Scene, file: &str, tensor: &str, at: usize, v: f32) {
    fedit(s, file, |st| {
        let shape = st.shape(tensor);
        let mut x = st.f32s(tensor);
        x[at] = v;
        st.put_f32(tensor, &shape, &x);
    });
}

/// `f` applied to every factor file of the scene's folder of `kind`: `train`, `test`, or
/// `""` for both.
fn fevery(s: &Scene, kind: &str, f: impl Fn(&mut St)) {
    let suffix = if kind.is_empty() {
        ".safetensors".to_string()
    } else {
        format!(".{kind}.safetensors")
    };
    let mut names: Vec<String> = std::fs::read_dir(s.factors())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&suffix))
        .collect();
    names.sort();
    for n in names {
        fedit(s, &n, &f);
    }
}

/// The layers of a factor file's `layers` metadata.
fn listed(st: &St) -> Vec<String> {
    st.metadata["layers"]
        .as_str()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

/// Removes layer `name` from a factor file: its tensors, its metadata, its entry in
/// `layers`.
fn drop_layer(st: &mut St, name: &str) {
    for t in [".a", ".g", ".grad"] {
        st.remove(&format!("{name}{t}"));
    }
    for m in [".bias", ".kind"] {
        st.metadata.remove(&format!("{name}{m}"));
    }
    let layers: Vec<String> = listed(st).into_iter().filter(|l| l != name).collect();
    st.set_meta("layers", &layers.join(","));
}

/// Adds layer `name` to a factor file, a copy of layer `from` (a linear one).
fn copy_layer(st: &mut St, from: &str, name: &str) {
    for t in [".a", ".g"] {
        let src = st.get(&format!("{from}{t}")).clone();
        st.put(&format!("{name}{t}"), &src.dtype, &src.shape, src.data);
    }
    let mut layers = listed(st);
    layers.push(name.to_string());
    st.set_meta("layers", &layers.join(","));
}

/// Keeps the first `n` rows (of the leading dimension) of tensor `name`, any dtype.
fn keep_rows(st: &mut St, name: &str, n: usize) {
    let t = st.get(name).clone();
    let per = t.data.len() / t.shape[0];
    let mut shape = t.shape.clone();
    shape[0] = n;
    st.put(name, &t.dtype, &shape, t.data[..n * per].to_vec());
}

/// Gives tensor `name` the shape `shape` (same number of elements, same bytes).
fn reshape(st: &mut St, name: &str, shape: &[usize]) {
    let t = st.get(name).clone();
    assert_eq!(
        t.shape.iter().product::<usize>(),
        shape.iter().product::<usize>(),
        "{name}"
    );
    st.put(name, &t.dtype, shape, t.data);
}

/// Keeps the first `width` entries of the last dimension of the F32 tensor `name`:
/// `[.., W]` becomes `[.., width]`.
fn narrow(st: &mut St, name: &str, width: usize) {
    let mut shape = st.shape(name);
    let w = *shape.last().unwrap();
    let v: Vec<f32> = st
        .f32s(name)
        .chunks(w)
        .flat_map(|r| r[..width].to_vec())
        .collect();
    *shape.last_mut().unwrap() = width;
    st.put_f32(name, &shape, &v);
}

/// The half-precision bit pattern nearest to `x` (ties to even; NaN stays NaN).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |m: u32, shift: u32| {
        let (r, rem, half) = (m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        if rem > half || (rem == half && r & 1 == 1) {
            r + 1
        } else {
            r
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        return sign | round(man | 0x80_0000, (14 - e) as u32) as u16;
    }
    // A carry out of the mantissa rounds into the exponent, as it should.
    sign | round(((e as u32) << 23) | man, 13) as u16
}

/// Every F32 tensor of a factor file converted to `dtype` (`F16`, `BF16` or `F64`).
fn convert(st: &mut St, dtype: &str) {
    let names: Vec<String> = st
        .tensors
        .iter()
        .filter(|t| t.dtype == "F32")
        .map(|t| t.name.clone())
        .collect();
    for n in names {
        let (shape, v) = (st.shape(&n), st.f32s(&n));
        match dtype {
            "F16" => {
                let bits: Vec<u16> = v.iter().map(|&x| f16_bits(x)).collect();
                st.put_f16_bits(&n, &shape, &bits);
            }
            "BF16" => st.put_bf16(&n, &shape, &v),
            "F64" => {
                let wide: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
                st.put_f64(&n, &shape, &wide);
            }
            other => panic!("no dtype {other}"),
        }
    }
}

/// The results must match Captum's `expected_TAG.safetensors` within `rtol` of their scale.
fn golden(c: &mut Call, tag: &str, rtol: f32) {
    c.golden = Some(Golden {
        file: harness::fixture_golden(tag),
        rtol,
    });
}

/// Switches the scene to the CNN factor fixtures, `--layers conv1,norm,fc`.
fn cnn(s: &Scene, c: &mut Call) {
    s.use_factors("cnn");
    c.set("--layers", "conv1,norm,fc");
}

/// Example `i`'s `conv1.a` (`[N, 9, 18]`, the CNN) becomes `v` everywhere.
fn fill_example(s: &Scene, file: &str, i: usize, v: f32) {
    fedit(s, file, |st| {
        let mut x = st.f32s("conv1.a");
        x[i * 162..(i + 1) * 162].fill(v);
        st.put_f32("conv1.a", &[24, 9, 18], &x);
    });
}

/// Gives every chosen layer (fc1, fc2) of every factor file its sampled-label gradients
/// `L.g_sampled`: `L.g` with the examples' rows rotated by one (another valid gradient per
/// example, as labels drawn from the model would give).
fn add_sampled(s: &Scene) {
    fevery(s, "", |st| {
        for layer in ["fc1", "fc2"] {
            let g = st.get(&format!("{layer}.g")).clone();
            let row = g.data.len() / g.shape[0];
            let mut data = g.data[row..].to_vec();
            data.extend_from_slice(&g.data[..row]);
            st.put(&format!("{layer}.g_sampled"), &g.dtype, &g.shape, data);
        }
    });
}

/// Removes every `L.g_sampled` (the files as exported with `--no-sampled`).
fn drop_sampled(s: &Scene) {
    fevery(s, "", |st| {
        for layer in ["fc1", "fc2", "fc3"] {
            st.remove(&format!("{layer}.g_sampled"));
        }
    });
}

/// `--method influence --solver cg --curvature true-fisher` (with `L.g_sampled` given by
/// [`add_sampled`] unless the case removes it).
fn true_fisher(s: &Scene, c: &mut Call) {
    add_sampled(s);
    c.set("--solver", "cg").set("--curvature", "true-fisher");
}

/// Replaces a factor file by a FIFO.
fn fifo_factor(s: &Scene, name: &str) {
    let p = ff(s, name);
    std::fs::remove_file(&p).unwrap();
    s.fifo(&p);
}

/// Drops the last `n` bytes of a factor file.
fn cut_factor(s: &Scene, name: &str, n: usize) {
    let p = ff(s, name);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - n]).unwrap();
}

/// A curvature saved by `infl fit` into `root/fit.safetensors`, with `flags` (the input
/// and its layers or layer).
fn saved_fit(s: &Scene, flags: &[&str]) -> PathBuf {
    let out = s.root.join("fit.safetensors");
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("infl"))
        .args([
            "-q",
            "--backend",
            "cpu",
            "fit",
            "--method",
            "influence",
            "--out",
        ])
        .arg(&out)
        .args(flags)
        .output()
        .expect("spawn infl fit");
    assert!(
        status.status.success(),
        "infl fit {flags:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// [`saved_fit`]: the EK-FAC fit of the scene's factors at `layers` (the default call's
/// are fc1 and fc2).
fn fit_of(s: &Scene, layers: &str) -> PathBuf {
    let dir = s.factors();
    let dir = dir.to_str().unwrap();
    saved_fit(s, &["--factors", dir, "--layers", layers])
}

// ---------------------------------------------------------------------------------------
// The entries.

fn entries() -> Vec<Entry> {
    let mut v = valid();
    v.extend(layers());
    v.extend(shapes());
    v.extend(ids_and_metadata());
    v.extend(non_finite());
    v.extend(folders());
    v.extend(arguments());
    v.extend(outputs());
    v
}

/// Influence functions' curvatures on factor files (`L.g_sampled`, the true Fisher's
/// gradients, read and checked) and the solver flags: each refusal names the file and
/// tensor, or the flag.
fn curvature() -> Vec<Entry> {
    vec![
        arg(
            "--hessian: the EK-FAC fit of the same layers (infl fit --factors)",
            SUBS,
            |s, c| {
                c.set("--hessian", fit_of(s, "fc1,fc2"));
            },
            Expect::Succeeds,
        ),
        arg(
            "--hessian: a truncated K-FAC fit",
            SUBS,
            |s, c| {
                let p = fit_of(s, "fc1,fc2");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                c.set("--hessian", p);
            },
            fails(&["fit.safetensors", "truncated"]),
        ),
        arg(
            "--hessian: a foreign file (a training factor file)",
            SUBS,
            |s, c| {
                c.set("--hessian", ff(s, &tr("10")));
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "\"infl kfac v1\"",
                "`infl fit`",
            ]),
        ),
        arg(
            "--hessian: a final layer's Hessian given to EK-FAC",
            SUBS,
            |s, c| {
                let run = s.run.to_str().unwrap();
                c.set("--hessian", saved_fit(s, &["--run", run, "--layer", "fc3"]));
            },
            fails(&[
                "fit.safetensors",
                "\"infl hessian v1\"",
                "infl fit --factors",
            ]),
        ),
        arg(
            "--hessian: a fit of other layers",
            SUBS,
            |s, c| {
                c.set("--hessian", fit_of(s, "fc2,fc3"));
            },
            fails(&["fit.safetensors", "layers = [\"fc2\",\"fc3\"]", "refit"]),
        ),
        arg(
            "--hessian: a fit with one altered byte",
            SUBS,
            |s, c| {
                let p = fit_of(s, "fc1,fc2");
                let mut b = std::fs::read(&p).unwrap();
                let at = b.len() - 2;
                b[at] ^= 0x04;
                std::fs::write(&p, &b).unwrap();
                c.set("--hessian", p);
            },
            fails(&["fit.safetensors", "altered or damaged"]),
        ),
        arg(
            "--curvature true-fisher with L.g_sampled (cg)",
            SUBS,
            true_fisher,
            Expect::Succeeds,
        ),
        arg(
            "--curvature true-fisher with L.g_sampled (ekfac: Kronfluence's default fit)",
            SUBS,
            |s, c| {
                add_sampled(s);
                c.set("--solver", "ekfac").set("--curvature", "true-fisher");
            },
            Expect::Succeeds,
        ),
        arg(
            "--curvature true-fisher without L.g_sampled",
            SUBS,
            |s, c| {
                drop_sampled(s);
                c.set("--solver", "cg").set("--curvature", "true-fisher");
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc1.g_sampled",
                "sampled",
            ]),
        ),
        arg(
            "--curvature true-fisher, ekfac, without L.g_sampled",
            SUBS,
            |s, c| {
                drop_sampled(s);
                c.set("--solver", "ekfac").set("--curvature", "true-fisher");
            },
            fails(&["checkpoint-10.train.safetensors", "fc1.g_sampled"]),
        ),
        arg(
            "--curvature true-fisher, fc2.g_sampled missing in the last training file",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| st.remove("fc2.g_sampled"));
            },
            fails(&["checkpoint-10.train.safetensors", "fc2.g_sampled"]),
        ),
        arg(
            "L.g_sampled with fewer outputs than L.g",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| narrow(st, "fc1.g_sampled", 9));
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc1.g_sampled",
                "expected the shape of `fc1.g` [40, 10], found [40, 9]",
            ]),
        ),
        arg(
            "L.g_sampled with fewer examples than L.g",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| keep_rows(st, "fc2.g_sampled", 39));
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc2.g_sampled",
                "[39, 8]",
            ]),
        ),
        arg(
            "L.g_sampled 3-D [N, 2, 5] where L.g is [N, 10]",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| reshape(st, "fc1.g_sampled", &[40, 2, 5]));
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc1.g_sampled",
                "[40, 2, 5]",
            ]),
        ),
        arg(
            "L.g_sampled 1-D",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| reshape(st, "fc1.g_sampled", &[400]));
            },
            fails(&["checkpoint-10.train.safetensors", "fc1.g_sampled", "[400]"]),
        ),
        arg(
            "L.g_sampled of an integer dtype",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fedit(s, &tr("10"), |st| {
                    st.put_i64("fc2.g_sampled", &[40, 8], &[1; 320]);
                });
            },
            fails(&["checkpoint-10.train.safetensors", "fc2.g_sampled", "float"]),
        ),
        arg(
            "NaN in L.g_sampled",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fset(s, &tr("10"), "fc1.g_sampled", 3 * 10 + 4, f32::NAN);
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc1.g_sampled",
                "NaN at [3, 4]",
            ]),
        ),
        arg(
            "-inf in L.g_sampled",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                fset(s, &tr("10"), "fc2.g_sampled", 39 * 8 + 7, f32::NEG_INFINITY);
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "fc2.g_sampled",
                "-inf at [39, 7]",
            ]),
        ),
        arg(
            "--curvature with an unknown value",
            SUBS,
            |_, c| {
                c.set("--solver", "cg").set("--curvature", "ggn");
            },
            fails(&["--curvature", "ggn", "true-fisher"]),
        ),
        arg(
            "--curvature gauss-newton without the infl-nn checkpoint beside the factors",
            SUBS,
            |_, c| {
                c.set("--solver", "cg").set("--curvature", "gauss-newton");
            },
            fails(&["curvature", "checkpoint-10.safetensors", "infl-nn"]),
        ),
        arg(
            "--curvature hessian with --solver ekfac",
            SUBS,
            |_, c| {
                c.set("--solver", "ekfac").set("--curvature", "hessian");
            },
            fails(&["--curvature hessian", "ekfac"]),
        ),
        arg(
            "--curvature with --run (the final layer has its exact Hessian)",
            SUBS,
            |s, c| {
                c.unset("--factors")
                    .unset("--layers")
                    .set("--run", &s.run)
                    .set("--layer", "fc3")
                    .set("--curvature", "fisher");
            },
            fails(&["curvature", "--factors"]),
        ),
        arg(
            "--solver with an unknown value",
            SUBS,
            |_, c| {
                c.set("--solver", "newton");
            },
            fails(&["--solver", "newton", "lissa"]),
        ),
        arg(
            "--lissa-batch 0",
            SUBS,
            |_, c| {
                c.set("--solver", "lissa").set("--lissa-batch", "0");
            },
            fails(&["--lissa-batch", "at least 1", "found 0"]),
        ),
        arg(
            "--lissa-batch -3",
            SUBS,
            |_, c| {
                c.set("--solver", "lissa").set("--lissa-batch", "-3");
            },
            fails(&["--lissa-batch", "-3"]),
        ),
        arg(
            "--lissa-repeats 0",
            SUBS,
            |_, c| {
                c.set("--solver", "lissa")
                    .set("--lissa-batch", "8")
                    .set("--lissa-repeats", "0");
            },
            fails(&["--lissa-repeats", "at least 1", "found 0"]),
        ),
        arg(
            "--lissa-repeats 2 without --lissa-batch",
            SUBS,
            |_, c| {
                c.set("--solver", "lissa").set("--lissa-repeats", "2");
            },
            fails(&["--lissa-repeats", "--lissa-batch"]),
        ),
        arg(
            "--lissa-depth 0",
            SUBS,
            |_, c| {
                c.set("--solver", "lissa").set("--lissa-depth", "0");
            },
            fails(&["--lissa-depth", "at least 1"]),
        ),
        arg(
            "--lissa-batch with --solver cg",
            SUBS,
            |_, c| {
                c.set("--solver", "cg").set("--lissa-batch", "8");
            },
            fails(&["--lissa-batch", "--solver cg"]),
        ),
        arg(
            "--cg-max-iterations 0",
            SUBS,
            |_, c| {
                c.set("--solver", "cg").set("--cg-max-iterations", "0");
            },
            fails(&["--cg-max-iterations", "at least 1"]),
        ),
        arg(
            "--arnoldi-dim 0",
            SUBS,
            |_, c| {
                c.set("--solver", "arnoldi").set("--arnoldi-dim", "0");
            },
            fails(&["--arnoldi-dim", "at least 1"]),
        ),
        arg(
            "LiSSA on the true Fisher (--lissa-depth 200, --damping heuristic)",
            SUBS,
            |s, c| {
                true_fisher(s, c);
                c.set("--solver", "lissa")
                    .set("--lissa-depth", "200")
                    .set("--damping", "heuristic");
            },
            Expect::Succeeds,
        ),
    ]
}

/// Valid variants: they must succeed (with Captum's numbers where recorded).
fn valid() -> Vec<Entry> {
    vec![
        input(
            "the MLP factors as they are, fc1,fc2 (Captum's numbers)",
            |_, c| golden(c, "mlp_fc1_fc2", 1e-4),
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "--layers fc1,fc2,fc3 (Captum's numbers)",
            |_, c| {
                c.set("--layers", "fc1,fc2,fc3");
                golden(c, "mlp_fc1_fc2_fc3", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "no --layers: every layer of the files (Captum's numbers)",
            |_, c| {
                c.unset("--layers");
                golden(c, "mlp_fc1_fc2_fc3", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "--layers in another order (fc2,fc1)",
            |_, c| {
                c.set("--layers", "fc2,fc1");
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "--layers given twice (--layers fc1 --layers fc2)",
            |_, c| {
                c.set("--layers", "fc1");
                c.raw.extend(["--layers".into(), "fc2".into()]);
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "the CNN: module expansion --layers conv1,norm,fc (Captum's numbers)",
            |s, c| {
                cnn(s, c);
                golden(c, "cnn_conv1_norm_fc", 1e-4);
            },
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "the CNN: --layers conv1,fc (Captum's numbers)",
            |s, c| {
                cnn(s, c);
                c.set("--layers", "conv1,fc");
                golden(c, "cnn_conv1_fc", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "the CNN: a module's parameters by name (--layers conv1,norm.weight,norm.bias,fc)",
            |s, c| {
                cnn(s, c);
                c.set("--layers", "conv1,norm.weight,norm.bias,fc");
                golden(c, "cnn_conv1_norm_fc", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "the CNN without --layers",
            |s, c| {
                cnn(s, c);
                c.unset("--layers");
                golden(c, "cnn_conv1_norm_fc", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "f16 factor files (Captum's numbers within f16's precision)",
            |s, c| {
                fevery(s, "", |st| convert(st, "F16"));
                golden(c, "mlp_fc1_fc2", 3e-3);
            },
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "bf16 factor files (Captum's numbers within bf16's precision)",
            |s, c| {
                fevery(s, "", |st| convert(st, "BF16"));
                golden(c, "mlp_fc1_fc2", 3e-2);
            },
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "f64 factor files (Captum's numbers)",
            |s, c| {
                fevery(s, "", |st| convert(st, "F64"));
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "the CNN in f16 (Captum's numbers within f16's precision)",
            |s, c| {
                cnn(s, c);
                fevery(s, "", |st| convert(st, "F16"));
                golden(c, "cnn_conv1_norm_fc", 3e-3);
            },
            Expect::Succeeds,
        ),
        input(
            "f16 training files, f32 test files",
            |s, c| {
                fevery(s, "train", |st| convert(st, "F16"));
                golden(c, "mlp_fc1_fc2", 3e-3);
            },
            Expect::Succeeds,
        ),
        input(
            "[N, 1, D] factors at one checkpoint (one position: as [N, D])",
            |s, c| {
                fedit(s, &tr("2"), |st| {
                    reshape(st, "fc1.a", &[40, 1, 6]);
                    reshape(st, "fc1.g", &[40, 1, 10]);
                });
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "no ids anywhere (row numbers)",
            |s, _| fevery(s, "", |st| st.remove("ids")),
            Expect::Succeeds,
        ),
        input(
            "u8 labels and i32 ids",
            |s, _| {
                fevery(s, "", |st| {
                    let n = st.shape("labels")[0];
                    let l: Vec<u8> = st.i64s("labels").iter().map(|&x| x as u8).collect();
                    st.put("labels", "U8", &[n], l);
                    let i: Vec<u8> = st
                        .i64s("ids")
                        .iter()
                        .flat_map(|&x| (x as i32).to_le_bytes())
                        .collect();
                    st.put("ids", "I32", &[n], i);
                })
            },
            Expect::Succeeds,
        ),
        input(
            "no labels anywhere",
            |s, _| fevery(s, "", |st| st.remove("labels")),
            Expect::Succeeds,
        ),
        input(
            "no `layers` metadata (layers from the tensor names)",
            |s, c| {
                fevery(s, "", |st| {
                    st.metadata.remove("layers");
                });
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "learning_rate metadata missing everywhere (--learning-rate is used)",
            |s, c| {
                fevery(s, "", |st| {
                    st.metadata.remove("learning_rate");
                });
                c.set("--learning-rate", "0.5");
            },
            Expect::Succeeds,
        ),
        input(
            "an extra layer in one file, not chosen by --layers",
            |s, _| fedit(s, &tr("2"), |st| copy_layer(st, "fc1", "fc4")),
            Expect::Succeeds,
        ),
        input(
            "NaN in a layer that is not chosen (fc3.a)",
            |s, _| fset(s, &tr("2"), "fc3.a", 3, f32::NAN),
            Expect::Succeeds,
        )
        .gpu(),
        input(
            "checkpoints and other files next to the factor files (ignored)",
            |s, c| {
                for name in ["checkpoint-1.safetensors", "checkpoint-10.safetensors"] {
                    std::fs::copy(s.f(name), ff(s, name)).unwrap();
                }
                std::fs::write(ff(s, "README.txt"), "notes").unwrap();
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "a factor file reached through a symlink",
            |s, c| {
                let elsewhere = s.root.join("elsewhere.safetensors");
                std::fs::rename(ff(s, &tr("2")), &elsewhere).unwrap();
                std::os::unix::fs::symlink(&elsewhere, ff(s, &tr("2"))).unwrap();
                golden(c, "mlp_fc1_fc2", 1e-4);
            },
            Expect::Succeeds,
        ),
        input(
            "--factors given relative to the working folder, with a trailing slash",
            |_, c| {
                c.set("--factors", "factors/");
            },
            Expect::Succeeds,
        ),
    ]
}

/// Layers missing, absent, chosen twice.
fn layers() -> Vec<Entry> {
    vec![
        input(
            "fc2 missing from one checkpoint's training file",
            |s, _| fedit(s, &tr("2"), |st| drop_layer(st, "fc2")),
            fails(&["checkpoint-2.train.safetensors", "`fc2`", "fc1, fc3"]),
        ),
        input(
            "fc2 missing from one checkpoint's test file",
            |s, _| fedit(s, &te("10"), |st| drop_layer(st, "fc2")),
            fails(&["checkpoint-10.test.safetensors", "`fc2`", "fc1, fc3"]),
        )
        .test_only(),
        input(
            "fc2 only in the test files (missing from every training file)",
            |s, _| fevery(s, "train", |st| drop_layer(st, "fc2")),
            fails(&["checkpoint-1.train.safetensors", "`fc2`", "fc1, fc3"]),
        ),
        input(
            "fc2's tensors gone from one file but still in its `layers`",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    st.remove("fc2.a");
                    st.remove("fc2.g");
                })
            },
            fails(&["checkpoint-2.train.safetensors", "fc2.a", "fc2.g"]),
        ),
        input(
            "fc2.g missing, fc2.a present",
            |s, _| fedit(s, &tr("2"), |st| st.remove("fc2.g")),
            fails(&["checkpoint-2.train.safetensors", "fc2.g"]),
        ),
        input(
            "a requested layer absent everywhere (lists the file's layers)",
            |_, c| {
                c.set("--layers", "fc1,fc9");
            },
            fails(&["checkpoint-1.train.safetensors", "`fc9`", "fc1, fc2, fc3"]),
        ),
        input(
            "--layers fc (a prefix of fc1, not a module)",
            |_, c| {
                c.set("--layers", "fc");
            },
            fails(&["`fc`", "fc1, fc2, fc3"]),
        ),
        input(
            "--layers fc1.a (a tensor, not a layer)",
            |_, c| {
                c.set("--layers", "fc1.a");
            },
            fails(&["`fc1.a`", "fc1, fc2, fc3"]),
        ),
        input(
            "--layers naming a layer twice (fc1,fc1)",
            |_, c| {
                c.set("--layers", "fc1,fc1");
            },
            fails(&["`fc1`", "twice"]),
        ),
        input(
            "the CNN: --layers naming a module and its parameter (norm,norm.weight)",
            |s, c| {
                cnn(s, c);
                c.set("--layers", "norm,norm.weight");
            },
            fails(&["`norm.weight`", "twice"]),
        ),
        input(
            "--layers empty",
            |_, c| {
                c.set("--layers", "");
            },
            fails(&["--layers"]),
        ),
        input(
            "--layers with an empty name (fc1,,fc2)",
            |_, c| {
                c.set("--layers", "fc1,,fc2");
            },
            fails(&["--layers"]),
        ),
        input(
            "no --layers, an extra layer in one checkpoint's file",
            |s, c| {
                c.unset("--layers");
                fedit(s, &tr("2"), |st| copy_layer(st, "fc1", "fc4"));
            },
            fails(&["checkpoint-2.train.safetensors", "fc4"]),
        ),
        input(
            "no --layers, every file's `layers` metadata listing fc1 twice",
            |s, c| {
                c.unset("--layers");
                fevery(s, "", |st| st.set_meta("layers", "fc1,fc1,fc2,fc3"));
            },
            fails(&["checkpoint-1.train.safetensors", "`fc1`", "twice"]),
        ),
        input(
            "no --layers, fc2 missing from one test file",
            |s, c| {
                c.unset("--layers");
                fedit(s, &te("10"), |st| drop_layer(st, "fc2"));
            },
            fails(&["checkpoint-10.test.safetensors", "fc2"]),
        )
        .test_only(),
    ]
}

/// Shapes that disagree within a file, across checkpoints, between splits.
fn shapes() -> Vec<Entry> {
    vec![
        input(
            "fc1.a and fc1.g with different example counts",
            |s, _| fedit(s, &tr("1"), |st| keep_rows(st, "fc1.g", 39)),
            fails(&[
                "checkpoint-1.train.safetensors",
                "fc1.g",
                "[40]",
                "[39, 10]",
            ]),
        ),
        input(
            "fc2 with fewer examples than fc1 in one file",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    keep_rows(st, "fc2.a", 39);
                    keep_rows(st, "fc2.g", 39);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "fc2", "40", "39"]),
        ),
        input(
            "fewer examples at one checkpoint (every tensor cut)",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let names: Vec<String> = st.tensors.iter().map(|t| t.name.clone()).collect();
                    for n in names {
                        keep_rows(st, &n, 39);
                    }
                })
            },
            fails(&["checkpoint-2.train.safetensors", "40"]),
        ),
        input(
            "the CNN: positions S differ between conv1.a (9) and conv1.g (8)",
            |s, c| {
                cnn(s, c);
                fedit(s, &tr("5"), |st| {
                    let v = st.f32s("conv1.g");
                    let cut: Vec<f32> = v.chunks(27).flat_map(|e| e[..24].to_vec()).collect();
                    st.put_f32("conv1.g", &[24, 8, 3], &cut);
                });
            },
            fails(&[
                "checkpoint-5.train.safetensors",
                "conv1.g",
                "[24, 9]",
                "[24, 8, 3]",
            ]),
        ),
        input(
            "fc2's input width D differs at one checkpoint",
            |s, _| {
                for f in [tr("10"), te("10")] {
                    fedit(s, &f, |st| narrow(st, "fc2.a", 9));
                }
            },
            fails(&[
                "checkpoint-10.train.safetensors",
                "`fc2`",
                "inputs 10",
                "inputs 9",
            ]),
        ),
        input(
            "fc1's output width K differs between the training and test files",
            |s, _| fedit(s, &te("2"), |st| narrow(st, "fc1.g", 9)),
            fails(&[
                "checkpoint-2.test.safetensors",
                "`fc1`",
                "outputs 10",
                "outputs 9",
            ]),
        )
        .test_only(),
        input(
            "fc1 3-D ([N, 2, 3]) at one checkpoint, 2-D elsewhere",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    reshape(st, "fc1.a", &[40, 2, 3]);
                    let g = st.f32s("fc1.g");
                    let twice: Vec<f32> = g.chunks(10).flat_map(|r| [r, r].concat()).collect();
                    st.put_f32("fc1.g", &[40, 2, 10], &twice);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "`fc1`", "position"]),
        ),
        input(
            "the CNN: conv1 2-D at one checkpoint, 3-D at the other",
            |s, c| {
                cnn(s, c);
                fedit(s, &tr("5"), |st| {
                    reshape(st, "conv1.a", &[24, 162]);
                    reshape(st, "conv1.g", &[24, 27]);
                });
            },
            fails(&["checkpoint-5.train.safetensors", "`conv1`", "9 position"]),
        ),
        input(
            "the CNN: 3-D test factors of conv1 with fewer positions",
            |s, c| {
                cnn(s, c);
                fedit(s, &te("2"), |st| {
                    let (a, g) = (st.f32s("conv1.a"), st.f32s("conv1.g"));
                    let a: Vec<f32> = a.chunks(162).flat_map(|e| e[..144].to_vec()).collect();
                    let g: Vec<f32> = g.chunks(27).flat_map(|e| e[..24].to_vec()).collect();
                    st.put_f32("conv1.a", &[5, 8, 18], &a);
                    st.put_f32("conv1.g", &[5, 8, 3], &g);
                });
            },
            fails(&["checkpoint-2.test.safetensors", "`conv1`", "9 position"]),
        )
        .test_only(),
        input(
            "fc1's bias included at two checkpoints, not at the third",
            |s, _| fedit(s, &tr("2"), |st| st.set_meta("fc1.bias", "false")),
            fails(&["checkpoint-2.train.safetensors", "`fc1`", "bias"]),
        ),
        input(
            "fc1.a with zero columns",
            |s, _| {
                fevery(s, "", |st| {
                    let n = st.shape("fc1.a")[0];
                    st.put_f32("fc1.a", &[n, 0], &[]);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "fc1.a", "column"]),
        ),
        input(
            "no examples (every tensor with 0 rows)",
            |s, _| {
                fevery(s, "", |st| {
                    let names: Vec<String> = st.tensors.iter().map(|t| t.name.clone()).collect();
                    for n in names {
                        keep_rows(st, &n, 0);
                    }
                })
            },
            fails(&["checkpoint-1.train.safetensors", "example"]),
        ),
        input(
            "fc1.a of rank 1",
            |s, _| fedit(s, &tr("1"), |st| reshape(st, "fc1.a", &[240])),
            fails(&["checkpoint-1.train.safetensors", "fc1.a"]),
        ),
        input(
            "fc1.a of rank 4",
            |s, _| fedit(s, &tr("1"), |st| reshape(st, "fc1.a", &[40, 1, 2, 3])),
            fails(&["checkpoint-1.train.safetensors", "fc1.a"]),
        ),
        input(
            "fc1.g stored as integers",
            |s, _| {
                fedit(s, &tr("1"), |st| {
                    let v: Vec<i64> = st.f32s("fc1.g").iter().map(|&x| x as i64).collect();
                    st.put_i64("fc1.g", &[40, 10], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "fc1.g"]),
        ),
        input(
            "the CNN: norm.weight.grad of rank 3",
            |s, c| {
                cnn(s, c);
                fedit(s, &tr("2"), |st| {
                    reshape(st, "norm.weight.grad", &[24, 3, 9])
                });
            },
            fails(&["checkpoint-2.train.safetensors", "norm.weight.grad"]),
        ),
        input(
            "fc2.a's header shape inconsistent with its bytes",
            |s, _| {
                edit_header(&ff(s, &tr("1")), |h| {
                    h["fc2.a"]["shape"] = serde_json::json!([40, 11]);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "fc2.a"]),
        ),
    ]
}

/// Ids, labels, metadata.
fn ids_and_metadata() -> Vec<Entry> {
    vec![
        input(
            "training ids that differ across checkpoints",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let mut v = st.i64s("ids");
                    v.reverse();
                    st.put_i64("ids", &[40], &v);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "ids"]),
        ),
        input(
            "test ids that differ across checkpoints",
            |s, _| {
                fedit(s, &te("10"), |st| {
                    let mut v = st.i64s("ids");
                    v[0] += 1000;
                    st.put_i64("ids", &[7], &v);
                })
            },
            fails(&["checkpoint-10.test.safetensors", "ids"]),
        )
        .test_only(),
        input(
            "ids at some checkpoints only",
            |s, _| fedit(s, &tr("2"), |st| st.remove("ids")),
            fails(&["checkpoint-2.train.safetensors", "ids"]),
        ),
        input(
            "duplicate training ids",
            |s, _| {
                fevery(s, "train", |st| {
                    let mut v = st.i64s("ids");
                    v[5] = v[4];
                    st.put_i64("ids", &[40], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "ids", "duplicate"]),
        ),
        input(
            "duplicate test ids",
            |s, _| {
                fevery(s, "test", |st| {
                    let mut v = st.i64s("ids");
                    v[6] = v[0];
                    st.put_i64("ids", &[7], &v);
                })
            },
            fails(&["checkpoint-1.test.safetensors", "ids", "duplicate"]),
        )
        .test_only(),
        input(
            "ids of the wrong count",
            |s, _| fedit(s, &tr("1"), |st| keep_rows(st, "ids", 39)),
            fails(&["checkpoint-1.train.safetensors", "ids", "40", "39"]),
        ),
        input(
            "float ids",
            |s, _| {
                fedit(s, &tr("1"), |st| {
                    let v: Vec<f32> = st.i64s("ids").iter().map(|&x| x as f32).collect();
                    st.put_f32("ids", &[40], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "ids"]),
        ),
        input(
            "labels of the wrong count",
            |s, _| {
                fedit(s, &tr("1"), |st| {
                    let mut v = st.i64s("labels");
                    v.push(0);
                    st.put_i64("labels", &[41], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "40", "41"]),
        ),
        input(
            "labels stored as floats",
            |s, _| {
                fedit(s, &tr("1"), |st| {
                    let v: Vec<f32> = st.i64s("labels").iter().map(|&x| x as f32).collect();
                    st.put_f32("labels", &[40], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "labels", "integer"]),
        ),
        input(
            "training labels that differ across checkpoints",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let mut v = st.i64s("labels");
                    v[0] = (v[0] + 1) % 4;
                    st.put_i64("labels", &[40], &v);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "labels"]),
        ),
        input(
            "`fc1.bias` metadata `yes`",
            |s, _| fedit(s, &tr("1"), |st| st.set_meta("fc1.bias", "yes")),
            fails(&["checkpoint-1.train.safetensors", "fc1.bias", "yes"]),
        ),
        input(
            "`fc2.bias` metadata `True` (Python's spelling)",
            |s, _| fevery(s, "", |st| st.set_meta("fc2.bias", "True")),
            fails(&["checkpoint-1.train.safetensors", "fc2.bias", "True"]),
        ),
        input(
            "learning_rate metadata 0 at one checkpoint",
            |s, _| fedit(s, &tr("2"), |st| st.set_meta("learning_rate", "0")),
            fails(&[
                "checkpoint-2.train.safetensors",
                "learning_rate",
                "positive",
            ]),
        ),
        input(
            "learning_rate metadata -0.2 at one checkpoint",
            |s, _| fedit(s, &tr("10"), |st| st.set_meta("learning_rate", "-0.2")),
            fails(&["checkpoint-10.train.safetensors", "learning_rate", "-0.2"]),
        ),
        input(
            "learning_rate metadata nan",
            |s, _| fedit(s, &tr("1"), |st| st.set_meta("learning_rate", "nan")),
            fails(&["checkpoint-1.train.safetensors", "learning_rate", "nan"]),
        ),
        input(
            "learning_rate metadata that is not a number",
            |s, _| fedit(s, &tr("1"), |st| st.set_meta("learning_rate", "fast")),
            fails(&["checkpoint-1.train.safetensors", "learning_rate", "fast"]),
        ),
        input(
            "learning_rate metadata missing everywhere, --learning-rate 0",
            |s, c| {
                fevery(s, "", |st| {
                    st.metadata.remove("learning_rate");
                });
                c.set("--learning-rate", "0");
            },
            fails(&["--learning-rate", "positive"]),
        ),
        input(
            "learning rates whose weighted sum overflows (1e37 each)",
            |s, _| fevery(s, "", |st| st.set_meta("learning_rate", "1e37")),
            fails(&["overflow"]),
        ),
    ]
}

/// Non-finite and overflowing factors (also on the GPU, with the CPU's message).
fn non_finite() -> Vec<Entry> {
    vec![
        input(
            "NaN in a training file's fc1.a",
            |s, _| fset(s, &tr("2"), "fc1.a", 3 * 6 + 4, f32::NAN),
            fails(&["checkpoint-2.train.safetensors", "fc1.a", "NaN at [3, 4]"]),
        ),
        input(
            "+inf in a training file's fc2.g",
            |s, _| fset(s, &tr("1"), "fc2.g", 5 * 8 + 1, f32::INFINITY),
            fails(&["checkpoint-1.train.safetensors", "fc2.g", "inf at [5, 1]"]),
        ),
        input(
            "-inf in a training file's fc1.g",
            |s, _| fset(s, &tr("10"), "fc1.g", 9, f32::NEG_INFINITY),
            fails(&["checkpoint-10.train.safetensors", "fc1.g", "-inf at [0, 9]"]),
        ),
        input(
            "NaN in a test file's fc2.a",
            |s, _| fset(s, &te("10"), "fc2.a", 6 * 10, f32::NAN),
            fails(&["checkpoint-10.test.safetensors", "fc2.a", "NaN at [6, 0]"]),
        )
        .test_only(),
        input(
            "inf in a test file's fc1.g",
            |s, _| fset(s, &te("1"), "fc1.g", 2 * 10 + 3, f32::INFINITY),
            fails(&["checkpoint-1.test.safetensors", "fc1.g", "inf at [2, 3]"]),
        )
        .test_only(),
        input(
            "the CNN: NaN in conv1.a [N, S, D] (example 2, position 5, column 7)",
            |s, c| {
                cnn(s, c);
                fset(s, &tr("5"), "conv1.a", (2 * 9 + 5) * 18 + 7, f32::NAN);
            },
            fails(&[
                "checkpoint-5.train.safetensors",
                "conv1.a",
                "NaN at [2, 5, 7]",
            ]),
        ),
        input(
            "the CNN: inf in a test file's conv1.g (example 4, position 8, column 2)",
            |s, c| {
                cnn(s, c);
                fset(s, &te("2"), "conv1.g", (4 * 9 + 8) * 3 + 2, f32::INFINITY);
            },
            fails(&[
                "checkpoint-2.test.safetensors",
                "conv1.g",
                "inf at [4, 8, 2]",
            ]),
        )
        .test_only(),
        input(
            "the CNN: NaN in norm.weight.grad",
            |s, c| {
                cnn(s, c);
                fset(s, &tr("2"), "norm.weight.grad", 3 * 27 + 4, f32::NAN);
            },
            fails(&[
                "checkpoint-2.train.safetensors",
                "norm.weight.grad",
                "NaN at [3, 4]",
            ]),
        ),
        input(
            "the CNN: -inf in a test file's norm.bias.grad",
            |s, c| {
                cnn(s, c);
                fset(s, &te("5"), "norm.bias.grad", 27 + 26, f32::NEG_INFINITY);
            },
            fails(&[
                "checkpoint-5.test.safetensors",
                "norm.bias.grad",
                "-inf at [1, 26]",
            ]),
        )
        .test_only(),
        input(
            "f16 fc1.a holding NaN",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let mut v = st.f32s("fc1.a");
                    v[3 * 6 + 4] = f32::NAN;
                    let bits: Vec<u16> = v.iter().map(|&x| f16_bits(x)).collect();
                    st.put_f16_bits("fc1.a", &[40, 6], &bits);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "fc1.a", "NaN at [3, 4]"]),
        ),
        input(
            "bf16 fc2.g holding inf",
            |s, _| {
                fedit(s, &tr("1"), |st| {
                    let mut v = st.f32s("fc2.g");
                    v[5 * 8 + 1] = f32::INFINITY;
                    st.put_bf16("fc2.g", &[40, 8], &v);
                })
            },
            fails(&["checkpoint-1.train.safetensors", "fc2.g", "inf at [5, 1]"]),
        ),
        input(
            "f64 fc1.a holding 1e300 (finite, beyond f32)",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let mut v: Vec<f64> = st.f32s("fc1.a").iter().map(|&x| x as f64).collect();
                    v[3 * 6 + 4] = 1e300;
                    st.put_f64("fc1.a", &[40, 6], &v);
                })
            },
            fails(&["checkpoint-2.train.safetensors", "fc1.a", "[3, 4]"]),
        ),
        input(
            "a training row of fc1.a at 1e19 (its squared norm overflows)",
            |s, _| {
                fedit(s, &tr("2"), |st| {
                    let mut v = st.f32s("fc1.a");
                    v[5 * 6..6 * 6].fill(1e19);
                    st.put_f32("fc1.a", &[40, 6], &v);
                })
            },
            fails(&["train example 5", "checkpoint-2", "fc1"]),
        ),
        input(
            "the CNN: a training example's conv1.a at 1e20",
            |s, c| {
                cnn(s, c);
                fill_example(s, &tr("5"), 3, 1e20);
            },
            fails(&["train example 3", "checkpoint-5", "conv1", "does not fit"]),
        ),
        // At 1e19 its materialised gradient's squared norm (1.95e38) is above what scores
        // accept (f32::MAX / 16), while its self-influence (learning rate 0.1: 1.95e37)
        // is not: self-influence checks what it computes.
        Entry {
            subs: OUT_FILE,
            ..input(
                "the CNN: a training example's conv1.a at 1e19",
                |s, c| {
                    cnn(s, c);
                    fill_example(s, &tr("5"), 3, 1e19);
                },
                fails(&["train example 3", "checkpoint-5", "conv1", "does not fit"]),
            )
        },
        Entry {
            subs: SELF,
            ..input(
                "the CNN: a training example's conv1.a at 1e19 (its self-influence fits)",
                |s, c| {
                    cnn(s, c);
                    fill_example(s, &tr("5"), 3, 1e19);
                },
                Expect::Succeeds,
            )
        },
        input(
            "every factor 1e20",
            |s, _| {
                fevery(s, "", |st| {
                    for name in ["fc1.a", "fc1.g", "fc2.a", "fc2.g"] {
                        let shape = st.shape(name);
                        let n = shape.iter().product();
                        st.put_f32(name, &shape, &vec![1e20; n]);
                    }
                })
            },
            fails(&["train example 0", "checkpoint-1", "fc1", "does not fit"]),
        ),
        input(
            "subnormal factors (1e-45)",
            |s, _| {
                fevery(s, "", |st| {
                    for name in ["fc1.a", "fc2.a"] {
                        let shape = st.shape(name);
                        let n = shape.iter().product();
                        st.put_f32(name, &shape, &vec![1e-45; n]);
                    }
                })
            },
            Expect::Succeeds,
        ),
    ]
    .into_iter()
    .map(Entry::gpu)
    .collect()
}

/// Folders and files: truncated, missing, special.
fn folders() -> Vec<Entry> {
    vec![
        input(
            "a truncated training factor file",
            |s, _| cut_factor(s, &tr("2"), 10),
            fails(&["checkpoint-2.train.safetensors", "truncated"]),
        ),
        input(
            "a truncated test factor file",
            |s, _| cut_factor(s, &te("1"), 10),
            fails(&["checkpoint-1.test.safetensors", "truncated"]),
        )
        .test_only(),
        input(
            "a factor file truncated inside its header",
            |s, _| {
                let p = ff(s, &tr("10"));
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..100]).unwrap();
            },
            fails(&["checkpoint-10.train.safetensors", "truncated"]),
        ),
        input(
            "trailing junk after a factor file's data",
            |s, _| {
                let p = ff(s, &tr("2"));
                let mut b = std::fs::read(&p).unwrap();
                b.extend_from_slice(b"JUNKJUNKJUNKJUNK");
                std::fs::write(&p, b).unwrap();
            },
            fails(&["checkpoint-2.train.safetensors", "trailing"]),
        ),
        input(
            "a garbage factor file",
            |s, _| std::fs::write(ff(s, &tr("2")), b"not a tensor file").unwrap(),
            fails(&["checkpoint-2.train.safetensors", "not a valid safetensors"]),
        ),
        input(
            "an empty factor file",
            |s, _| std::fs::write(ff(s, &tr("1")), b"").unwrap(),
            fails(&["checkpoint-1.train.safetensors", "not a valid safetensors"]),
        ),
        input(
            "test factors for only some checkpoints",
            |s, _| std::fs::remove_file(ff(s, &te("2"))).unwrap(),
            fails(&["checkpoint-2", "test factors"]),
        ),
        input(
            "no test factors at all",
            |s, _| {
                for c in super::CKPTS {
                    std::fs::remove_file(ff(s, &te(c))).unwrap();
                }
            },
            fails(&["test"]),
        )
        .test_only(),
        input(
            "a .test file without its .train",
            |s, _| std::fs::remove_file(ff(s, &tr("10"))).unwrap(),
            fails(&[
                "checkpoint-10.test.safetensors",
                "checkpoint-10.train.safetensors",
            ]),
        ),
        input(
            "an empty factor folder",
            |s, _| {
                for e in std::fs::read_dir(s.factors()).unwrap() {
                    std::fs::remove_file(e.unwrap().path()).unwrap();
                }
            },
            fails(&["factors", "no factor files"]),
        ),
        input(
            "--factors names a missing folder",
            |s, c| {
                c.set("--factors", s.root.join("nowhere"));
            },
            fails(&["nowhere"]),
        ),
        input(
            "--factors names a factor file",
            |s, c| {
                c.set("--factors", ff(s, &tr("1")));
            },
            fails(&["checkpoint-1.train.safetensors"]),
        ),
        input(
            "--factors names a run of features (--layers fc1,fc2)",
            |s, c| {
                c.set("--factors", &s.run);
            },
            fails(&["checkpoint-1.train.safetensors", "no factors", "`fc1`"]),
        ),
        input(
            "--factors names a run of features (no --layers)",
            |s, c| {
                c.set("--factors", &s.run).unset("--layers");
            },
            fails(&["checkpoint-1.train.safetensors", "no factor"]),
        ),
        input(
            "a FIFO as a training factor file",
            |s, _| fifo_factor(s, &tr("2")),
            fails(&["checkpoint-2.train.safetensors", "special file"]),
        ),
        input(
            "a FIFO as a test factor file",
            |s, _| fifo_factor(s, &te("10")),
            fails(&["checkpoint-10.test.safetensors", "special file"]),
        )
        .test_only(),
        input(
            "a directory as a training factor file",
            |s, _| {
                let p = ff(s, &tr("2"));
                std::fs::remove_file(&p).unwrap();
                std::fs::create_dir(&p).unwrap();
            },
            fails(&["checkpoint-2.train.safetensors", "is a directory"]),
        ),
        input(
            "a symlink to /dev/zero as a training factor file",
            |s, _| {
                let p = ff(s, &tr("1"));
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
            },
            fails(&["checkpoint-1.train.safetensors", "special file"]),
        ),
        input(
            "a dangling symlink as a training factor file",
            |s, _| {
                let p = ff(s, &tr("1"));
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink("/nonexistent/x", &p).unwrap();
            },
            fails(&["checkpoint-1.train.safetensors"]),
        ),
    ]
}

/// Arguments that do not go with factor folders.
fn arguments() -> Vec<Entry> {
    vec![
        arg(
            "--layer given with --factors",
            SUBS,
            |_, c| {
                c.set("--layer", "fc3");
            },
            fails(&["--layer", "--layers"]),
        ),
        arg(
            "--factors with --method tracincp-fast",
            SUBS,
            |_, c| {
                c.set("--method", "tracincp-fast").unset("--layers");
            },
            fails(&["tracincp-fast", "--factors", "--run"]),
        ),
        arg(
            "--run with --method tracincp",
            SUBS,
            |s, c| {
                c.unset("--factors").unset("--layers").set("--run", &s.run);
            },
            fails(&["tracincp", "--factors"]),
        ),
        arg(
            "--run with --method tracincp, and --layer fc3",
            SUBS,
            |s, c| {
                c.unset("--factors")
                    .unset("--layers")
                    .set("--run", &s.run)
                    .set("--layer", "fc3");
            },
            fails(&["tracincp", "--factors"]),
        ),
        arg(
            "--manifest with --method tracincp",
            SUBS,
            |s, c| {
                let m = s.write("run.json", s.manifest_text());
                c.unset("--factors").unset("--layers").set("--manifest", m);
            },
            fails(&["tracincp", "--factors"]),
        ),
        arg(
            "--run and --factors together",
            SUBS,
            |s, c| {
                c.set("--run", &s.run);
            },
            fails(&["--run", "--factors"]),
        ),
        arg(
            "--layers with --run (--method tracincp-fast)",
            SUBS,
            |s, c| {
                c.unset("--factors")
                    .set("--run", &s.run)
                    .set("--layer", "fc3")
                    .set("--method", "tracincp-fast");
            },
            fails(&["--layers", "--layer"]),
        ),
        arg(
            "--factors empty",
            SUBS,
            |_, c| {
                c.set("--factors", "");
            },
            fails(&["--factors"]),
        ),
        arg(
            "--loss mse with --factors (the files hold the loss's gradients)",
            SUBS,
            |_, c| {
                c.set("--loss", "mse");
            },
            fails(&["--loss"]),
        ),
        arg(
            "--reduction mean with --factors",
            SUBS,
            |_, c| {
                c.set("--reduction", "mean");
            },
            fails(&["--reduction"]),
        ),
        arg(
            "--include-bias with --factors (the files say which layers have a bias)",
            SUBS,
            |_, c| {
                c.switch("--include-bias");
            },
            fails(&["--include-bias"]),
        ),
    ]
}

/// Outputs that would land in the factor folder or replace a factor file.
fn outputs() -> Vec<Entry> {
    vec![
        arg(
            "a new .safetensors --out inside the factor folder",
            OUT_FILE,
            |s, c| {
                c.set("--out", ff(s, "new.safetensors"));
            },
            fails(&["new.safetensors", "inside the run folder"]),
        ),
        arg(
            "a new .safetensors --out inside the factor folder, relative",
            OUT_FILE,
            |_, c| {
                c.set("--out", "factors/./new.safetensors");
            },
            fails(&["new.safetensors", "inside the run folder"]),
        ),
        arg(
            "--out is a training factor file",
            OUT_FILE,
            |s, c| {
                c.set("--out", ff(s, &tr("1")));
            },
            fails(&["checkpoint-1.train.safetensors", "is an input"]),
        ),
        arg(
            "--out is a test factor file, relative",
            OUT_FILE,
            |_, c| {
                c.set("--out", "factors/checkpoint-10.test.safetensors");
            },
            fails(&["checkpoint-10.test.safetensors", "is an input"]),
        ),
        arg(
            "--out is a factor file by another path (factors/../factors/...)",
            OUT_FILE,
            |s, c| {
                c.set(
                    "--out",
                    s.root
                        .join("factors/../factors/checkpoint-2.train.safetensors"),
                );
            },
            fails(&["is an input"]),
        ),
        arg(
            "--out is a factor file through a symlinked folder",
            OUT_FILE,
            |s, c| {
                let a = s.root.join("alias");
                std::os::unix::fs::symlink(s.factors(), &a).unwrap();
                c.set("--out", a.join("checkpoint-2.train.safetensors"));
            },
            fails(&["is an input"]),
        ),
        arg(
            "--out is a symlink to a factor file",
            OUT_FILE,
            |s, c| {
                let l = s.out.join("link.safetensors");
                std::os::unix::fs::symlink(ff(s, &tr("1")), &l).unwrap();
                c.set("--out", l);
            },
            fails(&["link.safetensors", "is an input"]),
        ),
        arg(
            "--out is a hard link to a factor file",
            OUT_FILE,
            |s, c| {
                let l = s.out.join("hard.safetensors");
                std::fs::hard_link(ff(s, &tr("2")), &l).unwrap();
                c.set("--out", l);
            },
            fails(&["hard.safetensors", "is an input"]),
        ),
        arg(
            "--json is a test factor file",
            TOPK,
            |s, c| {
                c.set("--json", ff(s, &te("2")));
            },
            fails(&["checkpoint-2.test.safetensors", "is an input"]),
        ),
        arg(
            "--out-dir is the factor folder",
            SELF,
            |s, c| {
                c.set("--out-dir", s.factors());
            },
            fails(&["inside the run folder"]),
        ),
        arg(
            "--out-dir is the factor folder by another path (factors/.)",
            SELF,
            |_, c| {
                c.set("--out-dir", "factors/.");
            },
            fails(&["inside the run folder"]),
        ),
        arg(
            "a bad factor file with --out in a missing folder (no folder is left)",
            OUT_FILE,
            |s, c| {
                fset(s, &tr("2"), "fc1.a", 0, f32::NAN);
                c.set("--out", s.out.join("new-folder/deeper/x.safetensors"));
            },
            fails(&["checkpoint-2.train.safetensors", "fc1.a", "NaN"]),
        ),
        arg(
            "a bad factor file with --out-dir missing (no folder is left)",
            SELF,
            |s, c| {
                fset(s, &tr("2"), "fc1.a", 0, f32::NAN);
                c.set("--out-dir", s.out.join("new-folder"));
            },
            fails(&["checkpoint-2.train.safetensors", "fc1.a", "NaN"]),
        ),
        arg(
            "an older result is replaced",
            SUBS,
            |_, _| {},
            Expect::Succeeds,
        ),
        arg(
            "scores of the CNN into a relative --out",
            SCORES,
            |s, c| {
                cnn(s, c);
                c.set("--out", "rel.safetensors");
            },
            Expect::Succeeds,
        ),
    ]
}
