//! A real OpenID Provider for the integration tests: panva's `oidc-provider`, pinned in
//! `tests/oidc/package.json`, run as `node tests/oidc/provider.mjs` on 127.0.0.1 with an
//! ephemeral port. It signs RFC 9068 access tokens (`typ: at+jwt`) with RS256, PS256, ES256
//! or EdDSA, one resource indicator (= token audience) per algorithm, for a
//! client-credentials client. Needs `npm ci --prefix tests/oidc` first.
//!
//! The provider is an OS process, not a task, so one [`OidcProvider::shared`] instance can
//! serve every test of a binary whatever runtime each test runs on. It exits when its
//! standard input closes, that is when the test process exits or dies, or when a started
//! (not shared) [`OidcProvider`] is dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// How long the provider may take to print its ready line (real time: a guard, not a test).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The signing algorithms the provider has a key and a resource for.
pub const OIDC_ALGS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

/// What `provider.mjs` prints on its one ready line.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderInfo {
    /// `http://127.0.0.1:<port>`, as in the discovery document and the tokens' `iss`.
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    /// Resource indicator per algorithm name (`"RS256"` -> `"urn:api:rs256"`): a token for
    /// that resource is signed with that algorithm and has it as `aud`.
    pub resources: BTreeMap<String, String>,
    /// The scopes the client may ask for (`read write admin`).
    pub scopes: Vec<String>,
}

/// A running `oidc-provider`; dropping it kills the process.
#[derive(Debug)]
pub struct OidcProvider {
    pub info: ProviderInfo,
    child: Mutex<Child>,
}

impl std::ops::Deref for OidcProvider {
    type Target = ProviderInfo;

    fn deref(&self) -> &ProviderInfo {
        &self.info
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("oidc")
}

impl OidcProvider {
    /// Starts a provider of its own, killed when the returned value is dropped. Panics
    /// with instructions when `tests/oidc/node_modules` is missing or node cannot run.
    pub async fn start() -> OidcProvider {
        match tokio::task::spawn_blocking(Self::start_blocking).await {
            Ok(Ok(provider)) => provider,
            Ok(Err(message)) => panic!("{message}"),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// One provider for the whole test binary, started by the first caller. It is never
    /// dropped: it exits when the test process does (its stdin closes).
    pub async fn shared() -> &'static OidcProvider {
        static SHARED: tokio::sync::OnceCell<OidcProvider> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Self::start).await
    }

    fn start_blocking() -> Result<OidcProvider, String> {
        let dir = oidc_dir();
        if !dir.join("node_modules").join("oidc-provider").is_dir() {
            return Err(format!(
                "{} is missing: run `npm ci --prefix tests/oidc` (installs the pinned oidc-provider) \
                 before these tests",
                dir.join("node_modules").display()
            ));
        }
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg("0")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not run `node tests/oidc/provider.mjs` (Node.js 20+ needed): {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");

        // A thread waits for the ready line, then keeps draining stdout (to stderr) so
        // the pipe never fills; the channel gives the wait a real-time limit.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut ready = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ProviderInfo>(&line) {
                    Ok(info) => {
                        ready = Some(info);
                        break;
                    }
                    Err(_) => eprintln!("oidc provider stdout: {line}"),
                }
            }
            let got_ready = ready.is_some();
            let _ = tx.send(ready);
            if got_ready {
                for line in lines.map_while(Result::ok) {
                    eprintln!("oidc provider stdout: {line}");
                }
            }
        });

        let failure = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(info)) => {
                return Ok(OidcProvider {
                    info,
                    child: Mutex::new(child),
                });
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it has exited (a kill cannot change a zombie's status).
                let _ = child.kill();
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                format!("exited before it was ready ({status}); its stderr is above")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                format!("printed no ready line within {READY_TIMEOUT:?}")
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("oidc-provider (node tests/oidc/provider.mjs) {failure}"))
    }

    /// The resource indicator, and so the audience, of tokens signed with `alg`.
    pub fn resource(&self, alg: &str) -> &str {
        self.resources.get(alg).unwrap_or_else(|| {
            panic!(
                "the provider has no resource for {alg}; it has {:?}",
                self.resources
            )
        })
    }

    /// A real access token signed with `alg` ("RS256", "PS256", "ES256", "EdDSA") for the
    /// resource of that algorithm, with these scopes (space-separated; the provider grants
    /// those among `read write admin` and silently drops others).
    pub async fn token(&self, alg: &str, scopes: &str) -> String {
        let (status, body) = self.token_response(Some(self.resource(alg)), scopes).await;
        assert_eq!(status, StatusCode::OK, "token endpoint: {body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string()
    }

    /// Asks the token endpoint for a client_credentials token (`resource` and `scope`
    /// omitted when `None`/empty) and returns the status and JSON body, errors included.
    pub async fn token_response(&self, resource: Option<&str>, scopes: &str) -> (StatusCode, Value) {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(resource) = resource {
            form.append_pair("resource", resource);
        }
        if !scopes.is_empty() {
            form.append_pair("scope", scopes);
        }
        // RFC 6749 section 2.3.1: id and secret are form-encoded before Basic encoding.
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!("{}:{}", encode(&self.client_id), encode(&self.client_secret));
        // A client per call: a pooled connection would be tied to the runtime of the test
        // that opened it, and the shared provider outlives each test's runtime.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let res = client
            .post(&self.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("authorization", format!("Basic {}", STANDARD.encode(credentials)))
            .body(form.finish())
            .send()
            .await
            .expect("token endpoint request");
        let status = res.status();
        let bytes = res.bytes().await.expect("token endpoint body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }
}

/// The decoded JOSE header of a compact JWT (no verification).
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

/// The decoded payload of a compact JWT (no verification).
pub fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("JSON JWT part")
}
