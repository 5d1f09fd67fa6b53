//! The axum extractor for [`Claims<C>`] (feature `axum`).

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{AuthError, Claims, VerifiedToken};

/// Why the [`Claims<C>`] extractor refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimsRejection {
    /// The request carries no verified claims: no token (optional mode) or no layer.
    /// Answered 401 with a `Bearer` challenge.
    Unauthenticated(AuthError),
    /// A token was verified, but into another claims type than the handler asks for
    /// (`JwtAuthLayer::claims::<D>()` and `Claims<C>` disagree): a programming error,
    /// answered 500 and logged.
    TypeMismatch,
}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated(error) => error.into_response(),
            Self::TypeMismatch => {
                tracing::error!(
                    "Claims<C> extractor: the auth layer produced another claims type; \
                     make JwtAuthLayer::claims::<C>() and the handler's Claims<C> agree"
                );
                (http::StatusCode::INTERNAL_SERVER_ERROR, "claims type mismatch").into_response()
            }
        }
    }
}

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
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Claims<C>>() {
            Some(claims) => Ok(claims.clone()),
            None if parts.extensions.get::<VerifiedToken>().is_some() => Err(ClaimsRejection::TypeMismatch),
            None => Err(ClaimsRejection::Unauthenticated(AuthError::MissingToken)),
        }
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

/// The RFC 6750 response with realm `"api"` (an extractor does not know the layer's
/// realm; the layer itself answers with the configured one).
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_response("api")
    }
}
