//! `Verifier`: header -> key selection -> signature -> claims. Synchronous and pure.
//!
//! The token is split and each segment base64-decoded once; the header is read into
//! borrowed fields; the registered claims are checked from the payload's raw JSON before
//! the claims are deserialized, once, into the user's type.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::alg::AlgorithmSet;
use crate::keys::KeySet;
use crate::policy::{Policy, ScopeRule};
use crate::{Algorithm, AuthError};

/// Default clock skew allowed on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Largest accepted leeway: beyond it, `exp` stops meaning much.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);
/// Default maximum token length in bytes; a bearer token beyond this is refused unread.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Latest accepted NumericDate: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// A source of the current time, for tests and simulations.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Checks tokens: algorithm allow-list, key selection, signature and claims.
///
/// Cheap to clone (the configuration is shared). Build it with [`Verifier::builder`].
///
/// ```
/// use tower_jwt_auth::{Algorithm, Verifier};
/// let verifier = Verifier::builder()
///     .issuer("https://issuer.example")
///     .audience("api")
///     .algorithms([Algorithm::RS256, Algorithm::ES256])
///     .build()
///     .unwrap();
/// # let _ = verifier;
/// ```
#[derive(Clone)]
pub struct Verifier {
    config: Arc<Config>,
}

struct Config {
    algorithms: AlgorithmSet,
    issuers: Vec<Arc<str>>,
    audiences: Vec<Box<str>>,
    leeway: f64,
    max_token_len: usize,
    clock: Option<Clock>,
    policy: Policy,
    try_keys_without_kid: bool,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("Verifier")
            .field("algorithms", &c.algorithms)
            .field("issuers", &c.issuers)
            .field("audiences", &c.audiences)
            .field("leeway", &c.leeway)
            .field("max_token_len", &c.max_token_len)
            .field("policy", &c.policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Verifier`]; every setting has a secure default.
#[derive(Clone)]
#[must_use]
pub struct VerifierBuilder {
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    max_token_len: usize,
    clock: Option<Clock>,
    policy: Policy,
    try_keys_without_kid: bool,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("max_token_len", &self.max_token_len)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The algorithm allow-list is empty.
    NoAlgorithms,
    /// An issuer or audience is the empty string.
    EmptyValue(&'static str),
    /// A URL is unusable (not https, not parseable, ...).
    Url(String),
    /// Another setting is out of range.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAlgorithms => f.write_str("the algorithm allow-list is empty"),
            Self::EmptyValue(what) => write!(f, "{what} must not be empty"),
            Self::Url(why) => write!(f, "unusable URL: {why}"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Default for VerifierBuilder {
    fn default() -> Self {
        Self {
            algorithms: Algorithm::ASYMMETRIC.to_vec(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            clock: None,
            policy: Policy::default(),
            try_keys_without_kid: false,
        }
    }
}

impl VerifierBuilder {
    /// Accept tokens from this issuer; `iss` becomes required. Repeat for several.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accept tokens for this audience; `aud` becomes required. Repeat for several.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The algorithm allow-list. Default: every asymmetric algorithm
    /// ([`Algorithm::ASYMMETRIC`]); HMAC only when listed here.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 60 s, at most 1 hour.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Longest token accepted, in bytes. Default 8 KiB.
    pub fn max_token_len(mut self, len: usize) -> Self {
        self.max_token_len = len;
        self
    }

    /// Replaces the system clock, for tests and simulations.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// For tokens without `kid`: try each key that fits the algorithm (at most four)
    /// instead of refusing when several fit. Needed for providers that omit `kid` and
    /// publish the next key beside the current one; costs one signature check per key.
    pub fn try_keys_without_kid(mut self) -> Self {
        self.try_keys_without_kid = true;
        self
    }

    /// Accept only tokens whose header `typ` is this (repeat for several), e.g.
    /// `at+jwt` for RFC 9068 access tokens. Compared case-insensitively; the
    /// `application/` prefix may be left out.
    pub fn require_typ(mut self, typ: impl Into<String>) -> Self {
        self.policy.typ.require.push(typ.into().into());
        self
    }

    /// Refuse tokens whose `typ` is this, e.g. `at+jwt` where ID tokens are expected.
    pub fn reject_typ(mut self, typ: impl Into<String>) -> Self {
        self.policy.typ.reject.push(typ.into().into());
        self
    }

    /// Refuse tokens valid for longer than this: `exp - iat`, or `exp - now` without
    /// `iat`. Limits the damage of a leaked long-lived token.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.policy.max_lifetime = Some(max.as_secs_f64());
        self
    }

    /// Require this claim to be present (any value, `null` included).
    pub fn require_claim(mut self, name: impl Into<String>) -> Self {
        self.policy.required_claims.push(name.into().into());
        self
    }

    /// Require every one of these scopes (from `scope` or `scp`); a token without them
    /// gets 403 `insufficient_scope` naming the missing ones.
    ///
    /// ```
    /// let v = tower_jwt_auth::Verifier::builder().require_scopes(["orders:read"]).build().unwrap();
    /// # let _ = v;
    /// ```
    pub fn require_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        let scopes = scopes.into_iter().map(|s| s.into().into()).collect();
        self.policy.scopes.push(ScopeRule::AllOf(scopes));
        self
    }

