//! Back-pressure on what a WebSocket client sends.
//!
//! actix-web-actors' frame decoder pulls every byte the connection has into one buffer
//! before it decodes a frame, and it decodes one frame per turn of its actor. A client
//! that sends faster than its actor handles frames therefore grows that buffer without
//! limit (hostile clients grew the server by about 3 MB/s). Neither actix-web-actors nor
//! another crate bounds it, so [`ReadAhead`] sits between the HTTP payload and the
//! decoder: it stops reading the socket once a bounded number of bytes has been handed to
//! the decoder and not yet decoded, and the kernel's receive window then pushes back on
//! the client, as TCP intends.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_http::ws::Item;
use actix_web::error::PayloadError;
use actix_web_actors::ws;
use bytes::Bytes;
use futures_util::Stream;

/// What the stream and its actor share.
struct Budget {
    /// Bytes handed to the decoder that no decoded frame has accounted for yet.
    undecoded: Cell<usize>,
    /// Reading pauses while `undecoded` is at least this.
    limit: usize,
    /// The task to wake when frames are decoded while reading is paused.
    paused: Cell<Option<Waker>>,
    /// Whether a frame was decoded since reading last paused.
    decoded_since_pause: Cell<bool>,
    /// Set when the stream failed on a frame longer than the limit.
    oversized: Cell<bool>,
}

/// The connection's payload, read no further ahead of the decoder than its limit.
pub(crate) struct ReadAhead<S> {
    payload: S,
    budget: Rc<Budget>,
}

/// The actor's side of [`ReadAhead`]: it reports every frame it receives.
pub(crate) struct DecodedFrames(Rc<Budget>);

/// Wraps `payload` for a socket whose frames are at most `max_frame_bytes` long.
pub(crate) fn read_ahead<S>(payload: S, max_frame_bytes: usize) -> (ReadAhead<S>, DecodedFrames) {
    let budget = Rc::new(Budget {
        undecoded: Cell::new(0),
        // Room for one whole frame of the largest size and its header, so that a paused
        // stream always holds a frame the decoder can finish (or refuse as too large).
        limit: 2 * (max_frame_bytes + MAX_HEADER_BYTES),
        paused: Cell::new(None),
        decoded_since_pause: Cell::new(false),
        oversized: Cell::new(false),
    });
    let frames = DecodedFrames(Rc::clone(&budget));
    (ReadAhead { payload, budget }, frames)
}

impl<S> Stream for ReadAhead<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let budget = &this.budget;
        if budget.undecoded.get() >= budget.limit {
            // The decoder runs right after this poll. If it decodes nothing before the
            // next one, what it holds is the start of a frame past the limit.
            if budget.paused.take().is_some() && !budget.decoded_since_pause.get() {
                budget.oversized.set(true);
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
            budget.decoded_since_pause.set(false);
            budget.paused.set(Some(cx.waker().clone()));
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.payload).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let undecoded = this.budget.undecoded.get() + chunk.len();
            this.budget.undecoded.set(undecoded);
        }
        polled
    }
}

/// The longest header of a client frame: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER_BYTES: usize = 14;

impl DecodedFrames {
    /// Accounts for one frame the decoder produced, and resumes reading if it was paused
    /// and is now under its limit.
    pub(crate) fn decoded(&self, frame: &Result<ws::Message, ws::ProtocolError>) {
        let budget = &self.0;
        let undecoded = budget.undecoded.get().saturating_sub(wire_bytes(frame));
        budget.undecoded.set(undecoded);
        budget.decoded_since_pause.set(true);
        if undecoded < budget.limit
            && let Some(waker) = budget.paused.take()
        {
            waker.wake();
        }
    }

    /// Whether the stream failed because a frame is longer than the limit: the error the
    /// decoder then reports is a 1009, not a broken connection.
    pub(crate) fn oversized(&self) -> bool {
        self.0.oversized.get()
    }
}

