//! Run with: cargo run --release --features axum --example gateway -- --demo
//!
//! A reverse proxy that lets through only requests carrying a valid bearer JWT.
//!
//! Verified requests go to `--upstream` with the token's claims as base64url JSON in
//! `x-jwt-claims`, and without the token (the `Authorization` header, or the `--cookie`)
//! unless `--forward-token`. Rejections are the RFC 6750 answers of [`JwtAuthLayer`]; an
//! upstream that cannot be reached gets a 502. `GET /healthz` is answered by the gateway
//! itself, without a token; `--metrics-listen` adds a second listener with Prometheus
//! metrics at `/metrics`. `--config FILE` (TOML, see `examples/gateway.toml`) describes
//! several issuers and per-path-prefix requirements. `--demo` starts an embedded issuer
//! and an echo upstream, and prints a token with curl lines to try.

use std::fmt;
use std::io::{self, IsTerminal};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
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
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, COOKIE, HOST};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_jwt_auth::{
    Algorithm, AuthError, BuildError, Claims, ConfigError, DEFAULT_COOLDOWN, DEFAULT_FETCH_TIMEOUT,
    DEFAULT_LEEWAY, DEFAULT_MAX_REFRESH, DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH, DEFAULT_REFRESH_INTERVAL,
    Issuer, JsonClaims, JwksHealth, JwtAuthLayer, RemoteJwks, RemoteJwksBuilder, TokenSource, VerifiedToken,
    Verifier, VerifierBuilder,
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
/// Largest value of a duration flag in seconds (365 days): bounded so that no setting can
/// overflow a deadline computed from it.
const MAX_SECS: u64 = 365 * 24 * 3600;
/// Where the gateway listens unless --listen or the config file says otherwise.
pub(crate) const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// A reverse proxy that only lets through requests carrying a valid bearer JWT.
///
/// Tokens are verified against the JSON Web Key Set at --jwks-url, or of the OpenID
/// Provider --oidc-issuer (found by discovery; `iss` must then equal that URL): signature,
/// exp, nbf, iat, and iss/aud when --issuer/--audience are given. --required-scope,
/// --require-typ and --max-lifetime add access-token checks. The token is read from
/// `Authorization: Bearer`, or from the cookie --cookie names. Verified requests are
/// forwarded to --upstream with the claims as base64url-encoded JSON in `x-jwt-claims` (a
/// client's own `x-jwt-claims` is always removed) and without the token unless
/// --forward-token. With --optional-auth, requests without a token are forwarded too,
/// without `x-jwt-claims`; a bad token is still refused. Rejected requests get
/// 401/400/403/503 with a `WWW-Authenticate` challenge (RFC 6750); an unreachable or
/// failing upstream gives 502.
///
/// --config FILE reads the upstream, the issuers (each with its own key set, audiences
/// and algorithms), the token policy and per-path-prefix routes from a TOML file (see
/// examples/gateway.toml). It excludes the flags that the file sets (--upstream,
/// --jwks-url, --oidc-issuer, --issuer, --audience, --algorithm, --leeway,
/// --forward-token, --required-scope, --require-typ, --max-lifetime, --cookie,
/// --optional-auth); --listen overrides the file's `listen`; --metrics-listen and the
/// --jwks-* flags apply to every issuer's key set. A request takes the route with the
/// longest prefix matching whole path segments (/admin matches /admin and /admin/x, not
/// /administrator); a path that no route matches gets 404 and never reaches the upstream.
/// Paths are matched after percent-decoding, ignoring empty segments and `;` parameters;
/// a path with a `.` or `..` segment gets 400, so the upstream cannot resolve it to
/// another route than the one checked.
///
/// At startup the gateway fetches every key set once. If that fails it prints the URL and
/// the cause and exits with status 1: it refuses to start without keys. Afterwards the
/// key sets are refreshed in the background (--jwks-* flags, whole seconds from 1 to
/// 31536000); while a provider is down its last good keys are used for up to
/// --jwks-max-stale seconds.
///
/// GET /healthz is answered by the gateway itself, before authentication, and never
/// proxied (the path is reserved): 200 when every key set is loaded, 503 when not, with a
/// JSON body (ready, url, keys, age in seconds or null, last_error, fetch and token
/// counters; with --config, `ready` and these fields under `issuers`, by issuer).
/// --metrics-listen serves Prometheus metrics at /metrics on a second address.
///
/// One log line per request goes to stderr (method, path, status, latency, kid, sub;
/// never the token, Authorization or Cookie, nor the query string). RUST_LOG sets the
/// level (default info).
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version)]
pub(crate) struct Args {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's `listen`].
    /// With --demo, a taken port falls back to a free one.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,

