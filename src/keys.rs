//! `KeySet`: the verification keys of one JWKS document, parsed and checked once.
//!
//! Real providers publish encryption keys, keys of types we do not know, keys without
//! `kid`, and now and then a broken one beside the good ones. Each key is judged on its
//! own: an unusable key is skipped with a warning that names its kid and the reason, and
//! the rest of the set stays usable.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::{Algorithm, AuthError};

/// Smallest RSA modulus accepted (RFC 7518 section 3.3 and NIST: 2048 bits).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted: bigger keys only make verification slow.
const MAX_RSA_BITS: usize = 8192;
/// Most keys read from one document; real providers publish a handful.
const MAX_KEYS: usize = 1000;
/// How many keys sharing one kid (or fitting a kid-less token) are tried at most.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The key types (and curves) the crate can verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
            Self::Hmac => alg.is_symmetric(),
        }
    }
}

/// One usable verification key.
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<Arc<str>>,
    kind: KeyKind,
    /// The JWK's own `alg`: when present, the token's `alg` must equal it.
    alg: Option<Algorithm>,
    x5t: Option<Box<str>>,
    x5t_s256: Option<Box<str>>,
    /// Raw key bytes, kept to recognise exact duplicates at load time.
    material: Box<[u8]>,
    pub(crate) key: DecodingKey,
}

impl VerifyingKey {
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// Everything that makes two keys the same key.
    fn fingerprint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.material.len() + 64);
        out.extend_from_slice(self.kid.as_deref().map_or(&b"\xff"[..], str::as_bytes));
        out.push(0);
        out.extend_from_slice(format!("{:?}/{:?}", self.kind, self.alg).as_bytes());
        out.push(0);
        out.extend_from_slice(&self.material);
        out
    }

    fn matches_thumbprints(&self, x5t_s256: Option<&str>, x5t: Option<&str>) -> bool {
        let same = |ours: &Option<Box<str>>, theirs: Option<&str>| match theirs {
            Some(t) => ours.as_deref() == Some(t),
            None => true,
        };
        same(&self.x5t_s256, x5t_s256) && same(&self.x5t, x5t)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public key material is not secret, but it is noise in logs.
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A key that was left out of a [`KeySet`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedKey {
    /// The key's `kid`, if it had a readable one.
    pub kid: Option<String>,
    /// Why the key cannot be used for verification.
    pub reason: String,
}

/// Why a whole JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySetError {
    /// The document is not a JSON object with a `keys` array.
    NotAKeySet(String),
    /// A locally configured key could not be used.
    InvalidKey(String),
}

impl fmt::Display for KeySetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAKeySet(why) => write!(f, "not a JWK set: {why}"),
            Self::InvalidKey(why) => write!(f, "invalid key: {why}"),
        }
    }
}

impl std::error::Error for KeySetError {}

/// The usable verification keys of one JWKS document, indexed by `kid`.
///
/// Built once per fetch; lookups on the request path only read it.
///
/// ```
/// use tower_jwt_auth::KeySet;
/// let jwks = r#"{"keys": [
///   {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
///    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
///   {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}
/// ]}"#;
/// let set = KeySet::from_jwks(jwks.as_bytes()).unwrap();
/// assert_eq!(set.len(), 1);
/// assert_eq!(set.skipped()[0].kid.as_deref(), Some("enc"));
/// ```
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<Arc<str>, Vec<usize>>,
    /// Indices of every key, for tokens without `kid`.
    all: Vec<usize>,
    skipped: Vec<SkippedKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    keys: Vec<&'a RawValue>,
}

/// The members of a JWK that matter for verification. Unknown members are ignored;
/// a member given twice makes the key unreadable (and so skipped).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    x5t: Option<String>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    d: Option<IgnoredAny>,
    p: Option<IgnoredAny>,
    q: Option<IgnoredAny>,
    dp: Option<IgnoredAny>,
    dq: Option<IgnoredAny>,
    qi: Option<IgnoredAny>,
    oth: Option<IgnoredAny>,
    k: Option<IgnoredAny>,
}

