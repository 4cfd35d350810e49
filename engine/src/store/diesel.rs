//! The Diesel store: one implementation for SQLite and PostgreSQL.
//!
//! Every query is written once. [`with_conn!`] expands a query body for each backend's
//! connection type, so the two compile from the same source and only connection set-up
//! differs (the approach of vaultwarden's `db_run!`). diesel-async offers no
//! `MultiConnection` of its own, which is why this small macro exists.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use super::models::{
    ConversationRow, MemberRow, MessageRow, NewConversationRow, NewMessageRow, NewRefreshToken,
    NewUser, ProfileChanges, RefreshTokenRow, UserRow,
};
use super::pg_statements::{AdvanceLastSeqs, InsertMessages, StoredSends};
use super::schema::{conversations, members, messages, refresh_families, refresh_tokens, users};
use super::{
    AppendOutcome, ConversationSends, ConversationStore, MessageStore, NewConversation, NewMessage,
    Store, TokenStore, UserStore, Watermark,
};
use crate::error::StoreError;
use crate::ids::{ConversationId, MessageId, Seq, Timestamp, UserId};
use crate::protocol::{
    Conversation, ConversationKind, ConversationSummary, Member, MemberRole, Message, ReplyPreview,
};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

type SqliteConn = SyncConnectionWrapper<SqliteConnection>;
type Pool<C> = bb8::Pool<AsyncDieselConnectionManager<C>>;

diesel::define_sql_function! {
    /// SQL `lower()`, the same on both backends.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// How hard SQLite works to keep a commit on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `synchronous=FULL`: every commit is fsynced before it is acknowledged, so an acked
    /// message survives a power loss as well as a crash. Group commit keeps this affordable.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits survive a process crash (kill -9) but the last ones
    /// may be lost on power loss or an OS crash. Faster on slow disks.
    Normal,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…` (or `postgresql://…`) for PostgreSQL; a file path or
    /// `sqlite://path` for SQLite.
    pub url: String,
    /// Most pooled connections (PostgreSQL), or readers (SQLite; it always has one writer).
    pub pool_size: u32,
    /// How long a query waits for a pooled connection before failing as unavailable.
    pub connect_timeout: Duration,
    /// SQLite's fsync policy.
    pub sqlite_durability: SqliteDurability,
    /// How long a PostgreSQL operation (checkout included) may take before it fails as
    /// unavailable. SQLite has its own `busy_timeout`.
    pub query_timeout: Duration,
}

impl StoreConfig {
    /// Defaults for a URL: 8 connections, 2 s to get one and 2 s per PostgreSQL
    /// operation, fsync on every commit.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            sqlite_durability: SqliteDurability::Full,
            query_timeout: Duration::from_secs(2),
        }
    }

    fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    fn sqlite_path(&self) -> &str {
        self.url.strip_prefix("sqlite://").unwrap_or(&self.url)
    }
}

enum Backend {
    Postgres(Pool<AsyncPgConnection>),
    /// SQLite allows one writer at a time: a single writer connection queues writes in
    /// the pool instead of failing with "database is locked"; WAL lets readers run beside it.
    Sqlite(SqlitePools),
}

struct SqlitePools {
    writer: Pool<SqliteConn>,
    reader: Pool<SqliteConn>,
}

/// The Diesel implementation of [`Store`] for SQLite and PostgreSQL.
pub struct DieselStore {
    backend: Backend,
    query_timeout: Duration,
    /// Connections of the PostgreSQL pool (SQLite: readers).
    pool_size: u32,
}

impl std::fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        };
        f.debug_struct("DieselStore")
            .field("backend", &backend)
            .finish()
    }
}

/// Checks a connection out of a pool, failing fast as [`StoreError::Unavailable`].
macro_rules! checkout {
    ($pool:expr) => {
        $pool
            .get()
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?
    };
}

/// Runs `$body` with `$conn` bound to a connection of whichever backend the store uses;
/// `$role` is `reader` or `writer` (the same pool on PostgreSQL).
macro_rules! with_conn {
    ($store:expr, $role:ident, |$conn:ident| $body:expr) => {{
        match &$store.backend {
            Backend::Postgres(pool) => {
                // A server that stops answering (paused, or a network partition) holds a
                // query forever: bound it, so callers fail fast and can retry.
                let limit = $store.query_timeout;
                // The bodies are written for a function returning `Result` (the SQLite arm
                // inlines them); here they become an async block's value.
                #[allow(clippy::needless_question_mark)]
                let run = async {
                    let mut pooled = checkout!(pool);
                    let $conn = &mut *pooled;
                    $body
                };
                match tokio::time::timeout(limit, run).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "PostgreSQL did not answer within {} ms",
                        limit.as_millis()
                    ))),
                }
            }
            Backend::Sqlite(pools) => {
                let mut pooled = checkout!(pools.$role);
                let $conn = &mut *pooled;
                $body
            }
        }
    }};
}

/// Takes the conversation row's write lock for the rest of the transaction; the number of
/// rows locked (0 when the conversation does not exist).
macro_rules! lock_conversation {
    ($conn:expr, $conversation:expr) => {
        diesel::update(conversations::table.find($conversation))
            .set(conversations::last_seq.eq(conversations::last_seq))
            .execute($conn)
            .await?
    };
}

/// Up to `limit` rows of `conversation` with seq after `after`, in seq order.
macro_rules! load_messages_after {
    ($conn:expr, $conversation:expr, $after:expr, $limit:expr) => {{
        let rows: Vec<MessageRow> = messages::table
            .filter(messages::conversation_id.eq($conversation.0))
            .filter(messages::seq.gt($after.0))
            .order(messages::seq.asc())
            .limit($limit)
            .select(MessageRow::as_select())
            .load($conn)
            .await?;
        rows
    }};
}

