//! Python bindings of infl: the compiled module `infl._native` of the `infl` Python
//! package (pure-Python modules beside it in `python/infl/`: the public API, `infl.ray`,
//! type stubs).
//!
//! Design choices:
//! - Runs on disk are loaded by path, memory-mapped, as the CLI loads them (a shard reads
//!   only its training rows: [`infl::shard`]); arrays in memory are borrowed, not copied:
//!   a C-contiguous `float32` numpy array becomes a [`Matrix`] over numpy's own buffer
//!   ([`Borrowed`]), held read-only for the call. Labels (one integer per example) are
//!   copied as `int64`.
//! - The GIL is released while Rust computes (`Python::detach`), so other Python threads
//!   (and rayon's workers) run.
//! - Every error is an `infl.InflError` (a `ValueError`) with the CLI's message; inputs of
//!   the wrong type, dtype, rank or layout are refused naming the argument and saying what
//!   was expected (a non-contiguous view: `np.ascontiguousarray`).
//! - Scoring goes through the estimators' provided methods and the one engine, as
//!   everywhere in infl; top-k parts merge with [`TopK::merge_rows`].

use std::sync::Arc;

use infl::curvature::{Curvature, Damping, Solver};
use infl::estimators::{self, Convention, Estimator, Options};
use infl::io::{FactorRun, RunLayout};
use infl::shard::{ListData, MergedTopK, Shard, ShardRows, TopKPart, merge_topk_parts};
use infl::{
    Backend, BackendChoice, Bias, Checkpoint, CheckpointData, Examples, F32Storage, Loss, Matrix,
    Reduction, Run, Splits, TopKRows,
};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    _native,
    InflError,
    PyValueError,
    "Bad input or settings; the message is the one the `infl` command prints."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    InflError::new_err(e.to_string())
}

/// A numpy array's `float32` buffer, borrowed: the [`Matrix`] storage of an array passed
/// in from Python. `owner` keeps the array (and so its buffer, which numpy never moves
/// while it is referenced) alive.
struct Borrowed {
    _owner: Py<PyAny>,
    addr: usize,
    len: usize,
}

impl F32Storage for Borrowed {
    fn as_f32(&self) -> &[f32] {
        // SAFETY: `addr` is the data pointer of a C-contiguous float32 array of `len`
        // elements (checked in `matrix`), kept alive by `_owner`; numpy does not move or
        // free the buffer of a referenced array. The caller holds a read-only borrow of the
        // array (`PyReadonlyArray`) for the whole call, and `Borrowed` values never outlive
        // that call (they live in the run the call builds and drops).
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.addr as *const f32, self.len)
        }
    }
}

/// Describes an argument's dtype, shape and layout, for messages.
fn describe(a: &Bound<'_, PyUntypedArray>) -> String {
    let layout = if a.is_c_contiguous() {
        "C-contiguous"
    } else {
        "non-contiguous"
    };
    format!("{} {:?} ({layout})", a.dtype(), a.shape())
}

/// The untyped array behind `obj`, or a clear refusal naming `name`.
fn untyped<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        err(format!(
            "{name}: expected a numpy array, found {} (a torch tensor: pass tensor.numpy() or \
             np.from_dlpack(tensor))",
            obj.get_type()
        ))
    })
}

