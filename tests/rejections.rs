//! Every class of bad input is rejected with the right status, `WWW-Authenticate`
//! challenge and error description: never a panic, never a 5xx, never the handler.
//!
//! Most tests sign tokens with the real fixture keys, so that the one defect under test
//! is the only reason a token can fail; each table also carries a control that passes.
#![cfg(feature = "axum")]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm as JwtAlg, EncodingKey};
use serde_json::{Value, json};
use tower_jwt_auth::{Algorithm, JwtAuthLayer, KeySet, RemoteJwks, Verifier, VerifierBuilder};

/// The fixed "now" of every verifier below (2023-11-14T22:13:20Z): no test depends on
/// the wall clock.
const NOW: i64 = 1_700_000_000;

/// P-256 group order n.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// What a request must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// 200 from the handler (a control case).
    Pass,
    /// 401 with a bare `Bearer realm="api"` challenge.
    NoToken,
    /// 400 `invalid_request` whose description contains this text.
    Request(&'static str),
    /// 401 `invalid_token` whose description contains this text.
    Token(&'static str),
}

fn check(case: &str, answer: &Answer, want: Want) {
    let challenge = answer.www_authenticate.as_deref().unwrap_or_default();
    let (status, code, words) = match want {
        Want::Pass => {
            assert_eq!(answer.status, StatusCode::OK, "{case}: {answer:?}");
            return;
        }
        Want::NoToken => {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{case}: {answer:?}");
            assert_eq!(challenge, r#"Bearer realm="api""#, "{case}: {answer:?}");
            assert!(answer.body.get("error").is_none(), "{case}: {answer:?}");
            return;
        }
        Want::Request(words) => (StatusCode::BAD_REQUEST, "invalid_request", words),
        Want::Token(words) => (StatusCode::UNAUTHORIZED, "invalid_token", words),
    };
    assert_eq!(answer.status, status, "{case}: {answer:?}");
    assert!(
        challenge.starts_with(r#"Bearer realm="api", "#),
        "{case}: {answer:?}"
    );
    assert!(
        challenge.contains(&format!(r#"error="{code}""#)),
        "{case}: {answer:?}"
    );
    let described = challenge
        .split_once(r#"error_description=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(description, _)| description)
        .unwrap_or_default();
    assert!(
        described.contains(words),
        "{case}: expected {words:?} in {answer:?}"
    );
    assert_eq!(answer.body["error"], code, "{case}: {answer:?}");
    assert_eq!(answer.body["error_description"], described, "{case}: {answer:?}");
}

/// A verifier requiring the test issuer and audience, with the clock stopped at `NOW`.
fn strict() -> VerifierBuilder {
    Verifier::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .clock(|| UNIX_EPOCH + Duration::from_secs(NOW as u64))
}

/// An app verifying with `verifier` against a fixed key set holding `keys`.
fn app_with(verifier: VerifierBuilder, keys: &[&TestKey]) -> Router {
    let set = KeySet::from_jwks(jwks_of(keys).to_string().as_bytes()).expect("key set");
    guarded_app(JwtAuthLayer::new(verifier.build().expect("verifier"), set))
}

fn app(keys: &[&TestKey]) -> Router {
    app_with(strict(), keys)
}

/// Claims that pass `strict()`.
fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 3600})
}

/// The usual header of `key`: `{"alg": ..., "kid": ...}`.
fn header_of(key: &TestKey) -> String {
    json!({"alg": alg_name(key.alg), "kid": key.kid}).to_string()
}

/// Signs exactly this header and payload text (duplicates and odd JSON survive).
fn sign_text(key: &TestKey, header: &str, payload: &str) -> String {
    sign_segments(key, &b64(header.as_bytes()), &b64(payload.as_bytes()))
}

/// Signs exactly these two encoded segments, whatever they hold.
fn sign_segments(key: &TestKey, header: &str, payload: &str) -> String {
    key.sign_message(&format!("{header}.{payload}"), key.alg)
}

/// A valid token of `key` with `claims()`.
fn good_token(key: &TestKey) -> String {
    sign_text(key, &header_of(key), &claims().to_string())
}

fn split(token: &str) -> (String, String, String) {
    let mut parts = token.split('.').map(str::to_string);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => panic!("not a three-segment token: {token}"),
    }
}

fn decode(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(segment).expect("base64url segment")
}

/// The payload members of `claims()`, with some replaced (`Some(raw JSON)`), added or
/// removed (`None`), rendered as JSON text in this order.
fn payload(changes: &[(&str, Option<&str>)]) -> String {
    let mut members: Vec<(String, String)> = [
        ("iss", format!("\"{ISSUER}\"")),
        ("aud", format!("\"{AUDIENCE}\"")),
        ("sub", "\"alice\"".to_string()),
        ("iat", NOW.to_string()),
        ("exp", (NOW + 3600).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, value) in changes {
        match value {
            Some(raw) => match members.iter_mut().find(|(k, _)| k == name) {
                Some(member) => member.1 = raw.to_string(),
                None => members.push((name.to_string(), raw.to_string())),
            },
            None => members.retain(|(k, _)| k != name),
        }
    }
    let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// Base64url of `bytes` with one of the unused low bits of the last character set: it
/// decodes to the same bytes in a lenient decoder, and is refused by a strict one.
fn b64_noncanonical(bytes: &[u8]) -> String {
    assert_ne!(bytes.len() % 3, 0, "a length that leaves unused bits");
    let mut text = b64(bytes).into_bytes();
    let last = text.pop().expect("non-empty");
    let index = URL_SAFE_ALPHABET
        .iter()
        .position(|c| *c == last)
        .expect("alphabet");
    assert_eq!(index & 1, 0, "canonical encodings have the unused bits clear");
    text.push(URL_SAFE_ALPHABET[index | 1]);
    String::from_utf8(text).expect("ascii")
}

const URL_SAFE_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Pads JSON text with trailing spaces until its length leaves unused base64 bits.
fn with_unused_bits(json: &str) -> String {
    let mut text = json.to_string();
    while text.len() % 3 != 1 {
        text.push(' ');
    }
    text
}

/// An HMAC "key" whose secret is `secret`.
fn hmac_key(kid: &str, secret: &[u8]) -> TestKey {
    TestKey {
        alg: JwtAlg::HS256,
        kid: kid.into(),
        encoding: EncodingKey::from_secret(secret).expect("hmac secret"),
        jwk: json!({}),
    }
}

/// DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// DER INTEGER of an unsigned big-endian number.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let mut content = Vec::new();
    if bytes[start] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[start..]);
    der(0x02, &content)
}

/// The RSA public key of a JWK in the forms an attacker might use as an HMAC secret:
/// (label, bytes).
fn rsa_public_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let n = decode(jwk["n"].as_str().expect("n"));
    let e = decode(jwk["e"].as_str().expect("e"));
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    // SubjectPublicKeyInfo { AlgorithmIdentifier { rsaEncryption, NULL }, BIT STRING }
    let rsa_encryption = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let bit_string = der(0x03, &[&[0u8][..], &pkcs1].concat());
    let spki = der(0x30, &[der(0x30, &rsa_encryption), bit_string].concat());
    let body = STANDARD.encode(&spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("ascii"))
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    vec![
        ("PEM", pem.clone().into_bytes()),
        ("PEM without final newline", pem.trim_end().as_bytes().to_vec()),
        ("SPKI DER", spki),
        ("PKCS#1 DER", pkcs1),
        ("JWK n bytes", n),
        ("JWK n text", jwk["n"].as_str().expect("n").as_bytes().to_vec()),
        ("JWK JSON", jwk.to_string().into_bytes()),
    ]
}

/// Sends GET /whoami with an Authorization header of arbitrary bytes (obs-text too).
async fn call_bytes(app: &Router, value: &[u8]) -> Answer {
    call_raw(app, &[("authorization", value)]).await
}

// ---------------------------------------------------------------------------------------
// The Authorization header
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_a_token_gets_a_bare_bearer_challenge() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    check("no header", &call_with(&app, &[]).await, Want::NoToken);
    check("control", &call(&app, &good_token(&es256)).await, Want::Pass);
}