    /// Require at least one of these scopes; 403 `insufficient_scope` otherwise.
    pub fn require_any_scope<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        let scopes = scopes.into_iter().map(|s| s.into().into()).collect();
        self.policy.scopes.push(ScopeRule::AnyOf(scopes));
        self
    }

    /// Checks the configuration and builds the verifier.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms);
        }
        if self.issuers.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyValue("issuer"));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyValue("audience"));
        }
        let empty_scope = self.policy.scopes.iter().any(|rule| match rule {
            ScopeRule::AllOf(s) | ScopeRule::AnyOf(s) => {
                s.is_empty() || s.iter().any(|s| s.is_empty() || s.contains(' '))
            }
        });
        if empty_scope {
            return Err(ConfigError::Invalid(
                "a scope requirement is empty or has a space in a scope".into(),
            ));
        }
        if self.policy.max_lifetime.is_some_and(|m| m <= 0.0) {
            return Err(ConfigError::Invalid("max_lifetime must be positive".into()));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::Invalid("leeway must be at most 1 hour".into()));
        }
        if self.max_token_len < 16 {
            return Err(ConfigError::Invalid("max_token_len is too small".into()));
        }
        crate::crypto::ensure_provider();
        Ok(Verifier {
            config: Arc::new(Config {
                algorithms: AlgorithmSet::of(self.algorithms),
                issuers: self.issuers.into_iter().map(Arc::from).collect(),
                audiences: self.audiences.into_iter().map(Into::into).collect(),
                leeway: self.leeway.as_secs_f64(),
                max_token_len: self.max_token_len,
                clock: self.clock,
                policy: self.policy,
                try_keys_without_kid: self.try_keys_without_kid,
            }),
        })
    }
}

/// What the middleware knows about a verified token, beside the claims.
///
/// Inserted into the request extensions next to the claims.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VerifiedToken {
    /// The `kid` of the key that verified the signature.
    pub kid: Option<Arc<str>>,
    /// The algorithm of the signature.
    pub alg: Algorithm,
    /// The issuer, when the token has one.
    pub iss: Option<Arc<str>>,
    /// The subject, when the token has one.
    pub sub: Option<String>,
    /// `exp`, in seconds since the epoch.
    pub exp: Option<f64>,
}

/// A verified token's claims and facts.
#[derive(Debug, Clone)]
pub struct Verified<C> {
    /// The claims, deserialized into the configured type.
    pub claims: C,
    /// Facts about the token (kid, alg, iss, sub, exp).
    pub token: VerifiedToken,
}