    /// Base URL of the service behind the gateway (plain http), e.g. http://127.0.0.1:3000.
    /// A path in it is prefixed to every forwarded path.
    #[arg(long, value_name = "URL", value_parser = parse_upstream,
          required_unless_present_any = ["demo", "config"])]
    pub(crate) upstream: Option<Upstream>,

    /// URL of the JSON Web Key Set to verify tokens with (https; plain http only to a
    /// loopback address).
    #[arg(long, value_name = "URL", value_parser = parse_jwks_url,
          required_unless_present_any = ["demo", "config", "oidc_issuer"])]
    pub(crate) jwks_url: Option<String>,

    /// OpenID Provider to discover the key set from ({URL}/.well-known/openid-configuration,
    /// then RFC 8414); tokens must carry `iss` equal to URL exactly. Instead of --jwks-url
    /// and --issuer.
    #[arg(long, value_name = "URL", value_parser = parse_jwks_url, conflicts_with_all = ["jwks_url", "issuers"])]
    pub(crate) oidc_issuer: Option<String>,

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

    /// Clock skew tolerated on exp, nbf and iat, in seconds (at most 3600).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LEEWAY.as_secs())]
    pub(crate) leeway: u64,

    /// A scope the token must have (in `scope` or `scp`); repeat for several, all are
    /// required. A token without them gets 403 insufficient_scope.
    #[arg(long = "required-scope", value_name = "SCOPE", value_parser = parse_scope)]
    pub(crate) required_scopes: Vec<String>,

    /// Accept only tokens whose header `typ` is TYP, e.g. at+jwt for RFC 9068 access
    /// tokens; repeat to accept several.
    #[arg(long = "require-typ", value_name = "TYP", value_parser = parse_word)]
    pub(crate) require_typs: Vec<String>,

    /// Refuse tokens valid for longer than SECS (exp - iat, or exp - now without iat).
    #[arg(long, value_name = "SECS", value_parser = secs())]
    pub(crate) max_lifetime: Option<u64>,

    /// Read the token from the cookie NAME instead of the Authorization header (the
    /// browser flow). The cookie is not forwarded unless --forward-token.
    #[arg(long, value_name = "NAME", value_parser = parse_cookie_name)]
    pub(crate) cookie: Option<String>,

    /// Forward requests without a token too, without `x-jwt-claims` (a client's own is
    /// still removed); a token that is present but bad is still refused.
    #[arg(long, conflicts_with = "required_scopes")]
    pub(crate) optional_auth: bool,

    /// Forward the token (Authorization header, or the --cookie) to the upstream
    /// (dropped by default).
    #[arg(long)]
    pub(crate) forward_token: bool,

    /// Read the upstream, issuers, token policy and routes from this TOML file (see
    /// examples/gateway.toml) instead of the flags that set them.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "upstream", "jwks_url", "oidc_issuer", "issuers", "audiences", "algorithms", "leeway",
        "required_scopes", "require_typs", "max_lifetime", "cookie", "optional_auth", "forward_token",
    ])]
    pub(crate) config: Option<PathBuf>,

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

    /// Start even when the keys cannot be fetched yet (e.g. a restart during an identity
    /// provider outage): requests get 503 and /healthz reports not ready until they
    /// arrive. Without it the gateway refuses to start without keys.
    #[arg(long)]
    pub(crate) jwks_lazy: bool,

    /// Also serve Prometheus metrics at http://ADDR/metrics, on this second address
    /// (token and fetch counters, key set readiness, age and size). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,

    /// Run a self-contained demo: an embedded issuer, an echo upstream, and a token with
    /// curl lines to try. Needs no other flag.
    #[arg(long, conflicts_with_all = [
        "upstream", "jwks_url", "oidc_issuer", "issuers", "audiences", "algorithms", "config",
        "required_scopes", "require_typs", "max_lifetime", "cookie", "optional_auth",
    ])]
    pub(crate) demo: bool,
}

/// Where verified requests go: `http://authority` plus an optional path prefix.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    authority: Authority,
    prefix: String,
}

/// `--upstream` / `upstream`: a plain http URL without a query.
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

/// A key set or issuer URL: http(s) with a host (the key set builder checks the rest).
fn parse_jwks_url(s: &str) -> Result<String, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(_)) => Ok(s.to_owned()),
        _ => Err("must be an https URL (or http to a loopback address)".into()),
    }
}

/// A duration flag in whole seconds, from 1 to [`MAX_SECS`].
fn secs() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=MAX_SECS)
}

/// An algorithm a JWKS can hold: asymmetric only.
fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match s.parse::<Algorithm>() {
        Ok(alg) if alg.is_symmetric() => {
            Err(format!("{alg} needs a shared secret, which a JWKS never holds"))
        }
        Ok(alg) => Ok(alg),
        Err(e) => Err(e.to_string()),
    }
}

/// One non-empty word without spaces (a `typ`, an audience).
fn parse_word(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err("must be one non-empty word".into());
    }
    Ok(s.to_owned())
}

/// A scope: one non-empty word (`scope` is a space-separated list of them).
fn parse_scope(s: &str) -> Result<String, String> {
    parse_word(s).map_err(|_| "a scope is one non-empty word without spaces".into())
}

