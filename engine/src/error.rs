//! Errors at the engine's two boundaries: the store below it and its callers above it.

use crate::ids::{ConversationId, MessageId, UserId};

/// What a store operation can fail with. The engine maps these to [`EngineError`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was hit (a taken username, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// The store could not be reached or timed out: worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database reported.
    #[error("store failure: {0}")]
    Database(diesel::result::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// The same failure, for each of the callers that shared a transaction.
    pub(crate) fn for_each_caller(&self) -> Self {
        match self {
            Self::Conflict(reason) => Self::Conflict(reason.clone()),
            Self::NotFound => Self::NotFound,
            Self::Unavailable(reason) => Self::Unavailable(reason.clone()),
            Self::Migration(reason) => Self::Migration(reason.clone()),
            // diesel's error is not `Clone`; the callers need its words, not its kind.
            Self::Database(error) => Self::Database(diesel::result::Error::QueryBuilderError(
                error.to_string().into(),
            )),
        }
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match error {
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Self::Conflict(info.message().to_owned())
            }
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_owned()),
            // SQLite's busy answer: another writer held the lock past busy_timeout.
            Error::DatabaseError(_, ref info) if info.message().contains("database is locked") => {
                Self::Unavailable(info.message().to_owned())
            }
            Error::BrokenTransactionManager => Self::Unavailable(error.to_string()),
            other => Self::Database(other),
        }
    }
}

/// What an engine command can fail with. Variants are named for what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The conversation does not exist, or the caller is not a member of it (the two are
    /// indistinguishable on purpose: outsiders learn nothing).
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
    /// The message does not exist or is not visible to the caller.
    #[error("message {0} not found")]
    MessageNotFound(MessageId),
    /// The user does not exist.
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// The caller may see the target but not do this to it (edit someone else's message).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request contradicts stored state (a clientMsgId reused for another conversation).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is malformed in a way the engine checks (empty body, seq beyond the end).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A limit was exceeded; `retry_after_ms` says when trying again makes sense.
    #[error("rate limited")]
    RateLimited {
        /// Milliseconds until the next attempt can succeed.
        retry_after_ms: u64,
    },
    /// The store or an actor is unavailable; the command did not take effect and can be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure. The cause is logged, not shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// A stable snake_case code for wire protocols (`"not_found"`, `"forbidden"`...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::ConversationNotFound(_) | Self::MessageNotFound(_) | Self::UserNotFound(_) => {
                "not_found"
            }
            Self::Forbidden(_) => "forbidden",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "validation_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            StoreError::Conflict(reason) => Self::Conflict(reason),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<actix::MailboxError> for EngineError {
    fn from(error: actix::MailboxError) -> Self {
        Self::Unavailable(format!("actor mailbox: {error}"))
    }
}
