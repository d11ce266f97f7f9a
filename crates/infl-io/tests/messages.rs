//! Every refusal of a malformed input says what is wrong: the file, the tensor where
//! there is one, and what was expected against what was found, with sizes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{bf16s, f16s, f32s, f64s, gz, i32s, i64s, idx, safetensors, spec};
use infl_io::mnist::{MAX_IDX_BYTES, parse_idx};
use infl_io::{
    OutTensor, Rank, RunLayout, TensorFile, load_checkpoint, load_examples, write_safetensors,
};

/// Writes `bytes` to `name` in `dir` and returns the path.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// The message of opening `bytes` as a safetensors file named `x.safetensors`.
fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = put(dir.path(), "x.safetensors", bytes);
    let e = TensorFile::open(&p)
        .expect_err("must be refused")
        .to_string();
    assert!(e.contains("x.safetensors"), "{e}");
    e
}

fn weight_and_bias() -> Vec<u8> {
    safetensors(
        &[
            spec("fc.weight", "F32", &[2, 3], f32s(&[1., 2., 3., 4., 5., 6.])),
            spec("fc.bias", "F32", &[2], f32s(&[0.5, -0.5])),
        ],
        &[("learning_rate", "0.1")],
    )
}

#[test]
fn truncated_data_says_how_many_bytes_are_missing() {
    let full = weight_and_bias();
    let e = open_err(&full[..full.len() - 10]);
    assert!(
        e.contains("truncated") && e.contains("needs 32 bytes") && e.contains("has 22"),
        "{e}"
    );
}

#[test]
fn truncated_header_and_length_prefix_say_truncated() {
    let full = weight_and_bias();
    let e = open_err(&full[..5]);
    assert!(e.contains("truncated") && e.contains("5 bytes"), "{e}");
    let e = open_err(&full[..40]);
    assert!(e.contains("truncated") && e.contains("has 32 after"), "{e}");
    let mut huge = full.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err(&huge).contains("truncated"));
}

#[test]
fn trailing_junk_says_how_many_bytes() {
    let mut bytes = weight_and_bias();
    bytes.extend_from_slice(b"junk!!!");
    let e = open_err(&bytes);
    assert!(
        e.contains("7 trailing bytes") && e.contains("needs 32 bytes") && e.contains("has 39"),
        "{e}"
    );
}

#[test]
fn bad_entries_name_the_tensor_dtype_shape_and_sizes() {
    let mut w = spec("fc.weight", "F32", &[3, 4], f32s(&[0.0; 10]));
    let e = open_err(&safetensors(&[w.clone()], &[]));
    assert!(
        e.contains("`fc.weight`")
            && e.contains("F32")
            && e.contains("[3, 4]")
            && e.contains("needs 48 bytes")
            && e.contains("[0, 40]")
            && e.contains("hold 40 bytes"),
        "{e}"
    );
    w.offsets = Some((40, 0));
    assert!(open_err(&safetensors(&[w.clone()], &[])).contains("end before they begin"));
    w.dtype = "F33".into();
    let e = open_err(&safetensors(&[w.clone()], &[]));
    assert!(
        e.contains("`fc.weight`") && e.contains("unknown dtype \"F33\""),
        "{e}"
    );
    let huge = spec("big", "F32", &[usize::MAX, 2], vec![]);
    let e = open_err(&safetensors(&[huge], &[]));
    assert!(
        e.contains("`big`") && e.contains("more bytes than this machine can address"),
        "{e}"
    );
}

#[test]
fn gaps_and_overlaps_name_both_tensors() {
    let mut a = spec("a", "F32", &[2], f32s(&[1., 2.]));
    let mut b = spec("b", "F32", &[2], f32s(&[3., 4.]));
    b.offsets = Some((12, 20));
    let e = open_err(&safetensors(&[a.clone(), b.clone()], &[]));
    assert!(
        e.contains("`b`") && e.contains("gap of 4 bytes after `a`"),
        "{e}"
    );
    b.offsets = Some((4, 12));
    let e = open_err(&safetensors(&[a.clone(), b], &[]));
    assert!(e.contains("`b`") && e.contains("overlap with `a`"), "{e}");
    a.offsets = Some((4, 12));
    let e = open_err(&safetensors(&[a], &[]));
    assert!(e.contains("gap of 4 bytes after the start"), "{e}");
}

#[test]
fn headers_that_are_not_json_objects_are_explained() {
    let mut bytes = 5u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"[1,2]");
    assert!(open_err(&bytes).contains("not a valid JSON object"));
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    assert!(open_err(&bytes).contains("not UTF-8"));
    let bad_meta = br#"{"__metadata__": {"learning_rate": 0.1}}"#;
    let mut bytes = (bad_meta.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(bad_meta);
    assert!(open_err(&bytes).contains("`__metadata__`"));
}

