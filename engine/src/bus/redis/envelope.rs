//! What travels on the Redis channels: an event frame with its audience, or a control
//! note (a member joined or left, a member list changed, some such note was lost).
//!
//! A fixed binary header, written by hand: the frame's JSON is forwarded as it was
//! serialised on the publishing node, never parsed or re-encoded on the way, and the
//! header costs a few dozen bytes. Nodes of one cluster run the same version; a payload
//! that does not parse is dropped with a warning.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ids::{ConversationId, Seq, UserId};
use crate::protocol::{EventFrame, ServerEvent};

const MEMBERS: u8 = 1;
const USERS: u8 = 2;
const JOINED: u8 = 3;
const LEFT: u8 = 4;
const ROSTER: u8 = 5;
const RESYNC: u8 = 6;

const EPHEMERAL: u8 = 1;
const HAS_CONVERSATION: u8 = 2;

/// One message on a channel, with the node that published it.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) origin: u128,
    pub(crate) body: Body,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A conversation event for these members (those on the receiving node get it).
    Members {
        conversation: ConversationId,
        seq: Option<Seq>,
        except: Option<UserId>,
        members: Arc<[UserId]>,
        frame: EventFrame,
    },
    /// An event for every session of these users, of an audience of `audience` users in
    /// all (an event for many users travels as one envelope per user channel).
    Users {
        users: Arc<[UserId]>,
        audience: u32,
        frame: EventFrame,
    },
    /// `user` joined `conversation` after its seq `after`: their nodes subscribe to it.
    Joined {
        conversation: ConversationId,
        user: UserId,
        after: Seq,
    },
    /// `user` left `conversation`: their nodes may unsubscribe.
    Left {
        conversation: ConversationId,
        user: UserId,
    },
    /// The member list of `conversation` changed: conversation actors reload it.
    Roster { conversation: ConversationId },
    /// A control note of the publisher's was dropped: every node reloads its member
    /// lists and reads its users' memberships again.
    Resync,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed bus envelope: {0}")]
pub(crate) struct Malformed(&'static str);

impl Envelope {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        let kind = match &self.body {
            Body::Members { .. } => MEMBERS,
            Body::Users { .. } => USERS,
            Body::Joined { .. } => JOINED,
            Body::Left { .. } => LEFT,
            Body::Roster { .. } => ROSTER,
            Body::Resync => RESYNC,
        };
        out.put_u8(kind);
        out.put_u128_le(self.origin);
        match &self.body {
            Body::Members {
                conversation,
                seq,
                except,
                members,
                frame,
            } => {
                out.put_i64_le(conversation.0);
                out.put_i64_le(seq.map_or(-1, |seq| seq.0));
                out.put_i64_le(except.map_or(-1, |user| user.0));
                put_users(&mut out, members);
                put_frame(&mut out, frame);
            }
            Body::Users {
                users,
                audience,
                frame,
            } => {
                put_users(&mut out, users);
                out.put_u32_le(*audience);
                put_frame(&mut out, frame);
            }
            Body::Joined {
                conversation,
                user,
                after,
            } => {
                out.put_i64_le(conversation.0);
                out.put_i64_le(user.0);
                out.put_i64_le(after.0);
            }
            Body::Left { conversation, user } => {
                out.put_i64_le(conversation.0);
                out.put_i64_le(user.0);
            }
            Body::Roster { conversation } => out.put_i64_le(conversation.0),
            Body::Resync => {}
        }
        out.freeze()
    }

    pub(crate) fn decode(mut bytes: Bytes) -> Result<Self, Malformed> {
        let kind = bytes.try_get_u8().map_err(|_| Malformed("empty"))?;
        let origin = bytes
            .try_get_u128_le()
            .map_err(|_| Malformed("no origin"))?;
        let body = match kind {
            MEMBERS => {
                let conversation = ConversationId(get_i64(&mut bytes)?);
                let seq = Some(get_i64(&mut bytes)?).filter(|&seq| seq >= 0).map(Seq);
                let except = Some(get_i64(&mut bytes)?)
                    .filter(|&user| user >= 0)
                    .map(UserId);
                let members = get_users(&mut bytes)?;
                let frame = get_frame(bytes)?;
                Body::Members {
                    conversation,
                    seq,
                    except,
                    members,
                    frame,
                }
            }
            USERS => {
                let users = get_users(&mut bytes)?;
                let audience = bytes
                    .try_get_u32_le()
                    .map_err(|_| Malformed("no audience"))?;
                let frame = get_frame(bytes)?;
                Body::Users {
                    users,
                    audience,
                    frame,
                }
            }
            JOINED | LEFT => {
                let conversation = ConversationId(get_i64(&mut bytes)?);
                let user = UserId(get_i64(&mut bytes)?);
                if kind == JOINED {
                    let after = Seq(get_i64(&mut bytes)?);
                    Body::Joined {
                        conversation,
                        user,
                        after,
                    }
                } else {
                    Body::Left { conversation, user }
                }
            }
            ROSTER => Body::Roster {
                conversation: ConversationId(get_i64(&mut bytes)?),
            },
            RESYNC => Body::Resync,
            _ => return Err(Malformed("unknown kind")),
        };
        Ok(Self { origin, body })
    }

    /// Whether an encoded envelope is a control note, whose loss leaves other nodes
    /// following the wrong conversations or holding stale member lists (a lost event is
    /// only an event: messages are filled from the store).
    pub(crate) fn is_control(payload: &[u8]) -> bool {
        matches!(payload.first(), Some(&(JOINED | LEFT | ROSTER | RESYNC)))
    }
}

