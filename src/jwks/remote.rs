//! `RemoteJwks`: a key set fetched over HTTP, cached, refreshed in the background, and
//! refetched (rate limited, coalesced) when a token names a kid we have not seen.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::discovery::Discovery;
use crate::AuthError;
use crate::keys::KeySet;
use crate::telemetry::{self, Counters, Fetch};
use crate::verify::ConfigError;

/// Refresh interval when the provider sends no cache headers (Nimbus uses 5 min).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Lower bound on a provider's `Cache-Control: max-age` (and what `no-cache` means).
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(60);
/// Upper bound on a provider's `Cache-Control: max-age`.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Minimum time between two fetches triggered by unknown kids.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// Overall limit on one fetch, connect to last byte.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted, enforced while reading.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 1024 * 1024;
/// How long the last good set is served while the provider cannot be reached.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Longest duration any setting accepts; larger ones would overflow deadlines.
const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest kid that is looked up at the provider or remembered (memory stays bounded).
const MAX_REMEMBERED_KID: usize = 256;
/// How many unknown kids are remembered at once (bounded so a flood cannot grow it).
const UNKNOWN_KID_CAPACITY: u64 = 10_000;

/// Why fetching the key set failed (unreachable, timeout, status, size, not a key set),
/// naming the URL. Every request waiting on the same fetch gets a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(Arc<str>);

impl FetchError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(Arc::from(msg.into()))
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// A JWKS fetched from a URL and kept fresh.
///
/// Cheap to clone; clones share one cache. The background refresher stops when the last
/// clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_jwt_auth::RemoteJwks;
/// let jwks = RemoteJwks::builder("https://issuer.example/.well-known/jwks.json")
///     .build()
///     .await?;
/// assert!(jwks.health().ready);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Config {
    refresh_interval: Duration,
    min_refresh: Duration,
    max_refresh: Duration,
    cooldown: Duration,
    timeout: Duration,
    max_response_size: usize,
    max_stale: Duration,
}

struct Inner {
    /// The JWKS URL: configured, or found by discovery (and followed when it moves).
    jwks_url: ArcSwapOption<reqwest::Url>,
    discovery: Option<Discovery>,
    client: reqwest::Client,
    config: Config,
    /// The last good set; read without locks on every request.
    current: ArcSwapOption<Loaded>,
    state: Mutex<FetchState>,
    /// Kids that a fetch did not find, with when: rejected at once until the cooldown
    /// has passed. moka bounds the memory; the tokio instant keeps time testable.
    unknown_kids: moka::sync::Cache<Box<str>, Instant>,
    counters: Counters,
}

struct Loaded {
    keys: Arc<KeySet>,
    /// When the set was last confirmed by the provider (200 or 304).
    confirmed: Instant,
}

#[derive(Default)]
struct FetchState {
    in_flight: Option<(u64, SharedFetch)>,
    generation: u64,
    last_attempt: Option<Instant>,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    last_error: Option<FetchError>,
    /// How long the provider said the current set stays fresh (clamped).
    ttl: Option<Duration>,
    /// Not before this, said the provider (`Retry-After` on a 429 or 503).
    retry_after: Option<Instant>,
}

/// A fetch under way that requests can wait on together.
pub(crate) type SharedFetch = Shared<BoxFuture<'static, Result<(), FetchError>>>;

/// A snapshot of a [`RemoteJwks`]'s state, for readiness probes and dashboards.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JwksHealth {
    /// Keys are loaded and not older than `max_stale`.
    pub ready: bool,
    /// Usable keys in the current set.
    pub keys: usize,
    /// Time since the provider last confirmed the set.
    pub age: Option<Duration>,
    /// The error of the last failed fetch, cleared by a successful one.
    pub last_error: Option<String>,
    /// Fetches attempted.
    pub fetches: u64,
    /// Fetches answered 304 Not Modified.
    pub not_modified: u64,
    /// Fetches that failed.
    pub failures: u64,
    /// Fetches triggered by a token with an unknown kid.
    pub unknown_kid_refetches: u64,
    /// Tokens whose kid was rejected without a fetch (cooldown or remembered as unknown).
    pub rejected_kids: u64,
    /// Tokens accepted by layers using this key source.
    pub tokens_accepted: u64,
    /// Tokens rejected by layers using this key source, by [`AuthError::reason`].
    pub tokens_rejected: BTreeMap<&'static str, u64>,
}

