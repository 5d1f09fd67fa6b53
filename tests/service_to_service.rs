//! The outgoing side end to end on loopback: `TokenSigner` and `SignRequestLayer` over
//! hyper-util's client in service A, A's keys served by `JwksEndpoint`, service B
//! verifying through `RemoteJwks` and `JwtAuthLayer`. Also a key rotation drill in
//! paused time, `jwt-tool keygen` output, interop with PyJWT both ways, and the
//! `service_to_service` example.

#[allow(dead_code)]
#[path = "../examples/service_to_service.rs"]
mod example;

#[allow(dead_code)]
#[path = "../examples/jwt-tool.rs"]
mod jwt_tool;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower::{Layer, Service, ServiceExt};
use tower_jwt_auth::{
    Algorithm, Claims, DEFAULT_JWKS_MAX_AGE, JwksEndpoint, JwtAuthLayer, KeySet, RemoteJwks, SignRequest,
    SignRequestLayer, SigningKey, TokenSigner, VerifiedToken, Verifier,
};

const A_ISSUER: &str = example::A_ISSUER;
const B_AUDIENCE: &str = example::B_AUDIENCE;
/// The algorithms a service key is most likely to use, one per key type and padding.
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

// ---------------------------------------------------------------------------------------
// Two services on loopback
// ---------------------------------------------------------------------------------------

type Hyper = Client<HttpConnector, Empty<Bytes>>;
type SignedClient = SignRequest<Hyper>;

/// A's client: hyper-util's, every request signed for B.
fn signed_client(signer: TokenSigner) -> SignedClient {
    SignRequestLayer::new(signer, B_AUDIENCE).layer(Client::builder(TokioExecutor::new()).build_http())
}

/// A wall clock that follows tokio's (paused) time, for the signer and B's verifier.
fn tokio_clock() -> impl Fn() -> SystemTime + Clone + Send + Sync + 'static {
    let start = SystemTime::now();
    let t0 = tokio::time::Instant::now();
    move || start + t0.elapsed()
}

/// B's verifier: tokens from A, for B.
fn b_verifier(clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Verifier {
    Verifier::builder()
        .issuer(A_ISSUER)
        .audience(B_AUDIENCE)
        .clock(clock)
        .build()
        .expect("verifier")
}

/// Service B: `/whoami` answers with all the verified claims and the kid.
fn service_b(verifier: Verifier, keys: RemoteJwks) -> Router {
    async fn whoami(
        Extension(Claims(claims)): Extension<Claims>,
        Extension(token): Extension<VerifiedToken>,
    ) -> Json<Value> {
        Json(json!({ "claims": claims, "kid": token.kid.as_deref(), "alg": token.alg.as_str() }))
    }
    Router::new()
        .route("/whoami", get(whoami))
        .route_layer(JwtAuthLayer::new(verifier, keys))
}

async fn serve(app: Router) -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, server)
}

/// A serving its JWKS, B verifying against it; both stopped on drop.
struct World {
    jwks: JwksEndpoint,
    jwks_url: String,
    remote: RemoteJwks,
    b_whoami: Uri,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

impl World {
    async fn start(jwks: JwksEndpoint, verifier: Verifier) -> World {
        let (a_addr, a) = serve(Router::new().route_service("/.well-known/jwks.json", jwks.clone())).await;
        let jwks_url = format!("http://{a_addr}/.well-known/jwks.json");
        let remote = RemoteJwks::builder(&jwks_url)
            .build()
            .await
            .expect("B loads A's keys");
        let (b_addr, b) = serve(service_b(verifier, remote.clone())).await;
        World {
            jwks,
            jwks_url,
            remote,
            b_whoami: format!("http://{b_addr}/whoami").parse().expect("uri"),
            servers: vec![a, b],
        }
    }

