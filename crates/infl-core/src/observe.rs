//! What a training loop reports to attribution methods that watch training
//! (forgetting events), so that any loop — infl-nn's, candle's, burn's — can feed them.

/// One presentation of a training example during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presentation {
    /// Example id (row in the training set).
    pub id: usize,
    /// The model's predicted label, from the training-mode forward pass before the
    /// optimizer step.
    pub predicted: i64,
    /// Whether that prediction equals the (given) label.
    pub correct: bool,
}

/// Receives presentations, a minibatch at a time, in training order.
pub trait TrainingObserver {
    /// Called once per minibatch, before the optimizer step.
    fn observe(&mut self, batch: &[Presentation]);
}

impl<F: FnMut(&[Presentation])> TrainingObserver for F {
    fn observe(&mut self, batch: &[Presentation]) {
        self(batch)
    }
}
