//! `RemoteJwks` against a scriptable JWKS server on loopback, with paused time: refresh
//! policy, cache headers, conditional requests, hostile endpoints and real-world sets.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use tower_jwt_auth::{JwtAuthLayer, RemoteJwks};

async fn server_with(headers: &[(&str, &str)]) -> JwksServer {
    let server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    server.set(|s| {
        for (name, value) in headers {
            s.headers.push((name.to_string(), value.to_string()));
        }
    });
    server
}

#[tokio::test(start_paused = true)]
async fn the_background_refresh_lands_ahead_of_max_age_within_the_jitter_bounds() {
    let server = server_with(&[("cache-control", "public, max-age=600")]).await;
    let _jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    settle(Duration::from_secs(700), || server.hits() >= 2).await;
    let gap = server.first_gap();
    // 90 % of 600 s, +-10 %: between 486 s and 594 s.
    assert!((486.0..=594.5).contains(&gap), "refreshed after {gap} s");
}

#[tokio::test(start_paused = true)]
async fn max_age_is_clamped_to_the_configured_bounds() {
    for (header, min, max, expected) in [
        ("max-age=5", 60, 3600, 60.0),
        ("max-age=999999", 60, 3600, 3600.0),
        ("no-store", 120, 3600, 120.0),
        ("no-cache", 120, 3600, 120.0),
    ] {
        let server = server_with(&[("cache-control", header)]).await;
        let _jwks = RemoteJwks::builder(server.url())
            .min_refresh(Duration::from_secs(min))
            .max_refresh(Duration::from_secs(max))
            .build()
            .await
            .expect("jwks");
        settle(Duration::from_secs(4000), || server.hits() >= 2).await;
        let gap = server.first_gap();
        let (low, high) = (expected * 0.81, expected * 0.99 + 0.5);
        assert!(
            (low..=high).contains(&gap),
            "{header}: refreshed after {gap} s, expected ~{expected}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_cache_headers_the_refresh_interval_applies() {
    let server = server_with(&[]).await;
    let _jwks = RemoteJwks::builder(server.url())
        .refresh_interval(Duration::from_secs(200))
        .build()
        .await
        .expect("jwks");
    settle(Duration::from_secs(300), || server.hits() >= 2).await;
    let gap = server.first_gap();
    assert!((162.0..=198.5).contains(&gap), "refreshed after {gap} s");
}

#[tokio::test(start_paused = true)]
async fn conditional_requests_and_304_keep_the_set_and_make_it_fresh_again() {
    let k = key("es256");
    let server = server_with(&[
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ])
    .await;
    let jwks = RemoteJwks::builder(server.url())
        .max_stale(Duration::from_secs(400))
        .build()
        .await
        .expect("jwks");
    server.set(|s| {
        s.status = StatusCode::NOT_MODIFIED;
        s.body = Vec::new();
    });
    settle(Duration::from_secs(400), || jwks.health().not_modified >= 1).await;
    let headers = server
        .last_request_headers
        .lock()
        .expect("h")
        .clone()
        .expect("request seen");
    assert_eq!(headers["if-none-match"], "\"v1\"");
    assert_eq!(headers["if-modified-since"], "Tue, 01 Dec 2026 10:00:00 GMT");
    let health = jwks.health();
    assert!(health.ready && health.keys == 1, "{health:?}");
    assert!(
        health.age.expect("age") < Duration::from_secs(5),
        "304 resets the age: {health:?}"
    );
    // Two 304s take the set past max_stale since its first download: still served.
    settle(Duration::from_secs(400), || jwks.health().not_modified >= 2).await;
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_are_remembered_for_the_cooldown_then_looked_up_again() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    let stranger = k.with_kid("stranger").sign(&good_claims());
    tokio::time::advance(Duration::from_secs(31)).await;
    call(&app, &stranger).await.assert_invalid_token("unknown key id");
    assert_eq!(server.hits(), 2, "the first sight of a kid is worth a fetch");
    // Another fetch is under way (forced refresh) : the remembered kid does not join it.
    server.set(|s| s.delay = Duration::from_secs(1));
    let refresh = tokio::spawn({
        let jwks = jwks.clone();
        async move { jwks.refresh().await }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    call(&app, &stranger).await.assert_invalid_token("unknown key id");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "rejected at once, no waiting"
    );
    refresh.await.expect("join").expect("refresh");
    let health = jwks.health();
    assert_eq!(health.rejected_kids, 1, "{health:?}");
    assert_eq!(health.unknown_kid_refetches, 1, "{health:?}");
    // Once the cooldown has passed, the kid is worth one more look.
    tokio::time::advance(Duration::from_secs(31)).await;
    let before = server.hits();
    server.set(|s| s.delay = Duration::ZERO);
    call(&app, &stranger).await.assert_invalid_token("unknown key id");
    assert_eq!(server.hits(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_misses_cause_one_fetch() {
    let old = key("es256").with_kid("old");
    let new = key("es384").with_kid("new");
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    server.set_jwks(&jwks_of(&[&old, &new]));
    server.set(|s| s.delay = Duration::from_millis(300));
    tokio::time::advance(Duration::from_secs(31)).await;
    let token = new.sign(&good_claims());
    let calls = (0..10_000).map(|_| {
        let app = app.clone();
        let token = token.clone();
        tokio::spawn(async move { call(&app, &token).await.status })
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status.expect("task"), StatusCode::OK);
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(jwks.health().tokens_accepted, 10_000);
}

/// Builds against a server scripted by `script` and returns the build error text.
async fn build_error(script: impl FnOnce(&mut Script)) -> String {
    let server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    server.set(script);
    let err = RemoteJwks::builder(server.url())
        .build()
        .await
        .expect_err("must fail")
        .to_string();
    assert!(err.contains(&server.url()), "names the URL: {err}");
    err
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_fails_within_the_fetch_timeout() {
    let started = Instant::now();
    let err = build_error(|s| s.delay = Duration::from_secs(60)).await;
    assert!(err.contains("timed out"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn huge_responses_are_cut_off_while_reading() {
    let huge = format!(r#"{{"keys": [], "pad": "{}"}}"#, "x".repeat(2 << 20)).into_bytes();
    let err = build_error(|s| s.body = huge.clone()).await;
    assert!(err.contains("larger than"), "{err}");
    let err = build_error(|s| {
        s.body = huge;
        s.chunked = true;
    })
    .await;
    assert!(err.contains("larger than"), "chunked, no content-length: {err}");
}

#[tokio::test(start_paused = true)]
async fn garbage_html_and_non_key_set_bodies_are_failed_fetches() {
    for (body, expect) in [
        (&b"\x00\xff\xfe garbage"[..], "not a JWK set"),
        (b"<html><body>Service Unavailable</body></html>", "not a JWK set"),
        (br#"{"keys": 5}"#, "not a JWK set"),
        (br#"{"keys": []}"#, "no usable signing keys"),
        (
            br#"{"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}"#,
            "no usable signing keys",
        ),
    ] {
        let err = build_error(|s| s.body = body.to_vec()).await;
        assert!(err.contains(expect), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn statuses_other_than_200_are_failed_fetches_and_redirects_are_not_followed() {
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::NOT_FOUND,
        StatusCode::NO_CONTENT,
    ] {
        let err = build_error(|s| s.status = status).await;
        assert!(err.contains(status.as_str()), "{err}");
    }
    // The redirect target is a perfectly good key set: it must still not be used.
    let target = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let err = build_error(|s| {
        s.status = StatusCode::FOUND;
        s.headers.push(("location".into(), target.url()));
    })
    .await;
    assert!(err.contains("302"), "{err}");
    assert_eq!(target.hits(), 0);
}

#[tokio::test]
async fn plain_http_is_refused_except_to_loopback() {
    for url in [
        "http://idp.example/jwks.json",
        "ftp://127.0.0.1/jwks",
        "not a url",
        "http://10.0.0.1/jwks",
    ] {
        let err = RemoteJwks::builder(url).lazy().expect_err("refused");
        assert!(err.to_string().contains("URL"), "{url}: {err}");
    }
    for url in [
        "http://127.0.0.1:1/jwks",
        "http://localhost:1/jwks",
        "http://[::1]:1/jwks",
    ] {
        assert!(RemoteJwks::builder(url).lazy().is_ok(), "{url}");
    }
}

#[tokio::test]
async fn one_malformed_key_among_good_ones_spoils_nothing() {
    let good = key("es256");
    let mut keys = jwks_of(&[&good, &key("rs256")]);
    let list = keys["keys"].as_array_mut().expect("keys");
    list.insert(
        0,
        json!({"kty": "EC", "kid": "broken", "crv": "P-256", "x": "!!!", "y": 12}),
    );
    list.push(json!({"kty": "RSA", "kid": "tiny", "n": "AQAB", "e": "AQAB", "use": "sig"}));
    list.push(json!({"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}));
    let server = JwksServer::start(&keys).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let set = jwks.keys().expect("keys");
    assert_eq!(set.len(), 2);
    let skipped: Vec<_> = set.skipped().iter().filter_map(|s| s.kid.as_deref()).collect();
    assert_eq!(skipped, ["broken", "tiny", "secret"]);
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(
        call(&app, &good.sign(&good_claims())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, &key("rs256").sign(&good_claims())).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn duplicate_kids_of_different_types_each_verify_their_own_algorithm() {
    let ec = key("es256").with_kid("shared");
    let rsa = key("rs256").with_kid("shared");
    let server = JwksServer::start(&jwks_of(&[&ec, &rsa])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(call(&app, &ec.sign(&good_claims())).await.status, StatusCode::OK);
    assert_eq!(call(&app, &rsa.sign(&good_claims())).await.status, StatusCode::OK);
    // An RSA signature presented as ES256 under the shared kid is not let through.
    let forged = rsa.sign_raw(&json!({"alg": "ES256", "kid": "shared"}), &good_claims());
    call(&app, &forged).await.assert_invalid_token("signature");
}

#[tokio::test(start_paused = true)]
async fn health_reports_rejections_by_reason() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    call(&app, &k.sign(&expired))
        .await
        .assert_invalid_token("expired");
    call(&app, &k.sign(&expired))
        .await
        .assert_invalid_token("expired");
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
    call_with(&app, &[]).await;
    let health = jwks.health();
    assert_eq!(health.tokens_accepted, 1);
    assert_eq!(health.tokens_rejected.get("expired"), Some(&2));
    assert_eq!(health.tokens_rejected.get("missing_token"), Some(&1));
    assert_eq!(health.fetches, 1);
}
