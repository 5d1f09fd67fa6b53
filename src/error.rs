//! Why a request was refused, and the RFC 6750 response that says so.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

/// The reason a request was rejected.
///
/// Each variant maps to one row of the RFC 6750 table: [`status`](Self::status) gives the
/// HTTP status, [`error_code`](Self::error_code) the `error=` value of `WWW-Authenticate`.
/// The rejection is attached to the response's extensions so outer layers can log it.
/// No variant carries the token itself.
///
/// ```
/// use tower_jwt_auth::AuthError;
/// assert_eq!(AuthError::Expired.status(), http::StatusCode::UNAUTHORIZED);
/// assert_eq!(AuthError::Expired.to_string(), "token expired");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in the request.
    MissingToken,
    /// More than one `Authorization` header.
    MultipleAuthorizationHeaders,
    /// More than one token in the configured source (e.g. two cookies of that name).
    MultipleTokens,
    /// A `Bearer` header whose token is empty or not token68.
    MalformedAuthorizationHeader,
    /// The token is longer than the configured maximum.
    TokenTooLarge,
    /// Not three base64url segments, or a segment that does not decode.
    Malformed(&'static str),
    /// A five-segment JWE (encrypted token).
    Encrypted,
    /// `alg` is `none` (in any case), unknown, or not in the allow-list.
    AlgorithmNotAllowed,
    /// The header has a `crit` member (no extension is understood).
    UnsupportedCritical,
    /// No key with the token's `kid`.
    UnknownKeyId,
    /// No key fits the token's `alg` (type, curve or the key's own `alg`).
    NoMatchingKey,
    /// The token has no `kid` and several keys fit.
    AmbiguousKey,
    /// The signature does not verify.
    InvalidSignature,
    /// A claim is missing that must be present.
    MissingClaim(Cow<'static, str>),
    /// A claim has the wrong JSON type or an out-of-range value.
    InvalidClaim(&'static str),
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `iss` is not an accepted issuer.
    WrongIssuer,
    /// No `aud` value is an accepted audience.
    WrongAudience,
    /// The claims do not deserialize into the configured claims type.
    ClaimsShape,
    /// The header's `typ` is not accepted (e.g. an ID token where `at+jwt` is required).
    WrongType,
    /// `exp` lies further after `iat` (or now) than the configured maximum lifetime.
    LifetimeTooLong,
    /// A user validator refused the token; carries its reason. Answered 403 without a
    /// challenge (the token is valid; no other credentials would help).
    Forbidden(String),
    /// A required scope is missing; carries the scope(s) needed.
    InsufficientScope(String),
    /// No keys could be obtained (key source unreachable, nothing cached).
    KeysUnavailable,
}

impl AuthError {
    /// The HTTP status of the rejection.
    ///
    /// ```
    /// use tower_jwt_auth::AuthError;
    /// assert_eq!(AuthError::MissingToken.status(), 401);
    /// assert_eq!(AuthError::MultipleAuthorizationHeaders.status(), 400);
    /// assert_eq!(AuthError::KeysUnavailable.status(), 503);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MultipleAuthorizationHeaders
            | Self::MultipleTokens
            | Self::MalformedAuthorizationHeader => StatusCode::BAD_REQUEST,
            Self::InsufficientScope(_) | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 `error` code, or `None` where none is sent (no token, 503).
    ///
    /// ```
    /// use tower_jwt_auth::AuthError;
    /// assert_eq!(AuthError::InvalidSignature.error_code(), Some("invalid_token"));
    /// assert_eq!(AuthError::MissingToken.error_code(), None);
    /// ```
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken | Self::KeysUnavailable => None,
            Self::MultipleAuthorizationHeaders
            | Self::MultipleTokens
            | Self::MalformedAuthorizationHeader => Some("invalid_request"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
            // A validator's refusal is an authorization decision, not a challenge.
            Self::Forbidden(_) => None,
            _ => Some("invalid_token"),
        }
    }

    /// A short label for metrics and logs (`"expired"`, `"invalid_signature"`, ...).
    ///
    /// ```
    /// assert_eq!(tower_jwt_auth::AuthError::Expired.reason(), "expired");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MultipleAuthorizationHeaders => "multiple_authorization_headers",
            Self::MultipleTokens => "multiple_tokens",
            Self::MalformedAuthorizationHeader => "malformed_authorization_header",
            Self::TokenTooLarge => "token_too_large",
            Self::Malformed(_) => "malformed",
            Self::Encrypted => "encrypted",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnsupportedCritical => "unsupported_crit",
            Self::UnknownKeyId => "unknown_kid",
            Self::NoMatchingKey => "no_matching_key",
            Self::AmbiguousKey => "ambiguous_key",
            Self::InvalidSignature => "invalid_signature",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::ClaimsShape => "claims_shape",
            Self::WrongType => "wrong_type",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::Forbidden(_) => "forbidden",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Every [`reason`](Self::reason) label, in a fixed order.
    pub const REASONS: [&'static str; 26] = [
        "missing_token",
        "multiple_authorization_headers",
        "multiple_tokens",
        "malformed_authorization_header",
        "token_too_large",
        "malformed",
        "encrypted",
        "algorithm_not_allowed",
        "unsupported_crit",
        "unknown_kid",
        "no_matching_key",
        "ambiguous_key",
        "invalid_signature",
        "missing_claim",
        "invalid_claim",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "wrong_issuer",
        "wrong_audience",
        "claims_shape",
        "wrong_type",
        "lifetime_too_long",
        "forbidden",
        "insufficient_scope",
        "keys_unavailable",
    ];

    pub(crate) fn reason_index(&self) -> usize {
        let reason = self.reason();
        Self::REASONS.iter().position(|r| *r == reason).unwrap_or(0)
    }

    /// Renders the RFC 6750 response: status, `WWW-Authenticate`, a JSON body and, for
    /// 503, `Retry-After`. The error itself goes into the response's extensions.
    ///
    /// ```
    /// use tower_jwt_auth::AuthError;
    /// let res = AuthError::Expired.to_response::<String>("api");
    /// assert_eq!(res.status(), 401);
    /// assert_eq!(
    ///     res.headers()["www-authenticate"],
    ///     r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
    /// );
    /// ```
    pub fn to_response<B: From<String>>(&self, realm: &str) -> Response<B> {
        let description = self.to_string();
        let body = match self.error_code() {
            Some(code) => serde_json::json!({ "error": code, "error_description": description }),
            None => serde_json::json!({ "error_description": description }),
        };
        let mut res = Response::new(B::from(body.to_string()));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS.as_secs()));
        } else if matches!(self, Self::Forbidden(_)) {
            // The token was fine; no new credentials would help.
        } else if let Ok(value) = HeaderValue::from_str(&self.challenge(realm)) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        res.extensions_mut().insert(self.clone());
        res
    }

    fn challenge(&self, realm: &str) -> String {
        let mut out = format!("Bearer realm=\"{}\"", quoted(realm));
        if let Some(code) = self.error_code() {
            out.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                quoted(&self.to_string())
            ));
        }
        if let Self::InsufficientScope(scope) = self {
            out.push_str(&format!(", scope=\"{}\"", quoted(scope)));
        }
        out
    }
}