/// A C-contiguous `float32` array of rank `rank` as a borrowed [`Matrix`] (`[rows, cols]`;
/// rank 1 is one row), with the read-only borrow that protects it for the call.
fn matrix<'py>(
    name: &str,
    obj: &Bound<'py, PyAny>,
    rank: usize,
    guards: &mut Vec<numpy::PyReadonlyArrayDyn<'py, f32>>,
) -> PyResult<Matrix> {
    let a = untyped(name, obj)?;
    let f32_dtype = numpy::dtype::<f32>(obj.py());
    if !a.dtype().is_equiv_to(&f32_dtype) || a.ndim() != rank || !a.is_c_contiguous() {
        let want = if rank == 2 { "[N, D]" } else { "[K]" };
        return Err(err(format!(
            "{name}: expected a C-contiguous float32 array {want}, found {} (convert with \
             np.ascontiguousarray(x, dtype=np.float32))",
            describe(&a)
        )));
    }
    let array = obj.cast::<numpy::PyArrayDyn<f32>>()?.readonly();
    let slice = array.as_slice().map_err(err)?;
    let shape = a.shape().to_vec();
    let (rows, cols) = if rank == 2 {
        (shape[0], shape[1])
    } else {
        (1, shape[0])
    };
    let storage = Borrowed {
        _owner: obj.clone().unbind(),
        addr: slice.as_ptr() as usize,
        len: slice.len(),
    };
    guards.push(array);
    Matrix::from_storage(rows, cols, Arc::new(storage)).map_err(err)
}

/// A 1-D integer array as `int64` values (copied).
fn integers(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let a = untyped(name, obj)?;
    let kind = a.dtype().kind();
    if a.ndim() != 1 || !matches!(kind, b'i' | b'u') {
        return Err(err(format!(
            "{name}: expected a 1-D integer array [N], found {}",
            describe(&a)
        )));
    }
    let as_i64 = obj.call_method1("astype", ("int64",))?;
    let array = as_i64.cast::<PyArray1<i64>>()?.readonly();
    Ok(array.as_array().to_vec())
}

/// Any float array as `float32` values, flattened (copied).
fn floats(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    let flat = obj
        .call_method1("astype", ("float32",))?
        .call_method0("ravel")?;
    let array = flat.cast::<PyArray1<f32>>()?.readonly();
    Ok(array.as_array().to_vec())
}

/// How to compute: the estimator's options and the backend.
struct Settings {
    method: String,
    options: Options,
    /// A curvature saved by `infl fit` (influence's `hessian` setting).
    hessian: Option<std::path::PathBuf>,
    backend: BackendChoice,
    threads: Option<usize>,
}

impl Settings {
    #[allow(clippy::too_many_arguments)]
    fn new(
        method: &str,
        loss: &str,
        reduction: &str,
        include_bias: bool,
        learning_rate: f32,
        projection_dim: Option<usize>,
        seed: u64,
        backend: &str,
        threads: Option<usize>,
        influence: Option<&Bound<'_, PyDict>>,
        factors: bool,
    ) -> PyResult<Self> {
        estimators::find(method).map_err(err)?;
        let loss = match loss {
            "ce" => Loss::CrossEntropy,
            "mse" => Loss::MeanSquaredError,
            other => {
                return Err(err(format!(
                    "loss: expected \"ce\" or \"mse\", found {other:?}"
                )));
            }
        };
        let reduction = match reduction {
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            other => {
                return Err(err(format!(
                    "reduction: expected \"sum\" or \"mean\", found {other:?}"
                )));
            }
        };
        let backend = match backend {
            "auto" => BackendChoice::Auto,
            "cpu" => BackendChoice::Cpu,
            "gpu" => BackendChoice::Gpu,
            other => {
                return Err(err(format!(
                    "backend: expected \"auto\", \"cpu\" or \"gpu\", found {other:?}"
                )));
            }
        };
        if let Err(why) = infl::io::check_learning_rate(learning_rate) {
            return Err(err(format!("learning_rate: {why}")));
        }
        if let Some(t) = threads {
            infl::check_threads(t).map_err(|e| err(format!("threads: {e}")))?;
        }
        let options = Options {
            loss,
            reduction,
            bias: if include_bias {
                Bias::Included
            } else {
                Bias::Excluded
            },
            default_learning_rate: learning_rate,
            projection_dim,
            seed,
            ..Options::default()
        };
        let options = match influence {
            Some(d) if !d.is_empty() => influence_options(options, method, d, factors)?,
            _ => options,
        };
        let hessian = match influence.map(|d| d.get_item("hessian")).transpose()? {
            Some(Some(v)) if !v.is_none() => {
                Some(v.extract::<std::path::PathBuf>().map_err(|_| {
                    err("hessian: expected a path (a curvature saved by `infl fit`)")
                })?)
            }
            _ => None,
        };
        Ok(Self {
            method: method.to_string(),
            options,
            hessian,
            backend,
            threads,
        })
    }

