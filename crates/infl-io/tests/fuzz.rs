//! Mutation fuzzing of every reader: valid files (safetensors of every dtype, a checkpoint,
//! a feature file, IDX raw and gzip, a manifest) are truncated, bit-flipped, grown by
//! random bytes, given random header lengths or numbers, and fed to the readers.
//!
//! Each read must return (no panic; a watchdog aborts a read that hangs), every error
//! must name the file, and no single allocation may exceed what the input justifies:
//! `max(1 MiB, 64 × input length)`, or deflate's ratio times the length for gzip.
//!
//! `PROPTEST_CASES` sets the cases per reader (default [`DEFAULT_CASES`]);
//! `cargo xtask fuzz [--cases N]` runs many more in release mode.

// The counting allocator below is the one unsafe piece: it forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use common::{bf16s, f16s, f64s, gz, i32s, i64s, idx, safetensors, spec};
use infl_io::mnist::{DEFLATE_MAX_RATIO, parse_idx};
use infl_io::{
    OutTensor, Rank, RunLayout, TensorFile, load_checkpoint, load_examples, write_safetensors,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

/// Cases per reader when `PROPTEST_CASES` is not set (the file runs in seconds in debug).
const DEFAULT_CASES: u32 = 2000;

/// The name of every fuzzed file; errors must contain it.
const STEM: &str = "fuzz-case";

// ---- largest allocation, per thread ----

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: never panic inside the allocator, even while a thread is torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let t = f();
    (t, LARGEST.with(Cell::get))
}

// ---- no hang: a watchdog aborts when no case finishes for a minute while one runs ----

static FINISHED: AtomicU64 = AtomicU64::new(0);
static RUNNING: AtomicUsize = AtomicUsize::new(0);
const HANG: Duration = Duration::from_secs(60);

fn watchdog() {
    static START: Once = Once::new();
    START.call_once(|| {
        std::thread::spawn(|| {
            let mut last = (FINISHED.load(Ordering::SeqCst), 0u64);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = FINISHED.load(Ordering::SeqCst);
                let stuck = now == last.0 && RUNNING.load(Ordering::SeqCst) > 0;
                last = (now, if stuck { last.1 + 1 } else { 0 });
                if last.1 >= HANG.as_secs() {
                    eprintln!("fuzz: a read has not returned for {HANG:?}: hang");
                    std::process::abort();
                }
            }
        });
    });
}

/// One read under the watchdog, its largest allocation checked against `limit`.
fn checked_read<T>(what: &str, input: &[u8], limit: usize, f: impl FnOnce() -> T) -> T {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let (t, largest) = largest_allocation(f);
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    FINISHED.fetch_add(1, Ordering::SeqCst);
    assert!(
        largest <= limit,
        "{what}: allocated {largest} bytes at once for a {}-byte input (limit {limit})",
        input.len()
    );
    t
}

/// What an input of `len` bytes justifies allocating at once.
fn limit(input: &[u8]) -> usize {
    let per_byte = if input.starts_with(&[0x1f, 0x8b]) {
        DEFLATE_MAX_RATIO + 8
    } else {
        64
    };
    (1 << 20).max(per_byte * input.len())
}

/// An error, if any, is non-empty and names the fuzzed file.
fn check_message<T>(what: &str, r: &infl_io::Result<T>) {
    if let Err(e) = r {
        let m = e.to_string();
        assert!(
            m.contains(STEM),
            "{what}: the message does not name the file: {m}"
        );
    }
}

// ---- mutations ----

#[derive(Clone, Debug)]
enum Mutation {
    /// Cut the file at a point.
    Truncate(Index),
    /// Flip one bit.
    FlipBit(Index, u8),
    /// Insert bytes at a point.
    Insert(Index, Vec<u8>),
    /// Overwrite the first 8 bytes (safetensors' header length; IDX's magic and first
    /// dimension) with a value, or add a small amount to them.
    HeaderLen(Len),
    /// Replace a run of decimal digits (an offset, a dimension, a learning rate) by a
    /// number.
    Number(Index, u64),
    /// Add an amount to two consecutive runs of digits (both ends of `data_offsets`).
    Shift(Index, i16),
    /// Apply a mutation inside safetensors' JSON header and fix its length prefix, so
    /// that the edit reaches the entry checks (on the whole input when it has no valid
    /// prefix).
    InHeader(Box<Mutation>),
}