/// Builds a [`RemoteJwks`].
#[derive(Debug)]
#[must_use]
pub struct RemoteJwksBuilder {
    target: Target,
    client: Option<reqwest::Client>,
    config: Config,
}

impl RemoteJwks {
    /// A builder for the key set at `url` (`https`, or `http` on loopback only).
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        Self::with_target(Target::Jwks(url.into()))
    }

    /// A builder for the key set of an OpenID Provider, found through discovery:
    /// `{issuer}/.well-known/openid-configuration` (then the RFC 8414 form). The
    /// metadata's `issuer` must equal `issuer` exactly, and discovery is repeated on
    /// every refresh so a moved `jwks_uri` is followed.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_jwt_auth::RemoteJwks;
    /// let jwks = RemoteJwks::discover("https://accounts.example").build().await?;
    /// # let _ = jwks; Ok(()) }
    /// ```
    pub fn discover(issuer: impl Into<String>) -> RemoteJwksBuilder {
        Self::with_target(Target::Issuer(issuer.into()))
    }

    fn with_target(target: Target) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            target,
            client: None,
            config: Config {
                refresh_interval: DEFAULT_REFRESH_INTERVAL,
                min_refresh: DEFAULT_MIN_REFRESH,
                max_refresh: DEFAULT_MAX_REFRESH,
                cooldown: DEFAULT_COOLDOWN,
                timeout: DEFAULT_FETCH_TIMEOUT,
                max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
                max_stale: DEFAULT_MAX_STALE,
            },
        }
    }

    /// The URL the keys are fetched from; with discovery, the issuer until the first
    /// discovery succeeded.
    pub fn url(&self) -> String {
        self.inner.label()
    }

    /// The issuer this key set was discovered from, if it was.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.discovery.as_ref().map(Discovery::issuer)
    }

    /// The current key set, or `None` when none was ever loaded or it is older than
    /// `max_stale`. Lock-free.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        let loaded = self.inner.current.load_full()?;
        (loaded.confirmed.elapsed() <= self.inner.config.max_stale).then(|| loaded.keys.clone())
    }

    /// A snapshot of readiness, age, last error and counters.
    pub fn health(&self) -> JwksHealth {
        let inner = &self.inner;
        let loaded = inner.current.load();
        let c = &inner.counters;
        let last_error = inner.lock().last_error.as_ref().map(ToString::to_string);
        JwksHealth {
            ready: self.keys().is_some(),
            keys: loaded.as_ref().map_or(0, |l| l.keys.len()),
            age: loaded.as_ref().map(|l| l.confirmed.elapsed()),
            last_error,
            fetches: c.fetches.load(Ordering::Relaxed),
            not_modified: c.not_modified.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            unknown_kid_refetches: c.unknown_kid_refetches.load(Ordering::Relaxed),
            rejected_kids: c.rejected_kids.load(Ordering::Relaxed),
            tokens_accepted: c.tokens_accepted.load(Ordering::Relaxed),
            tokens_rejected: c.rejected(),
        }
    }

    /// Fetches now (or joins the fetch under way) and waits for it.
    pub async fn refresh(&self) -> Result<(), FetchError> {
        self.inner.fetch_shared(true).await
    }

    /// A fetch to wait on because the set may have changed for this token: its `kid` is
    /// unknown, or its key no longer verifies. Kids longer than any provider uses are
    /// never worth a fetch.
    ///
    /// `None` means "reject at once": the kid was already looked for during the
    /// cooldown, or the cooldown since the last attempt has not passed and no fetch is
    /// under way to join.
    pub(crate) fn refetch_for(&self, kid: Option<&str>) -> Option<SharedFetch> {
        let inner = &self.inner;
        let remembered = kid.is_some_and(|kid| {
            kid.len() > MAX_REMEMBERED_KID
                || inner
                    .unknown_kids
                    .get(kid)
                    .is_some_and(|since| since.elapsed() < inner.config.cooldown)
        });
        let fetch = if remembered {
            None
        } else {
            inner.start_or_join(false)
        };
        inner.counters.unknown_kid(fetch.is_some());
        fetch
    }

    /// A fetch to wait on because no keys are loaded; `None` when one may not start yet.
    pub(crate) fn fetch_for_empty(&self) -> Option<SharedFetch> {
        self.inner.start_or_join(false)
    }

    /// Remembers that a fresh set does not hold `kid`, until the cooldown has passed.
    pub(crate) fn remember_unknown(&self, kid: &str) {
        if kid.len() > MAX_REMEMBERED_KID {
            return;
        }
        self.inner.unknown_kids.insert(kid.into(), Instant::now());
    }

    /// Counts a token judged by a layer using this source.
    pub(crate) fn record_token(&self, result: Result<(), &AuthError>) {
        self.inner.counters.token(result);
    }

    /// Counts a token in this source's health only (for layers with several issuers,
    /// which feed the `metrics` facade once per token themselves).
    pub(crate) fn count_token(&self, result: Result<(), &AuthError>) {
        self.inner.counters.count_token(result);
    }

    fn spawn_refresher(&self, first_delay: Duration) {
        let weak = Arc::downgrade(&self.inner);
        // The deadline counts from now, not from when the task first runs.
        tokio::spawn(refresh_loop(weak, Instant::now() + first_delay));
    }
}