impl RawJwk {
    fn has_private_members(&self) -> bool {
        [&self.d, &self.p, &self.q, &self.dp, &self.dq, &self.qi, &self.oth]
            .iter()
            .any(|m| m.is_some())
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Fails only when the document as a whole is not a key set; keys that cannot be
    /// used are skipped (see [`skipped`](Self::skipped)) and logged with `tracing`.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeySetError> {
        let doc: Document<'_> =
            serde_json::from_slice(json).map_err(|e| KeySetError::NotAKeySet(e.to_string()))?;
        let mut set = KeySet::default();
        let mut seen = HashSet::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            if i >= MAX_KEYS {
                set.skip(
                    None,
                    format!("the set has more than {MAX_KEYS} keys; the rest are ignored"),
                );
                break;
            }
            match serde_json::from_str::<RawJwk>(raw.get()) {
                Ok(jwk) => {
                    let kid = jwk.kid.clone();
                    match parse_jwk(jwk) {
                        Ok(key) => set.push(key, &mut seen),
                        Err(reason) => set.skip(kid, reason),
                    }
                }
                Err(e) => set.skip(kid_of(raw), format!("unreadable JWK: {e}")),
            }
        }
        Ok(set)
    }

    /// A set holding one HMAC secret, for tokens signed with a locally shared secret.
    ///
    /// HMAC keys are never taken from a remote key set; this is the only way to verify
    /// HS256/384/512, and the verifier must also allow the algorithm explicitly. The
    /// secret must be at least as long as the hash output (RFC 7518 section 3.2).
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, KeySet};
    /// let set = KeySet::from_hmac_secret(Some("local"), Algorithm::HS256, &[7u8; 32]).unwrap();
    /// assert_eq!(set.len(), 1);
    /// assert!(KeySet::from_hmac_secret(None, Algorithm::HS256, b"short").is_err());
    /// ```
    pub fn from_hmac_secret(kid: Option<&str>, alg: Algorithm, secret: &[u8]) -> Result<Self, KeySetError> {
        let min_len = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => return Err(KeySetError::InvalidKey(format!("{alg} is not an HMAC algorithm"))),
        };
        if secret.len() < min_len {
            return Err(KeySetError::InvalidKey(format!(
                "{alg} needs a secret of at least {min_len} bytes"
            )));
        }
        let mut set = KeySet::default();
        set.push(
            VerifyingKey {
                kid: kid.map(Arc::from),
                kind: KeyKind::Hmac,
                alg: Some(alg),
                x5t: None,
                x5t_s256: None,
                material: secret.into(),
                key: DecodingKey::from_secret(secret).map_err(|e| KeySetError::InvalidKey(e.to_string()))?,
            },
            &mut HashSet::new(),
        );
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The kids of the usable keys (keys without a kid are not listed).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// True when a usable key has this kid.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The keys that were left out, with the reason for each.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The keys that may verify a token with this `kid` and `alg`, at most
    /// [`MAX_CANDIDATES`] of them.
    ///
    /// Errors: no key with that kid (`UnknownKeyId`); keys, but none fits the algorithm
    /// (`NoMatchingKey`); no kid and several fitting keys (`AmbiguousKey`), unless
    /// `try_several` allows trying them.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&str>,
        alg: Algorithm,
        x5t_s256: Option<&'a str>,
        x5t: Option<&'a str>,
        try_several: bool,
    ) -> Result<impl Iterator<Item = &'a VerifyingKey> + 'a, AuthError> {
        let indices: &[usize] = match kid {
            Some(kid) => self.by_kid.get(kid).ok_or(AuthError::UnknownKeyId)?,
            None => &self.all,
        };
        let fitting = move || {
            indices
                .iter()
                .map(|i| &self.keys[*i])
                .filter(move |k| k.fits(alg) && k.matches_thumbprints(x5t_s256, x5t))
        };
        let mut probe = fitting();
        if probe.next().is_none() {
            return Err(AuthError::NoMatchingKey);
        }
        if kid.is_none() && !try_several && probe.next().is_some() {
            return Err(AuthError::AmbiguousKey);
        }
        Ok(fitting().take(MAX_CANDIDATES))
    }

    /// Adds a key unless an identical one is there (`seen` holds their fingerprints, so
    /// loading stays linear in the number of keys).
    fn push(&mut self, key: VerifyingKey, seen: &mut HashSet<Vec<u8>>) {
        if !seen.insert(key.fingerprint()) {
            tracing::debug!(kid = ?key.kid, "dropping exact duplicate JWK");
            return;
        }
        let index = self.keys.len();
        if let Some(kid) = &key.kid {
            self.by_kid.entry(kid.clone()).or_default().push(index);
        }
        self.all.push(index);
        self.keys.push(key);
    }

    fn skip(&mut self, kid: Option<String>, reason: String) {
        // A hostile set could carry huge kids and values: log and keep a bounded prefix.
        let kid = kid.map(|k| truncated(k, 128));
        let reason = truncated(reason, 200);
        tracing::warn!(kid = kid.as_deref().unwrap_or("<none>"), %reason, "skipping JWK");
        self.skipped.push(SkippedKey { kid, reason });
    }
}

fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The kid of a JWK that did not parse as a whole, for the warning.
fn kid_of(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct KidOnly {
        kid: Option<String>,
    }
    serde_json::from_str::<KidOnly>(raw.get())
        .ok()
        .and_then(|k| k.kid)
}

fn parse_jwk(jwk: RawJwk) -> Result<VerifyingKey, String> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!(
            "use is {:?}, not \"sig\"",
            jwk.use_.as_deref().unwrap_or_default()
        ));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("key_ops does not include \"verify\"".into());
    }
    if jwk.kty == "oct" {
        return Err("symmetric (oct) keys are never accepted from a key set".into());
    }
    if jwk.has_private_members() || jwk.k.is_some() {
        return Err("key carries private key material".into());
    }
    let alg = match jwk.alg.as_deref() {
        Some(name) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| format!("alg {name:?} is not a supported signature algorithm"))?,
        ),
        None => None,
    };
    let (kind, material, key) = match jwk.kty.as_str() {
        "RSA" => rsa_key(&jwk)?,
        "EC" => ec_key(&jwk)?,
        "OKP" => okp_key(&jwk)?,
        other => return Err(format!("unsupported key type {other:?}")),
    };
    if let Some(alg) = alg
        && !kind.fits(alg)
    {
        return Err(format!("alg {alg} does not fit a {kind:?} key"));
    }
    Ok(VerifyingKey {
        kid: jwk.kid.map(Arc::from),
        kind,
        alg,
        x5t: jwk.x5t.map(Into::into),
        x5t_s256: jwk.x5t_s256.map(Into::into),
        material: material.into(),
        key,
    })
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = value
        .as_deref()
        .ok_or_else(|| format!("missing member {name:?}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("member {name:?} is not base64url"))
}

type Parsed = (KeyKind, Vec<u8>, DecodingKey);

fn rsa_key(jwk: &RawJwk) -> Result<Parsed, String> {
    let n = member(&jwk.n, "n")?;
    let e = member(&jwk.e, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n
        .first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
        ));
    }
    let exponent_ok = e.len() <= 4
        && e.last().is_some_and(|low| low & 1 == 1)
        && e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)) >= 3;
    if !exponent_ok {
        return Err("RSA exponent must be odd, at least 3 and at most 32 bits".into());
    }
    let mut material = n.to_vec();
    material.extend_from_slice(e);
    Ok((KeyKind::Rsa, material, DecodingKey::from_rsa_raw_components(n, e)))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn ec_key(jwk: &RawJwk) -> Result<Parsed, String> {
    let (kind, len) = match jwk.crv.as_deref() {
        Some("P-256") => (KeyKind::P256, 32),
        Some("P-384") => (KeyKind::P384, 48),
        other => return Err(format!("unsupported EC curve {other:?}")),
    };
    let x = member(&jwk.x, "x")?;
    let y = member(&jwk.y, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!("EC coordinates must be {len} bytes each"));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    check_point(kind, &point)?;
    Ok((kind, point.clone(), DecodingKey::from_ec_der(&point)))
}

fn okp_key(jwk: &RawJwk) -> Result<Parsed, String> {
    if jwk.crv.as_deref() != Some("Ed25519") {
        return Err(format!("unsupported OKP curve {:?}", jwk.crv.as_deref()));
    }
    let x = member(&jwk.x, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 public key must be 32 bytes".into());
    }
    check_point(KeyKind::Ed25519, &x)?;
    Ok((KeyKind::Ed25519, x.clone(), DecodingKey::from_ed_der(&x)))
}

