//! The web client at `/`: embedded files with their types, revalidation, a strict CSP,
//! and the API's own answers left as they were.

use courier_test_db::{Backend, TestDatabase};

use crate::helpers::spawn_app;

#[actix_rt::test]
async fn the_client_is_served_with_types_caching_and_a_strict_policy() {
    let app = spawn_app(TestDatabase::new(Backend::Sqlite).await.unwrap()).await;
    let root = format!("http://127.0.0.1:{}", app.port);

    let page = app.http.get(format!("{root}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            policy.contains(directive),
            "{directive} missing from {policy}"
        );
    }
    assert!(
        policy.contains(&format!("connect-src 'self' ws://127.0.0.1:{}", app.port)),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );

    let script = app
        .http
        .get(format!("{root}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .http
        .get(format!("{root}/assets/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "an unchanged file is not sent again");
    assert!(again.text().await.unwrap().is_empty());

    let style = app
        .http
        .get(format!("{root}/assets/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(style.headers()["content-type"], "text/css; charset=utf-8");

    for missing in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/nope",
        "/api/v1/nope",
    ] {
        let response = app
            .http
            .get(format!("{root}{missing}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{missing}");
    }
    let post = app.http.post(format!("{root}/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");

    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        health.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'; frame-ancestors 'none'"),
        "the API keeps its own policy"
    );
}
