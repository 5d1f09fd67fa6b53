//! The Wycheproof JOSE vectors (C2SP/wycheproof, `shared/vectors/wycheproof/`, see its
//! README.md and json_web_crypto.md), every labelled result asserted.
//!
//! - `json_web_signature_test.json`: each JWS is checked at the signature level with
//!   [`Verifier::verify_signature`] (the payloads are not JWT claims). Published keys go
//!   through [`KeySet::from_jwks`]; `oct` (HS*) keys go through the locally configured
//!   secret path, [`KeySet::from_hmac_secret`], since HMAC keys are never taken from a
//!   JWKS (asserted too).
//! - `json_web_key_test.json`: key-set level cases. Our policy is per key: a bad key is
//!   skipped, the rest of the set stays usable, and a JWS that needs the skipped key
//!   fails. Where Wycheproof expects a whole set to be refused, we assert instead that
//!   the offending key is unusable (and which keys remain).
//!
//! Labels we knowingly depart from are listed, with the reason, in `JWS_EXCEPTIONS` and
//! `JWK_EXCEPTIONS`; each must be hit exactly once, and the counts are asserted.
//! Run with `--nocapture` to see the summary line of each file.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tower_jwt_auth::{Algorithm, AuthError, KeySet, Verifier};

/// The vectors live in the `shared/` checkout next to the repository (as in CI).
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/wycheproof");

/// What a test case came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The JWS verified.
    Verified,
    /// `verify_signature` refused it.
    Rejected(AuthError),
    /// The key could not even be configured (local HMAC path), so nothing verifies.
    KeyRefused(String),
}

impl Outcome {
    fn of(result: Result<(), AuthError>) -> Self {
        match result {
            Ok(()) => Self::Verified,
            Err(e) => Self::Rejected(e),
        }
    }
}

/// What we do instead of what the label says.
#[derive(Debug)]
enum Ours {
    Verifies,
    Rejects(AuthError),
}

impl Ours {
    fn matches(&self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (Self::Verifies, Outcome::Verified) => true,
            (Self::Rejects(want), Outcome::Rejected(got)) => want == got,
            _ => false,
        }
    }
}

/// A vector whose label does not hold for us, with the reason.
struct Exception {
    tc: u64,
    /// The label in the file; asserted, so a changed vector file is noticed.
    label: &'static str,
    ours: Ours,
    /// Printed when the exception no longer matches.
    why: &'static str,
}

/// `json_web_signature_test.json`: labels that do not hold for us.
const JWS_EXCEPTIONS: [Exception; 8] = [
    // RFC 7520 figure 20 is a PS384 signature, but Wycheproof added `"alg": "PS256"` to
    // the key when it made every RFC 7520 key carry an `alg` (json_web_crypto.md,
    // "Ignoring alg field in key"). A JWK's own `alg` binds the token's `alg` (RFC 7517
    // section 4.4; the same document says a key/alg mismatch must be refused), so no
    // key fits a PS384 token: the label contradicts Wycheproof's own rationale.
    Exception {
        tc: 346,
        label: "valid",
        ours: Ours::Rejects(AuthError::NoMatchingKey),
        why: "key alg PS256 binds; token is PS384 (vector artefact)",
    },
    Exception {
        tc: 350,
        label: "valid",
        ours: Ours::Rejects(AuthError::NoMatchingKey),
        why: "key alg PS256 binds; token is PS384 (vector artefact, key_ops variant)",
    },
    // ES512 (P-521) is not supported by jsonwebtoken, so not by us: the P-521 key is
    // skipped at load time (asserted per group) and the token's alg is refused cleanly.
    Exception {
        tc: 347,
        label: "valid",
        ours: Ours::Rejects(AuthError::AlgorithmNotAllowed),
        why: "ES512 unsupported; P-521 key skipped",
    },
    Exception {
        tc: 351,
        label: "valid",
        ours: Ours::Rejects(AuthError::AlgorithmNotAllowed),
        why: "ES512 unsupported; P-521 key skipped (key_ops variant)",
    },
    // Generator artefact: "invalidBase64Padding" and "invalidBase64PaddingInPayload" are
    // byte-identical to tc357 ("ValidMac"; asserted below), so they are valid tokens and
    // must verify. (The padding mutation was evidently lost when the vectors were made.)
    Exception {
        tc: 367,
        label: "invalid",
        ours: Ours::Verifies,
        why: "byte-identical to the valid tc357",
    },
    Exception {
        tc: 370,
        label: "invalid",
        ours: Ours::Verifies,
        why: "byte-identical to the valid tc357",
    },
    // Labelled valid, but as the comments say, a '?' is inserted into the header (372)
    // or the payload (373): not base64url, and RFC 7515 section 2 allows no characters
    // outside the alphabet. The MAC is tc357's, computed over the unmodified segments;
    // only a decoder that silently drops invalid characters would reconstruct that input
    // and accept. A strict verifier must reject both: 372 at the header, 373 at the
    // signature (checked before the payload is decoded, as in `verify`).
    Exception {
        tc: 372,
        label: "valid",
        ours: Ours::Rejects(AuthError::Malformed("header is not base64url")),
        why: "'?' inserted into the header segment",
    },
    Exception {
        tc: 373,
        label: "valid",
        ours: Ours::Rejects(AuthError::InvalidSignature),
        why: "'?' inserted into the payload segment",
    },
];