    /// The estimator, with the saved curvature when `hessian` is set (the CLI's
    /// `--hessian`: the same loading and checks).
    fn estimator(&self) -> PyResult<Box<dyn Estimator>> {
        match &self.hessian {
            Some(path) => {
                let influence = infl::InfluenceFunction::from(&self.options);
                Ok(Box::new(influence.with_saved_curvature(path).map_err(err)?))
            }
            None => estimators::build(&self.method, &self.options).map_err(err),
        }
    }

    fn backend(&self) -> PyResult<Box<dyn Backend>> {
        infl::select_backend(self.backend, self.threads).map_err(err)
    }
}

/// Influence functions' settings (`solver`, `damping`, `convention`, `curvature`; each
/// solver's knobs at their defaults, the CLI's) into `options`, for `method="influence"`
/// (`hessian`, a path, is read by [`Settings::new`]).
fn influence_options(
    mut options: Options,
    method: &str,
    d: &Bound<'_, PyDict>,
    factors: bool,
) -> PyResult<Options> {
    let influence = infl::InfluenceFunction::default();
    if method != influence.name() {
        return Err(err(format!(
            "solver, damping, convention, curvature and hessian are settings of \
             method=\"{}\", not of {method:?}",
            influence.name()
        )));
    }
    let text = |key: &str| -> PyResult<Option<String>> {
        d.get_item(key)?
            .filter(|v| !v.is_none())
            .map(|v| {
                v.extract::<String>()
                    .map_err(|_| err(format!("{key}: expected a string")))
            })
            .transpose()
    };
    for key in d.keys() {
        let key: String = key.extract()?;
        if !["solver", "damping", "convention", "curvature", "hessian"].contains(&key.as_str()) {
            return Err(err(format!(
                "unknown influence setting {key:?}; expected solver, damping, convention, \
                 curvature or hessian"
            )));
        }
    }
    options.curvature = text("curvature")?
        .map(|c| Curvature::named(&c))
        .transpose()
        .map_err(err)?;
    let name = text("solver")?;
    let name = name
        .as_deref()
        .unwrap_or(Solver::default_name(factors, options.curvature));
    options.solver = match Solver::named(name).map_err(err)? {
        Solver::Lissa {
            depth,
            scale,
            batch,
            repeats,
            ..
        } => Solver::Lissa {
            depth,
            scale,
            batch,
            repeats,
            seed: options.seed,
        },
        Solver::Arnoldi {
            dimension,
            eigenpairs,
            ..
        } => Solver::Arnoldi {
            dimension,
            eigenpairs,
            seed: options.seed,
        },
        other => other,
    };
    if let Some(c) = text("convention")? {
        options.convention = Convention::named(&c).map_err(err)?;
    }
    options.damping = match d.get_item("damping")?.filter(|v| !v.is_none()) {
        None => None,
        Some(v) => Some(match v.extract::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Damping::Value(x),
            _ if v.extract::<String>().is_ok_and(|t| t == "heuristic") => Damping::Heuristic,
            _ => {
                return Err(err(format!(
                    "damping: expected a finite number >= 0 or \"heuristic\", found {v}"
                )));
            }
        }),
    };
    Ok(options)
}

/// Where a run on disk is: a run folder or manifest with its final `layer`, or (without a
/// layer) a folder of factor files with the chosen `layers`.
struct OnDisk {
    path: std::path::PathBuf,
    layer: Option<String>,
    layers: Option<Vec<String>>,
}

