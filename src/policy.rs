//! Access-token policy beyond the registered claims: `typ`, lifetime, required claims
//! and scopes. Checked after the signature and the time and issuer/audience checks, so a
//! token that is not valid at all gets 401 before a valid one lacking scope gets 403.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::AuthError;

/// Which `typ` header values are accepted.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypRule {
    /// When not empty, `typ` must be one of these (e.g. `at+jwt`, RFC 9068).
    pub(crate) require: Vec<Box<str>>,
    /// `typ` must not be one of these (e.g. `at+jwt` where ID tokens are expected).
    pub(crate) reject: Vec<Box<str>>,
}

impl TypRule {
    /// RFC 7515 section 4.1.9: compared case-insensitively, `application/` may be left out.
    pub(crate) fn check(&self, typ: Option<&str>) -> Result<(), AuthError> {
        let typ = typ.map(normalize);
        let listed = |list: &[Box<str>]| {
            typ.as_ref()
                .is_some_and(|t| list.iter().any(|l| normalize(l) == *t))
        };
        if (!self.require.is_empty() && !listed(&self.require)) || listed(&self.reject) {
            return Err(AuthError::WrongType);
        }
        Ok(())
    }
}

fn normalize(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// A scope requirement: all of a set, or any one of a set.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum ScopeRule {
    AllOf(Vec<Box<str>>),
    AnyOf(Vec<Box<str>>),
}

impl fmt::Debug for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllOf(s) => f.debug_tuple("AllOf").field(s).finish(),
            Self::AnyOf(s) => f.debug_tuple("AnyOf").field(s).finish(),
        }
    }
}

impl ScopeRule {
    fn check(&self, granted: &Granted<'_>) -> Result<(), AuthError> {
        match self {
            Self::AllOf(needed) => {
                let missing: Vec<&str> = needed.iter().map(|s| &**s).filter(|s| !granted.has(s)).collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(AuthError::InsufficientScope(missing.join(" ")))
                }
            }
            Self::AnyOf(options) => {
                if options.iter().any(|s| granted.has(s)) {
                    Ok(())
                } else {
                    Err(AuthError::InsufficientScope(options.join(" ")))
                }
            }
        }
    }
}