/// A cookie name: an RFC 6265 token (visible ASCII, no separators).
fn parse_cookie_name(s: &str) -> Result<String, String> {
    let separator = |c: char| "()<>@,;:\\\"/[]?={}".contains(c);
    let valid = !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && !separator(c));
    if valid {
        Ok(s.to_owned())
    } else {
        Err("a cookie name is visible ASCII without spaces or ()<>@,;:\\\"/[]?={}".into())
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
    /// The --config file cannot be read or is wrong; `why` says where and what.
    ConfigFile { path: PathBuf, why: String },
    /// The key set builder refuses the --jwks-* flags (min above max, ...).
    JwksConfig(ConfigError),
    /// The key set builder refuses the URL of --jwks-url or --oidc-issuer (`flag`).
    KeyUrl { flag: &'static str, source: ConfigError },
    /// A key set could not be loaded: the gateway never runs without keys. `from` is the
    /// URL, or the issuer for discovery.
    Jwks { from: String, source: BuildError },
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
            Self::ConfigFile { path, why } => write!(f, "config file {}: {why}", path.display()),
            Self::JwksConfig(e) => write!(f, "invalid --jwks-* settings: {e}"),
            Self::KeyUrl { flag, source } => write!(f, "invalid {flag}: {source}"),
            Self::Jwks { from, source } => {
                write!(
                    f,
                    "cannot load the verification keys {from}: {source}; refusing to start"
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
            Self::Config(e) | Self::JwksConfig(e) | Self::KeyUrl { source: e, .. } => Some(e),
            Self::Jwks { source, .. } => Some(source),
            Self::Bind { source, .. } | Self::Serve(source) => Some(source),
            Self::Missing(_) | Self::ConfigFile { .. } | Self::Metrics(_) | Self::Demo(_) => None,
        }
    }
}

/// What the gateway enforces, from the flags or from a --config file.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Where verified requests go.
    pub(crate) upstream: Upstream,
    /// Where the gateway listens: --listen, else the file's `listen`, else the default.
    pub(crate) listen: SocketAddr,
    /// Forward the token to the upstream.
    pub(crate) forward_token: bool,
    /// Where the keys come from and which issuers, audiences and algorithms are accepted.
    pub(crate) keys: KeyPlan,
    /// Checks that apply to every route.
    pub(crate) policy: TokenPolicy,
    /// The path prefixes and what each requires; the flags give one route, "/".
    pub(crate) routes: Vec<RoutePlan>,
    /// The --config file this came from, for error messages.
    pub(crate) file: Option<PathBuf>,
}

/// The key sources of a [`Plan`].
#[derive(Debug, Clone)]
pub(crate) enum KeyPlan {
    /// The flags: one key set, and the accepted `iss` values (none: `iss` not checked).
    One {
        target: Target,
        issuers: Vec<String>,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
    },
    /// A --config file: one key set per issuer; `audiences` apply to issuers without
    /// their own.
    ByIssuer {
        audiences: Vec<String>,
        issuers: Vec<IssuerPlan>,
    },
}

/// Where a key set is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The JWKS URL itself.
    Jwks(String),
    /// The issuer whose metadata names the JWKS URL (OpenID Connect discovery).
    Discover(String),
}

/// One `[[issuer]]` of a config file.
#[derive(Debug, Clone)]
pub(crate) struct IssuerPlan {
    /// The `iss` its tokens carry.
    pub(crate) name: String,
    /// Its key set.
    pub(crate) target: Target,
    /// Its audiences, replacing the file's top-level ones when not empty.
    pub(crate) audiences: Vec<String>,
    /// Its algorithms (empty: all asymmetric ones).
    pub(crate) algorithms: Vec<Algorithm>,
}

/// Token checks shared by every route.
#[derive(Debug, Clone)]
pub(crate) struct TokenPolicy {
    /// Clock skew tolerated, in seconds.
    pub(crate) leeway: u64,
    /// Accepted `typ` values (empty: any).
    pub(crate) require_typs: Vec<String>,
    /// Longest accepted lifetime, in seconds.
    pub(crate) max_lifetime: Option<u64>,
    /// The cookie the token is read from, instead of the Authorization header.
    pub(crate) cookie: Option<String>,
}

/// One path prefix and what a request under it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    /// "/" or "/a/b": whole path segments.
    pub(crate) prefix: String,
    /// Scopes all required.
    pub(crate) scopes: Vec<String>,
    /// Scopes of which one is required.
    pub(crate) any_scopes: Vec<String>,
    /// Requests without a token pass (without claims).
    pub(crate) anonymous: bool,
}

impl Target {
    /// The key set builder for this target with the --jwks-* flags.
    fn builder(&self, args: &Args) -> RemoteJwksBuilder {
        match self {
            Self::Jwks(url) => jwks_builder(url, args),
            Self::Discover(issuer) => jwks_settings(RemoteJwks::discover(issuer), args),
        }
    }

    /// "from URL" or "of issuer URL (discovery)", for error messages.
    fn describe(&self) -> String {
        match self {
            Self::Jwks(url) => format!("from {url}"),
            Self::Discover(issuer) => format!("of issuer {issuer} (OIDC discovery)"),
        }
    }
}

impl Plan {
    /// The plan of the flags, or of the --config file (read here, nothing fetched).
    pub(crate) fn from_args(args: &Args) -> Result<Plan, StartError> {
        match &args.config {
            Some(path) => config::load(path, args),
            None => Self::from_flags(args),
        }
    }

