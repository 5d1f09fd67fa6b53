//! Picks jsonwebtoken's crypto provider, so users never meet its "no provider" panic.

use std::sync::Once;

/// Installs the provider of the enabled backend unless the process already has one.
///
/// jsonwebtoken 12 panics on first use when it cannot tell which backend to use (for
/// instance when both backend features are on through feature unification). Called
/// from every constructor that leads to verification or signing.
pub(crate) fn ensure_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some() {
            return;
        }
        #[cfg(feature = "aws-lc-rs")]
        let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
        let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        #[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
        // Losing a race to another installer is fine: a provider is then in place.
        let _ = provider.install_default();
    });
}

/// SHA-256 of `data`, from the enabled backend; `None` only if the backend fails.
#[cfg(feature = "aws-lc-rs")]
pub(crate) fn sha256(data: &[u8]) -> Option<Vec<u8>> {
    Some(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
            .as_ref()
            .to_vec(),
    )
}

/// SHA-256 of `data`, from the enabled backend; `None` only if the backend fails.
#[cfg(not(feature = "aws-lc-rs"))]
pub(crate) fn sha256(data: &[u8]) -> Option<Vec<u8>> {
    ensure_provider();
    let provider = jsonwebtoken::crypto::CryptoProvider::try_get_default()?;
    (provider.key_utils.compute_digest)(data, jsonwebtoken::jwk::ThumbprintHash::SHA256).ok()
}

/// Fills `buf` from the operating system's CSPRNG, through the enabled backend.
#[cfg(feature = "aws-lc-rs")]
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    aws_lc_rs::rand::fill(buf).map_err(|_| "the system random number generator failed".to_string())
}

/// Fills `buf` from the operating system's CSPRNG, through the enabled backend.
#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buf).map_err(|e| format!("the system random number generator failed: {e}"))
}

/// No backend: the crate does not build (see `compile_error!` in lib.rs).
#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
pub(crate) fn fill_random(_buf: &mut [u8]) -> Result<(), String> {
    Err("no crypto backend".to_string())
}
