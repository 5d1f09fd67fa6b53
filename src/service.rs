//! `JwtAuth`: the service that verifies the token and hands the claims on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::{HeaderMap, Request, Response, Uri};
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::jwks::SharedFetch as Fetch;
use crate::source::{KeySource, Source};
use crate::verify::{Parsed, Route, Verified};
use crate::{AuthError, Claims, ErrorResponder, Issuer, JsonClaims, TokenSource, Verifier};

/// Middleware that verifies bearer JWTs; made by [`JwtAuthLayer`](crate::JwtAuthLayer).
///
/// On success the request carries [`Claims<C>`] and a
/// [`VerifiedToken`](crate::VerifiedToken) in its extensions. On failure the inner
/// service is not called and the response follows RFC 6750.
pub struct JwtAuth<S, C = JsonClaims> {
    inner: S,
    shared: Arc<Shared>,
    validators: Validators<C>,
}

/// User checks on verified claims; a failure is a 403 with the returned reason.
pub(crate) type Validator<C> = Arc<dyn Fn(&C) -> Result<(), String> + Send + Sync>;
pub(crate) type Validators<C> = Arc<Vec<Validator<C>>>;

#[derive(Clone)]
pub(crate) struct Shared {
    verifier: Verifier,
    issuers: Issuers,
    pub(crate) realm: Box<str>,
    pub(crate) optional: bool,
    pub(crate) source: TokenSource,
    pub(crate) responder: Option<Arc<dyn ErrorResponder>>,
}

/// One key source for every token, or one per configured issuer.
#[derive(Clone, Debug)]
pub(crate) enum Issuers {
    One(KeySource),
    Many(Vec<Issuer>),
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("verifier", &self.verifier)
            .field("issuers", &self.issuers)
            .field("realm", &self.realm)
            .field("optional", &self.optional)
            .field("source", &self.source)
            .field("custom_responder", &self.responder.is_some())
            .finish()
    }
}

/// What one look at the request decided.
enum Check<C> {
    Verified(Verified<C>),
    Anonymous,
    Rejected(AuthError),
    /// The keys may be about to change: wait for this fetch, then look again.
    Wait(Fetch),
}

impl Shared {
    pub(crate) fn new(verifier: Verifier, issuers: Issuers) -> Self {
        Self {
            verifier,
            issuers,
            realm: "api".into(),
            optional: false,
            source: TokenSource::default(),
            responder: None,
        }
    }

    /// Verifies what it can without waiting. `may_fetch` is false on the second look,
    /// after a fetch, so a request causes at most one.
    fn check<C: DeserializeOwned>(&self, headers: &HeaderMap, uri: &Uri, may_fetch: bool) -> Check<C> {
        let token = match self.source.extract(headers, uri, self.verifier.max_token_len()) {
            Ok(Some(token)) => token,
            Ok(None) if self.optional => return Check::Anonymous,
            Ok(None) => return Check::Rejected(AuthError::MissingToken),
            Err(e) => return Check::Rejected(e),
        };
        let parsed = match self.verifier.parse(&token) {
            Ok(parsed) => parsed,
            Err(e) => return Check::Rejected(e),
        };
        let (keys, route) = match self.route(&parsed) {
            Ok(found) => found,
            Err(e) => return Check::Rejected(e),
        };
        let outcome = self.check_with(&parsed, keys, route, may_fetch);
        if let (Issuers::Many(_), Source::Remote(remote)) = (&self.issuers, &keys.0) {
            // Each issuer's health counts its own tokens.
            match &outcome {
                Check::Verified(_) => remote.count_token(Ok(())),
                Check::Rejected(e) => remote.count_token(Err(e)),
                Check::Anonymous | Check::Wait(_) => {}
            }
        }
        outcome
    }

    /// Key lookup (fetching when the set may have changed), signature and claims.
    fn check_with<C: DeserializeOwned>(
        &self,
        parsed: &Parsed<'_>,
        keys: &KeySource,
        route: Route<'_>,
        may_fetch: bool,
    ) -> Check<C> {
        let remote = match &keys.0 {
            Source::Fixed(keys) => return self.verifier.verify_parsed(parsed, keys, route).into(),
            Source::Remote(remote) => remote,
        };
        let Some(keys) = remote.keys() else {
            // Only the first look may start a fetch: a request causes at most one.
            let fetch = if may_fetch { remote.fetch_for_empty() } else { None };
            return match fetch {
                Some(fetch) => Check::Wait(fetch),
                None => Check::Rejected(AuthError::KeysUnavailable),
            };
        };
        let kid = parsed.kid.as_deref();
        match self.verifier.verify_parsed(parsed, &keys, route) {
            // The set may have changed under us: a new kid, a key replaced under a kid
            // that stayed, or a kid-less token from a new key. One look at the provider,
            // within the cooldown and shared with every other request that needs it.
            Err(e) if may_fetch && may_have_rotated(&e) => match remote.refetch_for(kid) {
                Some(fetch) => Check::Wait(fetch),
                None => Check::Rejected(e),
            },
            Err(AuthError::UnknownKeyId) => {
                if let Some(kid) = kid {
                    remote.remember_unknown(kid);
                }
                Check::Rejected(AuthError::UnknownKeyId)
            }
            result => result.into(),
        }
    }

