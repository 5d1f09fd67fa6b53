//! Adversarial tests: a hostile client, a hostile or broken identity provider, and the
//! operational accidents in between (rotation, outages, runtimes going away).
//!
//! Each test is named after the property it pins down. Some of them describe defences
//! that hold; the others describe problems found while attacking the crate and fail
//! until those are fixed (see the comment above each).
#![cfg(feature = "axum")]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::{StatusCode, Uri};
use jsonwebtoken::Algorithm as JwtAlg;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_jwt_auth::{Issuer, JwtAuthLayer, KeySet, RemoteJwks, TokenSource, Verifier};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A P-256 public JWK without kid, alg or use (the bare minimum).
fn bare_p256_jwk() -> Value {
    let mut jwk = fresh_es256("x").jwk;
    let map = jwk.as_object_mut().expect("object");
    for member in ["kid", "alg", "use"] {
        map.remove(member);
    }
    jwk
}

fn claims_with(changes: &[(&str, Value)]) -> Value {
    let mut claims = good_claims();
    for (name, value) in changes {
        claims[*name] = value.clone();
    }
    claims
}

/// Everything a rejection shows the client, as one string.
fn shown(answer: &Answer) -> String {
    format!(
        "{} {}",
        answer.www_authenticate.as_deref().unwrap_or_default(),
        answer.body
    )
}

/// A raw TCP server on 127.0.0.1:0: reads each request head, then hands the connection
/// and its number (0, 1, ...) to `behaviour`. Counts connections.
async fn raw_server<F, Fut>(behaviour: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                read_head(&mut stream).await;
                behaviour(stream, n).await;
            });
        }
    });
    (addr, count)
}

