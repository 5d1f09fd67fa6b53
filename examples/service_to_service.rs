//! Service to service: A signs its calls to B, B verifies them against A's published keys.
//!
//! Run with:
//!   cargo run --example service_to_service
//!   cargo run --example service_to_service -- --alg EdDSA
//!
//! Two axum services start in this process on 127.0.0.1 (ports chosen by the OS):
//! - service A publishes its public key at `/.well-known/jwks.json` (`JwksEndpoint`) and,
//!   on `GET /call-b`, calls B through a hyper-util client wrapped in `SignRequestLayer`;
//! - service B guards `/whoami` with `JwtAuthLayer` over `RemoteJwks` (A's JWKS URL) and
//!   answers with the caller's identity.
//!
//! Then calls that B must refuse: one signed with a key A never published (sent with
//! reqwest and `TokenSigner::bearer_for`), one signed with another key under A's kid,
//! and one without a token. Prints what happened; exits 0 when every call went as
//! expected, 1 otherwise.

use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_auth::{
    Algorithm, Claims, JwksEndpoint, JwtAuthLayer, RemoteJwks, SignRequest, SignRequestLayer, SigningKey,
    TokenSigner, VerifiedToken, Verifier,
};

/// Service A's identity: the `iss` and `sub` of its tokens.
pub(crate) const A_ISSUER: &str = "service-a";
/// The audience B accepts.
pub(crate) const B_AUDIENCE: &str = "service-b";

/// Two services on loopback: A calls B with signed requests, B verifies them.
#[derive(Parser, Debug)]
pub(crate) struct Args {
    /// Signature algorithm of A's key (RS256, PS256, ES256, ES384, EdDSA, ...).
    #[arg(long, default_value = "ES256")]
    pub(crate) alg: Algorithm,
}

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// How one call ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    pub(crate) www_authenticate: Option<String>,
    pub(crate) body: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What happened, call by call.
#[derive(Debug)]
pub(crate) struct Report {
    /// Where A publishes its keys.
    pub(crate) jwks_url: String,
    /// The kid of A's key.
    pub(crate) kid: String,
    /// A's signed call to B, relayed by A's `/call-b`.
    pub(crate) signed: Outcome,
    /// A call signed with a key A never published.
    pub(crate) unknown_key: Outcome,
    /// A call signed with another key under A's kid.
    pub(crate) forged: Outcome,
    /// A call without a token.
    pub(crate) unsigned: Outcome,
}

impl Report {
    /// Everything that did not go as expected; empty on success.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let answer = self.signed.json();
        if self.signed.status != StatusCode::OK {
            problems.push(format!(
                "A's signed call: expected 200, got {}",
                self.signed.status
            ));
        } else if answer["caller"] != A_ISSUER || answer["kid"] != self.kid.as_str() {
            problems.push(format!("A's signed call: B saw the wrong caller: {answer}"));
        }
        for (what, outcome) in [
            ("the call signed with an unknown key", &self.unknown_key),
            ("the call signed with a forged key", &self.forged),
            ("the unsigned call", &self.unsigned),
        ] {
            if outcome.status != StatusCode::UNAUTHORIZED {
                problems.push(format!("{what}: expected 401, got {}", outcome.status));
            }
        }
        problems
    }
}

/// Servers started by [`run`], stopped when it returns (or fails).
struct Servers(Vec<JoinHandle<()>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for server in &self.0 {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("server error: {e}");
        }
    })
}

/// A's outgoing client: hyper-util's, with every request to B signed for B.
type SignedClient = SignRequest<Client<HttpConnector, Empty<Bytes>>>;

/// Service A: publishes its keys, and calls B on `GET /call-b`.
pub(crate) fn service_a(jwks: JwksEndpoint, client: SignedClient, b_whoami: Uri) -> Router {
    Router::new()
        .route_service("/.well-known/jwks.json", jwks)
        .route("/call-b", get(call_b))
        .with_state(Arc::new((client, b_whoami)))
}

