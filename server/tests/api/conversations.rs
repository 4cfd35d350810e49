//! Conversations, membership, history, sends, receipts, edits: the REST flow.

use courier_test_db::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

courier_test_db::on_both_stores!(
    the_rest_flow,
    non_members_get_404_on_every_conversation_route,
    bad_input_changes_nothing,
);

async fn the_rest_flow(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let cat = app.register("cat").await;

    let (status, direct) = app
        .post(
            "/conversations",
            Some(&ann.access),
            json!({"kind": "direct", "peerId": bob.id}),
        )
        .await;
    assert_eq!(status, 201, "{direct}");
    assert_eq!(direct["kind"], "direct");
    let (status, again) = app
        .post(
            "/conversations",
            Some(&bob.access),
            json!({"kind": "direct", "peerId": ann.id}),
        )
        .await;
    assert_eq!((status, &again["id"]), (200, &direct["id"]));

    let group = app.group(&ann, &[&bob]).await;
    let path = format!("/conversations/{group}/messages");
    let first = app.send(&ann, group, "m1", "hello team").await;
    assert_eq!(first["seq"], 1);
    assert_eq!(first["senderId"], ann.id);
    assert_eq!(first["clientMsgId"], "m1");
    assert!(first["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["replyTo"], Value::Null);

    // A retry answers 200 with the first result.
    let (status, retried) = app
        .post(
            &path,
            Some(&ann.access),
            json!({"clientMsgId": "m1", "body": "hello team"}),
        )
        .await;
    assert_eq!((status, &retried), (200, &first));

    let (status, reply) = app
        .post(
            &path,
            Some(&bob.access),
            json!({"clientMsgId": "b1", "body": "hi!", "replyToId": first["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        reply["replyTo"],
        json!({"id": first["id"], "senderId": ann.id, "preview": "hello team"})
    );
    for n in 3..=5 {
        app.send(&ann, group, &format!("m{n}"), &format!("message {n}"))
            .await;
    }

    let (status, page) = app
        .get(&format!("{path}?afterSeq=1&limit=2"), &bob.access)
        .await;
    assert_eq!(status, 200);
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!((seqs, page["hasMore"].as_bool()), (vec![2, 3], Some(true)));
    let (_, older) = app
        .get(&format!("{path}?beforeSeq=5&limit=10"), &bob.access)
        .await;
    assert_eq!(older["messages"].as_array().unwrap().len(), 4);
    assert_eq!(older["hasMore"], false);

    let (_, list) = app.get("/conversations", &bob.access).await;
    let listed = list.as_array().unwrap();
    assert_eq!(listed[0]["id"], group, "most recent first");
    assert_eq!(listed[0]["unreadCount"], 4, "ann's four messages");
    assert_eq!(listed[0]["lastMessage"]["seq"], 5);
    let (status, _) = app
        .post(
            &format!("/conversations/{group}/read"),
            Some(&bob.access),
            json!({"seq": 4}),
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app.get("/conversations", &bob.access).await;
    assert_eq!(list[0]["unreadCount"], 1);

    // Edit and delete: the sender only.
    let message_path = format!("/messages/{}", first["id"]);
    let (status, body) = app
        .patch(&message_path, &bob.access, json!({"body": "hijacked"}))
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, edited) = app
        .patch(&message_path, &ann.access, json!({"body": "hello, team"}))
        .await;
    assert_eq!(
        (status, edited["body"].as_str()),
        (200, Some("hello, team"))
    );
    assert!(edited["editedAt"].is_string());
    let (status, tombstone) = app.delete(&message_path, &ann.access).await;
    assert_eq!(status, 200);
    assert_eq!(
        (tombstone["body"].clone(), tombstone["seq"].clone()),
        (Value::Null, json!(1))
    );

    // Membership: add cat, cat reads history, ann removes cat.
    let (status, details) = app
        .post(
            &format!("/conversations/{group}/members"),
            Some(&bob.access),
            json!({"userId": cat.id}),
        )
        .await;
    assert_eq!(status, 201, "{details}");
    assert_eq!(details["members"].as_array().unwrap().len(), 3);
    assert_eq!(app.get(&path, &cat.access).await.0, 200);
    let (status, _) = app
        .delete(
            &format!("/conversations/{group}/members/{}", cat.id),
            &ann.access,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get(&path, &cat.access).await.0, 404);
    let (status, details) = app
        .get(&format!("/conversations/{group}"), &bob.access)
        .await;
    assert_eq!(status, 200);
    assert_eq!(details["members"].as_array().unwrap().len(), 2);
}

async fn non_members_get_404_on_every_conversation_route(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let group = app.group(&ann, &[&bob]).await;
    let message = app.send(&ann, group, "s", "secret").await;
    let base = format!("/conversations/{group}");

    let checks = [
        app.get(&base, &eve.access).await,
        app.get(&format!("{base}/messages"), &eve.access).await,
        app.post(
            &format!("{base}/messages"),
            Some(&eve.access),
            json!({"clientMsgId": "e", "body": "hi"}),
        )
        .await,
        app.post(
            &format!("{base}/members"),
            Some(&eve.access),
            json!({"userId": eve.id}),
        )
        .await,
        app.delete(&format!("{base}/members/{}", bob.id), &eve.access)
            .await,
        app.post(
            &format!("{base}/read"),
            Some(&eve.access),
            json!({"seq": 1}),
        )
        .await,
        app.patch(
            &format!("/messages/{}", message["id"]),
            &eve.access,
            json!({"body": "x"}),
        )
        .await,
        app.delete(&format!("/messages/{}", message["id"]), &eve.access)
            .await,
    ];
    for (n, (status, body)) in checks.iter().enumerate() {
        assert_eq!(
            (*status, body["error"].as_str()),
            (404, Some("not_found")),
            "check {n}: {body}"
        );
    }
    let (_, list) = app.get("/conversations", &eve.access).await;
    assert_eq!(list, json!([]));
    let (_, page) = app.get(&format!("{base}/messages"), &ann.access).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "nothing was added"
    );
}

async fn bad_input_changes_nothing(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let path = format!("/conversations/{group}/messages");
    let cases = [
        (json!({"clientMsgId": "", "body": "x"}), 422),
        (json!({"clientMsgId": "k".repeat(65), "body": "x"}), 422),
        (json!({"clientMsgId": "k", "body": ""}), 422),
        (
            json!({"clientMsgId": "k", "body": "x".repeat(16 * 1024 + 1)}),
            422,
        ),
        (json!({"clientMsgId": "k", "body": "nul\u{0}inside"}), 422),
        (
            json!({"clientMsgId": "k", "body": "x", "replyToId": 987654}),
            422,
        ),
        (json!({"clientMsgId": "k"}), 400),
        (json!({"clientMsgId": "k", "body": "x", "extra": true}), 400),
    ];
    for (body, expected) in cases {
        let (status, answer) = app.post(&path, Some(&ann.access), body.clone()).await;
        assert_eq!(status, expected, "{body} -> {answer}");
        assert!(
            answer["error"].is_string() && answer["message"].is_string(),
            "{answer}"
        );
    }
    let (status, answer) = app.get(&format!("{path}?limit=500"), &ann.access).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("validation_failed"))
    );
    assert!(answer["fields"]["limit"].is_array());
    let (status, _) = app.get("/conversations/not-a-number", &ann.access).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            "/conversations",
            Some(&ann.access),
            json!({"kind": "group", "title": " ", "memberIds": []}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .post(
            "/conversations",
            Some(&ann.access),
            json!({"kind": "direct", "peerId": 999999}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, page) = app.get(&path, &ann.access).await;
    assert_eq!(page["messages"], json!([]), "nothing was stored");
}