/// Loads the messages that `$rows` reply to and turns the rows into [`Message`]s.
macro_rules! with_replies {
    ($conn:expr, $rows:expr) => {{
        let rows: Vec<MessageRow> = $rows;
        let ids: Vec<i64> = rows.iter().filter_map(|row| row.reply_to_id).collect();
        let targets: Vec<MessageRow> = if ids.is_empty() {
            Vec::new()
        } else {
            messages::table
                .filter(messages::id.eq_any(&ids))
                .select(MessageRow::as_select())
                .load($conn)
                .await?
        };
        let previews: HashMap<i64, ReplyPreview> =
            targets.iter().map(|row| (row.id, row.preview())).collect();
        Ok::<Vec<Message>, StoreError>(attach_previews(rows, &previews))
    }};
}

fn attach_previews(rows: Vec<MessageRow>, previews: &HashMap<i64, ReplyPreview>) -> Vec<Message> {
    rows.into_iter()
        .map(|row| {
            let reply = row.reply_to_id.and_then(|id| previews.get(&id).cloned());
            row.into_message(reply)
        })
        .collect()
}

impl DieselStore {
    /// Connects, creating the SQLite file if needed, and applies pending migrations.
    pub async fn connect(config: StoreConfig) -> Result<Self, StoreError> {
        let store = Self::connect_without_migrating(&config).await?;
        store.migrate(&config).await?;
        Ok(store)
    }

    /// Connects without touching the schema.
    pub async fn connect_without_migrating(config: &StoreConfig) -> Result<Self, StoreError> {
        let backend = if config.is_postgres() {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&config.url);
            // No test query on each checkout: it would cost a round trip per operation.
            // A dead connection fails its query (and is then dropped as broken); a hung
            // server is caught by the query timeout.
            let pool = bb8::Pool::builder()
                .max_size(config.pool_size.max(1))
                .connection_timeout(config.connect_timeout)
                .test_on_check_out(false)
                .build(manager)
                .await
                .map_err(|error| StoreError::Unavailable(error.to_string()))?;
            Backend::Postgres(pool)
        } else {
            let path = config.sqlite_path();
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?;
            }
            let writer = sqlite_pool(path, 1, config).await?;
            let reader = sqlite_pool(path, config.pool_size.max(1), config).await?;
            Backend::Sqlite(SqlitePools { writer, reader })
        };
        Ok(Self {
            backend,
            query_timeout: config.query_timeout,
            pool_size: config.pool_size.max(1),
        })
    }

    /// Applies pending migrations for the backend in `config`.
    ///
    /// Diesel's migration harness is synchronous, so it runs on the blocking pool: for
    /// PostgreSQL through diesel-async's `AsyncConnectionWrapper` (its async harness panics
    /// inside actix's single-threaded runtime).
    pub async fn migrate(&self, config: &StoreConfig) -> Result<(), StoreError> {
        let url = config.url.clone();
        let postgres = config.is_postgres();
        let path = config.sqlite_path().to_owned();
        let outcome = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let failed = |error: Box<dyn std::error::Error + Send + Sync>| {
                StoreError::Migration(error.to_string())
            };
            if postgres {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                let mut conn =
                    <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
                        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                // Several nodes starting together migrate one after another; the lock
                // goes with the connection.
                let lock = diesel::sql_query("SELECT pg_advisory_lock(7370414243)");
                diesel::RunQueryDsl::execute(lock, &mut conn)
                    .map_err(|error| StoreError::Migration(error.to_string()))?;
                conn.run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map_err(failed)?;
            } else {
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                // Another writer may hold the lock: a server on the same file, or the
                // last checkpoint of a store that just closed.
                diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_BUSY_TIMEOUT)
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                conn.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(failed)?;
            }
            Ok(())
        })
        .await;
        outcome.map_err(|error| StoreError::Migration(error.to_string()))?
    }

    /// Which backend this store talks to: `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// How long a SQLite statement waits for another connection's lock before failing with
/// "database is locked".
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000;";

async fn sqlite_pool(
    path: &str,
    size: u32,
    config: &StoreConfig,
) -> Result<Pool<SqliteConn>, StoreError> {
    let synchronous = match config.sqlite_durability {
        SqliteDurability::Full => "FULL",
        SqliteDurability::Normal => "NORMAL",
    };
    // WAL lets readers run beside the writer; busy_timeout covers the moments a
    // checkpoint or another process holds the lock (it comes first: switching a new file
    // to WAL takes the lock too); foreign keys are off by default.
    let pragmas = format!(
        "{SQLITE_BUSY_TIMEOUT} PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA foreign_keys = ON;"
    );
    let mut manager_config = ManagerConfig::<SqliteConn>::default();
    manager_config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let pragmas = pragmas.clone();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(&pragmas)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path, manager_config);
    bb8::Pool::builder()
        .max_size(size)
        .connection_timeout(config.connect_timeout)
        .build(manager)
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))
}

/// The (id, last_seq) of each locked conversation, and the messages already stored under
/// a commit's (sender, clientMsgId) keys.
type LockedAndStored = (Vec<(i64, i64)>, Vec<MessageRow>);

