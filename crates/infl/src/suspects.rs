//! Ranking training examples by self-influence: the likely mislabelled ones first.

use infl_core::rank_descending;

use crate::run::SplitInfo;

/// A training example ranked by self-influence (likely mislabelled when high).
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    /// 1-based rank.
    pub rank: usize,
    /// Row in the training set.
    pub index: usize,
    /// User-facing id.
    pub id: i64,
    /// Its self-influence.
    pub self_influence: f32,
    /// Its given label, if labels are known.
    pub label: Option<i64>,
    /// Predicted class at the last checkpoint (classification heads).
    pub predicted: Option<usize>,
}

/// The `top` training examples with the highest self-influence, in infl's one ranking
/// order (highest first, ties to the lower index; see [`infl_core::order`]).
pub fn rank_suspects(self_influence: &[f32], train: &SplitInfo, top: usize) -> Vec<Suspect> {
    rank_descending(self_influence)
        .into_iter()
        .take(top)
        .enumerate()
        .map(|(r, i)| Suspect {
            rank: r + 1,
            index: i,
            id: train.ids[i],
            self_influence: self_influence[i],
            label: train.labels.as_ref().map(|l| l[i]),
            predicted: train.labels.as_ref().and(train.predicted.get(i).copied()),
        })
        .collect()
}
