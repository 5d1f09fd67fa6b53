//! `JwksEndpoint`: serves a service's public keys, for the services it calls.
//!
//! The body is computed once per key set: `GET` gets it with
//! `Content-Type: application/jwk-set+json`, `Cache-Control: public, max-age=300` and a
//! strong `ETag` (the SHA-256 of the body); a verifier that sends the ETag back in
//! `If-None-Match` gets `304 Not Modified` and no body, as
//! [`RemoteJwks`](crate::RemoteJwks) does on every refresh.
//!
//! # Key rotation
//!
//! 1. Publish the next key beside the current one: `set_keys(&[&current, &next])`.
//! 2. Wait until every verifier has refetched the set: `max-age` (verifiers refresh
//!    before it runs out), plus a margin.
//! 3. Switch the signer: [`TokenSigner::set_key`](crate::TokenSigner::set_key)`(next)`,
//!    and publish `set_keys(&[&next, &previous])`.
//! 4. Once the last token signed with the previous key has expired (the token
//!    lifetime) and verifiers have refetched again (`max-age`), retire it:
//!    `set_keys(&[&next])`.
//!
//! No call fails along the way: a verifier always knows the key a token names.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, body::Body};
//! use tower::ServiceExt;
//! use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
//!
//! let current = SigningKey::generate(Algorithm::ES256, "2025-01")?;
//! let jwks = JwksEndpoint::new(&[&current]);
//! let app = Router::new().route_service("/.well-known/jwks.json", jwks.clone());
//!
//! let res = app.clone()
//!     .oneshot(http::Request::get("/.well-known/jwks.json").body(Body::empty())?)
//!     .await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["content-type"], "application/jwk-set+json");
//! assert_eq!(res.headers()["cache-control"], "public, max-age=300");
//! let etag = res.headers()["etag"].clone();
//!
//! let again = http::Request::get("/.well-known/jwks.json")
//!     .header("if-none-match", etag)
//!     .body(Body::empty())?;
//! assert_eq!(app.oneshot(again).await?.status(), 304);
//!
//! // Rotation: the next key is published before anything is signed with it.
//! let next = SigningKey::generate(Algorithm::ES256, "2025-02")?;
//! jwks.set_keys(&[&current, &next]);
//! assert_eq!(jwks.kids(), ["2025-01", "2025-02"]);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfNoneMatch};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower_service::Service;

use crate::SigningKey;

/// Default `Cache-Control: max-age` of the published key set: five minutes, the
/// refresh interval most verifiers use anyway.
///
/// ```
/// assert_eq!(tower_jwt_auth::DEFAULT_JWKS_MAX_AGE.as_secs(), 300);
/// ```
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// The media type of a JWK set (RFC 7517 section 8.5.1).
const JWK_SET_JSON: &str = "application/jwk-set+json";

/// The published key set, serialized once.
struct Published {
    body: Bytes,
    /// `None` only if the crypto backend could not hash (then every GET is a 200).
    etag: Option<(HeaderValue, ETag)>,
    kids: Vec<String>,
}

impl Published {
    fn new(keys: &[&SigningKey]) -> Self {
        let body = Bytes::from(SigningKey::jwks(keys).to_string());
        let etag = crate::crypto::sha256(&body).and_then(|digest| {
            let text = format!("\"{}\"", URL_SAFE_NO_PAD.encode(digest));
            Some((HeaderValue::try_from(&text).ok()?, text.parse().ok()?))
        });
        Self {
            body,
            etag,
            kids: keys.iter().map(|k| k.kid().to_string()).collect(),
        }
    }
}

/// A Tower service serving the public half of signing keys as a JWK set.
///
/// Answers `GET` and `HEAD` (others get 405), whatever the path: mount it at a route,
/// e.g. with axum's `route_service`. The published set can be swapped at runtime with
/// [`set_keys`](Self::set_keys); clones share it, and requests read it without locks.
///
/// ```
/// use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
/// let current = SigningKey::generate(Algorithm::EdDSA, "k2")?;
/// let next = SigningKey::generate(Algorithm::EdDSA, "k3")?;
/// let previous = SigningKey::generate(Algorithm::EdDSA, "k1")?;
/// let jwks = JwksEndpoint::new(&[&current, &next, &previous]);
/// assert_eq!(jwks.kids(), ["k2", "k3", "k1"]);
/// # Ok::<(), tower_jwt_auth::SignError>(())
/// ```
#[derive(Clone)]
pub struct JwksEndpoint {
    published: Arc<ArcSwap<Published>>,
    cache_control: HeaderValue,
}

impl fmt::Debug for JwksEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksEndpoint")
            .field("kids", &self.published.load().kids)
            .field("cache_control", &self.cache_control)
            .finish()
    }
}

