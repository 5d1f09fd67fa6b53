//! `TokenSigner`: short-lived tokens for a service's outgoing calls, one per audience,
//! reused until 80 % of their lifetime has passed.
//!
//! A service that calls others proves who it is with a token signed by its own
//! [`SigningKey`]: `iss` and `sub` name the caller, `aud` the service called, `iat`,
//! `exp` and a random `jti` make it short-lived and unique. Signing costs far more than
//! a cache lookup (about 1 ms for RSA), so the signer keeps one token per audience and
//! hands it out again until 80 % of its lifetime has passed; the receiver still sees
//! at least a fifth of the lifetime left (one minute of the default five).
//!
//! ```
//! use tower_jwt_auth::{Algorithm, KeySet, SigningKey, TokenSigner, Verifier};
//!
//! let key = SigningKey::generate(Algorithm::ES256, "orders-2025-01")?;
//! let signer = TokenSigner::builder(key.clone(), "https://orders.internal")
//!     .subject("orders")
//!     .claim("scope", "invoices:read")
//!     .build()?;
//! let token = signer.token("billing")?;
//! assert_eq!(signer.token("billing")?, token, "reused, not signed again");
//!
//! // The billing service, with the orders service's published keys:
//! let keys = KeySet::from_jwks(SigningKey::jwks(&[&key]).to_string().as_bytes())?;
//! let verifier = Verifier::builder()
//!     .issuer("https://orders.internal")
//!     .audience("billing")
//!     .build()?;
//! let verified = verifier.verify::<serde_json::Value>(&token, &keys)?;
//! assert_eq!(verified.claims["sub"], "orders");
//! assert_eq!(verified.claims["scope"], "invoices:read");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use moka::ops::compute::Op;
use serde_json::{Map, Value};

use crate::{Clock, ConfigError, SignError, SigningKey};

/// Default token lifetime: five minutes, short enough that a leaked token is soon
/// worthless, long enough that a service signs about once every four minutes per
/// audience.
///
/// ```
/// use tower_jwt_auth::{Algorithm, DEFAULT_TOKEN_LIFETIME, SigningKey, TokenSigner};
/// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a").build()?;
/// assert_eq!(signer.lifetime(), DEFAULT_TOKEN_LIFETIME);
/// assert_eq!(DEFAULT_TOKEN_LIFETIME.as_secs(), 300);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Longest accepted token lifetime: a day. Service tokens are meant to be short-lived.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default bound on the audiences cached at once.
const DEFAULT_MAX_AUDIENCES: u64 = 1024;
/// A cached token is handed out until this fraction of its lifetime has passed.
const RENEW_AFTER: f64 = 0.8;
/// Claims the signer sets itself; [`TokenSignerBuilder::claim`] refuses them.
const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "iat", "exp", "nbf", "jti"];
/// Random bytes in a `jti`: 128 bits, so ids never collide in practice.
const JTI_BYTES: usize = 16;

/// Mints short-lived tokens for outgoing calls and caches one per audience.
///
/// Every token carries `iss`, `sub`, `aud`, `iat`, `exp` (`iat` + lifetime, default
/// 5 min) and a random `jti`, plus the extra claims given to the builder. A token is
/// reused for its audience until 80 % of its lifetime has passed; then the next call
/// signs a new one. Concurrent callers wanting the same audience wait for one signature
/// rather than each signing their own.
///
/// Cheap to clone: clones share the key and the cache. Nothing is held across an
/// `.await` (signing is synchronous). `Debug` shows the configuration, never a token.
///
/// ```
/// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
/// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
///     .build()?;
/// let header = signer.bearer_for("service-b")?;
/// assert!(header.to_str()?.starts_with("Bearer ey"));
/// assert!(header.is_sensitive());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenSigner {
    inner: Arc<Inner>,
}

struct Inner {
    key: ArcSwap<CurrentKey>,
    /// Source of key generations, so a token signed with a replaced key is never reused.
    generations: AtomicU64,
    issuer: Box<str>,
    subject: Box<str>,
    lifetime: Duration,
    claims: Map<String, Value>,
    clock: Option<Clock>,
    cache: moka::sync::Cache<String, Arc<Cached>>,
    /// Tokens signed so far, for tests of the cache.
    signed: AtomicU64,
}