/// `json_web_key_test.json`: labels that do not hold for us.
const JWK_EXCEPTIONS: [Exception; 2] = [
    // Two HMAC keys in a JWKS, labelled valid. HMAC keys are never accepted from a key
    // set (both are skipped, asserted), and the local path holds exactly one secret, so
    // such a set cannot be configured at all. The signature itself is fine: the token
    // verifies with that key's secret through `from_hmac_secret` (asserted below).
    Exception {
        tc: 2,
        label: "valid",
        ours: Ours::Rejects(AuthError::UnknownKeyId),
        why: "HMAC keys are never taken from a JWKS",
    },
    // A ROCA-vulnerable RSA key (CVE-2017-15361; 2049 bits, carries the Infineon
    // fingerprint: n mod p lies in the subgroup generated by 65537 for every small
    // prime p up to 167). We check RSA size and exponent but have no ROCA fingerprint
    // test, so the key loads and the token verifies. A known gap, not a crypto failure;
    // adding the fingerprint check to the RSA key policy would turn this into a pass.
    Exception {
        tc: 7,
        label: "invalid",
        ours: Ours::Verifies,
        why: "no ROCA fingerprint check in the RSA key policy",
    },
];

#[derive(Default)]
struct Tally {
    executed: usize,
    as_labelled: usize,
    exceptions_hit: BTreeSet<u64>,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    /// Compares one outcome with the label, or with the exception entry for this tcId.
    fn judge(&mut self, tc: u64, label: &str, outcome: &Outcome, exceptions: &[Exception], context: &str) {
        self.executed += 1;
        if let Some(ex) = exceptions.iter().find(|e| e.tc == tc) {
            if ex.label != label {
                self.fail(format!(
                    "tc{tc} ({context}): exception expects label {:?}, file says {label:?}",
                    ex.label
                ));
            } else if !ex.ours.matches(outcome) {
                self.fail(format!(
                    "tc{tc} ({context}): exception ({}) expects {:?}, got {outcome:?}",
                    ex.why, ex.ours
                ));
            } else if !self.exceptions_hit.insert(tc) {
                self.fail(format!("tc{tc}: exception hit twice"));
            }
            return;
        }
        let ok = match label {
            "valid" => *outcome == Outcome::Verified,
            "invalid" => *outcome != Outcome::Verified,
            "acceptable" => true,
            other => {
                self.fail(format!("tc{tc} ({context}): unknown label {other:?}"));
                return;
            }
        };
        if ok {
            self.as_labelled += 1;
        } else {
            self.fail(format!("tc{tc} ({context}): labelled {label}, got {outcome:?}"));
        }
    }

