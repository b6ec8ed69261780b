//! `spiffe-aws-agent dev`. (Wired up once both doubles land.)

/// Why `dev` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("the dev stack is not wired up yet")]
    NotReady,
}

/// Runs the dev stack.
pub async fn run(_args: &crate::cli::DevArgs) -> Result<(), DevError> {
    Err(DevError::NotReady)
}