    /// The flags' plan: one key set and one route, "/".
    fn from_flags(args: &Args) -> Result<Plan, StartError> {
        let upstream = args.upstream.clone().ok_or(StartError::Missing("--upstream"))?;
        let (target, issuers) = match (&args.oidc_issuer, &args.jwks_url) {
            (Some(issuer), _) => (Target::Discover(issuer.clone()), vec![issuer.clone()]),
            (None, Some(url)) => (Target::Jwks(url.clone()), args.issuers.clone()),
            (None, None) => return Err(StartError::Missing("--jwks-url or --oidc-issuer")),
        };
        let keys = KeyPlan::One {
            target,
            issuers,
            audiences: args.audiences.clone(),
            algorithms: args.algorithms.clone(),
        };
        let route = RoutePlan {
            scopes: args.required_scopes.clone(),
            anonymous: args.optional_auth,
            ..RoutePlan::root()
        };
        Ok(Plan {
            upstream,
            listen: args.listen.unwrap_or(DEFAULT_LISTEN),
            forward_token: args.forward_token,
            keys,
            policy: TokenPolicy::from_flags(args),
            routes: vec![route],
            file: None,
        })
    }

    /// A verifier refusal, naming the config file when there is one.
    fn config_error(&self, error: ConfigError) -> StartError {
        match &self.file {
            Some(path) => StartError::ConfigFile {
                path: path.clone(),
                why: error.to_string(),
            },
            None => StartError::Config(error),
        }
    }

    /// A key set URL refusal: the flag that gave it, or the file and the issuer.
    fn url_error(&self, issuer: &str, error: ConfigError) -> StartError {
        let flag = match &self.keys {
            KeyPlan::One {
                target: Target::Discover(_),
                ..
            } => "--oidc-issuer",
            _ => "--jwks-url",
        };
        match &self.file {
            Some(path) => StartError::ConfigFile {
                path: path.clone(),
                why: format!("[[issuer]] {issuer:?}: {error}"),
            },
            None => StartError::KeyUrl { flag, source: error },
        }
    }
}

impl TokenPolicy {
    /// --leeway, --require-typ, --max-lifetime and --cookie.
    fn from_flags(args: &Args) -> Self {
        Self {
            leeway: args.leeway,
            require_typs: args.require_typs.clone(),
            max_lifetime: args.max_lifetime,
            cookie: args.cookie.clone(),
        }
    }

    /// Adds these checks to `builder`.
    fn apply(&self, mut builder: VerifierBuilder) -> VerifierBuilder {
        builder = builder.leeway(Duration::from_secs(self.leeway));
        for typ in &self.require_typs {
            builder = builder.require_typ(typ);
        }
        if let Some(max) = self.max_lifetime {
            builder = builder.max_lifetime(Duration::from_secs(max));
        }
        builder
    }
}

impl RoutePlan {
    /// "/": every path, token required, no scope.
    pub(crate) fn root() -> Self {
        Self {
            prefix: "/".into(),
            scopes: Vec::new(),
            any_scopes: Vec::new(),
            anonymous: false,
        }
    }

    /// Adds this route's scope requirements to `builder`.
    fn apply(&self, mut builder: VerifierBuilder) -> VerifierBuilder {
        if !self.scopes.is_empty() {
            builder = builder.require_scopes(&self.scopes);
        }
        if !self.any_scopes.is_empty() {
            builder = builder.require_any_scope(&self.any_scopes);
        }
        builder
    }
}

impl KeyPlan {
    /// Adds the accepted issuers, audiences and algorithms to `builder`. With several
    /// issuers the layer checks `iss` and each issuer's audiences and algorithms.
    fn apply(&self, mut builder: VerifierBuilder) -> VerifierBuilder {
        let (issuers, audiences, algorithms) = match self {
            Self::One {
                issuers,
                audiences,
                algorithms,
                ..
            } => (&issuers[..], audiences, &algorithms[..]),
            Self::ByIssuer { audiences, .. } => (&[][..], audiences, &[][..]),
        };
        for issuer in issuers {
            builder = builder.issuer(issuer);
        }
        for audience in audiences {
            builder = builder.audience(audience);
        }
        if !algorithms.is_empty() {
            builder = builder.algorithms(algorithms.iter().copied());
        }
        builder
    }
}

/// `--config FILE`: the TOML file and its checks.
pub(crate) mod config {
    use serde::Deserialize;

    use super::*;

