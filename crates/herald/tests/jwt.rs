//! JWT end to end (issue #7, item 15): the time claims as RFC 7519 NumericDates,
//! audience and issuer, keys from a JWKS URL that rotates, and the token in the
//! first client frame instead of the URL — against real gateway processes on a
//! real Redis, with real WebSocket clients and a real HTTP key server.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_testkit::{
    GatewayProcess, RedisServer, Ws, close_code, connect, expect_frame, send_json,
};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-32-bytes-length";

fn herald() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn token(claims: Value) -> String {
    herald_testkit::hs256_token(SECRET, &claims)
}

async fn gateway(redis: &RedisServer, extra: &[&str]) -> GatewayProcess {
    let gateway = GatewayProcess::start(herald(), &redis.url(), "jwt", extra).await;
    gateway.wait_readyz(200).await;
    gateway
}

fn ws_url(gateway: &GatewayProcess) -> String {
    format!("ws://{}/ws", gateway.addr)
}

async fn subscribe(ws: &mut Ws, channel: &str) -> Value {
    send_json(
        ws,
        json!({"type": "subscribe", "id": 9, "channels": [{"channel": channel}]}),
    )
    .await;
    let reply = herald_testkit::next_json(ws).await;
    assert!(
        reply["type"] == "subscribed" || reply["type"] == "error",
        "{reply}"
    );
    reply
}

/// Connects with `?token=` and returns the close code, or `None` when it was accepted.
async fn try_query_token(gateway: &GatewayProcess, token: &str) -> Result<Value, u16> {
    let mut ws = connect(&format!("{}?token={token}", ws_url(gateway))).await;
    match herald_testkit::next_seen(&mut ws, Duration::from_secs(10))
        .await
        .unwrap()
    {
        herald_testkit::Seen::Text(text) => Ok(serde_json::from_str(&text).unwrap()),
        herald_testkit::Seen::Closed(code, _) => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn any_numeric_date_is_accepted_and_none_panics_the_gateway() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &["--jwt-secret", SECRET]).await;
    // Fractional exp: a valid NumericDate, refused before.
    let fractional = token(json!({"sub": "42", "exp": now() + 600.25}));
    assert_eq!(
        try_query_token(&a, &fractional).await.unwrap()["user"],
        "42"
    );
    // exp ≥ 2^63 used to panic the connection task (overflow when adding duration to instant).
    for huge in [json!(1_u64 << 63), json!(u64::MAX), json!(1e300)] {
        let t = token(json!({"sub": "42", "exp": huge}));
        let mut ws = connect(&format!("{}?token={t}", ws_url(&a))).await;
        assert_eq!(expect_frame(&mut ws, "connected").await["user"], "42");
        // The connection is alive and served.
        assert_eq!(subscribe(&mut ws, "user:42").await["type"], "subscribed");
    }
    // Not a number, and negative: refused with the documented codes.
    assert_eq!(
        try_query_token(&a, &token(json!({"sub": "42", "exp": "tomorrow"}))).await,
        Err(4004)
    );
    assert_eq!(
        try_query_token(&a, &token(json!({"sub": "42", "exp": -1}))).await,
        Err(4005)
    );
    // The gateway still serves after all of that.
    assert_eq!(
        herald_testkit::get(a.addr, "/healthz").await.unwrap().0,
        200
    );
}

