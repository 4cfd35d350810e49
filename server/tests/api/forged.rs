//! Hostile credentials and raw requests for the security tests: tokens signed with the
//! wrong key or algorithm, expired or tampered ones, and a request helper that sends any
//! method with or without a token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Api, TestUser};

/// The secret `spawn_app` configures.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The claims of a good access token for `user`, lasting `ttl` seconds from now.
pub fn claims(user: i64, ttl: i64) -> Value {
    let now = now();
    json!({"sub": user.to_string(), "iss": "courier", "aud": "courier-api", "iat": now, "exp": now + ttl})
}

/// A JWT with `claims`, signed with `key` by `algorithm`.
pub fn signed(claims: &Value, algorithm: Algorithm, key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// A JWT with any header, signed with HMAC-SHA256 and the server's secret whatever the
/// header says (an algorithm-confusion attempt).
pub fn with_header(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{input}.{signature}")
}

/// `alg: none`, no signature.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The token with one signature character changed (in the middle, so that it is not a
/// padding bit that changes).
pub fn tampered_signature(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut chars: Vec<char> = signature.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    format!("{input}.{}", chars.into_iter().collect::<String>())
}

/// The token with its claims swapped for `claims`, its signature kept.
pub fn tampered_claims(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let _ = parts.next();
    let signature = parts.next().unwrap();
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Every credential that must get 401, with a name for failure messages.
pub fn bad_tokens(user: &TestUser, other: &TestUser) -> Vec<(&'static str, Option<String>)> {
    let good = claims(user.id, 600);
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("someone-else");
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("another-service");
    let mut unscoped = good.clone();
    unscoped.as_object_mut().unwrap().remove("iss");
    unscoped.as_object_mut().unwrap().remove("aud");
    let mut not_a_user = good.clone();
    not_a_user["sub"] = json!("ann");
    vec![
        ("anonymous", None),
        (
            "expired",
            Some(signed(&claims(user.id, -60), Algorithm::HS256, SECRET)),
        ),
        ("tampered signature", Some(tampered_signature(&user.access))),
        (
            "tampered claims",
            Some(tampered_claims(&user.access, &claims(other.id, 600))),
        ),
        ("refresh token as access token", Some(user.refresh.clone())),
        ("alg none", Some(unsigned(&good))),
        (
            "wrong key",
            Some(signed(
                &good,
                Algorithm::HS256,
                "another-secret-another-secret-another",
            )),
        ),
        (
            "HS512 header",
            Some(signed(&good, Algorithm::HS512, SECRET)),
        ),
        (
            "RS256 header",
            Some(with_header(&json!({"alg": "RS256", "typ": "JWT"}), &good)),
        ),
        (
            "wrong issuer",
            Some(signed(&wrong_issuer, Algorithm::HS256, SECRET)),
        ),
        (
            "wrong audience",
            Some(signed(&wrong_audience, Algorithm::HS256, SECRET)),
        ),
        (
            "no issuer or audience",
            Some(signed(&unscoped, Algorithm::HS256, SECRET)),
        ),
        (
            "non-numeric subject",
            Some(signed(&not_a_user, Algorithm::HS256, SECRET)),
        ),
        ("not a JWT", Some("not-a-jwt".to_owned())),
        ("empty", Some(String::new())),
    ]
}

/// Any request, with a bearer token or none; the status and the JSON body (or text).
pub async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = api.http.request(method, api.url(path));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts the documented 401: `{"error": "unauthorized", "message": "..."}`.
pub fn assert_unauthorized(what: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 401, "{what}: {body}");
    assert_eq!(body["error"], "unauthorized", "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
    assert_eq!(
        body.as_object().map(|fields| fields.len()),
        Some(2),
        "{what}: only error and message: {body}"
    );
}

/// A body with every number replaced by `#`, to compare answers about different ids.
pub fn without_ids(body: &Value) -> String {
    let text = body.to_string();
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}
