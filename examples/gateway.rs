//! Run with: cargo run --release --features axum --example gateway -- --demo
//!
//! A reverse proxy that lets through only requests carrying a valid bearer JWT.
//!
//! Verified requests go to `--upstream` with the token's claims as base64url JSON in
//! `x-jwt-claims`, and without the `Authorization` header unless `--forward-token`.
//! Rejections are the RFC 6750 answers of [`JwtAuthLayer`]; an upstream that cannot be
//! reached gets a 502. `GET /healthz` is answered by the gateway itself, without a token;
//! `--metrics-listen` adds a second listener with Prometheus metrics at `/metrics`.
//! `--demo` starts an embedded issuer and an echo upstream, and prints a token with curl
//! lines to try.

use std::fmt;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower_jwt_auth::{
    Algorithm, AuthError, BuildError, Claims, ConfigError, DEFAULT_COOLDOWN, DEFAULT_FETCH_TIMEOUT,
    DEFAULT_MAX_REFRESH, DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH, DEFAULT_REFRESH_INTERVAL, JsonClaims,
    JwksHealth, JwtAuthLayer, RemoteJwks, RemoteJwksBuilder, VerifiedToken, Verifier,
};

/// The header that carries the verified claims to the upstream.
pub(crate) const X_JWT_CLAIMS: HeaderName = HeaderName::from_static("x-jwt-claims");

/// Headers that concern one connection only (RFC 9110, section 7.6.1); never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Time allowed to open a connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the upstream's response head; after that the client gets a 502.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The path the gateway answers itself: never proxied, never asks for a token.
pub(crate) const HEALTHZ: &str = "/healthz";
/// The path of the Prometheus text on the --metrics-listen listener.
pub(crate) const METRICS: &str = "/metrics";
/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest value of a --jwks-* duration flag (365 days): bounded so that no setting can
/// overflow a deadline computed from it.
const MAX_SECS: u64 = 365 * 24 * 3600;

/// A reverse proxy that only lets through requests carrying a valid bearer JWT.
///
/// Tokens are verified against the JSON Web Key Set at --jwks-url (signature, exp, nbf,
/// iat, and iss/aud when --issuer/--audience are given). Verified requests are forwarded
/// to --upstream with the claims as base64url-encoded JSON in `x-jwt-claims` (a client's
/// own `x-jwt-claims` is always removed) and without `Authorization` unless
/// --forward-token. Rejected requests get 401/400/403/503 with a `WWW-Authenticate`
/// challenge (RFC 6750); an unreachable or failing upstream gives 502.
///
/// At startup the gateway fetches the key set once. If that fails it prints the URL and
/// the cause and exits with status 1: it refuses to start without keys. Afterwards the
/// key set is refreshed in the background (--jwks-* flags, whole seconds from 1 to
/// 31536000); while the provider is down the last good keys are used for up to
/// --jwks-max-stale seconds.
///
/// GET /healthz is answered by the gateway itself, before authentication, and never
/// proxied (the path is reserved): 200 when keys are loaded, 503 when not, with a JSON
/// body (ready, keys, age in seconds or null, last_error, fetch and token counters).
/// --metrics-listen serves Prometheus metrics at /metrics on a second address.
///
/// One log line per request goes to stderr (method, path, status, latency, kid, sub;
/// never the token, Authorization or Cookie, nor the query string). RUST_LOG sets the
/// level (default info).
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version)]
pub(crate) struct Args {
    /// Address to listen on. With --demo, a taken port falls back to a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Base URL of the service behind the gateway (plain http), e.g. http://127.0.0.1:3000.
    /// A path in it is prefixed to every forwarded path.
    #[arg(long, value_name = "URL", value_parser = parse_upstream, required_unless_present = "demo")]
    pub(crate) upstream: Option<Upstream>,

    /// URL of the JSON Web Key Set to verify tokens with (https; plain http only to a
    /// loopback address).
    #[arg(long, value_name = "URL", value_parser = parse_jwks_url, required_unless_present = "demo")]
    pub(crate) jwks_url: Option<String>,

    /// Accepted token issuer (`iss`); repeat for several. When given, `iss` is required.
    #[arg(long = "issuer", value_name = "ISS")]
    pub(crate) issuers: Vec<String>,

    /// Accepted audience (`aud`); repeat for several. When given, `aud` is required.
    #[arg(long = "audience", value_name = "AUD")]
    pub(crate) audiences: Vec<String>,

