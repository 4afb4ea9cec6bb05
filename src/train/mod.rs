//! Training: the step ([`learner`]), its pieces (loss, dictionary, EMA, SGD, schedule), and
//! the epoch loop that owns the run directory ([`run`]).

pub mod dictionary;
pub mod learner;
pub mod run;
pub mod state;

pub use learner::{Learner, StepChoices, StepStats};
pub use run::{make_device, train, TrainOptions};