/// How long a 503 tells clients to wait; matches the default unknown-kid cooldown order.
const RETRY_AFTER_SECS: Duration = Duration::from_secs(5);

/// RFC 6750 quoted-string content: drop what could break out of the quotes.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
        .collect()
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingToken => f.write_str("no bearer token"),
            Self::MultipleAuthorizationHeaders => f.write_str("more than one Authorization header"),
            Self::MultipleTokens => f.write_str("more than one token in the request"),
            Self::MalformedAuthorizationHeader => f.write_str("malformed bearer token"),
            Self::TokenTooLarge => f.write_str("token too large"),
            Self::Malformed(what) => write!(f, "malformed token: {what}"),
            Self::Encrypted => f.write_str("encrypted tokens are not supported"),
            Self::AlgorithmNotAllowed => f.write_str("algorithm not allowed"),
            Self::UnsupportedCritical => f.write_str("unsupported critical header"),
            Self::UnknownKeyId => f.write_str("unknown key id"),
            Self::NoMatchingKey => f.write_str("no key fits the token's algorithm"),
            Self::AmbiguousKey => f.write_str("token has no key id and several keys fit"),
            Self::InvalidSignature => f.write_str("invalid signature"),
            Self::MissingClaim(claim) => write!(f, "missing required claim `{claim}`"),
            Self::InvalidClaim(claim) => write!(f, "invalid claim `{claim}`"),
            Self::Expired => f.write_str("token expired"),
            Self::NotYetValid => f.write_str("token not yet valid"),
            Self::IssuedInFuture => f.write_str("token issued in the future"),
            Self::WrongIssuer => f.write_str("issuer not accepted"),
            Self::WrongAudience => f.write_str("audience not accepted"),
            Self::ClaimsShape => f.write_str("claims do not have the expected shape"),
            Self::WrongType => f.write_str("token type (typ) not accepted"),
            Self::LifetimeTooLong => f.write_str("token lifetime exceeds the accepted maximum"),
            Self::Forbidden(reason) => write!(f, "access denied: {reason}"),
            Self::InsufficientScope(scope) => write!(f, "insufficient scope, requires `{scope}`"),
            Self::KeysUnavailable => f.write_str("verification keys unavailable"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Renders rejections your way (HTML login redirect, problem+json, ...).
///
/// The default is [`AuthError::to_response`] (RFC 6750). Whatever you render, the
/// [`AuthError`] is still attached to the response's extensions. Closures
/// `Fn(&AuthError) -> Response<String>` implement it.
///
/// ```
/// use tower_jwt_auth::{AuthError, ErrorResponder};
/// let responder = |error: &AuthError| {
///     let mut res = error.to_response::<String>("api");
///     res.headers_mut().insert("x-auth-reason", http::HeaderValue::from_static("see body"));
///     res
/// };
/// let res = responder.respond(&AuthError::Expired);
/// assert_eq!(res.status(), 401);
/// ```
pub trait ErrorResponder: Send + Sync + 'static {
    /// The response for this rejection.
    fn respond(&self, error: &AuthError) -> Response<String>;
}

