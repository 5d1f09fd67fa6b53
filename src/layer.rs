//! `JwtAuthLayer`: the Tower layer that puts [`JwtAuth`] in front of a service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use crate::service::{JwtAuth, Shared};
use crate::source::KeySource;
use crate::{JsonClaims, Verifier};

/// Verifies `Authorization: Bearer` JWTs before the inner service sees the request.
///
/// `C` is the claims type handed to handlers as [`Claims<C>`](crate::Claims) (default:
/// the JSON object, [`JsonClaims`]). Clone it freely: clones share keys and config.
///
/// ```
/// use tower_jwt_auth::{JwtAuthLayer, KeySet, Verifier};
/// let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
/// let verifier = Verifier::builder().issuer("https://issuer.example").build().unwrap();
/// let layer = JwtAuthLayer::new(verifier, keys).realm("orders");
/// # let _ = layer;
/// ```
pub struct JwtAuthLayer<C = JsonClaims> {
    shared: Arc<Shared>,
    _claims: PhantomData<fn() -> C>,
}

impl JwtAuthLayer {
    /// A layer verifying tokens with `verifier` against the keys of `keys` (a
    /// [`RemoteJwks`](crate::RemoteJwks) or a fixed [`KeySet`](crate::KeySet)).
    ///
    /// Handlers get the claims as [`JsonClaims`]; call [`claims`](Self::claims) to
    /// deserialize them into a type of your own instead.
    pub fn new(verifier: Verifier, keys: impl Into<KeySource>) -> Self {
        Self {
            shared: Arc::new(Shared::new(verifier, keys.into())),
            _claims: PhantomData,
        }
    }
}

impl<C> JwtAuthLayer<C> {
    /// Deserializes verified claims into `D`; a token whose claims do not fit `D` is
    /// rejected (401, "claims do not have the expected shape").
    ///
    /// ```
    /// use tower_jwt_auth::{JwtAuthLayer, KeySet, Verifier};
    /// #[derive(Clone, serde::Deserialize)]
    /// struct MyClaims { sub: String, scope: String }
    /// let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
    /// let layer = JwtAuthLayer::new(Verifier::builder().build().unwrap(), keys).claims::<MyClaims>();
    /// # let _ = layer;
    /// ```
    pub fn claims<D>(self) -> JwtAuthLayer<D> {
        JwtAuthLayer {
            shared: self.shared,
            _claims: PhantomData,
        }
    }

    /// The `realm` of `WWW-Authenticate` challenges. Default `"api"`.
    #[must_use]
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).realm = realm.into().into();
        self
    }

    /// Lets requests without a token through, without claims. A token that is present
    /// but invalid is still rejected.
    #[must_use]
    pub fn optional(mut self) -> Self {
        Arc::make_mut(&mut self.shared).optional = true;
        self
    }
}

impl<C> Clone for JwtAuthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _claims: PhantomData,
        }
    }
}

impl<C> fmt::Debug for JwtAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, C> Layer<S> for JwtAuthLayer<C> {
    type Service = JwtAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::from_parts(inner, self.shared.clone())
    }
}
