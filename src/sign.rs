//! `SigningKey`: a service's own key pair, to mint tokens and publish the public half.
//!
//! Keys are PKCS#8 private keys, kept in PEM files. The public half is published as a
//! JWK (`kty`, `kid`, `alg`, `use: "sig"` and `n`/`e` or `crv`/`x`/`y`), which
//! [`KeySet::from_jwks`](crate::KeySet::from_jwks) reads back, so a token signed here
//! verifies with [`Verifier`](crate::Verifier) at the other end.
//!
//! ```
//! use tower_jwt_auth::{Algorithm, KeySet, SigningKey, Verifier};
//!
//! let key = SigningKey::generate(Algorithm::ES256, "orders-2025")?;
//! let jwks = SigningKey::jwks(&[&key]); // publish this
//! let keys = KeySet::from_jwks(jwks.to_string().as_bytes())?;
//!
//! let exp = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)?
//!     .as_secs()
//!     + 300;
//! let token = key.sign(&serde_json::json!({ "sub": "orders", "exp": exp }))?;
//! let verified = Verifier::builder().build()?.verify::<serde_json::Value>(&token, &keys)?;
//! assert_eq!(verified.claims["sub"], "orders");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use serde::Serialize;

use crate::Algorithm;

/// Smallest RSA modulus accepted, as for verification keys (see `keys.rs`).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, as for verification keys (see `keys.rs`).
const MAX_RSA_BITS: usize = 8192;
/// The PEM label of an unencrypted PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Why a key could not be created or loaded, or a token not signed.
///
/// ```
/// use tower_jwt_auth::{Algorithm, SigningKey, SignError};
/// let err = SigningKey::generate(Algorithm::HS256, "k1").unwrap_err();
/// assert_eq!(err, SignError::HmacAlgorithm(Algorithm::HS256));
/// assert!(err.to_string().contains("HMAC"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// An HMAC algorithm was asked for; a signing key is an asymmetric key pair.
    HmacAlgorithm(Algorithm),
    /// The key id is the empty string.
    EmptyKid,
    /// Generating keys needs the `aws-lc-rs` feature.
    GenerationUnavailable,
    /// The crypto backend failed to generate a key.
    Generation(String),
    /// The input is not an unencrypted PKCS#8 PEM private key (`BEGIN PRIVATE KEY`).
    NotPkcs8(String),
    /// The key is of another type (or curve) than the algorithm needs.
    KeyMismatch {
        /// The algorithm asked for.
        alg: Algorithm,
        /// The key type the algorithm needs.
        expected: &'static str,
        /// The key type found.
        found: &'static str,
    },
    /// The key has the right type but cannot be used (corrupt, too small, ...).
    InvalidKey(String),
    /// The claims do not serialize to a JSON object.
    Claims(String),
    /// The crypto backend failed to sign.
    Signing(String),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HmacAlgorithm(alg) => write!(
                f,
                "{alg} is an HMAC algorithm; a signing key must be an asymmetric key pair \
                 (RS*, PS*, ES256, ES384 or EdDSA)"
            ),
            Self::EmptyKid => f.write_str("the key id (kid) must not be empty"),
            Self::GenerationUnavailable => f.write_str(
                "generating keys needs the `aws-lc-rs` feature; load a PEM key with SigningKey::from_pem",
            ),
            Self::Generation(why) => write!(f, "key generation failed: {why}"),
            Self::NotPkcs8(why) => write!(f, "not a PKCS#8 PEM private key: {why}"),
            Self::KeyMismatch { alg, expected, found } => {
                write!(f, "{alg} needs {expected}, but the key is {found}")
            }
            Self::InvalidKey(why) => write!(f, "unusable private key: {why}"),
            Self::Claims(why) => write!(f, "claims cannot be signed: {why}"),
            Self::Signing(why) => write!(f, "signing failed: {why}"),
        }
    }
}

impl std::error::Error for SignError {}

