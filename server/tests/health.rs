//! The server starts on the embedded store and answers liveness and readiness.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use courier_server::{Application, Settings};

#[actix_rt::test]
async fn health_and_ready_answer_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        database_url: dir
            .path()
            .join("courier.sqlite3")
            .to_string_lossy()
            .into_owned(),
        listen: "127.0.0.1:0".into(),
    };
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}/api/v1", app.port());
    actix_rt::spawn(app.run());
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}