#[tokio::test]
async fn another_authorization_scheme_counts_as_no_token() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let token = good_token(&es256);
    for value in [
        "Basic dXNlcjpwYXNzd29yZA==".to_string(),
        "Digest username=\"alice\", realm=\"api\"".to_string(),
        format!("Token {token}"),
        format!("JWT {token}"),
        format!("Bearerx {token}"),
        format!("Bearer-{token}"),
        token.clone(),
    ] {
        check(
            &value,
            &call_with(&app, &[("authorization", &value)]).await,
            Want::NoToken,
        );
    }
    let lower = format!("bearer {token}");
    check(
        "lower-case scheme",
        &call_with(&app, &[("authorization", &lower)]).await,
        Want::Pass,
    );
}

#[tokio::test]
async fn two_authorization_headers_are_an_invalid_request() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let bearer = format!("Bearer {}", good_token(&es256));
    for (case, headers) in [
        (
            "two valid bearer tokens",
            [
                ("authorization", bearer.as_str()),
                ("authorization", bearer.as_str()),
            ],
        ),
        (
            "basic then bearer",
            [
                ("authorization", "Basic dXNlcjpwdw=="),
                ("authorization", bearer.as_str()),
            ],
        ),
        (
            "bearer then basic",
            [
                ("authorization", bearer.as_str()),
                ("authorization", "Basic dXNlcjpwdw=="),
            ],
        ),
    ] {
        check(
            case,
            &call_with(&app, &headers).await,
            Want::Request("more than one Authorization header"),
        );
    }
}

#[tokio::test]
async fn malformed_bearer_values_are_an_invalid_request() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let token = good_token(&es256);
    let (h, p, s) = split(&token);
    let malformed = "malformed bearer token";
    for value in [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer   ".to_string(),
        format!("Bearer  {token}"),
        format!("Bearer {token} "),
        format!("Bearer {token} extra"),
        format!("Bearer {token},{token}"),
        format!("Bearer \"{token}\""),
        format!("Bearer {token};"),
        format!("Bearer {h}.{p}.{s}\t"),
        format!("Bearer {h}.{p}=.{s}"),
        format!("Bearer {h}==.{p}.{s}"),
        "Bearer ===".to_string(),
        "Bearer =abc".to_string(),
        "Bearer a=b".to_string(),
        "Bearer a@b.c.d".to_string(),
        "Bearer a%2Eb.c".to_string(),
        "Bearer a\\b.c".to_string(),
    ] {
        check(
            &value,
            &call_with(&app, &[("authorization", &value)]).await,
            Want::Request(malformed),
        );
    }
    for bytes in [&b"Bearer \xe9t\xe9.a.b"[..], &b"Bearer a.b.c\x80"[..]] {
        check(
            &format!("{bytes:?}"),
            &call_bytes(&app, bytes).await,
            Want::Request(malformed),
        );
    }
}

#[tokio::test]
async fn oversized_tokens_are_refused_by_length_before_anything_else() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let limit = tower_jwt_auth::DEFAULT_MAX_TOKEN_LEN;
    assert_eq!(limit, 8 * 1024);
    let mut big_claims = claims();
    big_claims["pad"] = json!("x".repeat(limit));
    let big_but_valid = es256.sign(&big_claims);
    assert!(big_but_valid.len() > limit);
    let too_large = Want::Token("token too large");
    for (case, token) in [
        ("one byte over, no dots", "a".repeat(limit + 1)),
        ("validly signed but too long", big_but_valid),
        // Length is checked first: neither the characters nor the segments are looked at.
        (
            "over the limit with illegal characters",
            "a b,".repeat(limit / 4 + 1),
        ),
        ("over the limit with many segments", ".".repeat(limit + 1)),
        ("a megabyte", "a".repeat(1 << 20)),
    ] {
        check(case, &call(&app, &token).await, too_large);
    }
    // At exactly the limit, the length is fine and the token is judged on its content.
    check(
        "exactly at the limit",
        &call(&app, &"a".repeat(limit)).await,
        Want::Token("expected three segments"),
    );
}