/// Refreshes ahead of expiry with jitter; after a failure retries with exponential
/// backoff capped at the refresh interval. Ends when the last `RemoteJwks` is dropped.
async fn refresh_loop(weak: Weak<Inner>, first: Instant) {
    tokio::time::sleep_until(first).await;
    let mut failures = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let delay = match inner.fetch_shared(true).await {
            Ok(()) => {
                failures = 0;
                inner.next_refresh()
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                inner.retry_delay(failures)
            }
        };
        drop(inner);
        tokio::time::sleep(delay).await;
    }
}

/// A random factor in [0, 1), for jitter (not for anything secret).
fn unit_random() -> f64 {
    let random = RandomState::new().hash_one(Instant::now());
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// `base` scaled by a random factor in [0.9, 1.1], so replicas do not fetch in lockstep.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.9 + 0.2 * unit_random())
}

impl Inner {
    /// How long the refresher waits after `failures` failed fetches in a row: from the
    /// cooldown, doubling up to the refresh interval, drawn from the upper half of that
    /// (replicas that failed together spread out), and never before the provider's
    /// `Retry-After`.
    fn retry_delay(&self, failures: u32) -> Duration {
        let c = &self.config;
        let base = c
            .cooldown
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(c.refresh_interval);
        let backoff = base.mul_f64(0.5 + 0.5 * unit_random());
        let asked = self
            .lock()
            .retry_after
            .map(|at| at.saturating_duration_since(Instant::now()));
        backoff.max(asked.unwrap_or_default())
    }

    /// When the background refresher fetches next: at 90 % of the set's freshness
    /// lifetime, +-10 %, so the refresh lands before expiry and replicas spread out.
    fn next_refresh(&self) -> Duration {
        let ttl = self.lock().ttl.unwrap_or(self.config.refresh_interval);
        jittered(ttl.mul_f64(0.9))
    }