impl OnDisk {
    /// The run (the splits asked for; the training rows of `shard` only).
    fn load(&self, splits: Splits, shard: Option<Shard>) -> infl::Result<(Run, Option<ShardRows>)> {
        match &self.layer {
            Some(layer) => {
                let layout = if self.path.is_file() {
                    RunLayout::from_manifest(&self.path)?
                } else {
                    RunLayout::discover(&self.path)?
                };
                infl::shard::load_features(&layout, layer, splits, shard)
            }
            None => {
                let factors = FactorRun::discover(&self.path)?;
                let run = infl::load_factor_run(&factors, self.layers.as_deref(), splits)?;
                let run = Run::Factors(run);
                match shard {
                    None => Ok((run, None)),
                    Some(s) => infl::shard::cut(&run, s).map(|(r, p)| (r, Some(p))),
                }
            }
        }
    }
}

fn parse_shard(shard: Option<(usize, usize)>) -> PyResult<Option<Shard>> {
    shard
        .map(|(i, n)| Shard::new(i, n).map_err(err))
        .transpose()
}

/// Loads `run` and computes `what` on it with the GIL released.
fn on_disk<T: Send>(
    py: Python<'_>,
    run: OnDisk,
    settings: &Settings,
    splits: Splits,
    shard: Option<(usize, usize)>,
    what: impl FnOnce(&dyn Estimator, &dyn Backend, &Run) -> infl::Result<T> + Send,
) -> PyResult<(T, Option<ShardRows>)> {
    let shard = parse_shard(shard)?;
    let estimator = settings.estimator()?;
    let backend = settings.backend()?;
    py.detach(|| {
        let (loaded, part) = run.load(splits, shard)?;
        let estimator = infl::shard::for_part(estimator, part.as_ref())?;
        Ok((what(&*estimator, &*backend, &loaded)?, part))
    })
    .map_err(|e: infl::Error| err(e))
}

/// Top-k lists as numpy arrays: `proponents`/`opponents` (training rows, global),
/// their `_ids` and `_scores`, `test_ids`, `k`, and the shard's `rows`.
fn topk_dict<'py>(
    py: Python<'py>,
    top: &TopKRows,
    first_row: usize,
    id_of: &dyn Fn(usize) -> i64,
    test_ids: &[i64],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let t = top.proponents.len();
    let w = top.proponents.first().map_or(0, Vec::len);
    for (name, rows) in [("proponent", &top.proponents), ("opponent", &top.opponents)] {
        let flat = rows.iter().flatten();
        let idx: Vec<i64> = flat.clone().map(|r| (first_row + r.index) as i64).collect();
        let ids: Vec<i64> = flat.clone().map(|r| id_of(r.index)).collect();
        let sc: Vec<f32> = flat.map(|r| r.score).collect();
        let shaped = |v: Vec<i64>| v.into_pyarray(py).reshape([t, w]);
        d.set_item(format!("{name}s"), shaped(idx)?)?;
        d.set_item(format!("{name}_ids"), shaped(ids)?)?;
        d.set_item(
            format!("{name}_scores"),
            sc.into_pyarray(py).reshape([t, w])?,
        )?;
    }
    d.set_item("test_ids", test_ids.to_vec().into_pyarray(py))?;
    d.set_item("k", top.k)?;
    Ok(d)
}

/// `infl._native.topk`: top-k proponents and opponents of a run on disk (a shard's when
/// `shard = (i, N)`), as a dict of arrays (see `infl.topk`).
#[pyfunction]
#[pyo3(signature = (run, k, *, layer=None, layers=None, method="tracincp-fast", shard=None,
    loss="ce", reduction="sum", include_bias=false, learning_rate=1.0, projection_dim=None,
    seed=0, backend="cpu", threads=None, influence=None))]