/// The key types a signing key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    const ALL: [KeyType; 4] = [Self::Rsa, Self::P256, Self::P384, Self::Ed25519];

    fn of(alg: Algorithm) -> Result<Self, SignError> {
        use Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Ok(Self::Rsa),
            ES256 => Ok(Self::P256),
            ES384 => Ok(Self::P384),
            EdDSA => Ok(Self::Ed25519),
            HS256 | HS384 | HS512 => Err(SignError::HmacAlgorithm(alg)),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA key",
            Self::P256 => "a P-256 EC key",
            Self::P384 => "a P-384 EC key",
            Self::Ed25519 => "an Ed25519 key",
        }
    }

    /// An algorithm of this key type, to have jsonwebtoken parse the key.
    fn probe_alg(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rsa => jsonwebtoken::Algorithm::RS256,
            Self::P256 => jsonwebtoken::Algorithm::ES256,
            Self::P384 => jsonwebtoken::Algorithm::ES384,
            Self::Ed25519 => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// Parses a PKCS#8 PEM key as this type; the public JWK proves the key usable.
    fn load(self, pem: &[u8]) -> Result<(EncodingKey, Jwk), String> {
        let key = match self {
            Self::Rsa => EncodingKey::from_rsa_pem(pem),
            Self::P256 | Self::P384 => EncodingKey::from_ec_pem(pem),
            Self::Ed25519 => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|e| e.to_string())?;
        let jwk = Jwk::from_encoding_key(&key, self.probe_alg()).map_err(|e| e.to_string())?;
        Ok((key, jwk))
    }
}

/// PKCS#8 DER of a private key, overwritten when dropped (best effort: copies made
/// by `to_pem` callers are theirs to handle).
struct Pkcs8(Vec<u8>);

