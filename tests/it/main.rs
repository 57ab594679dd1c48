//! The integration tests, one test binary with a module per area (one link instead of one per
//! file). Each test starts the real `cascade` binary as a child process with a policies folder
//! of its own (`cascade_tests`, `tests/support/`). The modules share this process and run
//! concurrently, so a test keeps its state to itself: scratch folders from `TempDir` (unique
//! per call), ports the kernel picks, environment given to the child (`Server::start_env`),
//! never set on this process; a `static` lock orders tests of one module only.

mod accuracy;
mod axon;
mod bad_input;
mod cache;
mod calibration;
mod defaults;
mod detectors;
mod failure;
mod hardening;
mod hf;
mod javascript;
mod kserve;
mod lifecycle;
mod metrics;
mod operators;
mod predlog;
mod python;
mod reload;
mod retrain;
mod rollout;
mod routing;
mod startup;
mod status_page;
mod text;
mod tune;
mod vlm;