#[test]
fn every_float_dtype_reads_back() {
    let v = [1.0f32, -2.5, 0.25, 8.0];
    let bytes = safetensors(
        &[
            spec("h", "F16", &[2, 2], f16s(&v)),
            spec("b", "BF16", &[4], bf16s(&v)),
            spec("d", "F64", &[4], f64s(&v.map(f64::from))),
            spec("i", "I32", &[4], i32s(&[1, -2, 3, 4])),
            spec("e", "F32", &[0, 5], vec![]),
        ],
        &[],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let f = TensorFile::open(put(dir.path(), "x.safetensors", &bytes)).expect("valid");
    assert_eq!(f.matrix("h", Rank::Matrix).expect("h").view().data(), &v);
    assert_eq!(f.vector("b").expect("b"), v);
    assert_eq!(f.vector("d").expect("d"), v);
    assert_eq!(f.integers("i").expect("i"), vec![1, -2, 3, 4]);
    assert_eq!(f.matrix("e", Rank::Matrix).expect("e").rows(), 0);
}

#[test]
fn directories_named_safetensors_are_reported_as_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("x.safetensors");
    std::fs::create_dir(&d).expect("mkdir");
    let e = TensorFile::open(&d).expect_err("a directory").to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("is a directory"),
        "{e}"
    );
    // In a run folder: discovered, then refused when opened.
    std::fs::create_dir(dir.path().join("x.train.safetensors")).expect("mkdir");
    let run = RunLayout::discover(dir.path()).expect("layout");
    let e = load_checkpoint(&run.entries[0].checkpoint, "fc")
        .expect_err("a directory")
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
    let e = load_examples(&run.entries[0].train)
        .expect_err("a directory")
        .to_string();
    assert!(
        e.contains("x.train.safetensors") && e.contains("is a directory"),
        "{e}"
    );
    let e = RunLayout::from_manifest(&d)
        .expect_err("a directory")
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
    let e = infl_io::mnist::read_idx(&d)
        .expect_err("a directory")
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_are_discovered_and_paired() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let name = |s: &[u8]| dir.path().join(OsStr::from_bytes(s));
    for stem in [&b"ckpt-\xff-10"[..], b"ckpt-\xff-9"] {
        let mut c = stem.to_vec();
        c.extend_from_slice(b".safetensors");
        std::fs::write(name(&c), weight_and_bias()).expect("write");
        let mut t = stem.to_vec();
        t.extend_from_slice(b".train.safetensors");
        std::fs::write(name(&t), features_file(&[0, 1])).expect("write");
    }
    let run = RunLayout::discover(dir.path()).expect("discovered");
    assert_eq!(run.entries.len(), 2);
    assert_eq!(run.entries[0].checkpoint, name(b"ckpt-\xff-9.safetensors"));
    assert_eq!(
        run.entries[1].train,
        name(b"ckpt-\xff-10.train.safetensors")
    );
    load_checkpoint(&run.entries[0].checkpoint, "fc").expect("readable");
    load_examples(&run.entries[1].train).expect("readable");
    // A checkpoint without features is named, lossily.
    std::fs::write(name(b"lone-\xfe.safetensors"), weight_and_bias()).expect("write");
    let e = RunLayout::discover(dir.path())
        .expect_err("unpaired")
        .to_string();
    assert!(e.contains("lone-\u{fffd}.safetensors"), "{e}");
}

#[test]
fn manifests_may_start_with_a_byte_order_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(&common::manifest());
    let p = put(dir.path(), "run.json", &bytes);
    let run = RunLayout::from_manifest(&p).expect("BOM skipped");
    assert_eq!(run.entries.len(), 2);
    assert_eq!(run.entries[1].learning_rate, Some(0.05));
}

fn features_file(ids: &[i64]) -> Vec<u8> {
    let n = ids.len();
    safetensors(
        &[
            spec("features", "F32", &[n, 2], f32s(&vec![1.0; 2 * n])),
            spec("labels", "I64", &[n], i64s(&vec![0; n])),
            spec("ids", "I64", &[n], i64s(ids)),
        ],
        &[],
    )
}

#[test]
fn layers_without_outputs_or_inputs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [([0usize, 3usize], "no outputs"), ([3, 0], "no columns")];
    for (shape, why) in cases {
        let p = dir.path().join("c.safetensors");
        let w = OutTensor::F32(shape.to_vec(), vec![]);
        write_safetensors(&p, vec![("fc.weight".into(), w)], HashMap::new()).expect("write");
        let e = load_checkpoint(&p, "fc")
            .expect_err("degenerate")
            .to_string();
        assert!(
            e.contains("c.safetensors") && e.contains("`fc.weight`") && e.contains(why),
            "{e}"
        );
        assert!(e.contains(&format!("{shape:?}")), "{e}");
    }
}