/// A token split into segments with its header read and checked against the allow-list.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Cow<'t, str>>,
    typ: Option<Cow<'t, str>>,
    x5t: Option<Cow<'t, str>>,
    x5t_s256: Option<Cow<'t, str>>,
    /// `header.payload`: the signed bytes.
    message: &'t str,
    payload: &'t str,
    signature: &'t str,
}

/// The JOSE header members we act on. `jku`, `x5u`, `jwk` and `x5c` are never used.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    x5t: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "x5t#S256")]
    x5t_s256: Option<Cow<'a, str>>,
    /// Present at all, whatever the value (`"crit": null` included).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    enc: bool,
}

/// The registered claims, kept raw so each gets a precise error. A member that is
/// present is `Some`, even when its value is `null` (which is then an invalid claim).
/// Reading it also refuses duplicate member names anywhere at the top level: two
/// `scope` or `roles` members could be read differently by two parsers.
#[derive(Default)]
struct Registered<'a> {
    exp: Option<&'a RawValue>,
    nbf: Option<&'a RawValue>,
    iat: Option<&'a RawValue>,
    iss: Option<&'a RawValue>,
    sub: Option<&'a RawValue>,
    aud: Option<&'a RawValue>,
    scope: Option<&'a RawValue>,
    scp: Option<&'a RawValue>,
    /// Every member name, for duplicate detection and required claims.
    names: Vec<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Registered<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RegisteredVisitor)
    }
}

struct RegisteredVisitor;

impl<'de> serde::de::Visitor<'de> for RegisteredVisitor {
    type Value = Registered<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with unique member names")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut reg = Registered {
            names: Vec::with_capacity(16),
            ..Registered::default()
        };
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            let slot = match name.as_ref() {
                "exp" => Some(&mut reg.exp),
                "nbf" => Some(&mut reg.nbf),
                "iat" => Some(&mut reg.iat),
                "iss" => Some(&mut reg.iss),
                "sub" => Some(&mut reg.sub),
                "aud" => Some(&mut reg.aud),
                "scope" => Some(&mut reg.scope),
                "scp" => Some(&mut reg.scp),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = Some(value);
            }
            reg.names.push(name);
        }
        // Sorting, not a scan per member: a payload of many members (read before the
        // signature when several issuers are configured) stays O(n log n).
        let mut sorted: Vec<&str> = reg.names.iter().map(|n| n.as_ref()).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(serde::de::Error::custom("duplicate member"));
        }
        Ok(reg)
    }
}