    /// The freshness lifetime the provider asks for, clamped to the configured bounds:
    /// `max-age`, the minimum for `no-cache`/`no-store`, the interval without headers.
    fn freshness(&self, headers: &http::HeaderMap) -> Duration {
        use headers::{CacheControl, HeaderMapExt};
        let c = &self.config;
        let asked = match headers.typed_get::<CacheControl>() {
            Some(cc) if cc.no_store() || cc.no_cache() => c.min_refresh,
            Some(cc) => cc.max_age().unwrap_or(c.refresh_interval),
            None => c.refresh_interval,
        };
        asked.clamp(c.min_refresh, c.max_refresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        // A panic while holding this lock cannot leave the state inconsistent in a way
        // that matters (it holds only hints), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn fetch_shared(self: &Arc<Self>, force: bool) -> Result<(), FetchError> {
        match self.start_or_join(force) {
            Some(fetch) => fetch.await,
            None => Err(FetchError::new("refetch cooldown in effect")),
        }
    }

    /// Joins the fetch under way, or starts one on a spawned task when `force` is set or
    /// the cooldown since the last attempt has passed.
    fn start_or_join(self: &Arc<Self>, force: bool) -> Option<SharedFetch> {
        let mut state = self.lock();
        if let Some((_, fetch)) = &state.in_flight {
            return Some(fetch.clone());
        }
        let now = Instant::now();
        let cooling = state
            .last_attempt
            .is_some_and(|last| now.duration_since(last) < self.config.cooldown)
            || state.retry_after.is_some_and(|at| now < at);
        if cooling && !force {
            return None;
        }
        state.last_attempt = Some(now);
        state.generation += 1;
        let generation = state.generation;
        let guard = FetchGuard {
            inner: self.clone(),
            generation,
            done: false,
        };
        // Spawned, so that a request that gives up cannot cancel the fetch others wait on.
        let task = tokio::spawn(async move {
            let mut guard = guard;
            let result = guard.inner.fetch(force).await;
            guard.inner.finish(generation, &result);
            guard.done = true;
            result
        });
        let fetch = async move {
            task.await
                .unwrap_or_else(|e| Err(FetchError::new(format!("fetch task failed: {e}"))))
        }
        .boxed()
        .shared();
        state.in_flight = Some((generation, fetch.clone()));
        Some(fetch)
    }

    fn finish(&self, generation: u64, result: &Result<(), FetchError>) {
        let mut state = self.lock();
        if state.in_flight.as_ref().is_some_and(|(g, _)| *g == generation) {
            state.in_flight = None;
        }
        match result {
            Ok(()) => {
                state.last_error = None;
                state.retry_after = None;
            }
            Err(e) => {
                let url = self.label();
                self.counters.fetch(&url, Fetch::Failed);
                tracing::warn!(%url, error = %e, "JWKS fetch failed");
                state.last_error = Some(e.clone());
            }
        }
    }

    /// For logs and metric labels: the JWKS URL, or the issuer before discovery.
    fn label(&self) -> String {
        match (self.jwks_url.load().as_deref(), &self.discovery) {
            (Some(url), _) => url.to_string(),
            (None, Some(d)) => d.issuer().to_string(),
            (None, None) => String::new(),
        }
    }

    /// The JWKS URL to fetch now: with discovery, rediscovered (a failed discovery
    /// falls back to the last known URL, so a metadata hiccup is not a key outage).
    async fn current_url(&self, rediscover: bool) -> Result<Arc<reqwest::Url>, FetchError> {
        let known = self.jwks_url.load_full();
        let Some(discovery) = self.discovery.as_ref().filter(|_| rediscover || known.is_none()) else {
            return known.ok_or_else(|| FetchError::new("no JWKS URL"));
        };
        let c = &self.config;
        // Both metadata documents together get one fetch timeout.
        let lookup = discovery.jwks_uri(&self.client, c.timeout, c.max_response_size);
        let found = tokio::time::timeout(c.timeout, lookup).await.unwrap_or_else(|_| {
            Err(FetchError::new(format!(
                "discovery for issuer {} timed out",
                discovery.issuer()
            )))
        });
        match found {
            Ok(url) if known.as_deref() == Some(&url) => Ok(Arc::new(url)),
            Ok(url) => {
                if let Some(old) = &known {
                    tracing::info!(issuer = discovery.issuer(), from = %old, to = %url, "jwks_uri moved");
                    let mut state = self.lock();
                    state.etag = None;
                    state.last_modified = None;
                }
                let url = Arc::new(url);
                self.jwks_url.store(Some(url.clone()));
                Ok(url)
            }
            Err(e) => match known {
                Some(url) => {
                    tracing::warn!(issuer = discovery.issuer(), error = %e, "rediscovery failed; keeping jwks_uri");
                    Ok(url)
                }
                None => Err(e),
            },
        }
    }

    /// One fetch. `rediscover` (background refreshes) reads the provider metadata
    /// first; a request waiting on a fetch uses the known `jwks_uri`, so it waits for
    /// one request of at most the fetch timeout.
    async fn fetch(&self, rediscover: bool) -> Result<(), FetchError> {
        let url = self.current_url(rediscover).await?;
        let mut request = self.client.get((*url).clone()).timeout(self.config.timeout);
        let mut conditional = false;
        if self.current.load().is_some() {
            let state = self.lock();
            if let Some(etag) = &state.etag {
                request = request.header(IF_NONE_MATCH, etag.clone());
                conditional = true;
            }
            if let Some(date) = &state.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date.clone());
                conditional = true;
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::new(format!("GET {url}: {}", describe(&e))))?;
        match response.status() {
            // Only an answer to a conditional request: an endpoint that always says 304
            // must not keep a set fresh forever.
            StatusCode::NOT_MODIFIED if conditional => {
                self.counters.fetch(url.as_str(), Fetch::NotModified);
                let ttl = self.freshness(response.headers());
                self.confirm();
                self.lock().ttl = Some(ttl);
                Ok(())
            }
            StatusCode::OK => self.accept(&url, response).await,
            status => {
                self.note_retry_after(status, response.headers());
                Err(FetchError::new(format!("GET {url}: status {status}")))
            }
        }
    }