// ---------------------------------------------------------------------------------------
// Token structure
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tokens_without_exactly_three_segments_are_malformed() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let token = good_token(&es256);
    let (h, p, s) = split(&token);
    let three = Want::Token("malformed token: expected three segments");
    for (case, token) in [
        ("one segment", h.clone()),
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{token}.{s}")),
        ("four, empty last", format!("{token}.")),
        ("six segments", format!("{token}.{s}.{s}.{s}")),
        ("seven segments", format!("{token}.{s}.{s}.{s}.{s}")),
        ("just dots", "...".to_string()),
    ] {
        check(case, &call(&app, &token).await, three);
    }
    check(
        "empty segments",
        &call(&app, "..").await,
        Want::Token("header is not a JOSE header"),
    );
    check("control", &call(&app, &token).await, Want::Pass);
}

#[tokio::test]
async fn five_segment_jwe_tokens_are_refused_as_encrypted() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let encrypted = Want::Token("encrypted tokens are not supported");
    let jwe_header = b64(br#"{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"py-es256"}"#);
    let jwe = format!(
        "{jwe_header}.{}.{}.{}.{}",
        b64(&[1; 256]),
        b64(&[2; 12]),
        b64(b"ciphertext"),
        b64(&[3; 16])
    );
    check("compact JWE", &call(&app, &jwe).await, encrypted);
    check(
        "JWE, direct encryption",
        &call(
            &app,
            &format!("{jwe_header}..{}.{}.{}", b64(&[2; 12]), b64(b"c"), b64(&[3; 16])),
        )
        .await,
        encrypted,
    );
    check(
        "five arbitrary segments",
        &call(&app, "a.b.c.d.e").await,
        encrypted,
    );
    // A three-segment token whose header claims encryption is not a JWS either.
    let header = r#"{"alg":"ES256","kid":"py-es256","enc":"A256GCM"}"#;
    let signed = sign_text(&es256, header, &claims().to_string());
    check("signed JWS with enc", &call(&app, &signed).await, encrypted);
}

#[tokio::test]
async fn segments_that_are_not_canonical_unpadded_base64url_are_refused() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let header_text = header_of(&es256);
    let payload_text = claims().to_string();
    let header_b64url = Want::Token("header is not base64url");
    let payload_b64url = Want::Token("payload is not base64url");

    // Standard-alphabet base64 ('+' and '/' are token68, so they reach the decoder).
    // "?????" guarantees a whole 3-byte group of '?', which encodes to "Pz8_" / "Pz8/".
    let odd_header = r#"{"alg":"ES256","kid":"py-es256","x":"?????"}"#;
    let odd_payload = payload(&[("x", Some("\"?????\""))]);
    let std_alphabet = |text: &str| {
        let url = b64(text.as_bytes());
        assert!(url.contains('_'), "precondition: {url}");
        url.replace('-', "+").replace('_', "/")
    };
    let signed = sign_segments(&es256, &std_alphabet(odd_header), &b64(payload_text.as_bytes()));
    check(
        "header in the standard alphabet",
        &call(&app, &signed).await,
        header_b64url,
    );
    let signed = sign_segments(&es256, &b64(header_text.as_bytes()), &std_alphabet(&odd_payload));
    check(
        "payload in the standard alphabet",
        &call(&app, &signed).await,
        payload_b64url,
    );
    check(
        "controls use the url-safe alphabet",
        &call(&app, &sign_text(&es256, odd_header, &odd_payload)).await,
        Want::Pass,
    );

    // Non-canonical trailing bits: a lenient decoder would read the very same JSON.
    let header_text = with_unused_bits(&header_text);
    let payload_text = with_unused_bits(&payload_text);
    let signed = sign_segments(
        &es256,
        &b64_noncanonical(header_text.as_bytes()),
        &b64(payload_text.as_bytes()),
    );
    check(
        "header with non-canonical trailing bits",
        &call(&app, &signed).await,
        header_b64url,
    );
    let signed = sign_segments(
        &es256,
        &b64(header_text.as_bytes()),
        &b64_noncanonical(payload_text.as_bytes()),
    );
    check(
        "payload with non-canonical trailing bits",
        &call(&app, &signed).await,
        payload_b64url,
    );
    // ECDSA signatures are randomized: take one whose text has a '-' or '_', so that its
    // standard-alphabet form below differs (about 19 in 20 signatures qualify).
    let control = std::iter::repeat_with(|| sign_text(&es256, &header_text, &payload_text))
        .find(|token| split(token).2.contains(['-', '_']))
        .expect("a signature with '-' or '_'");
    check(
        "control with canonical encodings",
        &call(&app, &control).await,
        Want::Pass,
    );

    // Signature: 64 bytes of ES256 leave 4 unused bits and take "==" as padding.
    let (h, p, s) = split(&control);
    let sig = decode(&s);
    let bad_signature = Want::Token("invalid signature");
    for (case, token) in [
        (
            "signature with non-canonical trailing bits",
            format!("{h}.{p}.{}", b64_noncanonical(&sig)),
        ),
        ("signature with padding", format!("{h}.{p}.{s}==")),
        (
            "signature in the standard alphabet",
            format!("{h}.{p}.{}", STANDARD.encode(&sig).trim_end_matches('=')),
        ),
        (
            "signature with characters outside base64",
            format!("{h}.{p}.{}~", &s[..s.len() - 1]),
        ),
    ] {
        check(case, &call(&app, &token).await, bad_signature);
    }

    // Other characters outside base64url in header and payload.
    for (case, token, want) in [
        ("header with '~'", format!("{h}~.{p}.{s}"), header_b64url),
        (
            "payload with '~'",
            sign_segments(&es256, &h, &format!("{p}~")),
            payload_b64url,
        ),
    ] {
        check(case, &call(&app, &token).await, want);
    }
}