    /// Accepted signature algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, EdDSA); repeat for several. Default: all of them.
    #[arg(long = "algorithm", value_name = "ALG", value_parser = parse_algorithm)]
    pub(crate) algorithms: Vec<Algorithm>,

    /// Clock skew tolerated on exp, nbf and iat, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) leeway: u64,

    /// Forward the client's Authorization header to the upstream (dropped by default).
    #[arg(long)]
    pub(crate) forward_token: bool,

    /// Seconds between key set refreshes when the provider sends no Cache-Control
    /// max-age; also the longest retry backoff while the provider is down.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_REFRESH_INTERVAL.as_secs())]
    pub(crate) jwks_refresh: u64,

    /// Shortest refresh interval in seconds: the lower bound on the provider's max-age,
    /// and the interval when it says no-cache.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_MIN_REFRESH.as_secs())]
    pub(crate) jwks_min_refresh: u64,

    /// Longest refresh interval in seconds: the upper bound on the provider's max-age.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_MAX_REFRESH.as_secs())]
    pub(crate) jwks_max_refresh: u64,

    /// Seconds between two key set fetches caused by tokens with an unknown kid; unknown
    /// kids seen in between are rejected at once.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_COOLDOWN.as_secs())]
    pub(crate) jwks_cooldown: u64,

    /// Seconds the last good key set is still used while the provider cannot be reached;
    /// after that requests get 503 and /healthz reports not ready.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_MAX_STALE.as_secs())]
    pub(crate) jwks_max_stale: u64,

    /// Time limit in seconds for one key set fetch, from connecting to the last byte.
    #[arg(long, value_name = "SECS", value_parser = secs(), default_value_t = DEFAULT_FETCH_TIMEOUT.as_secs())]
    pub(crate) jwks_timeout: u64,

    /// Also serve Prometheus metrics at http://ADDR/metrics, on this second address
    /// (token and fetch counters, key set readiness, age and size). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,

    /// Run a self-contained demo: an embedded issuer, an echo upstream, and a token with
    /// curl lines to try. Needs no other flag.
    #[arg(long, conflicts_with_all = ["upstream", "jwks_url", "issuers", "audiences", "algorithms"])]
    pub(crate) demo: bool,
}

/// Where verified requests go: `http://authority` plus an optional path prefix.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    authority: Authority,
    prefix: String,
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("must be a plain http URL, e.g. http://127.0.0.1:3000".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    let authority = uri.authority().ok_or("has no host")?.clone();
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Upstream { authority, prefix })
}

fn parse_jwks_url(s: &str) -> Result<String, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(_)) => Ok(s.to_owned()),
        _ => Err("must be an https URL (or http to a loopback address)".into()),
    }
}

/// A --jwks-* duration in whole seconds, from 1 to [`MAX_SECS`].
fn secs() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=MAX_SECS)
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match s.parse::<Algorithm>() {
        Ok(alg) if alg.is_symmetric() => {
            Err(format!("{alg} needs a shared secret, which a JWKS never holds"))
        }
        Ok(alg) => Ok(alg),
        Err(e) => Err(e.to_string()),
    }
}

