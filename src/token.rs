//! Where the token comes from: the `Authorization: Bearer` header (default), a named
//! cookie, or a function of the user's.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Uri};

use crate::AuthError;

type CustomSource = dyn Fn(&HeaderMap, &Uri) -> Result<Option<String>, AuthError> + Send + Sync;

/// Where [`JwtAuth`](crate::JwtAuth) looks for the token.
///
/// ```
/// use tower_jwt_auth::TokenSource;
/// // Browser flow: the token lives in a cookie (set it `HttpOnly; Secure; SameSite=Strict`).
/// let source = TokenSource::cookie("access_token");
/// # let _ = source;
/// ```
#[derive(Clone)]
pub struct TokenSource(Kind);

#[derive(Clone)]
enum Kind {
    Authorization,
    Cookie(Box<str>),
    Custom(Arc<CustomSource>),
}

impl Default for TokenSource {
    fn default() -> Self {
        Self::authorization_header()
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Authorization => f.write_str("TokenSource::AuthorizationHeader"),
            Kind::Cookie(name) => write!(f, "TokenSource::Cookie({name:?})"),
            Kind::Custom(_) => f.write_str("TokenSource::Custom(..)"),
        }
    }
}

impl TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 section 2.1). The default.
    pub fn authorization_header() -> Self {
        Self(Kind::Authorization)
    }

    /// The value of the cookie `name`. Two cookies of that name are refused (400).
    ///
    /// Cookies are sent by browsers on their own: pair this with `SameSite` cookies or
    /// CSRF protection for state-changing routes.
    pub fn cookie(name: impl Into<String>) -> Self {
        Self(Kind::Cookie(name.into().into()))
    }

    /// A function of the request headers and URI: `Ok(None)` for "no token", an error
    /// to refuse the request.
    ///
    /// ```
    /// use tower_jwt_auth::TokenSource;
    /// let source = TokenSource::custom(|headers, _uri| {
    ///     Ok(headers.get("x-api-token").and_then(|v| v.to_str().ok()).map(str::to_string))
    /// });
    /// # let _ = source;
    /// ```
    pub fn custom(
        f: impl Fn(&HeaderMap, &Uri) -> Result<Option<String>, AuthError> + Send + Sync + 'static,
    ) -> Self {
        Self(Kind::Custom(Arc::new(f)))
    }

    /// The token of this request, refused by length before anything else reads it.
    pub(crate) fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &Uri,
        max_len: usize,
    ) -> Result<Option<Cow<'a, str>>, AuthError> {
        let token = match &self.0 {
            Kind::Authorization => return Ok(bearer_token(headers, max_len)?.map(Cow::Borrowed)),
            Kind::Cookie(name) => cookie_token(headers, name)?.map(Cow::Borrowed),
            Kind::Custom(f) => f(headers, uri)?.map(Cow::Owned),
        };
        match token {
            Some(t) if t.len() > max_len => Err(AuthError::TokenTooLarge),
            Some(t) if !is_token68(t.as_bytes()) => Err(AuthError::MalformedAuthorizationHeader),
            other => Ok(other),
        }
    }
}

/// The value of the one cookie called `name` across all `Cookie` headers.
fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    let mut found = None;
    // Browsers send cookie values in UTF-8 or worse: judge each `;`-separated pair on its
    // own, so one odd cookie cannot hide the token (or smuggle a second one).
    let pairs = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|h| h.as_bytes().split(|b| *b == b';'));
    for pair in pairs {
        let Ok(text) = std::str::from_utf8(pair) else {
            continue;
        };
        let Ok(cookie) = cookie::Cookie::parse(text.trim()) else {
            continue;
        };
        if cookie.name() != name {
            continue;
        }
        if found.is_some() {
            return Err(AuthError::MultipleTokens);
        }
        // The raw value borrows from the header map, so no copy is made.
        found = Some(
            cookie
                .value_raw()
                .ok_or(AuthError::MalformedAuthorizationHeader)?,
        );
    }
    Ok(found)
}