impl<F> ErrorResponder for F
where
    F: Fn(&AuthError) -> Response<String> + Send + Sync + 'static,
{
    fn respond(&self, error: &AuthError) -> Response<String> {
        self(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_in_reasons() {
        // REASONS is kept by hand beside `reason()`; a missing entry would be counted
        // under another reason.
        let samples = [
            AuthError::MissingToken,
            AuthError::MultipleAuthorizationHeaders,
            AuthError::MultipleTokens,
            AuthError::MalformedAuthorizationHeader,
            AuthError::TokenTooLarge,
            AuthError::Malformed("x"),
            AuthError::Encrypted,
            AuthError::AlgorithmNotAllowed,
            AuthError::UnsupportedCritical,
            AuthError::UnknownKeyId,
            AuthError::NoMatchingKey,
            AuthError::AmbiguousKey,
            AuthError::InvalidSignature,
            AuthError::MissingClaim("exp".into()),
            AuthError::InvalidClaim("exp"),
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::IssuedInFuture,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::ClaimsShape,
            AuthError::WrongType,
            AuthError::LifetimeTooLong,
            AuthError::Forbidden("x".into()),
            AuthError::InsufficientScope("x".into()),
            AuthError::KeysUnavailable,
        ];
        assert_eq!(samples.len(), AuthError::REASONS.len());
        for error in &samples {
            assert_eq!(
                AuthError::REASONS[error.reason_index()],
                error.reason(),
                "{error:?}"
            );
        }
    }
}