/// True for a member that is present, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// Reads a JSON object into `T`. serde's derived structs also accept a JSON array
/// (fields by position), but a JOSE header and a JWT claims set are objects only.
fn json_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl Verifier {
    /// A builder with the secure defaults.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// The configured maximum token length.
    pub fn max_token_len(&self) -> usize {
        self.config.max_token_len
    }

    /// Verifies a compact JWS against a key set and deserializes its claims.
    ///
    /// ```
    /// use tower_jwt_auth::{AuthError, KeySet, Verifier};
    /// let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
    /// let verifier = Verifier::builder().build().unwrap();
    /// // {"alg":"none"}
    /// let err = verifier.verify::<serde_json::Value>("eyJhbGciOiJub25lIn0.e30.sig", &keys).unwrap_err();
    /// assert_eq!(err, AuthError::AlgorithmNotAllowed);
    /// ```
    pub fn verify<C: DeserializeOwned>(&self, token: &str, keys: &KeySet) -> Result<Verified<C>, AuthError> {
        let parsed = self.parse(token)?;
        self.verify_parsed(&parsed, keys, Route::default())
    }

    /// Checks the signature only (key selection included), without claim validation.
    ///
    /// For JWS payloads that are not JWT claims (test vectors, signed documents).
    pub fn verify_signature(&self, token: &str, keys: &KeySet) -> Result<(), AuthError> {
        let parsed = self.parse(token)?;
        self.check_signature(&parsed, keys)?;
        // The signature covers the payload segment as sent, so a segment that is not
        // base64url can carry a valid signature: the JWS is still malformed (as in `verify`).
        decode_segment(parsed.payload, "payload").map(drop)
    }

    /// Splits the token and reads its header. No key is needed yet.
    pub(crate) fn parse<'t>(&self, token: &'t str) -> Result<Parsed<'t>, AuthError> {
        if token.len() > self.config.max_token_len {
            return Err(AuthError::TokenTooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three segments"));
        };
        match parts.count() {
            0 => {}
            2 => return Err(AuthError::Encrypted),
            _ => return Err(AuthError::Malformed("expected three segments")),
        }
        let message = &token[..header.len() + 1 + payload.len()];
        let header_json = decode_segment(header, "header")?;
        let h: Header<'_> =
            json_object(&header_json).ok_or(AuthError::Malformed("header is not a JOSE header"))?;
        if h.enc {
            return Err(AuthError::Encrypted);
        }
        let alg = h
            .alg
            .parse::<Algorithm>()
            .map_err(|_| AuthError::AlgorithmNotAllowed)?;
        if !self.config.algorithms.contains(alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if h.crit {
            return Err(AuthError::UnsupportedCritical);
        }
        // The header was decoded into a temporary buffer; keep only what outlives it.
        let own = |v: Option<Cow<'_, str>>| v.map(|s| Cow::Owned(s.into_owned()));
        Ok(Parsed {
            alg,
            kid: own(h.kid),
            typ: own(h.typ),
            x5t: own(h.x5t),
            x5t_s256: own(h.x5t_s256),
            message,
            payload,
            signature,
        })
    }

    /// Signature, then claims. `UnknownKeyId` tells the caller a key refresh may help.
    pub(crate) fn verify_parsed<C: DeserializeOwned>(
        &self,
        parsed: &Parsed<'_>,
        keys: &KeySet,
        route: Route<'_>,
    ) -> Result<Verified<C>, AuthError> {
        if route.algorithms.is_some_and(|algs| !algs.contains(parsed.alg)) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let kid = self.check_signature(parsed, keys)?;
        self.config.policy.typ.check(parsed.typ.as_deref())?;
        let payload = decode_segment(parsed.payload, "payload")?;
        let token = self.check_claims(&payload, parsed.alg, kid, route)?;
        let claims = serde_json::from_slice(&payload).map_err(|_| AuthError::ClaimsShape)?;
        Ok(Verified { claims, token })
    }

    /// The token's `iss`, read before the signature is checked, only to choose among
    /// configured issuers (whose keys then decide).
    pub(crate) fn unverified_issuer(&self, parsed: &Parsed<'_>) -> Result<Option<String>, AuthError> {
        let payload = decode_segment(parsed.payload, "payload")?;
        let reg = registered(&payload)?;
        reg.iss.map(|raw| string_claim(raw, "iss")).transpose()
    }

    fn check_signature(&self, parsed: &Parsed<'_>, keys: &KeySet) -> Result<Option<Arc<str>>, AuthError> {
        let candidates = keys.candidates(
            parsed.kid.as_deref(),
            parsed.alg,
            parsed.x5t_s256.as_deref(),
            parsed.x5t.as_deref(),
            self.config.try_keys_without_kid,
        )?;
        for key in candidates {
            let ok = jsonwebtoken::crypto::verify(
                parsed.signature,
                parsed.message.as_bytes(),
                &key.key,
                parsed.alg.to_jwt(),
            );
            if matches!(ok, Ok(true)) {
                return Ok(key.kid.clone());
            }
        }
        Err(AuthError::InvalidSignature)
    }

    /// Time, issuer and audience (401s) first, then the access policy (403 for scopes).
    fn check_claims(
        &self,
        payload: &[u8],
        alg: Algorithm,
        kid: Option<Arc<str>>,
        route: Route<'_>,
    ) -> Result<VerifiedToken, AuthError> {
        let reg = registered(payload)?;
        let (now, leeway) = (self.now(), self.config.leeway);
        let exp = numeric_date(reg.exp, "exp")?.ok_or(AuthError::MissingClaim("exp".into()))?;
        if now >= exp + leeway {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(reg.nbf, "nbf")?
            && now + leeway < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        let iat = numeric_date(reg.iat, "iat")?;
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(AuthError::IssuedInFuture);
        }
        let iss = self.check_issuer(reg.iss, route.issuer)?;
        self.check_audience(reg.aud, route.audiences.unwrap_or(&self.config.audiences))?;
        let sub = reg.sub.map(|raw| string_claim(raw, "sub")).transpose()?;
        let policy = &self.config.policy;
        policy.check_lifetime(exp, iat, now)?;
        policy.check_required(&reg.names)?;
        policy.check_scopes(reg.scope, reg.scp)?;
        Ok(VerifiedToken {
            kid,
            alg,
            iss,
            sub,
            exp: Some(exp),
        })
    }

    fn check_issuer(
        &self,
        raw: Option<&RawValue>,
        routed: Option<&Arc<str>>,
    ) -> Result<Option<Arc<str>>, AuthError> {
        let iss = raw.map(|raw| string_claim(raw, "iss")).transpose()?;
        let issuers = match routed {
            Some(one) => std::slice::from_ref(one),
            None => &self.config.issuers[..],
        };
        match iss {
            None if issuers.is_empty() => Ok(None),
            None => Err(AuthError::MissingClaim("iss".into())),
            Some(iss) if issuers.is_empty() => Ok(Some(Arc::from(iss))),
            Some(iss) => issuers
                .iter()
                .find(|known| ***known == *iss)
                .cloned()
                .map(Some)
                .ok_or(AuthError::WrongIssuer),
        }
    }

    fn check_audience(&self, raw: Option<&RawValue>, accepted: &[Box<str>]) -> Result<(), AuthError> {
        let aud = match raw {
            Some(raw) => Some(
                serde_json::from_str::<Audience<'_>>(raw.get())
                    .map_err(|_| AuthError::InvalidClaim("aud"))?,
            ),
            None => None,
        };
        if accepted.is_empty() {
            return Ok(());
        }
        let known = |a: &str| accepted.iter().any(|k| **k == *a);
        match aud {
            None => Err(AuthError::MissingClaim("aud".into())),
            Some(Audience::One(a)) if known(&a) => Ok(()),
            Some(Audience::Many(list)) if list.iter().any(|a| known(a)) => Ok(()),
            Some(_) => Err(AuthError::WrongAudience),
        }
    }

    fn now(&self) -> f64 {
        let now = self
            .config
            .clock
            .as_ref()
            .map_or_else(SystemTime::now, |clock| clock());
        now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }
}