    /// Remembers a 429/503 `Retry-After` (delay-seconds form), clamped to
    /// [cooldown, max_refresh], so neither requests nor the refresher ask earlier.
    fn note_retry_after(&self, status: StatusCode, headers: &http::HeaderMap) {
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return;
        }
        let seconds = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(seconds) = seconds {
            let c = &self.config;
            let wait = Duration::from_secs(seconds).clamp(c.cooldown, c.max_refresh);
            self.lock().retry_after = Some(Instant::now() + wait);
        }
    }

    /// One line when the provider rotates: which kids came and went.
    fn log_change(&self, url: &reqwest::Url, keys: &KeySet) {
        let old = self.current.load();
        let old_kids: Vec<&str> = old.as_ref().map(|l| l.keys.kids().collect()).unwrap_or_default();
        let added: Vec<&str> = keys.kids().filter(|k| !old_kids.contains(k)).collect();
        let removed: Vec<&str> = old_kids
            .iter()
            .copied()
            .filter(|k| !keys.contains_kid(k))
            .collect();
        if added.is_empty() && removed.is_empty() {
            tracing::debug!(%url, keys = keys.len(), "JWKS unchanged");
        } else {
            tracing::info!(%url, keys = keys.len(), ?added, ?removed, "JWKS loaded");
        }
    }

    fn confirm(&self) {
        if let Some(loaded) = self.current.load_full() {
            self.current.store(Some(Arc::new(Loaded {
                keys: loaded.keys.clone(),
                confirmed: Instant::now(),
            })));
        }
    }

    async fn accept(&self, url: &reqwest::Url, response: reqwest::Response) -> Result<(), FetchError> {
        let etag = response.headers().get(ETAG).cloned();
        let last_modified = response.headers().get(LAST_MODIFIED).cloned();
        let ttl = self.freshness(response.headers());
        let body = read_capped(response, self.config.max_response_size)
            .await
            .map_err(|e| FetchError::new(format!("GET {url}: {e}")))?;
        let keys = KeySet::from_jwks(&body).map_err(|e| FetchError::new(format!("GET {url}: {e}")))?;
        if keys.is_empty() {
            // Replacing good keys with nothing would lock every caller out.
            let why: Vec<String> = keys
                .skipped()
                .iter()
                .take(3)
                .map(|k| format!("{}: {}", k.kid.as_deref().unwrap_or("<no kid>"), k.reason))
                .collect();
            return Err(FetchError::new(format!(
                "GET {url}: no usable signing keys (skipped {}{})",
                keys.skipped().len(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.join("; "))
                }
            )));
        }
        self.log_change(url, &keys);
        self.counters.fetch(url.as_str(), Fetch::Ok);
        telemetry::keys_loaded(url.as_str(), keys.len());
        self.current.store(Some(Arc::new(Loaded {
            keys: Arc::new(keys),
            confirmed: Instant::now(),
        })));
        self.unknown_kids.invalidate_all();
        let mut state = self.lock();
        state.etag = etag;
        state.last_modified = last_modified;
        state.ttl = Some(ttl);
        Ok(())
    }
}

