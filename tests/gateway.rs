//! The gateway example against real servers on 127.0.0.1:0: proxying with claims,
//! header hygiene, rejections before the upstream, upstream failures, startup checks,
//! the log line and the demo.
#![cfg(feature = "axum")]

mod common;
#[allow(dead_code)]
#[path = "../examples/gateway.rs"]
mod gateway;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
use serde_json::{Value, json};

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

async fn start_gateway(upstream: &str, jwks_url: &str, extra_flags: &[&str]) -> SocketAddr {
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
    let app = gateway::app(&args(&flags).expect("flags"))
        .await
        .expect("the gateway starts");
    serve(app).await
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
    let error = gateway::app(&flags).await.expect_err("no keys, no gateway");
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

async fn check_printed_curl_lines(demo: &gateway::demo::Demo) {
    let text = demo.instructions();
    let curls: Vec<&str> = text.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 3, "{text}");
    let expected = [StatusCode::OK, StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED];
    for (line, status) in curls.into_iter().zip(expected) {
        let (url, token) = parse_curl(line);
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = get(&url, &headers).await;
        assert_eq!(reply.status, status, "{line}: {reply:?}");
        if status == StatusCode::OK {
            let echo = reply.json();
            assert_eq!(echo["claims"]["sub"], gateway::demo::SUBJECT, "{echo}");
            assert_eq!(echo["claims"]["iss"], demo.issuer.as_str(), "{echo}");
            assert_eq!(echo["path"], "/hello");
            assert!(echo["headers"].get("authorization").is_none(), "{echo}");
        } else {
            assert!(
                reply.headers.contains_key("www-authenticate"),
                "{line}: {reply:?}"
            );
        }
    }
    assert!(text.contains(&demo.token), "the token itself is printed");
}

#[tokio::test]
async fn the_demo_prints_a_token_and_curl_lines_that_work_through_its_gateway() {
    let demo = gateway::demo::start(&args(&["--demo", "--listen", "127.0.0.1:0"]).expect("flags"))
        .await
        .expect("the demo starts");
    assert!(demo.taken.is_none());
    check_printed_curl_lines(&demo).await;
}

#[tokio::test]
async fn the_demo_falls_back_to_a_free_port_when_listen_is_taken() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let demo = gateway::demo::start(&args(&["--demo", "--listen", &taken_addr]).expect("flags"))
        .await
        .expect("the demo starts");
    assert_eq!(demo.taken.map(|a| a.to_string()), Some(taken_addr.clone()));
    assert_ne!(demo.gateway.to_string(), taken_addr);
    assert!(
        demo.instructions().contains("is taken"),
        "{}",
        demo.instructions()
    );
    check_printed_curl_lines(&demo).await;
}
