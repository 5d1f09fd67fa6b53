//! The verified claims as they travel in the request extensions.

/// The default claims type: the token's JSON object as it is.
pub type JsonClaims = serde_json::Map<String, serde_json::Value>;

/// Verified claims of type `C`, inserted into the request extensions by [`JwtAuth`].
///
/// With the `axum` feature this is also an extractor; `Option<Claims<C>>` extracts
/// `None` on routes where authentication is optional.
///
/// ```
/// use tower_jwt_auth::Claims;
/// let mut req = http::Request::new(());
/// let mut map = tower_jwt_auth::JsonClaims::new();
/// map.insert("sub".into(), "alice".into());
/// req.extensions_mut().insert(Claims(map));
/// let Claims(claims) = req.extensions().get::<Claims>().unwrap();
/// assert_eq!(claims["sub"], "alice");
/// ```
///
/// [`JwtAuth`]: crate::JwtAuth
#[derive(Debug, Clone, PartialEq)]
pub struct Claims<C = JsonClaims>(pub C);