impl Upstream {
    /// The upstream URI for a request to `original` (its path and query are kept).
    fn target(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path = original.path_and_query().map_or("/", |pq| pq.as_str());
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// Why the gateway did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// A required flag is missing.
    Missing(&'static str),
    /// The verifier refuses the flags (an empty issuer, ...).
    Config(ConfigError),
    /// The key set builder refuses --jwks-url or the --jwks-* flags (min above max, ...).
    JwksConfig(ConfigError),
    /// The key set could not be loaded: the gateway never runs without keys.
    Jwks { url: String, source: BuildError },
    /// The Prometheus recorder could not be installed.
    Metrics(String),
    /// A socket could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// The server stopped with an error.
    Serve(io::Error),
    /// The demo could not set itself up.
    Demo(String),
}

impl StartError {
    fn demo(error: impl fmt::Display) -> Self {
        Self::Demo(error.to_string())
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(flag) => write!(f, "{flag} is required (or try --demo)"),
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::JwksConfig(e @ ConfigError::Url(_)) => write!(f, "invalid --jwks-url: {e}"),
            Self::JwksConfig(e) => write!(f, "invalid --jwks-* settings: {e}"),
            Self::Jwks { url, source } => {
                write!(
                    f,
                    "cannot load the signing keys from {url}: {source}; refusing to start"
                )
            }
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Serve(e) => write!(f, "server error: {e}"),
            Self::Metrics(why) => write!(f, "cannot set up metrics: {why}"),
            Self::Demo(why) => write!(f, "demo setup failed: {why}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) | Self::JwksConfig(e) => Some(e),
            Self::Jwks { source, .. } => Some(source),
            Self::Bind { source, .. } | Self::Serve(source) => Some(source),
            Self::Missing(_) | Self::Metrics(_) | Self::Demo(_) => None,
        }
    }
}

/// The gateway's router and the key set behind it (which /metrics reports on).
#[derive(Debug)]
pub(crate) struct Gateway {
    /// /healthz, and everything else through authentication to the upstream.
    pub(crate) app: Router,
    /// The key set, refreshed in the background.
    pub(crate) jwks: RemoteJwks,
}

/// Builds the gateway: fetches the key set first and fails when it cannot.
pub(crate) async fn gateway(args: &Args) -> Result<Gateway, StartError> {
    let upstream = args.upstream.clone().ok_or(StartError::Missing("--upstream"))?;
    let url = args
        .jwks_url
        .as_deref()
        .ok_or(StartError::Missing("--jwks-url"))?;
    let verifier = verifier(args).map_err(StartError::Config)?;
    let jwks = jwks_builder(url, args)
        .build()
        .await
        .map_err(|source| match source {
            BuildError::Config(e) => StartError::JwksConfig(e),
            source => StartError::Jwks {
                url: url.to_owned(),
                source,
            },
        })?;
    let app = router(verifier, jwks.clone(), Proxy::new(upstream, args.forward_token));
    Ok(Gateway { app, jwks })
}

/// The key set at `url` with the --jwks-* flags; the builder checks how they combine.
pub(crate) fn jwks_builder(url: &str, args: &Args) -> RemoteJwksBuilder {
    RemoteJwks::builder(url)
        .refresh_interval(Duration::from_secs(args.jwks_refresh))
        .min_refresh(Duration::from_secs(args.jwks_min_refresh))
        .max_refresh(Duration::from_secs(args.jwks_max_refresh))
        .cooldown(Duration::from_secs(args.jwks_cooldown))
        .max_stale(Duration::from_secs(args.jwks_max_stale))
        .timeout(Duration::from_secs(args.jwks_timeout))
}

fn verifier(args: &Args) -> Result<Verifier, ConfigError> {
    let mut builder = Verifier::builder().leeway(Duration::from_secs(args.leeway));
    for issuer in &args.issuers {
        builder = builder.issuer(issuer);
    }
    for audience in &args.audiences {
        builder = builder.audience(audience);
    }
    if !args.algorithms.is_empty() {
        builder = builder.algorithms(args.algorithms.iter().copied());
    }
    builder.build()
}

/// Every request gets a log line. `GET /healthz` is answered here, outside the
/// authentication layer, so probes need no token; every other path and method goes
/// through authentication to the proxy.
pub(crate) fn router(verifier: Verifier, jwks: RemoteJwks, proxy: Proxy) -> Router {
    let guarded = Router::new()
        .fallback(forward)
        .with_state(proxy)
        .layer(JwtAuthLayer::new(verifier, jwks.clone()));
    Router::new()
        .route(HEALTHZ, get(healthz))
        .with_state(jwks)
        .fallback_service(guarded)
        .layer(middleware::from_fn(log_request))
}

/// `GET /healthz`: 200 when keys are loaded, else 503; the key set's health as JSON.
async fn healthz(State(jwks): State<RemoteJwks>) -> Response {
    let health = jwks.health();
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = (status, Json(health_json(&health))).into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The health fields as JSON; `age` in seconds (a number) or null before the first load.
fn health_json(health: &JwksHealth) -> Value {
    json!({
        "ready": health.ready,
        "keys": health.keys,
        "age": health.age.map(|age| age.as_secs_f64()),
        "last_error": health.last_error,
        "fetches": health.fetches,
        "not_modified": health.not_modified,
        "failures": health.failures,
        "unknown_kid_refetches": health.unknown_kid_refetches,
        "rejected_kids": health.rejected_kids,
        "tokens_accepted": health.tokens_accepted,
        "tokens_rejected": health.tokens_rejected,
    })
}

/// With --metrics-listen: installs the process-wide Prometheus recorder. Call once,
/// before the key set is built, so that its first fetch is counted too.
fn install_metrics(args: &Args) -> Result<Option<PrometheusHandle>, StartError> {
    if args.metrics_listen.is_none() {
        return Ok(None);
    }
    PrometheusBuilder::new()
        .install_recorder()
        .map(Some)
        .map_err(|e| StartError::Metrics(e.to_string()))
}

/// What `GET /metrics` renders.
#[derive(Clone)]
struct MetricsState {
    handle: PrometheusHandle,
    jwks: RemoteJwks,
}

/// The --metrics-listen app: `GET /metrics` renders `handle` as Prometheus text.
pub(crate) fn metrics_router(handle: PrometheusHandle, jwks: RemoteJwks) -> Router {
    Router::new()
        .route(METRICS, get(metrics))
        .with_state(MetricsState { handle, jwks })
}

async fn metrics(State(state): State<MetricsState>) -> Response {
    set_health_gauges(&state.jwks);
    state.handle.run_upkeep();
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], state.handle.render()).into_response()
}

/// `jwks_ready`, `jwks_age_seconds` and `jwks_keys` (labelled with the URL, like the
/// crate's own `jwks_keys`), as of now.
fn set_health_gauges(jwks: &RemoteJwks) {
    let health = jwks.health();
    let url = jwks.url().to_string();
    metrics::gauge!("jwks_ready", "url" => url.clone()).set(if health.ready { 1.0 } else { 0.0 });
    metrics::gauge!("jwks_keys", "url" => url.clone()).set(health.keys as f64);
    if let Some(age) = health.age {
        metrics::gauge!("jwks_age_seconds", "url" => url).set(age.as_secs_f64());
    }
}

/// With --metrics-listen: binds it and serves `/metrics` there in the background.
async fn spawn_metrics(
    args: &Args,
    handle: Option<PrometheusHandle>,
    jwks: &RemoteJwks,
) -> Result<Option<SocketAddr>, StartError> {
    let (Some(addr), Some(handle)) = (args.metrics_listen, handle) else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    let bound = local_addr(&listener)?;
    spawn_server(listener, metrics_router(handle, jwks.clone()));
    Ok(Some(bound))
}

/// The upstream and the HTTP client that reaches it.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, Body>,
    upstream: Upstream,
    forward_token: bool,
}