/// What one configured issuer narrows: its own name, audiences and algorithms. The
/// default (all `None`) uses the verifier's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Route<'a> {
    pub(crate) issuer: Option<&'a Arc<str>>,
    pub(crate) audiences: Option<&'a [Box<str>]>,
    pub(crate) algorithms: Option<AlgorithmSet>,
}

fn registered(payload: &[u8]) -> Result<Registered<'_>, AuthError> {
    json_object(payload).ok_or(AuthError::Malformed(
        "claims are not a JSON object with unique members",
    ))
}

fn string_claim(raw: &RawValue, claim: &'static str) -> Result<String, AuthError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| AuthError::InvalidClaim(claim))
}

/// RFC 7519 NumericDate: any JSON number, integer or not, within [0, year 9999].
fn numeric_date(raw: Option<&RawValue>, claim: &'static str) -> Result<Option<f64>, AuthError> {
    let Some(raw) = raw else { return Ok(None) };
    let value = serde_json::from_str::<f64>(raw.get()).map_err(|_| AuthError::InvalidClaim(claim))?;
    if value.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&value) {
        Ok(Some(value))
    } else {
        Err(AuthError::InvalidClaim(claim))
    }
}

fn decode_segment(segment: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| {
        AuthError::Malformed(match what {
            "header" => "header is not base64url",
            _ => "payload is not base64url",
        })
    })
}
