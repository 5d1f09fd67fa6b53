//! The gateway example against real servers on 127.0.0.1:0: proxying with claims,
//! header hygiene, rejections before the upstream, upstream failures, startup checks,
//! the --jwks-* flags, /healthz, /metrics, the log line and the demo.
#![cfg(feature = "axum")]

mod common;
#[allow(dead_code)]
#[path = "../examples/gateway.rs"]
mod gateway;

use std::io;
use std::net::SocketAddr;
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
    DEFAULT_REFRESH_INTERVAL, RemoteJwks, Verifier,
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
    assert_eq!(flags.listen.to_string(), "127.0.0.1:8080");
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
    let gateway = serve(gateway::router(verifier, jwks, proxy)).await;

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
    let metrics = serve(gateway::metrics_router(handle, gw.jwks.clone())).await;
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
    let url_label = format!("url=\"{}\"", gw.jwks.url());
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
