//! What can stop a verification run.

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Setup(String),
    #[error("the original does not run here (after being moved to loopback): {0}")]
    Original(String),
    #[error("rampart does not run the converted config: {0}")]
    Rampart(String),
}