/// Clears the in-flight fetch if its task ends without finishing (cancelled with its
/// runtime, or panicked), so the next request starts a fresh fetch instead of joining a
/// dead one forever.
struct FetchGuard {
    inner: Arc<Inner>,
    generation: u64,
    done: bool,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if !self.done {
            let error = Err(FetchError::new("fetch task ended before finishing"));
            self.inner.finish(self.generation, &error);
        }
    }
}

/// Reads the body, failing as soon as it grows past `cap`.
pub(crate) async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|len| len > cap as u64) {
        return Err(format!("response larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("response larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes, which carry the useful part ("connection refused").
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl RemoteJwksBuilder {
    /// Refresh interval when the provider sends no `Cache-Control: max-age`; also the
    /// cap of the retry backoff during an outage. Default 5 minutes.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_interval = interval;
        self
    }

    /// Lower bound for the provider's `max-age`, and the refresh interval when it says
    /// `no-cache` or `no-store`. Default 1 minute.
    pub fn min_refresh(mut self, min: Duration) -> Self {
        self.config.min_refresh = min;
        self
    }

    /// Upper bound for the provider's `max-age`. Default 24 hours.
    pub fn max_refresh(mut self, max: Duration) -> Self {
        self.config.max_refresh = max;
        self
    }

    /// Minimum time between fetches caused by unknown kids. Default 30 s.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// Overall time limit of one fetch. Default 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Largest JWKS document accepted. Default 1 MiB.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.config.max_response_size = bytes;
        self
    }

    /// How long the last good set is served while the provider is unreachable.
    /// Default 24 h; after that requests get 503.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.config.max_stale = max_stale;
        self
    }

    /// The HTTP client for every fetch. The default client follows no redirects and
    /// uses rustls; a custom client is used as configured.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Fetches the keys once and starts the background refresher; fails with a message
    /// naming the URL and the cause when the first fetch fails.
    pub async fn build(self) -> Result<RemoteJwks, BuildError> {
        let jwks = self.create().map_err(BuildError::Config)?;
        jwks.refresh().await.map_err(BuildError::Fetch)?;
        jwks.spawn_refresher(jwks.inner.next_refresh());
        Ok(jwks)
    }

    /// Starts without keys: requests get 503 until the first fetch succeeds. The
    /// refresher starts at once. Must be called within a tokio runtime.
    pub fn lazy(self) -> Result<RemoteJwks, ConfigError> {
        let jwks = self.create()?;
        jwks.spawn_refresher(Duration::ZERO);
        Ok(jwks)
    }

    fn create(self) -> Result<RemoteJwks, ConfigError> {
        let (jwks_url, discovery) = match &self.target {
            Target::Jwks(url) => (Some(Arc::new(check_url(url)?)), None),
            Target::Issuer(issuer) => (None, Some(Discovery::new(issuer)?)),
        };
        let c = &self.config;
        if c.refresh_interval.is_zero() || c.timeout.is_zero() || c.max_response_size == 0 {
            return Err(ConfigError::Invalid(
                "refresh interval, timeout and response size must be positive".into(),
            ));
        }
        let durations = [
            c.refresh_interval,
            c.min_refresh,
            c.max_refresh,
            c.cooldown,
            c.timeout,
            c.max_stale,
        ];
        if durations.iter().any(|d| *d > MAX_SETTING) {
            return Err(ConfigError::Invalid(
                "JWKS durations must be at most 365 days".into(),
            ));
        }
        if c.cooldown < Duration::from_secs(1) || c.max_stale.is_zero() {
            // A zero cooldown would let unknown kids hammer the provider.
            return Err(ConfigError::Invalid(
                "cooldown must be at least 1 s and max_stale positive".into(),
            ));
        }
        if c.min_refresh.is_zero() || c.min_refresh > c.max_refresh {
            return Err(ConfigError::Invalid(
                "min_refresh must be positive and at most max_refresh".into(),
            ));
        }
        crate::crypto::ensure_provider();
        let client = match self.client {
            Some(client) => client,
            None => default_client()?,
        };
        let unknown_kids = moka::sync::Cache::builder()
            .max_capacity(UNKNOWN_KID_CAPACITY)
            .time_to_live(self.config.cooldown.max(Duration::from_millis(1)))
            .build();
        Ok(RemoteJwks {
            inner: Arc::new(Inner {
                jwks_url: ArcSwapOption::new(jwks_url),
                discovery,
                client,
                config: self.config,
                current: ArcSwapOption::empty(),
                state: Mutex::new(FetchState::default()),
                unknown_kids,
                counters: Counters::default(),
            }),
        })
    }
}

