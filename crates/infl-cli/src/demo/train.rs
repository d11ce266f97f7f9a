//! Step 2, train with recording: an MLP (infl-nn) trained with minibatch SGD, every
//! presentation recorded in a [`ForgettingRecorder`], a checkpoint with penultimate
//! features written after each epoch (`OUT/run/epoch-E*.safetensors`), the presentation
//! history saved to `OUT/forgetting.safetensors`. The last epoch's feature (and factor)
//! files also carry the MNIST images (`images` `[N, 28, 28]` u8), so that `infl topk --run
//! OUT/run --plot DIR` can draw them; once, not per epoch, to keep the run small.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use infl::Progress;
use infl::forgetting::ForgettingRecorder;
use infl_nn::{
    CheckpointMeta, Dataset, FactorFiles, Mlp, RunWriter, Split, SplitImages, TrainConfig,
    TrainHooks,
};
use ndarray::Array2;
use serde::Serialize;

use super::DemoArgs;
use super::load::{CLASSES, Loaded};
use crate::progress::Bar;
use crate::resources::{Need, check_fits};

const TEMPLATE: &str = "  train [{elapsed_precise}] [{bar:30}] {pos}/{len} batches ({eta}) {msg}";

/// The training bar's message shows the loss every this many minibatches.
const LOSS_EVERY: u64 = 16;

/// One epoch, as `results.json` lists it.
#[derive(Serialize, Clone, Debug)]
pub struct EpochRecord {
    epoch: usize,
    learning_rate: f32,
    pub train_loss: f32,
    pub train_accuracy_pre_step: f32,
    pub test_accuracy: f32,
}

/// The trained model, its run directory and what was recorded.
pub struct Trained {
    /// The model after the last epoch.
    pub model: Mlp,
    /// Every presentation of every training example.
    pub recorder: ForgettingRecorder,
    /// Loss and accuracies per epoch.
    pub epochs: Vec<EpochRecord>,
    /// `OUT/run`: one checkpoint per epoch, in infl's run directory convention.
    pub run_dir: PathBuf,
    /// Test images in the run (the first `--explain`), whose influencers are shown.
    pub explained: usize,
    /// Seconds spent training (without setting up).
    pub seconds: f64,
    /// Per-example loss and margin of the training set at every checkpoint.
    pub history: History,
}

/// Per-example cross-entropy loss and margin (`z_y − max_{k≠y} z_k`, for the label trained
/// on) of every training example at each checkpoint (end of epoch), for the loss, margin
/// and AUM detectors.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// `loss[e][i]` at epoch `e + 1`.
    pub loss: Vec<Vec<f64>>,
    /// `margin[e][i]` at epoch `e + 1`.
    pub margin: Vec<Vec<f64>>,
}

impl History {
    /// Records `model`'s loss and margin on `x` for `labels`.
    fn record(
        &mut self,
        model: &Mlp,
        x: ndarray::ArrayView2<'_, f32>,
        labels: &[i64],
    ) -> infl_nn::Result<()> {
        let (mut loss, mut margin) = (
            Vec::with_capacity(labels.len()),
            Vec::with_capacity(labels.len()),
        );
        for (chunk, ys) in x
            .axis_chunks_iter(ndarray::Axis(0), 1024)
            .zip(labels.chunks(1024))
        {
            let logits = model.logits(chunk)?;
            for (z, &y) in logits.rows().into_iter().zip(ys) {
                let (l, m) = infl_nn::logreg::loss_and_margin(z.mapv(f64::from).view(), y as usize);
                loss.push(l);
                margin.push(m);
            }
        }
        self.loss.push(loss);
        self.margin.push(margin);
        Ok(())
    }
}

