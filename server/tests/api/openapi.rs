//! The committed OpenAPI document matches the code, and the docs page is served offline.

use courier_test_db::{Backend, TestDatabase};

use crate::helpers::spawn_app;

const COMMITTED: &str = include_str!("../../../openapi/openapi.json");

#[test]
fn committed_openapi_matches_the_code() {
    let generated = courier_server::openapi::json();
    if generated != COMMITTED {
        if std::env::var("UPDATE_OPENAPI").is_ok() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
            std::fs::write(path, &generated).unwrap();
            return;
        }
        panic!(
            "openapi/openapi.json is out of date: run `cargo run -p courier-server -- openapi > openapi/openapi.json` (or UPDATE_OPENAPI=1 cargo test)"
        );
    }
}

#[test]
fn every_route_is_documented() {
    let document: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/users/me",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/members",
        "/api/v1/conversations/{id}/members/{userId}",
        "/api/v1/conversations/{id}/messages",
        "/api/v1/conversations/{id}/read",
        "/api/v1/messages/{id}",
        "/api/v1/health",
        "/api/v1/ready",
        "/api/v1/metrics",
        "/api/v1/openapi.json",
        "/api/v1/ws",
        "/api/v1/calls/ice-servers",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the document");
    }
}

#[actix_rt::test]
async fn the_spec_and_docs_page_are_served() {
    let app = spawn_app(TestDatabase::new(Backend::Sqlite).await.unwrap()).await;
    let spec = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(spec.status(), 200);
    assert_eq!(spec.text().await.unwrap(), COMMITTED);

    let page = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "the docs page is Swagger UI");
    assert!(
        !html.contains("https://"),
        "no asset comes from another host"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let script = app
        .http
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200, "assets are embedded");
}
