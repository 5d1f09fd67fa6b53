//! Where verification keys come from: a fixed set or a remote JWKS.

use std::sync::Arc;

use crate::{KeySet, RemoteJwks};

/// The keys a [`JwtAuthLayer`](crate::JwtAuthLayer) verifies with.
///
/// Made with `From`: a [`KeySet`] (fixed keys, e.g. loaded from a file) or a
/// [`RemoteJwks`] (fetched and refreshed).
///
/// ```
/// use tower_jwt_auth::{KeySet, KeySource};
/// let source: KeySource = KeySet::from_jwks(br#"{"keys": []}"#).unwrap().into();
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct KeySource(pub(crate) Source);

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Fixed(Arc<KeySet>),
    Remote(RemoteJwks),
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        Self(Source::Fixed(Arc::new(keys)))
    }
}

impl From<Arc<KeySet>> for KeySource {
    fn from(keys: Arc<KeySet>) -> Self {
        Self(Source::Fixed(keys))
    }
}

impl From<RemoteJwks> for KeySource {
    fn from(jwks: RemoteJwks) -> Self {
        Self(Source::Remote(jwks))
    }
}
