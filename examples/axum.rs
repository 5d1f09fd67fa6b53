//! An axum API guarded by tower-jwt-auth.
//!
//! Run with:
//!   cargo run --features axum --example axum -- \
//!     --jwks-url https://idp.example/.well-known/jwks.json --issuer https://idp.example --audience api
//!
//! Then `curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/me`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use tower_jwt_auth::{Claims, JwtAuthLayer, RemoteJwks, Verifier};

/// An axum API whose routes need a valid bearer JWT.
#[derive(Parser, Debug)]
struct Args {
    /// Where the identity provider publishes its keys (https, or http on loopback).
    #[arg(long)]
    jwks_url: String,
    /// Accepted `iss` (required in tokens when given).
    #[arg(long)]
    issuer: Option<String>,
    /// Accepted `aud` (required in tokens when given).
    #[arg(long)]
    audience: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

/// `GET /me` answers with the caller's subject; `GET /health` is open.
fn app(auth: JwtAuthLayer) -> Router {
    async fn me(Claims(claims): Claims) -> String {
        format!(
            "hello {}\n",
            claims.get("sub").and_then(|s| s.as_str()).unwrap_or("<no sub>")
        )
    }
    Router::new()
        .route("/me", get(me))
        // route_layer: authentication after routing, so unknown paths stay 404.
        .route_layer(auth)
        .route("/health", get(|| async { "ok\n" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,tower_jwt_auth=debug")
        .init();
    let args = Args::parse();
    let mut verifier = Verifier::builder();
    if let Some(issuer) = args.issuer {
        verifier = verifier.issuer(issuer);
    }
    if let Some(audience) = args.audience {
        verifier = verifier.audience(audience);
    }
    let jwks = RemoteJwks::builder(&args.jwks_url).build().await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(JwtAuthLayer::new(verifier.build()?, jwks))).await?;
    Ok(())
}
