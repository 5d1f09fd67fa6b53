//! Counters for dashboards: kept in atomics for [`JwksHealth`](crate::JwksHealth) and,
//! with the `metrics` feature, emitted through the `metrics` facade for Prometheus & co.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::AuthError;

/// The counters of one key source.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fetches: AtomicU64,
    pub(crate) not_modified: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) unknown_kid_refetches: AtomicU64,
    pub(crate) rejected_kids: AtomicU64,
    pub(crate) tokens_accepted: AtomicU64,
    tokens_rejected: [AtomicU64; AuthError::REASONS.len()],
}

/// What happened to one fetch, for the `jwks_fetches_total{result}` counter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fetch {
    Ok,
    NotModified,
    Failed,
}

impl Counters {
    pub(crate) fn fetch(&self, url: &str, outcome: Fetch) {
        let (counter, label) = match outcome {
            Fetch::Ok => (&self.fetches, "ok"),
            Fetch::NotModified => (&self.not_modified, "not_modified"),
            Fetch::Failed => (&self.failures, "error"),
        };
        if !matches!(outcome, Fetch::Ok) {
            // `fetches` counts every attempt; the others count subsets of them.
            self.fetches.fetch_add(1, Ordering::Relaxed);
        }
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("jwks_fetches_total", "url" => url.to_string(), "result" => label).increment(1);
        let _ = (url, label);
    }

    /// A token named an unknown kid: `refetched` when it led to (or joined) a fetch.
    pub(crate) fn unknown_kid(&self, refetched: bool) {
        let (counter, label) = if refetched {
            (&self.unknown_kid_refetches, "refetch")
        } else {
            (&self.rejected_kids, "rejected")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("jwks_unknown_kid_total", "action" => label).increment(1);
        let _ = label;
    }

    /// Counts a judged token here and in the `metrics` facade.
    pub(crate) fn token(&self, result: Result<(), &AuthError>) {
        self.count_token(result);
        token_metric(result);
    }

    /// Counts a judged token here only (the facade is fed elsewhere).
    pub(crate) fn count_token(&self, result: Result<(), &AuthError>) {
        match result {
            Ok(()) => {
                self.tokens_accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.tokens_rejected[e.reason_index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Rejections by reason, the non-zero ones.
    pub(crate) fn rejected(&self) -> BTreeMap<&'static str, u64> {
        AuthError::REASONS
            .iter()
            .zip(&self.tokens_rejected)
            .map(|(reason, n)| (*reason, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// `jwt_tokens_total{result, reason}` for every token the middleware judged.
pub(crate) fn token_metric(result: Result<(), &AuthError>) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(()) => metrics::counter!("jwt_tokens_total", "result" => "accepted").increment(1),
        Err(e) => {
            metrics::counter!("jwt_tokens_total", "result" => "rejected", "reason" => e.reason()).increment(1)
        }
    }
    let _ = result;
}

/// The number of usable keys after a successful fetch.
pub(crate) fn keys_loaded(url: &str, keys: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("jwks_keys", "url" => url.to_string()).set(keys as f64);
    let _ = (url, keys);
}
