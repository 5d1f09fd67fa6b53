//! Where the token comes from: the `Authorization: Bearer` header.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::AuthError;

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

    #[test]
    fn oversized_tokens_are_refused_by_length() {
        let long = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            bearer_token(&headers(&[&long]), 100),
            Err(AuthError::TokenTooLarge)
        );
    }
}
