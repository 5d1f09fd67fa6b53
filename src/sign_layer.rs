//! `SignRequestLayer`: signs the requests of a Tower HTTP client.
//!
//! Wrap the client (hyper-util's `Client`, or any `Service<http::Request<B>>`) and every
//! request leaves with `Authorization: Bearer <token>` from a [`TokenSigner`], for the
//! audience of its destination. The token is cached per audience, so most requests cost
//! a header clone.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_jwt_auth::{Algorithm, SignRequestLayer, SigningKey, TokenSigner};
//!
//! let signer = TokenSigner::builder(SigningKey::generate(Algorithm::ES256, "a-1")?, "service-a")
//!     .build()?;
//! // The audience follows the destination; requests to other hosts go out unsigned.
//! let layer = SignRequestLayer::per_request(signer, |parts: &http::request::Parts| {
//!     match parts.uri.host() {
//!         Some("billing.internal") => Some("billing".to_string()),
//!         Some("orders.internal") => Some("orders".to_string()),
//!         _ => None,
//!     }
//! });
//! // Stands in for `hyper_util::client::legacy::Client`.
//! let client = tower::service_fn(|req: http::Request<String>| async move {
//!     let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(auth))
//! });
//! let client = ServiceBuilder::new().layer(layer).service(client);
//!
//! let req = http::Request::get("http://billing.internal/invoices").body(String::new())?;
//! let auth = client.clone().oneshot(req).await?.into_body();
//! assert!(auth.unwrap().starts_with("Bearer "));
//!
//! let req = http::Request::get("https://example.com/").body(String::new())?;
//! assert_eq!(client.oneshot(req).await?.into_body(), None);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderValue, Request};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{SignError, TokenSigner};

type AudienceFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// Which audience a request is signed for.
#[derive(Clone)]
enum Audience {
    Fixed(Arc<str>),
    PerRequest(Arc<AudienceFn>),
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(aud) => f.debug_tuple("Fixed").field(aud).finish(),
            Self::PerRequest(_) => f.write_str("PerRequest(..)"),
        }
    }
}

#[derive(Debug)]
struct Shared {
    signer: TokenSigner,
    audience: Audience,
}

impl Shared {
    /// `Authorization` for this request, or `None` to send it unsigned.
    fn authorization(&self, parts: &Parts) -> Result<Option<HeaderValue>, SignError> {
        let audience = match &self.audience {
            Audience::Fixed(aud) => return self.signer.bearer_for(aud).map(Some),
            Audience::PerRequest(choose) => choose(parts),
        };
        audience.map(|aud| self.signer.bearer_for(&aud)).transpose()
    }

    fn sign<B>(&self, req: Request<B>) -> Result<Request<B>, SignError> {
        let (mut parts, body) = req.into_parts();
        if let Some(value) = self.authorization(&parts)? {
            // `insert` replaces any Authorization already there: two would be refused.
            parts.headers.insert(AUTHORIZATION, value);
        }
        Ok(Request::from_parts(parts, body))
    }
}

/// Adds `Authorization: Bearer <token>` to the requests of a Tower HTTP client.
///
/// The token comes from a [`TokenSigner`] (cached per audience); the audience is fixed
/// ([`new`](Self::new)) or chosen per request ([`per_request`](Self::per_request)). An
/// `Authorization` header already on the request is replaced. Cheap to clone.
///
/// ```
/// use tower_jwt_auth::{Algorithm, SignRequestLayer, SigningKey, TokenSigner};
/// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
///     .build()?;
/// let layer = SignRequestLayer::new(signer, "service-b");
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SignRequestLayer {
    shared: Arc<Shared>,
}

impl SignRequestLayer {
    /// Signs every request for `audience`: for a client that only talks to one service.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower::{Layer, ServiceExt};
    /// use tower_jwt_auth::{Algorithm, SignRequestLayer, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// let client = SignRequestLayer::new(signer, "service-b").layer(tower::service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, std::convert::Infallible>(req.headers().contains_key("authorization"))
    ///     },
    /// ));
    /// assert!(client.oneshot(http::Request::new(())).await?);
    /// # Ok(()) }
    /// ```
    pub fn new(signer: TokenSigner, audience: impl Into<String>) -> Self {
        Self::with(signer, Audience::Fixed(audience.into().into()))
    }

    /// Signs each request for the audience `audience(parts)` returns, typically chosen
    /// by `parts.uri.host()` or authority; `None` sends the request unsigned, so that a
    /// token meant for one service never reaches another.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SignRequestLayer, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// let layer = SignRequestLayer::per_request(signer, |parts: &http::request::Parts| {
    ///     (parts.uri.authority()?.as_str() == "127.0.0.1:8081").then(|| "service-b".to_string())
    /// });
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn per_request<F>(signer: TokenSigner, audience: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self::with(signer, Audience::PerRequest(Arc::new(audience)))
    }