/// The bytes a client frame took on the wire. Client frames are masked (the decoder
/// refuses others) and carry their length in the shortest form (RFC 6455 5.2): 2 header
/// bytes, 0, 2 or 8 length bytes, 4 mask bytes, then the payload. A client that encodes
/// lengths in a longer form is counted short: past a limit's worth of such frames, its
/// socket is closed as if it had sent one too large.
fn wire_bytes(frame: &Result<ws::Message, ws::ProtocolError>) -> usize {
    let payload = match frame {
        Ok(ws::Message::Text(text)) => text.len(),
        Ok(ws::Message::Binary(bytes))
        | Ok(ws::Message::Ping(bytes))
        | Ok(ws::Message::Pong(bytes)) => bytes.len(),
        Ok(ws::Message::Continuation(item)) => match item {
            Item::FirstText(bytes)
            | Item::FirstBinary(bytes)
            | Item::Continue(bytes)
            | Item::Last(bytes) => bytes.len(),
        },
        Ok(ws::Message::Close(reason)) => reason.as_ref().map_or(0, |reason| {
            2 + reason.description.as_ref().map_or(0, String::len)
        }),
        // Nothing is decoded after an error: the socket closes.
        Ok(ws::Message::Nop) | Err(_) => return 0,
    };
    let length_bytes = match payload {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    2 + length_bytes + 4 + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use futures_util::stream;

    fn text(len: usize) -> Result<ws::Message, ws::ProtocolError> {
        Ok(ws::Message::Text("x".repeat(len).into()))
    }

    #[test]
    fn frames_are_counted_as_they_were_on_the_wire() {
        assert_eq!(wire_bytes(&text(0)), 6);
        assert_eq!(wire_bytes(&text(125)), 131);
        assert_eq!(wire_bytes(&text(126)), 134);
        assert_eq!(wire_bytes(&text(65_535)), 65_543);
        assert_eq!(wire_bytes(&text(65_536)), 65_550);
        let ping = Ok(ws::Message::Ping(Bytes::from_static(b"are you there")));
        assert_eq!(wire_bytes(&ping), 19);
        let close = Ok(ws::Message::Close(Some(ws::CloseReason {
            code: ws::CloseCode::Normal,
            description: Some("bye".into()),
        })));
        assert_eq!(wire_bytes(&close), 11);
    }

    #[actix_rt::test]
    async fn reading_pauses_at_the_limit_and_resumes_as_frames_are_decoded() {
        let chunks = (0..100).map(|_| Ok(Bytes::from(vec![0_u8; 1000])));
        let (mut payload, frames) = read_ahead(stream::iter(chunks), 1000);
        // The limit is 2 × (1000 + 14) bytes: three chunks reach it.
        for _ in 0..3 {
            assert!(payload.next().await.is_some());
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut payload).poll_next(&mut cx).is_pending());
        // A decoded frame of 994 payload bytes accounts for 1000 on the wire.
        frames.decoded(&text(994));
        assert!(matches!(payload.next().await, Some(Ok(_))));
        assert!(Pin::new(&mut payload).poll_next(&mut cx).is_pending());
        // The decoder found a frame again: still paused, no error.
        frames.decoded(&text(0));
        assert!(Pin::new(&mut payload).poll_next(&mut cx).is_pending());
        assert!(!frames.oversized());
    }

    #[test]
    fn a_paused_stream_whose_decoder_finds_no_frame_fails_as_oversized() {
        let chunks = (0..100).map(|_| Ok(Bytes::from(vec![0_u8; 1000])));
        let (mut payload, frames) = read_ahead(stream::iter(chunks), 1000);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(Pin::new(&mut payload).poll_next(&mut cx).is_ready());
        }
        assert!(Pin::new(&mut payload).poll_next(&mut cx).is_pending());
        // Polled again with no frame decoded in between.
        let failed = Pin::new(&mut payload).poll_next(&mut cx);
        assert!(matches!(
            failed,
            Poll::Ready(Some(Err(PayloadError::Overflow)))
        ));
        assert!(frames.oversized());
    }
}
