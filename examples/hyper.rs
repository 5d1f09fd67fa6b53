//! Plain hyper + tower, no axum: a service guarded by tower-jwt-auth.
//!
//! Run with:
//!   cargo run --example hyper -- --jwks-url https://idp.example/.well-known/jwks.json --audience api
//!
//! Then `curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3001/`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_jwt_auth::{Claims, JwtAuthLayer, RemoteJwks, Verifier};

/// A hyper server whose every request needs a valid bearer JWT.
#[derive(Parser, Debug)]
struct Args {
    /// Where the identity provider publishes its keys (https, or http on loopback).
    #[arg(long)]
    jwks_url: String,
    /// Accepted `aud` (required in tokens when given).
    #[arg(long)]
    audience: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
}

/// The handler: the layer has put the verified claims into the extensions.
async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let sub = req
        .extensions()
        .get::<Claims>()
        .and_then(|Claims(c)| c.get("sub"))
        .and_then(|s| s.as_str())
        .unwrap_or("<no sub>")
        .to_string();
    Ok(Response::new(Full::new(Bytes::from(format!("hello {sub}\n")))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut verifier = Verifier::builder();
    if let Some(audience) = args.audience {
        verifier = verifier.audience(audience);
    }
    let jwks = RemoteJwks::builder(&args.jwks_url).build().await?;
    let service = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(verifier.build()?, jwks))
        .service_fn(hello);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