/// Why the upstream did not answer; travels to the log line in the response extensions.
#[derive(Debug, Clone)]
struct UpstreamError(String);

impl Proxy {
    pub(crate) fn new(upstream: Upstream, forward_token: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            upstream,
            forward_token,
        }
    }

    async fn send(&self, req: Request) -> Result<Response, UpstreamError> {
        let req = self
            .outgoing(req)
            .map_err(|e| UpstreamError(format!("upstream URI: {e}")))?;
        let res = tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| UpstreamError("upstream timed out".into()))?
            .map_err(|e| UpstreamError(error_chain(&e)))?;
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// The request as the upstream gets it: new URI, cleaned headers, claims attached.
    fn outgoing(&self, req: Request) -> Result<Request, http::Error> {
        let (mut parts, body) = req.into_parts();
        let claims = parts.extensions.remove::<Claims<JsonClaims>>();
        parts.extensions = http::Extensions::new();
        parts.uri = self.upstream.target(&parts.uri)?;
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        headers.remove(HOST); // the client sets the upstream's
        if !self.forward_token {
            headers.remove(AUTHORIZATION);
        }
        headers.remove(X_JWT_CLAIMS); // whatever the client sent; only ours goes on
        if let Some(value) = claims.and_then(|Claims(claims)| claims_header(&claims)) {
            headers.insert(X_JWT_CLAIMS, value);
        }
        Ok(Request::from_parts(parts, body))
    }
}

/// Proxies a request that passed authentication.
async fn forward(State(proxy): State<Proxy>, req: Request) -> Response {
    let token = req.extensions().get::<VerifiedToken>().cloned();
    let mut res = proxy.send(req).await.unwrap_or_else(bad_gateway);
    if let Some(token) = token {
        // For the log line, which runs outside the layer and sees only the response.
        res.extensions_mut().insert(token);
    }
    res
}

fn bad_gateway(error: UpstreamError) -> Response {
    let body = json!({"error": "bad_gateway", "error_description": "upstream unavailable"});
    let mut res = (StatusCode::BAD_GATEWAY, Json(body)).into_response();
    res.extensions_mut().insert(error);
    res
}