/// A new value for a little-endian `u64` field.
#[derive(Clone, Copy, Debug)]
enum Len {
    /// This value.
    Set(u64),
    /// The old value plus this (wrapping).
    Add(i16),
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..64u64, 0..100_000u64, any::<u64>()]
}

/// Random bytes, often ones that mean something in JSON.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        1 => any::<u8>(),
        3 => prop::sample::select(b"0123456789,:{}[]\"- e.".to_vec()),
    ];
    prop::collection::vec(byte, 1..8)
}

/// Mutations of a byte string (no header length involved).
fn edit() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), bytes()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), number()).prop_map(|(i, v)| Mutation::Number(i, v)),
        (any::<Index>(), prop_oneof![-64..64i16, any::<i16>()])
            .prop_map(|(i, d)| Mutation::Shift(i, d)),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = prop_oneof![number().prop_map(Len::Set), (-64..64i16).prop_map(Len::Add)];
    prop_oneof![
        3 => edit(),
        1 => len.prop_map(Mutation::HeaderLen),
        3 => edit().prop_map(|m| Mutation::InHeader(Box::new(m))),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Mutation::FlipBit(i, b) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << b;
        }
        Mutation::Insert(i, v) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::HeaderLen(len) => {
            if let Some(field) = bytes.first_chunk_mut::<8>() {
                let old = u64::from_le_bytes(*field);
                let new = match *len {
                    Len::Set(v) => v,
                    Len::Add(d) => old.wrapping_add_signed(d.into()),
                };
                *field = new.to_le_bytes();
            }
        }
        Mutation::Number(i, n) => replace_numbers(bytes, *i, 1, |_| *n),
        Mutation::Shift(i, d) => {
            replace_numbers(bytes, *i, 2, |old| old.saturating_add_signed((*d).into()))
        }
        Mutation::InHeader(m) => in_header(bytes, m),
        _ => {}
    }
}

/// Applies `m` to the JSON header of a safetensors file and rewrites its length.
fn in_header(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.first_chunk::<8>().map(|p| u64::from_le_bytes(*p));
    let Some(n) = n
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= bytes.len() - 8)
    else {
        return apply(bytes, m);
    };
    let mut json = bytes[8..8 + n].to_vec();
    apply(&mut json, m);
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    *bytes = out;
}

/// Replaces `count` consecutive runs of ASCII digits, from the `i`-th, by `f` of their
/// values, in decimal.
fn replace_numbers(bytes: &mut Vec<u8>, i: Index, count: usize, f: impl Fn(u64) -> u64) {
    let mut runs = Vec::new();
    let mut k = 0;
    while k < bytes.len() {
        let len = bytes[k..].iter().take_while(|b| b.is_ascii_digit()).count();
        if len > 0 {
            runs.push(k..k + len);
        }
        k += len.max(1);
    }
    if runs.is_empty() {
        return;
    }
    let first = i.index(runs.len());
    let end = (first + count).min(runs.len());
    // Last first, so that earlier ranges stay valid.
    for r in runs[first..end].iter().rev() {
        let old = std::str::from_utf8(&bytes[r.clone()])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        bytes.splice(r.clone(), f(old).to_string().into_bytes());
    }
}

fn mutated(seeds: &[Vec<u8>]) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds = seeds.to_vec();
    (any::<Index>(), mutations()).prop_map(move |(i, ms)| {
        let mut bytes = seeds[i.index(seeds.len())].clone();
        for m in &ms {
            apply(&mut bytes, m);
        }
        bytes
    })
}

// ---- seeds ----