    /// The file as written. Unknown keys are errors, so a typo never goes unnoticed.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        upstream: String,
        listen: Option<SocketAddr>,
        #[serde(default)]
        forward_token: bool,
        leeway: Option<u64>,
        #[serde(default)]
        audiences: Vec<String>,
        #[serde(default)]
        require_typ: Vec<String>,
        max_lifetime: Option<u64>,
        cookie: Option<String>,
        #[serde(default)]
        issuer: Vec<FileIssuer>,
        #[serde(default)]
        route: Vec<FileRoute>,
    }

    /// One `[[issuer]]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileIssuer {
        issuer: String,
        jwks_url: Option<String>,
        #[serde(default)]
        audiences: Vec<String>,
        #[serde(default)]
        algorithms: Vec<String>,
    }

    /// One `[[route]]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileRoute {
        prefix: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        any_scopes: Vec<String>,
        #[serde(default)]
        anonymous: bool,
    }

    /// Reads and checks the file at `path`; --listen in `args` overrides its `listen`.
    pub(crate) fn load(path: &Path, args: &Args) -> Result<Plan, StartError> {
        let fail = |why: String| StartError::ConfigFile {
            path: path.to_owned(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let file: File = toml::from_str(&text).map_err(|e| fail(e.to_string().trim_end().to_owned()))?;
        let mut plan = file.into_plan(args).map_err(fail)?;
        plan.file = Some(path.to_owned());
        Ok(plan)
    }

    impl File {
        /// Checks the file and makes the plan; `args` may override `listen`.
        fn into_plan(self, args: &Args) -> Result<Plan, String> {
            let upstream = parse_upstream(&self.upstream).map_err(|why| format!("upstream: {why}"))?;
            let max_lifetime = self.max_lifetime.map(check_lifetime).transpose()?;
            let cookie = self.cookie.as_deref().map(parse_cookie_name).transpose();
            let cookie = cookie.map_err(|why| format!("cookie: {why}"))?;
            words("audiences", &self.audiences)?;
            words("require_typ", &self.require_typ)?;
            let policy = TokenPolicy {
                leeway: self.leeway.unwrap_or(DEFAULT_LEEWAY.as_secs()),
                require_typs: self.require_typ,
                max_lifetime,
                cookie,
            };
            Ok(Plan {
                upstream,
                listen: args.listen.or(self.listen).unwrap_or(DEFAULT_LISTEN),
                forward_token: self.forward_token,
                keys: KeyPlan::ByIssuer {
                    audiences: self.audiences,
                    issuers: issuers(self.issuer)?,
                },
                policy,
                routes: routes(self.route)?,
                file: None,
            })
        }
    }

    /// `max_lifetime`: 1 second to 365 days.
    fn check_lifetime(secs: u64) -> Result<u64, String> {
        if (1..=MAX_SECS).contains(&secs) {
            Ok(secs)
        } else {
            Err(format!("max_lifetime must be 1 to {MAX_SECS} seconds"))
        }
    }

    /// Each value of the list `key` is one non-empty word.
    fn words(key: &str, values: &[String]) -> Result<(), String> {
        match values.iter().find(|v| parse_word(v).is_err()) {
            Some(bad) => Err(format!("{key}: {bad:?} is not one non-empty word")),
            None => Ok(()),
        }
    }

    /// The issuers: at least one, each once.
    fn issuers(list: Vec<FileIssuer>) -> Result<Vec<IssuerPlan>, String> {
        if list.is_empty() {
            return Err("no [[issuer]]: at least one is needed".into());
        }
        let mut plans: Vec<IssuerPlan> = Vec::new();
        for issuer in list {
            let name = issuer.issuer.clone();
            let plan = issuer
                .into_plan()
                .map_err(|why| format!("[[issuer]] {name:?}: {why}"))?;
            if plans.iter().any(|p| p.name == plan.name) {
                return Err(format!("[[issuer]] {name:?} is listed twice"));
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    impl FileIssuer {
        /// Checks the issuer: a name, a usable key set URL, known algorithms.
        fn into_plan(self) -> Result<IssuerPlan, String> {
            if self.issuer.is_empty() {
                return Err("issuer must not be empty".into());
            }
            let target = match self.jwks_url {
                Some(url) => Target::Jwks(parse_jwks_url(&url).map_err(|why| format!("jwks_url: {why}"))?),
                None => Target::Discover(
                    parse_jwks_url(&self.issuer)
                        .map_err(|why| format!("discovery needs an issuer URL (or give jwks_url): {why}"))?,
                ),
            };
            words("audiences", &self.audiences)?;
            let algorithms = self
                .algorithms
                .iter()
                .map(|name| parse_algorithm(name).map_err(|why| format!("algorithm {name:?}: {why}")));
            Ok(IssuerPlan {
                name: self.issuer,
                target,
                audiences: self.audiences,
                algorithms: algorithms.collect::<Result<_, _>>()?,
            })
        }
    }

    /// The routes; none at all means one route "/" (token required, no scope).
    fn routes(list: Vec<FileRoute>) -> Result<Vec<RoutePlan>, String> {
        if list.is_empty() {
            return Ok(vec![RoutePlan::root()]);
        }
        let mut plans: Vec<RoutePlan> = Vec::new();
        for route in list {
            let prefix = route.prefix.clone();
            let plan = route
                .into_plan()
                .map_err(|why| format!("[[route]] {prefix:?}: {why}"))?;
            if plans.iter().any(|p| p.prefix == plan.prefix) {
                return Err(format!("[[route]] {prefix:?} is listed twice"));
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    impl FileRoute {
        /// Checks the route: a plain prefix, one-word scopes, no scopes when anonymous.
        fn into_plan(self) -> Result<RoutePlan, String> {
            check_prefix(&self.prefix)?;
            for scope in self.scopes.iter().chain(&self.any_scopes) {
                parse_scope(scope).map_err(|why| format!("scope {scope:?}: {why}"))?;
            }
            if self.anonymous && !(self.scopes.is_empty() && self.any_scopes.is_empty()) {
                return Err(
                    "an anonymous route cannot require scopes: a client would leave the token out".into(),
                );
            }
            Ok(RoutePlan {
                prefix: self.prefix,
                scopes: self.scopes,
                any_scopes: self.any_scopes,
                anonymous: self.anonymous,
            })
        }
    }

    /// A prefix is "/" or whole plain segments: "/admin", "/api/v1".
    fn check_prefix(prefix: &str) -> Result<(), String> {
        let plain = |c: char| !(c.is_whitespace() || c.is_control() || "%;?#\\".contains(c));
        let why = if !prefix.starts_with('/') {
            "a prefix starts with /"
        } else if prefix != "/" && prefix.ends_with('/') {
            "a prefix does not end with / (\"/admin\" covers \"/admin/...\" already)"
        } else if prefix.contains("//") || prefix.split('/').any(|s| s == "." || s == "..") {
            "a prefix has no empty, . or .. segment"
        } else if !prefix.chars().all(plain) {
            "a prefix is a plain path, without %, ;, ?, #, \\ or spaces"
        } else {
            return Ok(());
        };
        Err(why.into())
    }
}

/// The gateway's router and the key sets behind it (which /healthz and /metrics report on).
#[derive(Debug)]
pub(crate) struct Gateway {
    /// /healthz, and everything else through routing and authentication to the upstream.
    pub(crate) app: Router,
    /// The key sets, refreshed in the background.
    pub(crate) sources: KeySources,
}

/// The key sets the gateway verifies with: each built once, shared by every route.
#[derive(Debug, Clone)]
pub(crate) enum KeySources {
    /// The flags: one key set.
    One(RemoteJwks),
    /// A config file: one key set per issuer.
    ByIssuer(Vec<(Issuer, RemoteJwks)>),
}

/// Builds the gateway of the flags or the --config file: fetches every key set first and
/// fails when one cannot be loaded.
pub(crate) async fn gateway(args: &Args) -> Result<Gateway, StartError> {
    build(&Plan::from_args(args)?, args).await
}

/// Builds the gateway of `plan`; `args` gives the --jwks-* settings. The verifiers are
/// checked before any key set is fetched.
pub(crate) async fn build(plan: &Plan, args: &Args) -> Result<Gateway, StartError> {
    let verifiers = plan.routes.iter().map(|route| verifier(plan, route));
    let verifiers: Vec<Verifier> = verifiers
        .collect::<Result<_, _>>()
        .map_err(|e| plan.config_error(e))?;
    let sources = load_keys(plan, args).await?;
    let routes = plan.routes.iter().zip(verifiers);
    let routes: Vec<Route> = routes
        .map(|(route, verifier)| Route::new(route, verifier, &sources, &plan.policy))
        .collect::<Result<_, _>>()
        .map_err(|e| plan.config_error(e))?;
    let proxy =
        Proxy::new(plan.upstream.clone(), plan.forward_token).token_cookie(plan.policy.cookie.clone());
    let app = router(routes, sources.clone(), proxy);
    Ok(Gateway { app, sources })
}

/// The verifier of one route: the plan's issuers and policy, the route's scopes.
fn verifier(plan: &Plan, route: &RoutePlan) -> Result<Verifier, ConfigError> {
    let builder = plan.keys.apply(Verifier::builder());
    route.apply(plan.policy.apply(builder)).build()
}

/// Builds each key set once, in order; the first failure stops the start.
async fn load_keys(plan: &Plan, args: &Args) -> Result<KeySources, StartError> {
    match &plan.keys {
        KeyPlan::One { target, .. } => Ok(KeySources::One(load(plan, args, target, "").await?)),
        KeyPlan::ByIssuer { issuers, .. } => {
            let mut loaded = Vec::with_capacity(issuers.len());
            for issuer in issuers {
                let jwks = load(plan, args, &issuer.target, &issuer.name).await?;
                loaded.push((issuer_of(issuer, jwks.clone()), jwks));
            }
            Ok(KeySources::ByIssuer(loaded))
        }
    }
}

/// Builds one key set, fetched once; `issuer` names it in a config file's errors.
async fn load(plan: &Plan, args: &Args, target: &Target, issuer: &str) -> Result<RemoteJwks, StartError> {
    let built = if args.jwks_lazy {
        target.builder(args).lazy().map_err(BuildError::Config)
    } else {
        target.builder(args).build().await
    };
    built.map_err(|source| match source {
        BuildError::Config(e @ ConfigError::Url(_)) => plan.url_error(issuer, e),
        BuildError::Config(e) => StartError::JwksConfig(e),
        source if issuer.is_empty() => StartError::Jwks {
            from: target.describe(),
            source,
        },
        source => StartError::Jwks {
            from: format!("{} for [[issuer]] {issuer:?}", target.describe()),
            source,
        },
    })
}

/// The library's [`Issuer`] for one `[[issuer]]`, verifying with `jwks`.
fn issuer_of(plan: &IssuerPlan, jwks: RemoteJwks) -> Issuer {
    let mut issuer = Issuer::new(&plan.name, jwks);
    for audience in &plan.audiences {
        issuer = issuer.audience(audience);
    }
    if !plan.algorithms.is_empty() {
        issuer = issuer.algorithms(plan.algorithms.iter().copied());
    }
    issuer
}

/// The key set at `url` with the --jwks-* flags; the builder checks how they combine.
pub(crate) fn jwks_builder(url: &str, args: &Args) -> RemoteJwksBuilder {
    jwks_settings(RemoteJwks::builder(url), args)
}

/// Applies the --jwks-* flags to `builder`.
fn jwks_settings(builder: RemoteJwksBuilder, args: &Args) -> RemoteJwksBuilder {
    builder
        .refresh_interval(Duration::from_secs(args.jwks_refresh))
        .min_refresh(Duration::from_secs(args.jwks_min_refresh))
        .max_refresh(Duration::from_secs(args.jwks_max_refresh))
        .cooldown(Duration::from_secs(args.jwks_cooldown))
        .max_stale(Duration::from_secs(args.jwks_max_stale))
        .timeout(Duration::from_secs(args.jwks_timeout))
}

/// One path prefix and the authentication in front of the proxy for it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// "/" or whole path segments ("/admin").
    pub(crate) prefix: String,
    /// The route's own layer (its scopes, optional or not) over the shared key sets.
    pub(crate) layer: JwtAuthLayer,
}

impl Route {
    /// The route of `plan`, verifying with `verifier` against clones of `sources`.
    fn new(
        plan: &RoutePlan,
        verifier: Verifier,
        sources: &KeySources,
        policy: &TokenPolicy,
    ) -> Result<Route, ConfigError> {
        let mut layer = match sources {
            KeySources::One(jwks) => JwtAuthLayer::new(verifier, jwks.clone()),
            KeySources::ByIssuer(list) => {
                JwtAuthLayer::issuers(verifier, list.iter().map(|(issuer, _)| issuer.clone()))?
            }
        };
        if let Some(name) = &policy.cookie {
            layer = layer.token_source(TokenSource::cookie(name));
        }
        if plan.anonymous {
            layer = layer.optional();
        }
        Ok(Route {
            prefix: plan.prefix.clone(),
            layer,
        })
    }
}

/// Every request gets a log line. `GET /healthz` is answered here, outside
/// authentication, so probes need no token; every other path and method is routed by
/// prefix and goes through that route's authentication to the proxy.
pub(crate) fn router(routes: Vec<Route>, sources: KeySources, proxy: Proxy) -> Router {
    let table = Router::new()
        .fallback(dispatch)
        .with_state(Table::new(routes, &proxy));
    Router::new()
        .route(HEALTHZ, get(healthz))
        .with_state(sources)
        .fallback_service(table)
        .layer(middleware::from_fn(log_request))
}

/// The routes by prefix segments, longest first, each the proxy behind its own layer.
#[derive(Debug, Clone)]
struct Table {
    routes: Arc<[(Vec<Vec<u8>>, Router)]>,
    /// Some route is not "/": paths are compared, and ambiguous ones refused.
    by_path: bool,
}

impl Table {
    /// Puts each route's layer in front of a clone of `proxy`, longest prefix first.
    fn new(routes: Vec<Route>, proxy: &Proxy) -> Self {
        let by_path = routes.iter().any(|route| route.prefix != "/");
        let mut table: Vec<_> = routes
            .into_iter()
            .map(|route| {
                (
                    prefix_segments(&route.prefix),
                    guarded(route.layer, proxy.clone()),
                )
            })
            .collect();
        table.sort_by_key(|(segments, _)| std::cmp::Reverse(segments.len()));
        Self {
            routes: table.into(),
            by_path,
        }
    }

    /// The router of the longest prefix that `path` (as segments) starts with.
    fn find(&self, path: &[Vec<u8>]) -> Option<Router> {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, router)| router.clone())
    }
}

/// The proxy behind `layer`.
fn guarded(layer: JwtAuthLayer, proxy: Proxy) -> Router {
    Router::new().fallback(forward).with_state(proxy).layer(layer)
}

/// "/admin/x" -> ["admin", "x"]; "/" -> [].
fn prefix_segments(prefix: &str) -> Vec<Vec<u8>> {
    prefix
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| segment.as_bytes().to_vec())
        .collect()
}

/// Sends the request through its route; 404 when no route matches, 400 for a path the
/// upstream might resolve differently.
async fn dispatch(State(table): State<Table>, req: Request) -> Response {
    let path = if table.by_path {
        match path_segments(req.uri().path()) {
            Some(path) => path,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the path has a . or .. segment",
                );
            }
        }
    } else {
        Vec::new()
    };
    match table.find(&path) {
        Some(router) => router.oneshot(req).await.unwrap_or_else(|never| match never {}),
        None => refuse(StatusCode::NOT_FOUND, "not_found", "no route for this path"),
    }
}

/// The path's segments as routes compare them, read as strictly as any upstream might:
/// percent-decoded, split at `/` and `\`, `;` parameters cut off, empty segments dropped.
/// `None` for a `.` or `..` segment, which an upstream may resolve to another route.
fn path_segments(path: &str) -> Option<Vec<Vec<u8>>> {
    let decoded = percent_decode(path);
    let mut segments = Vec::new();
    for raw in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let segment = raw.split(|b| *b == b';').next().unwrap_or_default();
        match segment {
            b"" => {}
            b"." | b".." => return None,
            segment => segments.push(segment.to_vec()),
        }
    }
    Some(segments)
}

