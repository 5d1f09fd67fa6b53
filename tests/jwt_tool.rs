//! `examples/jwt-tool.rs` end to end: its command line is parsed by its own clap `Cli`
//! and run by its own `run`, with stdin, stdout and stderr captured, against real files
//! and a real loopback JWKS server. The example is compiled into this test as a module,
//! so the test needs no prebuilt binary and no nested cargo.

#[allow(dead_code)]
#[path = "../examples/jwt-tool.rs"]
mod jwt_tool;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use serde_json::{Value, json};
use tower_jwt_auth::{Algorithm, KeySet, SigningKey};

/// What one run of the tool did.
struct Outcome {
    code: u8,
    out: String,
    err: String,
}

async fn tool(args: &[&str]) -> Outcome {
    tool_with_stdin(args, "").await
}

async fn tool_with_stdin(args: &[&str], stdin: &str) -> Outcome {
    let cli = jwt_tool::Cli::try_parse_from(std::iter::once("jwt-tool").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = jwt_tool::run(cli, &mut stdin.as_bytes(), &mut out, &mut err).await;
    Outcome {
        code,
        out: String::from_utf8(out).expect("utf-8 stdout"),
        err: String::from_utf8(err).expect("utf-8 stderr"),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("jwt-tool-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs keygen into `dir`; returns the paths of the PEM and the JWKS.
async fn keygen(dir: &TempDir, alg: &str, kid: &str) -> (String, String) {
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let run = tool(&["keygen", "--alg", alg, "--kid", kid, "--out", out_dir]).await;
    assert_eq!(run.code, 0, "keygen {alg}: {}", run.err);
    (
        dir.file(&format!("{kid}.pem")),
        dir.file(&format!("{kid}.jwks.json")),
    )
}

/// Mints a token with issuer `https://svc.test`, audience `api` and subject `svc`.
async fn mint(pem: &str, kid: &str, alg: &str, extra: &[&str]) -> String {
    let mut args = vec!["mint", "--key", pem, "--kid", kid, "--alg", alg];
    args.extend(["--iss", "https://svc.test", "--aud", "api", "--sub", "svc"]);
    args.extend(extra);
    let run = tool(&args).await;
    assert_eq!(run.code, 0, "mint: {}", run.err);
    run.out.trim().to_string()
}

#[tokio::test]
async fn keygen_writes_a_private_pem_and_a_public_jwks_for_every_algorithm() {
    for (alg, kty) in [
        ("RS256", "RSA"),
        ("PS256", "RSA"),
        ("ES256", "EC"),
        ("ES384", "EC"),
        ("EdDSA", "OKP"),
    ] {
        let dir = TempDir::new();
        let kid = format!("{alg}-key");
        let (pem_path, jwks_path) = keygen(&dir, alg, &kid).await;

        let jwks: Value =
            serde_json::from_slice(&std::fs::read(&jwks_path).expect("jwks file")).expect("json");
        assert_eq!(jwks["keys"][0]["kty"], kty);
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "public JWKS holds no private member"
        );
        let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).expect("key set");
        assert_eq!(keys.kids().collect::<Vec<_>>(), [kid.as_str()], "{alg}");
        assert!(keys.skipped().is_empty(), "{:?}", keys.skipped());

        let pem = std::fs::read(&pem_path).expect("pem file");
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let alg: Algorithm = alg.parse().expect("alg");
        let key = SigningKey::from_pem(&pem, alg, kid.as_str()).expect("the PEM loads");
        assert_eq!(key.public_jwk(), jwks["keys"][0]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pem_path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{alg}: private key mode {mode:o}");
        }
    }
}

#[tokio::test]
async fn keygen_never_overwrites_a_key() {
    let dir = TempDir::new();
    let (pem_path, _) = keygen(&dir, "EdDSA", "k1").await;
    let before = std::fs::read(&pem_path).expect("pem");
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let run = tool(&["keygen", "--alg", "EdDSA", "--kid", "k1", "--out", out_dir]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("already exists"), "{}", run.err);
    assert_eq!(std::fs::read(&pem_path).expect("pem"), before);
}

#[tokio::test]
async fn keygen_refuses_a_kid_that_is_not_a_plain_file_name() {
    let dir = TempDir::new();
    let out_dir = dir.path().to_str().expect("utf-8 path");
    for kid in ["../escape", "a/b", ".hidden", ""] {
        let run = tool(&["keygen", "--alg", "EdDSA", "--kid", kid, "--out", out_dir]).await;
        assert_eq!(run.code, 1, "{kid:?}");
    }
}

#[tokio::test]
async fn a_minted_token_verifies_against_the_keygen_jwks() {
    for alg in ["RS256", "ES256", "EdDSA"] {
        let dir = TempDir::new();
        let (pem, jwks) = keygen(&dir, alg, "svc-1").await;
        let token = mint(
            &pem,
            "svc-1",
            alg,
            &["--claim", "scope=read write", "--claim", "n=5"],
        )
        .await;
        let run = tool(&[
            "verify",
            &token,
            "--jwks",
            &jwks,
            "--issuer",
            "https://svc.test",
            "--audience",
            "api",
        ])
        .await;
        assert_eq!(run.code, 0, "{alg}: {}", run.err);
        let claims: Value = serde_json::from_str(&run.out).expect("claims JSON on stdout");
        assert_eq!(claims["sub"], "svc");
        assert_eq!(claims["aud"], "api");
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["n"], 5);
        let (iat, exp) = (
            claims["iat"].as_u64().expect("iat"),
            claims["exp"].as_u64().expect("exp"),
        );
        assert_eq!(exp - iat, 300, "default ttl");
    }
}

#[tokio::test]
async fn verify_with_the_wrong_audience_exits_1_and_names_the_reason() {
    let dir = TempDir::new();
    let (pem, jwks) = keygen(&dir, "ES256", "k1").await;
    let token = mint(&pem, "k1", "ES256", &[]).await;
    let run = tool(&["verify", &token, "--jwks", &jwks, "--audience", "billing"]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("audience not accepted"), "{}", run.err);
    assert!(run.out.is_empty(), "no claims printed for an invalid token");
}

#[tokio::test]
async fn an_expired_token_fails_verify() {
    let dir = TempDir::new();
    let (pem, jwks) = keygen(&dir, "EdDSA", "k1").await;
    let token = mint(&pem, "k1", "EdDSA", &["--claim", "exp=1000"]).await;
    let run = tool(&["verify", &token, "--jwks", &jwks]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("expired"), "{}", run.err);
}

#[tokio::test]
async fn a_tampered_token_fails_verify() {
    let dir = TempDir::new();
    let (pem, jwks) = keygen(&dir, "ES256", "k1").await;
    let token = mint(&pem, "k1", "ES256", &[]).await;
    let [header, payload, signature] = token.split('.').collect::<Vec<_>>()[..] else {
        panic!("three segments");
    };
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    claims["sub"] = json!("admin");
    let forged = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let run = tool(&["verify", &forged, "--jwks", &jwks]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("invalid signature"), "{}", run.err);
}

#[tokio::test]
async fn inspect_prints_header_and_claims_marked_unverified() {
    let dir = TempDir::new();
    let (pem, _) = keygen(&dir, "EdDSA", "k1").await;
    let token = mint(&pem, "k1", "EdDSA", &["--aud", "other"]).await;
    let run = tool(&["inspect", &token]).await;
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(run.out.starts_with("UNVERIFIED"), "{}", run.out);
    assert!(run.out.contains("\"kid\": \"k1\""), "{}", run.out);
    assert!(run.out.contains("\"sub\": \"svc\""), "{}", run.out);
    assert!(
        run.out.contains("\"other\""),
        "several --aud make an array: {}",
        run.out
    );
    assert!(
        !run.out.to_lowercase().contains("valid:"),
        "inspect never claims validity"
    );
}

#[tokio::test]
async fn inspect_refuses_what_is_not_a_jwt() {
    for bad in ["abc", "a.b", "!!.!!.!!", "e30.bm90IGpzb24.sig", "a.b.c.d.e"] {
        let run = tool(&["inspect", bad]).await;
        assert_eq!(run.code, 1, "{bad}");
        assert!(run.err.starts_with("jwt-tool: "), "{bad}: {}", run.err);
        assert!(run.out.is_empty(), "{bad}: {}", run.out);
    }
}

#[tokio::test]
async fn a_token_of_dash_is_read_from_stdin() {
    let dir = TempDir::new();
    let (pem, jwks) = keygen(&dir, "EdDSA", "k1").await;
    let token = mint(&pem, "k1", "EdDSA", &[]).await;
    let run = tool_with_stdin(&["verify", "-", "--jwks", &jwks], &format!("{token}\n")).await;
    assert_eq!(run.code, 0, "{}", run.err);
    let run = tool_with_stdin(&["inspect", "-"], &token).await;
    assert_eq!(run.code, 0, "{}", run.err);
    let run = tool_with_stdin(&["inspect", "-"], "").await;
    assert_eq!(run.code, 1);
}

#[tokio::test]
async fn verify_fetches_a_jwks_url_on_loopback() {
    let dir = TempDir::new();
    let (pem, jwks_path) = keygen(&dir, "ES384", "k1").await;
    let token = mint(&pem, "k1", "ES384", &[]).await;
    let jwks: Value = serde_json::from_slice(&std::fs::read(jwks_path).expect("jwks")).expect("json");
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{addr}/jwks.json");
    let run = tool(&["verify", &token, "--jwks", &url, "--audience", "api"]).await;
    assert_eq!(run.code, 0, "{}", run.err);
    let missing = format!("http://{addr}/missing.json");
    let run = tool(&["verify", &token, "--jwks", &missing]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("404"), "{}", run.err);
    server.abort();
}

#[tokio::test]
async fn mint_with_a_key_of_another_type_fails_with_a_message() {
    let dir = TempDir::new();
    let (pem, _) = keygen(&dir, "ES256", "k1").await;
    let run = tool(&["mint", "--key", &pem, "--kid", "k1", "--alg", "RS256"]).await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("needs an RSA key"), "{}", run.err);
    let run = tool(&[
        "mint",
        "--key",
        &dir.file("absent.pem"),
        "--kid",
        "k1",
        "--alg",
        "ES256",
    ])
    .await;
    assert_eq!(run.code, 1);
    assert!(run.err.contains("cannot read"), "{}", run.err);
}

#[test]
fn a_bad_command_line_is_a_usage_error_with_exit_code_2() {
    let bad: [&[&str]; 4] = [
        &["keygen", "--alg", "HS256", "--kid", "k", "--out", "d"],
        &["keygen", "--alg", "none", "--kid", "k", "--out", "d"],
        &[
            "mint",
            "--key",
            "k.pem",
            "--kid",
            "k",
            "--alg",
            "ES256",
            "--claim",
            "no-equals",
        ],
        &["verify", "token"],
    ];
    for args in bad {
        let err = jwt_tool::Cli::try_parse_from(std::iter::once("jwt-tool").chain(args.iter().copied()))
            .expect_err("usage error");
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}
