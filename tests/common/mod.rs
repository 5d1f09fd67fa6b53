//! Test helpers shared by the integration tests: fixture keys, raw token signing, a
//! scriptable JWKS server and a guarded app, all on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{Claims, JwtAuthLayer, VerifiedToken};

pub mod oidc;

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api";

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pyjwt");

/// A signing key from the PyJWT fixtures, with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

/// Names of the fixture keys: rs256 rs384 ps256 es256 es384 eddsa.
pub const KEY_NAMES: [&str; 6] = ["rs256", "rs384", "ps256", "es256", "es384", "eddsa"];

pub fn fixture_jwks() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).expect("jwks fixture");
    serde_json::from_str(&text).expect("jwks json")
}

pub fn fixture_tokens() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/tokens.json")).expect("tokens fixture");
    serde_json::from_str(&text).expect("tokens json")
}

/// Loads fixture key `name` (e.g. "es256").
pub fn key(name: &str) -> TestKey {
    let pem = std::fs::read(format!("{FIXTURES}/{name}.pem")).expect("pem fixture");
    let kid = format!("py-{name}");
    let jwk = fixture_jwks()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .cloned()
        .expect("jwk for kid");
    let alg: Algorithm = jwk["alg"].as_str().expect("alg").parse().expect("known alg");
    let encoding = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no fixture for {other:?}"),
    }
    .expect("encoding key");
    TestKey {
        alg,
        kid,
        encoding,
        jwk,
    }
}

impl TestKey {
    /// The same key under another kid (for rotation tests).
    pub fn with_kid(&self, kid: &str) -> TestKey {
        let mut k = self.clone();
        k.kid = kid.into();
        k.jwk["kid"] = kid.into();
        k
    }

    /// A signed token with header {alg, kid, typ: JWT} and these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": alg_name(self.alg), "kid": self.kid, "typ": "JWT"});
        self.sign_raw(&header, claims)
    }

    /// Signs whatever header and claims it is given, with this key's algorithm.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", b64_json(header), b64_json(claims));
        self.sign_message(&message, self.alg)
    }

    /// Signs `message` (`header.payload`) and appends the signature.
    pub fn sign_message(&self, message: &str, alg: Algorithm) -> String {
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, alg).expect("sign");
        format!("{message}.{sig}")
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// A fresh P-256 key no key set knows, under `kid` (the fixtures hold one ES256 key).
pub fn fresh_es256(kid: &str) -> TestKey {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate P-256 key");
    let pkcs8 = pair.to_pkcs8v1().expect("pkcs8");
    let point = pair.public_key().as_ref();
    assert_eq!((point.len(), point[0]), (65, 0x04), "uncompressed point");
    TestKey {
        alg: Algorithm::ES256,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims that pass the default test verifier: iss, aud, sub, iat now, exp in an hour.
pub fn good_claims() -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 3600})
}

/// A JWKS document holding these keys' public JWKs.
pub fn jwks_of(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// What the scriptable JWKS server answers.
#[derive(Clone)]
pub struct Script {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Send the body in 64 KiB chunks without a content-length.
    pub chunked: bool,
}

/// A JWKS server on 127.0.0.1:0 whose answers a test can change, counting requests.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// When each request arrived (tokio time, so paused time counts).
    pub times: Arc<Mutex<Vec<tokio::time::Instant>>>,
    script: Arc<Mutex<Script>>,
    pub last_request_headers: Arc<Mutex<Option<HeaderMap>>>,
}

impl JwksServer {
    pub async fn start(jwks: &Value) -> JwksServer {
        let script = Script {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "application/json".into())],
            body: jwks.to_string().into_bytes(),
            delay: Duration::ZERO,
            chunked: false,
        };
        let server = JwksServer {
            addr: "127.0.0.1:0".parse().expect("addr"),
            hits: Arc::new(AtomicUsize::new(0)),
            times: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(script)),
            last_request_headers: Arc::new(Mutex::new(None)),
        };
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(server.clone());
        let addr = serve(app).await;
        JwksServer { addr, ..server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_jwks(&self, jwks: &Value) {
        let mut s = self.script.lock().expect("script");
        s.status = StatusCode::OK;
        s.body = jwks.to_string().into_bytes();
    }

    /// Seconds between the first two requests the server saw.
    pub fn first_gap(&self) -> f64 {
        let times = self.times.lock().expect("times");
        (times[1] - times[0]).as_secs_f64()
    }

    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().expect("script"));
    }
}

async fn serve_jwks(State(server): State<JwksServer>, headers: HeaderMap) -> Response<Body> {
    server.hits.fetch_add(1, Ordering::SeqCst);
    server
        .times
        .lock()
        .expect("times")
        .push(tokio::time::Instant::now());
    *server.last_request_headers.lock().expect("headers") = Some(headers);
    let script = server.script.lock().expect("script").clone();
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    let body = if script.chunked {
        let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> =
            script.body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(script.body)
    };
    let mut res = Response::new(body);
    *res.status_mut() = script.status;
    for (name, value) in script.headers {
        res.headers_mut().insert(
            http::HeaderName::try_from(name).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    res
}

/// Serves `app` on 127.0.0.1:0 in the background and returns its address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

/// An app guarded by `layer` whose `/whoami` echoes the verified claims and kid.
pub fn guarded_app(layer: JwtAuthLayer) -> Router {
    async fn whoami(Claims(claims): Claims, token: axum::Extension<VerifiedToken>) -> impl IntoResponse {
        axum::Json(json!({"claims": claims, "kid": token.kid.as_deref()}))
    }
    Router::new().route("/whoami", get(whoami)).route_layer(layer)
}

/// A response reduced to what the tests check.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub body: Value,
}

/// Sends GET /whoami through the app with `Authorization: Bearer <token>`.
pub async fn call(app: &Router, token: &str) -> Answer {
    call_with(app, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Sends GET /whoami with these headers.
pub async fn call_with(app: &Router, headers: &[(&str, &str)]) -> Answer {
    let raw: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    call_raw(app, &raw).await
}

/// Sends GET /whoami with header values given as raw bytes (obs-text allowed).
pub async fn call_raw(app: &Router, headers: &[(&str, &[u8])]) -> Answer {
    let mut req = Request::get("/whoami");
    for (name, value) in headers {
        req = req.header(*name, http::HeaderValue::from_bytes(value).expect("header value"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let www_authenticate = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        www_authenticate,
        body,
    }
}

/// Lets simulated time pass, in 1000 small steps, until `done` holds (at most `budget`).
/// With paused tokio time this runs the background refresher and fetch tasks.
pub async fn settle(budget: Duration, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(budget / 1000).await;
    }
    assert!(done(), "condition not reached within {budget:?}");
}

/// The verifier most tests use: the test issuer and audience, defaults otherwise.
pub fn verifier() -> tower_jwt_auth::Verifier {
    tower_jwt_auth::Verifier::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .expect("verifier")
}

impl Answer {
    /// Asserts a 401 invalid_token whose description contains `reason`.
    pub fn assert_invalid_token(&self, reason: &str) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{self:?}");
        let challenge = self.www_authenticate.as_deref().unwrap_or_default();
        assert!(challenge.starts_with("Bearer "), "{self:?}");
        assert!(challenge.contains("error=\"invalid_token\""), "{self:?}");
        let description = self.body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(reason), "expected {reason:?} in {self:?}");
    }
}