/// The one place the backends differ: the statements of a group commit. PostgreSQL gets one
/// statement for each, pipelined where one does not need the other's answer; SQLite runs
/// in process (one writer, so nothing to order locks against), and several statements go
/// in one blocking-pool hop there, since its async wrapper runs each query as a hop.
trait BackendWrites: Send {
    /// Write-locks the conversations' rows for the rest of the transaction, in id order,
    /// and returns the (id, last_seq) of those that exist; then reads the messages already
    /// stored under any of the (sender, clientMsgId) pairs (`senders[i]` with `keys[i]`).
    /// The read follows the lock, so it sees every commit that held the lock before.
    fn lock_and_find_stored<'a>(
        &'a mut self,
        ids: Vec<i64>,
        senders: &'a [i64],
        keys: &'a [&'a str],
    ) -> impl Future<Output = QueryResult<LockedAndStored>> + Send + 'a;
    /// Sets each conversation's `last_seq` ((id, last_seq) pairs) and inserts the
    /// messages those seqs were given, returning their rows.
    fn advance_and_insert(
        &mut self,
        seqs: Vec<(i64, i64)>,
        rows: Vec<NewMessageRow>,
    ) -> impl Future<Output = QueryResult<Vec<MessageRow>>> + Send;
    /// Inserts memberships.
    fn insert_members(
        &mut self,
        rows: Vec<MemberRow>,
    ) -> impl Future<Output = QueryResult<usize>> + Send;
}

// Statements polled together on `&AsyncPgConnection` are pipelined by diesel-async: all
// are sent before the first is answered, and PostgreSQL runs them in the order sent. The
// group commit pairs them so that a warm commit takes four round trips: BEGIN, the lock
// with the replay check, the writes, COMMIT.
impl BackendWrites for AsyncPgConnection {
    async fn lock_and_find_stored(
        &mut self,
        ids: Vec<i64>,
        senders: &[i64],
        keys: &[&str],
    ) -> QueryResult<LockedAndStored> {
        let mut conn: &AsyncPgConnection = self;
        // Rows are locked in the order they are read: in id order, two nodes' commits that
        // share conversations queue behind each other instead of deadlocking.
        let lock = conversations::table
            .filter(conversations::id.eq_any(ids))
            .order(conversations::id.asc())
            .select((conversations::id, conversations::last_seq))
            .for_update()
            .load(&mut conn);
        // Under READ COMMITTED each statement reads what was committed when it starts, and
        // this one starts once the lock is held.
        let stored = StoredSends::new(senders, keys).load(&mut conn);
        futures_util::future::try_join(lock, stored).await
    }

    async fn advance_and_insert(
        &mut self,
        seqs: Vec<(i64, i64)>,
        rows: Vec<NewMessageRow>,
    ) -> QueryResult<Vec<MessageRow>> {
        let mut conn: &AsyncPgConnection = self;
        let advance = AdvanceLastSeqs::new(seqs).execute(&mut conn);
        let insert = InsertMessages::new(rows).get_results(&mut conn);
        let (_, inserted) = futures_util::future::try_join(advance, insert).await?;
        Ok(inserted)
    }

    async fn insert_members(&mut self, rows: Vec<MemberRow>) -> QueryResult<usize> {
        diesel::insert_into(members::table)
            .values(&rows)
            .execute(self)
            .await
    }
}

impl BackendWrites for SqliteConn {
    async fn lock_and_find_stored(
        &mut self,
        ids: Vec<i64>,
        senders: &[i64],
        keys: &[&str],
    ) -> QueryResult<LockedAndStored> {
        // The blocking pool needs owned values.
        let senders = senders.to_vec();
        let keys: Vec<String> = keys.iter().map(|&key| key.to_owned()).collect();
        // One hop to the blocking pool for both.
        self.spawn_blocking(move |conn| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            // A write as the first statement takes SQLite's write lock at once, so the
            // transaction never has to upgrade a read snapshot another process made stale.
            let locked = diesel::RunQueryDsl::load(
                diesel::update(conversations::table.filter(conversations::id.eq_any(ids)))
                    .set(conversations::last_seq.eq(conversations::last_seq))
                    .returning((conversations::id, conversations::last_seq)),
                conn,
            )?;
            // One probe of the unique index per pair: SQLite, like PostgreSQL, would
            // probe every combination of two `IN` lists.
            let mut stored = Vec::new();
            for (&sender, &key) in senders.iter().zip(&keys) {
                let found = diesel::RunQueryDsl::get_result(
                    messages::table
                        .filter(messages::sender_id.eq(sender))
                        .filter(messages::client_msg_id.eq(key))
                        .select(MessageRow::as_select()),
                    conn,
                )
                .optional()?;
                stored.extend(found);
            }
            Ok((locked, stored))
        })
        .await
    }

    async fn advance_and_insert(
        &mut self,
        seqs: Vec<(i64, i64)>,
        rows: Vec<NewMessageRow>,
    ) -> QueryResult<Vec<MessageRow>> {
        // One hop to the blocking pool for all of it.
        self.spawn_blocking(move |conn| {
            for (id, last_seq) in seqs {
                diesel::RunQueryDsl::execute(
                    diesel::update(conversations::table.find(id))
                        .set(conversations::last_seq.eq(last_seq)),
                    conn,
                )?;
            }
            rows.iter()
                .map(|row| {
                    diesel::RunQueryDsl::get_result(
                        diesel::insert_into(messages::table)
                            .values(row)
                            .returning(MessageRow::as_returning()),
                        conn,
                    )
                })
                .collect()
        })
        .await
    }

    async fn insert_members(&mut self, rows: Vec<MemberRow>) -> QueryResult<usize> {
        self.spawn_blocking(move |conn| {
            diesel::RunQueryDsl::execute(diesel::insert_into(members::table).values(rows), conn)
        })
        .await
    }
}

fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for ch in prefix.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

/// The members to insert for a new conversation: the creator as owner, then the others
/// once each, in the order given.
fn member_rows(conversation: i64, new: &NewConversation, now: i64) -> Vec<MemberRow> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once((new.created_by, MemberRole::Owner))
        .chain(new.members.iter().map(|&user| (user, MemberRole::Member)))
        .filter(|(user, _)| seen.insert(*user))
        .map(|(user, role)| MemberRow {
            conversation_id: conversation,
            user_id: user.0,
            role: role.as_str().to_owned(),
            delivered_seq: 0,
            read_seq: 0,
            joined_at: now,
        })
        .collect()
}

/// How one send of a group commit is settled, decided before anything is written.
enum Settled {
    /// The n-th row its batch inserts.
    Insert(usize),
    /// Already stored before this commit.
    Existing(MessageRow),
    /// Sent earlier in this commit, to the same conversation: the same result as that
    /// send (its batch and position).
    SameAs {
        batch: usize,
        index: usize,
    },
    ReplyNotFound(MessageId),
    ClientMsgIdReused,
}

/// The first send of each (sender, clientMsgId) in a commit: its conversation, batch and
/// position.
type Claims<'a> = HashMap<(i64, &'a str), (i64, usize, usize)>;

/// Decides the fate of each send of one batch: replays of stored sends, repeats within the
/// commit and replies to messages outside the conversation are settled without a write.
/// Returns the settlements and the positions of the sends to insert.
fn settle_batch<'a>(
    batch: usize,
    conversation: i64,
    sends: &'a [NewMessage],
    prior: &HashMap<(i64, &str), &MessageRow>,
    claims: &mut Claims<'a>,
    reply_targets: &HashMap<i64, MessageRow>,
) -> (Vec<Settled>, Vec<usize>) {
    let mut inserts = Vec::new();
    let settled = sends
        .iter()
        .enumerate()
        .map(|(index, send)| {
            let key = (send.sender_id.0, send.client_msg_id.as_str());
            if let Some(row) = prior.get(&key) {
                return if row.conversation_id == conversation {
                    Settled::Existing((*row).clone())
                } else {
                    Settled::ClientMsgIdReused
                };
            }
            if let Some(&(claimed_in, batch, index)) = claims.get(&key) {
                return if claimed_in == conversation {
                    Settled::SameAs { batch, index }
                } else {
                    Settled::ClientMsgIdReused
                };
            }
            if let Some(reply) = send.reply_to_id {
                let in_conversation = reply_targets
                    .get(&reply.0)
                    .is_some_and(|target| target.conversation_id == conversation);
                if !in_conversation {
                    return Settled::ReplyNotFound(reply);
                }
            }
            claims.insert(key, (conversation, batch, index));
            inserts.push(index);
            Settled::Insert(inserts.len() - 1)
        })
        .collect();
    (settled, inserts)
}