impl JwksEndpoint {
    /// Publishes the public JWKs of `keys`, in this order: typically the current key,
    /// the next one (so verifiers know it before the signer switches) and the previous
    /// one (until the last token it signed has expired). Private key material is never
    /// published.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, JwksEndpoint, KeySet, SigningKey};
    /// let key = SigningKey::generate(Algorithm::ES256, "k1")?;
    /// let jwks = JwksEndpoint::new(&[&key]);
    /// let set = KeySet::from_jwks(&jwks.body())?;
    /// assert_eq!(set.kids().collect::<Vec<_>>(), ["k1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(keys: &[&SigningKey]) -> Self {
        Self {
            published: Arc::new(ArcSwap::from_pointee(Published::new(keys))),
            cache_control: cache_control(DEFAULT_JWKS_MAX_AGE),
        }
    }

    /// How long verifiers may cache the set: `Cache-Control: public, max-age=N`, in
    /// whole seconds. Default 5 minutes ([`DEFAULT_JWKS_MAX_AGE`]).
    ///
    /// This is also how long a newly published key takes to reach every verifier, so
    /// it sets the pace of key rotation.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
    /// let key = SigningKey::generate(Algorithm::EdDSA, "k1")?;
    /// let jwks = JwksEndpoint::new(&[&key]).max_age(Duration::from_secs(60));
    /// # let _ = jwks;
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.cache_control = cache_control(max_age);
        self
    }

    /// Replaces the published set, at once for every clone of this endpoint. Verifiers
    /// see the change at their next refresh (the body and so the ETag change).
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
    /// let (k1, k2) = (SigningKey::generate(Algorithm::EdDSA, "k1")?, SigningKey::generate(Algorithm::EdDSA, "k2")?);
    /// let jwks = JwksEndpoint::new(&[&k1]);
    /// let served = jwks.clone(); // e.g. moved into the router
    /// jwks.set_keys(&[&k1, &k2]);
    /// assert_eq!(served.kids(), ["k1", "k2"]);
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.published.store(Arc::new(Published::new(keys)));
    }

    /// The kids published now, in order.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
    /// let jwks = JwksEndpoint::new(&[&SigningKey::generate(Algorithm::EdDSA, "k1")?]);
    /// assert_eq!(jwks.kids(), ["k1"]);
    /// # Ok::<(), tower_jwt_auth::SignError>(())
    /// ```
    pub fn kids(&self) -> Vec<String> {
        self.published.load().kids.clone()
    }

    /// The JWK set document served now.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, JwksEndpoint, SigningKey};
    /// let jwks = JwksEndpoint::new(&[&SigningKey::generate(Algorithm::EdDSA, "k1")?]);
    /// let doc: serde_json::Value = serde_json::from_slice(&jwks.body())?;
    /// assert_eq!(doc["keys"][0]["kid"], "k1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn body(&self) -> Bytes {
        self.published.load().body.clone()
    }

    fn respond(&self, method: &Method, headers: &http::HeaderMap) -> Response<JwksBody> {
        let head = method == Method::HEAD;
        if method != Method::GET && !head {
            let mut res = Response::new(JwksBody::empty());
            *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let published = self.published.load();
        let not_modified = match (&published.etag, headers.typed_get::<IfNoneMatch>()) {
            (Some((_, etag)), Some(if_none_match)) => !if_none_match.precondition_passes(etag),
            _ => false,
        };
        let mut res = if not_modified {
            let mut res = Response::new(JwksBody::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else {
            let len = published.body.len();
            let body = if head {
                JwksBody::empty()
            } else {
                JwksBody::new(published.body.clone())
            };
            let mut res = Response::new(body);
            let headers = res.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JWK_SET_JSON));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            res
        };
        // A 304 carries the validators and caching headers a 200 would (RFC 9110 15.4.5).
        let headers = res.headers_mut();
        headers.insert(CACHE_CONTROL, self.cache_control.clone());
        if let Some((etag, _)) = &published.etag {
            headers.insert(ETAG, etag.clone());
        }
        res
    }
}

fn cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=300"))
}

impl<B> Service<Request<B>> for JwksEndpoint {
    type Response = Response<JwksBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<JwksBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.respond(req.method(), req.headers())))
    }
}

/// The response body of [`JwksEndpoint`]: the JWK set in one frame, or nothing.
///
/// ```
/// use http_body::Body;
/// use tower_jwt_auth::JwksBody;
/// assert!(JwksBody::default().is_end_stream());
/// ```
#[derive(Debug, Default)]
pub struct JwksBody {
    data: Option<Bytes>,
}

impl JwksBody {
    fn new(data: Bytes) -> Self {
        Self { data: Some(data) }
    }

    fn empty() -> Self {
        Self { data: None }
    }
}

impl Body for JwksBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(all(test, feature = "aws-lc-rs"))]
mod tests {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{Algorithm, KeySet};

    fn key(kid: &str) -> SigningKey {
        SigningKey::generate(Algorithm::ES256, kid).expect("key")
    }