    /// The kids B holds now.
    fn b_kids(&self) -> BTreeSet<String> {
        let keys = self.remote.keys().expect("B has keys");
        keys.kids().map(str::to_string).collect()
    }
}

/// B's answer to one call.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

/// GET B's `/whoami` through `client`, driving readiness first.
async fn call(client: &mut SignedClient, url: &Uri) -> Answer {
    let req = Request::get(url.clone()).body(Empty::new()).expect("request");
    let res = client
        .ready()
        .await
        .expect("client ready")
        .call(req)
        .await
        .expect("B answers");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn kids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn every_algorithm_round_trips_from_the_signed_client_to_b() {
    for alg in ALGORITHMS {
        let key = SigningKey::generate(alg, format!("a-{alg}")).expect("key");
        let world = World::start(JwksEndpoint::new(&[&key]), b_verifier(SystemTime::now)).await;
        let signer = TokenSigner::builder(key, A_ISSUER).build().expect("signer");
        let mut client = signed_client(signer);
        let answer = call(&mut client, &world.b_whoami).await;
        assert_eq!(answer.status, StatusCode::OK, "{alg}: {answer:?}");
        assert_eq!(answer.body["claims"]["sub"], A_ISSUER, "{alg}");
        assert_eq!(answer.body["claims"]["aud"], B_AUDIENCE, "{alg}");
        assert_eq!(answer.body["alg"], alg.as_str());
        assert_eq!(answer.body["kid"], format!("a-{alg}"));
    }
}

#[tokio::test]
async fn b_refuses_a_key_that_a_did_not_publish() {
    let key = SigningKey::generate(Algorithm::ES256, "a-1").expect("key");
    let world = World::start(JwksEndpoint::new(&[&key]), b_verifier(SystemTime::now)).await;
    for intruder in [
        SigningKey::generate(Algorithm::ES256, "intruder").expect("key"),
        // The same kid as A's key, another key pair.
        SigningKey::generate(Algorithm::ES256, "a-1").expect("key"),
    ] {
        let signer = TokenSigner::builder(intruder, A_ISSUER).build().expect("signer");
        let answer = call(&mut signed_client(signer), &world.b_whoami).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_client_reuses_each_token_until_80_percent_of_its_lifetime_then_renews() {
    let clock = tokio_clock();
    let key = SigningKey::generate(Algorithm::EdDSA, "a-1").expect("key");
    let world = World::start(JwksEndpoint::new(&[&key]), b_verifier(clock.clone())).await;
    let signer = TokenSigner::builder(key, A_ISSUER)
        .clock(clock.clone())
        .build()
        .expect("signer");
    let mut client = signed_client(signer);
    // One call per simulated second for ten minutes.
    let mut uses: Vec<(String, u64, u64)> = Vec::new(); // (jti, iat, when)
    for second in 0..600u64 {
        let answer = call(&mut client, &world.b_whoami).await;
        assert_eq!(answer.status, StatusCode::OK, "at {second} s: {answer:?}");
        let claims = &answer.body["claims"];
        let jti = claims["jti"].as_str().expect("jti").to_string();
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 300));
        let now = clock()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("epoch")
            .as_secs();
        uses.push((jti, iat, now));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let distinct: BTreeSet<&str> = uses.iter().map(|(jti, _, _)| jti.as_str()).collect();
    assert_eq!(distinct.len(), 3, "renewed at 240 s and 480 s");
    for (jti, iat, now) in &uses {
        assert!(now - iat < 240, "token {jti} used {} s after iat", now - iat);
    }
}

#[tokio::test(start_paused = true)]
async fn b_refreshes_with_if_none_match_and_gets_304_until_the_set_changes() {
    let (k1, k2) = (
        SigningKey::generate(Algorithm::ES256, "k1").expect("key"),
        SigningKey::generate(Algorithm::ES256, "k2").expect("key"),
    );
    let world = World::start(JwksEndpoint::new(&[&k1]), b_verifier(SystemTime::now)).await;
    world.remote.refresh().await.expect("refresh");
    world.remote.refresh().await.expect("refresh");
    assert_eq!(world.remote.health().not_modified, 2);
    world.jwks.set_keys(&[&k1, &k2]);
    world.remote.refresh().await.expect("refresh");
    let health = world.remote.health();
    assert_eq!((health.fetches, health.not_modified), (4, 2), "{health:?}");
    assert_eq!(world.b_kids(), kids(&["k1", "k2"]));

    // The same over plain HTTP.
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let first = http.get(&world.jwks_url).send().await.expect("GET");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "application/jwk-set+json");
    assert_eq!(first.headers()["cache-control"], "public, max-age=300");
    let etag = first.headers()["etag"].clone();
    let again = http
        .get(&world.jwks_url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.expect("body").is_empty());
}

/// Calls B once per simulated second until `until` (seconds since the drill began),
/// counting every answer that is not a 200 and recording the kids B saw.
async fn calls_until(
    client: &mut SignedClient,
    world: &World,
    start: tokio::time::Instant,
    until: u64,
    seen: &mut BTreeSet<String>,
    failures: &mut Vec<String>,
) {
    while start.elapsed() < Duration::from_secs(until) {
        let answer = call(client, &world.b_whoami).await;
        if answer.status == StatusCode::OK {
            seen.insert(answer.body["kid"].as_str().unwrap_or_default().to_string());
        } else {
            failures.push(format!("at {:?}: {answer:?}", start.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publish next, switch the signer, retire the previous key: with B refreshing A's keys
/// as A's `Cache-Control` asks, not one call fails and B never has to chase a kid.
#[tokio::test(start_paused = true)]
async fn rotation_drill_publish_next_switch_retire_previous_with_zero_failed_calls() {
    let clock = tokio_clock();
    let old = SigningKey::generate(Algorithm::ES256, "a-2025-01").expect("key");
    let new = SigningKey::generate(Algorithm::ES256, "a-2025-02").expect("key");
    let world = World::start(JwksEndpoint::new(&[&old]), b_verifier(clock.clone())).await;
    let signer = TokenSigner::builder(old.clone(), A_ISSUER)
        .clock(clock.clone())
        .build()
        .expect("signer");
    let mut client = signed_client(signer.clone());
    let start = tokio::time::Instant::now();
    let (mut seen, mut failures) = (BTreeSet::new(), Vec::new());
    // B picks up a change within max-age (it refreshes ahead, at 90 % +-10 %).
    let propagation = DEFAULT_JWKS_MAX_AGE.as_secs() + 30;

    // Steady state on the old key.
    calls_until(&mut client, &world, start, 60, &mut seen, &mut failures).await;
    assert_eq!(seen, kids(&["a-2025-01"]));

    // 1. Publish the next key beside the current one; wait for B to have it.
    world.jwks.set_keys(&[&old, &new]);
    let published = start.elapsed().as_secs();
    calls_until(
        &mut client,
        &world,
        start,
        published + propagation,
        &mut seen,
        &mut failures,
    )
    .await;
    assert_eq!(world.b_kids(), kids(&["a-2025-01", "a-2025-02"]));

    // 2. Switch the signer; keep the old key published as the previous one.
    signer.set_key(new.clone());
    world.jwks.set_keys(&[&new, &old]);
    let switched = start.elapsed().as_secs();
    seen.clear();
    calls_until(
        &mut client,
        &world,
        start,
        switched + 10,
        &mut seen,
        &mut failures,
    )
    .await;
    assert_eq!(
        seen,
        kids(&["a-2025-02"]),
        "the first call after the switch uses the new key"
    );

    // 3. Once the old key's last token has expired (lifetime + B's leeway), retire it.
    let retire_at = switched + signer.lifetime().as_secs() + 60;
    calls_until(&mut client, &world, start, retire_at, &mut seen, &mut failures).await;
    world.jwks.set_keys(&[&new]);
    calls_until(
        &mut client,
        &world,
        start,
        retire_at + propagation,
        &mut seen,
        &mut failures,
    )
    .await;
    assert_eq!(world.b_kids(), kids(&["a-2025-02"]));
    // Steady state again: B's next refresh finds the set unchanged.
    let retired = start.elapsed().as_secs();
    calls_until(
        &mut client,
        &world,
        start,
        retired + propagation,
        &mut seen,
        &mut failures,
    )
    .await;
    assert_eq!(seen, kids(&["a-2025-02"]));

    assert!(
        failures.is_empty(),
        "{} failed calls: {failures:#?}",
        failures.len()
    );
    let health = world.remote.health();
    assert_eq!(health.unknown_kid_refetches, 0, "{health:?}");
    assert_eq!(health.failures, 0, "{health:?}");
    assert!(health.not_modified > 0, "unchanged sets cost a 304: {health:?}");
    assert!(
        health.tokens_accepted > 1000,
        "one accepted call per second: {health:?}"
    );

    // The retired key no longer opens B's door.
    let stale = TokenSigner::builder(old, A_ISSUER)
        .clock(clock)
        .build()
        .expect("signer");
    let answer = call(&mut signed_client(stale), &world.b_whoami).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
}

// ---------------------------------------------------------------------------------------
// jwt-tool keygen output, and PyJWT
// ---------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("s2s-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key made by `jwt-tool keygen`: its files, and the key loaded from its PEM.
struct KeygenKey {
    alg: Algorithm,
    kid: String,
    pem: PathBuf,
    jwks: PathBuf,
    key: SigningKey,
}

/// Runs `jwt-tool keygen --alg ALG --kid ID --out DIR` and loads what it wrote.
async fn keygen(dir: &TempDir, alg: Algorithm) -> KeygenKey {
    let kid = format!("svc-{}", alg.as_str().to_lowercase());
    let out = dir.path().to_str().expect("utf-8 path");
    let args = [
        "jwt-tool",
        "keygen",
        "--alg",
        alg.as_str(),
        "--kid",
        &kid,
        "--out",
        out,
    ];
    let cli = jwt_tool::Cli::try_parse_from(args).expect("keygen command line");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = jwt_tool::run(cli, &mut std::io::empty(), &mut stdout, &mut stderr).await;
    assert_eq!(code, 0, "keygen {alg}: {}", String::from_utf8_lossy(&stderr));
    let pem = dir.path().join(format!("{kid}.pem"));
    let jwks = dir.path().join(format!("{kid}.jwks.json"));
    let key = SigningKey::from_pem(&std::fs::read(&pem).expect("pem file"), alg, kid.as_str())
        .expect("keygen's PEM loads into SigningKey");
    KeygenKey {
        alg,
        kid,
        pem,
        jwks,
        key,
    }
}

#[tokio::test]
async fn keygen_output_loads_into_a_signing_key_on_one_side_and_a_key_set_on_the_other() {
    let dir = TempDir::new();
    for alg in ALGORITHMS {
        let k = keygen(&dir, alg).await;
        let file = std::fs::read(&k.jwks).expect("jwks file");
        let keys = KeySet::from_jwks(&file).expect("keygen's JWKS loads into KeySet");
        assert_eq!(keys.kids().collect::<Vec<_>>(), [k.kid.as_str()]);
        assert!(keys.skipped().is_empty(), "{:?}", keys.skipped());
        // What JwksEndpoint publishes for the loaded key is what keygen wrote.
        let published: Value = serde_json::from_slice(&JwksEndpoint::new(&[&k.key]).body()).expect("json");
        assert_eq!(
            published,
            serde_json::from_slice::<Value>(&file).expect("json"),
            "{alg}"
        );

        let signer = TokenSigner::builder(k.key.clone(), A_ISSUER)
            .build()
            .expect("signer");
        let token = signer.token(B_AUDIENCE).expect("token");
        let verified = b_verifier(SystemTime::now)
            .verify::<Value>(&token, &keys)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.token.kid.as_deref(), Some(k.kid.as_str()));
        assert_eq!(verified.claims["sub"], A_ISSUER);
    }
}

const PYJWT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_interop.py");

/// Fails the test, with the fix, when python3 or PyJWT is missing.
fn require_pyjwt() {
    let fix = "the PyJWT interop tests need python3 with PyJWT: pip install pyjwt cryptography";
    let check = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {fix}"));
    assert!(
        check.status.success(),
        "`import jwt, cryptography` failed: {}; {fix}",
        String::from_utf8_lossy(&check.stderr).trim()
    );
}

/// Runs `pyjwt_interop.py COMMAND` with `cases` on stdin; returns its JSON answer.
fn pyjwt(command: &str, cases: &Value) -> Vec<Value> {
    use std::io::Write;
    require_pyjwt();
    let mut child = Command::new("python3")
        .arg(PYJWT_SCRIPT)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cases.to_string().as_bytes())
        .expect("write cases");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "pyjwt_interop.py {command} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from pyjwt_interop.py")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn tokens_from_our_signer_with_keygen_keys_verify_in_pyjwt() {
    let dir = TempDir::new();
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for alg in ALGORITHMS {
        let k = keygen(&dir, alg).await;
        let signer = TokenSigner::builder(k.key.clone(), A_ISSUER)
            .subject("service-a-worker")
            .claim("scope", "orders:read")
            .build()
            .expect("signer");
        let token = signer.token(B_AUDIENCE).expect("token");
        let case = json!({
            "token": token, "jwks": path_str(&k.jwks), "issuer": A_ISSUER, "audience": B_AUDIENCE,
        });
        cases.push(case.clone());
        expected.push((k.alg, k.kid.clone(), true));
        // Controls: PyJWT must refuse these, or the script proves nothing.
        let mut wrong_audience = case.clone();
        wrong_audience["audience"] = json!("service-c");
        cases.push(wrong_audience);
        expected.push((k.alg, k.kid.clone(), false));
        let mut tampered = case;
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        tampered["token"] = json!(forged);
        cases.push(tampered);
        expected.push((k.alg, k.kid.clone(), false));
    }
    let results = pyjwt("verify", &Value::Array(cases));
    assert_eq!(results.len(), expected.len());
    for (result, (alg, kid, ok)) in results.iter().zip(expected) {
        assert_eq!(result["ok"], ok, "{alg}: {result}");
        if ok {
            assert_eq!(result["header"]["alg"], alg.as_str(), "{result}");
            assert_eq!(result["header"]["kid"], kid.as_str(), "{result}");
            let claims = &result["claims"];
            assert_eq!(claims["iss"], A_ISSUER);
            assert_eq!(claims["sub"], "service-a-worker");
            assert_eq!(claims["aud"], B_AUDIENCE);
            assert_eq!(claims["scope"], "orders:read");
            assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 22), "{claims}");
        }
    }
}

#[tokio::test]
async fn pyjwt_signed_tokens_verify_with_our_key_set() {
    let dir = TempDir::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_secs();
    let mut keys = Vec::new();
    let mut cases = Vec::new();
    for alg in ALGORITHMS {
        let k = keygen(&dir, alg).await;
        cases.push(json!({
            "pem": path_str(&k.pem), "alg": alg.as_str(), "kid": k.kid,
            "claims": {
                "iss": A_ISSUER, "sub": format!("py-{}", k.kid), "aud": B_AUDIENCE,
                "iat": now, "exp": now + 300, "jti": format!("py-jti-{}", k.kid),
            },
        }));
        keys.push(k);
    }
    let results = pyjwt("sign", &Value::Array(cases));
    assert_eq!(results.len(), keys.len());
    let verifier = b_verifier(SystemTime::now);
    for (result, k) in results.iter().zip(&keys) {
        let token = result["token"].as_str().expect("token");
        let set = KeySet::from_jwks(&std::fs::read(&k.jwks).expect("jwks")).expect("key set");
        let verified = verifier
            .verify::<Value>(token, &set)
            .unwrap_or_else(|e| panic!("{}: PyJWT's token refused: {e}", k.alg));
        assert_eq!(verified.token.alg, k.alg);
        assert_eq!(verified.token.kid.as_deref(), Some(k.kid.as_str()));
        assert_eq!(verified.claims["sub"], format!("py-{}", k.kid));
        // And the key of another algorithm does not verify it.
        let other = keys.iter().find(|o| o.kid != k.kid).expect("another key");
        let other_set = KeySet::from_jwks(&std::fs::read(&other.jwks).expect("jwks")).expect("key set");
        assert!(verifier.verify::<Value>(token, &other_set).is_err(), "{}", k.alg);
    }
}

// ---------------------------------------------------------------------------------------
// The example
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_example_runs_and_b_accepts_a_and_refuses_the_others() {
    for alg in ["ES256", "EdDSA"] {
        let args = example::Args::try_parse_from(["service_to_service", "--alg", alg]).expect("args");
        let report = example::run(args).await.expect("the example runs");
        assert_eq!(report.problems(), Vec::<String>::new(), "{report:#?}");
        assert_eq!(report.signed.status, StatusCode::OK);
        let answer: Value = serde_json::from_str(&report.signed.body).expect("json");
        assert_eq!(answer["caller"], A_ISSUER);
        assert_eq!(answer["alg"], alg);
        for refused in [&report.unknown_key, &report.forged] {
            let challenge = refused.www_authenticate.as_deref().unwrap_or_default();
            assert!(challenge.contains("invalid_token"), "{report:#?}");
        }
        assert_eq!(report.unsigned.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn the_example_refuses_an_hmac_algorithm() {
    let args = example::Args::try_parse_from(["service_to_service", "--alg", "HS256"]).expect("args");
    let err = example::run(args).await.expect_err("HS256 is no key pair");
    assert!(err.to_string().contains("HMAC"), "{err}");
}