/// Valid safetensors files: infl-io's writer (f32, i64, metadata) and hand-built ones
/// (f16, bf16, f64, i32, an empty tensor).
fn safetensors_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        vec![
            checkpoint_seed(),
            features_seed(),
            safetensors(
                &[
                    spec("h", "F16", &[3, 4], f16s(&v)),
                    spec("b", "BF16", &[12], bf16s(&v)),
                    spec(
                        "d",
                        "F64",
                        &[2, 6],
                        f64s(&v.iter().map(|&x| x.into()).collect::<Vec<_>>()),
                    ),
                    spec("i", "I32", &[4], i32s(&[1, -2, 3, 4])),
                    spec("u", "U8", &[3], vec![1, 2, 3]),
                    spec("e", "F32", &[0, 7], vec![]),
                ],
                &[("learning_rate", "0.25"), ("epoch", "3")],
            ),
            safetensors(
                &[
                    spec("features", "F16", &[3, 4], f16s(&v)),
                    spec("labels", "I32", &[3], i32s(&[0, 1, 0])),
                    spec("targets", "BF16", &[3, 2], bf16s(&v[..6])),
                    spec("ids", "I64", &[3], i64s(&[10, 11, 12])),
                ],
                &[],
            ),
        ]
    })
}

/// A file written by `write_safetensors`, read back as bytes.
fn written(tensors: Vec<(String, OutTensor)>, meta: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("seed.safetensors");
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write_safetensors(&p, tensors, meta).expect("write");
    std::fs::read(&p).expect("read")
}

fn checkpoint_seed() -> Vec<u8> {
    let w: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    written(
        vec![
            ("fc.weight".into(), OutTensor::F32(vec![3, 4], w)),
            (
                "fc.bias".into(),
                OutTensor::F32(vec![3], vec![0.1, 0.2, 0.3]),
            ),
        ],
        &[("learning_rate", "0.1"), ("epoch", "2")],
    )
}

fn features_seed() -> Vec<u8> {
    let f: Vec<f32> = (0..20).map(|i| (i as f32).sin()).collect();
    written(
        vec![
            ("features".into(), OutTensor::F32(vec![5, 4], f)),
            (
                "labels".into(),
                OutTensor::I64(vec![5], vec![0, 1, 2, 1, 0]),
            ),
            ("ids".into(), OutTensor::I64(vec![5], vec![4, 3, 2, 1, 0])),
        ],
        &[],
    )
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let pixels: Vec<u8> = (0..48).map(|i| (i * 5) as u8).collect();
    vec![idx(&[3, 4, 4], &pixels), idx(&[6], &[0, 1, 2, 3, 4, 9])]
}

// ---- the readers ----

/// Every accessor of a `TensorFile` on every tensor.
fn read_tensor_file(path: &Path) -> infl_io::Result<()> {
    let f = TensorFile::open(path)?;
    for name in f.names() {
        let results = [
            f.info(&name).map(drop),
            f.matrix(&name, Rank::Matrix).map(drop),
            f.matrix(&name, Rank::MatrixOrVector).map(drop),
            f.vector(&name).map(drop),
            f.integers(&name).map(drop),
            f.integers_flat(&name).map(drop),
        ];
        for r in &results {
            check_message(&name, r);
        }
    }
    Ok(())
}

/// A folder for the fuzzed files: in memory (`/dev/shm`) where there is one, since each
/// case rewrites a file and a disk that discards freed blocks makes that slow.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let in_memory = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten();
    in_memory.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"))
}

/// Runs `read` on `bytes` (named `path` in errors) under the checks; true if it read.
fn fuzz_bytes<T>(what: &str, bytes: &[u8], read: impl FnOnce() -> infl_io::Result<T>) -> bool {
    let r = checked_read(what, bytes, limit(bytes), read);
    check_message(what, &r);
    r.is_ok()
}

/// Writes `bytes` as the fuzzed file in `dir` and runs `read` on it under the checks;
/// true if it read.
fn fuzz_file<T>(
    dir: &Path,
    ext: &str,
    bytes: &[u8],
    read: impl FnOnce(&Path) -> infl_io::Result<T>,
) -> bool {
    let path = dir.join(format!("{STEM}.{ext}"));
    std::fs::write(&path, bytes).expect("write the case");
    fuzz_bytes(ext, bytes, || read(&path))
}