#[async_trait]
impl UserStore for DieselStore {
    async fn create_user(&self, user: NewUser) -> Result<UserRow, StoreError> {
        with_conn!(self, writer, |conn| {
            Ok(diesel::insert_into(users::table)
                .values(&user)
                .returning(UserRow::as_returning())
                .get_result(conn)
                .await?)
        })
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, reader, |conn| {
            Ok(users::table
                .find(id.0)
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, reader, |conn| {
            Ok(users::table
                .filter(users::username.eq(username))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRow>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
        with_conn!(self, reader, |conn| {
            Ok(users::table
                .filter(users::id.eq_any(&ids))
                .select(UserRow::as_select())
                .load(conn)
                .await?)
        })
    }

    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<UserRow>, StoreError> {
        let pattern = like_prefix(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_conn!(self, reader, |conn| {
            Ok(users::table
                .filter(
                    users::username
                        .like(&pattern)
                        .escape('\\')
                        .or(lower(users::display_name).like(&pattern).escape('\\')),
                )
                .order(users::username.asc())
                .limit(limit)
                .select(UserRow::as_select())
                .load(conn)
                .await?)
        })
    }

    async fn update_profile(
        &self,
        id: UserId,
        changes: ProfileChanges,
    ) -> Result<UserRow, StoreError> {
        if changes.display_name.is_none() && changes.status_text.is_none() {
            return self.user_by_id(id).await?.ok_or(StoreError::NotFound);
        }
        with_conn!(self, writer, |conn| {
            Ok(diesel::update(users::table.find(id.0))
                .set(&changes)
                .returning(UserRow::as_returning())
                .get_result(conn)
                .await
                .optional()?
                .ok_or(StoreError::NotFound)?)
        })
    }

    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> Result<(), StoreError> {
        with_conn!(self, writer, |conn| {
            diesel::update(users::table.find(id.0))
                .set(users::last_seen_at.eq(Some(at.0)))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    async fn set_last_seen_many(&self, seen: &[(UserId, Timestamp)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                for (id, at) in seen {
                    diesel::update(users::table.find(id.0))
                        .set(users::last_seen_at.eq(Some(at.0)))
                        .execute(c)
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
            .await
        })
    }

    async fn contacts_of_many(&self, ids: &[UserId]) -> Result<Vec<(UserId, UserId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
        with_conn!(self, reader, |conn| {
            let mine = diesel::alias!(members as mine);
            let pairs: Vec<(i64, i64)> = members::table
                .inner_join(
                    mine.on(mine
                        .field(members::conversation_id)
                        .eq(members::conversation_id)),
                )
                .filter(mine.field(members::user_id).eq_any(&ids))
                .filter(members::user_id.ne(mine.field(members::user_id)))
                .select((mine.field(members::user_id), members::user_id))
                .distinct()
                .load(conn)
                .await?;
            Ok(pairs
                .into_iter()
                .map(|(user, contact)| (UserId(user), UserId(contact)))
                .collect())
        })
    }

    async fn contacts_of(&self, id: UserId) -> Result<Vec<UserId>, StoreError> {
        with_conn!(self, reader, |conn| {
            let mine = diesel::alias!(members as mine);
            let ids: Vec<i64> = members::table
                .inner_join(
                    mine.on(mine
                        .field(members::conversation_id)
                        .eq(members::conversation_id)),
                )
                .filter(mine.field(members::user_id).eq(id.0))
                .filter(members::user_id.ne(id.0))
                .select(members::user_id)
                .distinct()
                .load(conn)
                .await?;
            Ok(ids.into_iter().map(UserId).collect())
        })
    }
}

#[async_trait]
impl ConversationStore for DieselStore {
    async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<(Conversation, bool), StoreError> {
        let now = Timestamp::now().0;
        let key = match (new.kind, new.members.as_slice()) {
            (ConversationKind::Direct, [peer]) => Some(direct_key(new.created_by, *peer)),
            _ => None,
        };
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                if let Some(key) = &key {
                    let existing: Option<ConversationRow> = conversations::table
                        .filter(conversations::direct_key.eq(key))
                        .select(ConversationRow::as_select())
                        .first(c)
                        .await
                        .optional()?;
                    if let Some(row) = existing {
                        let members: Vec<MemberRow> = members::table
                            .filter(members::conversation_id.eq(row.id))
                            .order(members::joined_at.asc())
                            .select(MemberRow::as_select())
                            .load(c)
                            .await?;
                        let members = members.into_iter().map(MemberRow::into_member).collect();
                        return Ok((row.into_conversation(members), false));
                    }
                }
                let row: ConversationRow = diesel::insert_into(conversations::table)
                    .values(&NewConversationRow {
                        kind: new.kind.as_str().to_owned(),
                        title: new.title.clone(),
                        direct_key: key.clone(),
                        last_seq: 0,
                        created_by: new.created_by.0,
                        created_at: now,
                    })
                    .returning(ConversationRow::as_returning())
                    .get_result(c)
                    .await?;
                let rows = member_rows(row.id, &new, now);
                c.insert_members(rows.clone()).await?;
                let members = rows.into_iter().map(MemberRow::into_member).collect();
                Ok((row.into_conversation(members), true))
            })
            .await
        })
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        with_conn!(self, reader, |conn| {
            let row: Option<ConversationRow> = conversations::table
                .find(id.0)
                .select(ConversationRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else { return Ok(None) };
            let members: Vec<MemberRow> = members::table
                .filter(members::conversation_id.eq(id.0))
                .order((members::joined_at.asc(), members::user_id.asc()))
                .select(MemberRow::as_select())
                .load(conn)
                .await?;
            let members = members.into_iter().map(MemberRow::into_member).collect();
            Ok(Some(row.into_conversation(members)))
        })
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError> {
        with_conn!(self, reader, |conn| {
            let rows: Vec<MemberRow> = members::table
                .filter(members::conversation_id.eq(id.0))
                .order((members::joined_at.asc(), members::user_id.asc()))
                .select(MemberRow::as_select())
                .load(conn)
                .await?;
            Ok(rows.into_iter().map(MemberRow::into_member).collect())
        })
    }

    async fn add_member(
        &self,
        id: ConversationId,
        user: UserId,
        role: MemberRole,
    ) -> Result<bool, StoreError> {
        let row = MemberRow {
            conversation_id: id.0,
            user_id: user.0,
            role: role.as_str().to_owned(),
            delivered_seq: 0,
            read_seq: 0,
            joined_at: Timestamp::now().0,
        };
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                let exists: i64 = members::table
                    .filter(members::conversation_id.eq(id.0))
                    .filter(members::user_id.eq(user.0))
                    .count()
                    .get_result(c)
                    .await?;
                if exists > 0 {
                    return Ok(false);
                }
                diesel::insert_into(members::table)
                    .values(&row)
                    .execute(c)
                    .await?;
                Ok(true)
            })
            .await
        })
    }

    async fn remove_member(&self, id: ConversationId, user: UserId) -> Result<bool, StoreError> {
        with_conn!(self, writer, |conn| {
            let removed = diesel::delete(
                members::table
                    .filter(members::conversation_id.eq(id.0))
                    .filter(members::user_id.eq(user.0)),
            )
            .execute(conn)
            .await?;
            Ok(removed > 0)
        })
    }

    async fn memberships_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, ConversationId, Seq)>, StoreError> {
        let mut found = Vec::new();
        // A query per chunk: SQLite bounds the parameters of a statement, and a PostgreSQL
        // query has to answer within the query timeout.
        for chunk in users.chunks(super::USERS_PER_MEMBERSHIP_READ) {
            let ids: Vec<i64> = chunk.iter().map(|user| user.0).collect();
            let rows: Vec<(i64, i64, i64)> = with_conn!(self, reader, |conn| {
                Ok(conversations::table
                    .inner_join(members::table)
                    .filter(members::user_id.eq_any(&ids))
                    .select((members::user_id, conversations::id, conversations::last_seq))
                    .load(conn)
                    .await?)
            })?;
            found.extend(
                rows.into_iter()
                    .map(|(user, id, seq)| (UserId(user), ConversationId(id), Seq(seq))),
            );
        }
        Ok(found)
    }

    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationSummary>, StoreError> {
        with_conn!(self, reader, |conn| {
            let mine: Vec<ConversationRow> = conversations::table
                .inner_join(members::table)
                .filter(members::user_id.eq(user.0))
                .select(ConversationRow::as_select())
                .load(conn)
                .await?;
            if mine.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = mine.iter().map(|row| row.id).collect();
            let all_members: Vec<MemberRow> = members::table
                .filter(members::conversation_id.eq_any(&ids))
                .order((members::joined_at.asc(), members::user_id.asc()))
                .select(MemberRow::as_select())
                .load(conn)
                .await?;
            let last_rows: Vec<MessageRow> = messages::table
                .inner_join(
                    conversations::table.on(conversations::id
                        .eq(messages::conversation_id)
                        .and(conversations::last_seq.eq(messages::seq))),
                )
                .filter(messages::conversation_id.eq_any(&ids))
                .select(MessageRow::as_select())
                .load(conn)
                .await?;
            let unread: Vec<(i64, i64)> = messages::table
                .inner_join(
                    members::table.on(members::conversation_id
                        .eq(messages::conversation_id)
                        .and(members::user_id.eq(user.0))),
                )
                .filter(messages::seq.gt(members::read_seq))
                .filter(messages::sender_id.ne(user.0))
                .filter(messages::deleted_at.is_null())
                .group_by(messages::conversation_id)
                .select((messages::conversation_id, diesel::dsl::count_star()))
                .load(conn)
                .await?;
            let last_messages = with_replies!(conn, last_rows)?;
            Ok(summarise(mine, all_members, last_messages, unread))
        })
    }

    async fn advance_watermark(
        &self,
        id: ConversationId,
        user: UserId,
        watermark: Watermark,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                let mine = members::table
                    .filter(members::conversation_id.eq(id.0))
                    .filter(members::user_id.eq(user.0));
                let delivered = diesel::update(mine.filter(members::delivered_seq.lt(seq.0)))
                    .set(members::delivered_seq.eq(seq.0))
                    .execute(c)
                    .await?;
                if watermark == Watermark::Delivered {
                    return Ok(delivered > 0);
                }
                let read = diesel::update(mine.filter(members::read_seq.lt(seq.0)))
                    .set(members::read_seq.eq(seq.0))
                    .execute(c)
                    .await?;
                Ok(read > 0)
            })
            .await
        })
    }
}

