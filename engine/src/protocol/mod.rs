//! The wire-facing types: what clients send ([`ClientCommand`]), what the engine pushes
//! ([`ServerEvent`]) and the objects both carry. Transports decode a frame once into a
//! [`ClientCommand`] and frame the bytes of an [`EventFrame`]; nothing else is stringly typed.

mod commands;
mod events;
mod views;

pub use commands::{
    CallSignal, ClientCommand, ConversationRef, DeleteMessage, EditMessage, ReceiptUpdate, Reply,
    SendMessage, StatusUpdate, SyncRequest,
};
pub use events::{
    CallRelayed, EventFrame, MembershipChanged, PresenceChanged, ReceiptAdvanced, ServerEvent,
    StatusChanged, TypingChanged,
};
pub use views::{
    Conversation, ConversationKind, ConversationSummary, Member, MemberRole, Message, Presence,
    PresenceStatus, ReplyPreview,
};