#[allow(clippy::too_many_arguments)]
fn topk<'py>(
    py: Python<'py>,
    run: std::path::PathBuf,
    k: usize,
    layer: Option<String>,
    layers: Option<Vec<String>>,
    method: &str,
    shard: Option<(usize, usize)>,
    loss: &str,
    reduction: &str,
    include_bias: bool,
    learning_rate: f32,
    projection_dim: Option<usize>,
    seed: u64,
    backend: &str,
    threads: Option<usize>,
    influence: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let settings = Settings::new(
        method,
        loss,
        reduction,
        include_bias,
        learning_rate,
        projection_dim,
        seed,
        backend,
        threads,
        influence.as_ref(),
        layer.is_none(),
    )?;
    let run = OnDisk {
        path: run,
        layer,
        layers,
    };
    let (result, part) = on_disk(
        py,
        run,
        &settings,
        Splits::TrainAndTest,
        shard,
        |e, b, r| {
            // A shard shorter than k lists all of its rows; a merge keeps k.
            let mut top = e.topk(b, r, k.min(r.n_train()).max(1), &())?;
            top.values.k = k;
            Ok(top)
        },
    )?;
    let first = part.as_ref().map_or(0, |p| p.rows.start);
    let test_ids = result
        .prepared
        .test
        .as_ref()
        .map(|t| t.ids.clone())
        .unwrap_or_default();
    let train_ids = &result.prepared.train.ids;
    let d = topk_dict(py, &result.values, first, &|i| train_ids[i], &test_ids)?;
    let n = part
        .as_ref()
        .map_or(result.prepared.train.ids.len(), |p| p.examples);
    let rows = part.map_or(0..n, |p| p.rows);
    d.set_item("rows", (rows.start, rows.end))?;
    d.set_item("examples", n)?;
    Ok(d)
}

/// `infl._native.scores`: the `[test, train]` scores of a run on disk (a shard's columns
/// when `shard = (i, N)`), with the training and test ids.
#[pyfunction]
#[pyo3(signature = (run, *, layer=None, layers=None, method="tracincp-fast", shard=None,
    loss="ce", reduction="sum", include_bias=false, learning_rate=1.0, projection_dim=None,
    seed=0, backend="cpu", threads=None, influence=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn scores<'py>(
    py: Python<'py>,
    run: std::path::PathBuf,
    layer: Option<String>,
    layers: Option<Vec<String>>,
    method: &str,
    shard: Option<(usize, usize)>,
    loss: &str,
    reduction: &str,
    include_bias: bool,
    learning_rate: f32,
    projection_dim: Option<usize>,
    seed: u64,
    backend: &str,
    threads: Option<usize>,
    influence: Option<Bound<'py, PyDict>>,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
)> {
    let settings = Settings::new(
        method,
        loss,
        reduction,
        include_bias,
        learning_rate,
        projection_dim,
        seed,
        backend,
        threads,
        influence.as_ref(),
        layer.is_none(),
    )?;
    let run = OnDisk {
        path: run,
        layer,
        layers,
    };
    let (result, _) = on_disk(
        py,
        run,
        &settings,
        Splits::TrainAndTest,
        shard,
        |e, b, r| e.scores(b, r, &()),
    )?;
    let p = &result.prepared;
    let test_ids = p.test.as_ref().map(|t| t.ids.clone()).unwrap_or_default();
    let (t, n) = (test_ids.len(), p.train.ids.len());
    let scores = result.values.into_pyarray(py).reshape([t, n])?;
    Ok((
        scores,
        p.train.ids.clone().into_pyarray(py),
        test_ids.into_pyarray(py),
    ))
}

