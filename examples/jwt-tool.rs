//! jwt-tool: make a signing key, mint tokens with it, look inside tokens and verify them.
//!
//! Run with:
//!   cargo run --example jwt-tool -- keygen --alg ES256 --kid svc-1 --out keys
//!   cargo run --example jwt-tool -- mint --key keys/svc-1.pem --kid svc-1 --alg ES256 \
//!     --iss https://svc.example --aud api --sub svc --claim scope='"read write"'
//!   cargo run --example jwt-tool -- inspect "$TOKEN"
//!   cargo run --example jwt-tool -- verify "$TOKEN" --jwks keys/svc-1.jwks.json \
//!     --issuer https://svc.example --audience api
//!
//! A token argument of `-` is read from stdin. Errors go to stderr with exit code 1
//! (2 for a command line that does not parse).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use tower_jwt_auth::{Algorithm, KeySet, RemoteJwks, SigningKey, Verifier};

type Error = Box<dyn std::error::Error>;

/// Make signing keys, mint JWTs, inspect them and verify them against a JWKS.
#[derive(Parser, Debug)]
#[command(name = "jwt-tool", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a key pair: DIR/ID.pem (PKCS#8 private key, mode 0600) and
    /// DIR/ID.jwks.json (the public key as a JWKS, to publish). Never overwrites.
    Keygen(Keygen),
    /// Sign a token with a PKCS#8 PEM private key and print it.
    Mint(Mint),
    /// Print a token's header and claims WITHOUT checking its signature or claims.
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
    },
    /// Verify a token's signature and claims against a JWKS; print the claims and exit 0
    /// when it is valid, print the reason and exit 1 when not.
    Verify(Verify),
}

