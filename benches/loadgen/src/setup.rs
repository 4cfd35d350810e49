//! Users and conversations for a run, made over REST.

use anyhow::{Context, bail};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// A registered user and its access token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub token: String,
}

/// REST calls against one server.
pub struct Rest {
    http: reqwest::Client,
    base: String,
    /// Unique per run, so that runs against one server do not collide.
    run: String,
}

/// Requests in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 16;

impl Rest {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            run: format!("{:08x}", rand::random::<u32>()),
        }
    }

    /// The id that tells this run's users and messages apart.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() == 429 {
            bail!(
                "POST {path}: 429 rate limited ({body}). Start the server with the limits of \
                 benches/loadgen/server.toml (COURIER_CONFIG=benches/loadgen/server.toml)"
            );
        }
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    /// Registers `count` users.
    pub async fn users(&self, count: usize) -> anyhow::Result<Vec<User>> {
        stream::iter(0..count)
            .map(|index| async move {
                let username = format!("lg{}u{index}", self.run);
                let body = json!({"username": username, "password": "loadgen-password"});
                let answer = self.post("/auth/register", None, body).await?;
                Ok::<_, anyhow::Error>(User {
                    id: answer["user"]["id"].as_i64().context("user id")?,
                    token: answer["accessToken"]
                        .as_str()
                        .context("access token")?
                        .to_owned(),
                })
            })
            .buffered(SETUP_CONCURRENCY)
            .try_collect()
            .await
    }

    /// A group of `owner` and `members`; members past the creation limit are added one by
    /// one.
    pub async fn group(&self, owner: &User, members: &[User]) -> anyhow::Result<i64> {
        /// What one create request may name (the server's limit).
        const AT_CREATION: usize = 1000;
        let (first, rest) = members.split_at(members.len().min(AT_CREATION));
        let ids: Vec<i64> = first.iter().map(|user| user.id).collect();
        let body =
            json!({"kind": "group", "title": format!("loadgen {}", self.run), "memberIds": ids});
        let created = self
            .post("/conversations", Some(&owner.token), body)
            .await?;
        let conversation = created["id"].as_i64().context("conversation id")?;
        stream::iter(rest)
            .map(|user| async move {
                let path = format!("/conversations/{conversation}/members");
                self.post(&path, Some(&owner.token), json!({"userId": user.id}))
                    .await
            })
            .buffered(SETUP_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(conversation)
    }

    /// The direct conversation of `a` and `b`.
    pub async fn direct(&self, a: &User, b: &User) -> anyhow::Result<i64> {
        let body = json!({"kind": "direct", "peerId": b.id});
        let created = self.post("/conversations", Some(&a.token), body).await?;
        created["id"].as_i64().context("conversation id")
    }

    /// Direct conversations of each pair, `SETUP_CONCURRENCY` at a time.
    pub async fn directs(&self, pairs: &[(User, User)]) -> anyhow::Result<Vec<i64>> {
        stream::iter(pairs)
            .map(|(a, b)| self.direct(a, b))
            .buffered(SETUP_CONCURRENCY)
            .try_collect()
            .await
    }
}