/// `infl._native.self_influence`: self-influence of the training examples of a run on disk
/// (a shard's when `shard = (i, N)`), with their ids.
#[pyfunction]
#[pyo3(signature = (run, *, layer=None, layers=None, method="tracincp-fast", shard=None,
    loss="ce", reduction="sum", include_bias=false, learning_rate=1.0, projection_dim=None,
    seed=0, backend="cpu", threads=None, influence=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn self_influence<'py>(
    py: Python<'py>,
    run: std::path::PathBuf,
    layer: Option<String>,
    layers: Option<Vec<String>>,
    method: &str,
    shard: Option<(usize, usize)>,
    loss: &str,
    reduction: &str,
    include_bias: bool,
    learning_rate: f32,
    projection_dim: Option<usize>,
    seed: u64,
    backend: &str,
    threads: Option<usize>,
    influence: Option<Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<i64>>)> {
    let settings = Settings::new(
        method,
        loss,
        reduction,
        include_bias,
        learning_rate,
        projection_dim,
        seed,
        backend,
        threads,
        influence.as_ref(),
        layer.is_none(),
    )?;
    let run = OnDisk {
        path: run,
        layer,
        layers,
    };
    let (result, _) = on_disk(py, run, &settings, Splits::TrainOnly, shard, |e, b, r| {
        e.self_influence(b, r)
    })?;
    let ids = result.prepared.train.ids.clone();
    Ok((result.values.into_pyarray(py), ids.into_pyarray(py)))
}

/// `infl._native.tracin_fast`: TracInCPFast on arrays in memory (borrowed, not copied).
/// `checkpoints` is a list of `(weight [K, D], bias [K] or None, learning_rate)`; the
/// features `[N, D]` and `[T, D]` are the final layer's inputs per checkpoint (one array
/// each, or one per checkpoint). Returns self-influence `[N]` without a test set, the
/// scores `[T, N]` without `k`, else top-k lists (a dict as `topk`'s).
#[pyfunction]
#[pyo3(signature = (checkpoints, train_features, train_labels, test_features=None,
    test_labels=None, *, k=None, loss="ce", reduction="sum", include_bias=false,
    backend="cpu", threads=None))]
