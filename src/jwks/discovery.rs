//! OpenID Connect discovery (and its RFC 8414 sibling): issuer -> `jwks_uri`.

use serde::Deserialize;

use super::remote::{check_url, describe, read_capped};
use crate::FetchError;
use crate::verify::ConfigError;

/// Where an issuer's metadata is published, and what it must say about itself.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    /// The issuer exactly as configured: the document's `issuer` must equal it.
    issuer: String,
    /// `{issuer}/.well-known/openid-configuration`, then the RFC 8414 form.
    documents: [reqwest::Url; 2],
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: Option<String>,
}

impl Discovery {
    pub(crate) fn new(issuer: &str) -> Result<Self, ConfigError> {
        let base = check_url(issuer)?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ConfigError::Url(format!(
                "{issuer}: an issuer has no query or fragment"
            )));
        }
        let path = base.path().trim_end_matches('/');
        let mut oidc = base.clone();
        oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
        // RFC 8414 section 3.1: the well-known segment goes before the issuer's path.
        let mut oauth = base.clone();
        oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        Ok(Self {
            issuer: issuer.to_string(),
            documents: [oidc, oauth],
        })
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Reads the metadata (OpenID Connect first, RFC 8414 second) and returns its
    /// `jwks_uri`, which must itself be https (or loopback http).
    pub(crate) async fn jwks_uri(
        &self,
        client: &reqwest::Client,
        timeout: std::time::Duration,
        cap: usize,
    ) -> Result<reqwest::Url, FetchError> {
        let mut errors = Vec::new();
        for document in &self.documents {
            match self.read(client, document, timeout, cap).await {
                Ok(url) => return Ok(url),
                Err(e) => errors.push(e),
            }
        }
        Err(FetchError::new(format!(
            "discovery for issuer {} failed: {}",
            self.issuer,
            errors.join("; ")
        )))
    }

    async fn read(
        &self,
        client: &reqwest::Client,
        document: &reqwest::Url,
        timeout: std::time::Duration,
        cap: usize,
    ) -> Result<reqwest::Url, String> {
        let response = client
            .get(document.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("GET {document}: {}", describe(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("GET {document}: status {}", response.status()));
        }
        let body = read_capped(response, cap)
            .await
            .map_err(|e| format!("GET {document}: {e}"))?;
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {document}: not provider metadata: {e}"))?;
        if metadata.issuer != self.issuer {
            return Err(format!(
                "GET {document}: metadata names issuer {:?}, expected exactly {:?}",
                metadata.issuer, self.issuer
            ));
        }
        let jwks_uri = metadata
            .jwks_uri
            .ok_or_else(|| format!("GET {document}: no jwks_uri"))?;
        check_url(&jwks_uri).map_err(|e| format!("GET {document}: jwks_uri: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_oidc_and_rfc_8414() {
        let d = Discovery::new("https://idp.example").expect("discovery");
        assert_eq!(
            d.documents[0].as_str(),
            "https://idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            d.documents[1].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server"
        );
        let d = Discovery::new("https://idp.example/tenant/v2/").expect("discovery");
        assert_eq!(
            d.documents[0].as_str(),
            "https://idp.example/tenant/v2/.well-known/openid-configuration"
        );
        assert_eq!(
            d.documents[1].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server/tenant/v2"
        );
    }

    #[test]
    fn issuers_must_be_https_without_query() {
        assert!(Discovery::new("http://idp.example").is_err());
        assert!(Discovery::new("https://idp.example?x=1").is_err());
        assert!(Discovery::new("http://127.0.0.1:8080").is_ok());
    }
}