fn summarise(
    conversations: Vec<ConversationRow>,
    members: Vec<MemberRow>,
    last_messages: Vec<Message>,
    unread: Vec<(i64, i64)>,
) -> Vec<ConversationSummary> {
    let mut members_of: HashMap<i64, Vec<Member>> = HashMap::new();
    for row in members {
        members_of
            .entry(row.conversation_id)
            .or_default()
            .push(row.into_member());
    }
    let mut last_of: HashMap<ConversationId, Message> = last_messages
        .into_iter()
        .map(|message| (message.conversation_id, message))
        .collect();
    let unread_of: HashMap<i64, i64> = unread.into_iter().collect();
    let mut summaries: Vec<ConversationSummary> = conversations
        .into_iter()
        .map(|row| {
            let id = row.id;
            let conversation = row.into_conversation(members_of.remove(&id).unwrap_or_default());
            ConversationSummary {
                last_message: last_of.remove(&conversation.id),
                unread_count: unread_of.get(&id).copied().unwrap_or(0),
                conversation,
            }
        })
        .collect();
    let activity = |summary: &ConversationSummary| {
        summary
            .last_message
            .as_ref()
            .map_or(summary.conversation.created_at, |message| {
                message.created_at
            })
    };
    summaries.sort_by(|a, b| {
        activity(b)
            .cmp(&activity(a))
            .then(b.conversation.id.cmp(&a.conversation.id))
    });
    summaries
}

/// Turns one batch's settled sends into outcomes; a repeated send gets the result of its
/// first occurrence (in this batch or in an `earlier` one of the commit), as a retry would.
fn outcomes(
    settled: Vec<Settled>,
    created: Vec<Message>,
    earlier: &[Result<Vec<AppendOutcome>, StoreError>],
    previews: &HashMap<i64, ReplyPreview>,
) -> Result<Vec<AppendOutcome>, StoreError> {
    // The database disagreed with the plan (fewer rows than planned, say): the
    // transaction must not commit.
    let disagreed = || StoreError::Database(diesel::result::Error::NotFound);
    let mut results: Vec<AppendOutcome> = Vec::with_capacity(settled.len());
    for settled in settled {
        let outcome = match settled {
            Settled::Insert(n) => {
                AppendOutcome::Created(created.get(n).cloned().ok_or_else(disagreed)?)
            }
            Settled::SameAs { batch, index } => {
                let first = if batch == earlier.len() {
                    results.get(index)
                } else {
                    earlier
                        .get(batch)
                        .and_then(|outcomes| outcomes.as_ref().ok())
                        .and_then(|outcomes| outcomes.get(index))
                };
                match first.ok_or_else(disagreed)? {
                    AppendOutcome::Created(message) | AppendOutcome::Existing(message) => {
                        AppendOutcome::Existing(message.clone())
                    }
                    other => other.clone(),
                }
            }
            Settled::Existing(row) => {
                let reply = row.reply_to_id.and_then(|id| previews.get(&id).cloned());
                AppendOutcome::Existing(row.into_message(reply))
            }
            Settled::ReplyNotFound(id) => AppendOutcome::ReplyNotFound(id),
            Settled::ClientMsgIdReused => AppendOutcome::ClientMsgIdReused,
        };
        results.push(outcome);
    }
    Ok(results)
}