fn get_i64(bytes: &mut Bytes) -> Result<i64, Malformed> {
    bytes.try_get_i64_le().map_err(|_| Malformed("truncated"))
}

fn put_users(out: &mut BytesMut, users: &[UserId]) {
    out.put_u32_le(users.len() as u32);
    for user in users {
        out.put_i64_le(user.0);
    }
}

fn get_users(bytes: &mut Bytes) -> Result<Arc<[UserId]>, Malformed> {
    let count = bytes.try_get_u32_le().map_err(|_| Malformed("truncated"))? as usize;
    if bytes.remaining() < count.saturating_mul(8) {
        return Err(Malformed("truncated user list"));
    }
    (0..count).map(|_| get_i64(bytes).map(UserId)).collect()
}

fn put_frame(out: &mut BytesMut, frame: &EventFrame) {
    let name = ServerEvent::NAMES
        .iter()
        .position(|&name| name == frame.name())
        .unwrap_or(usize::MAX);
    out.put_u8(u8::try_from(name).unwrap_or(u8::MAX));
    let mut flags = 0;
    if frame.is_ephemeral() {
        flags |= EPHEMERAL;
    }
    if frame.conversation_id().is_some() {
        flags |= HAS_CONVERSATION;
    }
    out.put_u8(flags);
    out.put_i64_le(frame.conversation_id().map_or(0, |id| id.0));
    out.put_slice(frame.json());
}

