//! The ways credentials leave the agent. Each module has one output format.
//!
//! - [`process`]: `credential_process` JSON, fetched one-shot.

pub mod process;