#[test]
fn zero_width_features_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("f.safetensors");
    let f = OutTensor::F32(vec![4, 0], vec![]);
    write_safetensors(&p, vec![("features".into(), f)], HashMap::new()).expect("write");
    let e = load_examples(&p).expect_err("zero width").to_string();
    assert!(
        e.contains("f.safetensors")
            && e.contains("`features`")
            && e.contains("no columns")
            && e.contains("[4, 0]"),
        "{e}"
    );
}

#[test]
fn duplicate_ids_name_the_id_and_both_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = put(
        dir.path(),
        "f.safetensors",
        &features_file(&[3, 7, 5, 7, 3]),
    );
    let e = load_examples(&p).expect_err("duplicates").to_string();
    assert!(
        e.contains("f.safetensors")
            && e.contains("`ids`")
            && e.contains("duplicate id 7 at rows 1 and 3"),
        "{e}"
    );
    let p = put(dir.path(), "g.safetensors", &features_file(&[3, 7, 5]));
    assert_eq!(load_examples(&p).expect("unique").ids, Some(vec![3, 7, 5]));
}

fn idx_err(bytes: &[u8]) -> String {
    let e = parse_idx(bytes, Path::new("x.idx"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("x.idx") && e.contains("header"), "{e}");
    e
}

#[test]
fn gzip_promises_beyond_deflates_ratio_are_refused_before_inflating() {
    let bomb = gz(&idx(&[60_000, 28, 28], &[0; 100]));
    let e = idx_err(&bomb);
    assert!(
        e.contains("47040000 bytes")
            && e.contains("1032:1")
            && e.contains(&format!("{}-byte", bomb.len())),
        "{e}"
    );
    let e = idx_err(&gz(&idx(&[65_536, 65_536], &[])));
    assert!(e.contains(&format!("limit of {MAX_IDX_BYTES}")), "{e}");
    let e = idx_err(&idx(&[65_536, 65_536], &[]));
    assert!(e.contains(&format!("limit of {MAX_IDX_BYTES}")), "{e}");
}

#[test]
fn gzip_data_beyond_the_promise_is_trailing_and_never_inflated() {
    // 1 GiB of zeros in 1 MiB of concatenated gzip members, behind a 10-byte promise.
    let member = gz(&vec![0u8; 1 << 20]);
    let mut bomb = gz(&idx(&[10], &[0; 10]));
    for _ in 0..1024 {
        bomb.extend_from_slice(&member);
    }
    let start = std::time::Instant::now();
    let e = idx_err(&bomb);
    assert!(
        e.contains("promise 10 bytes") && e.contains("trailing"),
        "{e}"
    );
    assert!(start.elapsed().as_secs() < 2, "inflated the bomb?");
}

#[test]
fn short_gzip_data_is_truncated() {
    let e = idx_err(&gz(&idx(&[3, 4], &[1; 6])));
    assert!(
        e.contains("promise 12 bytes") && e.contains("found 6") && e.contains("truncated"),
        "{e}"
    );
    let full = gz(&idx(&[3, 4], &[1; 12]));
    let e = parse_idx(&full[..full.len() - 6], Path::new("x.idx"))
        .expect_err("cut")
        .to_string();
    assert!(e.contains("x.idx") && e.contains("truncated"), "{e}");
}

#[test]
fn raw_idx_sizes_are_checked_against_the_header() {
    let e = idx_err(&idx(&[2, 3], &[1; 8]));
    assert!(
        e.contains("promise 6 bytes") && e.contains("2 trailing bytes"),
        "{e}"
    );
    let e = idx_err(&idx(&[2, 3], &[1; 4]));
    assert!(e.contains("found 4") && e.contains("truncated"), "{e}");
    let ok = parse_idx(&gz(&idx(&[2, 3], &[1; 6])), Path::new("x.idx")).expect("valid");
    assert_eq!((ok.dims, ok.data), (vec![2, 3], vec![1; 6]));
}

#[test]
fn gzip_members_are_concatenated_and_junk_after_them_is_trailing() {
    let raw = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let mut two = gz(&raw[..7]);
    two.extend_from_slice(&gz(&raw[7..]));
    let a = parse_idx(&two, Path::new("x.idx")).expect("two members");
    assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    let mut junk = gz(&raw);
    junk.extend_from_slice(b"junk");
    let e = parse_idx(&junk, Path::new("x.idx"))
        .expect_err("junk")
        .to_string();
    assert!(
        e.contains("x.idx") && e.contains("4 trailing bytes after it"),
        "{e}"
    );
}
