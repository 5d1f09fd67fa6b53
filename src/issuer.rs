//! Several issuers in one layer: each with its own keys, audiences and algorithms.

use std::fmt;
use std::sync::Arc;

use crate::Algorithm;
use crate::alg::AlgorithmSet;
use crate::source::KeySource;
use crate::verify::Route;

/// One accepted issuer: tokens whose `iss` equals `name` are verified with `keys` only.
///
/// The token's unverified `iss` only chooses among configured issuers; a token naming
/// another issuer is rejected before any key is looked up or fetched, and a kid that two
/// issuers share never verifies a token of the other.
///
/// ```
/// use tower_jwt_auth::{Algorithm, Issuer, KeySet};
/// let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
/// let partner = Issuer::new("https://partner.example", keys)
///     .audience("orders")
///     .algorithms([Algorithm::ES256]);
/// # let _ = partner;
/// ```
#[derive(Clone)]
pub struct Issuer {
    pub(crate) name: Arc<str>,
    pub(crate) keys: KeySource,
    audiences: Option<Vec<Box<str>>>,
    algorithms: Option<AlgorithmSet>,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl Issuer {
    /// Tokens with `iss` = `name`, verified against `keys` (a
    /// [`RemoteJwks`](crate::RemoteJwks), e.g. from discovery, or a [`KeySet`](crate::KeySet)).
    pub fn new(name: impl Into<String>, keys: impl Into<KeySource>) -> Self {
        Self {
            name: Arc::from(name.into()),
            keys: keys.into(),
            audiences: None,
            algorithms: None,
        }
    }

    /// An audience accepted from this issuer (repeat for several). Without any, the
    /// verifier's audiences apply.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences
            .get_or_insert_with(Vec::new)
            .push(audience.into().into());
        self
    }

    /// The algorithms accepted from this issuer, within the verifier's allow-list.
    #[must_use]
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(AlgorithmSet::of(algorithms));
        self
    }

    /// The issuer's name (`iss`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn route(&self) -> Route<'_> {
        Route {
            issuer: Some(&self.name),
            audiences: self.audiences.as_deref(),
            algorithms: self.algorithms,
        }
    }
}