#[derive(Args, Debug)]
struct Keygen {
    /// Signature algorithm: RS256, RS384, RS512, PS256, PS384, PS512 (RSA 2048),
    /// ES256 (P-256), ES384 (P-384) or EdDSA (Ed25519).
    #[arg(long, value_parser = signing_alg)]
    alg: Algorithm,
    /// Key id: the `kid` of the JWK and of every token, and the file name
    /// (letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    kid: String,
    /// Directory to write the two files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct Mint {
    /// The PKCS#8 PEM private key (as written by `keygen`).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Key id to put in the token header; must match the published JWK.
    #[arg(long)]
    kid: String,
    /// Signature algorithm; must fit the key.
    #[arg(long, value_parser = signing_alg)]
    alg: Algorithm,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`); repeat for several.
    #[arg(long)]
    aud: Vec<String>,
    /// Subject (`sub`).
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime in seconds: `exp` = now + TTL (`iat` = now).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    ttl: u64,
    /// Extra claim; the value is read as JSON when it parses (`n=5`, `a=[1,2]`,
    /// `s='"text"'`), else taken as a string. Applied last, so it can override any claim
    /// above (`exp=0` makes an expired token). Repeat for several.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = claim)]
    claims: Vec<(String, Value)>,
}

#[derive(Args, Debug)]
struct Verify {
    /// The token, or `-` to read it from stdin.
    token: String,
    /// The key set: a JWKS file, or an https URL (http only on loopback).
    #[arg(long, value_name = "FILE|URL")]
    jwks: String,
    /// Accepted issuer; `iss` must match one when given. Repeat for several.
    #[arg(long)]
    issuer: Vec<String>,
    /// Accepted audience; `aud` must match one when given. Repeat for several.
    #[arg(long)]
    audience: Vec<String>,
    /// Allowed algorithm; repeat for several. Default: every asymmetric algorithm.
    #[arg(long, value_parser = signing_alg)]
    algorithm: Vec<Algorithm>,
}

/// An asymmetric algorithm name (HMAC needs a shared secret, not a key pair or a JWKS).
fn signing_alg(name: &str) -> Result<Algorithm, String> {
    let names = || Algorithm::ASYMMETRIC.map(Algorithm::as_str).join(", ");
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("unknown algorithm {name:?} (one of {})", names()))?;
    if alg.is_symmetric() {
        return Err(format!("{alg} needs a shared secret; use one of {}", names()));
    }
    Ok(alg)
}

/// `KEY=VALUE`, the value as JSON when it parses, else as a string.
fn claim(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    if key.is_empty() {
        return Err(format!("empty claim name in {text:?}"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 with clap's message on a bad command line
    let code = run(
        cli,
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    ExitCode::from(code)
}

/// Runs one command and returns the exit code: 0 done (or token valid), 1 failed, with
/// the reason written to `err`.
pub(crate) async fn run(cli: Cli, stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Keygen(args) => keygen(args, out),
        Command::Mint(args) => mint(args, out),
        Command::Inspect { token } => inspect(&token, stdin, out),
        Command::Verify(args) => verify(args, stdin, out, err).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Nothing more to do when stderr itself is gone.
            let _ = writeln!(err, "jwt-tool: {e}");
            1
        }
    }
}

fn keygen(args: Keygen, out: &mut dyn Write) -> Result<(), Error> {
    let file_safe = !args.kid.starts_with('.')
        && args
            .kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !file_safe {
        return Err(format!(
            "kid {:?} cannot be a file name: use letters, digits, `.`, `_` and `-`, not first `.`",
            args.kid
        )
        .into());
    }
    let pem_path = args.out.join(format!("{}.pem", args.kid));
    let jwks_path = args.out.join(format!("{}.jwks.json", args.kid));
    for path in [&pem_path, &jwks_path] {
        if path.exists() {
            return Err(format!("{} already exists; not overwriting it", path.display()).into());
        }
    }
    let key = SigningKey::generate(args.alg, &args.kid)?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut jwks = serde_json::to_string_pretty(&SigningKey::jwks(&[&key]))?;
    jwks.push('\n');
    write_new(&pem_path, key.to_pem().as_bytes(), true)?;
    write_new(&jwks_path, jwks.as_bytes(), false)?;
    writeln!(out, "wrote {} (private key: keep it secret)", pem_path.display())?;
    writeln!(out, "wrote {} (public JWKS: publish it)", jwks_path.display())?;
    Ok(())
}

/// Writes a file that must not exist yet; a private one is readable by its owner only.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn mint(args: Mint, out: &mut dyn Write) -> Result<(), Error> {
    let pem = std::fs::read(&args.key).map_err(|e| format!("cannot read {}: {e}", args.key.display()))?;
    let key =
        SigningKey::from_pem(&pem, args.alg, args.kid).map_err(|e| format!("{}: {e}", args.key.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let exp = now.checked_add(args.ttl).ok_or("--ttl is too large")?;
    let mut claims = Map::new();
    if let Some(iss) = args.iss {
        claims.insert("iss".into(), iss.into());
    }
    if let Some(sub) = args.sub {
        claims.insert("sub".into(), sub.into());
    }
    match args.aud.len() {
        0 => {}
        1 => {
            claims.insert("aud".into(), args.aud[0].clone().into());
        }
        _ => {
            claims.insert("aud".into(), args.aud.into());
        }
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), exp.into());
    claims.extend(args.claims);
    writeln!(out, "{}", key.sign(&claims)?)?;
    Ok(())
}

/// The token argument, or stdin for `-`, without surrounding whitespace.
fn read_token(arg: &str, stdin: &mut dyn Read) -> Result<String, Error> {
    /// Far beyond any sane token; keeps a stray `cat /dev/zero` from eating memory.
    const MAX: u64 = 1 << 20;
    if arg != "-" {
        return Ok(arg.trim().to_string());
    }
    let mut text = String::new();
    stdin
        .take(MAX)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err("no token on stdin".into());
    }
    Ok(token.to_string())
}

fn inspect(token: &str, stdin: &mut dyn Read, out: &mut dyn Write) -> Result<(), Error> {
    let token = read_token(token, stdin)?;
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = segments[..] else {
        return Err(match segments.len() {
            5 => "this is an encrypted token (JWE); its claims cannot be read without the key".into(),
            n => format!("not a JWT: {n} segment(s), a signed token has 3").into(),
        });
    };
    let header = decode_json(header, "header")?;
    let claims = decode_json(payload, "claims")?;
    writeln!(
        out,
        "UNVERIFIED: the signature and claims were NOT checked; do not trust them."
    )?;
    writeln!(out, "Use `jwt-tool verify` to check them.")?;
    writeln!(
        out,
        "header (UNVERIFIED):\n{}",
        serde_json::to_string_pretty(&header)?
    )?;
    writeln!(
        out,
        "claims (UNVERIFIED):\n{}",
        serde_json::to_string_pretty(&claims)?
    )?;
    Ok(())
}

fn decode_json(segment: &str, what: &str) -> Result<Value, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|e| format!("the {what} segment is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the {what} segment is not JSON: {e}").into())
}

async fn verify(
    args: Verify,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let token = read_token(&args.token, stdin)?;
    let keys = load_keys(&args.jwks, err).await?;
    let mut builder = Verifier::builder();
    for issuer in args.issuer.iter() {
        builder = builder.issuer(issuer);
    }
    for audience in args.audience.iter() {
        builder = builder.audience(audience);
    }
    if !args.algorithm.is_empty() {
        builder = builder.algorithms(args.algorithm);
    }
    let verifier = builder.build()?;
    let verified = verifier
        .verify::<Value>(&token, &keys)
        .map_err(|e| format!("invalid token: {e} ({})", e.reason()))?;
    let t = &verified.token;
    write!(
        err,
        "valid: signature ({}, kid {}) and claims checked",
        t.alg,
        t.kid.as_deref().unwrap_or("<none>")
    )?;
    match (args.issuer.is_empty(), args.audience.is_empty()) {
        (true, true) => writeln!(err, "; iss and aud were NOT checked (no --issuer, --audience)")?,
        (true, false) => writeln!(err, "; iss was NOT checked (no --issuer)")?,
        (false, true) => writeln!(err, "; aud was NOT checked (no --audience)")?,
        (false, false) => writeln!(err)?,
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&verified.claims)?)?;
    Ok(())
}

/// A JWKS from a URL (fetched once) or a file; skipped keys are reported on `err`.
async fn load_keys(source: &str, err: &mut dyn Write) -> Result<std::sync::Arc<KeySet>, Error> {
    let keys = if source.starts_with("https://") || source.starts_with("http://") {
        let remote = RemoteJwks::builder(source).build().await?;
        remote.keys().ok_or_else(|| format!("{source}: no keys loaded"))?
    } else {
        let json = std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?;
        std::sync::Arc::new(KeySet::from_jwks(&json).map_err(|e| format!("{source}: {e}"))?)
    };
    for skipped in keys.skipped() {
        let kid = skipped.kid.as_deref().unwrap_or("<no kid>");
        writeln!(err, "warning: {source}: skipped key {kid}: {}", skipped.reason)?;
    }
    if keys.is_empty() {
        return Err(format!("{source}: no usable verification key").into());
    }
    Ok(keys)
}