    async fn send(endpoint: &JwksEndpoint, req: Request<()>) -> (Response<()>, Bytes) {
        let res = endpoint.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("infallible").to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    fn get() -> http::request::Builder {
        Request::get("/.well-known/jwks.json")
    }

    #[tokio::test]
    async fn get_serves_the_public_set_with_type_cache_control_and_etag() {
        let endpoint = JwksEndpoint::new(&[&key("k1"), &key("k2")]);
        let (res, body) = send(&endpoint, get().body(()).expect("request")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[CONTENT_TYPE], "application/jwk-set+json");
        assert_eq!(h[CACHE_CONTROL], "public, max-age=300");
        assert_eq!(h[CONTENT_LENGTH], body.len().to_string().as_str());
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let set = KeySet::from_jwks(&body).expect("a JWK set");
        assert_eq!(set.kids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(
            !String::from_utf8_lossy(&body).contains("\"d\""),
            "no private member"
        );
    }

    #[tokio::test]
    async fn the_etag_is_strong_and_the_sha256_of_the_body() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        let (res, body) = send(&endpoint, get().body(()).expect("request")).await;
        let etag = res.headers()[ETAG].to_str().expect("ascii").to_string();
        assert!(!etag.starts_with("W/"), "{etag}");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        assert_eq!(etag, format!("\"{}\"", URL_SAFE_NO_PAD.encode(digest.as_ref())));
    }

    #[tokio::test]
    async fn a_matching_if_none_match_gets_304_without_a_body() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        let (res, _) = send(&endpoint, get().body(()).expect("request")).await;
        let etag = res.headers()[ETAG].clone();
        let weak = HeaderValue::try_from(format!("W/{}", etag.to_str().expect("ascii"))).expect("value");
        let listed =
            HeaderValue::try_from(format!("\"other\", {}", etag.to_str().expect("ascii"))).expect("value");
        for value in [etag.clone(), weak, listed, HeaderValue::from_static("*")] {
            let req = get()
                .header("if-none-match", value.clone())
                .body(())
                .expect("request");
            let (res, body) = send(&endpoint, req).await;
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{value:?}");
            assert!(body.is_empty());
            assert_eq!(res.headers()[ETAG], etag);
            assert_eq!(res.headers()[CACHE_CONTROL], "public, max-age=300");
            assert!(res.headers().get(CONTENT_TYPE).is_none());
        }
    }

    #[tokio::test]
    async fn another_or_a_malformed_if_none_match_gets_the_set() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        for value in ["\"stale\"", "W/\"stale\"", "not an etag"] {
            let req = get().header("if-none-match", value).body(()).expect("request");
            let (res, body) = send(&endpoint, req).await;
            assert_eq!(res.status(), StatusCode::OK, "{value}");
            assert!(!body.is_empty());
        }
    }

    #[tokio::test]
    async fn set_keys_changes_the_body_and_the_etag_for_every_clone() {
        let (k1, k2) = (key("k1"), key("k2"));
        let endpoint = JwksEndpoint::new(&[&k1]);
        let served = endpoint.clone();
        let (before, _) = send(&served, get().body(()).expect("request")).await;
        let old_etag = before.headers()[ETAG].clone();
        endpoint.set_keys(&[&k1, &k2]);
        let req = get()
            .header("if-none-match", old_etag.clone())
            .body(())
            .expect("request");
        let (after, body) = send(&served, req).await;
        assert_eq!(after.status(), StatusCode::OK, "the old ETag no longer matches");
        assert_ne!(after.headers()[ETAG], old_etag);
        let set = KeySet::from_jwks(&body).expect("set");
        assert_eq!(set.kids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(served.kids(), ["k1", "k2"]);
    }

    #[tokio::test]
    async fn max_age_sets_cache_control() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]).max_age(Duration::from_secs(60));
        let (res, _) = send(&endpoint, get().body(()).expect("request")).await;
        assert_eq!(res.headers()[CACHE_CONTROL], "public, max-age=60");
    }

    #[tokio::test]
    async fn head_gets_the_headers_without_the_body() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        let (get_res, get_body) = send(&endpoint, get().body(()).expect("request")).await;
        let req = Request::head("/.well-known/jwks.json").body(()).expect("request");
        let (res, body) = send(&endpoint, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(res.headers()[ETAG], get_res.headers()[ETAG]);
        assert_eq!(res.headers()[CONTENT_LENGTH], get_body.len().to_string().as_str());
    }

    #[tokio::test]
    async fn other_methods_get_405_with_allow() {
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let req = Request::builder()
                .method(method.clone())
                .uri("/.well-known/jwks.json")
                .body(())
                .expect("request");
            let (res, body) = send(&endpoint, req).await;
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(res.headers()[ALLOW], "GET, HEAD");
            assert!(body.is_empty());
        }
    }

    #[test]
    fn the_endpoint_fits_axum_and_is_send_sync_clone() {
        fn assert_traits<T: Clone + Send + Sync + 'static>(_: &T) {}
        let endpoint = JwksEndpoint::new(&[&key("k1")]);
        assert_traits(&endpoint);
        let _router: axum::Router = axum::Router::new().route_service("/jwks.json", endpoint.clone());
        let debug = format!("{endpoint:?}");
        assert!(debug.contains("k1") && debug.contains("max-age=300"), "{debug}");
    }
}