#[allow(clippy::too_many_arguments)]
fn tracin_fast<'py>(
    py: Python<'py>,
    checkpoints: Vec<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>, f32)>,
    train_features: Bound<'py, PyAny>,
    train_labels: Bound<'py, PyAny>,
    test_features: Option<Bound<'py, PyAny>>,
    test_labels: Option<Bound<'py, PyAny>>,
    k: Option<usize>,
    loss: &str,
    reduction: &str,
    include_bias: bool,
    backend: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let settings = Settings::new(
        "tracincp-fast",
        loss,
        reduction,
        include_bias,
        1.0,
        None,
        0,
        backend,
        threads,
        None,
        false,
    )?;
    let mut guards = Vec::new();
    // One features array for every checkpoint, or a list with one per checkpoint.
    let per_checkpoint = |name: &str,
                          obj: &Bound<'py, PyAny>|
     -> Vec<(String, Bound<'py, PyAny>)> {
        match obj.extract::<Vec<Bound<'py, PyAny>>>() {
            Ok(list) if !obj.is_instance_of::<PyUntypedArray>() => (list.into_iter().enumerate())
                .map(|(c, x)| (format!("{name}[{c}]"), x))
                .collect(),
            _ => vec![(name.to_string(), obj.clone()); checkpoints.len()],
        }
    };
    let train_x = per_checkpoint("train_features", &train_features);
    let test_x = test_features
        .as_ref()
        .map(|t| per_checkpoint("test_features", t));
    for (name, x) in [
        ("train_features", Some(&train_x)),
        ("test_features", test_x.as_ref()),
    ] {
        if let Some(x) = x.filter(|x| x.len() != checkpoints.len()) {
            return Err(err(format!(
                "{name}: expected one array, or a list of one per checkpoint ({}), found a \
                 list of {}",
                checkpoints.len(),
                x.len()
            )));
        }
    }
    let train_y = integers("train_labels", &train_labels)?;
    let test_y = match (&test_x, &test_labels) {
        (Some(_), Some(y)) => Some(integers("test_labels", y)?),
        (None, None) => None,
        _ => return Err(err("test_features and test_labels: give both or neither")),
    };
    let mut run = Vec::with_capacity(checkpoints.len());
    for (c, (weight, bias, lr)) in checkpoints.iter().enumerate() {
        let weight = matrix(&format!("checkpoints[{c}] weight"), weight, 2, &mut guards)?;
        let bias = match bias {
            Some(b) => Some(matrix(&format!("checkpoints[{c}] bias"), b, 1, &mut guards)?.to_vec()),
            None => None,
        };
        let examples = |(name, x): &(String, Bound<'py, PyAny>), y: &[i64], guards: &mut Vec<_>| {
            let features = matrix(name, x, 2, guards)?;
            if y.len() != features.rows() {
                let labels = if name.starts_with("train") {
                    "train_labels"
                } else {
                    "test_labels"
                };
                return Err(err(format!(
                    "{labels}: expected {} labels (one per row of {name}), found {}",
                    features.rows(),
                    y.len()
                )));
            }
            Ok(Examples::classified(features, y.to_vec()))
        };
        let train = examples(&train_x[c], &train_y, &mut guards)?;
        let test = match (&test_x, &test_y) {
            (Some(x), Some(y)) => Some(examples(&x[c], y, &mut guards)?),
            _ => None,
        };
        let checkpoint = Checkpoint {
            name: format!("checkpoint-{c}"),
            source: Default::default(),
            learning_rate: Some(*lr),
            weight,
            bias,
        };
        run.push(CheckpointData {
            checkpoint,
            train,
            test,
        });
    }
    let run = Run::Features(run);
    let estimator = settings.estimator()?;
    let backend = settings.backend()?;
    let (e, b) = (&*estimator, &*backend);
    match (test_y.is_some(), k) {
        (false, _) => {
            let values = py.detach(|| e.self_influence(b, &run)).map_err(err)?;
            Ok(values.values.into_pyarray(py).into_any())
        }
        (true, None) => {
            let s = py.detach(|| e.scores(b, &run, &())).map_err(err)?;
            let (t, n) = (s.prepared.set.n_test(), s.prepared.set.n_train());
            Ok(s.values.into_pyarray(py).reshape([t, n])?.into_any())
        }
        (true, Some(k)) => {
            let top = py.detach(|| e.topk(b, &run, k, &())).map_err(err)?;
            let p = &top.prepared;
            let test_ids = p.test.as_ref().map(|t| t.ids.clone()).unwrap_or_default();
            Ok(topk_dict(py, &top.values, 0, &|i| p.train.ids[i], &test_ids)?.into_any())
        }
    }
}

