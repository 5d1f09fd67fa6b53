//! `JwtAuth`: the service that verifies the token and hands the claims on.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::{HeaderMap, Request, Response};
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::source::{KeySource, Source};
use crate::token::bearer_token;
use crate::verify::Verified;
use crate::{AuthError, Claims, JsonClaims, Verifier};

/// Middleware that verifies bearer JWTs; made by [`JwtAuthLayer`](crate::JwtAuthLayer).
///
/// On success the request carries [`Claims<C>`] and a
/// [`VerifiedToken`](crate::VerifiedToken) in its extensions. On failure the inner
/// service is not called and the response follows RFC 6750.
pub struct JwtAuth<S, C = JsonClaims> {
    inner: S,
    shared: Arc<Shared>,
    _claims: PhantomData<fn() -> C>,
}

#[derive(Clone)]
pub(crate) struct Shared {
    verifier: Verifier,
    keys: KeySource,
    pub(crate) realm: Box<str>,
    pub(crate) optional: bool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("verifier", &self.verifier)
            .field("keys", &self.keys)
            .field("realm", &self.realm)
            .field("optional", &self.optional)
            .finish()
    }
}

/// What one look at the request decided.
enum Check<C> {
    Verified(Verified<C>),
    Anonymous,
    Rejected(AuthError),
    /// The keys may be about to change: wait for this fetch, then look again.
    Wait(
        futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<(), crate::FetchError>>>,
    ),
}

impl Shared {
    pub(crate) fn new(verifier: Verifier, keys: KeySource) -> Self {
        Self {
            verifier,
            keys,
            realm: "api".into(),
            optional: false,
        }
    }

    /// Verifies what it can without waiting. `may_fetch` is false on the second look,
    /// after a fetch, so a request causes at most one.
    fn check<C: DeserializeOwned>(&self, headers: &HeaderMap, may_fetch: bool) -> Check<C> {
        let token = match bearer_token(headers, self.verifier.max_token_len()) {
            Ok(Some(token)) => token,
            Ok(None) if self.optional => return Check::Anonymous,
            Ok(None) => return Check::Rejected(AuthError::MissingToken),
            Err(e) => return Check::Rejected(e),
        };
        let parsed = match self.verifier.parse(token) {
            Ok(parsed) => parsed,
            Err(e) => return Check::Rejected(e),
        };
        let remote = match &self.keys.0 {
            Source::Fixed(keys) => return self.verifier.verify_parsed(&parsed, keys).into(),
            Source::Remote(remote) => remote,
        };
        let Some(keys) = remote.keys() else {
            return match remote.fetch_for_empty().filter(|_| may_fetch) {
                Some(fetch) => Check::Wait(fetch),
                None => Check::Rejected(AuthError::KeysUnavailable),
            };
        };
        match (self.verifier.verify_parsed(&parsed, &keys), parsed.kid.as_deref()) {
            (Err(AuthError::UnknownKeyId), Some(kid)) if may_fetch => match remote.refetch_for_kid(kid) {
                Some(fetch) => Check::Wait(fetch),
                None => Check::Rejected(AuthError::UnknownKeyId),
            },
            (Err(AuthError::UnknownKeyId), Some(kid)) => {
                remote.remember_unknown(kid);
                Check::Rejected(AuthError::UnknownKeyId)
            }
            (result, _) => result.into(),
        }
    }

    fn reject<B: From<String>>(&self, error: &AuthError) -> Response<B> {
        tracing::debug!(
            reason = error.reason(),
            status = error.status().as_u16(),
            "request rejected"
        );
        self.record(Err(error));
        error.to_response(&self.realm)
    }

    fn accept<C: Clone + Send + Sync + 'static, B>(&self, req: &mut Request<B>, verified: Verified<C>) {
        self.record(Ok(()));
        let extensions = req.extensions_mut();
        extensions.insert(Claims(verified.claims));
        extensions.insert(verified.token);
    }

    fn record(&self, result: Result<(), &AuthError>) {
        match &self.keys.0 {
            Source::Remote(remote) => remote.record_token(result),
            Source::Fixed(_) => crate::telemetry::token_metric(result),
        }
    }
}

impl<C> From<Result<Verified<C>, AuthError>> for Check<C> {
    fn from(result: Result<Verified<C>, AuthError>) -> Self {
        match result {
            Ok(verified) => Check::Verified(verified),
            Err(e) => Check::Rejected(e),
        }
    }
}

impl<S, C> JwtAuth<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            _claims: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
    fn clone(&self) -> Self {
        Self::from_parts(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for JwtAuth<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // `self.inner` is the service that `poll_ready` made ready: it must handle this
        // request. Leave a fresh clone in its place for the next call (the classic bug
        // is to call the clone, which may never have been polled ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match self.shared.check::<C>(req.headers(), true) {
            Check::Verified(verified) => {
                self.shared.accept(&mut req, verified);
                ResponseFuture::inner(inner.call(req))
            }
            Check::Anonymous => ResponseFuture::inner(inner.call(req)),
            Check::Rejected(error) => ResponseFuture::rejected(self.shared.reject(&error)),
            Check::Wait(fetch) => {
                let shared = self.shared.clone();
                ResponseFuture::waiting(
                    async move {
                        // The fetch's own outcome does not matter here: the second look
                        // sees whatever keys are there now.
                        let _ = fetch.await;
                        match shared.check::<C>(req.headers(), false) {
                            Check::Verified(verified) => {
                                shared.accept(&mut req, verified);
                                Ok(inner.call(req))
                            }
                            Check::Anonymous => Ok(inner.call(req)),
                            Check::Rejected(error) => Err(shared.reject(&error)),
                            Check::Wait(_) => Err(shared.reject(&AuthError::KeysUnavailable)),
                        }
                    }
                    .boxed(),
                )
            }
        }
    }
}
