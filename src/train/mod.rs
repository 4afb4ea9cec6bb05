//! Self-supervised training:
//!
//! - [`learner`]: the state of a run (encoders, [`learner::Dictionary`], optimizer) and the
//!   step of each dictionary mechanism.
//! - [`dictionary`]: MoCo's queue and the memory bank.
//! - [`state`]: a learner to and from a checkpoint (resume, `--init`).
//! - [`start`]: where a run starts: fresh, from `--init` weights, or resumed.
//! - [`trainer`]: the epoch loop that owns a run directory ([`train`]).
//! - [`record`]: its metrics rows, checkpoints and summary.
//! - [`error`]: the one error of a run, [`TrainError`].

pub mod dictionary;
pub mod error;
pub mod learner;
pub mod record;
pub mod start;
pub mod state;
pub mod trainer;

pub use error::TrainError;
pub use learner::{Learner, StepChoices, StepStats};
pub use trainer::{train, TrainOptions};
