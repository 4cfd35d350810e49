//! The statements of a group commit on PostgreSQL, as fixed SQL over arrays.
//!
//! diesel prepares a multi-row `INSERT … VALUES` and a raw `sql_query` afresh on every
//! use (their SQL varies, or diesel cannot tell it does not), which costs a `Parse` round
//! trip per commit before anything is executed. These statements bind one array per
//! column instead, so their SQL never changes: diesel prepares each once per connection
//! and a commit's writes go out together, answered in one round trip.
//!
//! The replay check matches (sender, clientMsgId) pairs: diesel can say "sender in these
//! and clientMsgId in those", but PostgreSQL's index scan then probes every combination
//! of the two lists, the square of the commit's sends.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::{Expression, QueryResult, Selectable};

use super::models::{MessageRow, NewMessageRow};

/// Sets each listed conversation's `last_seq`.
#[derive(QueryId)]
pub(super) struct AdvanceLastSeqs {
    ids: Vec<i64>,
    last_seqs: Vec<i64>,
}

impl AdvanceLastSeqs {
    /// From (conversation id, new last_seq) pairs.
    pub(super) fn new(seqs: Vec<(i64, i64)>) -> Self {
        let (ids, last_seqs) = seqs.into_iter().unzip();
        Self { ids, last_seqs }
    }
}

impl QueryFragment<Pg> for AdvanceLastSeqs {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE conversations SET last_seq = advanced.last_seq FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.last_seqs)?;
        out.push_sql(") AS advanced (id, last_seq) WHERE conversations.id = advanced.id");
        Ok(())
    }
}

/// Inserts messages, returning their rows.
#[derive(QueryId)]
pub(super) struct InsertMessages {
    conversation_ids: Vec<i64>,
    seqs: Vec<i64>,
    sender_ids: Vec<i64>,
    client_msg_ids: Vec<String>,
    bodies: Vec<Option<String>>,
    reply_to_ids: Vec<Option<i64>>,
    created_ats: Vec<i64>,
    returning: <MessageRow as Selectable<Pg>>::SelectExpression,
}

impl InsertMessages {
    pub(super) fn new(rows: Vec<NewMessageRow>) -> Self {
        let mut insert = Self {
            conversation_ids: Vec::with_capacity(rows.len()),
            seqs: Vec::with_capacity(rows.len()),
            sender_ids: Vec::with_capacity(rows.len()),
            client_msg_ids: Vec::with_capacity(rows.len()),
            bodies: Vec::with_capacity(rows.len()),
            reply_to_ids: Vec::with_capacity(rows.len()),
            created_ats: Vec::with_capacity(rows.len()),
            returning: <MessageRow as Selectable<Pg>>::construct_selection(),
        };
        for row in rows {
            insert.conversation_ids.push(row.conversation_id);
            insert.seqs.push(row.seq);
            insert.sender_ids.push(row.sender_id);
            insert.client_msg_ids.push(row.client_msg_id);
            insert.bodies.push(row.body);
            insert.reply_to_ids.push(row.reply_to_id);
            insert.created_ats.push(row.created_at);
        }
        insert
    }
}

impl QueryFragment<Pg> for InsertMessages {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO messages \
             (conversation_id, seq, sender_id, client_msg_id, body, reply_to_id, created_at) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.conversation_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.seqs)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.sender_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.client_msg_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.bodies)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.reply_to_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.created_ats)?;
        out.push_sql(") RETURNING ");
        self.returning.walk_ast(out.reborrow())
    }
}

impl Query for InsertMessages {
    type SqlType = <<MessageRow as Selectable<Pg>>::SelectExpression as Expression>::SqlType;
}

/// The messages stored under any of these (sender, clientMsgId) pairs: `senders[i]` goes
/// with `keys[i]`. One index probe per pair.
pub(super) struct StoredSends<'a> {
    senders: &'a [i64],
    keys: &'a [&'a str],
    select: <MessageRow as Selectable<Pg>>::SelectExpression,
}

impl<'a> StoredSends<'a> {
    pub(super) fn new(senders: &'a [i64], keys: &'a [&'a str]) -> Self {
        Self {
            senders,
            keys,
            select: <MessageRow as Selectable<Pg>>::construct_selection(),
        }
    }
}

impl QueryId for StoredSends<'_> {
    type QueryId = StoredSends<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for StoredSends<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ");
        self.select.walk_ast(out.reborrow())?;
        out.push_sql(
            " FROM messages WHERE (messages.sender_id, messages.client_msg_id) IN \
             (SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(self.senders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(self.keys)?;
        out.push_sql("))");
        Ok(())
    }
}

impl Query for StoredSends<'_> {
    type SqlType = <<MessageRow as Selectable<Pg>>::SelectExpression as Expression>::SqlType;
}