/// `infl._native.merge_topk`: merges top-k lists over disjoint training rows (shards'
/// results, in any order and grouping) into the best `k`. Each part is a dict as `topk`
/// returns.
#[pyfunction]
fn merge_topk<'py>(
    py: Python<'py>,
    parts: Vec<Bound<'py, PyDict>>,
    k: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let Some(first) = parts.first() else {
        return Err(err("merge_topk: expected at least one part"));
    };
    let get = |d: &Bound<'py, PyDict>, key: &str| -> PyResult<Bound<'py, PyAny>> {
        d.get_item(key)?
            .ok_or_else(|| err(format!("merge_topk: a part has no `{key}`")))
    };
    let test_ids = integers("test_ids", &get(first, "test_ids")?)?;
    let t = test_ids.len();
    let mut data = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if integers("test_ids", &get(part, "test_ids")?)? != test_ids {
            return Err(err("merge_topk: parts of different test sets"));
        }
        let rows = get(part, "rows")
            .and_then(|r| r.extract::<(usize, usize)>())
            .ok()
            .map(|(a, b)| a..b);
        let mut lists = Vec::new();
        let mut width = 0;
        for name in ["proponent", "opponent"] {
            let key = format!("{name}s");
            let x = get(part, &key)?;
            let shape = untyped(&key, &x)?.shape().to_vec();
            if shape.len() != 2 || shape[0] != t {
                return Err(err(format!(
                    "merge_topk: part {}: `{key}` of shape {shape:?}; expected [{t}, w]",
                    i + 1
                )));
            }
            width = shape[1];
            lists.push(ListData {
                rows: integers(&key, &x.call_method0("ravel")?)?,
                ids: integers(
                    &key,
                    &get(part, &format!("{name}_ids"))?.call_method0("ravel")?,
                )?,
                scores: floats(&get(part, &format!("{name}_scores"))?)?,
            });
        }
        data.push((rows, width, lists));
    }
    let topk_parts: Vec<TopKPart<'_>> = (data.iter().enumerate())
        .map(|(i, (rows, width, lists))| TopKPart {
            source: format!("merge_topk part {}", i + 1).into(),
            rows: rows.clone(),
            width: *width,
            proponents: lists[0].as_flat(),
            opponents: lists[1].as_flat(),
        })
        .collect();
    let MergedTopK { top, ids } = merge_topk_parts(t, k, &topk_parts).map_err(err)?;
    let seen = || data.iter().filter_map(|(rows, _, _)| rows.as_ref());
    // Candidates are global rows already.
    let d = topk_dict(py, &top, 0, &|r| ids[&r], &test_ids)?;
    if let (Some(lo), Some(hi)) = (seen().map(|r| r.start).min(), seen().map(|r| r.end).max()) {
        d.set_item("rows", (lo, hi))?;
    }
    Ok(d)
}

/// `infl._native.shard_rows`: the training rows `(start, end)` of shard `i` of `n` in a run
/// of `examples` (1-based, as `--shard i/N`).
#[pyfunction]
fn shard_rows(i: usize, n: usize, examples: usize) -> PyResult<(usize, usize)> {
    let rows = Shard::new(i, n)
        .and_then(|s| s.rows(examples))
        .map_err(err)?;
    Ok((rows.start, rows.end))
}

/// `infl._native.training_examples`: the number of training examples of a run on disk
/// (from the first training file's header; factor folders are read).
#[pyfunction]
#[pyo3(signature = (run, *, layer=None, layers=None))]
fn training_examples(
    py: Python<'_>,
    run: std::path::PathBuf,
    layer: Option<String>,
    layers: Option<Vec<String>>,
) -> PyResult<usize> {
    let disk = OnDisk {
        path: run,
        layer,
        layers,
    };
    py.detach(|| match &disk.layer {
        Some(_) => {
            let layout = if disk.path.is_file() {
                RunLayout::from_manifest(&disk.path)?
            } else {
                RunLayout::discover(&disk.path)?
            };
            Ok(ShardRows::of_layout(Shard::new(1, 1)?, &layout)?.examples)
        }
        None => disk.load(Splits::TrainOnly, None).map(|(r, _)| r.n_train()),
    })
    .map_err(|e: infl::Error| err(e))
}

/// The names of infl's estimators (`method=`).
#[pyfunction]
fn methods() -> Vec<&'static str> {
    estimators::REGISTRY
        .iter()
        .filter(|r| r.audience == estimators::Audience::Users)
        .map(|r| r.name)
        .collect()
}

/// The compiled module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("InflError", m.py().get_type::<InflError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    for f in [
        wrap_pyfunction!(topk, m)?,
        wrap_pyfunction!(scores, m)?,
        wrap_pyfunction!(self_influence, m)?,
        wrap_pyfunction!(tracin_fast, m)?,
        wrap_pyfunction!(merge_topk, m)?,
        wrap_pyfunction!(shard_rows, m)?,
        wrap_pyfunction!(training_examples, m)?,
        wrap_pyfunction!(methods, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