struct CurrentKey {
    key: SigningKey,
    generation: u64,
}

/// One audience's token.
struct Cached {
    generation: u64,
    issued: SystemTime,
    renew_at: SystemTime,
    token: Box<str>,
    /// `Bearer <token>`, marked sensitive; cloning it does not allocate.
    header: HeaderValue,
}

impl Cached {
    /// Still good to hand out at `now`: same key, and a clock that has neither passed
    /// the renewal point nor gone back before the token was issued.
    fn reusable(&self, now: SystemTime, generation: u64) -> bool {
        self.generation == generation && self.issued <= now && now < self.renew_at
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("TokenSigner")
            .field("key", &inner.key.load().key)
            .field("issuer", &inner.issuer)
            .field("subject", &inner.subject)
            .field("lifetime", &inner.lifetime)
            .field("claims", &inner.claims.keys().collect::<Vec<_>>())
            .field("cached_audiences", &inner.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A builder for tokens signed with `key` and issued by `issuer` (the `iss` claim,
    /// also the default `sub`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let key = SigningKey::generate(Algorithm::ES256, "a-1")?;
    /// let signer = TokenSigner::builder(key, "https://a.internal")
    ///     .subject("service-a")
    ///     .lifetime(Duration::from_secs(120))
    ///     .build()?;
    /// assert_eq!(signer.lifetime(), Duration::from_secs(120));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(key: SigningKey, issuer: impl Into<String>) -> TokenSignerBuilder {
        TokenSignerBuilder {
            key,
            issuer: issuer.into(),
            subject: None,
            lifetime: DEFAULT_TOKEN_LIFETIME,
            claims: Map::new(),
            clock: None,
            max_audiences: DEFAULT_MAX_AUDIENCES,
        }
    }

    /// A token for `audience`: the cached one while less than 80 % of its lifetime has
    /// passed, else a fresh one.
    ///
    /// Fails when `audience` is empty or the crypto backend cannot sign.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// let to_b = signer.token("service-b")?;
    /// let to_c = signer.token("service-c")?;
    /// assert_ne!(to_b, to_c, "one token per audience");
    /// assert!(signer.token("").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token(&self, audience: &str) -> Result<String, SignError> {
        Ok(self.cached(audience)?.token.to_string())
    }

    /// `Bearer <token>` for `audience`, ready for an `Authorization` header (marked
    /// sensitive, so HTTP/2 never indexes it). Cloned from the cache: no allocation
    /// while the token is reused.
    ///
    /// This is the helper for clients that are not Tower services, such as reqwest:
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::ES256, "a-1")?, "service-a")
    ///     .build()?;
    /// let request = reqwest::Client::new()
    ///     .get("http://127.0.0.1:8081/orders")
    ///     .header(http::header::AUTHORIZATION, signer.bearer_for("service-b")?)
    ///     .build()?;
    /// assert!(request.headers()["authorization"].to_str()?.starts_with("Bearer "));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bearer_for(&self, audience: &str) -> Result<HeaderValue, SignError> {
        Ok(self.cached(audience)?.header.clone())
    }

    /// Signs with `key` from now on. Tokens cached for the old key are not handed out
    /// again; each audience gets a token of the new key on its next call.
    ///
    /// Publish the new key (for instance with
    /// [`JwksEndpoint::set_keys`](crate::JwksEndpoint::set_keys)) long enough before
    /// switching that every verifier has refreshed its copy of the key set, and keep
    /// the old key published until the last token it signed has expired.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "2025-01")?, "service-a")
    ///     .build()?;
    /// signer.set_key(SigningKey::generate(Algorithm::EdDSA, "2025-02")?);
    /// assert_eq!(signer.key().kid(), "2025-02");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_key(&self, key: SigningKey) {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.key.store(Arc::new(CurrentKey { key, generation }));
        // Stale entries would be re-signed anyway (their generation differs); dropping
        // them now frees the memory at once.
        self.inner.cache.invalidate_all();
    }

    /// The key tokens are signed with now.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// assert_eq!(signer.key().kid(), "a-1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> SigningKey {
        self.inner.key.load().key.clone()
    }

    /// The `iss` of every token.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// assert_eq!(signer.issuer(), "service-a");
    /// assert_eq!(signer.subject(), "service-a", "sub defaults to the issuer");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The `sub` of every token.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "https://a.internal")
    ///     .subject("service-a")
    ///     .build()?;
    /// assert_eq!(signer.subject(), "service-a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// How long each token is valid: `exp - iat`.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, DEFAULT_TOKEN_LIFETIME, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// assert_eq!(signer.lifetime(), DEFAULT_TOKEN_LIFETIME);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    fn now(&self) -> SystemTime {
        match &self.inner.clock {
            Some(clock) => clock(),
            None => SystemTime::now(),
        }
    }

    /// The audience's token, signing a new one only when the cached one may not be
    /// reused.
    fn cached(&self, audience: &str) -> Result<Arc<Cached>, SignError> {
        if audience.is_empty() {
            return Err(SignError::Claims("the audience must not be empty".into()));
        }
        let inner = &self.inner;
        if let Some(hit) = inner.cache.get(audience)
            && hit.reusable(self.now(), inner.key.load().generation)
        {
            return Ok(hit);
        }
        // Calls for one audience run this one at a time (moka's per-key lock, released
        // before returning; nothing here awaits), and each looks again first: callers
        // that queued behind a signature reuse its token instead of signing their own.
        let result = inner.cache.entry_by_ref(audience).and_try_compute_with(|entry| {
            let current = inner.key.load();
            let now = self.now();
            if let Some(entry) = &entry
                && entry.value().reusable(now, current.generation)
            {
                return Ok(Op::Nop);
            }
            self.sign(audience, &current, now)
                .map(|token| Op::Put(Arc::new(token)))
        })?;
        match result.into_entry() {
            Some(entry) => Ok(entry.into_value()),
            // Only `Op::Remove` or a `Nop` without an entry end here; neither is used.
            None => Err(SignError::Signing("the token cache lost the token".into())),
        }
    }

    fn sign(&self, audience: &str, current: &CurrentKey, now: SystemTime) -> Result<Cached, SignError> {
        let inner = &self.inner;
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SignError::Claims("the clock reads before 1970".into()))?
            .as_secs();
        let lifetime = inner.lifetime.as_secs();
        let mut jti = [0u8; JTI_BYTES];
        crate::crypto::fill_random(&mut jti).map_err(SignError::Signing)?;
        let mut claims = inner.claims.clone();
        claims.insert("iss".into(), Value::from(&*inner.issuer));
        claims.insert("sub".into(), Value::from(&*inner.subject));
        claims.insert("aud".into(), Value::from(audience));
        claims.insert("iat".into(), Value::from(iat));
        claims.insert("exp".into(), Value::from(iat.saturating_add(lifetime)));
        claims.insert("jti".into(), Value::from(URL_SAFE_NO_PAD.encode(jti)));
        let token = current.key.sign(&claims)?;
        let mut header = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|e| SignError::Signing(format!("the token is not a header value: {e}")))?;
        header.set_sensitive(true);
        inner.signed.fetch_add(1, Ordering::Relaxed);
        let issued = UNIX_EPOCH + Duration::from_secs(iat);
        tracing::debug!(aud = audience, kid = current.key.kid(), "signed a service token");
        Ok(Cached {
            generation: current.generation,
            issued,
            renew_at: issued + inner.lifetime.mul_f64(RENEW_AFTER),
            token: token.into(),
            header,
        })
    }

    /// Tokens signed so far (not counting reuses).
    #[cfg(all(test, feature = "aws-lc-rs"))]
    pub(crate) fn signatures(&self) -> u64 {
        self.inner.signed.load(Ordering::Relaxed)
    }
}

