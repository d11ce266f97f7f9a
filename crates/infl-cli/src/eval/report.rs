//! `infl eval`'s results: per-method correlations, a table on stdout, JSON, the ground
//! truth as safetensors (subsets or removals with the retrained models' losses and
//! margins, what dattri's `lds` / `loo_corr` take) and PNG plots.

use std::path::Path;

use anyhow::Result;
use infl::counterfactual::{self, Correlations, Outcome, Target, methods};
use infl::io::{Inputs, OutTensor, Publication};
use serde_json::json;

use super::{LdsArgs, LooArgs, Scored};
use crate::plots::{self, IntervalBar, Series};

/// One method's result.
pub struct Judged {
    name: &'static str,
    label: &'static str,
    seconds: f64,
    metadata: Vec<(String, String)>,
    correlations: Result<Correlations, String>,
    /// LOO: (predicted, actual) of test example 0 over the removals.
    anchor: Vec<(f64, f64)>,
}

fn judge(scored: &[Scored], f: impl Fn(&[f32]) -> (Correlations, Vec<(f64, f64)>)) -> Vec<Judged> {
    scored
        .iter()
        .map(|s| {
            let result = s.scores.as_ref().map(|v| f(v));
            let anchor = result.as_ref().map(|r| r.1.clone()).unwrap_or_default();
            Judged {
                name: s.method.name,
                label: s.method.label,
                seconds: s.seconds,
                metadata: Vec::new(),
                correlations: result.map(|r| r.0).map_err(Clone::clone),
                anchor,
            }
        })
        .collect()
}

/// LDS of every scored method.
pub fn judge_lds(
    scored: &[Scored],
    subsets: &[Vec<usize>],
    n: usize,
    outcomes: &[Outcome],
    target: Target,
    seed: u64,
) -> Vec<Judged> {
    judge(scored, |scores| {
        let predicted = counterfactual::lds_predictions(scores, n, subsets);
        (
            counterfactual::lds(&predicted, outcomes, target, seed),
            Vec::new(),
        )
    })
}

/// LOO of every scored method (`outcomes[0]` is the full model's).
pub fn judge_loo(
    scored: &[Scored],
    removals: &[usize],
    n: usize,
    outcomes: &[Outcome],
    seed: u64,
) -> Vec<Judged> {
    let effects = counterfactual::loo_effects(&outcomes[0], &outcomes[1..], Target::Loss);
    judge(scored, |scores| {
        let anchor = removals
            .iter()
            .zip(&effects)
            .map(|(&r, e)| (f64::from(scores[r]) / n as f64, e[0]))
            .collect();
        (
            counterfactual::loo(scores, n, removals, &effects, seed),
            anchor,
        )
    })
}

fn fmt(x: f64) -> String {
    format!("{x:.3}")
}

/// Prints the table of results.
fn print_table(kind: &str, results: &[Judged]) {
    println!(
        "{:<22} {:>8} {:>19} {:>8} {:>9}",
        "method", kind, "95% CI", "pooled", "seconds"
    );
    for r in results {
        match &r.correlations {
            Ok(c) => {
                let (mean, ci) = c.summary.map_or(("n/a".into(), String::new()), |s| {
                    (fmt(s.mean), format!("[{}, {}]", fmt(s.low), fmt(s.high)))
                });
                let pooled = c.pooled.map_or(String::new(), fmt);
                println!(
                    "{:<22} {:>8} {:>19} {:>8} {:>9.1}",
                    r.label, mean, ci, pooled, r.seconds
                );
            }
            Err(e) => println!("{:<22} failed: {e}", r.label),
        }
    }
}

fn results_json(results: &[Judged], settings: &methods::Settings) -> serde_json::Value {
    results
        .iter()
        .map(|r| {
            let settings: serde_json::Map<String, serde_json::Value> = methods::find(r.name)
                .map(|m| m.metadata(settings))
                .unwrap_or(r.metadata.clone())
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect();
            json!({
                "name": r.name,
                "label": r.label,
                "seconds": r.seconds,
                "settings": settings,
                "result": match &r.correlations {
                    Ok(c) => json!(c),
                    Err(e) => json!({"error": e}),
                },
            })
        })
        .collect()
}

fn bars(results: &[Judged]) -> Vec<IntervalBar> {
    results
        .iter()
        .filter_map(|r| {
            let s = r.correlations.as_ref().ok()?.summary?;
            Some(IntervalBar {
                label: r.label.to_string(),
                value: s.mean,
                low: s.low,
                high: s.high,
            })
        })
        .collect()
}

fn table(outcomes: &[Outcome], f: fn(&Outcome) -> &Vec<f64>) -> OutTensor {
    let t = outcomes.first().map_or(0, |o| f(o).len());
    OutTensor::F64(
        vec![outcomes.len(), t],
        outcomes.iter().flat_map(|o| f(o).iter().copied()).collect(),
    )
}