fn get_frame(mut bytes: Bytes) -> Result<EventFrame, Malformed> {
    let name = bytes.try_get_u8().map_err(|_| Malformed("truncated"))?;
    let name = ServerEvent::NAMES
        .get(usize::from(name))
        .copied()
        .ok_or(Malformed("unknown event"))?;
    let flags = bytes.try_get_u8().map_err(|_| Malformed("truncated"))?;
    let conversation = ConversationId(get_i64(&mut bytes)?);
    let conversation = (flags & HAS_CONVERSATION != 0).then_some(conversation);
    EventFrame::from_json(name, conversation, flags & EPHEMERAL != 0, bytes)
        .map_err(|_| Malformed("event is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ServerEvent, TypingChanged};

    fn typing() -> EventFrame {
        ServerEvent::TypingStarted(TypingChanged {
            conversation_id: ConversationId(7),
            user_id: UserId(3),
        })
        .encode()
    }

    #[test]
    fn a_member_event_crosses_unchanged() {
        let frame = typing();
        let sent = Envelope {
            origin: 42,
            body: Body::Members {
                conversation: ConversationId(7),
                seq: None,
                except: Some(UserId(3)),
                members: Arc::from([UserId(3), UserId(4)]),
                frame: frame.clone(),
            },
        };
        let got = Envelope::decode(sent.encode()).expect("decodes");
        assert_eq!(got.origin, 42);
        let Body::Members {
            conversation,
            seq,
            except,
            members,
            frame: received,
        } = got.body
        else {
            panic!("kind changed");
        };
        assert_eq!(conversation, ConversationId(7));
        assert_eq!(seq, None);
        assert_eq!(except, Some(UserId(3)));
        assert_eq!(&members[..], &[UserId(3), UserId(4)]);
        assert_eq!(received.json(), frame.json());
        assert_eq!(received.data(), frame.data());
        assert_eq!(received.name(), "typing:started");
        assert!(received.is_ephemeral());
        assert_eq!(received.conversation_id(), Some(ConversationId(7)));
    }

    #[test]
    fn a_user_event_crosses_with_its_whole_audience() {
        let sent = Envelope {
            origin: 42,
            body: Body::Users {
                users: Arc::from([UserId(5)]),
                audience: 250,
                frame: typing(),
            },
        };
        let got = Envelope::decode(sent.encode()).expect("decodes");
        let Body::Users {
            users,
            audience,
            frame,
        } = got.body
        else {
            panic!("kind changed");
        };
        assert_eq!(&users[..], &[UserId(5)]);
        assert_eq!(audience, 250, "the count the write delay decides by");
        assert_eq!(frame.json(), typing().json());
    }

    #[test]
    fn controls_cross_unchanged() {
        let sent = Envelope {
            origin: 1,
            body: Body::Left {
                conversation: ConversationId(9),
                user: UserId(5),
            },
        };
        let got = Envelope::decode(sent.encode()).expect("decodes");
        assert!(matches!(
            got.body,
            Body::Left {
                conversation: ConversationId(9),
                user: UserId(5)
            }
        ));
        let sent = Envelope {
            origin: 1,
            body: Body::Joined {
                conversation: ConversationId(9),
                user: UserId(5),
                after: Seq(31),
            },
        };
        let got = Envelope::decode(sent.encode()).expect("decodes");
        assert!(matches!(
            got.body,
            Body::Joined {
                conversation: ConversationId(9),
                user: UserId(5),
                after: Seq(31),
            }
        ));
    }

    #[test]
    fn a_resync_crosses_and_only_control_notes_count_as_such() {
        let resync = Envelope {
            origin: 3,
            body: Body::Resync,
        }
        .encode();
        assert!(Envelope::is_control(&resync));
        let got = Envelope::decode(resync).expect("decodes");
        assert_eq!(got.origin, 3);
        assert!(matches!(got.body, Body::Resync));

        let roster = Body::Roster {
            conversation: ConversationId(4),
        };
        let joined = Body::Joined {
            conversation: ConversationId(4),
            user: UserId(2),
            after: Seq(8),
        };
        for body in [roster, joined] {
            assert!(Envelope::is_control(&Envelope { origin: 3, body }.encode()));
        }
        let event = Body::Users {
            users: Arc::from([UserId(1)]),
            audience: 1,
            frame: typing(),
        };
        assert!(!Envelope::is_control(
            &Envelope {
                origin: 3,
                body: event
            }
            .encode()
        ));
        assert!(!Envelope::is_control(&[]));
    }

    #[test]
    fn truncated_and_unknown_payloads_are_refused() {
        let whole = Envelope {
            origin: 1,
            body: Body::Users {
                users: Arc::from([UserId(1), UserId(2)]),
                audience: 2,
                frame: typing(),
            },
        }
        .encode();
        for cut in [0, 1, 16, 17, 20, 30] {
            assert!(
                Envelope::decode(whole.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut unknown = whole.to_vec();
        unknown[0] = 99;
        assert!(Envelope::decode(Bytes::from(unknown)).is_err());
        // A user count larger than the payload must not allocate or read past the end.
        let mut huge = BytesMut::new();
        huge.put_u8(USERS);
        huge.put_u128_le(1);
        huge.put_u32_le(u32::MAX);
        assert!(Envelope::decode(huge.freeze()).is_err());
    }
}
