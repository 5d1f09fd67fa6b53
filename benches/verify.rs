//! One request through the layer versus a bare `jsonwebtoken::decode` of the same token
//! with the same key, for RS256 and ES256.
//!
//! Run with: cargo bench --bench verify

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tower::{ServiceExt, service_fn};
use tower_jwt_auth::{JwtAuthLayer, KeySet, Verifier};
use tower_layer::Layer;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pyjwt");
const ISSUER: &str = "https://issuer.test";

struct Case {
    name: &'static str,
    alg: Algorithm,
    token: String,
    jwks: Value,
    decoding: DecodingKey,
}

fn case(name: &'static str, alg: Algorithm) -> Case {
    let pem = std::fs::read(format!("{FIXTURES}/{name}.pem")).expect("pem");
    let all: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/jwks.json")).expect("jwks")).expect("json");
    let kid = format!("py-{name}");
    let jwk = all["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .cloned()
        .expect("jwk");
    let (encoding, decoding) = match alg {
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&pem).expect("rsa"),
            DecodingKey::from_rsa_components(jwk["n"].as_str().expect("n"), jwk["e"].as_str().expect("e"))
                .expect("rsa public"),
        ),
        _ => (
            EncodingKey::from_ec_pem(&pem).expect("ec"),
            DecodingKey::from_ec_components(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
                .expect("ec public"),
        ),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": ISSUER, "aud": "api", "sub": "bench", "iat": now, "exp": now + 3600,
                        "scope": "read write", "org": {"id": 42}});
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("token");
    Case {
        name,
        alg,
        token,
        jwks: json!({"keys": [jwk]}),
        decoding,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for case in [case("rs256", Algorithm::RS256), case("es256", Algorithm::ES256)] {
        let keys = KeySet::from_jwks(case.jwks.to_string().as_bytes()).expect("keys");
        let verifier = Verifier::builder()
            .issuer(ISSUER)
            .audience("api")
            .build()
            .expect("verifier");
        let layer = JwtAuthLayer::new(verifier, keys);
        let inner =
            service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
        let service = layer.layer(inner);
        let bearer = format!("Bearer {}", case.token);

        let mut group = c.benchmark_group(case.name);
        group.bench_function("layer_oneshot", |b| {
            b.to_async(&rt).iter_batched(
                || {
                    let req = Request::get("/")
                        .header(AUTHORIZATION, &bearer)
                        .body(())
                        .expect("request");
                    (service.clone(), req)
                },
                |(svc, req)| async move {
                    let res = svc.oneshot(req).await.expect("infallible");
                    assert_eq!(res.status(), 200);
                },
                BatchSize::SmallInput,
            )
        });
        let mut validation = Validation::new(case.alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&["api"]);
        group.bench_function("jsonwebtoken_decode", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Value>(&case.token, &case.decoding, &validation).expect("valid");
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