impl Drop for Pkcs8 {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

struct Inner {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    pkcs8: Pkcs8,
    /// The public JWK, computed once.
    jwk: serde_json::Value,
}

/// A private signing key with its `kid` and algorithm: mints tokens, publishes its
/// public JWK.
///
/// Cheap to clone (the key is shared). `Debug` shows the kid and algorithm only, never
/// key material.
///
/// ```
/// use tower_jwt_auth::{Algorithm, SigningKey};
/// let key = SigningKey::generate(Algorithm::EdDSA, "k1")?;
/// assert_eq!(format!("{key:?}"), r#"SigningKey { kid: "k1", alg: EdDSA, .. }"#);
/// # Ok::<(), tower_jwt_auth::SignError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<Inner>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.inner.kid)
            .field("alg", &self.inner.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key pair for `alg`: RSA 2048 bits for RS256/384/512 and PS256/384/512,
    /// P-256 for ES256, P-384 for ES384, Ed25519 for EdDSA.
    ///
    /// HMAC algorithms are refused (a shared secret is not a key pair), and so is an
    /// empty `kid`. Needs the `aws-lc-rs` feature; without it this returns
    /// [`SignError::GenerationUnavailable`].
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// let key = SigningKey::generate(Algorithm::ES384, "k1")?;
    /// assert_eq!(key.public_jwk()["crv"], "P-384");
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Result<SigningKey, SignError> {
        crate::crypto::ensure_provider();
        let kid = check_kid(kid.into())?;
        let key_type = KeyType::of(alg)?;
        let pkcs8 = generate_pkcs8(key_type)?;
        Self::build(pkcs8, alg, key_type, kid)
    }

    /// Loads an unencrypted PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), as
    /// written by [`to_pem`](Self::to_pem) or `openssl genpkey`.
    ///
    /// The key must fit `alg`: an RSA key of 2048 to 8192 bits for RS*/PS*, P-256 for
    /// ES256, P-384 for ES384, Ed25519 for EdDSA. PKCS#1 (`RSA PRIVATE KEY`), SEC1
    /// (`EC PRIVATE KEY`) and encrypted keys are refused with a message that says so.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, SignError};
    /// let pem = SigningKey::generate(Algorithm::ES256, "k1")?.to_pem();
    /// let key = SigningKey::from_pem(pem.as_bytes(), Algorithm::ES256, "k1")?;
    /// assert_eq!(key.algorithm(), Algorithm::ES256);
    ///
    /// let err = SigningKey::from_pem(pem.as_bytes(), Algorithm::RS256, "k1").unwrap_err();
    /// assert!(matches!(err, SignError::KeyMismatch { .. }), "{err}");
    /// # Ok::<(), SignError>(())
    /// ```
    pub fn from_pem(pem: &[u8], alg: Algorithm, kid: impl Into<String>) -> Result<SigningKey, SignError> {
        crate::crypto::ensure_provider();
        let kid = check_kid(kid.into())?;
        let key_type = KeyType::of(alg)?;
        let block = pem::parse(pem).map_err(|e| SignError::NotPkcs8(e.to_string()))?;
        match block.tag() {
            PKCS8_LABEL => {}
            "ENCRYPTED PRIVATE KEY" => {
                return Err(SignError::NotPkcs8("encrypted keys are not supported".into()));
            }
            label @ ("RSA PRIVATE KEY" | "EC PRIVATE KEY") => {
                return Err(SignError::NotPkcs8(format!(
                    "found {label:?}; convert it with `openssl pkcs8 -topk8 -nocrypt`"
                )));
            }
            label => {
                return Err(SignError::NotPkcs8(format!("found a {label:?} PEM block")));
            }
        }
        Self::build(Pkcs8(block.into_contents()), alg, key_type, kid)
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, LF line endings).
    ///
    /// This is secret: write it to a file only the service can read.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// let pem = SigningKey::generate(Algorithm::EdDSA, "k1")?.to_pem();
    /// assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn to_pem(&self) -> String {
        let block = pem::Pem::new(PKCS8_LABEL, self.inner.pkcs8.0.as_slice());
        pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// The key id, put in every token's header and in the public JWK.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// assert_eq!(SigningKey::generate(Algorithm::EdDSA, "k1")?.kid(), "k1");
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The algorithm every token is signed with.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "k1")?;
    /// assert_eq!(key.algorithm(), Algorithm::EdDSA);
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The public key as a JWK: `kty`, `kid`, `alg`, `use: "sig"` and `n`/`e` (RSA),
    /// `crv`/`x`/`y` (EC) or `crv: "Ed25519"`/`x` (OKP). Never private members.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// let jwk = SigningKey::generate(Algorithm::ES256, "k1")?.public_jwk();
    /// assert_eq!(jwk["kty"], "EC");
    /// assert_eq!(jwk["crv"], "P-256");
    /// assert_eq!(jwk["kid"], "k1");
    /// assert_eq!(jwk["alg"], "ES256");
    /// assert_eq!(jwk["use"], "sig");
    /// assert!(jwk.get("d").is_none());
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn public_jwk(&self) -> serde_json::Value {
        self.inner.jwk.clone()
    }

