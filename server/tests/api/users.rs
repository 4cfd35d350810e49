//! Profiles, search and presence.

use std::time::Duration;

use courier_test_db::TestDatabase;
use serde_json::json;

use crate::helpers::spawn_app;

courier_test_db::on_both_stores!(profiles_search_and_presence);

async fn profiles_search_and_presence(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    app.register("annabel").await;

    let (status, me) = app
        .patch(
            "/users/me",
            &ann.access,
            json!({"displayName": "Ann A.", "statusText": "around"}),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["displayName"].as_str(), me["statusText"].as_str()),
        (Some("Ann A."), Some("around"))
    );
    let (status, _) = app
        .patch("/users/me", &ann.access, json!({"displayName": ""}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .patch("/users/me", &ann.access, json!({"displayName": "   "}))
        .await;
    assert_eq!(status, 422);
    let lower = app
        .http
        .get(app.url("/users/me"))
        .header("authorization", format!("bearer {}", ann.access))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200, "the scheme name is case-insensitive");

    let (_, found) = app.get("/users?query=ann", &bob.access).await;
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "annabel"]);
    assert!(
        found[0].get("email").is_none(),
        "others' email stays private"
    );
    assert_eq!(app.get("/users?query=", &bob.access).await.0, 422);

    let (_, seen) = app.get(&format!("/users/{}", ann.id), &bob.access).await;
    assert_eq!(
        (seen["online"].as_bool(), seen["lastSeen"].as_str()),
        (Some(false), None)
    );
    let socket = app.socket(&ann).await;
    let (_, seen) = app.get(&format!("/users/{}", ann.id), &bob.access).await;
    assert_eq!(seen["online"], true);
    assert_eq!(seen["status"], "online");
    drop(socket);
    // Offline after the grace period, with lastSeen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = app.get(&format!("/users/{}", ann.id), &bob.access).await;
        if seen["online"] == false {
            assert!(seen["lastSeen"].is_string(), "{seen}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never went offline");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/users/424242", &bob.access).await.0, 404);
}
