//! Key rotation and outages against a real JWKS server on loopback, with paused time.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use http::StatusCode;
use serde_json::json;
use tower_jwt_auth::{JwtAuthLayer, RemoteJwks};

struct Setup {
    server: JwksServer,
    jwks: RemoteJwks,
    app: axum::Router,
    old: TestKey,
    new: TestKey,
}

async fn setup() -> Setup {
    let old = key("es256").with_kid("old");
    let new = key("es384").with_kid("new");
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    Setup {
        server,
        jwks,
        app,
        old,
        new,
    }
}

#[tokio::test(start_paused = true)]
async fn a_newly_published_kid_is_accepted_on_first_sight_after_the_cooldown() {
    let s = setup().await;
    s.server.set_jwks(&jwks_of(&[&s.old, &s.new]));
    tokio::time::advance(Duration::from_secs(31)).await;
    let answer = call(&s.app, &s.new.sign(&good_claims())).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["kid"], "new");
    assert_eq!(s.server.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn within_the_cooldown_an_unknown_kid_is_rejected_without_a_fetch() {
    let s = setup().await;
    s.server.set_jwks(&jwks_of(&[&s.old, &s.new]));
    call(&s.app, &s.new.sign(&good_claims()))
        .await
        .assert_invalid_token("unknown key id");
    assert_eq!(s.server.hits(), 1);
    assert_eq!(s.jwks.health().rejected_kids, 1);
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_with_a_new_kid_cause_one_fetch() {
    let s = setup().await;
    s.server.set_jwks(&jwks_of(&[&s.old, &s.new]));
    s.server.set(|script| script.delay = Duration::from_millis(200));
    tokio::time::advance(Duration::from_secs(31)).await;
    let token = s.new.sign(&good_claims());
    let answers = join_all((0..1000).map(|_| call(&s.app, &token))).await;
    assert!(
        answers.iter().all(|a| a.status == StatusCode::OK),
        "{:?}",
        answers[0]
    );
    assert_eq!(s.server.hits(), 2, "one initial fetch and one for the new kid");
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_random_kids_costs_at_most_one_fetch_per_cooldown() {
    let s = setup().await;
    let attacker = key("es256");
    // Five simulated minutes, one bogus kid every 100 ms.
    for i in 0..3000 {
        let token = attacker.with_kid(&format!("bogus-{i}")).sign(&good_claims());
        let answer = call(&s.app, &token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // 300 s / 30 s cooldown = 10 refetches at most, plus the initial fetch and the
    // background refreshes (every 5 min +-10 %: at most one here).
    let hits = s.server.hits();
    assert!(hits <= 12, "{hits} fetches");
    assert!(
        hits >= 2,
        "unknown kids must trigger refetches after the cooldown"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_key_stops_verifying_after_the_next_refresh() {
    let s = setup().await;
    let token = s.old.sign(&good_claims());
    assert_eq!(call(&s.app, &token).await.status, StatusCode::OK);
    s.server.set_jwks(&jwks_of(&[&s.new]));
    tokio::time::advance(Duration::from_secs(331)).await;
    settle(Duration::from_secs(200), || s.server.hits() >= 2).await;
    settle(Duration::from_secs(200), || {
        !s.jwks.keys().expect("keys").contains_kid("old")
    })
    .await;
    call(&s.app, &token).await.assert_invalid_token("unknown key id");
}

#[tokio::test(start_paused = true)]
async fn keys_stay_usable_while_the_endpoint_is_down_and_recover_after() {
    let s = setup().await;
    let token = s
        .old
        .sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 86_400 * 3}));
    s.server
        .set(|script| script.status = StatusCode::INTERNAL_SERVER_ERROR);
    tokio::time::advance(Duration::from_secs(331)).await;
    settle(Duration::from_secs(200), || s.jwks.health().failures >= 1).await;
    assert_eq!(call(&s.app, &token).await.status, StatusCode::OK);
    let health = s.jwks.health();
    assert!(health.ready);
    assert!(
        health.last_error.as_deref().unwrap_or_default().contains("500"),
        "{health:?}"
    );
    s.server.set_jwks(&jwks_of(&[&s.old]));
    settle(Duration::from_secs(200), || s.jwks.health().last_error.is_none()).await;
}

#[tokio::test(start_paused = true)]
async fn past_max_stale_the_answer_is_503_until_the_provider_returns() {
    let old = key("es256").with_kid("old");
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    let jwks = RemoteJwks::builder(server.url())
        .max_stale(Duration::from_secs(600))
        .build()
        .await
        .expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    let token = old.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 86_400}));
    server.set(|script| script.status = StatusCode::BAD_GATEWAY);
    tokio::time::advance(Duration::from_secs(601)).await;
    let answer = call(&app, &token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.www_authenticate, None);
    // Back up: the next request after the cooldown fetches again and succeeds.
    server.set_jwks(&jwks_of(&[&old]));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(call(&app, &token).await.status, StatusCode::OK);
    assert!(jwks.health().ready);
}

#[tokio::test(start_paused = true)]
async fn with_no_keys_ever_loaded_requests_get_503_and_build_names_the_url() {
    let server = JwksServer::start(&json!({"keys": []})).await;
    server.set(|script| script.status = StatusCode::NOT_FOUND);
    let err = RemoteJwks::builder(server.url())
        .build()
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains(&server.url()), "{err}");
    assert!(err.to_string().contains("404"), "{err}");

    let jwks = RemoteJwks::builder(server.url()).lazy().expect("lazy");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    let answer = call(&app, &key("es256").sign(&good_claims())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!jwks.health().ready);
}

#[tokio::test(start_paused = true)]
async fn a_lazy_source_serves_once_the_first_fetch_succeeds() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).lazy().expect("lazy");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_gives_up_does_not_cancel_the_fetch_others_wait_on() {
    let s = setup().await;
    s.server.set_jwks(&jwks_of(&[&s.old, &s.new]));
    s.server.set(|script| script.delay = Duration::from_secs(2));
    tokio::time::advance(Duration::from_secs(31)).await;
    let token = s.new.sign(&good_claims());
    let gave_up = tokio::time::timeout(Duration::from_millis(100), call(&s.app, &token)).await;
    assert!(
        gave_up.is_err(),
        "the first request must still be waiting when dropped"
    );
    settle(Duration::from_secs(200), || {
        s.jwks.keys().is_some_and(|k| k.contains_kid("new"))
    })
    .await;
    assert_eq!(call(&s.app, &token).await.status, StatusCode::OK);
    assert_eq!(s.server.hits(), 2);
}