#[async_trait]
impl MessageStore for DieselStore {
    async fn append_message_batches(
        &self,
        batches: Vec<ConversationSends>,
    ) -> Result<Vec<Result<Vec<AppendOutcome>, StoreError>>, StoreError> {
        if batches.iter().all(|batch| batch.sends.is_empty()) {
            return Ok(batches.iter().map(|_| Ok(Vec::new())).collect());
        }
        let now = Timestamp::now().0;
        let mut conversation_ids: Vec<i64> = batches.iter().map(|b| b.conversation.0).collect();
        conversation_ids.sort_unstable();
        conversation_ids.dedup();
        let sends = || batches.iter().flat_map(|batch| &batch.sends);
        // One (sender, clientMsgId) pair per send, for the replay check.
        let senders: Vec<i64> = sends().map(|send| send.sender_id.0).collect();
        let keys: Vec<&str> = sends().map(|send| send.client_msg_id.as_str()).collect();
        with_conn!(self, writer, |conn| {
            // A concurrent commit elsewhere (another node) may insert the same (sender,
            // clientMsgId) between this transaction's check and insert: the unique index
            // refuses it, and a second attempt settles it as a replay.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let committed = conn
                    .transaction(async |c| {
                        // The conversation rows are locked first: commits for one
                        // conversation then run one after the other (across nodes too),
                        // so the replay check below sees every earlier one and seq stays
                        // gap-free. Conversations that do not exist are not returned.
                        let (locked, prior_rows) = c
                            .lock_and_find_stored(conversation_ids.clone(), &senders, &keys)
                            .await?;
                        let locked: HashMap<i64, i64> = locked.into_iter().collect();
                        let prior: HashMap<(i64, &str), &MessageRow> = prior_rows
                            .iter()
                            .map(|row| ((row.sender_id, row.client_msg_id.as_str()), row))
                            .collect();
                        let reply_ids: Vec<i64> = sends()
                            .filter_map(|send| send.reply_to_id.map(|id| id.0))
                            .chain(prior_rows.iter().filter_map(|row| row.reply_to_id))
                            .collect();
                        let targets: HashMap<i64, MessageRow> = if reply_ids.is_empty() {
                            HashMap::new()
                        } else {
                            let rows: Vec<MessageRow> = messages::table
                                .filter(messages::id.eq_any(&reply_ids))
                                .select(MessageRow::as_select())
                                .load(c)
                                .await?;
                            rows.into_iter().map(|row| (row.id, row)).collect()
                        };

                        // Each batch's plan: its settlements and the seqs of its inserts,
                        // or `None` for a conversation that does not exist.
                        let mut plans = Vec::with_capacity(batches.len());
                        let mut last_seqs = locked.clone();
                        let mut claims = Claims::new();
                        let mut rows: Vec<NewMessageRow> = Vec::new();
                        for (index, batch) in batches.iter().enumerate() {
                            let conv = batch.conversation.0;
                            let Some(last_seq) = last_seqs.get_mut(&conv) else {
                                plans.push(None);
                                continue;
                            };
                            let (settled, inserts) = settle_batch(
                                index,
                                conv,
                                &batch.sends,
                                &prior,
                                &mut claims,
                                &targets,
                            );
                            let first_seq = *last_seq + 1;
                            *last_seq += i64::try_from(inserts.len()).unwrap_or(i64::MAX);
                            rows.extend(inserts.iter().zip(first_seq..).map(|(&at, seq)| {
                                let send = &batch.sends[at];
                                NewMessageRow {
                                    conversation_id: conv,
                                    seq,
                                    sender_id: send.sender_id.0,
                                    client_msg_id: send.client_msg_id.clone(),
                                    body: Some(send.body.clone()),
                                    reply_to_id: send.reply_to_id.map(|id| id.0),
                                    created_at: now,
                                }
                            }));
                            plans.push(Some((settled, first_seq..*last_seq + 1)));
                        }

                        let mut inserted: HashMap<(i64, i64), MessageRow> = HashMap::new();
                        if !rows.is_empty() {
                            let advanced: Vec<(i64, i64)> = last_seqs
                                .iter()
                                .filter(|&(id, seq)| locked.get(id) != Some(seq))
                                .map(|(&id, &seq)| (id, seq))
                                .collect();
                            inserted = c
                                .advance_and_insert(advanced, rows)
                                .await?
                                .into_iter()
                                .map(|row| ((row.conversation_id, row.seq), row))
                                .collect();
                        }
                        let previews: HashMap<i64, ReplyPreview> = targets
                            .values()
                            .map(|row| (row.id, row.preview()))
                            .collect();
                        let mut results = Vec::with_capacity(batches.len());
                        for (batch, plan) in batches.iter().zip(plans) {
                            let Some((settled, seqs)) = plan else {
                                results.push(Err(StoreError::NotFound));
                                continue;
                            };
                            let conv = batch.conversation.0;
                            let created: Vec<MessageRow> = seqs
                                .map(|seq| inserted.remove(&(conv, seq)))
                                .collect::<Option<_>>()
                                .ok_or(StoreError::Database(diesel::result::Error::NotFound))?;
                            let created = attach_previews(created, &previews);
                            let outcome = outcomes(settled, created, &results, &previews)?;
                            results.push(Ok(outcome));
                        }
                        Ok(results)
                    })
                    .await;
                match committed {
                    Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                    other => break other,
                }
            }
        })
    }

    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_conn!(self, reader, |conn| {
            let rows = load_messages_after!(conn, conversation, after, limit);
            with_replies!(conn, rows)
        })
    }

    async fn settled_messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                // The conversation row lock that every commit takes first: a commit still
                // running (its caller gave up waiting) finishes before this reads.
                lock_conversation!(c, conversation.0);
                let rows = load_messages_after!(c, conversation, after, limit);
                with_replies!(c, rows)
            })
            .await
        })
    }

    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_conn!(self, reader, |conn| {
            let mut rows: Vec<MessageRow> = messages::table
                .filter(messages::conversation_id.eq(conversation.0))
                .filter(messages::seq.lt(before.0))
                .order(messages::seq.desc())
                .limit(limit)
                .select(MessageRow::as_select())
                .load(conn)
                .await?;
            rows.reverse();
            with_replies!(conn, rows)
        })
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        with_conn!(self, reader, |conn| {
            let rows: Vec<MessageRow> = messages::table
                .find(id.0)
                .select(MessageRow::as_select())
                .load(conn)
                .await?;
            Ok(with_replies!(conn, rows)?.pop())
        })
    }

    async fn edit_message(
        &self,
        id: MessageId,
        body: String,
        at: Timestamp,
    ) -> Result<Message, StoreError> {
        with_conn!(self, writer, |conn| {
            let row: MessageRow = diesel::update(
                messages::table
                    .find(id.0)
                    .filter(messages::deleted_at.is_null()),
            )
            .set((
                messages::body.eq(Some(body)),
                messages::edited_at.eq(Some(at.0)),
            ))
            .returning(MessageRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
            .ok_or(StoreError::NotFound)?;
            Ok(with_replies!(conn, vec![row])?
                .pop()
                .ok_or(StoreError::NotFound)?)
        })
    }

    async fn delete_message(&self, id: MessageId, at: Timestamp) -> Result<Message, StoreError> {
        with_conn!(self, writer, |conn| {
            diesel::update(
                messages::table
                    .find(id.0)
                    .filter(messages::deleted_at.is_null()),
            )
            .set((
                messages::body.eq(None::<String>),
                messages::deleted_at.eq(Some(at.0)),
            ))
            .execute(conn)
            .await?;
            let rows: Vec<MessageRow> = messages::table
                .find(id.0)
                .select(MessageRow::as_select())
                .load(conn)
                .await?;
            Ok(with_replies!(conn, rows)?
                .pop()
                .ok_or(StoreError::NotFound)?)
        })
    }
}