/// Trains on the noisy labels, writing the run and the presentation history under
/// `args.out`.
pub fn train(args: &DemoArgs, loaded: &Loaded) -> Result<Trained> {
    check_resources(args, loaded)?;
    let mut model = Mlp::new(
        loaded.data.mnist.train.pixels(),
        &args.hidden,
        CLASSES as usize,
        args.seed,
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output directory", args.out.display()))?;
    let run_dir = args.out.join("run");
    clear_run_dir(&run_dir)?;
    print_model(args, &model);
    let explained = args.explain.min(loaded.n_test());
    let mut recorder = ForgettingRecorder::new();
    let t = Instant::now();
    let (epochs, history) = fit(
        args,
        loaded,
        &mut model,
        &mut recorder,
        RunWriter::new(&run_dir, factor_files(args))?,
        explained,
    )?;
    let seconds = t.elapsed().as_secs_f64();
    print_trained(&epochs, seconds);
    recorder.save(args.out.join("forgetting.safetensors"))?;
    Ok(Trained {
        model,
        recorder,
        epochs,
        run_dir,
        explained,
        seconds,
        history,
    })
}

/// Refuses a batch larger than the training set (a typo more often than a wish for
/// full-batch training, which `--batch-size N` gives) and a job larger than the memory
/// available, before the output folder is created.
fn check_resources(args: &DemoArgs, loaded: &Loaded) -> Result<()> {
    let n = loaded.n_train();
    ensure!(
        args.batch_size <= n,
        "--batch-size: expected at most the {n} training images (--batch-size {n} trains on \
         the whole set at once), found {}",
        args.batch_size
    );
    let pixels = loaded.data.mnist.train.pixels();
    let sizes: Vec<usize> = std::iter::once(pixels)
        .chain(args.hidden.iter().copied())
        .chain(std::iter::once(CLASSES as usize))
        .collect();
    let params = Mlp::parameters_of(&sizes)
        .with_context(|| format!("--hidden: the parameter count of {sizes:?} overflows"))?;
    let f = |x: usize| x as f64 * 4.0;
    let width: usize = sizes.iter().sum();
    let last = args.hidden.last().copied().unwrap_or(pixels);
    let examples = n + args.explain.min(loaded.n_test());
    let factors = sizes.windows(2).map(|w| w[0] + 2 * w[1]).sum::<usize>();
    let mut needs = vec![
        Need {
            what: "weights, gradients and momentum",
            flag: "--hidden",
            bytes: 3.0 * f(params),
        },
        Need {
            what: "one batch's activations and gradients",
            flag: "--batch-size",
            bytes: 4.0 * f(args.batch_size) * width as f64,
        },
        Need {
            what: "each checkpoint's features, computed and written",
            flag: "--hidden",
            bytes: 3.0 * f(examples) * width as f64,
        },
        Need {
            what: "every checkpoint's features, scored",
            flag: "--epochs",
            bytes: f(args.epochs) * examples as f64 * (last + 1) as f64,
        },
    ];
    if args.export_factors {
        needs.push(Need {
            what: "each checkpoint's factors, written",
            flag: "--export-factors",
            bytes: 2.0 * f(examples) * factors as f64,
        });
    }
    check_fits(
        "training and scoring this demo",
        &needs,
        "use smaller --hidden sizes, fewer --train images or --epochs, or a smaller --batch-size",
    )
}

/// Runs SGD, writing a checkpoint per epoch with the features of the training images
/// and of the first `explained` test images.
fn fit(
    args: &DemoArgs,
    loaded: &Loaded,
    model: &mut Mlp,
    recorder: &mut ForgettingRecorder,
    writer: RunWriter,
    explained: usize,
) -> Result<(Vec<EpochRecord>, History)> {
    let ids: Vec<i64> = (0..loaded.n_train() as i64).collect();
    let explain_ids: Vec<i64> = (0..explained as i64).collect();
    let mnist = &loaded.data.mnist;
    let mut hooks = Hooks {
        writer,
        bar: Bar::templated(TEMPLATE),
        batches: 0,
        last_epoch: args.epochs,
        train: Split {
            x: loaded.train_x.view(),
            labels: &loaded.noisy.labels,
            ids: &ids,
            images: Some(split_images(&mnist.train, loaded.n_train())),
        },
        explain: (explained > 0).then(|| Split {
            x: loaded.test_x.slice(ndarray::s![..explained, ..]),
            labels: &loaded.test_labels[..explained],
            ids: &explain_ids,
            images: Some(split_images(&mnist.test, explained)),
        }),
        test_x: &loaded.test_x,
        test_y: &loaded.test_labels,
        test_accuracy: Vec::new(),
        history: History::default(),
    };
    let batches = loaded.n_train().div_ceil(args.batch_size.max(1)) as u64;
    hooks.bar.start("", batches * args.epochs as u64);
    let data = Dataset {
        x: loaded.train_x.view(),
        labels: &loaded.noisy.labels,
        ids: None,
    };
    let stats = infl_nn::train(model, data, &config(args), recorder, &mut hooks)?;
    hooks.bar.finish();
    let records = stats
        .iter()
        .zip(&hooks.test_accuracy)
        .map(|(s, &a)| EpochRecord {
            epoch: s.epoch,
            learning_rate: args.lr,
            train_loss: s.loss,
            train_accuracy_pre_step: s.accuracy,
            test_accuracy: a,
        })
        .collect();
    Ok((records, hooks.history))
}

/// The first `n` images of an MNIST split.
fn split_images(split: &infl::io::mnist::MnistSplit, n: usize) -> SplitImages<'_> {
    SplitImages {
        pixels: &split.images[..n * split.pixels()],
        height: split.rows,
        width: split.cols,
    }
}