/// Calls B's `/whoami` with a signed request and relays B's answer.
async fn call_b(State(state): State<Arc<(SignedClient, Uri)>>) -> axum::response::Response {
    let (client, b_whoami) = &*state;
    let request = match Request::get(b_whoami.clone()).body(Empty::new()) {
        Ok(request) => request,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let response = match client.clone().oneshot(request).await {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("service B: {e}")).into_response(),
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(body) => {
            let mut relayed = (parts.status, body.to_bytes()).into_response();
            if let Some(challenge) = parts.headers.get(http::header::WWW_AUTHENTICATE) {
                relayed
                    .headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            relayed
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("service B: {e}")).into_response(),
    }
}

/// Service B: `/whoami` answers with the verified caller; the keys come from `jwks`.
pub(crate) fn service_b(jwks: RemoteJwks) -> Result<Router, Error> {
    let verifier = Verifier::builder()
        .issuer(A_ISSUER)
        .audience(B_AUDIENCE)
        .build()?;
    Ok(Router::new()
        .route("/whoami", get(whoami))
        .route_layer(JwtAuthLayer::new(verifier, jwks).realm("service-b")))
}

async fn whoami(
    Extension(Claims(claims)): Extension<Claims>,
    Extension(token): Extension<VerifiedToken>,
) -> Json<Value> {
    Json(json!({
        "caller": claims.get("sub"),
        "issuer": claims.get("iss"),
        "kid": token.kid.as_deref(),
        "alg": token.alg.as_str(),
    }))
}

/// Sends `GET url` with reqwest, with `authorization` if given.
async fn get_with(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<http::HeaderValue>,
) -> Result<Outcome, Error> {
    let mut request = client.get(url);
    if let Some(value) = authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let response = request.send().await?;
    let status = response.status();
    let www_authenticate = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await?;
    Ok(Outcome {
        status,
        www_authenticate,
        body,
    })
}

/// Starts both services on loopback, makes the calls, stops the services.
pub(crate) async fn run(args: Args) -> Result<Report, Error> {
    let a_listener = TcpListener::bind("127.0.0.1:0").await?;
    let b_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (a_addr, b_addr) = (a_listener.local_addr()?, b_listener.local_addr()?);
    let jwks_url = format!("http://{a_addr}/.well-known/jwks.json");
    let b_whoami: Uri = format!("http://{b_addr}/whoami").parse()?;

    // Service A: its key, its published JWKS, its signed client for B.
    let key = SigningKey::generate(args.alg, "service-a-1")?;
    let signer = TokenSigner::builder(key.clone(), A_ISSUER).build()?;
    let b_authority = b_whoami.authority().map(|a| a.to_string());
    let sign = SignRequestLayer::per_request(signer, move |parts| {
        // Only requests to B carry a token for B.
        (parts.uri.authority().map(|a| a.as_str()) == b_authority.as_deref()).then(|| B_AUDIENCE.to_string())
    });
    let client = ServiceBuilder::new()
        .layer(sign)
        .service(Client::builder(TokioExecutor::new()).build_http());
    let mut servers = Servers(Vec::new());
    let app_a = service_a(JwksEndpoint::new(&[&key]), client, b_whoami.clone());
    servers.0.push(serve(a_listener, app_a).await);

    // Service B: trusts whatever A publishes at its JWKS URL.
    let remote = RemoteJwks::builder(&jwks_url).build().await?;
    servers.0.push(serve(b_listener, service_b(remote)?).await);

    let http = reqwest::Client::builder().no_proxy().build()?;
    let signed = get_with(&http, &format!("http://{a_addr}/call-b"), None).await?;

    // A third party's key: never published by A.
    let intruder = TokenSigner::builder(SigningKey::generate(args.alg, "intruder-1")?, A_ISSUER).build()?;
    let unknown_key = get_with(
        &http,
        &b_whoami.to_string(),
        Some(intruder.bearer_for(B_AUDIENCE)?),
    )
    .await?;
    // Another key that claims to be A's.
    let forger = TokenSigner::builder(SigningKey::generate(args.alg, key.kid())?, A_ISSUER).build()?;
    let forged = get_with(&http, &b_whoami.to_string(), Some(forger.bearer_for(B_AUDIENCE)?)).await?;
    let unsigned = get_with(&http, &b_whoami.to_string(), None).await?;

    drop(servers);
    Ok(Report {
        jwks_url,
        kid: key.kid().to_string(),
        signed,
        unknown_key,
        forged,
        unsigned,
    })
}

fn describe(outcome: &Outcome) -> String {
    match &outcome.www_authenticate {
        Some(challenge) => format!("{} ({challenge})", outcome.status),
        None => format!("{} {}", outcome.status, outcome.body.trim()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let alg = args.alg;
    let report = match run(args).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("service_to_service: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "service A publishes {} (kid {}, {alg})",
        report.jwks_url, report.kid
    );
    println!("A -> B, signed by A:              {}", describe(&report.signed));
    println!(
        "signed with an unknown key -> B:  {}",
        describe(&report.unknown_key)
    );
    println!("signed with a forged A key -> B:  {}", describe(&report.forged));
    println!("no token -> B:                    {}", describe(&report.unsigned));
    let problems = report.problems();
    if problems.is_empty() {
        println!("ok: B accepted A and refused the others");
        ExitCode::SUCCESS
    } else {
        for problem in problems {
            eprintln!("unexpected: {problem}");
        }
        ExitCode::FAILURE
    }
}