/// Builds a [`TokenSigner`]; every setting but the key and issuer has a default.
#[must_use]
pub struct TokenSignerBuilder {
    key: SigningKey,
    issuer: String,
    subject: Option<String>,
    lifetime: Duration,
    claims: Map<String, Value>,
    clock: Option<Clock>,
    max_audiences: u64,
}

impl fmt::Debug for TokenSignerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSignerBuilder")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("lifetime", &self.lifetime)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("max_audiences", &self.max_audiences)
            .finish_non_exhaustive()
    }
}

impl TokenSignerBuilder {
    /// The `sub` claim: which service is calling. Default: the issuer.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "https://idp.internal")
    ///     .subject("service-a")
    ///     .build()?;
    /// assert_eq!(signer.subject(), "service-a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// How long each token is valid, in whole seconds (a fraction is dropped). Default
    /// 5 minutes ([`DEFAULT_TOKEN_LIFETIME`]); at least 1 second, at most a day.
    ///
    /// A token is reused until 80 % of this has passed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "a-1")?;
    /// let too_long = TokenSigner::builder(key, "service-a").lifetime(Duration::from_secs(7 * 86400));
    /// assert!(too_long.build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// An extra claim in every token, e.g. `scope`. The registered claims the signer
    /// sets itself (`iss`, `sub`, `aud`, `iat`, `exp`, `nbf`, `jti`) are refused by
    /// [`build`](Self::build). A second call with the same name replaces the value.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "a-1")?;
    /// let signer = TokenSigner::builder(key.clone(), "service-a")
    ///     .claim("scope", "orders:read")
    ///     .claim("tenant", serde_json::json!({ "id": 7 }))
    ///     .build()?;
    /// # let _ = signer;
    /// assert!(TokenSigner::builder(key, "service-a").claim("exp", 0).build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Replaces the system clock (for `iat`, `exp` and renewal), for tests and
    /// simulations. Give the verifier the same clock.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let start = SystemTime::now();
    /// let t0 = std::time::Instant::now();
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .clock(move || start + t0.elapsed() + Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = signer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How many audiences keep a cached token at once (default 1024); beyond that the
    /// least used are dropped and signed again when next needed. Bounds memory when the
    /// audience is computed from the request.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, TokenSigner};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "a-1")?;
    /// let signer = TokenSigner::builder(key, "service-a").max_audiences(16).build()?;
    /// # let _ = signer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_audiences(mut self, max: u64) -> Self {
        self.max_audiences = max;
        self
    }

