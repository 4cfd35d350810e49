//! Register, login, refresh rotation and reuse detection, logout, bad tokens and bodies.

use courier_test_db::TestDatabase;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

courier_test_db::on_both_stores!(
    register_and_login,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes,
    bad_tokens_and_bodies_are_refused_in_the_documented_shape,
    racing_refreshes_and_logouts_leave_no_live_token,
);

async fn racing_refreshes_and_logouts_leave_no_live_token(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.auth_requests_per_minute = 1000).await;
    let ann = app.register("ann").await;
    for round in 0..5 {
        let (_, login) = app
            .post(
                "/auth/login",
                None,
                json!({"username": "ann", "password": "correct horse battery"}),
            )
            .await;
        let token = login["refreshToken"].clone();
        let body = json!({"refreshToken": token});
        let (first, second) = futures_util::join!(
            app.post("/auth/refresh", None, body.clone()),
            app.post("/auth/refresh", None, body.clone())
        );
        let winners: Vec<_> = [&first, &second]
            .into_iter()
            .filter(|(status, _)| *status == 200)
            .collect();
        assert!(
            winners.len() <= 1,
            "round {round}: one use of a token wins at most"
        );
        for (_, won) in winners {
            let (status, _) = app
                .post(
                    "/auth/refresh",
                    None,
                    json!({"refreshToken": won["refreshToken"]}),
                )
                .await;
            assert_eq!(
                status, 401,
                "round {round}: the reuse revoked the winner's token too"
            );
        }

        let (_, login) = app
            .post(
                "/auth/login",
                None,
                json!({"username": "ann", "password": "correct horse battery"}),
            )
            .await;
        let body = json!({"refreshToken": login["refreshToken"]});
        let ((_, rotated), (logout_status, _)) = futures_util::join!(
            app.post("/auth/refresh", None, body.clone()),
            app.post("/auth/logout", None, body.clone())
        );
        assert_eq!(logout_status, 204);
        if let Some(next) = rotated.get("refreshToken") {
            let (status, _) = app
                .post("/auth/refresh", None, json!({"refreshToken": next}))
                .await;
            assert_eq!(
                status, 401,
                "round {round}: logout revoked the family, new token included"
            );
        }
    }
    let _ = ann;
}

async fn register_and_login(db: TestDatabase) {
    let app = spawn_app(db).await;
    let (status, body) = app
        .post(
            "/auth/register",
            None,
            json!({"username": "ann", "password": "correct horse battery", "displayName": "Ann", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["username"], "ann");
    assert_eq!(body["user"]["displayName"], "Ann");
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert_eq!(body["expiresIn"], 900);
    assert!(body["accessToken"].as_str().unwrap().split('.').count() == 3);
    assert!(body["refreshToken"].as_str().unwrap().len() >= 43);
    assert!(body["user"].get("passwordHash").is_none());

    let (status, body) = app
        .post(
            "/auth/register",
            None,
            json!({"username": "ann", "password": "another password"}),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));

    let (status, body) = app
        .post(
            "/auth/register",
            None,
            json!({"username": "A!", "password": "short"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "validation_failed");
    assert!(body["fields"]["username"].is_array(), "{body}");
    assert!(body["fields"]["password"].is_array(), "{body}");

    let (status, body) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (me_status, me) = app
        .get("/users/me", body["accessToken"].as_str().unwrap())
        .await;
    assert_eq!((me_status, me["username"].as_str()), (200, Some("ann")));

    let (wrong_status, wrong) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": "wrong password"}),
        )
        .await;
    let (unknown_status, unknown) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "nobody", "password": "wrong password"}),
        )
        .await;
    assert_eq!((wrong_status, unknown_status), (401, 401));
    assert_eq!(wrong, unknown, "unknown user and wrong password look alike");

    // Past bcrypt's 72 bytes every character still counts.
    let long = "p".repeat(100);
    app.post(
        "/auth/register",
        None,
        json!({"username": "bob", "password": format!("{long}1")}),
    )
    .await;
    let (status, _) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "bob", "password": format!("{long}2")}),
        )
        .await;
    assert_eq!(status, 401);
}

async fn refresh_rotates_and_reuse_revokes_the_family(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let (status, rotated) = app
        .post("/auth/refresh", None, json!({"refreshToken": ann.refresh}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(second, ann.refresh);
    assert_eq!(rotated["user"]["id"], ann.id);

    // The first token again: a replay. It fails, and so does the family's newest token.
    let (status, body) = app
        .post("/auth/refresh", None, json!({"refreshToken": ann.refresh}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = app
        .post("/auth/refresh", None, json!({"refreshToken": second}))
        .await;
    assert_eq!(status, 401, "reuse revoked the whole family");

    // Another login is another family, unaffected.
    let (_, login) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": "correct horse battery"}),
        )
        .await;
    let (status, _) = app
        .post(
            "/auth/refresh",
            None,
            json!({"refreshToken": login["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn logout_revokes(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let (status, _) = app
        .post("/auth/logout", None, json!({"refreshToken": ann.refresh}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .post("/auth/refresh", None, json!({"refreshToken": ann.refresh}))
        .await;
    assert_eq!(status, 401);
}

async fn bad_tokens_and_bodies_are_refused_in_the_documented_shape(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;

    let (status, body) = app.get("/users/me", "not-a-jwt").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let mut tampered = ann.access.clone();
    tampered.pop();
    tampered.push(if ann.access.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.get("/users/me", &tampered).await.0, 401);
    let response = app.http.get(app.url("/users/me")).send().await.unwrap();
    assert_eq!(response.status(), 401);

    let expired_app_token = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = json!({"sub": ann.id.to_string(), "iat": 1_600_000_000, "exp": 1_600_000_900});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"test-secret-test-secret-test-secret!"),
        )
        .unwrap()
    };
    assert_eq!(app.get("/users/me", &expired_app_token).await.0, 401);

    let response = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].is_string());

    let (status, body) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "a\u{0}b", "password": "whatever"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("validation_failed"))
    );
    assert_eq!(app.get("/users?query=a%00b", &ann.access).await.0, 422);

    let huge = "x".repeat(70 * 1024);
    let (status, body) = app
        .post(
            "/auth/login",
            None,
            json!({"username": huge, "password": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, body) = app.get("/no/such/route", &ann.access).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