/// Reads up to the end of the request head (bounded).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes a whole response and closes the connection.
async fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// An OpenID provider metadata endpoint: both well-known paths, scriptable per path
/// (unscripted paths answer 404), recording the paths requested.
#[derive(Clone)]
struct MetaServer {
    addr: SocketAddr,
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

const OIDC: &str = "/.well-known/openid-configuration";
const OAUTH: &str = "/.well-known/oauth-authorization-server";

impl MetaServer {
    async fn start() -> MetaServer {
        let state = MetaServer {
            addr: "127.0.0.1:0".parse().expect("addr"),
            scripts: Arc::new(Mutex::new(HashMap::new())),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        async fn answer(State(s): State<MetaServer>, uri: Uri) -> Response {
            let path = uri.path().to_string();
            s.requests.lock().expect("requests").push(path.clone());
            let script = s.scripts.lock().expect("scripts").get(&path).cloned();
            let Some(script) = script else {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::NOT_FOUND;
                return res;
            };
            if !script.delay.is_zero() {
                tokio::time::sleep(script.delay).await;
            }
            let mut res = Response::new(Body::from(script.body));
            *res.status_mut() = script.status;
            for (name, value) in script.headers {
                res.headers_mut().insert(
                    http::HeaderName::try_from(name).expect("name"),
                    value.parse().expect("value"),
                );
            }
            res
        }
        let app = Router::new().fallback(answer).with_state(state.clone());
        let addr = serve(app).await;
        MetaServer { addr, ..state }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, path: &str, status: StatusCode, headers: &[(&str, &str)], body: Vec<u8>) {
        let script = Script {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
            delay: Duration::ZERO,
            chunked: false,
        };
        self.scripts
            .lock()
            .expect("scripts")
            .insert(path.to_string(), script);
    }

    fn publish(&self, path: &str, doc: &Value) {
        let headers = [("content-type", "application/json")];
        self.set(path, StatusCode::OK, &headers, doc.to_string().into_bytes());
    }

    fn delay_all(&self, delay: Duration) {
        for script in self.scripts.lock().expect("scripts").values_mut() {
            script.delay = delay;
        }
    }

    fn hits(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }
}

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Captures every event of this thread (and so of a current-thread runtime's tasks).
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Hostile tokens and headers
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hostile_kids_are_rejected_without_echo_and_cost_at_most_one_fetch_per_cooldown() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    let hostile = [
        "py-es256\u{0}".to_string(),
        "py-es256\r\nx-injected: 1".to_string(),
        "py-es256\u{200b}".to_string(),
        "py-\u{0435}s256".to_string(), // Cyrillic e
        "\u{202e}652se-yp".to_string(),
        "../../../../etc/passwd".to_string(),
        "PY-ES256".to_string(),
        " py-es256".to_string(),
        "k".repeat(5000),
        String::new(),
    ];
    for kid in &hostile {
        let token = k.with_kid(kid).sign(&good_claims());
        assert!(token.len() <= 8192, "{} bytes", token.len());
        let answer = call(&app, &token).await;
        answer.assert_invalid_token("unknown key id");
        let text = shown(&answer);
        assert!(
            kid.is_empty() || kid.len() < 3 || !text.contains(kid.as_str()),
            "kid echoed: {text}"
        );
        assert!(!text.contains("x-injected"), "{text}");
    }
    assert_eq!(server.hits(), 1, "all within the cooldown of the initial fetch");
    // After the cooldown, 500 distinct 5 KB kids at once: one fetch between them.
    tokio::time::advance(Duration::from_secs(31)).await;
    let calls = (0..500).map(|i| {
        let token = k
            .with_kid(&format!("{i}-{}", "z".repeat(5000)))
            .sign(&good_claims());
        let app = app.clone();
        async move { call(&app, &token).await.status }
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        server.hits(),
        1,
        "kids longer than any provider uses are never worth a fetch"
    );
    // A short unknown kid after the cooldown is worth exactly one look.
    tokio::time::advance(Duration::from_secs(31)).await;
    let calls = (0..50).map(|i| {
        let token = k.with_kid(&format!("short-{i}")).sign(&good_claims());
        let app = app.clone();
        async move { call(&app, &token).await.status }
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(server.hits(), 2);
    // The control still passes.
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn lookalike_issuers_never_match_nor_reach_a_key_source() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let many = guarded_app(
        JwtAuthLayer::issuers(
            Verifier::builder().audience(AUDIENCE).build().expect("verifier"),
            [Issuer::new(ISSUER, jwks.clone())],
        )
        .expect("layer"),
    );
    let one = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    let lookalikes = [
        "https://issuer.t\u{0435}st",  // Cyrillic e
        "https://issuer.test\u{200b}", // zero-width space
        "https://issuer.test/",
        "https://issuer.test.",
        "HTTPS://issuer.test",
        "https://ISSUER.test",
        "https://issuer.test\u{0}",
        " https://issuer.test",
        "https://issuer.test#",
        "https://xn--issuer-test",
        "https://issuer.tes\u{0074}\u{0301}", // t + combining acute
    ];
    tokio::time::advance(Duration::from_secs(31)).await;
    for iss in lookalikes {
        // Validly signed by the real key: only the issuer is wrong.
        let token = k.sign(&claims_with(&[("iss", json!(iss))]));
        call(&many, &token)
            .await
            .assert_invalid_token("issuer not accepted");
        call(&one, &token)
            .await
            .assert_invalid_token("issuer not accepted");
        // The same with an unknown kid: still no fetch for an issuer we do not know.
        let token = k.with_kid("new").sign(&claims_with(&[("iss", json!(iss))]));
        call(&many, &token)
            .await
            .assert_invalid_token("issuer not accepted");
    }
    assert_eq!(server.hits(), 1, "no lookalike caused a fetch");
    // A JSON escape spells the same string: that is the same issuer, not a lookalike.
    let escaped = format!(
        r#"{{"iss":"https:\/\/issuer.test","aud":"{AUDIENCE}","exp":{}}}"#,
        now() + 600
    );
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"py-es256"}"#);
    let token = k.sign_message(&format!("{header}.{}", b64(escaped.as_bytes())), JwtAlg::ES256);
    assert_eq!(call(&many, &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn deeply_nested_json_in_header_claims_and_jwks_never_overflows_the_stack() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let app = guarded_app(JwtAuthLayer::new(verifier(), keys));
    let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // An unknown header member is skipped without recursion: the token stays valid.
    // serde_json's Value itself refuses depth 2500, so the segment is built by hand.
    let header_json = format!(r#"{{"alg":"ES256","kid":"py-es256","x":{}}}"#, nest(2500));
    let token = k.sign_message(
        &format!("{}.{}", b64(header_json.as_bytes()), b64_json(&good_claims())),
        JwtAlg::ES256,
    );
    assert!(token.len() <= 8192, "{}", token.len());
    assert_eq!(call(&app, &token).await.status, StatusCode::OK);
    // A deep claim is refused (the claims type has a recursion limit), not a crash.
    let mut payload = good_claims().to_string();
    payload.pop();
    payload.push_str(&format!(r#","deep":{}}}"#, nest(2000)));
    let header = b64_json(&json!({"alg": "ES256", "kid": "py-es256"}));
    let token = k.sign_message(&format!("{header}.{}", b64(payload.as_bytes())), JwtAlg::ES256);
    call(&app, &token)
        .await
        .assert_invalid_token("claims do not have the expected shape");
    // Unsigned, deeper and unterminated: refused as malformed.
    let header = b64(format!(r#"{{"alg":"ES256","x":{}"#, "[".repeat(5000)).as_bytes());
    let token = format!("{header}.e30.AAAA");
    call(&app, &token).await.assert_invalid_token("malformed");
    // A key set with 1 MiB of nesting beside, inside and instead of keys.
    let good = k.jwk.to_string();
    let deep = nest(500_000);
    let beside = format!(r#"{{"keys":[{good}],"junk":{deep}}}"#);
    assert_eq!(KeySet::from_jwks(beside.as_bytes()).expect("set").len(), 1);
    let inside = format!(r#"{{"keys":[{deep},{good}]}}"#);
    let set = KeySet::from_jwks(inside.as_bytes()).expect("set");
    assert_eq!((set.len(), set.skipped().len()), (1, 1));
    let in_member = good.replacen('{', &format!(r#"{{"ext":{deep},"#), 1);
    let set = KeySet::from_jwks(format!(r#"{{"keys":[{in_member}]}}"#).as_bytes()).expect("set");
    assert_eq!(set.len(), 1, "an unknown member is skipped, however deep");
    let open = format!(r#"{{"keys":{}"#, "[".repeat(1 << 20));
    assert!(KeySet::from_jwks(open.as_bytes()).is_err());
}

#[tokio::test]
async fn a_thousand_authorization_headers_or_cookies_are_one_invalid_request() {
    let k = key("es256");
    let keys = Arc::new(KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys"));
    let app = guarded_app(JwtAuthLayer::new(verifier(), keys.clone()));
    let bearer = format!("Bearer {}", k.sign(&good_claims()));
    let many: Vec<(&str, &str)> = (0..1000).map(|_| ("authorization", bearer.as_str())).collect();
    let answer = call_with(&app, &many).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    let cookie_app = guarded_app(JwtAuthLayer::new(verifier(), keys).token_source(TokenSource::cookie("at")));
    let crumb = format!("at={}", k.sign(&good_claims()));
    let many: Vec<(&str, &str)> = (0..1000).map(|_| ("cookie", crumb.as_str())).collect();
    let answer = call_with(&cookie_app, &many).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    // The same token twice in one header is two tokens, too.
    let twice = format!("{crumb}; {crumb}");
    let answer = call_with(&cookie_app, &[("cookie", &twice)]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert!(!shown(&answer).contains(&crumb[3..]), "token echoed");
}

/// Found by red-teaming, now fixed: `cookie_token` (src/token.rs) skips a whole `Cookie` header when
/// `HeaderValue::to_str` fails, i.e. when any byte is not visible ASCII. A browser sends
/// all cookies in one header (HTTP/1.1), so one unrelated cookie holding UTF-8 (a name,
/// a city; or one planted from a sibling subdomain) makes the access token invisible:
/// 401 "no bearer token" for that user, and a silent anonymous downgrade in optional
/// mode. Fix: split the raw bytes on `;` and judge each crumb, ignoring (only) crumbs
/// that are not ASCII.
#[tokio::test]
async fn a_cookie_token_is_found_even_when_another_cookie_in_the_header_is_not_ascii() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let app = guarded_app(JwtAuthLayer::new(verifier(), keys).token_source(TokenSource::cookie("at")));
    let token = k.sign(&good_claims());
    // Control: the crumb with UTF-8 in a header of its own does not hide the token.
    let utf8_crumb: &[u8] = "city=K\u{f8}benhavn".as_bytes();
    let at = format!("at={token}");
    let answer = call_raw(&app, &[("cookie", utf8_crumb), ("cookie", at.as_bytes())]).await;
    assert_eq!(answer.status, StatusCode::OK, "separate headers: {answer:?}");
    // One header, as a browser sends it over HTTP/1.1.
    let one = [utf8_crumb, b"; ", at.as_bytes()].concat();
    let answer = call_raw(&app, &[("cookie", &one)]).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a non-ASCII neighbour cookie hides the token: {answer:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile or broken JWKS endpoints
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_slowloris_jwks_endpoint_fails_within_the_fetch_timeout_and_cached_keys_keep_serving() {
    let k = key("es256");
    let body = jwks_of(&[&k]).to_string();
    let (addr, connections) = raw_server(move |mut stream, n| {
        let body = body.clone();
        async move {
            if n == 0 {
                let headers = [("content-type", "application/json")];
                return respond(&mut stream, "200 OK", &headers, body.as_bytes()).await;
            }
            // Headers promptly, then one byte a second of a body that would take an hour.
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3600\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            for _ in 0..3600 {
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    })
    .await;
    let jwks = RemoteJwks::builder(format!("http://{addr}/jwks.json"))
        .build()
        .await
        .expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    tokio::time::advance(Duration::from_secs(31)).await;
    let started = Instant::now();
    let err = jwks.refresh().await.expect_err("dribbling body");
    let took = started.elapsed();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(took <= Duration::from_secs(6), "{took:?}");
    // A request with a new kid waits for at most one such fetch, then gets a 401.
    tokio::time::advance(Duration::from_secs(31)).await;
    let started = Instant::now();
    call(&app, &k.with_kid("new").sign(&good_claims()))
        .await
        .assert_invalid_token("unknown key id");
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_endless_jwks_body_is_cut_off_at_the_size_cap() {
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let (addr, _) = raw_server(move |mut stream, _| {
        let counter = counter.clone();
        async move {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(b"9\r\n{\"keys\":[\r\n").await;
            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            // Bounded "forever": 64 MiB, far beyond any cap.
            for _ in 0..1024 {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                counter.fetch_add(0x10000, Ordering::SeqCst);
            }
        }
    })
    .await;
    let err = RemoteJwks::builder(format!("http://{addr}/jwks.json"))
        .max_response_size(256 * 1024)
        .build()
        .await
        .expect_err("endless");
    assert!(err.to_string().contains("larger than"), "{err}");
    // The reader stopped at the cap: the server could not push (much) more than the cap
    // plus the socket buffers.
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < 32 << 20, "{sent} bytes pushed");
}

#[tokio::test(start_paused = true)]
async fn content_length_lies_compressed_bodies_and_a_304_before_any_200_are_failed_fetches() {
    let k = key("es256");
    let body = jwks_of(&[&k]).to_string();
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "content-length longer than the body",
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len() + 500),
            body.clone().into_bytes(),
            "GET",
        ),
        (
            "content-length over the cap, nothing sent",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n".into(),
            Vec::new(),
            "larger than",
        ),
        (
            "gzip that is not asked for is not decompressed",
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 20\r\n\r\n".into(),
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00".to_vec(),
            "not a JWK set",
        ),
        (
            "304 before any 200",
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".into(),
            Vec::new(),
            "304",
        ),
        (
            "an HTTP/0.9-style answer",
            String::new(),
            body.clone().into_bytes(),
            "GET",
        ),
    ];
    for (case, head, payload, expect) in cases {
        let (addr, _) = raw_server(move |mut stream, _| {
            let (head, payload) = (head.clone(), payload.clone());
            async move {
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&payload).await;
                let _ = stream.shutdown().await;
            }
        })
        .await;
        let err = RemoteJwks::builder(format!("http://{addr}/jwks.json"))
            .build()
            .await
            .expect_err(case)
            .to_string();
        assert!(err.contains(expect), "{case}: {err}");
        // Lazily, the same endpoint leaves the source unready: 503, not a crash.
        let jwks = RemoteJwks::builder(format!("http://{addr}/jwks.json"))
            .lazy()
            .expect("lazy");
        let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
        let answer = call(&app, &k.sign(&good_claims())).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{case}: {answer:?}"
        );
        assert!(!jwks.health().ready, "{case}");
    }
}

#[tokio::test(start_paused = true)]
async fn zero_huge_and_garbage_max_age_values_stay_within_the_refresh_bounds() {
    for (header, expected) in [
        ("max-age=0", 60.0),
        ("max-age=18446744073709551615", 3600.0),
        ("max-age=99999999999999999999999999", 300.0),
        ("max-age=-1", 300.0),
        ("max-age=abc", 300.0),
        ("max-age", 300.0),
        ("max-age=0.5", 300.0),
        ("private, max-age=120", 120.0),
        ("s-maxage=0", 300.0),
    ] {
        let server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
        server.set(|s| s.headers.push(("cache-control".into(), header.into())));
        let _jwks = RemoteJwks::builder(server.url())
            .refresh_interval(Duration::from_secs(300))
            .min_refresh(Duration::from_secs(60))
            .max_refresh(Duration::from_secs(3600))
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

/// Found by red-teaming, now fixed: a 304 is accepted whenever keys are loaded (src/jwks/remote.rs,
/// `Inner::fetch`), even when the request carried no `If-None-Match` /
/// `If-Modified-Since` (the provider sent no validator, or the jwks_uri moved and the
/// validators were cleared). A 304 to an unconditional GET is meaningless (RFC 9110
/// 15.4.5), yet it re-confirms the cached set: an endpoint (or a broken cache in front of
/// it) that always answers 304 keeps the set "fresh" forever and `max_stale` never
/// bites; after a jwks_uri move the old URL's keys are confirmed as the new URL's.
/// Fix: accept 304 only when a validator was sent; otherwise treat it as a failed fetch.
#[tokio::test(start_paused = true)]
async fn a_304_to_an_unconditional_request_does_not_keep_stale_keys_alive() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await; // no ETag, no Last-Modified
    let jwks = RemoteJwks::builder(server.url())
        .max_stale(Duration::from_secs(600))
        .build()
        .await
        .expect("jwks");
    server.set(|s| {
        s.status = StatusCode::NOT_MODIFIED;
        s.body = Vec::new();
    });
    settle(Duration::from_secs(1200), || {
        server.hits() >= 2 && !jwks.health().ready
    })
    .await;
    let headers = server
        .last_request_headers
        .lock()
        .expect("headers")
        .clone()
        .expect("seen");
    assert!(headers.get("if-none-match").is_none() && headers.get("if-modified-since").is_none());
    let health = jwks.health();
    assert_eq!(
        health.not_modified, 0,
        "a 304 to an unconditional GET was taken as confirmation: {health:?}"
    );
    assert!(!health.ready, "past max_stale with no confirmation: {health:?}");
}

/// Found by red-teaming, now fixed: the request-path wait is not bounded by the fetch timeout when the key
/// source uses discovery. `Inner::fetch` first rediscovers (`Discovery::jwks_uri`), which
/// tries the OIDC document and then the RFC 8414 one, each with its own full timeout,
/// and only then fetches the keys with a third: a hung metadata endpoint makes every
/// unknown-kid request wait ~10 s (up to 15 s), against "5 s in all" in the design.
/// Fix: one deadline around the whole fetch (`tokio::time::timeout` in `start_or_join`'s
/// task), and/or fetch the known jwks_uri first and rediscover in the background only.
#[tokio::test(start_paused = true)]
async fn with_discovery_a_waiting_request_is_answered_within_the_fetch_timeout_when_metadata_hangs() {
    let old = key("es256").with_kid("old");
    let new = key("es384").with_kid("new");
    let keys = JwksServer::start(&jwks_of(&[&old])).await;
    let meta = MetaServer::start().await;
    meta.publish(OIDC, &json!({"issuer": meta.issuer(), "jwks_uri": keys.url()}));
    meta.publish(OAUTH, &json!({"issuer": meta.issuer(), "jwks_uri": keys.url()}));
    let jwks = RemoteJwks::discover(meta.issuer()).build().await.expect("jwks");
    let verifier = Verifier::builder()
        .issuer(meta.issuer())
        .audience(AUDIENCE)
        .build()
        .expect("verifier");
    let app = guarded_app(JwtAuthLayer::new(verifier, jwks));
    keys.set_jwks(&jwks_of(&[&old, &new]));
    meta.delay_all(Duration::from_secs(3600));
    tokio::time::advance(Duration::from_secs(31)).await;
    let started = Instant::now();
    let answer = call(&app, &new.sign(&claims_with(&[("iss", json!(meta.issuer()))]))).await;
    let waited = started.elapsed();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "falls back to the known jwks_uri: {answer:?}"
    );
    assert!(
        waited <= Duration::from_secs(6),
        "request waited {waited:?} for one key fetch (timeout 5 s)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_discovery_document_pointing_jwks_uri_at_itself_fails_without_looping() {
    let meta = MetaServer::start().await;
    let own = format!("{}{OIDC}", meta.issuer());
    meta.publish(OIDC, &json!({"issuer": meta.issuer(), "jwks_uri": own}));
    let err = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect_err("metadata is not a key set")
        .to_string();
    assert!(err.contains("not a JWK set"), "{err}");
    assert_eq!(meta.hits(), 2, "one discovery, one fetch of the 'keys'");
    // Lazily, over ten simulated minutes of steady traffic: bounded by the retry backoff
    // and the cooldown, two requests per attempt.
    let before = meta.hits();
    let jwks = RemoteJwks::discover(meta.issuer()).lazy().expect("lazy");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    let token = key("es256").sign(&good_claims());
    for _ in 0..600 {
        assert_eq!(call(&app, &token).await.status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let hits = meta.hits() - before;
    // Backoff 1, 2, 4 ... 300 s: ~10 attempts; the cooldown: 20 more at most.
    assert!(hits <= 2 * 32, "{hits} metadata requests in 10 minutes");
}

#[tokio::test(start_paused = true)]
async fn discovery_follows_no_redirect_and_refuses_jwks_uris_off_loopback_over_http() {
    let k = key("es256");
    let keys = JwksServer::start(&jwks_of(&[&k])).await;
    // The redirect target would be a perfectly good provider.
    let target = MetaServer::start().await;
    target.publish(OIDC, &json!({"issuer": target.issuer(), "jwks_uri": keys.url()}));
    let meta = MetaServer::start().await;
    let location = format!("{}{OIDC}", target.issuer());
    meta.set(OIDC, StatusCode::FOUND, &[("location", &location)], Vec::new());
    meta.set(
        OAUTH,
        StatusCode::PERMANENT_REDIRECT,
        &[("location", &location)],
        Vec::new(),
    );
    let err = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect_err("redirect")
        .to_string();
    assert!(err.contains("302") && err.contains("308"), "{err}");
    assert_eq!(target.hits(), 0);
    for jwks_uri in [
        "http://127.0.0.1.nip.io/jwks.json",
        "http://localhost.evil.example/jwks.json",
        "http://[::ffff:127.0.0.1]:1/jwks.json",
        "http://0.0.0.0:1/jwks.json",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "/relative/jwks.json",
        "",
    ] {
        meta.publish(OIDC, &json!({"issuer": meta.issuer(), "jwks_uri": jwks_uri}));
        let err = RemoteJwks::discover(meta.issuer())
            .build()
            .await
            .expect_err(jwks_uri)
            .to_string();
        assert!(err.contains("jwks_uri"), "{jwks_uri}: {err}");
    }
    assert_eq!(keys.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_random_kids_with_discovery_costs_one_metadata_and_one_key_fetch_per_cooldown() {
    let k = key("es256");
    let keys = JwksServer::start(&jwks_of(&[&k])).await;
    let meta = MetaServer::start().await;
    meta.publish(OIDC, &json!({"issuer": meta.issuer(), "jwks_uri": keys.url()}));
    let jwks = RemoteJwks::discover(meta.issuer()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    for i in 0..3000 {
        let token = k.with_kid(&format!("bogus-{i}")).sign(&good_claims());
        assert_eq!(call(&app, &token).await.status, StatusCode::UNAUTHORIZED);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // 300 s: the initial fetch, 10 cooldowns, at most one background refresh.
    assert!(keys.hits() <= 12, "{} key fetches", keys.hits());
    assert!(meta.hits() <= 12, "{} metadata fetches", meta.hits());
}

// ---------------------------------------------------------------------------------------
// Rotation, outages and the fetch machinery
// ---------------------------------------------------------------------------------------

/// Found by red-teaming, now fixed: a refetch is only triggered by an *unknown* kid (src/service.rs,
/// `Shared::check`). Providers that rotate key material under a stable kid ("signing",
/// "default", "1", a key name) make every new token fail with "invalid signature" until
/// the next scheduled refresh: with `Cache-Control: max-age=86400` that is a lockout of
/// up to ~24 h, and no amount of traffic shortens it. Kid-less tokens have the same
/// problem. Fix: on `InvalidSignature` (and on `NoMatchingKey`/`AmbiguousKey` for a
/// kid-less token) ask `refetch_for_kid` for a refetch under the same cooldown and
/// coalescing, and look again once; a token that still fails is then remembered.
#[tokio::test(start_paused = true)]
async fn a_new_key_published_under_a_reused_kid_is_picked_up_after_the_cooldown() {
    let old = fresh_es256("signing");
    let new = fresh_es256("signing");
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    server.set(|s| s.headers.push(("cache-control".into(), "max-age=86400".into())));
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(call(&app, &old.sign(&good_claims())).await.status, StatusCode::OK);
    server.set_jwks(&jwks_of(&[&new]));
    tokio::time::advance(Duration::from_secs(31)).await;
    let answer = call(&app, &new.sign(&good_claims())).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "rotated key under the same kid is not fetched (fetches: {}): {answer:?}",
        server.hits()
    );
}

/// Found by red-teaming (same root cause), now fixed: a kid-less token is never a reason to refetch. When the
/// provider replaces its only key, kid-less tokens signed with the new key fail with
/// "invalid signature" until the next scheduled refresh (up to `max_refresh`, 24 h by
/// default). And when it pre-publishes the next key beside the current one (the usual
/// rotation practice), every kid-less token fails with "several keys fit": the design's
/// "reject unless configured to try them (bounded)" has no configuration in
/// `VerifierBuilder`. Fix: refetch (cooldown, coalesced) on InvalidSignature too, and add
/// the opt-in to try up to MAX_CANDIDATES fitting keys for kid-less tokens.
#[tokio::test(start_paused = true)]
async fn a_kidless_token_signed_by_a_replacement_key_is_picked_up_after_the_cooldown() {
    let kidless = |k: &TestKey| {
        let mut k = k.clone();
        k.jwk.as_object_mut().expect("jwk").remove("kid");
        k
    };
    let (old, new) = (kidless(&fresh_es256("-")), kidless(&fresh_es256("-")));
    let sign = |k: &TestKey| k.sign_raw(&json!({"alg": "ES256", "typ": "JWT"}), &good_claims());
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    server.set(|s| s.headers.push(("cache-control".into(), "max-age=86400".into())));
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks));
    assert_eq!(call(&app, &sign(&old)).await.status, StatusCode::OK);
    server.set_jwks(&jwks_of(&[&new]));
    tokio::time::advance(Duration::from_secs(31)).await;
    let answer = call(&app, &sign(&new)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "replacement key never fetched (fetches: {}): {answer:?}",
        server.hits()
    );
}

#[tokio::test(start_paused = true)]
async fn an_idp_outage_during_rotation_costs_the_new_kid_a_401_and_never_a_503() {
    let old = key("es256").with_kid("old");
    let new = key("es384").with_kid("new");
    let server = JwksServer::start(&jwks_of(&[&old])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::NOT_FOUND,
    ] {
        server.set(|s| s.status = status);
        tokio::time::advance(Duration::from_secs(31)).await;
        call(&app, &new.sign(&good_claims()))
            .await
            .assert_invalid_token("unknown key id");
        assert_eq!(call(&app, &old.sign(&good_claims())).await.status, StatusCode::OK);
    }
    // Garbage with status 200 does not replace the good set either.
    server.set(|s| {
        s.status = StatusCode::OK;
        s.body = br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#.to_vec();
    });
    tokio::time::advance(Duration::from_secs(31)).await;
    call(&app, &new.sign(&good_claims()))
        .await
        .assert_invalid_token("unknown key id");
    assert_eq!(call(&app, &old.sign(&good_claims())).await.status, StatusCode::OK);
    assert!(jwks.health().ready);
    // And when the provider is back with the new key, it is picked up.
    server.set_jwks(&jwks_of(&[&old, &new]));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(call(&app, &new.sign(&good_claims())).await.status, StatusCode::OK);
}

/// Found by red-teaming (hammering a struggling provider), now fixed: after a failed refresh, `refresh_loop`
/// (src/jwks/remote.rs) retries after 1 s, 2 s, 4 s ... with forced fetches (the
/// cooldown does not apply) and only +-10 % jitter, and `Retry-After` on a 429 or 503 is
/// ignored. A fleet of replicas whose fetches failed together keeps retrying nearly in
/// lockstep, ~9 times in the first five minutes each, at a provider that asked for
/// quiet, while the cached keys make the retries pointless for now. Fix: honour
/// `Retry-After` (clamped to [cooldown, max_refresh]) for the next background attempt and
/// for unknown-kid refetches; start the backoff at the cooldown and use full jitter.
#[tokio::test(start_paused = true)]
async fn a_provider_answering_429_with_retry_after_is_not_asked_again_before_it_said() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    server.set(|s| {
        s.status = StatusCode::TOO_MANY_REQUESTS;
        s.headers.push(("retry-after".into(), "600".into()));
        s.body = b"slow down".to_vec();
    });
    settle(Duration::from_secs(400), || server.hits() >= 2).await;
    let first_failure = server.times.lock().expect("times")[1];
    tokio::time::sleep(Duration::from_secs(590)).await;
    let early: Vec<u64> = server
        .times
        .lock()
        .expect("times")
        .iter()
        .skip(2)
        .map(|t| (*t - first_failure).as_secs())
        .collect();
    assert!(jwks.health().ready, "the cached keys still serve");
    assert!(
        early.is_empty(),
        "asked again {} times within Retry-After: 600, after {early:?} s",
        early.len()
    );
}

#[tokio::test(start_paused = true)]
async fn distinct_unknown_kids_during_a_slow_fetch_all_join_it_and_are_then_remembered() {
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url()).build().await.expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(verifier(), jwks.clone()));
    server.set(|s| s.delay = Duration::from_secs(2));
    tokio::time::advance(Duration::from_secs(31)).await;
    let tokens: Vec<String> = (0..2000)
        .map(|i| k.with_kid(&format!("kid-{i}")).sign(&good_claims()))
        .collect();
    let started = Instant::now();
    let calls = tokens.iter().map(|t| call(&app, t));
    for answer in futures_util::future::join_all(calls).await {
        answer.assert_invalid_token("unknown key id");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.hits(), 2);
    // Remembered: rejected at once even though the cooldown has passed again.
    server.set(|s| s.delay = Duration::ZERO);
    tokio::time::advance(Duration::from_secs(25)).await;
    for t in tokens.iter().take(100) {
        call(&app, t).await.assert_invalid_token("unknown key id");
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(jwks.health().unknown_kid_refetches, 2000);
}

/// Found by red-teaming, now fixed: `Inner::finish` (which clears `in_flight`) runs inside the spawned fetch
/// task. If that task never finishes (its runtime shut down mid-fetch, or a panic), the
/// stored `Shared` future stays in `in_flight` forever, resolved to "fetch task failed":
/// every later `refresh()`, unknown-kid refetch and background refresh joins it and fails
/// at once without contacting the provider. New kids are never picked up again and,
/// after `max_stale`, every request gets 503. Happens to a `RemoteJwks` kept in a static
/// and shared by `#[tokio::test]`s, or built in a setup runtime and used in another.
/// Fix: clear `in_flight` (matching generation) when the joined task fails, e.g. in the
/// `fetch` wrapper on `JoinError`, or with a drop guard inside the task.
#[test]
fn a_fetch_task_killed_with_its_runtime_does_not_wedge_the_key_source() {
    let k = key("es256");
    let body = jwks_of(&[&k]).to_string();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let notify = arrived.clone();
    let (addr, connections) = server_rt.block_on(raw_server(move |mut stream, n| {
        let (body, notify) = (body.clone(), notify.clone());
        async move {
            if n == 1 {
                // The second fetch hangs until its client goes away.
                notify.notify_one();
                let mut buf = [0u8; 16];
                let _ = stream.read(&mut buf).await;
                return;
            }
            let headers = [("content-type", "application/json")];
            respond(&mut stream, "200 OK", &headers, body.as_bytes()).await;
        }
    }));
    let url = format!("http://{addr}/jwks.json");
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("first runtime");
    let jwks = first.block_on(RemoteJwks::builder(url).build()).expect("jwks");
    first.block_on(async {
        let jwks = jwks.clone();
        tokio::spawn(async move { jwks.refresh().await });
        arrived.notified().await;
    });
    drop(first); // the fetch task dies with its runtime
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("second runtime");
    let result = second.block_on(async {
        let mut last = None;
        for _ in 0..3 {
            last = Some(tokio::time::timeout(Duration::from_secs(10), jwks.refresh()).await);
        }
        last.expect("tried")
    });
    assert!(
        matches!(result, Ok(Ok(()))),
        "the key source is wedged: {result:?} ({} connections)",
        connections.load(Ordering::SeqCst)
    );
    drop(server_rt);
}

/// Found by red-teaming, now fixed: credentials in the JWKS URL (`https://user:secret@idp/...`) are used by
/// reqwest for Basic auth but echoed verbatim by this crate: in `FetchError` and
/// `BuildError` texts (`format!("GET {url}: ...")` in remote.rs), in
/// `JwksHealth::last_error` (served without authentication by the gateway's /healthz),
/// in the `RemoteJwks` Debug output and `url()`, in the `jwks_fetches_total{url=..}`
/// metric label and in the warn! log line. Fix: one redacted form of the URL (no
/// userinfo; query dropped or masked) for every message, label and Debug output.
#[tokio::test(start_paused = true)]
async fn credentials_in_the_jwks_url_never_show_in_errors_health_logs_or_debug_output() {
    let (logs, _guard) = Logs::capture();
    let server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    server.set(|s| s.status = StatusCode::SERVICE_UNAVAILABLE);
    let url = format!("http://svc:hunter2@{}/jwks.json", server.addr);
    // The defence chosen: such URLs are refused at configuration, without echoing them.
    let err = RemoteJwks::builder(&url)
        .build()
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("credentials in the URL"), "{err}");
    let refused = RemoteJwks::builder(&url).lazy().expect_err("refused").to_string();
    let everything = format!("{err}\n{refused}\n{}", logs.text());
    assert!(
        !everything.contains("hunter2"),
        "password leaked in:\n{everything}"
    );
    assert_eq!(server.hits(), 0, "nothing is sent with credentials in the URL");
}

#[tokio::test]
async fn no_token_ever_appears_in_logs_or_rejection_responses() {
    let (logs, _guard) = Logs::capture();
    let k = key("es256");
    let server = JwksServer::start(&jwks_of(&[&k])).await;
    let jwks = RemoteJwks::builder(server.url())
        .cooldown(Duration::from_secs(1))
        .build()
        .await
        .expect("jwks");
    let app = guarded_app(JwtAuthLayer::new(
        Verifier::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .require_scopes(["orders:read"])
            .build()
            .expect("verifier"),
        jwks,
    ));
    let expired = claims_with(&[("exp", json!(now() - 3600))]);
    let scoped = claims_with(&[("scope", json!("orders:read"))]);
    let tokens = [
        k.sign(&scoped),
        k.sign(&good_claims()),
        k.sign(&expired),
        k.with_kid("unknown").sign(&scoped),
        k.sign(&claims_with(&[("aud", json!("other"))])),
        format!("{}x", k.sign(&scoped)),
        k.sign_raw(
            &json!({"alg": "ES256", "kid": "py-es256", "crit": ["b64"]}),
            &scoped,
        ),
    ];
    let mut secrets = Vec::new();
    for token in &tokens {
        let mut parts = token.split('.');
        let (_, payload, signature) = (parts.next(), parts.next(), parts.next());
        secrets.extend([payload.expect("payload"), signature.expect("signature")]);
        let answer = call(&app, token).await;
        let text = shown(&answer);
        for secret in &secrets {
            assert!(!text.contains(secret), "token part in response: {text}");
        }
        let cookie = format!("at={token}; at={token}");
        let answer = call_with(&app, &[("cookie", &cookie), ("authorization", "Bearer a b")]).await;
        assert!(!shown(&answer).contains(token.as_str()));
    }
    let text = logs.text();
    assert!(text.contains("request rejected"), "logs were captured: {text}");
    for secret in &secrets {
        assert!(!text.contains(secret), "token part {secret} in logs");
    }
}

// ---------------------------------------------------------------------------------------
// Resource exhaustion: big sets, big keys, expensive tokens
// ---------------------------------------------------------------------------------------

/// An RSA "public key" JWK with a random odd modulus of `bits` bits (verification does
/// not care whether it factors) and exponent `e`.
fn rsa_jwk(kid: &str, bits: usize, e: &[u8], seed: u64) -> Value {
    let mut n = vec![0u8; bits / 8];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for byte in n.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    n[0] |= 0x80;
    *n.last_mut().expect("bytes") |= 1;
    json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": b64(e)})
}

#[test]
fn oversized_rsa_moduli_and_odd_exponents_are_skipped_at_load() {
    let cases = [
        (rsa_jwk("16k", 16384, &[1, 0, 1], 1), "modulus"),
        (rsa_jwk("8k+", 8200, &[1, 0, 1], 2), "modulus"),
        (rsa_jwk("e-even", 2048, &[1, 0, 0], 3), "exponent"),
        (rsa_jwk("e-one", 2048, &[1], 4), "exponent"),
        (rsa_jwk("e-40-bits", 2048, &[1, 0, 0, 0, 1], 5), "exponent"),
    ];
    let set = KeySet::from_jwks(
        json!({"keys": cases.iter().map(|c| c.0.clone()).collect::<Vec<_>>()})
            .to_string()
            .as_bytes(),
    )
    .expect("set");
    assert!(set.is_empty(), "{set:?}");
    for ((_, reason), skipped) in cases.iter().zip(set.skipped()) {
        assert!(skipped.reason.contains(reason), "{skipped:?}");
    }
    let max = rsa_jwk("8k", 8192, &[0xff, 0xff, 0xff, 0xff], 6);
    let set = KeySet::from_jwks(json!({"keys": [max]}).to_string().as_bytes()).expect("set");
    assert_eq!(
        set.len(),
        1,
        "8192 bits and a 32-bit exponent are the accepted maximum"
    );
}

/// Seconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let started = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() / f64::from(n)
}

/// Seconds per call of each operation: five interleaved rounds of `n` calls, keeping
/// each operation's fastest round, so that other tests running at the same time skew
/// the comparison as little as possible.
fn fastest_per_call<const N: usize>(n: u32, mut ops: [&mut dyn FnMut(); N]) -> [f64; N] {
    let mut best = [f64::MAX; N];
    for _ in 0..5 {
        for (op, best) in ops.iter_mut().zip(best.iter_mut()) {
            *best = best.min(per_call(n, &mut **op));
        }
    }
    best
}

#[test]
fn verification_cost_per_token_is_bounded_with_the_largest_rsa_keys_the_set_accepts() {
    let verifier = verifier();
    // Baseline: the 2048-bit fixture key, a signature that does not verify.
    let rs = key("rs256");
    let baseline_keys = KeySet::from_jwks(jwks_of(&[&rs]).to_string().as_bytes()).expect("set");
    let bogus_sig = |len: usize| b64(&[&[0x01u8][..], &vec![0x5a; len - 1]].concat());
    let header = b64_json(&json!({"alg": "RS256", "kid": "py-rs256"}));
    let baseline_token = format!("{header}.{}.{}", b64_json(&good_claims()), bogus_sig(256));

    // Worst case a provider can publish: four 8192-bit keys under one kid (the candidate
    // cap), exponent 2^32 - 1, RS512; the token's signature is below n, so each key
    // costs a full modular exponentiation.
    let big: Vec<Value> = (0..8)
        .map(|i| rsa_jwk("big", 8192, &[0xff, 0xff, 0xff, 0xff], 100 + i))
        .collect();
    let big_keys = KeySet::from_jwks(json!({"keys": big}).to_string().as_bytes()).expect("set");
    assert_eq!(big_keys.len(), 8);
    let header = b64_json(&json!({"alg": "RS512", "kid": "big"}));
    let big_token = format!("{header}.{}.{}", b64_json(&good_claims()), bogus_sig(1024));
    let [baseline, worst] = fastest_per_call(
        10,
        [
            &mut || assert!(verifier.verify::<Value>(&baseline_token, &baseline_keys).is_err()),
            &mut || assert!(verifier.verify::<Value>(&big_token, &big_keys).is_err()),
        ],
    );
    eprintln!(
        "RSA verify, bad signature: 2048-bit/e=65537 {:.1} us; 4 x 8192-bit/e=2^32-1 {:.1} us ({:.0}x)",
        baseline * 1e6,
        worst * 1e6,
        worst / baseline
    );
    assert!(worst < 0.05, "{worst} s per token");
}

/// The most keys a `KeySet` reads from one document (the rest are skipped).
const MAX_KEYS: usize = 1000;

/// A JWKS document of `n` kid-less P-256 keys (the smallest valid JWKs, ~127 bytes).
fn kidless_jwks(n: usize) -> String {
    json!({"keys": (0..n).map(|_| bare_p256_jwk()).collect::<Vec<_>>()}).to_string()
}

/// Found by red-teaming (CPU, hostile or broken provider), now fixed: `KeySet::push` (src/keys.rs) looks for an
/// exact duplicate by scanning every key loaded so far, so loading is quadratic in the
/// number of keys. A 1 MiB document holds ~8 200 kid-less P-256 keys: ~34 million
/// comparisons, measured at ~130 ms in release (~1 s in debug) on the runtime worker
/// that runs the fetch task, at every refresh and unknown-kid refetch. Fix: index
/// duplicates with a HashSet of (kid, kind, alg, material), or cap the number of keys
/// per set (no real provider publishes more than a few dozen).
#[test]
fn loading_a_key_set_takes_time_linear_in_its_number_of_keys() {
    let full = (tower_jwt_auth::DEFAULT_MAX_RESPONSE_SIZE - 200) / 127;
    let (quarter_doc, full_doc) = (kidless_jwks(full / 4), kidless_jwks(full));
    assert!(
        full_doc.len() <= tower_jwt_auth::DEFAULT_MAX_RESPONSE_SIZE,
        "{}",
        full_doc.len()
    );
    let [quarter, whole] = fastest_per_call(
        1,
        [
            &mut || {
                assert_eq!(
                    KeySet::from_jwks(quarter_doc.as_bytes()).expect("set").len(),
                    (full / 4).min(MAX_KEYS)
                )
            },
            &mut || {
                assert_eq!(
                    KeySet::from_jwks(full_doc.as_bytes()).expect("set").len(),
                    full.min(MAX_KEYS)
                )
            },
        ],
    );
    eprintln!(
        "kid-less P-256 JWKS: {} keys load in {:.1} ms, {full} keys ({} bytes) in {:.1} ms ({:.1}x for 4x)",
        full / 4,
        quarter * 1e3,
        full_doc.len(),
        whole * 1e3,
        whole / quarter
    );
    assert!(
        whole / quarter < 7.0,
        "4x the keys took {:.1}x the time: quadratic load",
        whole / quarter
    );
}

#[test]
fn verification_time_does_not_grow_with_the_number_of_keys_in_the_set() {
    let k = key("es256");
    let verifier = verifier();
    let one = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("set");
    let mut keys: Vec<Value> = (0..MAX_KEYS - 1)
        .map(|i| {
            let mut jwk = bare_p256_jwk();
            jwk["kid"] = json!(format!("k{i}"));
            jwk["x5t#S256"] = json!(format!("t{i}"));
            jwk
        })
        .collect();
    let mut last = k.with_kid("k-last").jwk.clone();
    last["x5t#S256"] = json!("t-last");
    keys.push(last);
    let many = KeySet::from_jwks(json!({"keys": keys}).to_string().as_bytes()).expect("set");
    assert_eq!(many.len(), MAX_KEYS);
    let with_kid = k.with_kid("k-last").sign(&good_claims());
    let by_thumbprint = k.sign_raw(&json!({"alg": "ES256", "x5t#S256": "t-last"}), &good_claims());
    let single = k.sign(&good_claims());
    let [base, by_kid, by_x5t] = fastest_per_call(
        50,
        [
            &mut || assert!(verifier.verify::<Value>(&single, &one).is_ok()),
            &mut || assert!(verifier.verify::<Value>(&with_kid, &many).is_ok()),
            &mut || assert!(verifier.verify::<Value>(&by_thumbprint, &many).is_ok()),
        ],
    );
    eprintln!(
        "verify: 1 key {:.1} us; 2001 keys by kid {:.1} us, by x5t#S256 {:.1} us",
        base * 1e6,
        by_kid * 1e6,
        by_x5t * 1e6
    );
    // By kid: a hash lookup. Kid-less by thumbprint: a linear scan (cheap per key).
    assert!(by_kid < base * 3.0, "{base} {by_kid}");
    assert!(by_x5t < 0.005, "{by_x5t}");
}

/// Found by red-teaming (CPU amplification, unauthenticated), now fixed: with several issuers, the unverified
/// `iss` is read before the signature (`Verifier::unverified_issuer` ->
/// `Registered::deserialize` in src/verify.rs), and the duplicate-member check there is
/// quadratic (`reg.names.contains(&name)` for every member). An 8 KiB token with ~840
/// short distinct members costs ~350 000 string comparisons before any key is touched:
/// ~1.1 ms per request in release, ~20 ES256 verifications' worth, against ~56 us for
/// an ordinary forged token. Fix: detect duplicates with a HashSet (or sort + dedup)
/// once the object has more than a handful of members.
#[tokio::test]
async fn a_payload_full_of_members_costs_no_more_than_one_of_the_same_size_before_verification() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let app = guarded_app(
        JwtAuthLayer::issuers(
            Verifier::builder().audience(AUDIENCE).build().expect("verifier"),
            [Issuer::new(ISSUER, keys)],
        )
        .expect("layer"),
    );
    let header = b64_json(&json!({"alg": "ES256", "kid": "py-es256"}));
    let sig = b64(&[7u8; 64]);
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut payload = format!(r#"{{"iss":"{ISSUER}""#);
    let mut members = 0;
    'fill: for a in &alphabet {
        for b in &alphabet {
            if payload.len() > 5900 {
                break 'fill;
            }
            payload.push_str(&format!(r#","{a}{b}":0"#));
            members += 1;
        }
    }
    payload.push('}');
    // The control: as many bytes, in one member.
    let pad = "x".repeat(payload.len() - ISSUER.len() - 20);
    let control = format!(r#"{{"iss":"{ISSUER}","pad":"{pad}"}}"#);
    assert!(control.len().abs_diff(payload.len()) < 8);
    let hostile = format!("{header}.{}.{sig}", b64(payload.as_bytes()));
    let plain = format!("{header}.{}.{sig}", b64(control.as_bytes()));
    assert!(hostile.len() <= 8192, "{}", hostile.len());
    call(&app, &plain).await.assert_invalid_token("invalid signature");
    call(&app, &hostile)
        .await
        .assert_invalid_token("invalid signature");
    let (mut base, mut worst) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        for (token, best) in [(&plain, &mut base), (&hostile, &mut worst)] {
            let started = std::time::Instant::now();
            for _ in 0..20 {
                call(&app, token).await;
            }
            *best = best.min(started.elapsed().as_secs_f64() / 20.0);
        }
    }
    eprintln!(
        "multi-issuer rejection of a forged 8 KiB token: 1 member {:.0} us, {members} members {:.0} us ({:.0}x)",
        base * 1e6,
        worst * 1e6,
        worst / base
    );
    assert!(
        worst < base * 8.0,
        "{members} members: {:.0} us vs {:.0} us per rejected request",
        worst * 1e6,
        base * 1e6
    );
}