/// Rejects public keys that are not valid points on their curve, at load time rather
/// than as a failed signature on every request.
#[cfg(feature = "aws-lc-rs")]
fn check_point(kind: KeyKind, bytes: &[u8]) -> Result<(), String> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519};
    use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
    let alg: &'static dyn VerificationAlgorithm = match kind {
        KeyKind::P256 => &ECDSA_P256_SHA256_FIXED,
        KeyKind::P384 => &ECDSA_P384_SHA384_FIXED,
        KeyKind::Ed25519 => &ED25519,
        KeyKind::Rsa | KeyKind::Hmac => return Ok(()),
    };
    UnparsedPublicKey::new(alg, bytes)
        .parse()
        .map(drop)
        .map_err(|_| "public key is not a valid point on its curve".into())
}

#[cfg(not(feature = "aws-lc-rs"))]
fn check_point(_kind: KeyKind, _bytes: &[u8]) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn set(keys: &str) -> KeySet {
        KeySet::from_jwks(format!(r#"{{"keys": [{keys}]}}"#).as_bytes()).expect("key set")
    }

    fn ed(extra: &str) -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}"{extra}}}"#)
    }

    #[test]
    fn documents_that_are_not_key_sets_are_refused() {
        for doc in ["<html>", r#"{"keys": 5}"#, "[]", r#"{"other": []}"#] {
            assert!(KeySet::from_jwks(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    #[test]
    fn keys_without_kid_alg_or_use_are_usable() {
        let set = set(&ed(""));
        assert_eq!(set.len(), 1);
        assert!(set.candidates(None, Algorithm::EdDSA, None, None, false).is_ok());
    }

    #[test]
    fn encryption_oct_private_and_unknown_keys_are_skipped_not_fatal() {
        let set = set(&[
            ed(r#","kid":"good""#),
            ed(r#","kid":"enc","use":"enc""#),
            r#"{"kty":"oct","kid":"sym","k":"c2VjcmV0"}"#.into(),
            ed(r#","kid":"priv","d":"AAAA""#),
            r#"{"kty":"XYZ","kid":"odd"}"#.into(),
            ed(r#","kid":"ops","key_ops":["encrypt"]"#),
            r#"{"kty":"EC","kid":"bad","crv":"P-256","x":5}"#.into(),
        ]
        .join(","));
        assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
        let skipped: Vec<_> = set.skipped().iter().filter_map(|s| s.kid.as_deref()).collect();
        assert_eq!(skipped, ["enc", "sym", "priv", "odd", "ops", "bad"]);
    }

    #[test]
    fn exact_duplicates_collapse_into_one_key() {
        let key = ed(r#","kid":"a""#);
        assert_eq!(set(&format!("{key},{key}")).len(), 1);
    }

    #[test]
    fn jwk_alg_binds_the_token_alg() {
        let set = set(&ed(r#","kid":"a","alg":"EdDSA""#));
        assert!(
            set.candidates(Some("a"), Algorithm::EdDSA, None, None, false)
                .is_ok()
        );
        assert_eq!(
            set.candidates(Some("a"), Algorithm::ES256, None, None, false)
                .err(),
            Some(AuthError::NoMatchingKey)
        );
        assert_eq!(
            set.candidates(Some("b"), Algorithm::EdDSA, None, None, false)
                .err(),
            Some(AuthError::UnknownKeyId)
        );
    }

    #[test]
    fn kidless_tokens_with_several_fitting_keys_are_ambiguous() {
        let other = r#"{"kty":"OKP","crv":"Ed25519","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}"#;
        let set = set(&format!("{},{other}", ed("")));
        assert_eq!(
            set.candidates(None, Algorithm::EdDSA, None, None, false).err(),
            Some(AuthError::AmbiguousKey)
        );
    }

    #[test]
    fn kidless_tokens_may_try_several_fitting_keys_when_allowed() {
        let other = r#"{"kty":"OKP","crv":"Ed25519","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}"#;
        let set = set(&format!("{},{other}", ed("")));
        let tried = set
            .candidates(None, Algorithm::EdDSA, None, None, true)
            .expect("allowed");
        assert_eq!(tried.count(), 2);
    }

    #[test]
    fn weak_rsa_keys_are_skipped() {
        let set = set(r#"{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}"#);
        assert!(set.is_empty());
        assert!(set.skipped()[0].reason.contains("modulus"), "{:?}", set.skipped());
    }

    #[test]
    fn alg_that_does_not_fit_the_key_type_skips_the_key() {
        let set = set(&ed(r#","kid":"a","alg":"ES256""#));
        assert!(set.is_empty());
    }
}