    /// A JWKS document (`{"keys": [...]}`) of the keys' public JWKs, to publish.
    ///
    /// List the next key beside the current one before switching, so verifiers
    /// already know it when the first token signed with it arrives.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, KeySet, SigningKey};
    /// let current = SigningKey::generate(Algorithm::EdDSA, "2025-01")?;
    /// let next = SigningKey::generate(Algorithm::EdDSA, "2025-02")?;
    /// let jwks = SigningKey::jwks(&[&current, &next]);
    /// let set = KeySet::from_jwks(jwks.to_string().as_bytes())?;
    /// assert_eq!(set.kids().collect::<Vec<_>>(), ["2025-01", "2025-02"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn jwks(keys: &[&SigningKey]) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = keys.iter().map(|k| k.public_jwk()).collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `claims` as a compact JWS with the header `{"alg", "kid", "typ": "JWT"}`.
    ///
    /// The claims must serialize to a JSON object. Nothing is added to them: set
    /// `exp` (and `iss`, `aud`, ...) yourself.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey, SignError};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "k1")?;
    /// let token = key.sign(&serde_json::json!({ "sub": "alice", "exp": 4102444800u64 }))?;
    /// assert_eq!(token.split('.').count(), 3);
    /// assert!(matches!(key.sign(&[1, 2, 3]), Err(SignError::Claims(_))));
    /// # Ok::<(), SignError>(())
    /// ```
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        let claims = serde_json::to_value(claims).map_err(|e| SignError::Claims(e.to_string()))?;
        if !claims.is_object() {
            return Err(SignError::Claims("the claims must be a JSON object".into()));
        }
        let mut header = jsonwebtoken::Header::new(self.inner.alg.to_jwt());
        header.kid = Some(self.inner.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.inner.key).map_err(|e| SignError::Signing(e.to_string()))
    }

    /// Parses the PKCS#8 DER as `alg`'s key type and derives the public JWK.
    fn build(pkcs8: Pkcs8, alg: Algorithm, key_type: KeyType, kid: String) -> Result<SigningKey, SignError> {
        let pkcs8 = normalize(pkcs8, key_type);
        let pem = pem::encode(&pem::Pem::new(PKCS8_LABEL, pkcs8.0.as_slice()));
        let (key, mut jwk) = key_type.load(pem.as_bytes()).map_err(|why| {
            // Name the key type when the key is simply of another one.
            match KeyType::ALL
                .into_iter()
                .find(|t| *t != key_type && t.load(pem.as_bytes()).is_ok())
            {
                Some(found) => SignError::KeyMismatch {
                    alg,
                    expected: key_type.describe(),
                    found: found.describe(),
                },
                None => SignError::InvalidKey(format!("{why} (expected {} for {alg})", key_type.describe())),
            }
        })?;
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let n = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|e| SignError::InvalidKey(format!("RSA modulus: {e}")))?;
            let bits = n
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| (n.len() - i) * 8 - n[i].leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(SignError::InvalidKey(format!(
                    "RSA modulus of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
                )));
            }
        }
        jwk.common.key_id = Some(kid.clone());
        jwk.common.key_algorithm = Some(alg.to_jwt().into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwk = serde_json::to_value(&jwk).map_err(|e| SignError::InvalidKey(e.to_string()))?;
        Ok(SigningKey {
            inner: Arc::new(Inner {
                kid,
                alg,
                key,
                pkcs8,
                jwk,
            }),
        })
    }
}

fn check_kid(kid: String) -> Result<String, SignError> {
    if kid.is_empty() {
        Err(SignError::EmptyKid)
    } else {
        Ok(kid)
    }
}

/// Rewrites an Ed25519 PKCS#8 v2 key (with the public key, as ring and aws-lc-rs write
/// by default) as v1 (as OpenSSL writes), the only form jsonwebtoken reads.
#[cfg(feature = "aws-lc-rs")]
fn normalize(pkcs8: Pkcs8, key_type: KeyType) -> Pkcs8 {
    use aws_lc_rs::signature::Ed25519KeyPair;
    if key_type != KeyType::Ed25519 {
        return pkcs8;
    }
    match Ed25519KeyPair::from_pkcs8(&pkcs8.0)
        .ok()
        .and_then(|k| k.to_pkcs8v1().ok())
    {
        Some(v1) => Pkcs8(v1.as_ref().to_vec()),
        // Not an Ed25519 key: loading it reports why.
        None => pkcs8,
    }
}

#[cfg(not(feature = "aws-lc-rs"))]
fn normalize(pkcs8: Pkcs8, _key_type: KeyType) -> Pkcs8 {
    pkcs8
}

#[cfg(feature = "aws-lc-rs")]
fn generate_pkcs8(key_type: KeyType) -> Result<Pkcs8, SignError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    };
    let failed = |e: aws_lc_rs::error::Unspecified| SignError::Generation(e.to_string());
    let rng = SystemRandom::new();
    let der = match key_type {
        KeyType::Rsa => RsaKeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        KeyType::P256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        KeyType::P384 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        KeyType::Ed25519 => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(failed)?
            .as_ref()
            .to_vec(),
    };
    Ok(Pkcs8(der))
}