#[tokio::test]
async fn nbf_audience_issuer_and_leeway_are_enforced() {
    let redis = RedisServer::start().await;
    let a = gateway(
        &redis,
        &[
            "--jwt-secret",
            SECRET,
            "--jwt-audience",
            "herald",
            "--jwt-issuer",
            "https://id.example",
            "--jwt-leeway",
            "30s",
        ],
    )
    .await;
    let good = json!({"sub": "7", "aud": "herald", "iss": "https://id.example"});
    let with = |extra: Value| {
        let mut claims = good.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        token(claims)
    };
    assert!(try_query_token(&a, &with(json!({}))).await.is_ok());
    // nbf in the future beyond the leeway: refused; within it: accepted.
    assert_eq!(
        try_query_token(&a, &with(json!({"nbf": now() + 120.0}))).await,
        Err(4004)
    );
    assert!(
        try_query_token(&a, &with(json!({"nbf": now() + 10.0})))
            .await
            .is_ok()
    );
    // exp a little in the past: accepted within the leeway, refused beyond.
    assert!(
        try_query_token(&a, &with(json!({"exp": now() - 10.0})))
            .await
            .is_ok()
    );
    assert_eq!(
        try_query_token(&a, &with(json!({"exp": now() - 60.0}))).await,
        Err(4005)
    );
    // Wrong or missing audience and issuer.
    assert_eq!(
        try_query_token(&a, &with(json!({"aud": "other"}))).await,
        Err(4004)
    );
    assert_eq!(
        try_query_token(&a, &with(json!({"iss": "https://evil.example"}))).await,
        Err(4004)
    );
    assert_eq!(
        try_query_token(&a, &token(json!({"sub": "7", "aud": "herald"}))).await,
        Err(4004)
    );
    assert_eq!(
        try_query_token(&a, &token(json!({"sub": "7", "iss": "https://id.example"}))).await,
        Err(4004)
    );
}

#[tokio::test]
async fn a_token_in_the_first_frame_authenticates_without_a_query_string() {
    let redis = RedisServer::start().await;
    // No public channel: the gateway waits for the first frame before `connected`.
    let a = gateway(&redis, &["--jwt-secret", SECRET]).await;
    let mut ws = connect(&ws_url(&a)).await;
    let t = token(json!({"sub": "42", "exp": now() + 600.0}));
    send_json(&mut ws, json!({"type": "auth", "id": 1, "token": t})).await;
    let connected = expect_frame(&mut ws, "connected").await;
    assert_eq!(connected["user"], "42");
    let authenticated = expect_frame(&mut ws, "authenticated").await;
    assert_eq!(authenticated["id"], 1);
    assert_eq!(authenticated["user"], "42");
    assert!(authenticated["expires_in_ms"].as_u64().unwrap() > 500_000);
    assert_eq!(subscribe(&mut ws, "user:42").await["type"], "subscribed");

    // A bad token in the frame is refused like one in the URL.
    for (bad, code) in [
        (token(json!({"sub": "42", "exp": now() - 5.0})), 4005),
        ("not.a.jwt".to_owned(), 4004),
    ] {
        let mut ws = connect(&ws_url(&a)).await;
        send_json(&mut ws, json!({"type": "auth", "token": bad})).await;
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(10)).await,
            Some(code)
        );
    }
    // An old anonymous client that subscribes at once still gets `connected`, then its answer.
    let mut ws = connect(&ws_url(&a)).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "id": 2, "channels": [{"channel": "user:42"}]}),
    )
    .await;
    assert_eq!(
        expect_frame(&mut ws, "connected").await["user"],
        Value::Null
    );
    assert_eq!(expect_frame(&mut ws, "error").await["code"], "forbidden");
    // An explicitly anonymous `auth` is answered too.
    let mut ws = connect(&ws_url(&a)).await;
    send_json(&mut ws, json!({"type": "auth"})).await;
    assert_eq!(
        expect_frame(&mut ws, "connected").await["user"],
        Value::Null
    );
    assert_eq!(
        expect_frame(&mut ws, "authenticated").await["user"],
        Value::Null
    );
}

#[tokio::test]
async fn a_client_that_must_authenticate_and_sends_nothing_is_closed_with_4007() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &["--jwt-secret", SECRET, "--auth-timeout", "500ms"]).await;
    let mut ws = connect(&ws_url(&a)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(10)).await,
        Some(4007)
    );
}

