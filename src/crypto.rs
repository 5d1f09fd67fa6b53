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