    fn with(signer: TokenSigner, audience: Audience) -> Self {
        Self {
            shared: Arc::new(Shared { signer, audience }),
        }
    }
}

impl<S> Layer<S> for SignRequestLayer {
    type Service = SignRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SignRequest {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A client service whose requests are signed; made by [`SignRequestLayer`].
///
/// Its error is the inner service's, or [`SignRequestError::Sign`] when no token could
/// be made (an empty audience, a failing crypto backend); the request is then not sent.
#[derive(Clone, Debug)]
pub struct SignRequest<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SignRequest<S> {
    /// The wrapped client.
    ///
    /// ```
    /// use tower::Layer;
    /// use tower_jwt_auth::{Algorithm, SignRequestLayer, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// let client = SignRequestLayer::new(signer, "service-b").layer(42);
    /// assert_eq!(*client.get_ref(), 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for SignRequest<S>
where
    S: Service<Request<B>> + Clone,
{
    type Response = S::Response;
    type Error = SignRequestError<S::Error>;
    type Future = SignRequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(SignRequestError::Service)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = match self.shared.sign(req) {
            Ok(req) => req,
            // The ready inner service stays in place, unused.
            Err(error) => return SignRequestFuture::failed(error),
        };
        // `self.inner` is the service that `poll_ready` made ready: it must send this
        // request. Leave a fresh clone in its place for the next call (the classic bug
        // is to call the clone, which may never have been polled ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        SignRequestFuture::inner(inner.call(req))
    }
}

/// The error of a [`SignRequest`] client: no token, or the client's own error.
///
/// ```
/// use tower_jwt_auth::{SignError, SignRequestError};
/// let err: SignRequestError<std::io::Error> = SignRequestError::Sign(SignError::EmptyKid);
/// assert!(err.to_string().starts_with("cannot sign the request"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SignRequestError<E> {
    /// No token could be made; the request was not sent.
    Sign(SignError),
    /// The inner service failed.
    Service(E),
}

impl<E: fmt::Display> fmt::Display for SignRequestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sign(e) => write!(f, "cannot sign the request: {e}"),
            Self::Service(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SignRequestError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sign(e) => Some(e),
            // Transparent: the client's error speaks for itself.
            Self::Service(e) => e.source(),
        }
    }
}

pin_project! {
    /// Response future of [`SignRequest`]: the inner client's future, or the signing
    /// error when no token could be made. Never allocates.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower::{Layer, Service};
    /// use tower_jwt_auth::{Algorithm, SignRequestFuture, SignRequestLayer, SigningKey, TokenSigner};
    /// let signer = TokenSigner::builder(SigningKey::generate(Algorithm::EdDSA, "a-1")?, "service-a")
    ///     .build()?;
    /// let mut client = SignRequestLayer::new(signer, "service-b").layer(tower::service_fn(
    ///     |_req: http::Request<()>| async { Ok::<_, std::convert::Infallible>("sent") },
    /// ));
    /// std::future::poll_fn(|cx| client.poll_ready(cx)).await?;
    /// let future: SignRequestFuture<_> = client.call(http::Request::new(()));
    /// assert_eq!(future.await?, "sent");
    /// # Ok(()) }
    /// ```
    pub struct SignRequestFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Failed { error: Option<SignError> },
    }
}

impl<F> SignRequestFuture<F> {
    fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn failed(error: SignError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for SignRequestFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, SignRequestError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx).map_err(SignRequestError::Service),
            StateProj::Failed { error } => Poll::Ready(Err(SignRequestError::Sign(
                error.take().expect("SignRequestFuture polled after completion"),
            ))),
        }
    }
}

