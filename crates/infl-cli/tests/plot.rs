//! `infl topk --plot DIR` end to end: on a run `infl demo` wrote (features, and factor files
//! with `--method influence`), one PNG per test example that decodes, of the same size for
//! every example, narrower with fewer images per list; a folder of earlier plots is
//! replaced whole; a missing or malformed `images` tensor, a folder holding anything else
//! and `--plot` on a shard are refused with a message naming the file, tensor or flag, and
//! nothing is written. Without a font (never on CI, which installs one) `--plot` is refused
//! before any work, which is checked instead.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::s;
use safetensors::tensor::{Dtype, TensorView};

/// Test examples the demo run keeps (`--explain`), and so PNGs per plot.
const EXPLAINED: usize = 4;
/// Training images of the demo run.
const TRAIN: usize = 60;

/// `infl -q --backend cpu ARGS...`.
fn infl(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("infl")
        .unwrap()
        .args(["-q", "--backend", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

/// A tiny demo run (one epoch, with factor files) in `dir/demo`.
fn demo(dir: &Path) -> PathBuf {
    let out = dir.join("demo");
    let explain = EXPLAINED.to_string();
    let train = TRAIN.to_string();
    let args = [
        "demo", "--train", &train, "--test", "10", "--epochs", "1", "--hidden", "8",
    ];
    let run = infl(
        &[
            &args[..],
            &["--batch-size", "20", "--explain", &explain, "--no-plots"],
            &["--export-factors", "--out", s(&out)],
        ]
        .concat(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// Whether `infl` finds a font for the captions (as `plots::init_font` looks for one).
fn has_font() -> bool {
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || std::env::var_os("INFL_FONT").is_some()
}

/// The PNGs of `dir` decoded: name, width, height, and the share of dark pixels.
fn pngs(dir: &Path) -> Vec<(String, u32, u32, f64)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let file = std::fs::File::open(dir.join(&name)).unwrap();
            let mut reader = png::Decoder::new(std::io::BufReader::new(file))
                .read_info()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            let px = info.color_type.samples();
            let bytes = &buf[..info.buffer_size()];
            let dark = bytes.chunks(px).filter(|p| p[0] < 64).count();
            let share = dark as f64 / (bytes.len() / px) as f64;
            (name, info.width, info.height, share)
        })
        .collect()
}

/// Every file under `dir`, recursively (to see that nothing was written).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files(&p));
        } else {
            v.push(p);
        }
    }
    v.sort();
    v
}

fn fails(args: &[&str], needles: &[&str]) {
    let out = infl(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}: {err}");
    }
}

/// Rewrites the `images` tensor of the safetensors file `path` by `f` (dtype, shape, data).
fn rewrite_images(path: &Path, f: impl Fn(&[usize], &[u8]) -> (Dtype, Vec<usize>, Vec<u8>)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let images = st.tensor("images").unwrap();
    let (dtype, shape, data) = f(images.shape(), images.data());
    let mut tensors: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "images")
        .collect();
    tensors.push((
        "images".into(),
        TensorView::new(dtype, shape, &data).unwrap(),
    ));
    let out = safetensors::serialize(tensors, meta.metadata().clone()).unwrap();
    std::fs::write(path, out).unwrap();
}

#[test]
fn topk_plots_each_test_example_of_a_demo_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path()).join("run");
    let plots = dir.path().join("plots");
    let out = dir.path().join("topk.safetensors");
    let base = [
        "topk",
        "--run",
        s(&run),
        "--layer",
        "fc2",
        "-k",
        "6",
        "-o",
        s(&out),
    ];
    let with_plot = [&base[..], &["--plot", s(&plots)]].concat();
    if !has_font() {
        fails(&with_plot, &["--plot", "font"]);
        assert!(!plots.exists() && !out.exists());
        return;
    }
    // An earlier plot folder, with more figures than this run draws: replaced whole.
    std::fs::create_dir(&plots).unwrap();
    std::fs::write(plots.join("test-9.png"), b"an earlier figure").unwrap();
    let ok = infl(&with_plot);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let five = pngs(&plots);
    let names: Vec<String> = (0..EXPLAINED).map(|i| format!("test-{i}.png")).collect();
    assert_eq!(five.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), names);
    for (name, w, h, dark) in &five {
        assert_eq!((*w, *h), (five[0].1, five[0].2), "{name}: another size");
        // MNIST digits are white on black as stored: the figure holds their black.
        assert!(*dark > 0.05, "{name}: {dark} of its pixels are dark");
    }
    // Two images per list instead of five: narrower by 2 x 3 tiles (each 28 px drawn 3x,
    // 96 px wide at least, plus 10 px of padding), as tall.
    let two = [&with_plot[..], &["--plot-top", "2"]].concat();
    assert!(infl(&two).status.success());
    let narrow = pngs(&plots);
    assert_eq!(narrow.len(), EXPLAINED);
    assert_eq!(five[0].1 - narrow[0].1, 2 * 3 * (96 + 10));
    assert_eq!(five[0].2, narrow[0].2);
    // Any method, on factor files too: influence functions over the demo's layers.
    let factors = run.join("factors");
    let by_factors = [
        "topk",
        "--factors",
        s(&factors),
        "--method",
        "influence",
        "-k",
        "3",
        "-o",
        s(&out),
        "--plot",
        s(&plots),
    ];
    assert!(infl(&by_factors).status.success());
    assert_eq!(pngs(&plots).len(), EXPLAINED);
    // No temporary file or folder is left beside the plots.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".infl-tmp"), "leftover {name}");
    }
}