fn publish(
    out: &Path,
    stem: &str,
    json: &serde_json::Value,
    tensors: Vec<(String, OutTensor)>,
) -> Result<()> {
    let (jp, tp) = (
        out.join(format!("{stem}.json")),
        out.join(format!("{stem}.safetensors")),
    );
    let mut publication = Publication::plan(&Inputs::none(), [&jp, &tp])?;
    publication.stage(&jp, &serde_json::to_vec_pretty(json)?)?;
    publication.stage_safetensors(&tp, tensors, Default::default())?;
    publication.publish()?;
    println!("wrote {} and {}", jp.display(), tp.display());
    Ok(())
}

fn draw(no_plots: bool, f: impl FnOnce() -> Result<()>) {
    if no_plots {
        return;
    }
    if let Err(e) = plots::init_font()
        .map_err(anyhow::Error::msg)
        .and_then(|_| f())
    {
        eprintln!("plots skipped: {e:#}");
    }
}

/// Everything `infl eval lds` reports.
pub struct LdsReport<'a> {
    pub args: &'a LdsArgs,
    pub config: &'a serde_json::Value,
    pub settings: &'a methods::Settings,
    pub subsets: &'a [Vec<usize>],
    pub outcomes: &'a [Outcome],
    pub results: &'a [Judged],
    pub target: Target,
    pub retrain_seconds: f64,
    pub total_seconds: f64,
}

/// Prints and writes `lds.json`, `lds.safetensors`, `lds.png`.
pub fn write_lds(r: &LdsReport<'_>) -> Result<()> {
    let out = &r.args.common.out;
    print_table("LDS", r.results);
    let json = json!({
        "kind": "lds",
        "target": r.target.short_name(),
        "config": r.config,
        "retrain_seconds": r.retrain_seconds,
        "total_seconds": r.total_seconds,
        "methods": results_json(r.results, r.settings),
    });
    let size = r.subsets.first().map_or(0, Vec::len);
    let tensors = vec![
        (
            "subsets".to_string(),
            OutTensor::I64(
                vec![r.subsets.len(), size],
                r.subsets.iter().flatten().map(|&i| i as i64).collect(),
            ),
        ),
        ("loss".to_string(), table(r.outcomes, |o| &o.loss)),
        ("margin".to_string(), table(r.outcomes, |o| &o.margin)),
    ];
    publish(out, "lds", &json, tensors)?;
    draw(r.args.common.no_plots, || {
        let title = format!(
            "LDS ({}, {} subsets of {:.0}%, target {})",
            model_name(r.config),
            r.subsets.len(),
            100.0 * r.args.fraction,
            r.target.short_name()
        );
        plots::bar_chart(
            &out.join("lds.png"),
            &title,
            "mean Spearman (95% CI)",
            &bars(r.results),
        )
    });
    Ok(())
}

fn model_name(config: &serde_json::Value) -> String {
    config["model"]["kind"]
        .as_str()
        .unwrap_or("model")
        .to_string()
}

/// Everything `infl eval loo` reports.
pub struct LooReport<'a> {
    pub args: &'a LooArgs,
    pub config: &'a serde_json::Value,
    pub settings: &'a methods::Settings,
    pub removals: &'a [usize],
    pub outcomes: &'a [Outcome],
    pub results: &'a [Judged],
    pub retrain_seconds: f64,
    pub total_seconds: f64,
}

/// Prints and writes `loo.json`, `loo.safetensors`, `loo.png`, `loo-scatter.png`.
pub fn write_loo(r: &LooReport<'_>) -> Result<()> {
    let out = &r.args.common.out;
    print_table("LOO", r.results);
    let json = json!({
        "kind": "loo",
        "config": r.config,
        "removals": r.removals,
        "retrain_seconds": r.retrain_seconds,
        "total_seconds": r.total_seconds,
        "methods": results_json(r.results, r.settings),
    });
    let tensors = vec![
        (
            "removed".to_string(),
            OutTensor::I64(
                vec![r.removals.len()],
                r.removals.iter().map(|&i| i as i64).collect(),
            ),
        ),
        (
            "full_loss".to_string(),
            table(&r.outcomes[..1], |o| &o.loss),
        ),
        (
            "full_margin".to_string(),
            table(&r.outcomes[..1], |o| &o.margin),
        ),
        ("loss".to_string(), table(&r.outcomes[1..], |o| &o.loss)),
        ("margin".to_string(), table(&r.outcomes[1..], |o| &o.margin)),
    ];
    publish(out, "loo", &json, tensors)?;
    draw(r.args.common.no_plots, || {
        let title = format!(
            "LOO ({}, {} removals)",
            model_name(r.config),
            r.removals.len()
        );
        plots::bar_chart(
            &out.join("loo.png"),
            &title,
            "mean Pearson (95% CI)",
            &bars(r.results),
        )?;
        let series: Vec<Series> = r
            .results
            .iter()
            .filter(|j| {
                ["influence-exact", "grad-dot-last"].contains(&j.name) && !j.anchor.is_empty()
            })
            .enumerate()
            .map(|(i, j)| Series {
                label: j.label.to_string(),
                points: j.anchor.clone(),
                color: plots::series_color(i),
            })
            .collect();
        plots::scatter(
            &out.join("loo-scatter.png"),
            "Test example 0: predicted (score / N) vs actual loss change",
            "predicted",
            "actual",
            &series,
        )
    });
    Ok(())
}