    /// Checks the settings and builds the signer.
    ///
    /// Fails on an empty issuer or subject, a lifetime outside 1 s to 24 h, an extra
    /// claim that the signer sets itself or with an empty name, or `max_audiences(0)`.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, ConfigError, SigningKey, TokenSigner};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "a-1")?;
    /// let err = TokenSigner::builder(key, "").build().unwrap_err();
    /// assert_eq!(err, ConfigError::EmptyValue("issuer"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<TokenSigner, ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::EmptyValue("issuer"));
        }
        let subject = self.subject.unwrap_or_else(|| self.issuer.clone());
        if subject.is_empty() {
            return Err(ConfigError::EmptyValue("subject"));
        }
        let lifetime = Duration::from_secs(self.lifetime.as_secs());
        if lifetime.is_zero() || lifetime > MAX_TOKEN_LIFETIME {
            return Err(ConfigError::Invalid(format!(
                "token lifetime {:?} out of range (1 s to {} h)",
                self.lifetime,
                MAX_TOKEN_LIFETIME.as_secs() / 3600
            )));
        }
        if let Some(name) = self
            .claims
            .keys()
            .find(|name| REGISTERED.contains(&name.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "claim `{name}` is set by the signer and cannot be given as an extra claim"
            )));
        }
        if self.claims.contains_key("") {
            return Err(ConfigError::EmptyValue("claim name"));
        }
        if self.max_audiences == 0 {
            return Err(ConfigError::Invalid("max_audiences must be at least 1".into()));
        }
        Ok(TokenSigner {
            inner: Arc::new(Inner {
                key: ArcSwap::from_pointee(CurrentKey {
                    key: self.key,
                    generation: 0,
                }),
                generations: AtomicU64::new(0),
                issuer: self.issuer.into(),
                subject: subject.into(),
                lifetime,
                claims: self.claims,
                clock: self.clock,
                cache: moka::sync::Cache::new(self.max_audiences),
                signed: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(all(test, feature = "aws-lc-rs"))]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::{Algorithm, KeySet, Verifier};

    /// A clock the test moves by hand, starting at a fixed instant.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<SystemTime>>);

    impl ManualClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(
                UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )))
        }

        fn now(&self) -> SystemTime {
            *self.0.lock().expect("clock")
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().expect("clock") += by;
        }

        fn set(&self, to: SystemTime) {
            *self.0.lock().expect("clock") = to;
        }
    }

    fn key(kid: &str) -> SigningKey {
        SigningKey::generate(Algorithm::ES256, kid).expect("generate")
    }

    fn signer_with(key: SigningKey, clock: &ManualClock) -> TokenSigner {
        let clock = clock.clone();
        TokenSigner::builder(key, "service-a")
            .clock(move || clock.now())
            .build()
            .expect("signer")
    }

    fn claims_of(token: &str) -> Value {
        let payload = token.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
    }

    #[test]
    fn a_token_carries_the_registered_claims_and_the_extra_ones() {
        let clock = ManualClock::new();
        let clock2 = clock.clone();
        let signer = TokenSigner::builder(key("a-1"), "https://a.internal")
            .subject("service-a")
            .claim("scope", "orders:read")
            .clock(move || clock2.now())
            .build()
            .expect("signer");
        let claims = claims_of(&signer.token("service-b").expect("token"));
        let iat = clock.now().duration_since(UNIX_EPOCH).expect("epoch").as_secs();
        assert_eq!(claims["iss"], "https://a.internal");
        assert_eq!(claims["sub"], "service-a");
        assert_eq!(claims["aud"], "service-b");
        assert_eq!(claims["iat"], iat);
        assert_eq!(claims["exp"], iat + 300);
        assert_eq!(claims["scope"], "orders:read");
        let jti = claims["jti"].as_str().expect("jti");
        assert_eq!(URL_SAFE_NO_PAD.decode(jti).expect("base64url").len(), JTI_BYTES);
        assert_eq!(claims.as_object().expect("object").len(), 7);
    }

    #[test]
    fn the_token_is_reused_until_80_percent_of_its_lifetime_has_passed() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        let first = signer.token("service-b").expect("token");
        clock.advance(Duration::from_secs(239));
        assert_eq!(signer.token("service-b").expect("token"), first);
        assert_eq!(signer.signatures(), 1);
        clock.advance(Duration::from_secs(1)); // 240 s = 80 % of 300 s
        let second = signer.token("service-b").expect("token");
        assert_ne!(second, first);
        assert_eq!(signer.signatures(), 2);
        assert_ne!(claims_of(&second)["jti"], claims_of(&first)["jti"]);
        assert_eq!(
            claims_of(&second)["iat"].as_u64().expect("iat"),
            claims_of(&first)["iat"].as_u64().expect("iat") + 240
        );
    }

    #[test]
    fn a_reused_token_always_has_a_fifth_of_its_lifetime_left() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        for _ in 0..1000 {
            let token = signer.token("service-b").expect("token");
            let exp = claims_of(&token)["exp"].as_u64().expect("exp");
            let now = clock.now().duration_since(UNIX_EPOCH).expect("epoch").as_secs();
            assert!(exp >= now + 60, "only {} s left", exp - now);
            clock.advance(Duration::from_millis(1700));
        }
    }

    #[test]
    fn each_audience_has_its_own_token() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        let b = signer.token("service-b").expect("token");
        let c = signer.token("service-c").expect("token");
        assert_eq!(claims_of(&b)["aud"], "service-b");
        assert_eq!(claims_of(&c)["aud"], "service-c");
        assert_eq!(signer.token("service-b").expect("token"), b);
        assert_eq!(signer.signatures(), 2);
    }

    #[test]
    fn a_clock_stepped_back_before_the_token_was_issued_gets_a_new_token() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        let first = signer.token("service-b").expect("token");
        clock.set(clock.now() - Duration::from_secs(3600));
        let second = signer.token("service-b").expect("token");
        assert_ne!(first, second);
        assert!(claims_of(&second)["iat"].as_u64() < claims_of(&first)["iat"].as_u64());
    }

    #[test]
    fn concurrent_callers_share_one_signature() {
        let clock = ManualClock::new();
        // RSA: slow enough to sign that the threads really overlap.
        let signer = signer_with(
            SigningKey::generate(Algorithm::RS256, "a-1").expect("generate"),
            &clock,
        );
        let tokens: HashSet<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    scope.spawn(|| {
                        (0..50)
                            .map(|_| signer.token("service-b").expect("token"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect::<HashSet<String>>()
        });
        assert_eq!(tokens.len(), 1);
        assert_eq!(signer.signatures(), 1);
    }

    #[test]
    fn after_set_key_tokens_are_signed_with_the_new_key() {
        let clock = ManualClock::new();
        let (old, new) = (key("old"), key("new"));
        let keys = KeySet::from_jwks(SigningKey::jwks(&[&old, &new]).to_string().as_bytes()).expect("keys");
        let signer = signer_with(old, &clock);
        let before = signer.token("service-b").expect("token");
        signer.set_key(new);
        let after = signer.token("service-b").expect("token");
        assert_ne!(before, after);
        let verifier = Verifier::builder()
            .clock({
                let clock = clock.clone();
                move || clock.now()
            })
            .build()
            .expect("verifier");
        let kid = |token: &str| {
            verifier
                .verify::<Value>(token, &keys)
                .expect("valid")
                .token
                .kid
                .expect("kid")
                .to_string()
        };
        assert_eq!(kid(&before), "old");
        assert_eq!(kid(&after), "new");
        assert_eq!(signer.token("service-b").expect("token"), after);
    }

    #[test]
    fn clones_share_the_cache() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        let clone = signer.clone();
        assert_eq!(
            signer.token("service-b").expect("token"),
            clone.token("service-b").expect("token")
        );
        assert_eq!(signer.signatures(), 1);
    }

    #[test]
    fn bearer_for_is_the_cached_token_behind_bearer_and_sensitive() {
        let clock = ManualClock::new();
        let signer = signer_with(key("a-1"), &clock);
        let header = signer.bearer_for("service-b").expect("header");
        assert!(header.is_sensitive());
        let token = signer.token("service-b").expect("token");
        assert_eq!(header.to_str().expect("ascii"), format!("Bearer {token}"));
        assert_eq!(signer.signatures(), 1);
    }

    #[test]
    fn an_empty_audience_is_refused() {
        let signer = signer_with(key("a-1"), &ManualClock::new());
        assert!(matches!(signer.token(""), Err(SignError::Claims(_))));
        assert!(matches!(signer.bearer_for(""), Err(SignError::Claims(_))));
    }

    #[test]
    fn the_builder_refuses_what_cannot_work() {
        let build = |f: fn(TokenSignerBuilder) -> TokenSignerBuilder| {
            f(TokenSigner::builder(key("a-1"), "service-a")).build()
        };
        assert_eq!(
            build(|b| b.subject("")).expect_err("subject"),
            ConfigError::EmptyValue("subject")
        );
        assert!(build(|b| b.lifetime(Duration::ZERO)).is_err());
        assert!(build(|b| b.lifetime(Duration::from_millis(900))).is_err());
        assert!(build(|b| b.lifetime(Duration::from_secs(86_401))).is_err());
        assert!(build(|b| b.lifetime(Duration::from_secs(86_400))).is_ok());
        for name in REGISTERED {
            let err = TokenSigner::builder(key("a-1"), "service-a")
                .claim(name, 1)
                .build()
                .expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(build(|b| b.claim("", 1)).is_err());
        assert!(build(|b| b.max_audiences(0)).is_err());
        let err = TokenSigner::builder(key("a-1"), "").build().expect_err("issuer");
        assert_eq!(err, ConfigError::EmptyValue("issuer"));
    }

    #[test]
    fn debug_shows_the_configuration_but_no_token() {
        let signer = TokenSigner::builder(key("a-1"), "service-a")
            .claim("scope", "secret-scope-value")
            .build()
            .expect("signer");
        let token = signer.token("service-b").expect("token");
        let debug = format!("{signer:?}");
        assert!(debug.contains("a-1") && debug.contains("service-a"), "{debug}");
        assert!(debug.contains("scope"), "{debug}");
        assert!(!debug.contains(&token), "{debug}");
        assert!(!debug.contains("secret-scope-value"), "{debug}");
        let debug = format!(
            "{:?}",
            TokenSigner::builder(key("a-1"), "service-a").claim("k", json!("v"))
        );
        assert!(debug.contains("TokenSignerBuilder"), "{debug}");
    }

    #[test]
    fn the_signer_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<TokenSigner>();
    }
}
