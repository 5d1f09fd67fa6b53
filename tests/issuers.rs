//! Identity providers as deployed: OpenID Connect discovery, several issuers in one
//! layer, access-token policy, token sources and custom error responses.
#![cfg(feature = "axum")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use tower_jwt_auth::{Issuer, JwtAuthLayer, KeySet, RemoteJwks, TokenSource, Verifier};

/// A provider metadata endpoint on loopback whose document a test can change.
#[derive(Clone)]
struct MetadataServer {
    addr: std::net::SocketAddr,
    doc: Arc<Mutex<Option<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl MetadataServer {
    async fn start(path: &'static str) -> MetadataServer {
        let state = MetadataServer {
            addr: "127.0.0.1:0".parse().expect("addr"),
            doc: Arc::new(Mutex::new(None)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        async fn serve_doc(State(s): State<MetadataServer>) -> Result<axum::Json<Value>, StatusCode> {
            s.hits.fetch_add(1, Ordering::SeqCst);
            s.doc
                .lock()
                .expect("doc")
                .clone()
                .map(axum::Json)
                .ok_or(StatusCode::NOT_FOUND)
        }
        let app = Router::new()
            .route(path, get(serve_doc))
            .with_state(state.clone());
        let addr = serve(app).await;
        MetadataServer { addr, ..state }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn publish(&self, issuer: &str, jwks_uri: &str) {
        *self.doc.lock().expect("doc") = Some(json!({"issuer": issuer, "jwks_uri": jwks_uri}));
    }
}

fn claims_from(iss: &str) -> Value {
    let mut claims = good_claims();
    claims["iss"] = json!(iss);
    claims
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_tokens_verify() {
    let k = key("es256");
    let jwks = JwksServer::start(&jwks_of(&[&k])).await;
    let meta = MetadataServer::start("/.well-known/openid-configuration").await;
    meta.publish(&meta.issuer(), &jwks.url());
    let remote = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect("discovered");
    assert_eq!(remote.url(), jwks.url());
    assert_eq!(remote.issuer(), Some(meta.issuer().as_str()));
    let verifier = Verifier::builder()
        .issuer(meta.issuer())
        .audience(AUDIENCE)
        .build()
        .expect("v");
    let app = guarded_app(JwtAuthLayer::new(verifier, remote));
    assert_eq!(
        call(&app, &k.sign(&claims_from(&meta.issuer()))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rfc_8414_metadata_is_the_fallback() {
    let k = key("es256");
    let jwks = JwksServer::start(&jwks_of(&[&k])).await;
    let meta = MetadataServer::start("/.well-known/oauth-authorization-server").await;
    meta.publish(&meta.issuer(), &jwks.url());
    let remote = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect("discovered");
    assert_eq!(remote.url(), jwks.url());
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused() {
    let jwks = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let meta = MetadataServer::start("/.well-known/openid-configuration").await;
    for claimed in [
        format!("{}/", meta.issuer()),
        "https://evil.test".to_string(),
        meta.issuer().to_uppercase(),
    ] {
        meta.publish(&claimed, &jwks.url());
        let err = RemoteJwks::discover(meta.issuer())
            .build()
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("expected exactly"), "{err}");
    }
    assert_eq!(jwks.hits(), 0, "keys of a mismatched issuer are never fetched");
}

#[tokio::test]
async fn a_jwks_uri_that_is_not_https_or_loopback_is_refused() {
    let meta = MetadataServer::start("/.well-known/openid-configuration").await;
    meta.publish(&meta.issuer(), "http://idp.example/jwks");
    let err = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("https"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_moved_jwks_uri_is_followed_at_the_next_refresh() {
    let old_key = key("es256").with_kid("old");
    let new_key = key("es384").with_kid("new");
    let old_jwks = JwksServer::start(&jwks_of(&[&old_key])).await;
    let new_jwks = JwksServer::start(&jwks_of(&[&new_key])).await;
    let meta = MetadataServer::start("/.well-known/openid-configuration").await;
    meta.publish(&meta.issuer(), &old_jwks.url());
    let remote = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect("discovered");
    meta.publish(&meta.issuer(), &new_jwks.url());
    for _ in 0..400 {
        if remote.url() == new_jwks.url() && new_jwks.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(remote.url(), new_jwks.url());
    let keys = remote.keys().expect("keys");
    assert!(keys.contains_kid("new") && !keys.contains_kid("old"));
}

#[tokio::test(start_paused = true)]
async fn a_metadata_outage_keeps_the_known_jwks_uri() {
    let k = key("es256");
    let jwks = JwksServer::start(&jwks_of(&[&k])).await;
    let meta = MetadataServer::start("/.well-known/openid-configuration").await;
    meta.publish(&meta.issuer(), &jwks.url());
    let remote = RemoteJwks::discover(meta.issuer())
        .build()
        .await
        .expect("discovered");
    *meta.doc.lock().expect("doc") = None;
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(jwks.hits() >= 2, "keys still refreshed from the known jwks_uri");
    assert!(remote.health().last_error.is_none(), "{:?}", remote.health());
}

/// Two issuers whose key sets share kid "shared" (different keys).
struct TwoIssuers {
    app: Router,
    staff: TestKey,
    partner: TestKey,
    staff_jwks: JwksServer,
    partner_jwks: JwksServer,
}

async fn two_issuers() -> TwoIssuers {
    let staff = key("es256").with_kid("shared");
    let partner = key("es384").with_kid("shared");
    let staff_jwks = JwksServer::start(&jwks_of(&[&staff])).await;
    let partner_jwks = JwksServer::start(&jwks_of(&[&partner])).await;
    let layer = JwtAuthLayer::issuers(
        Verifier::builder().audience(AUDIENCE).build().expect("v"),
        [
            Issuer::new(
                "https://staff.test",
                RemoteJwks::builder(staff_jwks.url()).build().await.expect("a"),
            ),
            Issuer::new(
                "https://partner.test",
                RemoteJwks::builder(partner_jwks.url()).build().await.expect("b"),
            )
            .audience("partner-api"),
        ],
    )
    .expect("layer");
    TwoIssuers {
        app: guarded_app(layer),
        staff,
        partner,
        staff_jwks,
        partner_jwks,
    }
}

#[tokio::test]
async fn each_issuer_is_verified_with_its_own_keys_and_audiences() {
    let t = two_issuers().await;
    assert_eq!(
        call(&t.app, &t.staff.sign(&claims_from("https://staff.test")))
            .await
            .status,
        StatusCode::OK
    );
    let mut partner_claims = claims_from("https://partner.test");
    partner_claims["aud"] = json!("partner-api");
    assert_eq!(
        call(&t.app, &t.partner.sign(&partner_claims)).await.status,
        StatusCode::OK
    );
    // The partner issuer's own audience list replaces the verifier's.
    call(&t.app, &t.partner.sign(&claims_from("https://partner.test")))
        .await
        .assert_invalid_token("audience");
}

#[tokio::test]
async fn a_kid_shared_by_two_issuers_never_crosses_over() {
    let t = two_issuers().await;
    // Signed by the partner's key, claiming to come from staff: staff keys decide.
    let confused = t.partner.sign(&claims_from("https://staff.test"));
    call(&t.app, &confused).await.assert_invalid_token("no key fits");
    // Same algorithm family, wrong issuer's key: the signature fails.
    let staff_as_partner = {
        let mut c = claims_from("https://partner.test");
        c["aud"] = json!("partner-api");
        t.staff.sign_raw(&json!({"alg": "ES384", "kid": "shared"}), &c)
    };
    assert_eq!(
        call(&t.app, &staff_as_partner).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_issuer_is_rejected_without_any_fetch() {
    let t = two_issuers().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let before = (t.staff_jwks.hits(), t.partner_jwks.hits());
    for iss in ["https://evil.test", "https://staff.test/", "HTTPS://STAFF.TEST"] {
        let token = t.staff.with_kid("never-seen").sign(&claims_from(iss));
        call(&t.app, &token).await.assert_invalid_token("issuer");
    }
    let mut no_iss = good_claims();
    no_iss.as_object_mut().expect("object").remove("iss");
    call(&t.app, &t.staff.sign(&no_iss))
        .await
        .assert_invalid_token("iss");
    assert_eq!((t.staff_jwks.hits(), t.partner_jwks.hits()), before);
}

#[test]
fn issuer_lists_must_be_non_empty_and_unique() {
    let keys = || KeySet::from_jwks(br#"{"keys": []}"#).expect("keys");
    let v = || Verifier::builder().build().expect("v");
    assert!(JwtAuthLayer::issuers(v(), []).is_err());
    assert!(
        JwtAuthLayer::issuers(
            v(),
            [Issuer::new("https://a", keys()), Issuer::new("https://a", keys())]
        )
        .is_err()
    );
}

fn fixed_app(verifier: Verifier) -> (Router, TestKey) {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    (guarded_app(JwtAuthLayer::new(verifier, keys)), k)
}

fn base() -> tower_jwt_auth::VerifierBuilder {
    Verifier::builder().issuer(ISSUER).audience(AUDIENCE)
}

#[tokio::test]
async fn typ_policy_requires_or_rejects_access_tokens() {
    let (app, k) = fixed_app(base().require_typ("at+jwt").build().expect("v"));
    let at = |typ: &str| k.sign_raw(&json!({"alg": "ES256", "kid": k.kid, "typ": typ}), &good_claims());
    assert_eq!(call(&app, &at("at+jwt")).await.status, StatusCode::OK);
    assert_eq!(call(&app, &at("application/AT+JWT")).await.status, StatusCode::OK);
    call(&app, &at("JWT")).await.assert_invalid_token("typ");
    call(
        &app,
        &k.sign_raw(&json!({"alg": "ES256", "kid": k.kid}), &good_claims()),
    )
    .await
    .assert_invalid_token("typ");

    let (app, k) = fixed_app(base().reject_typ("at+jwt").build().expect("v"));
    let at = k.sign_raw(
        &json!({"alg": "ES256", "kid": k.kid, "typ": "at+jwt"}),
        &good_claims(),
    );
    call(&app, &at).await.assert_invalid_token("typ");
    assert_eq!(call(&app, &k.sign(&good_claims())).await.status, StatusCode::OK);
}

#[tokio::test]
async fn lifetime_and_required_claims_are_enforced() {
    let (app, k) = fixed_app(
        base()
            .max_lifetime(Duration::from_secs(3600))
            .require_claim("client_id")
            .build()
            .expect("v"),
    );
    let mut claims = good_claims();
    claims["client_id"] = json!("svc");
    assert_eq!(call(&app, &k.sign(&claims)).await.status, StatusCode::OK);
    let mut long = claims.clone();
    long["exp"] = json!(now() + 7200);
    call(&app, &k.sign(&long)).await.assert_invalid_token("lifetime");
    call(&app, &k.sign(&good_claims()))
        .await
        .assert_invalid_token("client_id");
}

#[tokio::test]
async fn missing_scopes_get_403_insufficient_scope_naming_them() {
    let (app, k) = fixed_app(
        base()
            .require_scopes(["orders:read"])
            .require_any_scope(["admin", "ops"])
            .build()
            .expect("v"),
    );
    let with = |scope: Value| {
        let mut c = good_claims();
        c.as_object_mut()
            .expect("object")
            .extend(scope.as_object().expect("object").clone());
        k.sign(&c)
    };
    assert_eq!(
        call(&app, &with(json!({"scope": "orders:read ops"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, &with(json!({"scp": ["admin", "orders:read"]})))
            .await
            .status,
        StatusCode::OK
    );
    for (scopes, named) in [
        (json!({"scope": "ops"}), "orders:read"),
        (json!({"scope": "orders:read"}), "admin ops"),
        (json!({}), "orders:read"),
    ] {
        let answer = call(&app, &with(scopes)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
        let challenge = answer.www_authenticate.expect("challenge");
        assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
        assert!(challenge.contains(&format!("scope=\"{named}\"")), "{challenge}");
    }
    // An invalid token is still 401, never 403.
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    call(&app, &k.sign(&expired))
        .await
        .assert_invalid_token("expired");
}

#[tokio::test]
async fn validators_answer_403_with_their_reason() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let layer = JwtAuthLayer::new(base().build().expect("v"), keys).validate(|claims| {
        match claims.get("tenant").and_then(|t| t.as_str()) {
            Some("acme") => Ok(()),
            _ => Err("tenant not allowed".into()),
        }
    });
    let app = guarded_app(layer);
    let mut claims = good_claims();
    claims["tenant"] = json!("acme");
    assert_eq!(call(&app, &k.sign(&claims)).await.status, StatusCode::OK);
    claims["tenant"] = json!("evil");
    let answer = call(&app, &k.sign(&claims)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("tenant not allowed")
    );
}

#[tokio::test]
async fn the_cookie_source_reads_the_token_from_a_named_cookie() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let layer = JwtAuthLayer::new(base().build().expect("v"), keys).token_source(TokenSource::cookie("at"));
    let app = guarded_app(layer);
    let token = k.sign(&good_claims());
    let cookie = format!("theme=dark; at={token}");
    assert_eq!(
        call_with(&app, &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        call_with(&app, &[("authorization", &bearer)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let two = format!("at={token}; at={token}");
    assert_eq!(
        call_with(&app, &[("cookie", &two)]).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn an_error_responder_renders_rejections_and_the_reason_still_rides_along() {
    let k = key("es256");
    let keys = KeySet::from_jwks(jwks_of(&[&k]).to_string().as_bytes()).expect("keys");
    let layer = JwtAuthLayer::new(base().build().expect("v"), keys).error_responder(
        |e: &tower_jwt_auth::AuthError| {
            let mut res = http::Response::new(format!("{{\"problem\": \"{}\"}}", e.reason()));
            *res.status_mut() = e.status();
            res
        },
    );
    let app = guarded_app(layer);
    let answer = call_with(&app, &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["problem"], "missing_token");
    assert_eq!(
        answer.www_authenticate, None,
        "the custom responder decides the headers"
    );
}

#[tokio::test]
async fn each_issuers_health_counts_its_own_tokens() {
    let staff = key("es256");
    let partner = key("es384");
    let staff_jwks = JwksServer::start(&jwks_of(&[&staff])).await;
    let partner_jwks = JwksServer::start(&jwks_of(&[&partner])).await;
    let staff_keys = RemoteJwks::builder(staff_jwks.url())
        .build()
        .await
        .expect("staff");
    let partner_keys = RemoteJwks::builder(partner_jwks.url())
        .build()
        .await
        .expect("partner");
    let layer = JwtAuthLayer::issuers(
        Verifier::builder().audience(AUDIENCE).build().expect("v"),
        [
            Issuer::new("https://staff.test", staff_keys.clone()),
            Issuer::new("https://partner.test", partner_keys.clone()),
        ],
    )
    .expect("layer");
    let app = guarded_app(layer);
    assert_eq!(
        call(&app, &staff.sign(&claims_from("https://staff.test")))
            .await
            .status,
        StatusCode::OK
    );
    let mut expired = claims_from("https://partner.test");
    expired["exp"] = json!(now() - 3600);
    call(&app, &partner.sign(&expired))
        .await
        .assert_invalid_token("expired");
    assert_eq!(staff_keys.health().tokens_accepted, 1);
    assert!(staff_keys.health().tokens_rejected.is_empty());
    assert_eq!(partner_keys.health().tokens_accepted, 0);
    assert_eq!(partner_keys.health().tokens_rejected.get("expired"), Some(&1));
}
