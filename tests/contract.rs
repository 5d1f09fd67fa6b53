//! The Tower contract and the axum integration: types, readiness, extractors, modes.
#![cfg(feature = "axum")]

mod common;

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::routing::get;
use common::*;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use tower::{Service, ServiceExt};
use tower_jwt_auth::{Claims, JwtAuth, JwtAuthLayer, KeySet, ResponseFuture, Verifier};
use tower_layer::Layer;

fn layer() -> JwtAuthLayer {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    JwtAuthLayer::new(
        Verifier::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .build()
            .expect("v"),
        keys,
    )
}

#[test]
fn layer_service_and_future_are_clone_send_sync() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn send<T: Send>() {}
    clone_send_sync::<JwtAuthLayer>();
    clone_send_sync::<JwtAuth<axum::routing::Route, tower_jwt_auth::JsonClaims>>();
    send::<
        ResponseFuture<
            <axum::routing::Route as Service<Request<axum::body::Body>>>::Future,
            axum::body::Body,
        >,
    >();
}

#[test]
fn the_layer_fits_router_layer_and_route_layer() {
    let _: Router = Router::new().route("/", get(|| async { "ok" })).layer(layer());
    let _: Router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(layer());
}

/// A service that only serves when *this instance* was polled ready.
#[derive(Default)]
struct ReadyOnce {
    ready: bool,
}

impl Clone for ReadyOnce {
    fn clone(&self) -> Self {
        // A clone has not been polled ready.
        ReadyOnce { ready: false }
    }
}

impl Service<Request<String>> for ReadyOnce {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        let status = if std::mem::take(&mut self.ready) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut res = Response::new(String::new());
        *res.status_mut() = status;
        std::future::ready(Ok(res))
    }
}

#[tokio::test]
async fn call_uses_the_instance_that_poll_ready_made_ready() {
    let mut svc = layer().layer(ReadyOnce::default());
    let token = key("es256").sign(&good_claims());
    for _ in 0..3 {
        let req = Request::get("/")
            .header("authorization", format!("Bearer {token}"))
            .body(String::new());
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(req.expect("req"))
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn rejections_never_reach_the_inner_service() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let mut svc = layer().layer(tower::service_fn(move |_req: Request<String>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let req = Request::get("/").body(String::new()).expect("req");
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        res.extensions().get::<tower_jwt_auth::AuthError>().is_some(),
        "the reason rides along"
    );
}

#[derive(Debug, Clone, Deserialize)]
struct MyClaims {
    sub: String,
    org: Org,
}

#[derive(Debug, Clone, Deserialize)]
struct Org {
    id: u64,
}

#[tokio::test]
async fn custom_claims_types_are_extracted_and_misfits_are_rejected() {
    async fn handler(Claims(c): Claims<MyClaims>) -> String {
        format!("{}:{}", c.sub, c.org.id)
    }
    let app = Router::new()
        .route("/whoami", get(handler))
        .route_layer(layer().claims::<MyClaims>());
    let mut claims = good_claims();
    claims["org"] = serde_json::json!({"id": 7});
    let ok = call(&app, &key("es256").sign(&claims)).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let misfit = call(&app, &key("es256").sign(&good_claims())).await;
    misfit.assert_invalid_token("expected shape");
}

#[tokio::test]
async fn optional_mode_passes_anonymous_requests_but_rejects_bad_tokens() {
    async fn handler(claims: Option<Claims>) -> String {
        match claims {
            Some(Claims(c)) => format!("user {}", c["sub"]),
            None => "anonymous".into(),
        }
    }
    let app = Router::new()
        .route("/whoami", get(handler))
        .route_layer(layer().optional());
    let anonymous = call_with(&app, &[]).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    let good = call(&app, &key("es256").sign(&good_claims())).await;
    assert_eq!(good.status, StatusCode::OK);
    call(&app, "eyJhbGciOiJub25lIn0.e30.")
        .await
        .assert_invalid_token("algorithm");
}

#[tokio::test]
async fn the_claims_extractor_without_claims_answers_401_with_a_challenge() {
    let app = Router::new().route("/whoami", get(|Claims(_c): Claims| async { "never" }));
    let answer = call_with(&app, &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer realm=\"api\""));
}

#[tokio::test]
async fn route_layer_keeps_unknown_paths_404() {
    let app = guarded_app(layer());
    let res = app
        .oneshot(
            Request::get("/nowhere")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_handler_asking_for_another_claims_type_than_the_layer_makes_is_a_500_not_a_401() {
    async fn handler(Claims(c): Claims<MyClaims>) -> String {
        c.sub
    }
    // The layer produces the default JSON claims; the handler wants MyClaims.
    let app = Router::new().route("/whoami", get(handler)).route_layer(layer());
    let answer = call(&app, &key("es256").sign(&good_claims())).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{answer:?}");
}
