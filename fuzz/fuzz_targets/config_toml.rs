//! The TOML config parser and validator (`plan::file::parse`): any text either becomes a
//! plan or an error that names a line of the file.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spiffe_aws_agent::{Clock, TokioClock};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    match spiffe_aws_agent::plan::file::parse(Path::new("agent.toml"), text, &clock) {
        Ok(plan) => assert!(!plan.roles.is_empty()),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("agent.toml"), "{message}");
        }
    }
});