    /// Asserts the counts and prints the summary line.
    fn finish(self, file: &str, number_of_tests: usize, exceptions: &[Exception]) {
        assert!(
            self.failures.is_empty(),
            "{file}: {} mismatch(es):\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
        assert_eq!(
            self.executed, number_of_tests,
            "{file}: executed vs numberOfTests"
        );
        let listed: BTreeSet<u64> = exceptions.iter().map(|e| e.tc).collect();
        assert_eq!(
            listed.len(),
            exceptions.len(),
            "{file}: duplicate tcId in the exception list"
        );
        assert_eq!(
            self.exceptions_hit, listed,
            "{file}: every listed exception must be hit, once"
        );
        assert_eq!(self.as_labelled + self.exceptions_hit.len(), self.executed);
        println!(
            "wycheproof {file}: {} / {number_of_tests} executed, {} as labelled, {} expected exceptions {:?}",
            self.executed,
            self.as_labelled,
            self.exceptions_hit.len(),
            self.exceptions_hit,
        );
    }
}

fn load(name: &str) -> Value {
    let dir = Path::new(VECTORS);
    assert!(
        dir.is_dir(),
        "Wycheproof vectors not found at {VECTORS}: the `shared/` checkout must sit beside \
         the repository (shared/vectors/wycheproof/). Refusing to pass without them."
    );
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn number_of_tests(file: &Value) -> usize {
    file["numberOfTests"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .expect("numberOfTests is a count")
}

fn groups(file: &Value) -> &[Value] {
    file["testGroups"].as_array().expect("testGroups is an array")
}

fn tests(group: &Value) -> &[Value] {
    group["tests"].as_array().expect("tests is an array")
}

fn tc_id(test: &Value) -> u64 {
    test["tcId"].as_u64().expect("tcId is a number")
}

fn label(test: &Value) -> &str {
    test["result"].as_str().expect("result is a string")
}

fn flags(test: &Value) -> Vec<&str> {
    test["flags"]
        .as_array()
        .map_or_else(Vec::new, |f| f.iter().filter_map(Value::as_str).collect())
}

/// The JWS as text; a JSON-serialized JWS is handed over as its JSON text.
fn jws(test: &Value) -> String {
    match &test["jws"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JWK or a JWKS, as a JWKS document.
fn as_jwks(key: &Value) -> Value {
    if key.get("keys").is_some() {
        key.clone()
    } else {
        json!({ "keys": [key] })
    }
}

fn jwks_keys(doc: &Value) -> &[Value] {
    doc["keys"].as_array().expect("a JWKS has a keys array")
}

fn from_jwks(doc: &Value) -> KeySet {
    KeySet::from_jwks(doc.to_string().as_bytes()).expect("a {\"keys\": [...]} document is a key set")
}

fn verifier(algorithms: impl IntoIterator<Item = Algorithm>) -> Verifier {
    Verifier::builder()
        .algorithms(algorithms)
        .build()
        .expect("verifier configuration")
}

/// The most permissive allow-list, HMAC included, so that every rejection of a
/// published key comes from the key set (type, curve, the key's own alg), never from
/// the allow-list.
fn permissive() -> Verifier {
    verifier(Algorithm::ALL)
}

/// The locally configured secret path: what an application does with an HMAC key it
/// holds. Refused when the key's `alg` is not an HMAC algorithm or the secret is short.
fn local_hmac(jwk: &Value) -> Result<(KeySet, Algorithm), String> {
    let name = jwk["alg"].as_str().ok_or("oct key without alg")?;
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("{name:?} is not a JWS algorithm"))?;
    let k = jwk["k"].as_str().ok_or("oct key without k")?;
    let secret = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|e| format!("k is not base64url: {e}"))?;
    let set = KeySet::from_hmac_secret(jwk["kid"].as_str(), alg, &secret).map_err(|e| e.to_string())?;
    Ok((set, alg))
}

/// Our key policy restated from the JWK alone: a published public key is usable unless
/// it is meant for something else (`use`, `key_ops`) or is a P-521 key (no ES512).
fn expect_usable(jwk: &Value) -> bool {
    let use_ok = jwk.get("use").is_none_or(|u| u == "sig");
    let ops_ok = jwk.get("key_ops").is_none_or(|ops| {
        ops.as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "verify"))
    });
    use_ok && ops_ok && jwk["crv"] != "P-521"
}

#[test]
fn json_web_signature_vectors() {
    const FILE: &str = "json_web_signature_test.json";
    let file = load(FILE);
    let mut tally = Tally::default();

    // tc367/tc370 are listed as exceptions because they are the valid tc357, byte for byte.
    let all_tests: Vec<&Value> = groups(&file).iter().flat_map(tests).collect();
    let jws_of = |tc: u64| all_tests.iter().find(|t| tc_id(t) == tc).map(|t| jws(t));
    for artefact in [367, 370] {
        assert_eq!(
            jws_of(artefact),
            jws_of(357),
            "tc{artefact} is no longer identical to tc357"
        );
    }

    for (gi, group) in groups(&file).iter().enumerate() {
        let context = format!("group {gi} {}", group["comment"]);
        let (keys, verifier) = if let Some(public) = group.get("public") {
            let doc = as_jwks(public);
            let set = from_jwks(&doc);
            let expected = jwks_keys(&doc).iter().filter(|k| expect_usable(k)).count();
            if set.len() != expected || set.len() + set.skipped().len() != jwks_keys(&doc).len() {
                tally.fail(format!(
                    "{context}: {expected} usable key(s) expected, got {set:?}"
                ));
            }
            // The private JWK published by mistake never yields a usable key.
            if let Some(private) = group.get("private") {
                let private_set = from_jwks(&as_jwks(private));
                if !private_set.is_empty() {
                    tally.fail(format!("{context}: private JWK was accepted: {private_set:?}"));
                }
            }
            (set, permissive())
        } else {
            let jwk = group
                .get("private")
                .expect("a group without public key has a private one");
            assert_eq!(jwk["kty"], "oct", "{context}: only oct groups lack a public key");
            // HMAC keys are never accepted from a JWKS: the oct JWK yields no usable key,
            // even with every algorithm allowed, and none of the group's JWS verifies.
            let remote = from_jwks(&as_jwks(jwk));
            if !remote.is_empty() || remote.skipped().len() != 1 {
                tally.fail(format!("{context}: oct JWK through from_jwks: {remote:?}"));
            }
            for test in tests(group) {
                if permissive().verify_signature(&jws(test), &remote).is_ok() {
                    tally.fail(format!(
                        "tc{} ({context}): verified with an oct key from a JWKS",
                        tc_id(test)
                    ));
                }
            }
            let (set, alg) =
                local_hmac(jwk).unwrap_or_else(|e| panic!("{context}: local HMAC key refused: {e}"));
            (set, verifier([alg]))
        };

        for test in tests(group) {
            let tc = tc_id(test);
            let token = jws(test);
            let outcome = Outcome::of(verifier.verify_signature(&token, &keys));
            // Beyond the label: JSON serialization and `none` must fail cleanly, for the
            // right reason.
            if (flags(test).contains(&"JsonSerialization") || token.starts_with('{'))
                && !matches!(outcome, Outcome::Rejected(AuthError::Malformed(_)))
            {
                tally.fail(format!(
                    "tc{tc}: JSON-serialized JWS must be refused as malformed, got {outcome:?}"
                ));
            }
            if flags(test).contains(&"AlgIsNone")
                && outcome != Outcome::Rejected(AuthError::AlgorithmNotAllowed)
            {
                tally.fail(format!(
                    "tc{tc}: alg none must be refused by the allow-list, got {outcome:?}"
                ));
            }
            // The MAC of these is right over the segments as sent, but the payload is
            // not base64url (spaces, '#', '?', non-zero trailing bits): only decoding
            // the payload rejects them. `verify_signature` once skipped that step.
            if [368, 369, 371, 375].contains(&tc)
                && outcome != Outcome::Rejected(AuthError::Malformed("payload is not base64url"))
            {
                tally.fail(format!("tc{tc}: payload is not base64url, got {outcome:?}"));
            }
            tally.judge(tc, label(test), &outcome, &JWS_EXCEPTIONS, &context);
        }
    }
    tally.finish(FILE, number_of_tests(&file), &JWS_EXCEPTIONS);
}

/// For each case of `json_web_key_test.json` (by tcId), what `from_jwks` makes of the
/// set: how many keys stay usable, and a word from the skip reason of each skipped key.
/// This is the mechanism of our policy: bad keys are skipped one by one, the set is
/// never refused whole.
fn jwks_facts(tc: u64) -> (usize, &'static [&'static str]) {
    match tc {
        // MixedKeySet (note: "such keysets are rejected"): the set is not rejected whole;
        // the oct key is skipped, the EC key stays usable, so the HS256 token has no key.
        1 => (1, &["symmetric"]),
        // Two oct keys (distinct kids, or DuplicateKid): both skipped, nothing verifies.
        2..=4 => (0, &["symmetric", "symmetric"]),
        // A good RSA key; and the ROCA key, which we do not detect (JWK_EXCEPTIONS).
        5 | 7 => (1, &[]),
        // use "enc" (RSA1_5, and ES256): skipped for its use, before anything else.
        6 | 21 => (0, &["use"]),
        8 => (0, &["modulus"]),  // 1024-bit RSA
        9 => (0, &["exponent"]), // e = 1
        // Lone oct keys (short, long, empty, AES): never from a JWKS.
        10..=18 | 25 | 26 => (0, &["symmetric"]),
        19 => (0, &["ES521"]),       // alg/curve mismatch: ES521 (sic) on P-256
        20 => (0, &["ES224"]),       // unknown alg on P-256
        22 => (0, &["point"]),       // not on the curve
        23 => (0, &["coordinates"]), // crv P-384 with P-256 coordinates
        24 => (0, &["\"n\""]),       // kty RSA with EC members
        _ => panic!("tc{tc}: no key facts recorded; a new vector?"),
    }
}

