//! The gateway example against real servers on 127.0.0.1:0: proxying with claims,
//! header hygiene, rejections before the upstream, upstream failures, startup checks,
//! the --jwks-* flags, /healthz, /metrics, the log line and the demo; the access-token
//! flags (scopes, typ, lifetime, cookie, optional auth), OIDC discovery, and --config
//! files with several issuers and per-prefix routes.
#![cfg(feature = "axum")]

mod common;
#[allow(dead_code)]
#[path = "../examples/gateway.rs"]
mod gateway;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use clap::{CommandFactory, Parser};
use common::*;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{
    DEFAULT_COOLDOWN, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REFRESH, DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH,
    DEFAULT_REFRESH_INTERVAL, Issuer, JwtAuthLayer, RemoteJwks, Verifier,
};

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// An upstream that records the last request and counts them all.
#[derive(Clone, Default)]
struct Upstream {
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Seen>>>,
}

impl Upstream {
    async fn start() -> (Upstream, SocketAddr) {
        async fn record(State(upstream): State<Upstream>, req: Request) -> &'static str {
            upstream.hits.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            let seen = Seen {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            *upstream.last.lock().expect("last") = Some(seen);
            "from upstream"
        }
        let upstream = Upstream::default();
        let addr = serve(Router::new().fallback(record).with_state(upstream.clone())).await;
        (upstream, addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.last
            .lock()
            .expect("last")
            .clone()
            .expect("the upstream got a request")
    }
}

/// A gateway in front of a recording upstream, verifying tokens of fixture key es256.
struct Setup {
    gateway: SocketAddr,
    upstream: Upstream,
    upstream_addr: SocketAddr,
    key: TestKey,
}

impl Setup {
    async fn start(extra_flags: &[&str]) -> Setup {
        let key = key("es256");
        let jwks = JwksServer::start(&jwks_of(&[&key])).await;
        let (upstream, upstream_addr) = Upstream::start().await;
        let gateway = start_gateway(&format!("http://{upstream_addr}"), &jwks.url(), extra_flags).await;
        Setup {
            gateway,
            upstream,
            upstream_addr,
            key,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    fn token(&self) -> String {
        self.key.sign(&good_claims())
    }
}

/// Builds the gateway (keys fetched) with the test issuer and audience and `extra_flags`.
async fn build_gateway(upstream: &str, jwks_url: &str, extra_flags: &[&str]) -> gateway::Gateway {
    let flags = [
        &[
            "--upstream",
            upstream,
            "--jwks-url",
            jwks_url,
            "--issuer",
            ISSUER,
            "--audience",
            AUDIENCE,
        ],
        extra_flags,
    ]
    .concat();
    gateway::gateway(&args(&flags).expect("flags"))
        .await
        .expect("the gateway starts")
}

async fn start_gateway(upstream: &str, jwks_url: &str, extra_flags: &[&str]) -> SocketAddr {
    serve(build_gateway(upstream, jwks_url, extra_flags).await.app).await
}

fn args(flags: &[&str]) -> Result<gateway::Args, clap::Error> {
    gateway::Args::try_parse_from(std::iter::once("gateway").chain(flags.iter().copied()))
}

/// An address nothing listens on: bound, then released.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// `token`'s header and signature around `other`'s payload: a signature that does not fit.
fn splice(token: &str, other: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = other.split('.').nth(1).expect("payload");
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// A response as the tests look at it.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends one request over a real connection.
async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let res = client.request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, url, headers, "").await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The claims the upstream got, decoded; asserts there was exactly one header.
fn forwarded_claims(headers: &HeaderMap) -> Value {
    let values: Vec<_> = headers.get_all("x-jwt-claims").iter().collect();
    assert_eq!(values.len(), 1, "exactly one x-jwt-claims: {headers:?}");
    let json = URL_SAFE_NO_PAD
        .decode(values[0].as_bytes())
        .expect("base64url without padding");
    serde_json::from_slice(&json).expect("claims JSON")
}

#[tokio::test]
async fn a_valid_request_reaches_the_upstream_with_its_claims_and_without_authorization() {
    let setup = Setup::start(&[]).await;
    let claims = good_claims();
    let token = setup.key.sign(&claims);
    let reply = send(
        Method::POST,
        &setup.url("/orders/7?expand=items"),
        &[
            ("authorization", &bearer(&token)),
            ("cookie", "session=abc"),
            ("x-request-id", "r1"),
        ],
        "hello upstream",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "from upstream");
    let seen = setup.upstream.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/orders/7?expand=items");
    assert_eq!(seen.body, "hello upstream");
    assert_eq!(forwarded_claims(&seen.headers), claims);
    assert!(seen.headers.get("authorization").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers["cookie"], "session=abc");
    assert_eq!(seen.headers["x-request-id"], "r1");
}

#[tokio::test]
async fn forward_token_passes_the_authorization_header_on() {
    let setup = Setup::start(&["--forward-token"]).await;
    let token = setup.token();
    let reply = get(&setup.url("/"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let seen = setup.upstream.last();
    assert_eq!(seen.headers["authorization"], bearer(&token));
    assert_eq!(forwarded_claims(&seen.headers)["sub"], "alice");
}

#[tokio::test]
async fn a_client_sent_claims_header_is_replaced_on_valid_requests() {
    let setup = Setup::start(&[]).await;
    let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
    let headers = [
        ("authorization", bearer(&setup.token())),
        ("x-jwt-claims", forged.clone()),
        ("X-JWT-Claims", forged),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = get(&setup.url("/"), &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(forwarded_claims(&setup.upstream.last().headers)["sub"], "alice");
}

#[tokio::test]
async fn a_client_sent_claims_header_without_a_valid_token_never_reaches_the_upstream() {
    let setup = Setup::start(&[]).await;
    let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
    let reply = get(&setup.url("/"), &[("x-jwt-claims", &forged)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    assert_eq!(setup.upstream.hits(), 0);
}

#[tokio::test]
async fn invalid_tokens_are_rejected_with_a_challenge_and_never_reach_the_upstream() {
    let setup = Setup::start(&[]).await;
    let token = setup.token();
    let mut admin = good_claims();
    admin["sub"] = "admin".into();
    let tampered = splice(&token, &setup.key.sign(&admin));
    let mut expired = good_claims();
    expired["exp"] = (now() - 3600).into();
    let cases = [
        ("no token", None, StatusCode::UNAUTHORIZED),
        ("tampered", Some(tampered), StatusCode::UNAUTHORIZED),
        (
            "expired",
            Some(setup.key.sign(&expired)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong key",
            Some(key("es384").with_kid("py-es256").sign(&good_claims())),
            StatusCode::UNAUTHORIZED,
        ),
        ("garbage", Some("not a token".into()), StatusCode::BAD_REQUEST),
    ];
    for (name, token, status) in cases {
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = get(&setup.url("/orders"), &headers).await;
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        let challenge = reply.headers["www-authenticate"].to_str().expect("ascii");
        assert!(challenge.starts_with("Bearer realm="), "{name}: {challenge}");
    }
    assert_eq!(
        setup.upstream.hits(),
        0,
        "no rejected request reached the upstream"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let setup = Setup::start(&[]).await;
    let auth = bearer(&setup.token());
    let headers = [
        ("authorization", auth.as_str()),
        ("connection", "x-per-hop"),
        ("x-per-hop", "1"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("x-end-to-end", "1"),
    ];
    let reply = get(&setup.url("/"), &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let seen = setup.upstream.last().headers;
    assert!(seen.get("x-per-hop").is_none(), "{seen:?}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen:?}");
    assert_eq!(seen["x-end-to-end"], "1");
    assert_eq!(
        seen["host"],
        setup.upstream_addr.to_string().as_str(),
        "Host names the upstream"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502_with_a_json_error() {
    let key = key("es256");
    let jwks = JwksServer::start(&jwks_of(&[&key])).await;
    let gateway = start_gateway(&format!("http://{}", dead_addr().await), &jwks.url(), &[]).await;
    let auth = bearer(&key.sign(&good_claims()));
    let reply = get(&format!("http://{gateway}/orders"), &[("authorization", &auth)]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn an_unreachable_jwks_at_startup_is_an_error_naming_the_url() {
    let url = format!("http://{}/jwks.json", dead_addr().await);
    let flags = args(&["--upstream", "http://127.0.0.1:9", "--jwks-url", &url]).expect("flags");
    let error = gateway::gateway(&flags).await.expect_err("no keys, no gateway");
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("refused"), "the cause is named: {message}");
}

#[tokio::test]
async fn with_jwks_lazy_the_gateway_starts_without_keys_and_reports_not_ready() {
    let url = format!("http://{}/jwks.json", dead_addr().await);
    let flags = args(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        &url,
        "--jwks-lazy",
    ])
    .expect("flags");
    let started = gateway::gateway(&flags).await.expect("starts without keys");
    let (status, health) = healthz_in_process(started.app.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    let req = http::Request::get("/anything")
        .body(axum::body::Body::empty())
        .expect("request");
    let res = started.app.oneshot(req).await.expect("infallible");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no token is still a 401, keys or not"
    );
}

/// How clap refuses these flags.
fn refusal(flags: &[&str]) -> clap::error::ErrorKind {
    args(flags).expect_err("refused").kind()
}

#[test]
fn the_flags_are_checked_up_front() {
    use clap::error::ErrorKind;
    gateway::Args::command().debug_assert();
    const UPSTREAM: &str = "http://127.0.0.1:9";
    const JWKS: &str = "http://127.0.0.1:9/jwks.json";
    let both = |more: &[&'static str]| [&["--upstream", UPSTREAM, "--jwks-url", JWKS][..], more].concat();
    assert_eq!(refusal(&["--jwks-url", JWKS]), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        refusal(&["--upstream", UPSTREAM]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        refusal(&both(&["--algorithm", "none"])),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        refusal(&both(&["--algorithm", "HS256"])),
        ErrorKind::ValueValidation
    );
    assert_eq!(refusal(&both(&["--leeway", "-1"])), ErrorKind::UnknownArgument);
    let https_upstream = ["--upstream", "https://127.0.0.1:9", "--jwks-url", JWKS];
    assert_eq!(refusal(&https_upstream), ErrorKind::ValueValidation);
    assert_eq!(
        refusal(&["--demo", "--upstream", UPSTREAM]),
        ErrorKind::ArgumentConflict
    );

    let flags = args(&both(&["--algorithm", "ES256", "--algorithm", "EdDSA"])).expect("valid flags");
    assert_eq!(flags.algorithms.len(), 2);
    assert_eq!(flags.leeway, 60);
    assert_eq!(flags.listen, None);
    let plan = gateway::Plan::from_args(&flags).expect("a plan");
    assert_eq!(plan.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(plan.routes, [gateway::RoutePlan::root()]);
    assert!(!flags.forward_token);
    assert!(args(&["--demo"]).expect("--demo alone").demo);
}

#[test]
fn the_help_says_the_gateway_refuses_to_start_without_keys() {
    let help = gateway::Args::command().render_long_help().to_string();
    assert!(help.contains("refuses to start without keys"), "{help}");
}

/// The gateway's /healthz answer, in process (no socket, so paused time is safe).
async fn healthz_in_process(app: Router) -> (StatusCode, Value) {
    let req = http::Request::get(gateway::HEALTHZ)
        .body(axum::body::Body::empty())
        .expect("request");
    let res = app.oneshot(req).await.expect("infallible");
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&body).expect("JSON"))
}

#[tokio::test]
async fn healthz_reports_the_key_set_without_a_token_and_is_never_proxied() {
    let setup = Setup::start(&[]).await;
    let reply = get(&setup.url("/healthz"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["cache-control"], "no-store");
    let health = reply.json();
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["keys"], 1, "{health}");
    assert!(health["age"].as_f64().is_some_and(|age| age >= 0.0), "{health}");
    assert_eq!(health["last_error"], Value::Null, "{health}");
    assert_eq!(
        (health["fetches"].as_u64(), health["failures"].as_u64()),
        (Some(1), Some(0))
    );
    for counter in [
        "not_modified",
        "unknown_kid_refetches",
        "rejected_kids",
        "tokens_accepted",
    ] {
        assert_eq!(health[counter], 0, "{counter}: {health}");
    }
    assert_eq!(health["tokens_rejected"], json!({}), "{health}");

    // A malformed Authorization header does not matter: /healthz is outside the layer.
    let garbage = get(&setup.url("/healthz"), &[("authorization", "Bearer !!")]).await;
    assert_eq!(garbage.status, StatusCode::OK, "{garbage:?}");
    // Only the exact path is the gateway's; below it is proxied and needs a token.
    let below = get(&setup.url("/healthz/deep"), &[]).await;
    assert_eq!(below.status, StatusCode::UNAUTHORIZED, "{below:?}");
    assert_eq!(setup.upstream.hits(), 0, "/healthz never reaches the upstream");
}

#[tokio::test]
async fn healthz_counts_accepted_and_rejected_tokens() {
    let setup = Setup::start(&[]).await;
    let good = get(&setup.url("/"), &[("authorization", &bearer(&setup.token()))]).await;
    let bad = get(&setup.url("/"), &[("authorization", "Bearer e30.e30.c2ln")]).await;
    assert_eq!(
        (good.status, bad.status),
        (StatusCode::OK, StatusCode::UNAUTHORIZED)
    );
    let health = get(&setup.url("/healthz"), &[]).await.json();
    assert_eq!(health["tokens_accepted"], 1, "{health}");
    let rejected = health["tokens_rejected"]
        .as_object()
        .expect("an object by reason");
    assert_eq!(
        rejected.values().filter_map(Value::as_u64).sum::<u64>(),
        1,
        "{health}"
    );
}

#[tokio::test]
async fn healthz_is_503_with_the_error_while_no_keys_are_loaded() {
    let jwks_server = JwksServer::start(&json!({"keys": []})).await;
    jwks_server.set(|script| script.status = StatusCode::INTERNAL_SERVER_ERROR);
    let jwks = RemoteJwks::builder(jwks_server.url())
        .lazy()
        .expect("valid settings");
    jwks.refresh().await.expect_err("the provider answers 500");
    let (upstream, upstream_addr) = Upstream::start().await;
    let upstream_url = format!("http://{upstream_addr}");
    let flags = args(&["--upstream", &upstream_url, "--jwks-url", &jwks_server.url()]).expect("flags");
    let proxy = gateway::Proxy::new(flags.upstream.expect("upstream"), false);
    let verifier = Verifier::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .expect("verifier");
    let route = gateway::Route {
        prefix: "/".into(),
        layer: JwtAuthLayer::new(verifier, jwks.clone()),
    };
    let sources = gateway::KeySources::One(jwks);
    let gateway = serve(gateway::router(vec![route], sources, proxy)).await;

    let reply = get(&format!("http://{gateway}/healthz"), &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let health = reply.json();
    assert_eq!(
        (health["ready"].clone(), health["keys"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(health["age"], Value::Null, "{health}");
    let error = health["last_error"].as_str().expect("the last error");
    assert!(error.contains("500"), "{error}");
    assert!(health["failures"].as_u64() >= Some(1), "{health}");

    let auth = bearer(&key("es256").sign(&good_claims()));
    let guarded = get(&format!("http://{gateway}/orders"), &[("authorization", &auth)]).await;
    assert_eq!(guarded.status, StatusCode::SERVICE_UNAVAILABLE, "{guarded:?}");
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn the_jwks_flags_default_to_the_library_defaults() {
    let flags = args(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        "http://127.0.0.1:9/j",
    ])
    .expect("flags");
    let defaults = [
        (flags.jwks_refresh, DEFAULT_REFRESH_INTERVAL),
        (flags.jwks_min_refresh, DEFAULT_MIN_REFRESH),
        (flags.jwks_max_refresh, DEFAULT_MAX_REFRESH),
        (flags.jwks_cooldown, DEFAULT_COOLDOWN),
        (flags.jwks_max_stale, DEFAULT_MAX_STALE),
        (flags.jwks_timeout, DEFAULT_FETCH_TIMEOUT),
    ];
    for (flag, default) in defaults {
        assert_eq!(Duration::from_secs(flag), default);
    }
    assert_eq!(flags.metrics_listen, None);
}

#[test]
fn the_jwks_flags_map_onto_the_builder() {
    let flags = args(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        "http://127.0.0.1:9/j",
        "--jwks-refresh=120",
        "--jwks-min-refresh=10",
        "--jwks-max-refresh=600",
        "--jwks-cooldown=7",
        "--jwks-max-stale=900",
        "--jwks-timeout=3",
    ])
    .expect("flags");
    // The builder shows its settings only through Debug.
    let builder = format!("{:?}", gateway::jwks_builder("http://127.0.0.1:9/j", &flags));
    let settings = [
        "refresh_interval: 120s",
        "min_refresh: 10s",
        "max_refresh: 600s",
        "cooldown: 7s",
        "max_stale: 900s",
        "timeout: 3s",
    ];
    for setting in settings {
        assert!(builder.contains(setting), "{setting} in {builder}");
    }
}

#[test]
fn out_of_range_jwks_flags_are_refused_naming_the_flag() {
    use clap::error::ErrorKind;
    let base = [
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        "http://127.0.0.1:9/j",
    ];
    let cases = [
        ("--jwks-timeout", "0"),
        ("--jwks-refresh", "0"),
        ("--jwks-max-stale", "0"),
        ("--jwks-cooldown", "1.5"),
        ("--jwks-max-refresh", "31536001"),
        ("--jwks-min-refresh", "18446744073709551615"),
    ];
    for (flag, value) in cases {
        let error = args(&[&base[..], &[flag, value]].concat()).expect_err("refused");
        assert_eq!(
            error.kind(),
            ErrorKind::ValueValidation,
            "{flag} {value}: {error}"
        );
        assert!(error.to_string().contains(flag), "{flag} {value}: {error}");
    }
}

#[tokio::test]
async fn a_min_refresh_above_max_refresh_is_refused_before_any_fetch() {
    let jwks_server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let url = jwks_server.url();
    let flags = args(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        &url,
        "--jwks-min-refresh",
        "100",
        "--jwks-max-refresh",
        "10",
    ])
    .expect("each flag is in range");
    let error = gateway::gateway(&flags).await.expect_err("refused");
    assert!(matches!(error, gateway::StartError::JwksConfig(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("invalid --jwks-* settings: "), "{message}");
    assert!(message.contains("min_refresh"), "{message}");
    assert_eq!(jwks_server.hits(), 0, "refused before fetching");
}

#[tokio::test]
async fn max_stale_bounds_how_long_healthz_stays_ready_without_the_provider() {
    let key = key("es256");
    let jwks_server = JwksServer::start(&jwks_of(&[&key])).await;
    let gateway = build_gateway(
        "http://127.0.0.1:9",
        &jwks_server.url(),
        &["--jwks-max-stale", "60"],
    )
    .await;
    assert_eq!(healthz_in_process(gateway.app.clone()).await.0, StatusCode::OK);
    // In process from here on: paused time and real sockets do not mix.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    let (status, health) = healthz_in_process(gateway.app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    assert!(health["age"].as_f64().is_some_and(|age| age >= 61.0), "{health}");
}

/// This test binary's Prometheus recorder: installed once, shared by the tests.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the only global recorder")
        })
        .clone()
}

/// The sample lines of `metric` in Prometheus text.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

#[tokio::test]
async fn the_metrics_endpoint_counts_tokens_and_fetches_and_reports_the_key_set() {
    let handle = prometheus();
    let setup_key = key("es256");
    let jwks_server = JwksServer::start(&jwks_of(&[&setup_key])).await;
    let (_upstream, upstream_addr) = Upstream::start().await;
    let gw = build_gateway(&format!("http://{upstream_addr}"), &jwks_server.url(), &[]).await;
    let metrics = serve(gateway::metrics_router(handle, gw.sources.clone())).await;
    let addr = serve(gw.app).await;
    let good = get(
        &format!("http://{addr}/"),
        &[("authorization", &bearer(&setup_key.sign(&good_claims())))],
    )
    .await;
    let bad = get(
        &format!("http://{addr}/"),
        &[("authorization", "Bearer e30.e30.c2ln")],
    )
    .await;
    assert_eq!(
        (good.status, bad.status),
        (StatusCode::OK, StatusCode::UNAUTHORIZED)
    );

    let reply = get(&format!("http://{metrics}/metrics"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain"))
    );
    let text = String::from_utf8_lossy(&reply.body);
    let tokens = samples(&text, "jwt_tokens_total");
    assert!(tokens.iter().any(|l| l.contains("result=\"accepted\"")), "{text}");
    assert!(
        tokens
            .iter()
            .any(|l| l.contains("result=\"rejected\"") && l.contains("reason=")),
        "{text}"
    );
    let url_label = format!("url=\"{}\"", gw.sources.key_sets()[0].url());
    let this_source = |metric: &str| {
        samples(&text, metric)
            .into_iter()
            .find(|l| l.contains(&url_label))
    };
    assert!(
        this_source("jwks_fetches_total").is_some_and(|l| l.contains("result=\"ok\"")),
        "{text}"
    );
    assert!(
        this_source("jwks_ready").is_some_and(|l| l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        this_source("jwks_keys").is_some_and(|l| l.ends_with(" 1")),
        "{text}"
    );
    assert!(this_source("jwks_age_seconds").is_some(), "{text}");
    let other = get(&format!("http://{metrics}/healthz"), &[]).await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "the metrics listener serves /metrics only"
    );
}

/// Captures what the fmt subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// The log lines of requests to paths starting with `prefix`.
    fn request_lines(&self, prefix: &str) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().expect("log").clone()).expect("utf-8");
        let needle = format!("path=\"{prefix}");
        text.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The log of this test binary. A global subscriber, not a scoped one: tracing caches
/// per-callsite interest, which a scoped subscriber does not reliably get when other
/// tests run on other threads at the same time.
fn captured_log() -> LogBuffer {
    static LOG: OnceLock<LogBuffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = LogBuffer::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        log
    })
    .clone()
}

#[tokio::test]
async fn each_request_logs_one_line_without_secrets() {
    let log = captured_log();
    let setup = Setup::start(&[]).await;
    let token = setup.token();
    let auth = bearer(&token);
    let secrets = [
        ("authorization", auth.as_str()),
        ("cookie", "session=cookie-secret"),
    ];
    let ok = get(&setup.url("/logged/ok?access_token=query-secret"), &secrets).await;
    let rejected = get(
        &setup.url("/logged/rejected"),
        &[("authorization", "Bearer e30.e30.c2ln")],
    )
    .await;
    assert_eq!(
        (ok.status, rejected.status),
        (StatusCode::OK, StatusCode::UNAUTHORIZED)
    );

    let lines = log.request_lines("/logged/");
    assert_eq!(lines.len(), 2, "one line per request: {lines:#?}");
    let expected = [
        "method=GET",
        "path=\"/logged/ok\"",
        "status=200",
        "latency_ms=",
        "kid=\"py-es256\"",
        "sub=\"alice\"",
    ];
    for field in expected {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    assert!(
        lines[1].contains("status=401") && lines[1].contains("rejected="),
        "{}",
        lines[1]
    );
    for line in &lines {
        for secret in [token.as_str(), "e30.e30.c2ln", "cookie-secret", "query-secret"] {
            assert!(!line.contains(secret), "{line}");
        }
    }
}

/// The URL and bearer token of a printed `curl` line.
fn parse_curl(line: &str) -> (String, Option<String>) {
    let url = line.split_whitespace().last().expect("a URL").to_owned();
    let token = line
        .split_once("Bearer ")
        .map(|(_, rest)| rest.split('\'').next().expect("token").to_owned());
    (url, token)
}

/// What a printed curl line must get: 200 from /healthz and /metrics and with the valid
/// token, 401 otherwise.
fn expected_status(url: &str, token: Option<&str>, demo: &gateway::demo::Demo) -> StatusCode {
    let answered_by_gateway = url.ends_with(gateway::HEALTHZ) || url.ends_with(gateway::METRICS);
    if answered_by_gateway || token == Some(demo.token.as_str()) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Checks one answer to a printed curl line.
fn check_curl_reply(url: &str, reply: &Reply, demo: &gateway::demo::Demo) {
    if url.ends_with(gateway::HEALTHZ) {
        assert_eq!(reply.json()["ready"], true, "{reply:?}");
    } else if url.ends_with(gateway::METRICS) {
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.contains("jwt_tokens_total"), "{text}");
    } else if reply.status == StatusCode::OK {
        let echo = reply.json();
        assert_eq!(echo["claims"]["sub"], gateway::demo::SUBJECT, "{echo}");
        assert_eq!(echo["claims"]["iss"], demo.issuer.as_str(), "{echo}");
        assert_eq!(echo["path"], "/hello");
        assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    } else {
        assert!(reply.headers.contains_key("www-authenticate"), "{url}: {reply:?}");
    }
}

async fn check_printed_curl_lines(demo: &gateway::demo::Demo) {
    let text = demo.instructions();
    let curls: Vec<&str> = text.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 4 + usize::from(demo.metrics.is_some()), "{text}");
    for line in curls {
        let (url, token) = parse_curl(line);
        let status = expected_status(&url, token.as_deref(), demo);
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = get(&url, &headers).await;
        assert_eq!(reply.status, status, "{line}: {reply:?}");
        check_curl_reply(&url, &reply, demo);
    }
    assert!(text.contains(&demo.token), "the token itself is printed");
    assert!(text.contains(gateway::HEALTHZ), "{text}");
}

#[tokio::test]
async fn the_demo_prints_a_token_and_curl_lines_that_work_through_its_gateway() {
    let flags = args(&["--demo", "--listen", "127.0.0.1:0"]).expect("flags");
    let demo = gateway::demo::start(&flags, None).await.expect("the demo starts");
    assert!(demo.taken.is_none());
    check_printed_curl_lines(&demo).await;
}

#[tokio::test]
async fn the_demo_falls_back_to_a_free_port_when_listen_is_taken() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let flags = args(&["--demo", "--listen", &taken_addr]).expect("flags");
    let demo = gateway::demo::start(&flags, None).await.expect("the demo starts");
    assert_eq!(demo.taken.map(|a| a.to_string()), Some(taken_addr.clone()));
    assert_ne!(demo.gateway.to_string(), taken_addr);
    assert!(
        demo.instructions().contains("is taken"),
        "{}",
        demo.instructions()
    );
    check_printed_curl_lines(&demo).await;
}

#[tokio::test]
async fn the_demo_serves_metrics_and_prints_a_curl_line_for_them() {
    let flags = args(&[
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .expect("flags");
    let demo = gateway::demo::start(&flags, Some(prometheus()))
        .await
        .expect("the demo starts");
    let metrics = demo.metrics.expect("a metrics listener");
    assert!(demo.instructions().contains(&format!("http://{metrics}/metrics")));
    check_printed_curl_lines(&demo).await;
}

/// `good_claims()` with these fields replaced; a null field is left out.
fn claims_with(fields: Value) -> Value {
    let mut claims = good_claims();
    let object = claims.as_object_mut().expect("an object");
    for (name, value) in fields.as_object().expect("an object") {
        match value {
            Value::Null => object.remove(name),
            value => object.insert(name.clone(), value.clone()),
        };
    }
    claims
}

/// Asserts a 403 `insufficient_scope` challenge.
fn assert_insufficient_scope(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    let challenge = reply.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
}

#[tokio::test]
async fn a_missing_required_scope_is_403_insufficient_scope_and_never_reaches_the_upstream() {
    let setup = Setup::start(&[
        "--required-scope",
        "orders:read",
        "--required-scope",
        "orders:write",
    ])
    .await;
    for scope in [None, Some("orders:read"), Some("orders:write profile")] {
        let claims = claims_with(json!({"scope": scope}));
        let reply = get(
            &setup.url("/orders"),
            &[("authorization", &bearer(&setup.key.sign(&claims)))],
        )
        .await;
        assert_insufficient_scope(&reply);
    }
    assert_eq!(setup.upstream.hits(), 0, "refused before the upstream");
    let all = setup
        .key
        .sign(&claims_with(json!({"scope": "orders:write orders:read"})));
    let reply = get(&setup.url("/orders"), &[("authorization", &bearer(&all))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let scp = setup
        .key
        .sign(&claims_with(json!({"scp": ["orders:read", "orders:write"]})));
    let reply = get(&setup.url("/orders"), &[("authorization", &bearer(&scp))]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "scp as an array counts too: {reply:?}"
    );
}

#[tokio::test]
async fn require_typ_refuses_a_plain_jwt_and_accepts_an_access_token() {
    let setup = Setup::start(&["--require-typ", "at+jwt"]).await;
    let plain = get(&setup.url("/"), &[("authorization", &bearer(&setup.token()))]).await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED, "{plain:?}");
    assert!(
        plain.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("typ")),
        "{plain:?}"
    );
    assert_eq!(setup.upstream.hits(), 0);
    let header = json!({"alg": "ES256", "kid": setup.key.kid, "typ": "at+jwt"});
    let access = setup.key.sign_raw(&header, &good_claims());
    let reply = get(&setup.url("/"), &[("authorization", &bearer(&access))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test]
async fn max_lifetime_refuses_a_long_lived_token() {
    let setup = Setup::start(&["--max-lifetime", "600"]).await;
    let hour = get(&setup.url("/"), &[("authorization", &bearer(&setup.token()))]).await;
    assert_eq!(
        hour.status,
        StatusCode::UNAUTHORIZED,
        "an hour is over 600 s: {hour:?}"
    );
    assert_eq!(setup.upstream.hits(), 0);
    let short = setup.key.sign(&claims_with(json!({"exp": now() + 300})));
    let reply = get(&setup.url("/"), &[("authorization", &bearer(&short))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test]
async fn cookie_reads_the_token_from_that_cookie_and_does_not_forward_it() {
    let setup = Setup::start(&["--cookie", "access_token"]).await;
    let cookies = format!("theme=dark; access_token={}; lang=en", setup.token());
    let reply = get(&setup.url("/"), &[("cookie", &cookies)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let seen = setup.upstream.last().headers;
    assert_eq!(forwarded_claims(&seen)["sub"], "alice");
    assert_eq!(
        seen["cookie"], "theme=dark; lang=en",
        "the token cookie is removed"
    );

    let header_only = get(&setup.url("/"), &[("authorization", &bearer(&setup.token()))]).await;
    assert_eq!(
        header_only.status,
        StatusCode::UNAUTHORIZED,
        "the header is not read: {header_only:?}"
    );
    let only_token = format!("access_token={}", setup.token());
    let reply = get(&setup.url("/"), &[("cookie", &only_token)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        setup.upstream.last().headers.get("cookie").is_none(),
        "an emptied Cookie header goes"
    );
}

#[tokio::test]
async fn cookie_with_forward_token_forwards_the_cookie() {
    let setup = Setup::start(&["--cookie", "access_token", "--forward-token"]).await;
    let cookies = format!("access_token={}", setup.token());
    let reply = get(&setup.url("/"), &[("cookie", &cookies)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(setup.upstream.last().headers["cookie"], cookies.as_str());
}

#[tokio::test]
async fn optional_auth_passes_anonymous_requests_without_claims_but_refuses_a_bad_token() {
    let setup = Setup::start(&["--optional-auth"]).await;
    let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
    let anonymous = get(&setup.url("/open"), &[("x-jwt-claims", &forged)]).await;
    assert_eq!(anonymous.status, StatusCode::OK, "{anonymous:?}");
    let seen = setup.upstream.last().headers;
    assert!(
        seen.get("x-jwt-claims").is_none(),
        "a client's claims never go on: {seen:?}"
    );

    let mut admin = good_claims();
    admin["sub"] = "admin".into();
    let tampered = splice(&setup.token(), &setup.key.sign(&admin));
    for bad in [tampered, "e30.e30.c2ln".to_owned()] {
        let reply = get(&setup.url("/open"), &[("authorization", &bearer(&bad))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    }
    assert_eq!(setup.upstream.hits(), 1, "bad tokens never reach the upstream");
    let reply = get(&setup.url("/open"), &[("authorization", &bearer(&setup.token()))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(forwarded_claims(&setup.upstream.last().headers)["sub"], "alice");
}

/// An OpenID Provider's metadata on loopback: its issuer is its own URL and its
/// `jwks_uri` is `jwks_uri`. Returns the issuer.
async fn start_discovery(jwks_uri: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let doc = json!({"issuer": issuer, "jwks_uri": jwks_uri});
    let metadata = axum::routing::get(move || std::future::ready(axum::Json(doc.clone())));
    let app = Router::new().route("/.well-known/openid-configuration", metadata);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    issuer
}

#[tokio::test]
async fn oidc_issuer_discovers_the_key_set_and_requires_that_iss() {
    let key = key("es256");
    let jwks = JwksServer::start(&jwks_of(&[&key])).await;
    let issuer = start_discovery(&jwks.url()).await;
    let (upstream, upstream_addr) = Upstream::start().await;
    let upstream_url = format!("http://{upstream_addr}");
    let flags = [
        "--upstream",
        &upstream_url,
        "--oidc-issuer",
        &issuer,
        "--audience",
        AUDIENCE,
    ];
    let gw = gateway::gateway(&args(&flags).expect("no --jwks-url needed"))
        .await
        .expect("discovered");
    assert_eq!(gw.sources.key_sets()[0].url(), jwks.url());
    let gateway = serve(gw.app).await;
    let url = format!("http://{gateway}/orders");

    let ours = key.sign(&claims_with(json!({"iss": issuer})));
    let reply = get(&url, &[("authorization", &bearer(&ours))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(forwarded_claims(&upstream.last().headers)["iss"], issuer.as_str());
    for other in [ISSUER.to_owned(), format!("{issuer}/")] {
        let token = key.sign(&claims_with(json!({"iss": other})));
        let reply = get(&url, &[("authorization", &bearer(&token))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "iss {other}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn oidc_issuer_excludes_jwks_url_and_issuer() {
    use clap::error::ErrorKind;
    const UP: &str = "http://127.0.0.1:9";
    const OIDC: &str = "http://127.0.0.1:9";
    let with = |more: &[&'static str]| [&["--upstream", UP, "--oidc-issuer", OIDC][..], more].concat();
    assert_eq!(
        refusal(&with(&["--jwks-url", "http://127.0.0.1:9/j"])),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(refusal(&with(&["--issuer", ISSUER])), ErrorKind::ArgumentConflict);
    assert_eq!(refusal(&["--upstream", UP]), ErrorKind::MissingRequiredArgument);
    assert_eq!(refusal(&with(&["--demo"])), ErrorKind::ArgumentConflict);
    let plan = gateway::Plan::from_args(&args(&with(&[])).expect("flags")).expect("plan");
    let gateway::KeyPlan::One { target, issuers, .. } = plan.keys else {
        panic!("one key set: {:?}", plan.keys)
    };
    assert_eq!(target, gateway::Target::Discover(OIDC.into()));
    assert_eq!(issuers, [OIDC], "iss must be the discovered issuer");
}

#[test]
fn the_new_flags_are_checked_up_front() {
    use clap::error::ErrorKind;
    let base = [
        "--upstream",
        "http://127.0.0.1:9",
        "--jwks-url",
        "http://127.0.0.1:9/j",
    ];
    let with = |more: &[&str]| refusal(&[&base[..], more].concat());
    assert_eq!(with(&["--required-scope", "a b"]), ErrorKind::ValueValidation);
    assert_eq!(with(&["--required-scope", ""]), ErrorKind::ValueValidation);
    assert_eq!(with(&["--require-typ", ""]), ErrorKind::ValueValidation);
    assert_eq!(with(&["--max-lifetime", "0"]), ErrorKind::ValueValidation);
    assert_eq!(with(&["--cookie", "a;b"]), ErrorKind::ValueValidation);
    assert_eq!(with(&["--cookie", ""]), ErrorKind::ValueValidation);
    assert_eq!(
        with(&["--optional-auth", "--required-scope", "x"]),
        ErrorKind::ArgumentConflict,
        "a client would leave the token out to skip the scope"
    );
    let flags = args(&[&base[..], &["--required-scope", "a", "--require-typ", "at+jwt"]].concat());
    let plan = gateway::Plan::from_args(&flags.expect("flags")).expect("plan");
    assert_eq!(plan.routes[0].scopes, ["a"]);
    assert_eq!(plan.policy.require_typs, ["at+jwt"]);
    let flags = args(&[&base[..], &["--optional-auth", "--cookie", "token"]].concat());
    let plan = gateway::Plan::from_args(&flags.expect("flags")).expect("plan");
    assert!(plan.routes[0].anonymous);
    assert_eq!(plan.policy.cookie.as_deref(), Some("token"));
}

/// A config file in this test binary's temporary directory; `name` keeps tests apart.
fn write_config(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-{name}.toml"));
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn config_flags(path: &Path, more: &[&str]) -> gateway::Args {
    let path = path.to_str().expect("a UTF-8 path");
    args(&[&["--config", path][..], more].concat()).expect("flags")
}

/// How `text` as a config file is refused (read and checked; nothing fetched).
fn config_refusal(name: &str, text: &str) -> String {
    let path = write_config(name, text);
    let error = gateway::Plan::from_args(&config_flags(&path, &[])).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("config file {}: ", path.display())),
        "{message}"
    );
    message
}

const PARTNERS: &str = "https://partners.test";
const PARTNER_AUDIENCE: &str = "partner-api";

/// The routes of the two-issuer gateway.
const ROUTES: &str = r#"
[[route]]
prefix = "/admin"
scopes = ["admin"]

[[route]]
prefix = "/public"
anonymous = true

[[route]]
prefix = "/"
"#;

/// A gateway from a config file with two issuers: "staff" (discovery, ES256, the
/// file's audience) and PARTNERS (a JWKS URL, RS256, its own audience).
struct TwoIssuers {
    gateway: SocketAddr,
    upstream: Upstream,
    staff: String,
    staff_key: TestKey,
    staff_jwks: JwksServer,
    partner_key: TestKey,
    partner_jwks: JwksServer,
}

impl TwoIssuers {
    async fn start(name: &str, routes: &str) -> TwoIssuers {
        let (staff_key, partner_key) = (key("es256"), key("rs256"));
        let staff_jwks = JwksServer::start(&jwks_of(&[&staff_key])).await;
        let partner_jwks = JwksServer::start(&jwks_of(&[&partner_key])).await;
        let staff = start_discovery(&staff_jwks.url()).await;
        let (upstream, upstream_addr) = Upstream::start().await;
        let text = format!(
            "upstream = \"http://{upstream_addr}\"\naudiences = [\"{AUDIENCE}\"]\n\n\
             [[issuer]]\nissuer = \"{staff}\"\nalgorithms = [\"ES256\"]\n\n\
             [[issuer]]\nissuer = \"{PARTNERS}\"\njwks_url = \"{}\"\naudiences = [\"{PARTNER_AUDIENCE}\"]\n{routes}",
            partner_jwks.url()
        );
        let path = write_config(name, &text);
        let gw = gateway::gateway(&config_flags(&path, &[]))
            .await
            .expect("the gateway starts");
        assert_eq!(
            (staff_jwks.hits(), partner_jwks.hits()),
            (1, 1),
            "each key set is built once, whatever the number of routes"
        );
        let gateway = serve(gw.app).await;
        TwoIssuers {
            gateway,
            upstream,
            staff,
            staff_key,
            staff_jwks,
            partner_key,
            partner_jwks,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// A staff token, with `scope` when given.
    fn staff_token(&self, scope: Option<&str>) -> String {
        self.staff_key
            .sign(&claims_with(json!({"iss": self.staff, "scope": scope})))
    }

    fn partner_token(&self, audience: &str) -> String {
        self.partner_key.sign(&claims_with(
            json!({"iss": PARTNERS, "aud": audience, "sub": "bob"}),
        ))
    }

    /// The status of GET `path` with `token` (none: no Authorization header).
    async fn status(&self, path: &str, token: Option<&str>) -> StatusCode {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        get(&self.url(path), &headers).await.status
    }
}

#[tokio::test]
async fn a_config_file_accepts_tokens_of_each_issuer_and_refuses_an_unknown_one_without_a_fetch() {
    let two = TwoIssuers::start("two-issuers", ROUTES).await;
    let staff = two.staff_token(None);
    assert_eq!(two.status("/orders", Some(&staff)).await, StatusCode::OK);
    assert_eq!(
        forwarded_claims(&two.upstream.last().headers)["iss"],
        two.staff.as_str()
    );
    let partner = two.partner_token(PARTNER_AUDIENCE);
    assert_eq!(two.status("/orders", Some(&partner)).await, StatusCode::OK);
    assert_eq!(forwarded_claims(&two.upstream.last().headers)["sub"], "bob");
    let hits = two.upstream.hits();

    let unknown = key("es384").sign(&claims_with(json!({"iss": "https://unknown.test"})));
    let wrong_audience = two.partner_token(AUDIENCE);
    let borrowed_iss = two
        .staff_key
        .sign(&claims_with(json!({"iss": "https://unknown.test"})));
    for token in [unknown, wrong_audience, borrowed_iss] {
        assert_eq!(
            two.status("/orders", Some(&token)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(two.upstream.hits(), hits, "refused before the upstream");
    assert_eq!(
        (two.staff_jwks.hits(), two.partner_jwks.hits()),
        (1, 1),
        "an unknown iss costs no fetch"
    );
}

#[tokio::test]
async fn config_routes_take_the_longest_prefix_at_segment_boundaries() {
    let two = TwoIssuers::start("routes", ROUTES).await;
    let plain = two.staff_token(None);
    let admin = two.staff_token(Some("read admin"));
    let reply = get(&two.url("/admin/users"), &[("authorization", &bearer(&plain))]).await;
    assert_insufficient_scope(&reply);
    assert_insufficient_scope(&get(&two.url("/admin"), &[("authorization", &bearer(&plain))]).await);
    assert_eq!(two.upstream.hits(), 0, "refused before the upstream");
    assert_eq!(two.status("/admin/users", Some(&admin)).await, StatusCode::OK);

    let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
    let public = get(&two.url("/public/page"), &[("x-jwt-claims", &forged)]).await;
    assert_eq!(public.status, StatusCode::OK, "{public:?}");
    assert!(two.upstream.last().headers.get("x-jwt-claims").is_none());
    assert_eq!(
        two.status("/public", Some("e30.e30.c2ln")).await,
        StatusCode::UNAUTHORIZED
    );

    // /administrator is not under /admin: the "/" route, a token without scope.
    assert_eq!(two.status("/administrator", Some(&plain)).await, StatusCode::OK);
    assert_eq!(two.upstream.last().uri, "/administrator");
    assert_eq!(two.status("/administrator", None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(two.status("/publicity", None).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn config_paths_are_matched_as_strictly_as_an_upstream_might_read_them() {
    let two = TwoIssuers::start("paths", ROUTES).await;
    let plain = two.staff_token(None);
    for path in [
        "/%61dmin",
        "//admin/x",
        "/admin;jsessionid=1",
        "/public/..%2Fadmin",
        "/ADMIN",
    ] {
        let reply = get(&two.url(path), &[("authorization", &bearer(&plain))]).await;
        let expected = match path {
            "/public/..%2Fadmin" => StatusCode::BAD_REQUEST,
            "/ADMIN" => StatusCode::OK, // prefixes are case-sensitive
            _ => StatusCode::FORBIDDEN,
        };
        assert_eq!(reply.status, expected, "{path}: {reply:?}");
    }
    for path in ["/public/../admin", "/public/./x", "/public/%2e%2e/admin"] {
        let reply = get(&two.url(path), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_request");
    }
    assert_eq!(two.upstream.hits(), 1, "only /ADMIN was forwarded");
}

#[tokio::test]
async fn without_a_root_route_a_path_matching_no_route_gets_404() {
    let routes = "[[route]]\nprefix = \"/api\"\n[[route]]\nprefix = \"/api/admin\"\nany_scopes = [\"admin\", \"root\"]\n";
    let two = TwoIssuers::start("no-root", routes).await;
    let plain = two.staff_token(None);
    for path in ["/", "/other", "/apis"] {
        let reply = get(&two.url(path), &[("authorization", &bearer(&plain))]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert_eq!(reply.json()["error"], "not_found");
    }
    assert_eq!(two.upstream.hits(), 0);
    assert_eq!(two.status("/api/orders", Some(&plain)).await, StatusCode::OK);
    assert_eq!(
        two.status("/api/admin/x", Some(&plain)).await,
        StatusCode::FORBIDDEN
    );
    let root = two.staff_token(Some("root"));
    assert_eq!(
        two.status("/api/admin/x", Some(&root)).await,
        StatusCode::OK,
        "any of the scopes"
    );
    assert_eq!(
        two.status("/healthz", None).await,
        StatusCode::OK,
        "the gateway's own"
    );
}

#[tokio::test]
async fn healthz_with_several_issuers_lists_each_key_set_by_issuer() {
    let two = TwoIssuers::start("healthz", ROUTES).await;
    let reply = get(&two.url("/healthz"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let health = reply.json();
    assert_eq!(health["ready"], true, "{health}");
    let issuers = health["issuers"].as_object().expect("by issuer");
    assert_eq!(issuers.len(), 2, "{health}");
    assert_eq!(
        issuers[&two.staff]["url"],
        two.staff_jwks.url().as_str(),
        "{health}"
    );
    assert_eq!(
        issuers[PARTNERS]["url"],
        two.partner_jwks.url().as_str(),
        "{health}"
    );
    for (issuer, source) in issuers {
        assert_eq!(
            (source["ready"].clone(), source["keys"].clone()),
            (json!(true), json!(1)),
            "{issuer}"
        );
    }
}

#[tokio::test]
async fn healthz_with_several_issuers_is_503_while_one_key_set_is_not_ready() {
    let good = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let down = JwksServer::start(&json!({"keys": []})).await;
    down.set(|script| script.status = StatusCode::INTERNAL_SERVER_ERROR);
    let loaded = RemoteJwks::builder(good.url()).build().await.expect("keys");
    let missing = RemoteJwks::builder(down.url()).lazy().expect("valid settings");
    missing.refresh().await.expect_err("the provider answers 500");
    let sources = gateway::KeySources::ByIssuer(vec![
        (Issuer::new("https://a.test", loaded.clone()), loaded),
        (Issuer::new("https://b.test", missing.clone()), missing),
    ]);
    let proxy = gateway::Proxy::new(
        args(&[
            "--upstream",
            "http://127.0.0.1:9",
            "--jwks-url",
            "http://127.0.0.1:9/j",
        ])
        .expect("flags")
        .upstream
        .expect("upstream"),
        false,
    );
    let (status, health) = healthz_in_process(gateway::router(Vec::new(), sources, proxy)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    assert_eq!(health["issuers"]["https://a.test"]["ready"], true, "{health}");
    assert_eq!(health["issuers"]["https://b.test"]["ready"], false, "{health}");
    let error = health["issuers"]["https://b.test"]["last_error"]
        .as_str()
        .expect("the error");
    assert!(error.contains("500"), "{error}");
}

#[test]
fn config_excludes_the_flags_it_sets_and_listen_on_the_command_line_wins() {
    use clap::error::ErrorKind;
    let path = write_config(
        "listen",
        "upstream = \"http://127.0.0.1:9\"\nlisten = \"127.0.0.1:7000\"\n[[issuer]]\nissuer = \"https://a.test\"\n",
    );
    let config = path.to_str().expect("UTF-8");
    for flag in [
        &["--upstream", "http://127.0.0.1:9"][..],
        &["--jwks-url", "http://127.0.0.1:9/j"],
        &["--oidc-issuer", "http://127.0.0.1:9"],
        &["--issuer", "x"],
        &["--audience", "x"],
        &["--algorithm", "ES256"],
        &["--leeway", "5"],
        &["--required-scope", "x"],
        &["--require-typ", "at+jwt"],
        &["--max-lifetime", "60"],
        &["--cookie", "c"],
        &["--optional-auth"],
        &["--forward-token"],
        &["--demo"],
    ] {
        let flags = [&["--config", config][..], flag].concat();
        assert_eq!(refusal(&flags), ErrorKind::ArgumentConflict, "{flag:?}");
    }
    let plan = |more: &[&str]| gateway::Plan::from_args(&config_flags(&path, more)).expect("plan");
    assert_eq!(
        plan(&[]).listen.to_string(),
        "127.0.0.1:7000",
        "the file's listen"
    );
    assert_eq!(
        plan(&["--listen", "127.0.0.1:7001"]).listen.to_string(),
        "127.0.0.1:7001"
    );
    let with_process_flags = plan(&["--jwks-cooldown", "7", "--metrics-listen", "127.0.0.1:0"]);
    assert_eq!(
        with_process_flags.routes,
        [gateway::RoutePlan::root()],
        "no route: \"/\""
    );
    assert_eq!(with_process_flags.policy.leeway, 60);
}

#[test]
fn the_example_config_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml");
    let plan = gateway::Plan::from_args(&config_flags(&path, &[])).expect("the example is valid");
    let gateway::KeyPlan::ByIssuer { issuers, .. } = &plan.keys else {
        panic!("several issuers: {:?}", plan.keys)
    };
    assert_eq!(issuers.len(), 2);
    assert!(
        matches!(issuers[0].target, gateway::Target::Discover(_)),
        "{issuers:?}"
    );
    assert!(
        matches!(issuers[1].target, gateway::Target::Jwks(_)),
        "{issuers:?}"
    );
    let prefixes: Vec<&str> = plan.routes.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(prefixes, ["/admin", "/public", "/"]);
}

#[test]
fn bad_config_files_are_refused_naming_the_file_and_the_mistake() {
    const UP: &str = "upstream = \"http://127.0.0.1:9\"\n";
    const ISS: &str = "[[issuer]]\nissuer = \"https://a.test\"\n";
    let cases: [(&str, String, &[&str]); 14] = [
        (
            "unknown-key",
            format!("{UP}upstrem = 1\n{ISS}"),
            &["unknown field", "upstrem"],
        ),
        (
            "unknown-issuer-key",
            format!("{UP}{ISS}jwks = \"x\"\n"),
            &["unknown field", "jwks"],
        ),
        (
            "unknown-route-key",
            format!("{UP}{ISS}[[route]]\nprefix = \"/\"\nscope = [\"a\"]\n"),
            &["unknown field", "scope"],
        ),
        (
            "hmac",
            format!("{UP}{ISS}algorithms = [\"HS256\"]\n"),
            &["https://a.test", "HS256", "shared secret"],
        ),
        (
            "bad-alg",
            format!("{UP}{ISS}algorithms = [\"ES999\"]\n"),
            &["https://a.test", "ES999", "unknown"],
        ),
        ("no-issuer", UP.to_owned(), &["no [[issuer]]", "at least one"]),
        ("no-upstream", ISS.to_owned(), &["missing field", "upstream"]),
        (
            "bad-upstream",
            format!("upstream = \"https://x\"\n{ISS}"),
            &["upstream", "plain http"],
        ),
        ("twice", format!("{UP}{ISS}{ISS}"), &["https://a.test", "twice"]),
        (
            "prefix",
            format!("{UP}{ISS}[[route]]\nprefix = \"admin\"\n"),
            &["\"admin\"", "starts with /"],
        ),
        (
            "trailing",
            format!("{UP}{ISS}[[route]]\nprefix = \"/admin/\"\n"),
            &["\"/admin/\"", "does not end with /"],
        ),
        (
            "anonymous-scopes",
            format!("{UP}{ISS}[[route]]\nprefix = \"/p\"\nanonymous = true\nscopes = [\"a\"]\n"),
            &["\"/p\"", "anonymous", "scopes"],
        ),
        (
            "not-toml",
            "upstream = \n".to_owned(),
            &["TOML parse error", "line 1"],
        ),
        (
            "not-a-url",
            format!("{UP}[[issuer]]\nissuer = \"staff\"\n"),
            &["\"staff\"", "discovery", "jwks_url"],
        ),
    ];
    for (name, text, expected) in cases {
        let message = config_refusal(name, &text);
        for part in expected {
            assert!(message.contains(part), "{name}: {part:?} in {message}");
        }
    }
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-no-such-file.toml");
    let error = gateway::Plan::from_args(&config_flags(&missing, &[])).expect_err("refused");
    assert!(error.to_string().contains("cannot read it"), "{error}");
}

#[tokio::test]
async fn config_errors_found_when_building_name_the_file_and_fetch_nothing() {
    let jwks = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let leeway = format!(
        "upstream = \"http://127.0.0.1:9\"\nleeway = 7200\n[[issuer]]\nissuer = \"a\"\njwks_url = \"{}\"\n",
        jwks.url()
    );
    let plain_http = "upstream = \"http://127.0.0.1:9\"\n[[issuer]]\nissuer = \"http://idp.example\"\n";
    for (name, text, part) in [
        ("leeway", leeway.as_str(), "leeway"),
        ("plain-http", plain_http, "https"),
    ] {
        let path = write_config(name, text);
        let error = gateway::gateway(&config_flags(&path, &[]))
            .await
            .expect_err("refused");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("config file {}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(part), "{part} in {message}");
    }
    assert_eq!(jwks.hits(), 0, "refused before any fetch");
}