/// The claims as base64url (no padding) JSON.
fn claims_header(claims: &JsonClaims) -> Option<HeaderValue> {
    let json = serde_json::to_vec(claims).ok()?;
    HeaderValue::try_from(URL_SAFE_NO_PAD.encode(json)).ok()
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.map(HeaderName::from_static).into_iter().chain(named) {
        headers.remove(name);
    }
}

/// A hyper error with its causes ("client error (Connect): tcp connect error: ...").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One line per request. Only the path is logged: a query string may carry a token.
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    log_line(&method, &path, &res, started.elapsed());
    res
}

fn log_line(method: &Method, path: &str, res: &Response, latency: Duration) {
    let token = res.extensions().get::<VerifiedToken>();
    tracing::info!(
        %method,
        path,
        status = res.status().as_u16(),
        latency_ms = %format_args!("{:.1}", latency.as_secs_f64() * 1000.0),
        kid = token.and_then(|t| t.kid.as_deref()),
        sub = token.and_then(|t| t.sub.as_deref()),
        rejected = res.extensions().get::<AuthError>().map(AuthError::reason),
        upstream_error = res.extensions().get::<UpstreamError>().map(|e| e.0.as_str()),
        "request"
    );
}

/// Binds `addr`, naming it in the error.
async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(StartError::Serve)
}

/// Serves `app` on `listener` on a background task.
fn spawn_server(listener: TcpListener, app: Router) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
}