#[test]
fn json_web_key_vectors() {
    const FILE: &str = "json_web_key_test.json";
    let file = load(FILE);
    let mut tally = Tally::default();

    for (gi, group) in groups(&file).iter().enumerate() {
        let context = format!("group {gi} {}", group["comment"]);
        let doc = as_jwks(
            group
                .get("public")
                .or_else(|| group.get("private"))
                .expect("a key set"),
        );
        let members = jwks_keys(&doc);
        let set = from_jwks(&doc);
        let all_oct = members.iter().all(|k| k["kty"] == "oct");

        for test in tests(group) {
            let tc = tc_id(test);
            let token = jws(test);

            let (usable, reasons) = jwks_facts(tc);
            let skipped_ok = set.skipped().len() == reasons.len()
                && set
                    .skipped()
                    .iter()
                    .zip(reasons)
                    .all(|(s, word)| s.reason.contains(word));
            if set.len() != usable || !skipped_ok {
                tally.fail(format!(
                    "tc{tc} ({context}): expected {usable} usable, skipped for {reasons:?}; got {set:?}"
                ));
            }

            let remote = Outcome::of(permissive().verify_signature(&token, &set));
            let outcome = if all_oct && members.len() == 1 {
                // A lone HMAC key: the application would configure it locally. Through
                // the JWKS it must never verify; locally, the label applies.
                if remote == Outcome::Verified {
                    tally.fail(format!(
                        "tc{tc} ({context}): verified with an oct key from a JWKS"
                    ));
                }
                let local = match local_hmac(&members[0]) {
                    Ok((keys, alg)) => Outcome::of(verifier([alg]).verify_signature(&token, &keys)),
                    Err(why) => Outcome::KeyRefused(why),
                };
                // Short (10-12) and empty (16-18) secrets, and AES keys (25-26), are
                // refused when configured: the rejection is the key's, not a bad MAC.
                let refused_for = match tc {
                    10..=12 | 16..=18 => Some("at least"),
                    25 | 26 => Some("not a JWS algorithm"),
                    _ => None,
                };
                if let Some(word) = refused_for
                    && !matches!(&local, Outcome::KeyRefused(why) if why.contains(word))
                {
                    tally.fail(format!(
                        "tc{tc} ({context}): key must be refused ({word}), got {local:?}"
                    ));
                }
                local
            } else {
                remote
            };
            tally.judge(tc, label(test), &outcome, &JWK_EXCEPTIONS, &context);

            if tc == 2 {
                // The tc2 exception is policy, not crypto: the secret of the token's kid,
                // configured locally, verifies it.
                let kid = "kid-aes-sign";
                let member = members.iter().find(|k| k["kid"] == kid).expect("tc2 key");
                let (keys, alg) = local_hmac(member).unwrap_or_else(|e| panic!("tc2 local key: {e}"));
                if let Err(e) = verifier([alg]).verify_signature(&token, &keys) {
                    tally.fail(format!(
                        "tc2: the token does not verify with its own secret either: {e}"
                    ));
                }
            }
        }
    }
    tally.finish(FILE, number_of_tests(&file), &JWK_EXCEPTIONS);
}
