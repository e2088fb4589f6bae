//! The HTTP engine: the only builder of reqwest clients. (Placeholder: being built.)

/// A classified HTTP failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Other(String),
}

impl HttpError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}
