//! Real-time transports. Each connection decodes a frame once into a typed command and
//! hands it to [`dispatch`], which every transport shares; the engine never sees a socket.

pub mod dispatch;
pub mod native;
pub mod socketio;