/// The scopes a token grants: `scope` (RFC 8693/9068, space-delimited) and `scp`
/// (array, as Okta and others publish it; a space-delimited string is also read).
#[derive(Default)]
pub(crate) struct Granted<'a> {
    scopes: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeValue<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    List(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl<'a> Granted<'a> {
    pub(crate) fn read(scope: Option<&'a RawValue>, scp: Option<&'a RawValue>) -> Result<Self, AuthError> {
        let mut granted = Granted::default();
        for (raw, name) in [(scope, "scope"), (scp, "scp")] {
            let Some(raw) = raw else { continue };
            match serde_json::from_str::<ScopeValue<'a>>(raw.get()) {
                Ok(ScopeValue::Text(Cow::Borrowed(text))) => {
                    granted
                        .scopes
                        .extend(text.split(' ').filter(|s| !s.is_empty()).map(Cow::Borrowed));
                }
                Ok(ScopeValue::Text(Cow::Owned(text))) => granted.scopes.extend(
                    text.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(|s| Cow::Owned(s.to_string())),
                ),
                Ok(ScopeValue::List(list)) => granted.scopes.extend(list),
                Err(_) => return Err(AuthError::InvalidClaim(name)),
            }
        }
        Ok(granted)
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The checks of this module, configured on the verifier.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub(crate) typ: TypRule,
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`), in seconds.
    pub(crate) max_lifetime: Option<f64>,
    pub(crate) required_claims: Vec<Box<str>>,
    pub(crate) scopes: Vec<ScopeRule>,
}

impl Policy {
    pub(crate) fn check_lifetime(&self, exp: f64, iat: Option<f64>, now: f64) -> Result<(), AuthError> {
        match self.max_lifetime {
            Some(max) if exp - iat.unwrap_or(now) > max => Err(AuthError::LifetimeTooLong),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_required(&self, present: &[Cow<'_, str>]) -> Result<(), AuthError> {
        match self
            .required_claims
            .iter()
            .find(|name| !present.iter().any(|p| p == &***name))
        {
            Some(name) => Err(AuthError::MissingClaim(Cow::Owned(name.to_string()))),
            None => Ok(()),
        }
    }

    pub(crate) fn check_scopes(
        &self,
        scope: Option<&RawValue>,
        scp: Option<&RawValue>,
    ) -> Result<(), AuthError> {
        if self.scopes.is_empty() {
            return Ok(());
        }
        let granted = Granted::read(scope, scp)?;
        self.scopes.iter().try_for_each(|rule| rule.check(&granted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).expect("raw json")
    }

    fn rule_all(s: &[&str]) -> ScopeRule {
        ScopeRule::AllOf(s.iter().map(|s| (*s).into()).collect())
    }

    fn rule_any(s: &[&str]) -> ScopeRule {
        ScopeRule::AnyOf(s.iter().map(|s| (*s).into()).collect())
    }

    #[test]
    fn typ_is_compared_case_insensitively_with_or_without_application_prefix() {
        let rule = TypRule {
            require: vec!["at+jwt".into()],
            reject: vec![],
        };
        assert!(rule.check(Some("at+JWT")).is_ok());
        assert!(rule.check(Some("application/at+jwt")).is_ok());
        assert_eq!(rule.check(Some("JWT")), Err(AuthError::WrongType));
        assert_eq!(rule.check(None), Err(AuthError::WrongType));
        let reject = TypRule {
            require: vec![],
            reject: vec!["at+jwt".into()],
        };
        assert!(reject.check(None).is_ok());
        assert!(reject.check(Some("JWT")).is_ok());
        assert_eq!(
            reject.check(Some("Application/AT+JWT")),
            Err(AuthError::WrongType)
        );
    }

    #[test]
    fn scopes_are_read_from_scope_strings_and_scp_arrays() {
        let scope = raw(r#""read  write""#);
        let scp = raw(r#"["admin"]"#);
        let granted = Granted::read(Some(&scope), Some(&scp)).expect("granted");
        assert!(granted.has("read") && granted.has("write") && granted.has("admin"));
        assert!(!granted.has(""));
        let bad = raw("5");
        assert_eq!(
            Granted::read(Some(&bad), None).err(),
            Some(AuthError::InvalidClaim("scope"))
        );
    }

    #[test]
    fn all_of_names_the_missing_scopes_and_any_of_the_alternatives() {
        let scope = raw(r#""read""#);
        let granted = Granted::read(Some(&scope), None).expect("granted");
        assert_eq!(
            rule_all(&["read", "write", "admin"]).check(&granted),
            Err(AuthError::InsufficientScope("write admin".into()))
        );
        assert!(rule_any(&["admin", "read"]).check(&granted).is_ok());
        assert_eq!(
            rule_any(&["admin", "ops"]).check(&granted),
            Err(AuthError::InsufficientScope("admin ops".into()))
        );
    }

    #[test]
    fn lifetime_counts_from_iat_or_from_now() {
        let policy = Policy {
            max_lifetime: Some(300.0),
            ..Policy::default()
        };
        assert!(policy.check_lifetime(1300.0, Some(1000.0), 1100.0).is_ok());
        assert_eq!(
            policy.check_lifetime(1301.0, Some(1000.0), 1100.0),
            Err(AuthError::LifetimeTooLong)
        );
        assert!(policy.check_lifetime(1400.0, None, 1100.0).is_ok());
        assert_eq!(
            policy.check_lifetime(1401.0, None, 1100.0),
            Err(AuthError::LifetimeTooLong)
        );
    }
}