#[cfg(not(feature = "aws-lc-rs"))]
fn generate_pkcs8(_key_type: KeyType) -> Result<Pkcs8, SignError> {
    Err(SignError::GenerationUnavailable)
}

// Tests that generate keys need aws-lc-rs (the tested backend); those on the PyJWT
// fixture keys run with either backend.
#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::{Value, json};

    use super::*;
    use crate::{KeySet, Verifier};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pyjwt");

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    #[cfg(feature = "aws-lc-rs")]
    fn key_set(keys: &[&SigningKey]) -> KeySet {
        KeySet::from_jwks(SigningKey::jwks(keys).to_string().as_bytes()).expect("key set")
    }

    fn claims() -> Value {
        json!({ "sub": "alice", "iat": now(), "exp": now() + 300 })
    }

    fn fixture_pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}.pem")).expect("pem fixture")
    }

    fn fixture_jwks() -> Value {
        let text = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).expect("jwks fixture");
        serde_json::from_str(&text).expect("json")
    }

    /// Fixture key `name` (e.g. "es256") under its fixture kid `py-<name>`, with its
    /// fixture JWK.
    fn fixture_key(name: &str) -> (SigningKey, Value) {
        let kid = format!("py-{name}");
        let jwk = fixture_jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .cloned()
            .expect("fixture jwk");
        let alg: Algorithm = jwk["alg"].as_str().expect("alg").parse().expect("alg name");
        let key = SigningKey::from_pem(&fixture_pem(name), alg, kid).expect("from_pem");
        (key, jwk)
    }

    const FIXTURE_NAMES: [&str; 6] = ["rs256", "rs384", "ps256", "es256", "es384", "eddsa"];

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn tokens_of_every_asymmetric_algorithm_verify_against_the_published_jwks() {
        for alg in Algorithm::ASYMMETRIC {
            let key = SigningKey::generate(alg, "k1").expect("generate");
            let keys = key_set(&[&key]);
            assert_eq!(keys.kids().collect::<Vec<_>>(), ["k1"], "{alg}");
            let token = key.sign(&claims()).expect("sign");
            let verified = Verifier::builder()
                .build()
                .expect("verifier")
                .verify::<Value>(&token, &keys)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(verified.claims["sub"], "alice");
            assert_eq!(verified.token.alg, alg);
            assert_eq!(verified.token.kid.as_deref(), Some("k1"));
        }
    }

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn generated_keys_have_the_documented_type() {
        let expect = [
            (Algorithm::RS256, "RSA", None),
            (Algorithm::PS512, "RSA", None),
            (Algorithm::ES256, "EC", Some("P-256")),
            (Algorithm::ES384, "EC", Some("P-384")),
            (Algorithm::EdDSA, "OKP", Some("Ed25519")),
        ];
        for (alg, kty, crv) in expect {
            let jwk = SigningKey::generate(alg, "k").expect("generate").public_jwk();
            assert_eq!(jwk["kty"], kty, "{alg}");
            assert_eq!(jwk.get("crv").and_then(Value::as_str), crv, "{alg}");
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], "k");
        }
        let rsa = SigningKey::generate(Algorithm::RS256, "k")
            .expect("generate")
            .public_jwk();
        let n = URL_SAFE_NO_PAD
            .decode(rsa["n"].as_str().expect("n"))
            .expect("base64url");
        assert_eq!(n.len(), 256, "RSA 2048");
    }

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn the_header_names_alg_kid_and_typ() {
        let token = SigningKey::generate(Algorithm::ES256, "k9")
            .expect("generate")
            .sign(&claims())
            .expect("sign");
        let header = token.split('.').next().expect("header");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json");
        assert_eq!(header, json!({ "alg": "ES256", "kid": "k9", "typ": "JWT" }));
    }

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn a_key_survives_a_pem_round_trip() {
        for alg in [
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let key = SigningKey::generate(alg, "k1").expect("generate");
            let pem = key.to_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
            let again = SigningKey::from_pem(pem.as_bytes(), alg, "k1").expect("from_pem");
            assert_eq!(again.public_jwk(), key.public_jwk(), "{alg}");
            assert_eq!(again.to_pem(), pem);
            let token = again.sign(&claims()).expect("sign");
            let keys = key_set(&[&key]);
            assert!(
                Verifier::builder()
                    .build()
                    .expect("verifier")
                    .verify::<Value>(&token, &keys)
                    .is_ok()
            );
        }
    }

    #[test]
    fn pyjwt_fixture_keys_load_with_the_same_public_jwk() {
        for name in FIXTURE_NAMES {
            let (key, want) = fixture_key(name);
            assert_eq!(key.public_jwk(), want, "{name}");
        }
    }

    #[test]
    fn tokens_signed_with_fixture_keys_verify_against_the_pyjwt_jwks() {
        let keys = KeySet::from_jwks(fixture_jwks().to_string().as_bytes()).expect("key set");
        let verifier = Verifier::builder().build().expect("verifier");
        for name in FIXTURE_NAMES {
            let (key, _) = fixture_key(name);
            let token = key.sign(&claims()).expect("sign");
            let verified = verifier
                .verify::<Value>(&token, &keys)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(verified.token.kid.as_deref(), Some(key.kid()));
            assert_eq!(verified.token.alg, key.algorithm());
        }
    }

    #[test]
    fn a_key_of_another_type_or_curve_is_refused_with_both_named() {
        let cases = [
            ("es256", Algorithm::RS256),
            ("es256", Algorithm::ES384),
            ("es384", Algorithm::ES256),
            ("rs256", Algorithm::EdDSA),
            ("eddsa", Algorithm::PS256),
            ("rs256", Algorithm::ES256),
        ];
        for (name, alg) in cases {
            let err = SigningKey::from_pem(&fixture_pem(name), alg, "k").expect_err(name);
            assert!(
                matches!(err, SignError::KeyMismatch { alg: a, .. } if a == alg),
                "{name} as {alg}: {err}"
            );
        }
        let err = SigningKey::from_pem(&fixture_pem("es384"), Algorithm::ES256, "k").expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "ES256 needs a P-256 EC key, but the key is a P-384 EC key"
        );
    }

    #[test]
    fn hmac_algorithms_and_empty_kids_are_refused() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(
                SigningKey::generate(alg, "k").expect_err("hmac"),
                SignError::HmacAlgorithm(alg)
            );
            assert_eq!(
                SigningKey::from_pem(&fixture_pem("es256"), alg, "k").expect_err("hmac"),
                SignError::HmacAlgorithm(alg)
            );
        }
        assert_eq!(
            SigningKey::generate(Algorithm::ES256, "").expect_err("kid"),
            SignError::EmptyKid
        );
    }

    #[test]
    fn pem_that_is_not_an_unencrypted_pkcs8_private_key_is_refused() {
        let public = pem::encode(&pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        let pkcs1 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", vec![1, 2, 3]));
        let encrypted = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]));
        for input in ["not pem", public.as_str(), pkcs1.as_str(), encrypted.as_str()] {
            let err = SigningKey::from_pem(input.as_bytes(), Algorithm::RS256, "k").expect_err(input);
            assert!(matches!(err, SignError::NotPkcs8(_)), "{input}: {err}");
        }
        let garbage = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        let err = SigningKey::from_pem(garbage.as_bytes(), Algorithm::ES256, "k").expect_err("garbage");
        assert!(matches!(err, SignError::InvalidKey(_)), "{err}");
    }

    /// A throwaway 1024-bit RSA key (`openssl genpkey`), test-only.
    const WEAK_RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBANHWZ9vAD6zCE+dl
