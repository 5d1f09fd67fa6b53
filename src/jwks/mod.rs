//! Key sources: a JWKS fetched from a URL and kept fresh.

mod discovery;
mod remote;

pub(crate) use remote::SharedFetch;

pub use remote::{
    BuildError, DEFAULT_COOLDOWN, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REFRESH, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH, DEFAULT_REFRESH_INTERVAL, FetchError, JwksHealth, RemoteJwks,
    RemoteJwksBuilder,
};
