//! Valid tokens of every supported algorithm pass, including tokens signed by PyJWT,
//! and the handler sees the claims.
#![cfg(feature = "axum")]

mod common;

use common::*;
use serde_json::json;
use tower_jwt_auth::{JwtAuthLayer, KeySet, RemoteJwks};

#[tokio::test]
async fn pyjwt_tokens_of_every_algorithm_verify_through_a_remote_jwks() {
    let server = JwksServer::start(&fixture_jwks()).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    let tokens = fixture_tokens();
    for name in KEY_NAMES {
        let case = &tokens[format!("{name}_valid")];
        let answer = call(&app, case["token"].as_str().expect("token")).await;
        assert_eq!(answer.status, 200, "{name}: {answer:?}");
        assert_eq!(answer.body["claims"]["sub"], format!("user-{name}"));
        assert_eq!(answer.body["claims"]["org"]["name"], "acme");
        assert_eq!(answer.body["kid"], case["kid"]);
    }
    assert_eq!(server.hits(), 1, "one fetch serves every token");
}

#[tokio::test]
async fn pyjwt_edge_cases_are_judged_like_pyjwt_judges_them() {
    let keys = KeySet::from_jwks(fixture_jwks().to_string().as_bytes()).expect("keys");
    let app = guarded_app(JwtAuthLayer::new(verifier(), keys));
    let tokens = fixture_tokens();
    let token = |name: &str| tokens[name]["token"].as_str().expect("token").to_string();
    for ok in ["es256_float_dates", "es256_aud_array", "es256_no_kid"] {
        assert_eq!(call(&app, &token(ok)).await.status, 200, "{ok}");
    }
    call(&app, &token("es256_expired"))
        .await
        .assert_invalid_token("expired");
    call(&app, &token("es256_wrong_iss"))
        .await
        .assert_invalid_token("issuer");
    call(&app, &token("es256_wrong_aud"))
        .await
        .assert_invalid_token("audience");
}

#[tokio::test]
async fn our_own_signed_tokens_of_every_algorithm_verify() {
    let keys: Vec<TestKey> = KEY_NAMES.iter().map(|n| key(n)).collect();
    let set =
        KeySet::from_jwks(jwks_of(&keys.iter().collect::<Vec<_>>()).to_string().as_bytes()).expect("set");
    let app = guarded_app(JwtAuthLayer::new(verifier(), set));
    for k in &keys {
        let mut claims = good_claims();
        claims["sub"] = json!(format!("sub-{}", k.kid));
        let answer = call(&app, &k.sign(&claims)).await;
        assert_eq!(answer.status, 200, "{}: {answer:?}", k.kid);
        assert_eq!(answer.body["claims"]["sub"], format!("sub-{}", k.kid));
    }
}