#[test]
fn bad_images_and_folders_are_refused_and_nothing_is_written() {
    if !has_font() {
        return; // checked by the test above: --plot is refused before any work
    }
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path()).join("run");
    let plots = dir.path().join("plots");
    let out = dir.path().join("topk.safetensors");
    let args = [
        "topk",
        "--run",
        s(&run),
        "--layer",
        "fc2",
        "-o",
        s(&out),
        "--plot",
        s(&plots),
    ];
    let before = files(dir.path());
    let check = |needles: &[&str]| {
        fails(&args, needles);
        assert!(!plots.exists() && !out.exists());
    };
    let train = run.join("epoch-1.train.safetensors");
    let test = run.join("epoch-1.test.safetensors");
    let pristine = (
        std::fs::read(&train).unwrap(),
        std::fs::read(&test).unwrap(),
    );
    let restore = || {
        std::fs::write(&train, &pristine.0).unwrap();
        std::fs::write(&test, &pristine.1).unwrap();
    };
    // [N, 784]: flattened images.
    rewrite_images(&train, |sh, d| (Dtype::U8, vec![sh[0], 784], d.to_vec()));
    check(&[
        "epoch-1.train.safetensors",
        "`images`",
        "[N, H, W]",
        "[60, 784]",
    ]);
    restore();
    // [N, 28, 28, 2]: two channels.
    rewrite_images(&test, |sh, d| {
        let doubled: Vec<u8> = d.iter().flat_map(|&v| [v, v]).collect();
        (Dtype::U8, vec![sh[0], 28, 28, 2], doubled)
    });
    check(&["epoch-1.test.safetensors", "`images`", "C = 1 or 3"]);
    restore();
    // One image short of the examples.
    rewrite_images(&train, |sh, d| {
        (Dtype::U8, vec![sh[0] - 1, 28, 28], d[784..].to_vec())
    });
    check(&[
        "epoch-1.train.safetensors",
        "expected 60 images",
        "[59, 28, 28]",
    ]);
    restore();
    // Floats above 1.
    rewrite_images(&test, |sh, d| {
        let f: Vec<u8> = d.iter().flat_map(|&v| f32::from(v).to_le_bytes()).collect();
        (Dtype::F32, sh.to_vec(), f)
    });
    check(&["epoch-1.test.safetensors", "`images`", "in [0, 1]", "found"]);
    restore();
    // Test images of another size than the training ones.
    rewrite_images(&test, |sh, d| {
        let cut: Vec<u8> = d.chunks(28).flat_map(|r| r[..27].to_vec()).collect();
        (Dtype::U8, vec![sh[0], 28, 27], cut)
    });
    check(&["epoch-1.test.safetensors", "training images' size"]);
    restore();
    // No images at all: the Captum fixture run.
    let captum = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run");
    let no_images = [
        "topk",
        "--run",
        s(&captum),
        "--layer",
        "fc3",
        "-k",
        "3",
        "-o",
        s(&out),
        "--plot",
        s(&plots),
    ];
    fails(
        &no_images,
        &[
            "checkpoint-10.train.safetensors",
            "no tensor `images`",
            "--plot",
        ],
    );
    assert!(!plots.exists() && !out.exists());
    // A folder holding something else, and --plot on a shard.
    std::fs::create_dir(&plots).unwrap();
    std::fs::write(plots.join("notes.txt"), b"mine").unwrap();
    fails(&args, &["plots", "notes.txt", "test-*.png"]);
    assert_eq!(std::fs::read(plots.join("notes.txt")).unwrap(), b"mine");
    std::fs::remove_dir_all(&plots).unwrap();
    fails(
        &[&args[..], &["--shard", "1/2"]].concat(),
        &["--plot", "shard"],
    );
    fails(
        &[&args[..7], &["--plot-top", "3"]].concat(),
        &["--plot <DIR>"],
    );
    assert_eq!(files(dir.path()), before);
}