fn print_model(args: &DemoArgs, model: &Mlp) {
    let sizes: Vec<String> = model.sizes().iter().map(ToString::to_string).collect();
    println!(
        "training an MLP {} ({} parameters) for {} epochs: SGD lr {}, momentum {}, batch {}",
        sizes.join("-"),
        model.parameters(),
        args.epochs,
        args.lr,
        args.momentum,
        args.batch_size
    );
}

fn factor_files(args: &DemoArgs) -> FactorFiles {
    if args.export_factors {
        FactorFiles::Write
    } else {
        FactorFiles::Skip
    }
}

fn config(args: &DemoArgs) -> TrainConfig {
    TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
    }
}

fn print_trained(epochs: &[EpochRecord], seconds: f64) {
    if let Some(last) = epochs.last() {
        println!(
            "  trained in {seconds:.1} s: final loss {:.3}, training accuracy {:.1}% (on the \
             noisy labels), test accuracy {:.1}%",
            last.train_loss,
            100.0 * last.train_accuracy_pre_step,
            100.0 * last.test_accuracy
        );
    }
}

/// Removes the `epoch-*.safetensors` files of a previous run (and of its `factors/`).
fn clear_run_dir(dir: &Path) -> Result<()> {
    for d in [dir.to_path_buf(), dir.join("factors")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name.ends_with(".safetensors") {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("{}: cannot remove", e.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Draws progress, writes a checkpoint per epoch and measures the test accuracy.
struct Hooks<'a> {
    writer: RunWriter,
    bar: Bar,
    batches: u64,
    /// The epoch whose files carry the images.
    last_epoch: usize,
    train: Split<'a>,
    explain: Option<Split<'a>>,
    test_x: &'a Array2<f32>,
    test_y: &'a [i64],
    test_accuracy: Vec<f32>,
    history: History,
}

impl<'a> TrainHooks for Hooks<'a> {
    fn on_batch(&mut self, epoch: usize, _: usize, _: usize, loss: f32) {
        self.bar.advance(1);
        self.batches += 1;
        if self.batches.is_multiple_of(LOSS_EVERY) {
            self.bar
                .set_message(format!("epoch {epoch}, loss {loss:.3}"));
        }
    }

    fn on_epoch_end(&mut self, epoch: usize, model: &Mlp, lr: f32) -> infl_nn::Result<()> {
        let meta = CheckpointMeta {
            learning_rate: Some(lr),
            epoch: Some(epoch),
        };
        let last = epoch == self.last_epoch;
        let images = |s: Split<'a>| Split {
            images: s.images.filter(|_| last),
            ..s
        };
        self.writer.write(
            &format!("epoch-{epoch}"),
            model,
            &meta,
            images(self.train),
            self.explain.map(images),
        )?;
        self.history
            .record(model, self.train.x, self.train.labels)?;
        let pred = model.predict(self.test_x.view(), 1024)?;
        let ok = pred.iter().zip(self.test_y).filter(|(p, y)| p == y).count();
        let acc = ok as f32 / self.test_y.len() as f32;
        self.test_accuracy.push(acc);
        self.bar.set_message(format!(
            "epoch {epoch} done, test accuracy {:.1}%",
            100.0 * acc
        ));
        Ok(())
    }
}