#[async_trait]
impl TokenStore for DieselStore {
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                diesel::insert_into(refresh_families::table)
                    .values((
                        refresh_families::family_id.eq(&token.family_id),
                        refresh_families::user_id.eq(token.user_id),
                        refresh_families::created_at.eq(token.created_at),
                    ))
                    .execute(c)
                    .await?;
                diesel::insert_into(refresh_tokens::table)
                    .values(&token)
                    .execute(c)
                    .await?;
                Ok(())
            })
            .await
        })
    }

    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRow>, StoreError> {
        with_conn!(self, reader, |conn| {
            let found: Option<(RefreshTokenRow, Option<i64>)> = refresh_tokens::table
                .inner_join(
                    refresh_families::table
                        .on(refresh_families::family_id.eq(refresh_tokens::family_id)),
                )
                .filter(refresh_tokens::token_hash.eq(token_hash))
                .select((RefreshTokenRow::as_select(), refresh_families::revoked_at))
                .first(conn)
                .await
                .optional()?;
            Ok(found.map(|(mut row, family_revoked)| {
                row.revoked_at = family_revoked;
                row
            }))
        })
    }

    async fn rotate_refresh_token(
        &self,
        spent: i64,
        next: NewRefreshToken,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        with_conn!(self, writer, |conn| {
            conn.transaction(async |c| {
                // Locks the family row: a concurrent revocation waits, or went first.
                let live = diesel::update(
                    refresh_families::table
                        .find(&next.family_id)
                        .filter(refresh_families::revoked_at.is_null()),
                )
                .set(refresh_families::family_id.eq(refresh_families::family_id))
                .execute(c)
                .await?;
                if live == 0 {
                    return Ok(false);
                }
                let spent_now = diesel::update(
                    refresh_tokens::table
                        .find(spent)
                        .filter(refresh_tokens::spent_at.is_null()),
                )
                .set(refresh_tokens::spent_at.eq(Some(at.0)))
                .execute(c)
                .await?;
                if spent_now == 0 {
                    return Ok(false);
                }
                diesel::insert_into(refresh_tokens::table)
                    .values(&next)
                    .execute(c)
                    .await?;
                Ok(true)
            })
            .await
        })
    }

    async fn revoke_token_family(&self, family_id: &str, at: Timestamp) -> Result<(), StoreError> {
        with_conn!(self, writer, |conn| {
            diesel::update(
                refresh_families::table
                    .find(family_id)
                    .filter(refresh_families::revoked_at.is_null()),
            )
            .set(refresh_families::revoked_at.eq(Some(at.0)))
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

#[async_trait]
impl Store for DieselStore {
    async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, reader, |conn| {
            conn.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    fn concurrent_writers(&self) -> usize {
        match &self.backend {
            Backend::Postgres(_) => self.pool_size as usize,
            // One writer connection: a second group commit would queue for it.
            Backend::Sqlite(_) => 1,
        }
    }

    fn commits_on_own_thread(&self) -> bool {
        // SQLite's queries run on the blocking pool, so a commit's async side is only the
        // hops; PostgreSQL's connections do their I/O on the executor that opened them,
        // and a commit thread of their own (tried, BENCHMARKS.md) made `pairs` slower.
        matches!(self.backend, Backend::Sqlite(_))
    }
}
