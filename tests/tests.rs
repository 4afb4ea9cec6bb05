//! Integration tests (one binary): the golden MoCo step, configs, training runs.

mod golden;
