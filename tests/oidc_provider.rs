//! Real access tokens from a real OpenID Provider (panva's `oidc-provider`, run by node on
//! loopback, see tests/oidc) verify through OpenID Connect discovery for each of RS256,
//! PS256, ES256 and EdDSA, as RFC 9068 access tokens (`typ: at+jwt`); wrong audiences,
//! issuers and missing scopes are rejected. Needs `npm ci --prefix tests/oidc` first.
#![cfg(feature = "axum")]

mod common;

use axum::Router;
use common::oidc::{OIDC_ALGS, OidcProvider, jwt_claims, jwt_header};
use common::*;
use tower_jwt_auth::{JwtAuthLayer, RemoteJwks, Verifier};

/// An app that discovers the provider's keys and accepts its access tokens for this
/// issuer and audience.
async fn app_trusting(provider: &OidcProvider, issuer: &str, audience: &str) -> Router {
    app_with(provider, Verifier::builder().issuer(issuer).audience(audience)).await
}

async fn app_with(provider: &OidcProvider, verifier: tower_jwt_auth::VerifierBuilder) -> Router {
    let jwks = RemoteJwks::discover(&provider.issuer)
        .build()
        .await
        .expect("discovery and keys from the provider");
    assert_eq!(
        jwks.url(),
        provider.jwks_uri,
        "discovery found the provider's jwks_uri"
    );
    let verifier = verifier.require_typ("at+jwt").build().expect("verifier");
    guarded_app(JwtAuthLayer::new(verifier, jwks))
}

#[tokio::test]
async fn required_scopes_are_checked_against_real_tokens() {
    let provider = OidcProvider::shared().await;
    let resource = provider.resource("ES256");
    let verifier = Verifier::builder()
        .issuer(&provider.issuer)
        .audience(resource)
        .require_scopes(["admin"]);
    let app = app_with(provider, verifier).await;
    assert_eq!(
        call(&app, &provider.token("ES256", "read admin").await)
            .await
            .status,
        200
    );
    let answer = call(&app, &provider.token("ES256", "read write").await).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let challenge = answer.www_authenticate.expect("challenge");
    assert!(challenge.contains(r#"error="insufficient_scope""#) && challenge.contains(r#"scope="admin""#));
}

#[tokio::test]
async fn discovery_with_an_issuer_that_differs_from_the_metadata_is_refused() {
    let provider = OidcProvider::shared().await;
    let err = RemoteJwks::discover(format!("{}/", provider.issuer))
        .build()
        .await
        .expect_err("issuer mismatch");
    assert!(err.to_string().contains("expected exactly"), "{err}");
}

#[tokio::test]
async fn real_access_tokens_are_refused_where_id_tokens_are_expected() {
    let provider = OidcProvider::shared().await;
    let resource = provider.resource("RS256");
    let jwks = RemoteJwks::discover(&provider.issuer)
        .build()
        .await
        .expect("discovery");
    let verifier = Verifier::builder()
        .issuer(&provider.issuer)
        .audience(resource)
        .reject_typ("at+jwt")
        .build()
        .expect("verifier");
    let app = guarded_app(JwtAuthLayer::new(verifier, jwks));
    call(&app, &provider.token("RS256", "read").await)
        .await
        .assert_invalid_token("typ");
}

#[tokio::test]
async fn real_access_tokens_of_every_algorithm_verify() {
    let provider = OidcProvider::shared().await;
    for alg in OIDC_ALGS {
        let resource = provider.resource(alg);
        let token = provider.token(alg, "read write").await;
        let header = jwt_header(&token);
        println!("{alg}: header {header}");
        assert_eq!(header["alg"], alg, "{header}");
        assert_eq!(header["typ"], "at+jwt", "RFC 9068 access token: {header}");
        assert_eq!(header["kid"], alg.to_lowercase(), "{header}");

        let answer = call(&app_trusting(provider, &provider.issuer, resource).await, &token).await;
        assert_eq!(answer.status, 200, "{alg}: {answer:?}");
        let claims = &answer.body["claims"];
        println!("{alg}: claims {claims}");
        assert_eq!(claims["iss"], provider.issuer.as_str());
        assert_eq!(claims["aud"], resource, "aud is the resource, a string");
        assert_eq!(claims["scope"], "read write", "space-delimited scope string");
        assert_eq!(claims["client_id"], provider.client_id.as_str());
        assert_eq!(
            claims["sub"],
            provider.client_id.as_str(),
            "client_credentials: sub is the client"
        );
        assert!(claims["jti"].is_string() && claims["iat"].is_u64() && claims["exp"].is_u64());
        assert_eq!(answer.body["kid"], header["kid"]);
    }
}

#[tokio::test]
async fn granted_scopes_are_the_requested_ones_the_resource_knows() {
    let provider = OidcProvider::shared().await;
    let token = provider.token("ES256", "read write admin").await;
    let app = app_trusting(provider, &provider.issuer, provider.resource("ES256")).await;
    let answer = call(&app, &token).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["claims"]["scope"], "read write admin");

    // A scope the resource does not know is dropped, not refused.
    let token = provider.token("ES256", "admin deploy").await;
    assert_eq!(jwt_claims(&token)["scope"], "admin");
    assert_eq!(call(&app, &token).await.body["claims"]["scope"], "admin");

    // No scope requested: no scope claim at all.
    let token = provider.token("ES256", "").await;
    assert!(
        jwt_claims(&token).get("scope").is_none(),
        "{}",
        jwt_claims(&token)
    );
    assert_eq!(call(&app, &token).await.status, 200);
}

#[tokio::test]
async fn a_token_for_another_resource_is_rejected_for_its_audience() {
    let provider = OidcProvider::shared().await;
    let app = app_trusting(provider, &provider.issuer, provider.resource("ES256")).await;
    for alg in ["RS256", "EdDSA"] {
        let token = provider.token(alg, "read").await;
        call(&app, &token).await.assert_invalid_token("audience");
    }
    // A prefix of the audience is not the audience.
    let app = app_trusting(provider, &provider.issuer, "urn:api").await;
    let token = provider.token("PS256", "read").await;
    call(&app, &token).await.assert_invalid_token("audience");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_rejected_for_its_issuer() {
    let provider = OidcProvider::shared().await;
    let resource = provider.resource("RS256");
    let token = provider.token("RS256", "read").await;
    let port = provider.issuer.rsplit(':').next().expect("port");
    for issuer in [
        format!("{}/", provider.issuer),
        format!("https://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let answer = call(&app_trusting(provider, &issuer, resource).await, &token).await;
        answer.assert_invalid_token("issuer");
    }
}

#[tokio::test]
async fn the_provider_refuses_an_unknown_resource() {
    let provider = OidcProvider::shared().await;
    let (status, body) = provider.token_response(Some("urn:api:unknown"), "read").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_target", "{body}");
}
