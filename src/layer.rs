//! `JwtAuthLayer`: the Tower layer that puts [`JwtAuth`] in front of a service.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::service::{Issuers, JwtAuth, Shared, Validators};
use crate::source::KeySource;
use crate::{ConfigError, ErrorResponder, Issuer, JsonClaims, TokenSource, Verifier};

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
    validators: Validators<C>,
}

impl JwtAuthLayer {
    /// A layer verifying tokens with `verifier` against the keys of `keys` (a
    /// [`RemoteJwks`](crate::RemoteJwks) or a fixed [`KeySet`](crate::KeySet)).
    ///
    /// Handlers get the claims as [`JsonClaims`]; call [`claims`](Self::claims) to
    /// deserialize them into a type of your own instead.
    pub fn new(verifier: Verifier, keys: impl Into<KeySource>) -> Self {
        Self::from_shared(Shared::new(verifier, Issuers::One(keys.into())))
    }

    /// A layer accepting tokens from several issuers, each verified with its own keys
    /// (and, where set, its own audiences and algorithms). The verifier supplies the
    /// rest of the policy; its own issuer list is not used.
    ///
    /// ```
    /// use tower_jwt_auth::{Issuer, JwtAuthLayer, KeySet, Verifier};
    /// let keys = || KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
    /// let layer = JwtAuthLayer::issuers(
    ///     Verifier::builder().audience("orders").build().unwrap(),
    ///     [Issuer::new("https://staff.example", keys()), Issuer::new("https://partners.example", keys())],
    /// )
    /// .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn issuers(
        verifier: Verifier,
        issuers: impl IntoIterator<Item = Issuer>,
    ) -> Result<Self, ConfigError> {
        let issuers: Vec<Issuer> = issuers.into_iter().collect();
        if issuers.is_empty() {
            return Err(ConfigError::Invalid("at least one issuer is needed".into()));
        }
        for (i, issuer) in issuers.iter().enumerate() {
            if issuer.name().is_empty() {
                return Err(ConfigError::EmptyValue("issuer"));
            }
            if issuers[..i].iter().any(|other| other.name() == issuer.name()) {
                return Err(ConfigError::Invalid(format!(
                    "issuer {} configured twice",
                    issuer.name()
                )));
            }
        }
        Ok(Self::from_shared(Shared::new(verifier, Issuers::Many(issuers))))
    }

    fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
            validators: Arc::new(Vec::new()),
        }
    }
}

impl<C> JwtAuthLayer<C> {
    /// Deserializes verified claims into `D`; a token whose claims do not fit `D` is
    /// rejected (401, "claims do not have the expected shape"). Validators added before
    /// are dropped (they were for the old type): call this first.
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
            validators: Arc::new(Vec::new()),
        }
    }

    /// A check of your own on verified claims; `Err(reason)` answers 403 with the
    /// reason as `error_description`. Runs after every built-in check.
    ///
    /// ```
    /// use tower_jwt_auth::{JsonClaims, JwtAuthLayer, KeySet, Verifier};
    /// let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
    /// let layer = JwtAuthLayer::new(Verifier::builder().build().unwrap(), keys).validate(|claims: &JsonClaims| {
    ///     match claims.get("tenant").and_then(|t| t.as_str()) {
    ///         Some("acme") => Ok(()),
    ///         _ => Err("tenant not allowed".to_string()),
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn validate(mut self, check: impl Fn(&C) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.validators).push(Arc::new(check));
        self
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

    /// Where the token is read from. Default: `Authorization: Bearer`.
    #[must_use]
    pub fn token_source(mut self, source: TokenSource) -> Self {
        Arc::make_mut(&mut self.shared).source = source;
        self
    }

    /// Renders rejections with `responder` instead of the RFC 6750 default.
    #[must_use]
    pub fn error_responder(mut self, responder: impl ErrorResponder) -> Self {
        Arc::make_mut(&mut self.shared).responder = Some(Arc::new(responder));
        self
    }
}

impl<C> Clone for JwtAuthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            validators: self.validators.clone(),
        }
    }
}

impl<C> fmt::Debug for JwtAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("shared", &self.shared)
            .field("validators", &self.validators.len())
            .finish()
    }
}

impl<S, C> Layer<S> for JwtAuthLayer<C> {
    type Service = JwtAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::from_parts(inner, self.shared.clone(), self.validators.clone())
    }
}
