//! Golden test against InterpretDL's `ForgettingEventsInterpreter`: the committed NumPy port
//! of its two statistics functions (`fixtures/interpretdl/port.py`) was run on recorded
//! histories (a real infl-nn training run, and hand-made edge cases: ties, never-learned,
//! always-correct, repeated forgetting, uneven presentation counts) and its output
//! committed as `expected.json`. The recorder must give identical results: the same id
//! lists in the same order, the same labels, and the same threshold to the last bit.

use std::collections::BTreeMap;
use std::path::Path;

use infl::ForgettingRecorder;
use infl::{Presentation, TrainingObserver};

/// A minimal JSON value (the test crate has no JSON dependency).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing characters in JSON");
        v
    }
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(kv) => {
                &kv.iter()
                    .find(|(k, _)| k == key)
                    .unwrap_or_else(|| panic!("no key {key}"))
                    .1
            }
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Num(x) => *x,
            Json::Bool(b) => f64::from(u8::from(*b)),
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn int(&self) -> i64 {
        let x = self.num();
        assert_eq!(x.fract(), 0.0);
        x as i64
    }
    fn obj(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(kv) => kv,
            _ => panic!("not an object: {self:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> String {
        assert!(self.eat(b'"'));
        let start = self.i;
        while self.s[self.i] != b'"' {
            assert_ne!(
                self.s[self.i], b'\\',
                "escapes are not used in the fixtures"
            );
            self.i += 1;
        }
        self.i += 1;
        String::from_utf8(self.s[start..self.i - 1].to_vec()).unwrap()
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut kv = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let k = self.string();
                        assert!(self.eat(b':'));
                        kv.push((k, self.value()));
                        if self.eat(b'}') {
                            break;
                        }
                        assert!(self.eat(b','));
                    }
                }
                Json::Obj(kv)
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                if !self.eat(b']') {
                    loop {
                        v.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        assert!(self.eat(b','));
                    }
                }
                Json::Arr(v)
            }
            b'"' => Json::Str(self.string()),
            b'n' => {
                self.i += 4;
                Json::Null
            }
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                Json::Num(
                    std::str::from_utf8(&self.s[start..self.i])
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            }
        }
    }
}

fn fixture(name: &str) -> Json {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/interpretdl")
        .join(name);
    Json::parse(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn record(case: &Json) -> ForgettingRecorder {
    let mut rec = ForgettingRecorder::new();
    // Feed in uneven minibatches, as a training loop would.
    let all: Vec<Presentation> = case
        .get("presentations")
        .arr()
        .iter()
        .map(|p| {
            let p = p.arr();
            Presentation {
                id: p[0].int() as usize,
                predicted: p[1].int(),
                correct: p[2].int() == 1,
            }
        })
        .collect();
    for chunk in all.chunks(37) {
        rec.observe(chunk);
    }
    rec
}

fn check(name: &str, rec: &ForgettingRecorder, expected: &Json) {
    for res in expected.get("results").arr() {
        let epochs = res.get("epochs").int() as usize;
        let stats = rec.forgetting(epochs);
        let want: BTreeMap<i64, Vec<usize>> = res
            .get("count_forgotten")
            .obj()
            .iter()
            .map(|(k, v)| {
                (
                    k.parse().unwrap(),
                    v.arr().iter().map(|x| x.int() as usize).collect(),
                )
            })
            .collect();
        assert_eq!(
            stats.count_forgotten, want,
            "{name}, epochs {epochs}: count_forgotten"
        );
        let want: BTreeMap<usize, Vec<i64>> = res
            .get("forgotten")
            .obj()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.arr().iter().map(Json::int).collect()))
            .collect();
        assert_eq!(stats.forgotten, want, "{name}, epochs {epochs}: forgotten");
        // Per-example records agree with the maps.
        for e in &stats.examples {
            assert_eq!(stats.forgotten[&e.id], e.forgotten_labels);
            assert!(stats.count_forgotten[&e.count].contains(&e.id));
        }
    }
    let noisy = rec.noisy_labels();
    let want = expected.get("noisy");
    let scores: Vec<(usize, f64)> = want
        .get("scores")
        .arr()
        .iter()
        .map(|p| (p.arr()[0].int() as usize, p.arr()[1].num()))
        .collect();
    assert_eq!(noisy.scores, scores, "{name}: scores");
    let threshold = match want.get("threshold") {
        Json::Null => None,
        t => Some(t.num()),
    };
    assert_eq!(
        noisy.threshold.map(f64::to_bits),
        threshold.map(f64::to_bits),
        "{name}: threshold {:?} vs NumPy {threshold:?}",
        noisy.threshold
    );
    let flagged: Vec<usize> = want
        .get("flagged")
        .arr()
        .iter()
        .map(|x| x.int() as usize)
        .collect();
    assert_eq!(noisy.flagged, flagged, "{name}: flagged");
}

#[test]
fn matches_interpretdl_port() {
    let expected = fixture("expected.json");
    let mut inputs: Vec<Json> = fixture("handcrafted.json").get("cases").arr().to_vec();
    inputs.push(fixture("recorded.json"));
    let cases = expected.get("cases").arr();
    assert_eq!(cases.len(), inputs.len());
    let mut flagged_total = 0;
    for (input, exp) in inputs.iter().zip(cases) {
        let name = match exp.get("name") {
            Json::Str(s) => s.clone(),
            _ => unreachable!(),
        };
        let rec = record(input);
        check(&name, &rec, exp);
        flagged_total += rec.noisy_labels().flagged.len();
        // Saved and loaded again, the analysis is unchanged.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.safetensors");
        rec.save(&path).unwrap();
        let back = ForgettingRecorder::load(&path).unwrap();
        assert_eq!(back, rec);
        check(&name, &back, exp);
    }
    // The fixtures do exercise the flagged path (with a three-way tie).
    assert!(flagged_total >= 4);
}