/// Resolves on Ctrl-C (never, if the signal cannot be watched).
async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The gateway proper: the recorder, the keys, then the sockets; serves until Ctrl-C.
async fn run(args: &Args) -> Result<(), StartError> {
    let handle = install_metrics(args)?;
    let Gateway { app, jwks } = gateway(args).await?;
    let listener = bind(args.listen).await?;
    let listen = local_addr(&listener)?;
    let metrics = spawn_metrics(args, handle, &jwks).await?;
    let upstream = args.upstream.as_ref().map(tracing::field::display);
    let metrics = metrics.map(tracing::field::display);
    tracing::info!(%listen, upstream, metrics, "gateway ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(StartError::Serve)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let result = if args.demo {
        demo::run(&args).await
    } else {
        run(&args).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--demo`: an embedded issuer, an echo upstream and the gateway between them.
pub(crate) mod demo {
    use std::time::{SystemTime, UNIX_EPOCH};

    use tower_jwt_auth::SigningKey;

    use super::*;

    /// The audience of demo tokens.
    pub(crate) const AUDIENCE: &str = "demo";
    /// The subject of the demo token.
    pub(crate) const SUBJECT: &str = "demo-user";
    const JWKS_PATH: &str = "/.well-known/jwks.json";

    /// A running demo: where everything listens and the tokens to try.
    #[derive(Debug)]
    pub(crate) struct Demo {
        /// Where the gateway listens.
        pub(crate) gateway: SocketAddr,
        /// `--listen`, when it was taken and the gateway fell back to a free port.
        pub(crate) taken: Option<SocketAddr>,
        /// The embedded issuer's URL (the tokens' `iss`).
        pub(crate) issuer: String,
        /// The echo upstream.
        pub(crate) upstream: SocketAddr,
        /// Where `/metrics` is served, with --metrics-listen.
        pub(crate) metrics: Option<SocketAddr>,
        /// A valid token (ES256, one hour).
        pub(crate) token: String,
        /// The valid token with `sub` changed and the signature kept.
        pub(crate) tampered: String,
    }

    /// Starts the issuer, the echo upstream and the gateway on background tasks; and
    /// `/metrics` on --metrics-listen when `handle` is given.
    pub(crate) async fn start(args: &Args, handle: Option<PrometheusHandle>) -> Result<Demo, StartError> {
        let key = SigningKey::generate(Algorithm::ES256, "demo-key").map_err(StartError::demo)?;
        let issuer = format!("http://{}", serve_loopback(issuer_app(&key)).await?);
        let upstream = serve_loopback(echo_app()).await?;
        let gateway_args = Args {
            upstream: Some(parse_upstream(&format!("http://{upstream}")).map_err(StartError::Demo)?),
            jwks_url: Some(format!("{issuer}{JWKS_PATH}")),
            issuers: vec![issuer.clone()],
            audiences: vec![AUDIENCE.into()],
            algorithms: vec![key.algorithm()],
            ..args.clone()
        };
        let Gateway { app, jwks } = gateway(&gateway_args).await?;
        let (listener, taken) = bind_or_any(args.listen).await?;
        let gateway = local_addr(&listener)?;
        spawn_server(listener, app);
        let metrics = spawn_metrics(args, handle, &jwks).await?;
        let token = mint(&key, &issuer)?;
        let tampered = tamper(&token).ok_or(StartError::Demo("cannot tamper with the token".into()))?;
        Ok(Demo {
            gateway,
            taken,
            issuer,
            upstream,
            metrics,
            token,
            tampered,
        })
    }

    /// Starts the demo, prints how to use it and serves until Ctrl-C.
    pub(crate) async fn run(args: &Args) -> Result<(), StartError> {
        let handle = install_metrics(args)?;
        let demo = start(args, handle).await?;
        println!("{}", demo.instructions());
        shutdown_signal().await;
        Ok(())
    }

    impl Demo {
        /// What the demo prints: the addresses, the token and the curl lines to try.
        pub(crate) fn instructions(&self) -> String {
            let url = format!("http://{}/hello", self.gateway);
            let taken = match self.taken {
                Some(addr) => format!("({addr} is taken; listening on {} instead)\n", self.gateway),
                None => String::new(),
            };
            let metrics = match self.metrics {
                Some(addr) => format!("# Prometheus metrics\ncurl -s http://{addr}{METRICS}\n"),
                None => String::new(),
            };
            format!(
                "{taken}Gateway:  http://{gateway}\n\
                 Issuer:   {issuer} (JWKS at {issuer}{JWKS_PATH})\n\
                 Upstream: http://{upstream} (echoes what it receives)\n\n\
                 Token (ES256, kid demo-key, sub {SUBJECT}, aud {AUDIENCE}, valid 1 h):\n{token}\n\n\
                 # Valid token: 200, the upstream shows the claims it got in x-jwt-claims\n\
                 curl -i -H 'Authorization: Bearer {token}' {url}\n\
                 # No token: 401\n\
                 curl -i {url}\n\
                 # Tampered token (sub changed to admin, signature kept): 401 invalid_token\n\
                 curl -i -H 'Authorization: Bearer {tampered}' {url}\n\
                 # Key set health, answered by the gateway itself (no token needed): 200\n\
                 curl -i http://{gateway}{HEALTHZ}\n\
                 {metrics}\n\
                 Serving until Ctrl-C.",
                gateway = self.gateway,
                issuer = self.issuer,
                upstream = self.upstream,
                token = self.token,
                tampered = self.tampered,
            )
        }
    }

    /// Binds `addr`, or a free loopback port when `addr` is taken (then returns `addr`).
    async fn bind_or_any(addr: SocketAddr) -> Result<(TcpListener, Option<SocketAddr>), StartError> {
        match TcpListener::bind(addr).await {
            Ok(listener) => Ok((listener, None)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                Ok((bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?, Some(addr)))
            }
            Err(source) => Err(StartError::Bind { addr, source }),
        }
    }

    async fn serve_loopback(app: Router) -> Result<SocketAddr, StartError> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = local_addr(&listener)?;
        spawn_server(listener, app);
        Ok(addr)
    }

    /// The embedded issuer: serves the public JWKS of `key`.
    fn issuer_app(key: &SigningKey) -> Router {
        let jwks = SigningKey::jwks(&[key]);
        Router::new().route(JWKS_PATH, get(move || async move { Json(jwks) }))
    }

    /// The echo upstream: answers with the method, path, headers and decoded claims.
    fn echo_app() -> Router {
        Router::new().fallback(echo)
    }

    async fn echo(req: Request) -> Json<Value> {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into()))
            .collect();
        let claims = req.headers().get(X_JWT_CLAIMS).and_then(decode_claims);
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Json(json!({"method": req.method().as_str(), "path": path, "headers": headers, "claims": claims}))
    }

    fn decode_claims(value: &HeaderValue) -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value.as_bytes()).ok()?).ok()
    }

    fn mint(key: &SigningKey, issuer: &str) -> Result<String, StartError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(StartError::demo)?
            .as_secs();
        let claims = json!({"iss": issuer, "aud": AUDIENCE, "sub": SUBJECT, "iat": now, "exp": now + 3600});
        key.sign(&claims).map_err(StartError::demo)
    }

    /// The token with `sub` changed to "admin" and the signature kept: it must fail.
    fn tamper(token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        claims.as_object_mut()?.insert("sub".into(), "admin".into());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        Some(format!("{header}.{payload}.{signature}"))
    }
}