impl<F> fmt::Debug for SignRequestFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequestFuture").finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "aws-lc-rs"))]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{Service, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::{Algorithm, KeySet, SigningKey, Verifier};

    fn signer() -> TokenSigner {
        TokenSigner::builder(
            SigningKey::generate(Algorithm::ES256, "a-1").expect("key"),
            "service-a",
        )
        .build()
        .expect("signer")
    }

    /// A client stand-in answering with the request's Authorization header values.
    fn echo() -> impl Service<
        Request<()>,
        Response = Vec<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Vec<String>, Infallible>> + Send,
    > + Clone
    + Send
    + Sync {
        tower::service_fn(|req: Request<()>| async move {
            let values = req.headers().get_all(AUTHORIZATION).iter();
            Ok::<_, Infallible>(values.map(|v| v.to_str().expect("ascii").to_string()).collect())
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).expect("request")
    }

    fn audience_of(authorization: &str) -> String {
        use base64::Engine;
        let token = authorization.strip_prefix("Bearer ").expect("bearer");
        let payload = token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url"),
        )
        .expect("json");
        claims["aud"].as_str().expect("aud").to_string()
    }

    #[tokio::test]
    async fn a_fixed_audience_signs_every_request_with_a_verifiable_token() {
        let signer = signer();
        let keys =
            KeySet::from_jwks(SigningKey::jwks(&[&signer.key()]).to_string().as_bytes()).expect("keys");
        let client = SignRequestLayer::new(signer, "service-b").layer(echo());
        let auth = client.oneshot(get("http://b.internal/x")).await.expect("call");
        assert_eq!(auth.len(), 1);
        let token = auth[0].strip_prefix("Bearer ").expect("bearer scheme");
        let verified = Verifier::builder()
            .issuer("service-a")
            .audience("service-b")
            .build()
            .expect("verifier")
            .verify::<serde_json::Value>(token, &keys)
            .expect("valid token");
        assert_eq!(verified.claims["sub"], "service-a");
    }

    #[tokio::test]
    async fn the_audience_follows_the_destination() {
        let layer = SignRequestLayer::per_request(signer(), |parts| match parts.uri.authority()?.as_str() {
            "b.internal" => Some("service-b".into()),
            "c.internal:8443" => Some("service-c".into()),
            _ => None,
        });
        let client = ServiceBuilder::new().layer(layer).service(echo());
        let auth = client
            .clone()
            .oneshot(get("http://b.internal/x"))
            .await
            .expect("call");
        assert_eq!(audience_of(&auth[0]), "service-b");
        let auth = client
            .clone()
            .oneshot(get("https://c.internal:8443/y"))
            .await
            .expect("call");
        assert_eq!(audience_of(&auth[0]), "service-c");
    }

    #[tokio::test]
    async fn a_request_to_an_unknown_destination_goes_out_unsigned() {
        let layer = SignRequestLayer::per_request(signer(), |parts| {
            (parts.uri.host() == Some("b.internal")).then(|| "service-b".into())
        });
        let client = layer.layer(echo());
        let auth = client.oneshot(get("https://example.com/")).await.expect("call");
        assert!(auth.is_empty(), "{auth:?}");
    }

    #[tokio::test]
    async fn an_authorization_header_already_there_is_replaced() {
        let client = SignRequestLayer::new(signer(), "service-b").layer(echo());
        let mut req = get("http://b.internal/x");
        req.headers_mut()
            .append(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        req.headers_mut()
            .append(AUTHORIZATION, HeaderValue::from_static("Bearer old"));
        let auth = client.oneshot(req).await.expect("call");
        assert_eq!(auth.len(), 1, "{auth:?}");
        assert_eq!(audience_of(&auth[0]), "service-b");
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_signed_fails_without_reaching_the_client() {
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let client = tower::service_fn(move |_req: Request<()>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(()) }
        });
        let client = SignRequestLayer::new(signer(), "").layer(client);
        let err = client
            .oneshot(get("http://b.internal/x"))
            .await
            .expect_err("empty audience");
        assert!(
            matches!(err, SignRequestError::Sign(SignError::Claims(_))),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(reached.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_inner_error_comes_back_as_service() {
        let client = tower::service_fn(|_req: Request<()>| async {
            Err::<(), _>(std::io::Error::other("connection refused"))
        });
        let client = SignRequestLayer::new(signer(), "service-b").layer(client);
        let err = client
            .oneshot(get("http://b.internal/x"))
            .await
            .expect_err("inner error");
        assert!(matches!(err, SignRequestError::Service(_)));
        assert_eq!(err.to_string(), "connection refused");
    }

    /// A client whose every clone must be polled ready before it is called.
    #[derive(Default)]
    struct MustBeReady {
        ready: bool,
    }

    impl Clone for MustBeReady {
        fn clone(&self) -> Self {
            // A clone has not been polled: it is not ready.
            Self { ready: false }
        }
    }

    impl Service<Request<()>> for MustBeReady {
        type Response = ();
        type Error = &'static str;
        type Future = std::future::Ready<Result<(), &'static str>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.ready = true;
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            let was_ready = std::mem::replace(&mut self.ready, false);
            std::future::ready(if was_ready {
                Ok(())
            } else {
                Err("called before poll_ready")
            })
        }
    }

    #[tokio::test]
    async fn the_service_polled_ready_is_the_one_called() {
        let mut client = SignRequestLayer::new(signer(), "service-b").layer(MustBeReady::default());
        for _ in 0..3 {
            let ready = client.ready().await.expect("ready");
            ready
                .call(get("http://b.internal/x"))
                .await
                .expect("the ready service was called");
        }
    }

    #[test]
    fn layer_service_and_future_are_send_sync_and_clone() {
        fn layer<T: Clone + Send + Sync + 'static>(_: &T) {}
        fn service<T: Clone + Send + Sync>(_: &T) {}
        fn future<T: Send>(_: &T) {}
        let layer_value = SignRequestLayer::new(signer(), "service-b");
        layer(&layer_value);
        let mut client = layer_value.layer(echo());
        service(&client);
        let fut = client.call(get("http://b.internal/x"));
        future(&fut);
        let debug = format!("{layer_value:?}");
        assert!(debug.contains("service-b"), "{debug}");
    }
}