/// Takes the bearer token from the request headers.
///
/// `Ok(None)` when there is no `Authorization` header or it carries another scheme
/// (`Basic ...`): the request has no bearer token. Two headers, an empty token or one
/// with characters outside token68 are `invalid_request`; a token longer than `max_len`
/// is refused before anything else looks at it.
pub(crate) fn bearer_token(headers: &HeaderMap, max_len: usize) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MultipleAuthorizationHeaders);
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = rest.unwrap_or_default();
    if token.len() > max_len {
        return Err(AuthError::TokenTooLarge);
    }
    if !is_token68(token) {
        return Err(AuthError::MalformedAuthorizationHeader);
    }
    // token68 is ASCII, so this cannot fail; the error arm keeps the path panic-free.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| AuthError::MalformedAuthorizationHeader)
}

/// RFC 7235 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|b| **b == b'=').count();
    body_len > 0
        && token[..body_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).expect("test header"));
        }
        map
    }

    #[test]
    fn takes_the_token_after_a_case_insensitive_bearer() {
        assert_eq!(bearer_token(&headers(&["Bearer a.b.c"]), 100), Ok(Some("a.b.c")));
        assert_eq!(bearer_token(&headers(&["bEaReR a.b.c"]), 100), Ok(Some("a.b.c")));
    }

    #[test]
    fn no_header_or_another_scheme_is_absent() {
        assert_eq!(bearer_token(&headers(&[]), 100), Ok(None));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwdw=="]), 100), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearerx a.b.c"]), 100), Ok(None));
    }

    #[test]
    fn two_headers_are_an_invalid_request() {
        let two = headers(&["Bearer a.b.c", "Bearer d.e.f"]);
        assert_eq!(
            bearer_token(&two, 100),
            Err(AuthError::MultipleAuthorizationHeaders)
        );
    }

    #[test]
    fn empty_or_non_token68_tokens_are_malformed() {
        for v in [
            "Bearer",
            "Bearer ",
            "Bearer  a.b.c",
            "Bearer a.b c",
            "Bearer a,b",
            "Bearer ===",
        ] {
            assert_eq!(
                bearer_token(&headers(&[v]), 100),
                Err(AuthError::MalformedAuthorizationHeader),
                "{v:?}"
            );
        }
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_str(v).expect("test header"));
        }
        map
    }

    #[test]
    fn the_cookie_source_reads_the_named_cookie_only() {
        let source = TokenSource::cookie("at");
        let uri = Uri::from_static("/");
        let headers = cookies(&["theme=dark; at=a.b.c", "other=1"]);
        assert_eq!(
            source.extract(&headers, &uri, 100),
            Ok(Some(Cow::Borrowed("a.b.c")))
        );
        assert_eq!(source.extract(&cookies(&["theme=dark"]), &uri, 100), Ok(None));
        let mut with_header = cookies(&[]);
        with_header.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        assert_eq!(
            source.extract(&with_header, &uri, 100),
            Ok(None),
            "cookie mode ignores the header"
        );
    }

    #[test]
    fn two_cookies_of_the_name_or_a_bad_value_are_refused() {
        let source = TokenSource::cookie("at");
        let uri = Uri::from_static("/");
        assert_eq!(
            source.extract(&cookies(&["at=a.b.c", "at=d.e.f"]), &uri, 100),
            Err(AuthError::MultipleTokens)
        );
        assert_eq!(
            source.extract(&cookies(&["at=\"a b\""]), &uri, 100),
            Err(AuthError::MalformedAuthorizationHeader)
        );
        assert_eq!(
            source.extract(&cookies(&["at=abcdef"]), &uri, 3),
            Err(AuthError::TokenTooLarge)
        );
    }

    #[test]
    fn a_custom_source_sees_headers_and_uri() {
        let source =
            TokenSource::custom(|_h, uri| Ok(uri.query().map(|q| q.trim_start_matches("t=").to_string())));
        let uri: Uri = "/x?t=a.b.c".parse().expect("uri");
        assert_eq!(
            source.extract(&HeaderMap::new(), &uri, 100),
            Ok(Some(Cow::Owned("a.b.c".into())))
        );
    }

    #[test]
    fn oversized_tokens_are_refused_by_length() {
        let long = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            bearer_token(&headers(&[&long]), 100),
            Err(AuthError::TokenTooLarge)
        );
    }
}
