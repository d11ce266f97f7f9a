//! Step 1, load: MNIST (bundled subset or `--mnist-dir`), truncated, with label noise
//! injected and the inputs standardised.

use std::path::Path;

use anyhow::{Result, ensure};
use infl::io::mnist::{self, Mnist, MnistSplit};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::DemoArgs;

/// The bundled MNIST subset (see data/mnist-subset/README.md).
const BUNDLED: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../../data/mnist-subset/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../../data/mnist-subset/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../../data/mnist-subset/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../../data/mnist-subset/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// Number of MNIST classes.
pub const CLASSES: i64 = 10;

/// MNIST as the demo uses it: truncated to `--train` / `--test` images.
pub struct Data {
    /// The images and their true labels.
    pub mnist: Mnist,
    /// Where they come from, for people ("the bundled MNIST subset").
    pub source: String,
}

/// Labels after [`inject_noise`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedNoise {
    /// The labels trained on: the true label, or a wrong one where `mislabelled`.
    pub labels: Vec<i64>,
    /// Which labels were replaced.
    pub mislabelled: Vec<bool>,
}

impl InjectedNoise {
    /// Number of replaced labels.
    pub fn count(&self) -> usize {
        self.mislabelled.iter().filter(|&&m| m).count()
    }
}

/// What the later steps read: the data, the true and the noisy training labels, and the
/// standardised inputs.
pub struct Loaded {
    /// The images and where they come from.
    pub data: Data,
    /// True training labels.
    pub clean: Vec<i64>,
    /// Training labels with the injected noise.
    pub noisy: InjectedNoise,
    /// Test labels.
    pub test_labels: Vec<i64>,
    /// Standardised training inputs `[N, pixels]`.
    pub train_x: Array2<f32>,
    /// Standardised test inputs `[T, pixels]`.
    pub test_x: Array2<f32>,
}

impl Loaded {
    /// Number of training images.
    pub fn n_train(&self) -> usize {
        self.data.mnist.train.len()
    }

    /// Number of test images.
    pub fn n_test(&self) -> usize {
        self.data.mnist.test.len()
    }
}

/// Loads the data, replaces `round(noise · N)` training labels and prints what was loaded.
pub fn load(args: &DemoArgs) -> Result<Loaded> {
    let data = load_data(args.mnist_dir.as_deref(), args.train, args.test)?;
    let clean = labels_of(&data.mnist.train);
    let noisy = inject_noise(&clean, CLASSES, args.noise, args.seed);
    let loaded = Loaded {
        test_labels: labels_of(&data.mnist.test),
        train_x: to_inputs(&data.mnist.train, Pixels::Standardised),
        test_x: to_inputs(&data.mnist.test, Pixels::Standardised),
        clean,
        noisy,
        data,
    };
    println!(
        "infl demo: {}, {} training / {} test images; {} training labels \
         ({:.1}%) replaced by a wrong one (seed {}); {} thread(s)",
        loaded.data.source,
        loaded.n_train(),
        loaded.n_test(),
        loaded.noisy.count(),
        100.0 * args.noise,
        args.seed,
        rayon::current_num_threads()
    );
    Ok(loaded)
}

/// MNIST from `--mnist-dir` or the bundled subset, truncated to `--train` / `--test`
/// (also `infl eval`'s data).
pub fn load_data(
    mnist_dir: Option<&Path>,
    train: Option<usize>,
    test: Option<usize>,
) -> Result<Data> {
    let (full, source) = match mnist_dir {
        Some(dir) => (
            mnist::load_mnist(dir)?,
            format!("MNIST from {}", dir.display()),
        ),
        None => (bundled()?, "the bundled MNIST subset".to_string()),
    };
    let train = full.train.truncated(train.unwrap_or(usize::MAX));
    let test = full.test.truncated(test.unwrap_or(usize::MAX));
    ensure!(
        !train.is_empty(),
        "--train: expected at least 1 training image"
    );
    ensure!(!test.is_empty(), "--test: expected at least 1 test image");
    Ok(Data {
        mnist: Mnist { train, test },
        source,
    })
}

/// The subset embedded in the binary.
fn bundled() -> Result<Mnist> {
    let split = |images: usize, labels: usize| -> Result<MnistSplit> {
        let (ip, lp) = (Path::new(BUNDLED[images].0), Path::new(BUNDLED[labels].0));
        Ok(mnist::split_from_idx(
            mnist::parse_idx(BUNDLED[images].1, ip)?,
            ip,
            mnist::parse_idx(BUNDLED[labels].1, lp)?,
            lp,
        )?)
    };
    Ok(Mnist {
        train: split(0, 1)?,
        test: split(2, 3)?,
    })
}

pub fn labels_of(split: &MnistSplit) -> Vec<i64> {
    split.labels.iter().map(|&l| i64::from(l)).collect()
}

/// How pixels become model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pixels {
    /// Scaled to [0, 1], then standardised with MNIST's mean and std, `(x − 0.1307) /
    /// 0.3081` (torchvision's `Normalize`, as dattri's and the demo's models read them).
    Standardised,
    /// Scaled to [0, 1] only.
    Unit,
}

/// The images of `s` as inputs `[N, pixels]`, scaled as `pixels` says.
pub fn to_inputs(s: &MnistSplit, pixels: Pixels) -> Array2<f32> {
    let p = s.pixels();
    Array2::from_shape_fn((s.len(), p), |(i, j)| {
        let x = f32::from(s.images[i * p + j]) / 255.0;
        match pixels {
            Pixels::Standardised => (x - 0.1307) / 0.3081,
            Pixels::Unit => x,
        }
    })
}

/// Replaces `round(rate · N)` labels, chosen uniformly, by a different class drawn
/// uniformly among the other `classes − 1`.
pub fn inject_noise(labels: &[i64], classes: i64, rate: f64, seed: u64) -> InjectedNoise {
    let n = labels.len();
    let k = ((rate * n as f64).round() as usize).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973_655f_6c62);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    let mut noisy = labels.to_vec();
    let mut mislabelled = vec![false; n];
    for &i in &idx[..k] {
        noisy[i] = (labels[i] + 1 + rng.random_range(0..classes - 1)) % classes;
        mislabelled[i] = true;
    }
    InjectedNoise {
        labels: noisy,
        mislabelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_exact_seeded_and_always_wrong() {
        let labels: Vec<i64> = (0..1000).map(|i| i % 10).collect();
        let a = inject_noise(&labels, 10, 0.1, 3);
        let b = inject_noise(&labels, 10, 0.1, 3);
        let c = inject_noise(&labels, 10, 0.1, 4);
        assert_eq!(a, b);
        assert_ne!(a.labels, c.labels);
        assert_eq!(a.count(), 100);
        for ((noisy, clean), &m) in a.labels.iter().zip(&labels).zip(&a.mislabelled) {
            assert_eq!(noisy != clean, m);
            assert!((0..10).contains(noisy));
        }
        // The wrong labels cover the other classes.
        let mut seen = std::collections::BTreeSet::new();
        for i in (0..1000).filter(|&i| a.mislabelled[i] && labels[i] == 0) {
            seen.insert(a.labels[i]);
        }
        assert!(seen.len() >= 5, "{seen:?}");
    }
}
