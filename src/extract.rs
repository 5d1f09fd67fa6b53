//! The axum extractor for [`Claims<C>`] (feature `axum`).

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{AuthError, Claims};

/// Takes the claims that [`JwtAuth`](crate::JwtAuth) put into the request.
///
/// Without claims (the layer is missing, or runs in optional mode and the request had
/// no token) it rejects with 401 and a `Bearer` challenge: a route that asks for
/// `Claims` never runs unauthenticated. Ask for `Option<Claims<C>>` to accept both.
impl<S, C> FromRequestParts<S> for Claims<C>
where
    C: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims<C>>()
            .cloned()
            .ok_or(AuthError::MissingToken)
    }
}

impl<S, C> OptionalFromRequestParts<S> for Claims<C>
where
    C: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Claims<C>>().cloned())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_response("api")
    }
}