#[tokio::test]
async fn with_public_channels_anonymous_connects_at_once_and_auth_upgrades_in_band() {
    let redis = RedisServer::start().await;
    let a = gateway(
        &redis,
        &["--jwt-secret", SECRET, "--public-channel", "news:*"],
    )
    .await;
    let mut ws = connect(&ws_url(&a)).await;
    // Today's anonymous clients: `connected` before they say anything.
    assert_eq!(
        expect_frame(&mut ws, "connected").await["user"],
        Value::Null
    );
    assert_eq!(subscribe(&mut ws, "news:a").await["type"], "subscribed");
    let short = token(json!({"sub": "42", "exp": now() + 3.0}));
    send_json(&mut ws, json!({"type": "auth", "id": 5, "token": short})).await;
    let authenticated = expect_frame(&mut ws, "authenticated").await;
    assert_eq!(authenticated["user"], "42");
    assert_eq!(subscribe(&mut ws, "user:42").await["type"], "subscribed");
    // A token of another user does not change who the connection is.
    let other = token(json!({"sub": "43", "exp": now() + 600.0}));
    send_json(&mut ws, json!({"type": "auth", "id": 6, "token": other})).await;
    let refused = expect_frame(&mut ws, "error").await;
    assert_eq!(refused["code"], "forbidden");
    // The in-band token's expiry closes the connection, as a URL token's would.
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(10)).await,
        Some(4005)
    );

    // A renewed token (same user) moves the deadline.
    let mut ws = connect(&ws_url(&a)).await;
    expect_frame(&mut ws, "connected").await;
    send_json(
        &mut ws,
        json!({"type": "auth", "token": token(json!({"sub": "42", "exp": now() + 2.0}))}),
    )
    .await;
    expect_frame(&mut ws, "authenticated").await;
    send_json(
        &mut ws,
        json!({"type": "auth", "token": token(json!({"sub": "42", "exp": now() + 600.0}))}),
    )
    .await;
    expect_frame(&mut ws, "authenticated").await;
    herald_testkit::assert_quiet(&mut ws, Duration::from_secs(4)).await;
}

/// A real HTTP server on a loopback port serving a JWKS that the test can rotate.
struct KeyServer {
    url: String,
    set: Arc<Mutex<JwkSet>>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KeyServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let set = Arc::new(Mutex::new(JwkSet { keys }));
        let requests = Arc::new(AtomicU64::new(0));
        let (served, counted) = (set.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let set = served.lock().unwrap().clone();
                    axum::Json(set)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KeyServer {
            url,
            set,
            requests,
            task,
        }
    }
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../gateway/tests/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn signing_key(algorithm: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("rs256-private.pem")).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem("es256-private.pem")).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (key, jwk)
}

fn signed(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    encode(&header, &json!({"sub": "7", "exp": now() + 600.0}), key).unwrap()
}

#[tokio::test]
async fn keys_come_from_a_jwks_url_that_rotates_and_a_kid_flood_is_rate_limited() {
    let (old_key, old_jwk) = signing_key(Algorithm::RS256, "2024");
    let (new_key, new_jwk) = signing_key(Algorithm::ES256, "2025");
    let keys = KeyServer::start(vec![old_jwk]).await;
    let redis = RedisServer::start().await;
    let a = gateway(&redis, &["--jwt-jwks-url", &keys.url]).await;

    assert_eq!(
        try_query_token(&a, &signed(&old_key, Algorithm::RS256, "2024"))
            .await
            .unwrap()["user"],
        "7"
    );
    assert_eq!(keys.requests.load(Ordering::SeqCst), 1);

    // The identity provider rotates: the new key (new kid) replaces the old one.
    keys.set.lock().unwrap().keys = vec![new_jwk];
    // A flood of tokens naming unknown kids right after the first fetch: all
    // refused from the cache, none reaches the key server (at most one fetch per 10 s).
    let cheap = EncodingKey::from_secret(b"whatever-secret-16");
    for i in 0..50 {
        let forged = signed(&cheap, Algorithm::HS256, &format!("random-{i}"));
        assert_eq!(try_query_token(&a, &forged).await, Err(4004));
    }
    assert_eq!(keys.requests.load(Ordering::SeqCst), 1);
    // Once the interval has passed, the new kid makes the gateway fetch the set again.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let mut ws = connect(&ws_url(&a)).await;
    // In the first frame, as a browser would send it.
    send_json(
        &mut ws,
        json!({"type": "auth", "token": signed(&new_key, Algorithm::ES256, "2025")}),
    )
    .await;
    assert_eq!(expect_frame(&mut ws, "connected").await["user"], "7");
    assert_eq!(keys.requests.load(Ordering::SeqCst), 2);
    // The rotated-out key is gone with the old set.
    assert_eq!(
        try_query_token(&a, &signed(&old_key, Algorithm::RS256, "2024")).await,
        Err(4004)
    );
}
