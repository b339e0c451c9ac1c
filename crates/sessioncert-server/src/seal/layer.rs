//! The `Layer` half of header-mode sealing.

use super::SealService;
use crate::sessions::SessionManager;
use std::sync::Arc;
use tower::Layer;

/// Wraps a service so requests must arrive sealed in an established session and
/// responses leave sealed. Anything not sealed, replayed or tampered with is refused
/// before the inner service runs.
#[derive(Clone)]
pub struct SealLayer {
    manager: Arc<SessionManager>,
}

impl SealLayer {
    /// A layer using `manager`'s sessions.
    pub fn new(manager: Arc<SessionManager>) -> Self {
        SealLayer { manager }
    }
}

impl<S> Layer<S> for SealLayer {
    type Service = SealService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SealService::header_mode(self.manager.clone(), inner)
    }
}