/// Checks that every seed reads, then runs mutated seeds through `test` (which says
/// whether its input read; mutants may or may not).
fn run(seeds: &[Vec<u8>], test: impl Fn(&[u8]) -> bool) {
    watchdog();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    for (i, s) in seeds.iter().enumerate() {
        assert!(test(s), "seed {i} does not read");
    }
    if let Err(e) = runner.run(&mutated(seeds), |bytes| {
        test(&bytes);
        Ok(())
    }) {
        panic!("{e}");
    }
}

#[test]
fn fuzz_tensor_files() {
    let dir = scratch();
    run(safetensors_seeds(), |bytes| {
        fuzz_file(dir.path(), "safetensors", bytes, read_tensor_file)
    });
}

#[test]
fn fuzz_checkpoints() {
    let dir = scratch();
    run(&[checkpoint_seed()], |bytes| {
        fuzz_file(dir.path(), "safetensors", bytes, |p| {
            load_checkpoint(p, "fc")
        })
    });
}

#[test]
fn fuzz_feature_files() {
    let dir = scratch();
    let seeds = safetensors_seeds();
    run(&[seeds[1].clone(), seeds[3].clone()], |bytes| {
        fuzz_file(dir.path(), "safetensors", bytes, |p| load_examples(p))
    });
}

/// Image tensors (`images`, U8 and float in [0, 1]) and every image of them.
#[test]
fn fuzz_image_tensors() {
    let dir = scratch();
    let grey: Vec<u8> = (0..24).map(|i| (i * 10) as u8).collect();
    let rgb: Vec<f32> = (0..24).map(|i| i as f32 / 23.0).collect();
    let seeds = [
        written(
            vec![("images".into(), OutTensor::U8(vec![2, 3, 4], grey))],
            &[],
        ),
        written(
            vec![("images".into(), OutTensor::F32(vec![2, 2, 2, 3], rgb))],
            &[],
        ),
    ];
    run(&seeds, |bytes| {
        fuzz_file(dir.path(), "safetensors", bytes, |p| {
            let images = infl_io::Images::open(p)?;
            if let Some(im) = &images {
                (0..=im.count).for_each(|i| drop(im.image(i)));
            }
            Ok(images.is_some())
        })
    });
}

#[test]
fn fuzz_raw_idx() {
    let dir = scratch();
    run(&idx_seeds(), |bytes| {
        let parsed = fuzz_bytes("idx", bytes, || {
            parse_idx(bytes, Path::new("fuzz-case.idx"))
        });
        let read = fuzz_file(dir.path(), "idx", bytes, |p| infl_io::mnist::read_idx(p));
        assert_eq!(parsed, read, "parse_idx and read_idx disagree");
        parsed
    });
}

#[test]
fn fuzz_gzip_idx() {
    // Mutated gzip streams (from gzip seeds) and valid gzip streams of mutated IDX files
    // (from raw seeds); each input is read as it is and wrapped in gzip.
    let raw = idx_seeds();
    let seeds: Vec<Vec<u8>> = raw.iter().map(|s| gz(s)).chain(raw.clone()).collect();
    let path = Path::new("fuzz-case.idx.gz");
    run(&seeds, |bytes| {
        let wrapped = gz(bytes);
        let a = fuzz_bytes("gzip", bytes, || parse_idx(bytes, path));
        let b = fuzz_bytes("gzip (wrapped)", &wrapped, || parse_idx(&wrapped, path));
        a || b
    });
}

#[test]
fn fuzz_manifests() {
    let dir = scratch();
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend_from_slice(&common::manifest());
    run(&[common::manifest(), bom], |bytes| {
        fuzz_file(dir.path(), "json", bytes, |p| RunLayout::from_manifest(p))
    });
}

#[test]
fn a_gzip_bomb_allocates_only_what_its_header_promises() {
    let member = gz(&vec![0u8; 1 << 20]);
    let mut bomb = gz(&idx(&[1000], &[0; 1000]));
    for _ in 0..256 {
        bomb.extend_from_slice(&member);
    }
    let (r, largest) = largest_allocation(|| parse_idx(&bomb, Path::new("bomb.gz")));
    let e = r.expect_err("trailing data").to_string();
    assert!(e.contains("trailing"), "{e}");
    assert!(largest < 1 << 20, "allocated {largest} bytes at once");
}
