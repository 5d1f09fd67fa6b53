//! Tower middleware that verifies `Authorization: Bearer` JWTs against a JSON Web Key
//! Set fetched from your identity provider, and hands the claims to your handlers.
//!
//! - [`RemoteJwks`] fetches the key set, caches it, refreshes it in the background and
//!   picks up a rotated key on first sight, without letting anyone hammer the provider.
//! - [`Verifier`] checks a token: algorithm allow-list, key selection by `kid`,
//!   signature (jsonwebtoken, aws-lc-rs backend), `exp`/`nbf`/`iat`/`iss`/`aud`.
//! - [`JwtAuthLayer`] puts both in front of any Tower service; rejections follow RFC 6750.
//! - [`Claims<C>`] carries the claims in the request extensions and, with the `axum`
//!   feature, is an extractor.
//!
//! # Example (axum)
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, routing::get};
//! use tower::ServiceExt;
//! use tower_jwt_auth::{Claims, JwtAuthLayer, KeySet, Verifier};
//!
//! // In production: RemoteJwks::builder("https://idp.example/.well-known/jwks.json").build().await?
//! let keys = KeySet::from_jwks(br#"{"keys": []}"#).unwrap();
//! let verifier = Verifier::builder()
//!     .issuer("https://idp.example")
//!     .audience("orders")
//!     .build()
//!     .unwrap();
//!
//! async fn whoami(Claims(claims): Claims) -> String {
//!     format!("hello {}", claims["sub"])
//! }
//!
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     // route_layer: authentication runs after routing, so unknown paths stay 404.
//!     .route_layer(JwtAuthLayer::new(verifier, keys));
//!
//! let res = app
//!     .oneshot(http::Request::get("/whoami").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["www-authenticate"], r#"Bearer realm="api""#);
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! # Responses
//!
//! | case | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token | 401 | `Bearer realm="api"` |
//! | two `Authorization` headers, malformed bearer token | 400 | `error="invalid_request"` |
//! | bad token (syntax, alg, unknown kid, signature, expired, iss, aud, ...) | 401 | `error="invalid_token"` |
//! | missing scope | 403 | `error="insufficient_scope"` |
//! | no keys available | 503 | none; `Retry-After` |
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `aws-lc-rs` | yes | jsonwebtoken's aws-lc-rs crypto backend |
//! | `rust-crypto` | no | jsonwebtoken's RustCrypto backend instead |
//! | `axum` | no | `Claims<C>` as an axum 0.8 extractor |
//! | `metrics` | yes | counters through the `metrics` facade (`jwks_fetches_total`, `jwt_tokens_total`, ...) |

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!("enable one crypto backend: feature `aws-lc-rs` (default) or `rust-crypto`");

mod alg;
mod claims;
mod crypto;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod issuer;
mod jwks;
mod jwks_endpoint;
mod keys;
mod layer;
mod policy;
mod service;
mod sign;
mod sign_layer;
mod signer;
mod source;
mod telemetry;
mod token;
mod verify;

pub use alg::{Algorithm, UnknownAlgorithm};
pub use claims::{Claims, JsonClaims};
pub use error::{AuthError, ErrorResponder};
#[cfg(feature = "axum")]
pub use extract::ClaimsRejection;
pub use future::ResponseFuture;
pub use issuer::Issuer;
pub use jwks::{
    BuildError, DEFAULT_COOLDOWN, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REFRESH, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH, DEFAULT_REFRESH_INTERVAL, FetchError, JwksHealth, RemoteJwks,
    RemoteJwksBuilder,
};
pub use jwks_endpoint::{DEFAULT_JWKS_MAX_AGE, JwksBody, JwksEndpoint};
pub use keys::{KeySet, KeySetError, SkippedKey};
pub use layer::JwtAuthLayer;
pub use service::JwtAuth;
pub use sign::{SignError, SigningKey};
pub use sign_layer::{SignRequest, SignRequestError, SignRequestFuture, SignRequestLayer};
pub use signer::{DEFAULT_TOKEN_LIFETIME, TokenSigner, TokenSignerBuilder};
pub use source::KeySource;
pub use token::TokenSource;
pub use verify::{
    Clock, ConfigError, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN, Verified, VerifiedToken, Verifier,
    VerifierBuilder,
};