#[tokio::test]
async fn headers_that_are_not_one_json_object_with_a_string_alg_are_refused() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let payload_text = claims().to_string();
    let not_jose = Want::Token("malformed token: header is not a JOSE header");
    // Each header is signed with the real key: only the header itself is wrong.
    for header in [
        "",
        "not json",
        "{",
        r#"{"alg":"ES256","kid":"py-es256""#,
        r#"{"alg":"ES256","kid":"py-es256"} {}"#,
        "null",
        "5",
        r#""ES256""#,
        "[]",
        r#"["ES256"]"#,
        r#"["ES256","py-es256"]"#,
        "{}",
        r#"{"kid":"py-es256"}"#,
        r#"{"alg":null,"kid":"py-es256"}"#,
        r#"{"alg":256,"kid":"py-es256"}"#,
        r#"{"alg":["ES256"],"kid":"py-es256"}"#,
        r#"{"alg":"ES256","kid":5}"#,
        r#"{"alg":"ES256","kid":["py-es256"]}"#,
        r#"{"alg":"ES256","alg":"ES256","kid":"py-es256"}"#,
        r#"{"alg":"ES256","alg":"none","kid":"py-es256"}"#,
        r#"{"alg":"none","alg":"ES256","kid":"py-es256"}"#,
        r#"{"alg":"ES256","\u0061lg":"none","kid":"py-es256"}"#,
        r#"{"alg":"ES256","kid":"py-es256","kid":"other"}"#,
        r#"{"alg":"ES256","kid":"other","kid":"py-es256"}"#,
    ] {
        let token = sign_text(&es256, header, &payload_text);
        check(header, &call(&app, &token).await, not_jose);
    }
    // Headers that are unusual but valid JSON objects pass.
    for header in [
        r#"{"alg":"ES256","kid":"py-es256","typ":"JWT"}"#,
        r#"{"kid":"py-es256","alg":"ES\u0032\u00356"}"#,
        " \n{ \"alg\" : \"ES256\" } ",
        r#"{"alg":"ES256","kid":"py-es256","unknown":{"nested":[1,2,3]}}"#,
    ] {
        check(
            header,
            &call(&app, &sign_text(&es256, header, &payload_text)).await,
            Want::Pass,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling_with_or_without_a_signature() {
    let es256 = key("es256");
    // Even a verifier that allows everything never accepts `none`.
    let app = app_with(strict().algorithms(Algorithm::ALL), &[&es256]);
    let payload_b64 = b64(claims().to_string().as_bytes());
    let not_allowed = Want::Token("algorithm not allowed");
    for alg in [
        "none",
        "None",
        "NONE",
        "nOnE",
        "NoNe",
        "none ",
        " none",
        "none\u{0}",
    ] {
        for header in [
            json!({"alg": alg}),
            json!({"alg": alg, "kid": "py-es256", "typ": "JWT"}),
        ] {
            let message = format!("{}.{payload_b64}", b64_json(&header));
            let real_signature = split(&es256.sign_message(&message, JwtAlg::ES256)).2;
            for (what, signature) in [
                ("no signature", String::new()),
                ("junk signature", b64(b"signature")),
                ("a real ES256 signature of the same message", real_signature),
            ] {
                let case = format!("{header} with {what}");
                check(
                    &case,
                    &call(&app, &format!("{message}.{signature}")).await,
                    not_allowed,
                );
            }
        }
    }
}

#[tokio::test]
async fn unknown_and_unsupported_algorithms_are_refused() {
    let es256 = key("es256");
    let app = app_with(strict().algorithms(Algorithm::ALL), &[&es256]);
    let payload_text = claims().to_string();
    for alg in [
        "",
        "es256",
        "Es256",
        "ES256 ",
        " ES256",
        "ES 256",
        "ES512",
        "ES256K",
        "HS1024",
        "RS1",
        "PS1024",
        "Ed25519",
        "EDDSA",
        "ML-DSA-44",
        "RSA-OAEP",
        "dir",
        "A256GCM",
    ] {
        let header = json!({"alg": alg, "kid": "py-es256"}).to_string();
        // A valid ES256 signature of the exact message: only the alg name is wrong.
        let token = sign_text(&es256, &header, &payload_text);
        check(
            alg,
            &call(&app, &token).await,
            Want::Token("algorithm not allowed"),
        );
    }
}

#[tokio::test]
async fn algorithms_outside_the_allow_list_are_refused_even_with_a_valid_signature() {
    let (es256, rs256, eddsa) = (key("es256"), key("rs256"), key("eddsa"));
    let app = app_with(strict().algorithms([Algorithm::ES256]), &[&es256, &rs256, &eddsa]);
    check(
        "RS256 not listed",
        &call(&app, &good_token(&rs256)).await,
        Want::Token("algorithm not allowed"),
    );
    check(
        "EdDSA not listed",
        &call(&app, &good_token(&eddsa)).await,
        Want::Token("algorithm not allowed"),
    );
    check("ES256 listed", &call(&app, &good_token(&es256)).await, Want::Pass);
}

#[tokio::test]
async fn hmac_signed_with_the_rsa_public_key_is_refused_by_the_default_allow_list() {
    let rs256 = key("rs256");
    let app = app(&[&rs256]);
    for (form, secret) in rsa_public_forms(&rs256.jwk) {
        for alg in [JwtAlg::HS256, JwtAlg::HS384, JwtAlg::HS512] {
            let mut hmac = hmac_key("py-rs256", &secret);
            hmac.alg = alg;
            let case = format!("{} keyed with the {form}", alg_name(alg));
            check(
                &case,
                &call(&app, &good_token(&hmac)).await,
                Want::Token("algorithm not allowed"),
            );
        }
    }
    check("control", &call(&app, &good_token(&rs256)).await, Want::Pass);
}

#[tokio::test]
async fn hmac_is_never_verified_with_keys_from_a_jwks_even_when_allowed() {
    let rs256 = key("rs256");
    // The JWKS even publishes a symmetric key: it must be skipped, never used.
    let published_secret = b"a published secret is no secret at all!!";
    let mut jwks = jwks_of(&[&rs256]);
    jwks["keys"]
        .as_array_mut()
        .expect("keys")
        .push(json!({"kty": "oct", "kid": "sym", "alg": "HS256", "k": b64(published_secret)}));
    let server = JwksServer::start(&jwks).await;
    let remote = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let verifier = strict().algorithms(Algorithm::ALL).build().expect("verifier");
    let app = guarded_app(JwtAuthLayer::new(verifier, remote));

    for (form, secret) in rsa_public_forms(&rs256.jwk) {
        let with_kid = good_token(&hmac_key("py-rs256", &secret));
        check(
            &format!("HS256 with the RSA kid, {form}"),
            &call(&app, &with_kid).await,
            Want::Token("no key fits"),
        );
        let kidless = sign_text(
            &hmac_key("", &secret),
            r#"{"alg":"HS256"}"#,
            &claims().to_string(),
        );
        check(
            &format!("HS256 without kid, {form}"),
            &call(&app, &kidless).await,
            Want::Token("no key fits"),
        );
    }
    let with_oct = good_token(&hmac_key("sym", published_secret));
    check(
        "HS256 with the published oct key",
        &call(&app, &with_oct).await,
        Want::Token("unknown key id"),
    );
    check("control", &call(&app, &good_token(&rs256)).await, Want::Pass);
}

#[tokio::test]
async fn a_token_alg_that_does_not_fit_its_key_is_refused_before_verifying() {
    let (es256, es384, rs256, ps256, eddsa) = (
        key("es256"),
        key("es384"),
        key("rs256"),
        key("ps256"),
        key("eddsa"),
    );
    let app = app(&[&es256, &es384, &rs256, &ps256, &eddsa]);
    let payload_text = claims().to_string();
    let no_key_fits = Want::Token("no key fits the token's algorithm");
    // (case, signing key, algorithm it signs with, kid in the header)
    let cases: [(&str, &TestKey, JwtAlg, &str); 8] = [
        ("RS256 header on the P-256 key", &rs256, JwtAlg::RS256, "py-es256"),
        ("ES384 header on the P-256 key", &es384, JwtAlg::ES384, "py-es256"),
        ("ES256 header on the P-384 key", &es256, JwtAlg::ES256, "py-es384"),
        ("EdDSA header on the RSA key", &eddsa, JwtAlg::EdDSA, "py-rs256"),
        (
            "ES256 header on the Ed25519 key",
            &es256,
            JwtAlg::ES256,
            "py-eddsa",
        ),
        // The JWK says RS256: PS256, although the same RSA key, is refused.
        (
            "PS256 by the RS256 key, JWK alg RS256",
            &rs256,
            JwtAlg::PS256,
            "py-rs256",
        ),
        (
            "RS256 by the PS256 key, JWK alg PS256",
            &ps256,
            JwtAlg::RS256,
            "py-ps256",
        ),
        (
            "RS384 by the RS256 key, JWK alg RS256",
            &rs256,
            JwtAlg::RS384,
            "py-rs256",
        ),
    ];
    for (case, signer, alg, kid) in cases {
        let message = format!(
            "{}.{}",
            b64_json(&json!({"alg": alg_name(alg), "kid": kid})),
            b64(payload_text.as_bytes())
        );
        check(
            case,
            &call(&app, &signer.sign_message(&message, alg)).await,
            no_key_fits,
        );
    }
    // Without a JWK `alg`, PS256 by an RSA key is the key type's own business: it passes.
    let mut unbound = rs256.clone();
    unbound.jwk.as_object_mut().expect("jwk").remove("alg");
    let app = app_with(strict(), &[&unbound]);
    let message = format!(
        "{}.{}",
        b64_json(&json!({"alg": "PS256", "kid": "py-rs256"})),
        b64(payload_text.as_bytes())
    );
    check(
        "PS256 on an RSA JWK without alg",
        &call(&app, &rs256.sign_message(&message, JwtAlg::PS256)).await,
        Want::Pass,
    );
}

// ---------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn signatures_by_another_key_are_invalid() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let impostor = fresh_es256("py-es256");
    check(
        "another P-256 key, same kid",
        &call(&app, &good_token(&impostor)).await,
        Want::Token("invalid signature"),
    );
    let kidless = sign_text(&impostor, r#"{"alg":"ES256"}"#, &claims().to_string());
    check(
        "another P-256 key, no kid",
        &call(&app, &kidless).await,
        Want::Token("invalid signature"),
    );
    // A real key of the set signing as the other one.
    let other = fresh_es256("other");
    let app = app_with(strict(), &[&es256, &other]);
    let swapped = sign_text(&es256, r#"{"alg":"ES256","kid":"other"}"#, &claims().to_string());
    check(
        "real key under another real kid",
        &call(&app, &swapped).await,
        Want::Token("invalid signature"),
    );
    check(
        "the impostor under its own kid",
        &call(&app, &good_token(&other)).await,
        Want::Pass,
    );
}

#[tokio::test]
async fn degenerate_and_der_encoded_ecdsa_signatures_are_invalid() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let token = good_token(&es256);
    let (h, p, s) = split(&token);
    let sig = decode(&s);
    assert_eq!(sig.len(), 64, "fixed-size r||s");
    let (r, s_part) = sig.split_at(32);
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[31] = 1;
    let mut n_minus_1 = P256_N;
    n_minus_1[31] -= 1;
    let der_sig = der(0x30, &[der_uint(r), der_uint(s_part)].concat());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("r = s = 0", [zero, zero].concat()),
        ("r = 0, s = real", [&zero[..], s_part].concat()),
        ("r = real, s = 0", [r, &zero[..]].concat()),
        ("r = 0, s = n", [zero, P256_N].concat()),
        ("r = n, s = n", [P256_N, P256_N].concat()),
        ("r = n, s = 0", [P256_N, zero].concat()),
        ("r = 1, s = n - 1", [one, n_minus_1].concat()),
        ("r = 1, s = 1", [one, one].concat()),
        ("all 0xff", vec![0xff; 64]),
        ("r = n, s = real", [&P256_N[..], s_part].concat()),
        ("r = real, s = n", [r, &P256_N[..]].concat()),
        ("DER-encoded (r, s)", der_sig),
        ("r || s || extra byte", [&sig[..], &[0][..]].concat()),
        ("s || r", [s_part, r].concat()),
    ];
    for (case, signature) in cases {
        check(
            case,
            &call(&app, &format!("{h}.{p}.{}", b64(&signature))).await,
            Want::Token("invalid signature"),
        );
    }
    check("control", &call(&app, &token).await, Want::Pass);
}

#[tokio::test]
async fn truncated_and_empty_signatures_are_invalid() {
    let keys: Vec<TestKey> = KEY_NAMES.iter().map(|name| key(name)).collect();
    let app = app(&keys.iter().collect::<Vec<_>>());
    for k in &keys {
        let token = good_token(k);
        let (h, p, s) = split(&token);
        for (what, signature) in [
            ("empty", ""),
            ("one character", &s[..1]),
            ("half", &s[..s.len() / 2]),
            ("missing its last 4 characters", &s[..s.len() - 4]),
            ("missing its last character", &s[..s.len() - 1]),
        ] {
            let case = format!("{}: {what} signature", k.kid);
            check(
                &case,
                &call(&app, &format!("{h}.{p}.{signature}")).await,
                Want::Token("invalid signature"),
            );
        }
        check(&k.kid, &call(&app, &token).await, Want::Pass);
    }
}

#[tokio::test]
async fn tampering_with_a_signed_payload_or_header_invalidates_the_signature() {
    let es256 = key("es256");
    let other = fresh_es256("other");
    let app = app(&[&es256, &other]);
    let token = good_token(&es256);
    let (h, p, s) = split(&token);
    let claims_of = |p: &str| -> Value { serde_json::from_slice(&decode(p)).expect("claims") };
    let mut admin = claims_of(&p);
    admin["sub"] = json!("admin");
    let mut later = claims_of(&p);
    later["exp"] = json!(NOW + 86_400 * 365);
    let mut extra = claims_of(&p);
    extra["scope"] = json!("admin");
    let header_with = |key: &str, value: Value| {
        let mut header: Value = serde_json::from_slice(&decode(&h)).expect("header");
        header[key] = value;
        b64_json(&header)
    };
    let invalid = Want::Token("invalid signature");
    for (case, token) in [
        ("sub changed", format!("{h}.{}.{s}", b64_json(&admin))),
        ("exp extended", format!("{h}.{}.{s}", b64_json(&later))),
        ("claim added", format!("{h}.{}.{s}", b64_json(&extra))),
        (
            "payload of another token",
            format!("{h}.{}.{s}", split(&other.sign(&admin)).1),
        ),
        (
            "kid changed to another key",
            format!("{}.{p}.{s}", header_with("kid", json!("other"))),
        ),
        (
            "typ added",
            format!("{}.{p}.{s}", header_with("typ", json!("JWT"))),
        ),
        (
            "signature of another token",
            format!("{h}.{p}.{}", split(&good_token(&other)).2),
        ),
    ] {
        check(case, &call(&app, &token).await, invalid);
    }
    let unknown = format!("{}.{p}.{s}", header_with("kid", json!("nobody")));
    check(
        "kid changed to an unknown kid",
        &call(&app, &unknown).await,
        Want::Token("unknown key id"),
    );
    check("control", &call(&app, &token).await, Want::Pass);
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

/// Signs `payload` with the ES256 fixture key under its kid.
fn es256_token(payload: &str) -> String {
    let es256 = key("es256");
    sign_text(&es256, &header_of(&es256), payload)
}

#[tokio::test]
async fn time_claims_are_enforced_with_the_leeway_at_its_exact_boundaries() {
    let app = app(&[&key("es256")]);
    let at = |offset: i64| (NOW + offset).to_string();
    let cases: Vec<(&str, String, Want)> = vec![
        ("exp an hour ahead", payload(&[]), Want::Pass),
        (
            "exp 59 s ago, within the 60 s leeway",
            payload(&[("exp", Some(&at(-59)))]),
            Want::Pass,
        ),
        (
            "exp 59.5 s ago",
            payload(&[("exp", Some("1699999940.5"))]),
            Want::Pass,
        ),
        (
            "exp exactly 60 s ago",
            payload(&[("exp", Some(&at(-60)))]),
            Want::Token("token expired"),
        ),
        (
            "exp 61 s ago",
            payload(&[("exp", Some(&at(-61)))]),
            Want::Token("token expired"),
        ),
        (
            "exp a day ago",
            payload(&[("exp", Some(&at(-86_400)))]),
            Want::Token("token expired"),
        ),
        (
            "exp 0",
            payload(&[("exp", Some("0"))]),
            Want::Token("token expired"),
        ),
        (
            "no exp",
            payload(&[("exp", None)]),
            Want::Token("missing required claim `exp`"),
        ),
        ("nbf 60 s ahead", payload(&[("nbf", Some(&at(60)))]), Want::Pass),
        (
            "nbf 61 s ahead",
            payload(&[("nbf", Some(&at(61)))]),
            Want::Token("token not yet valid"),
        ),
        (
            "nbf an hour ahead",
            payload(&[("nbf", Some(&at(3600)))]),
            Want::Token("token not yet valid"),
        ),
        (
            "nbf in the past",
            payload(&[("nbf", Some(&at(-3600)))]),
            Want::Pass,
        ),
        ("iat 60 s ahead", payload(&[("iat", Some(&at(60)))]), Want::Pass),
        (
            "iat 61 s ahead",
            payload(&[("iat", Some(&at(61)))]),
            Want::Token("token issued in the future"),
        ),
        (
            "iat a day ahead",
            payload(&[("iat", Some(&at(86_400)))]),
            Want::Token("token issued in the future"),
        ),
        ("no iat", payload(&[("iat", None)]), Want::Pass),
    ];
    for (case, payload, want) in cases {
        check(case, &call(&app, &es256_token(&payload)).await, want);
    }
}

#[tokio::test]
async fn issuer_and_audience_must_match_and_are_required_when_configured() {
    let app = app(&[&key("es256")]);
    let cases: [(&str, Option<&str>, Want); 27] = [
        ("iss", Some(r#""https://issuer.test""#), Want::Pass),
        (
            "iss",
            Some(r#""https://evil.test""#),
            Want::Token("issuer not accepted"),
        ),
        (
            "iss",
            Some(r#""https://issuer.test/""#),
            Want::Token("issuer not accepted"),
        ),
        (
            "iss",
            Some(r#""HTTPS://ISSUER.TEST""#),
            Want::Token("issuer not accepted"),
        ),
        ("iss", Some(r#""""#), Want::Token("issuer not accepted")),
        ("iss", None, Want::Token("missing required claim `iss`")),
        ("iss", Some("5"), Want::Token("invalid claim `iss`")),
        ("iss", Some("true"), Want::Token("invalid claim `iss`")),
        ("iss", Some("null"), Want::Token("invalid claim `iss`")),
        (
            "iss",
            Some(r#"["https://issuer.test"]"#),
            Want::Token("invalid claim `iss`"),
        ),
        (
            "iss",
            Some(r#"{"iss":"https://issuer.test"}"#),
            Want::Token("invalid claim `iss`"),
        ),
        ("aud", Some(r#""api""#), Want::Pass),
        ("aud", Some(r#"["other","api"]"#), Want::Pass),
        ("aud", Some(r#""other""#), Want::Token("audience not accepted")),
        ("aud", Some(r#""API""#), Want::Token("audience not accepted")),
        (
            "aud",
            Some(r#"["other","another"]"#),
            Want::Token("audience not accepted"),
        ),
        ("aud", Some("[]"), Want::Token("audience not accepted")),
        ("aud", Some(r#""api ""#), Want::Token("audience not accepted")),
        ("aud", None, Want::Token("missing required claim `aud`")),
        ("aud", Some(r#"["api",5]"#), Want::Token("invalid claim `aud`")),
        ("aud", Some(r#"["api",null]"#), Want::Token("invalid claim `aud`")),
        ("aud", Some(r#"[["api"]]"#), Want::Token("invalid claim `aud`")),
        ("aud", Some("5"), Want::Token("invalid claim `aud`")),
        ("aud", Some("null"), Want::Token("invalid claim `aud`")),
        ("aud", Some(r#"{"api":true}"#), Want::Token("invalid claim `aud`")),
        ("sub", Some("5"), Want::Token("invalid claim `sub`")),
        ("sub", Some("null"), Want::Token("invalid claim `sub`")),
    ];
    for (claim, value, want) in cases {
        let case = format!("{claim}: {value:?}");
        check(
            &case,
            &call(&app, &es256_token(&payload(&[(claim, value)]))).await,
            want,
        );
    }
}

#[tokio::test]
async fn numeric_dates_must_be_json_numbers_within_range() {
    let app = app(&[&key("es256")]);
    for claim in ["exp", "nbf", "iat"] {
        let invalid = Want::Token(match claim {
            "exp" => "invalid claim `exp`",
            "nbf" => "invalid claim `nbf`",
            _ => "invalid claim `iat`",
        });
        for value in [
            r#""4102444800""#,
            r#""1700000000""#,
            r#""""#,
            "[4102444800]",
            "[]",
            r#"{"$date":4102444800}"#,
            "true",
            "false",
            "null",
            "-1",
            "-0.5",
            "-4102444800",
            "1e300",
            "1e400",
            "-1e400",
            "253402300800",
            "18446744073709551616",
            "99999999999999999999999999999999",
        ] {
            let token = es256_token(&payload(&[(claim, Some(value))]));
            check(&format!("{claim}: {value}"), &call(&app, &token).await, invalid);
        }
    }
    // Integers and non-integers alike are NumericDates.
    for (claim, value) in [
        ("exp", "1700003600"),
        ("exp", "1700003600.75"),
        ("exp", "1.7000036e9"),
        ("exp", "1700003600.0"),
        ("exp", "253402300799"),
        ("nbf", "1699999000"),
        ("nbf", "1699999000.5"),
        ("nbf", "0"),
        ("iat", "1699999000.25"),
        ("iat", "1.699999e9"),
        ("iat", "0"),
    ] {
        let token = es256_token(&payload(&[(claim, Some(value))]));
        check(
            &format!("{claim}: {value}"),
            &call(&app, &token).await,
            Want::Pass,
        );
    }
}

#[tokio::test]
async fn duplicate_claims_are_refused() {
    let app = app(&[&key("es256")]);
    let (live, dead) = (NOW + 3600, NOW - 3600);
    let base = format!(r#""iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice""#);
    for payload in [
        format!(r#"{{{base},"exp":{dead},"exp":{live}}}"#),
        format!(r#"{{{base},"exp":{live},"exp":{dead}}}"#),
        format!(r#"{{{base},"exp":{live},"exp":{live}}}"#),
        format!(r#"{{{base},"exp":{dead},"\u0065xp":{live}}}"#),
        format!(r#"{{"iss":"https://evil.test",{base},"exp":{live}}}"#),
        format!(r#"{{"aud":"other",{base},"exp":{live}}}"#),
        format!(r#"{{{base},"sub":"admin","exp":{live}}}"#),
        format!(r#"{{{base},"exp":{live},"nbf":{live},"nbf":{dead}}}"#),
        // Authorization data too: two parsers could pick different `scope`s.
        format!(r#"{{{base},"exp":{live},"scope":"read","scope":"admin"}}"#),
        format!(r#"{{{base},"exp":{live},"roles":["admin"],"\u0072oles":[]}}"#),
    ] {
        check(
            &payload,
            &call(&app, &es256_token(&payload)).await,
            Want::Token("malformed token: claims"),
        );
    }
}

#[tokio::test]
async fn payloads_that_are_not_json_objects_are_refused() {
    let app = app(&[&key("es256")]);
    let not_object = Want::Token("claims are not a JSON object");
    let exp = NOW + 3600;
    for payload in [
        String::new(),
        "not json".to_string(),
        r#""foo""#.to_string(),
        "[]".to_string(),
        format!("[{exp}]"),
        format!(r#"[null,null,null,null,null,{exp}]"#),
        format!(r#"["{ISSUER}","{AUDIENCE}","alice",{NOW},{exp}]"#),
        "null".to_string(),
        "5".to_string(),
        "true".to_string(),
        format!(r#"{{"exp":{exp}"#),
        format!(r#"{{"exp":{exp}}} {{}}"#),
        format!(r#"{{"exp":{exp}}}garbage"#),
    ] {
        check(&payload, &call(&app, &es256_token(&payload)).await, not_object);
    }
    // The same with no issuer or audience configured, so that nothing else could fail.
    let lax = app_with(
        Verifier::builder().clock(|| UNIX_EPOCH + Duration::from_secs(NOW as u64)),
        &[&key("es256")],
    );
    for payload in [
        format!("[{exp}]"),
        format!(r#"[null,null,null,null,null,{exp}]"#),
        "[]".to_string(),
    ] {
        check(&payload, &call(&lax, &es256_token(&payload)).await, not_object);
    }
    check(
        "control",
        &call(&lax, &es256_token(&format!(r#"{{"exp":{exp}}}"#))).await,
        Want::Pass,
    );
}

// ---------------------------------------------------------------------------------------
// Header parameters that must not be trusted
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn crit_headers_are_refused_whatever_their_value() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let payload_text = claims().to_string();
    for crit in [
        r#"["exp"]"#,
        r#"["b64"]"#,
        r#"["http://unknown.example/ext"]"#,
        r#"["alg"]"#,
        r#"[""]"#,
        "[]",
        r#""exp""#,
        "5",
        "true",
        "{}",
        "null",
    ] {
        let header = format!(r#"{{"alg":"ES256","kid":"py-es256","crit":{crit},"b64":false}}"#);
        let token = sign_text(&es256, &header, &payload_text);
        check(
            &header,
            &call(&app, &token).await,
            Want::Token("unsupported critical header"),
        );
    }
}

#[tokio::test]
async fn jku_x5u_jwk_and_x5c_headers_are_never_fetched_nor_trusted() {
    let es256 = key("es256");
    let attacker = fresh_es256("attacker");
    let impostor = attacker.with_kid("py-es256");
    let real = JwksServer::start(&jwks_of(&[&es256])).await;
    let trap = JwksServer::start(&jwks_of(&[&attacker, &impostor])).await;
    let remote = RemoteJwks::builder(real.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(strict().build().expect("verifier"), remote));
    let payload_text = claims().to_string();
    let trap_url = trap.url();
    let x5c = json!([STANDARD.encode(b"a self-signed certificate for the attacker key")]);

    let attacks: Vec<(&str, Value, Want)> = vec![
        (
            "jku to the attacker's keys, attacker kid",
            json!({"alg": "ES256", "kid": "attacker", "jku": trap_url}),
            Want::Token("unknown key id"),
        ),
        (
            "jku to the attacker's keys, real kid",
            json!({"alg": "ES256", "kid": "py-es256", "jku": trap_url}),
            Want::Token("invalid signature"),
        ),
        (
            "x5u to the attacker's keys, real kid",
            json!({"alg": "ES256", "kid": "py-es256", "x5u": trap_url}),
            Want::Token("invalid signature"),
        ),
        (
            "x5u, attacker kid",
            json!({"alg": "ES256", "kid": "attacker", "x5u": trap_url}),
            Want::Token("unknown key id"),
        ),
        (
            "embedded jwk, no kid",
            json!({"alg": "ES256", "jwk": attacker.jwk}),
            Want::Token("invalid signature"),
        ),
        (
            "embedded jwk, its own kid",
            json!({"alg": "ES256", "kid": "attacker", "jwk": attacker.jwk}),
            Want::Token("unknown key id"),
        ),
        (
            "embedded jwk, real kid",
            json!({"alg": "ES256", "kid": "py-es256", "jwk": impostor.jwk}),
            Want::Token("invalid signature"),
        ),
        (
            "x5c, real kid",
            json!({"alg": "ES256", "kid": "py-es256", "x5c": x5c}),
            Want::Token("invalid signature"),
        ),
        (
            "everything at once",
            json!({"alg": "ES256", "jku": trap_url, "x5u": trap_url, "jwk": attacker.jwk, "x5c": x5c}),
            Want::Token("invalid signature"),
        ),
    ];
    for (case, header, want) in attacks {
        let token = sign_text(&attacker, &header.to_string(), &payload_text);
        check(case, &call(&app, &token).await, want);
    }

    // The real key's tokens pass on their own merit, whatever they point at.
    for header in [
        json!({"alg": "ES256", "kid": "py-es256", "jku": trap_url}),
        json!({"alg": "ES256", "kid": "py-es256", "x5u": trap_url}),
        json!({"alg": "ES256", "kid": "py-es256", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "kid": "py-es256", "x5c": x5c}),
        json!({"alg": "ES256", "jku": trap_url, "x5u": trap_url, "jwk": attacker.jwk, "x5c": x5c}),
    ] {
        let answer = call(&app, &sign_text(&es256, &header.to_string(), &payload_text)).await;
        check(&header.to_string(), &answer, Want::Pass);
        assert_eq!(
            answer.body["kid"], "py-es256",
            "verified by the real key: {answer:?}"
        );
    }
    assert_eq!(trap.hits(), 0, "a URL taken from a token was fetched");
    assert!(real.hits() >= 1);
}

// ---------------------------------------------------------------------------------------
// Key selection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_kids_are_refused_with_a_fixed_key_set() {
    let es256 = key("es256");
    let app = app(&[&es256]);
    let payload_text = claims().to_string();
    let long = "k".repeat(4000);
    for kid in [
        "nobody",
        "",
        "PY-ES256",
        "py-es256 ",
        "py-es2560",
        "../jwks.json",
        "https://evil.test/jwks.json",
        long.as_str(),
    ] {
        let header = json!({"alg": "ES256", "kid": kid}).to_string();
        // Signed by the real key: only the kid is wrong.
        let token = sign_text(&es256, &header, &payload_text);
        let case = format!("kid {:?}", &kid[..kid.len().min(40)]);
        check(&case, &call(&app, &token).await, Want::Token("unknown key id"));
    }
}

#[tokio::test]
async fn a_kidless_token_is_refused_when_several_keys_fit() {
    let es256 = key("es256");
    let other = fresh_es256("other");
    let payload_text = claims().to_string();
    let kidless = sign_text(&es256, r#"{"alg":"ES256"}"#, &payload_text);
    let two = app(&[&es256, &other]);
    check(
        "two P-256 keys",
        &call(&two, &kidless).await,
        Want::Token("several keys fit"),
    );
    let mut no_kids = jwks_of(&[&es256, &other]);
    for jwk in no_kids["keys"].as_array_mut().expect("keys") {
        jwk.as_object_mut().expect("jwk").remove("kid");
    }
    let set = KeySet::from_jwks(no_kids.to_string().as_bytes()).expect("set");
    let anonymous = guarded_app(JwtAuthLayer::new(strict().build().expect("verifier"), set));
    check(
        "two P-256 keys without kids",
        &call(&anonymous, &kidless).await,
        Want::Token("several keys fit"),
    );
    // One fitting key (others are of other types) is unambiguous.
    let one = app(&[&es256, &key("es384"), &key("rs256")]);
    check(
        "one P-256 key among others",
        &call(&one, &kidless).await,
        Want::Pass,
    );
}