    /// The key source (and issuer constraints) for this token. With several issuers the
    /// unverified `iss` picks one; an unknown issuer never reaches a key source.
    fn route<'a>(&'a self, parsed: &Parsed<'_>) -> Result<(&'a KeySource, Route<'a>), AuthError> {
        match &self.issuers {
            Issuers::One(keys) => Ok((keys, Route::default())),
            Issuers::Many(issuers) => {
                let iss = self
                    .verifier
                    .unverified_issuer(parsed)?
                    .ok_or(AuthError::MissingClaim("iss".into()))?;
                let issuer = issuers
                    .iter()
                    .find(|i| *i.name == *iss)
                    .ok_or(AuthError::WrongIssuer)?;
                Ok((&issuer.keys, issuer.route()))
            }
        }
    }

    fn reject<B: From<String>>(&self, error: &AuthError) -> Response<B> {
        tracing::debug!(
            reason = error.reason(),
            status = error.status().as_u16(),
            "request rejected"
        );
        self.record(Err(error));
        let mut res = match &self.responder {
            Some(responder) => responder.respond(error),
            None => error.to_response(&self.realm),
        };
        res.extensions_mut().insert(error.clone());
        res.map(B::from)
    }

    fn accept<C: Clone + Send + Sync + 'static, B>(&self, req: &mut Request<B>, verified: Verified<C>) {
        self.record(Ok(()));
        let extensions = req.extensions_mut();
        extensions.insert(Claims(verified.claims));
        extensions.insert(verified.token);
    }

    fn record(&self, result: Result<(), &AuthError>) {
        let keys = match &self.issuers {
            Issuers::One(keys) => Some(keys),
            Issuers::Many(_) => None,
        };
        match keys.map(|k| &k.0) {
            Some(Source::Remote(remote)) => remote.record_token(result),
            _ => crate::telemetry::token_metric(result),
        }
    }

    /// Checks the request, then runs the user's validators on verified claims.
    fn judge<C: DeserializeOwned>(
        &self,
        validators: &[Validator<C>],
        headers: &HeaderMap,
        uri: &Uri,
        may_fetch: bool,
    ) -> Check<C> {
        match self.check::<C>(headers, uri, may_fetch) {
            Check::Verified(verified) => match validators.iter().try_for_each(|v| v(&verified.claims)) {
                Ok(()) => Check::Verified(verified),
                Err(reason) => Check::Rejected(AuthError::Forbidden(reason)),
            },
            other => other,
        }
    }
}

/// Rejections that a fresh copy of the key set could turn into a success.
fn may_have_rotated(error: &AuthError) -> bool {
    matches!(
        error,
        AuthError::UnknownKeyId | AuthError::InvalidSignature | AuthError::NoMatchingKey
    )
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
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, validators: Validators<C>) -> Self {
        Self {
            inner,
            shared,
            validators,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
    fn clone(&self) -> Self {
        Self::from_parts(self.inner.clone(), self.shared.clone(), self.validators.clone())
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
        match self
            .shared
            .judge::<C>(&self.validators, req.headers(), req.uri(), true)
        {
            Check::Verified(verified) => {
                self.shared.accept(&mut req, verified);
                ResponseFuture::inner(inner.call(req))
            }
            Check::Anonymous => ResponseFuture::inner(inner.call(req)),
            Check::Rejected(error) => ResponseFuture::rejected(self.shared.reject(&error)),
            Check::Wait(fetch) => {
                let shared = self.shared.clone();
                let validators = self.validators.clone();
                ResponseFuture::waiting(
                    async move {
                        // The fetch's own outcome does not matter here: the second look
                        // sees whatever keys are there now.
                        let _ = fetch.await;
                        match shared.judge::<C>(&validators, req.headers(), req.uri(), false) {
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
