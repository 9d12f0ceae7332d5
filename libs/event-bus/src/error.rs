//! The bus error type shared by every implementation, classified by what a caller should do
//! about it (retry later, slow down, or give up on this message).

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Server unreachable, timeout, no JetStream: callers answer 503.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// Backpressure (in-process capacity, JetStream max-bytes/limits): callers answer 429/503
    /// with Retry-After.
    #[error("bus full: {0}")]
    Full(String),
    /// Permanent error for this message.
    #[error("rejected by the bus: {0}")]
    Rejected(String),
    /// The bus was closed (in-process bus after [`crate::InProcessBus::close`]).
    #[error("bus closed")]
    Closed,
}

impl BusError {
    /// True when retrying the same operation later may succeed (everything but `Rejected`).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, BusError::Rejected(_))
    }
}