fn default_client() -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tower-jwt-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Invalid(format!("HTTP client: {e}")))
}

/// What a builder was given: the JWKS URL itself, or an issuer to discover it from.
#[derive(Debug, Clone)]
enum Target {
    Jwks(String),
    Issuer(String),
}

/// `https`, or `http` to a loopback host (tests and sidecars).
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::Url(format!("{url}: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // They would show in errors, health, logs and metric labels. Pass credentials
        // through a custom client's default headers instead.
        return Err(ConfigError::Url(
            "credentials in the URL are not accepted; configure a client with default headers".into(),
        ));
    }
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(ConfigError::Url(format!(
            "{url}: must be https (plain http only to a loopback address)"
        ))),
    }
}

/// Why `RemoteJwksBuilder::build` failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// The first fetch failed.
    Fetch(FetchError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "JWKS configuration: {e}"),
            Self::Fetch(e) => write!(f, "initial JWKS fetch failed: {e}"),
        }
    }
}

/// The cause is part of the message already, so `source` is empty: error-chain
/// printers (anyhow, eyre) would show it twice otherwise.
impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let base = Duration::from_secs(100);
        let samples: Vec<f64> = (0..10_000).map(|_| jittered(base).as_secs_f64()).collect();
        let (min, max) = samples
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        assert!(min >= 90.0 && max <= 110.0, "{min}..{max}");
        assert!(min < 91.0 && max > 109.0, "uses the whole range: {min}..{max}");
    }

    #[tokio::test]
    async fn settings_that_would_hammer_the_provider_or_overflow_are_refused() {
        let url = "http://127.0.0.1:1/jwks";
        let refused = |b: RemoteJwksBuilder| b.lazy().expect_err("refused").to_string();
        assert!(refused(RemoteJwks::builder(url).cooldown(Duration::ZERO)).contains("cooldown"));
        assert!(refused(RemoteJwks::builder(url).max_stale(Duration::ZERO)).contains("max_stale"));
        assert!(refused(RemoteJwks::builder(url).max_refresh(Duration::MAX)).contains("365 days"));
        assert!(refused(RemoteJwks::builder(url).timeout(Duration::ZERO)).contains("timeout"));
        assert!(RemoteJwks::builder(url).lazy().is_ok());
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_accepted() {
        assert!(check_url("https://idp.example/jwks").is_ok());
        assert!(check_url("http://127.0.0.2:8080/jwks").is_ok());
        assert!(check_url("http://idp.example/jwks").is_err());
        assert!(check_url("http://192.168.1.1/jwks").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
    }
}