4VGmvXwzJ1rowTgEyg8R/foPzOKrWovefwSKHJHrvrSp74kjHIyyjMqNknrdYuQa
i4zUrZGeHJceXBL5UrrFrg5iz0hJL6zQ9vRqdmifaLv4bhuzyefFOPU9C97uXvON
XrwBjuBj/Urckzq6hqOQK42Lt3GBAgMBAAECgYA9fn31UnXFhSLcH2lGynyhV0Rj
Se7GAfFNNVKe496BVwI0F0JWDDuPL+01eM+v+tA1E2ZbPd39j7+ZZYYcAX/Tswwu
dnhILGBAzw7yncgeDH1T6kVMByvT4P4KZuV9HdxRtGwCoaBmPTiVopbbYjLLBUP2
T7hTlVg1wBHowG5kIQJBAOsUNbfCfnQO81UEdYKFBbJnQ05IjrmQ1/yLtTZ9gmK/
WBd7oAkZ/w60El5dsKhhzhmXJFGeCPtITS4ZdOZe9lUCQQDkgx854kunkX+9A+Su
xpjLQTjq7QOAilpSfVS/VCroCqWioHl2jN4sMU5jHVRFf/Zuj7CcTcoM7bwUtnXr
OoJ9AkEAts1xdGNfWDrkCEG+a2+r3W6ljTOpIS48dxvhH+17vfRTuXceHNXFXJa1
DgLHRDlCPu4khP9itp0jv2x2VkqUPQJAFXQ+FUgqxDPD43IfIU2iAMtB1cSk5IeY
zU/ZChGT6a8+N9OLM9cr8Mg8TM/vHotSDrVM5o/jHW2gj+1Fiu02XQJBANyKAwN1
+q03pr8aH2dDhv373wIdGJHiZ3B0oiTOs/KyWV3XQOXRvcOCfCNpCc8OhfKRLo+o
Nr5uxz8Q3pBl/lg=
-----END PRIVATE KEY-----
";

    #[test]
    fn rsa_keys_below_2048_bits_are_refused() {
        let err = SigningKey::from_pem(WEAK_RSA_PEM.as_bytes(), Algorithm::RS256, "k").expect_err("weak");
        assert!(matches!(err, SignError::InvalidKey(_)), "{err}");
    }

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn ed25519_pkcs8_v2_keys_are_accepted() {
        use aws_lc_rs::signature::Ed25519KeyPair;
        let v2 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).expect("generate");
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", v2.as_ref()));
        let key = SigningKey::from_pem(pem.as_bytes(), Algorithm::EdDSA, "k").expect("v2 key");
        let token = key.sign(&claims()).expect("sign");
        assert!(
            Verifier::builder()
                .build()
                .expect("verifier")
                .verify::<Value>(&token, &key_set(&[&key]))
                .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let (key, _) = fixture_key("es256");
        let debug = format!("{key:?}");
        assert_eq!(debug, r#"SigningKey { kid: "py-es256", alg: ES256, .. }"#);
        let pem = key.to_pem();
        let body = pem.lines().nth(1).expect("pem body");
        assert!(!debug.contains(body));
    }

    #[test]
    fn claims_must_be_a_json_object() {
        let (key, _) = fixture_key("eddsa");
        for claims in [json!("alice"), json!([1]), json!(null)] {
            assert!(matches!(key.sign(&claims), Err(SignError::Claims(_))), "{claims}");
        }
    }

    #[test]
    #[cfg(feature = "aws-lc-rs")]
    fn a_token_signed_by_another_key_with_the_same_kid_fails() {
        let published = SigningKey::generate(Algorithm::ES256, "k1").expect("generate");
        let impostor = SigningKey::generate(Algorithm::ES256, "k1").expect("generate");
        let token = impostor.sign(&claims()).expect("sign");
        let err = Verifier::builder()
            .build()
            .expect("verifier")
            .verify::<Value>(&token, &key_set(&[&published]))
            .expect_err("foreign key");
        assert_eq!(err, crate::AuthError::InvalidSignature);
    }

    #[test]
    #[cfg(not(feature = "aws-lc-rs"))]
    fn generate_says_it_needs_the_aws_lc_rs_feature() {
        let err = SigningKey::generate(Algorithm::ES256, "k").expect_err("no backend");
        assert_eq!(err, SignError::GenerationUnavailable);
        assert!(err.to_string().contains("aws-lc-rs"));
    }
}