/// `path` with `%XX` escapes decoded; a `%` not followed by two hex digits stays.
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match bytes[i..] {
            [b'%', high, low, ..] => hex(high).zip(hex(low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// The value of one hex digit.
fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A JSON error answered by the gateway itself (400, 404, 502).
fn refuse(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}

/// `GET /healthz`: 200 when every key set is loaded, else 503; their health as JSON.
async fn healthz(State(sources): State<KeySources>) -> Response {
    let (ready, body) = sources.health();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl KeySources {
    /// Every key set.
    pub(crate) fn key_sets(&self) -> Vec<&RemoteJwks> {
        match self {
            Self::One(jwks) => vec![jwks],
            Self::ByIssuer(list) => list.iter().map(|(_, jwks)| jwks).collect(),
        }
    }

    /// Ready when every key set is; the JSON: one key set's fields, or `ready` and each
    /// issuer's key set under `issuers`.
    fn health(&self) -> (bool, Value) {
        match self {
            Self::One(jwks) => {
                let health = jwks.health();
                (health.ready, health_json(jwks, &health))
            }
            Self::ByIssuer(list) => {
                let mut ready = true;
                let mut issuers = serde_json::Map::new();
                for (issuer, jwks) in list {
                    let health = jwks.health();
                    ready &= health.ready;
                    issuers.insert(issuer.name().to_owned(), health_json(jwks, &health));
                }
                (ready, json!({"ready": ready, "issuers": issuers}))
            }
        }
    }
}

/// The health fields as JSON; `age` in seconds (a number) or null before the first load.
fn health_json(jwks: &RemoteJwks, health: &JwksHealth) -> Value {
    json!({
        "ready": health.ready,
        "url": jwks.url(),
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
/// before the key sets are built, so that their first fetches are counted too.
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
    sources: KeySources,
}

/// The --metrics-listen app: `GET /metrics` renders `handle` as Prometheus text.
pub(crate) fn metrics_router(handle: PrometheusHandle, sources: KeySources) -> Router {
    Router::new()
        .route(METRICS, get(metrics))
        .with_state(MetricsState { handle, sources })
}

/// `GET /metrics`: the key set gauges as of now, then everything recorded.
async fn metrics(State(state): State<MetricsState>) -> Response {
    for jwks in state.sources.key_sets() {
        set_health_gauges(jwks);
    }
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
    sources: &KeySources,
) -> Result<Option<SocketAddr>, StartError> {
    let (Some(addr), Some(handle)) = (args.metrics_listen, handle) else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    let bound = local_addr(&listener)?;
    spawn_server(listener, metrics_router(handle, sources.clone()));
    Ok(Some(bound))
}

/// The upstream and the HTTP client that reaches it.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, Body>,
    upstream: Upstream,
    forward_token: bool,
    /// With --cookie: the cookie that carries the token, removed unless `forward_token`.
    token_cookie: Option<String>,
}

/// Why the upstream did not answer; travels to the log line in the response extensions.
#[derive(Debug, Clone)]
struct UpstreamError(String);

impl Proxy {
    /// A proxy to `upstream`; the Authorization header goes on only with `forward_token`.
    pub(crate) fn new(upstream: Upstream, forward_token: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            upstream,
            forward_token,
            token_cookie: None,
        }
    }

    /// The token comes in the cookie `name` (when given): it is not forwarded either.
    pub(crate) fn token_cookie(mut self, name: Option<String>) -> Self {
        self.token_cookie = name;
        self
    }

    /// Sends the request upstream; the response comes back without hop-by-hop headers.
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
            if let Some(name) = &self.token_cookie {
                strip_cookie(headers, name);
            }
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

/// 502 with a JSON error; the cause goes to the log line.
fn bad_gateway(error: UpstreamError) -> Response {
    let mut res = refuse(StatusCode::BAD_GATEWAY, "bad_gateway", "upstream unavailable");
    res.extensions_mut().insert(error);
    res
}

/// Removes the cookie `name` from the `Cookie` headers; a header left empty goes too.
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| without_cookie(value, name))
        .collect();
    headers.remove(COOKIE);
    for value in kept {
        headers.append(COOKIE, value);
    }
}

/// One `Cookie` header without the cookie `name` (`None` when nothing is left). A
/// header that is not text is kept: the token source skips those too.
fn without_cookie(value: &HeaderValue, name: &str) -> Option<HeaderValue> {
    let Ok(text) = value.to_str() else {
        return Some(value.clone());
    };
    let kept: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(name))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
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

/// The request's log line: what was asked, the answer, and who asked (never the token).
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

/// The address `listener` is bound to.
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

/// The gateway proper: the plan, the recorder, the keys, then the sockets; serves until
/// Ctrl-C.
async fn run(args: &Args) -> Result<(), StartError> {
    let plan = Plan::from_args(args)?;
    let handle = install_metrics(args)?;
    let Gateway { app, sources } = build(&plan, args).await?;
    let listener = bind(plan.listen).await?;
    let listen = local_addr(&listener)?;
    let metrics = spawn_metrics(args, handle, &sources).await?;
    let metrics = metrics.map(tracing::field::display);
    let routes = plan.routes.len();
    tracing::info!(%listen, upstream = %plan.upstream, metrics, routes, "gateway ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(StartError::Serve)
}

/// Log lines to stderr; RUST_LOG sets the level (default info).
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
        let Gateway { app, sources } = gateway(&gateway_args).await?;
        let (listener, taken) = bind_or_any(args.listen.unwrap_or(DEFAULT_LISTEN)).await?;
        let gateway = local_addr(&listener)?;
        spawn_server(listener, app);
        let metrics = spawn_metrics(args, handle, &sources).await?;
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
