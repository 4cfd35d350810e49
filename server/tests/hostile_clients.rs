//! Hostile clients: while fuzz clients throw random and malformed traffic at every entry
//! point of the sockets (the native WebSocket, Socket.IO over WebSocket and over
//! long-polling, and raw TCP), two well-behaved clients in one conversation keep talking.
//! They must get every message, acked and in seq order; the server must not panic, must
//! still answer, and its memory must stay flat.
//!
//! The server is the `courier` binary in a child process (SQLite in a temporary
//! directory), so the memory measured is the server's alone and a panic shows in its
//! output. `COURIER_SOAK_SECS` sets how long the hostile traffic lasts (10 s by default);
//! `COURIER_SOAK_SEED` replays the frames of a run (each run prints its seed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use helpers::{Api, TestUser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Limits raised so that hostile frames reach the decoders and the engine instead of
/// stopping at the rate limiter (which is exercised elsewhere), and tokens that outlive
/// a long soak.
const SETTINGS: &str = r#"
auth_requests_per_minute = 10000
sends_per_second = 10000
ws_frames_per_second = 2000
access_token_ttl_s = 86400
"#;

/// How long one control step (an ack, an event) may take while the server is under fire.
const STEP: Duration = Duration::from_secs(15);
/// Memory growth allowed between the end of the warm-up and the end of the soak.
///
/// What legitimately grows: the allocator keeps freed memory in per-thread arenas (one per
/// actix worker, and frames up to the 64 KiB limit come and go on each), SQLite's page
/// cache fills up as the conversations grow, and the buffers of the connections open at
/// the end; about 1 to 3 MiB in a 10 s or 20 s run. Growth that goes on for as long as the
/// traffic does is a leak: a frame announcing 1 TiB was once buffered as it came, and the
/// server grew by about 3 MiB/s. This bound catches that within the default 10 s, while
/// `COURIER_SOAK_SECS=60` and more catch slower ones, as the bound does not grow with the
/// duration. The RSS of every second is printed to tell a plateau from a slope.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// The `courier serve` child process and what its output showed.
struct Server {
    child: Child,
    port: u16,
    /// Lines of its output that show a panic or an error-level log.
    alarms: Arc<Mutex<Vec<String>>>,
    /// Its own warnings (a failed commit, say), to explain a refused control send.
    warnings: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let settings = data.path().join("courier.toml");
        std::fs::write(&settings, SETTINGS).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .arg("serve")
            .env("COURIER_CONFIG", &settings)
            .env("COURIER_LISTEN", "127.0.0.1:0")
            .env("COURIER_DATA_DIR", data.path())
            .env("COURIER_JWT_SECRET", "soak-secret-soak-secret-soak-secret!")
            .env("COURIER_BCRYPT_COST", "4")
            .env("COURIER_LOG_FORMAT", "json")
            // The listening line, and every warning and error of the server.
            .env("RUST_LOG", "courier=info,warn")
            // A panic's backtrace, to find where it came from.
            .env("RUST_BACKTRACE", "1")
            // SQLite in the data directory, one process alone.
            .env_remove("DATABASE_URL")
            .env_remove("COURIER_DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("COURIER_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("courier starts");
        let alarms = Arc::new(Mutex::new(Vec::new()));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stdout_alarms = Arc::clone(&alarms);
        let stdout_warnings = Arc::clone(&warnings);
        // Reads the log for the port, then keeps draining it so the child never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "courier listening"
                {
                    let _ = port_tx.send(entry["fields"]["port"].as_u64().unwrap());
                }
                // The server's own errors (an `internal` reply, a failed commit). Malformed
                // HTTP is logged at error level by actix-http itself: that is the hostile
                // clients' doing, not a fault.
                let own_error =
                    line.contains("\"level\":\"ERROR\"") && line.contains("\"target\":\"courier");
                let own_warning =
                    line.contains("\"level\":\"WARN\"") && line.contains("\"target\":\"courier");
                if line.contains("panicked") || own_error {
                    stdout_alarms.lock().unwrap().push(line);
                } else if own_warning {
                    stdout_warnings.lock().unwrap().push(line);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let stderr_alarms = Arc::clone(&alarms);
        // A panic's message goes to stderr, whatever the log format.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("courier: {line}");
                if line.contains("panicked") {
                    stderr_alarms.lock().unwrap().push(line);
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("courier logs its port");
        Self {
            child,
            port: u16::try_from(port).unwrap(),
            alarms,
            warnings,
            _data: data,
        }
    }

    /// The resident set size of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server process is there");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the hostile clients know of the server: where it is, valid tokens, ids that exist.
#[derive(Clone)]
struct Target {
    port: u16,
    tokens: Vec<String>,
    conversations: Vec<i64>,
    users: Vec<i64>,
    messages: Vec<i64>,
}

/// Counters of what the hostile clients did, for the summary and to prove they ran.
#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    connections: AtomicU64,
    posts: AtomicU64,
    raw: AtomicU64,
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

// ---------------------------------------------------------------------------------------
// What hostile clients send.
// ---------------------------------------------------------------------------------------

/// Every command type the server knows.
const COMMANDS: &[&str] = courier_engine::protocol::ClientCommand::NAMES;

/// Values of the wrong type, or out of range, for any field (raw JSON text, so that
/// numbers no `Value` can hold are sent too).
const WRONG_VALUES: &[&str] = &[
    r#""7""#,
    "7.5",
    "true",
    "null",
    "[]",
    "{}",
    "-1",
    "-0",
    "1e308",
    "-1e400",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    r#""\u0000""#,
    r#""\ud800""#,
    "[1,2,3]",
    r#"{"conversationId":1}"#,
    r#""""#,
];

const EVENT_NAMES: &[&str] = &[
    "message:received",
    "message:edited",
    "user:online",
    "ack",
    "error",
    "",
    "MESSAGE:SEND",
    "message:send ",
    "message:",
    "connect",
    "disconnect",
    "__proto__",
    "constructor",
];

/// An id: mostly one that exists, sometimes one at the edges.
fn id(rng: &mut StdRng, known: &[i64]) -> Value {
    if rng.random_bool(0.7) && !known.is_empty() {
        json!(*pick(rng, known))
    } else {
        let random: i64 = rng.random();
        json!(*pick(rng, &[0, -1, 1, 2, i64::MAX, i64::MIN, random]))
    }
}

fn text(rng: &mut StdRng, max: usize) -> String {
    match rng.random_range(0..10) {
        0 => String::new(),
        1 => "   ".into(),
        2 => "nul\0inside".into(),
        3 => "x".repeat(16 * 1024 + 1),
        4 => "é😀\u{202e}\u{feff}".repeat(rng.random_range(1..50)),
        _ => {
            let len = rng.random_range(1..=max);
            (0..len)
                .map(|_| char::from(rng.random_range(b' '..=b'~')))
                .collect()
        }
    }
}

/// The documented data of a command, with values that may or may not pass the server's
/// rules (blank bodies, foreign conversations...), as (field, JSON text) pairs.
fn command_fields(rng: &mut StdRng, kind: &str, target: &Target) -> Vec<(String, String)> {
    let conversation = id(rng, &target.conversations);
    let message = id(rng, &target.messages);
    let user = id(rng, &target.users);
    let seq = json!(*pick(rng, &[0_i64, 1, 5, -1, i64::MAX]));
    let mut fields: Vec<(&str, Value)> = match kind {
        "message:send" => {
            let mut fields = vec![
                ("conversationId", conversation),
                ("clientMsgId", json!(text(rng, 80))),
                ("body", json!(text(rng, 200))),
            ];
            if rng.random_bool(0.3) {
                fields.push(("replyToId", message));
            }
            fields
        }
        "message:edit" => vec![("messageId", message), ("body", json!(text(rng, 200)))],
        "message:delete" => vec![("messageId", message)],
        "message:delivered" | "message:read" => {
            vec![("conversationId", conversation), ("seq", seq)]
        }
        "sync" => {
            let mut fields = vec![("conversationId", conversation), ("afterSeq", seq)];
            if rng.random_bool(0.5) {
                let limit = *pick(rng, &[0_u64, 1, 200, 100_000, u64::from(u32::MAX)]);
                fields.push(("limit", json!(limit)));
            }
            fields
        }
        "status:update" => {
            let status = *pick(rng, &["online", "away", "busy", "invisible", "asleep"]);
            let mut fields = vec![("status", json!(status))];
            if rng.random_bool(0.5) {
                fields.push(("text", json!(text(rng, 150))));
            }
            fields
        }
        kind if kind.starts_with("call:") => {
            let mut fields = vec![("callId", json!(text(rng, 140))), ("toUserId", user)];
            if rng.random_bool(0.5) {
                fields.push(("sdp", json!({"type": "offer", "sdp": text(rng, 300)})));
            }
            if rng.random_bool(0.3) {
                fields.push(("candidate", json!({"candidate": text(rng, 100)})));
            }
            fields
        }
        _ => vec![("conversationId", conversation)],
    };
    // Unknown fields are refused too.
    if rng.random_bool(0.05) {
        fields.push(("extra", json!(true)));
    }
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect()
}

fn object_text(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}:{value}", Value::from(name.as_str())))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn nested(rng: &mut StdRng) -> String {
    // Up to 40 KB of brackets, or 60 KB of objects: nesting far past serde_json's limit
    // of 128, in frames under the 64 KiB limit.
    let depth = rng.random_range(100..10_000);
    if rng.random_bool(0.5) {
        format!("{}{}", "[".repeat(2 * depth), "]".repeat(2 * depth))
    } else {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    }
}

/// Cuts `text` at a random character boundary.
fn truncated(rng: &mut StdRng, text: &str) -> String {
    let mut at = rng.random_range(0..text.len().max(1));
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].to_owned()
}

/// What the fuzz clients send as a command: (event name, `data` as JSON text). A client
/// walks through every field of every command with every wrong value in turn (`cursor`),
/// between commands that are valid, mutated or unknown.
struct Commands {
    cursor: usize,
}

impl Commands {
    fn next(&mut self, rng: &mut StdRng, target: &Target) -> (String, String) {
        match rng.random_range(0..100) {
            // Valid shapes (most still refused: foreign ids, blank bodies...).
            0..30 => {
                let kind = *pick(rng, COMMANDS);
                (
                    kind.to_owned(),
                    object_text(&command_fields(rng, kind, target)),
                )
            }
            // One field of the wrong type, systematically.
            30..60 => {
                self.cursor += 1;
                let kind = COMMANDS[self.cursor % COMMANDS.len()];
                let mut fields = command_fields(rng, kind, target);
                let wrong = WRONG_VALUES[(self.cursor / COMMANDS.len()) % WRONG_VALUES.len()];
                let at = (self.cursor / (COMMANDS.len() * WRONG_VALUES.len())) % fields.len();
                fields[at].1 = wrong.to_owned();
                (kind.to_owned(), object_text(&fields))
            }
            // A required field missing.
            60..68 => {
                let kind = *pick(rng, COMMANDS);
                let mut fields = command_fields(rng, kind, target);
                let at = rng.random_range(0..fields.len());
                fields.remove(at);
                (kind.to_owned(), object_text(&fields))
            }
            // `data` that is no object.
            68..76 => {
                let kind = *pick(rng, COMMANDS);
                let data = *pick(rng, &["null", "[]", "[7, 0]", "\"data\"", "7", "true"]);
                (kind.to_owned(), data.to_owned())
            }
            // Names of no command.
            76..88 => {
                let name = if rng.random_bool(0.5) {
                    (*pick(rng, EVENT_NAMES)).to_owned()
                } else {
                    text(rng, 40)
                };
                (name, "{}".to_owned())
            }
            // Deep nesting in the data.
            88..94 => {
                let kind = *pick(rng, COMMANDS);
                (kind.to_owned(), nested(rng))
            }
            // Values deep inside what the server relays untouched.
            _ => {
                let inner = format!("{}{}", "[".repeat(100), "]".repeat(100));
                let data = format!(
                    r#"{{"callId":"c","toUserId":{},"sdp":{inner}}}"#,
                    id(rng, &target.users)
                );
                ("call:offer".to_owned(), data)
            }
        }
    }
}

/// One native frame's text: commands in every shape, and frames that are no command.
fn native_text(rng: &mut StdRng, commands: &mut Commands, target: &Target) -> String {
    let reference = match rng.random_range(0..8) {
        0 => "null".to_owned(),
        1 => "18446744073709551616".to_owned(),
        2 => r#"{"nested":[1,{"a":null}]}"#.to_owned(),
        _ => json!(format!("h{}", rng.random::<u32>())).to_string(),
    };
    match rng.random_range(0..100) {
        0..70 => {
            let (kind, data) = commands.next(rng, target);
            format!(
                r#"{{"type":{},"ref":{reference},"data":{data}}}"#,
                json!(kind)
            )
        }
        70..78 => {
            let (kind, data) = commands.next(rng, target);
            let frame = format!(
                r#"{{"type":{},"ref":{reference},"data":{data}}}"#,
                json!(kind)
            );
            truncated(rng, &frame)
        }
        78..82 => format!(r#"{{"ref":{reference},"data":{{}}}}"#),
        82..85 => format!(r#"{{"type":7,"ref":{reference}}}"#),
        85..88 => r#"{"type":"sync","type":"room:join","data":{"conversationId":1}}"#.to_owned(),
        88..91 => (*pick(rng, &["[]", "null", "7", "\"sync\"", "", " ", "{", "}"])).to_owned(),
        91..94 => format!(r#"{{"type":"sync","ref":{}}}"#, nested(rng)),
        _ => (0..rng.random_range(1..300))
            .map(|_| char::from(rng.random_range(b' '..=b'~')))
            .collect(),
    }
}

/// One Socket.IO packet (the payload of an Engine.IO message), well formed or not.
fn socket_packet(rng: &mut StdRng, commands: &mut Commands, target: &Target) -> String {
    let namespace = *pick(rng, &["", "", "", "", "/,", "/admin,", "/", "/chat"]);
    let ack = match rng.random_range(0..10) {
        0..4 => String::new(),
        4 => "18446744073709551615".to_owned(),
        5 => "99999999999999999999999".to_owned(),
        6 => "007".to_owned(),
        _ => rng.random_range(0..1000_u32).to_string(),
    };
    match rng.random_range(0..100) {
        0..55 => {
            let (name, data) = commands.next(rng, target);
            let args = match rng.random_range(0..10) {
                0 => String::new(),
                1 => format!(",{data},{data}"),
                _ => format!(",{data}"),
            };
            format!("2{namespace}{ack}[{}{args}]", json!(name))
        }
        55..62 => {
            let (name, data) = commands.next(rng, target);
            truncated(rng, &format!("2{ack}[{},{data}]", json!(name)))
        }
        62..70 => {
            let auth = match rng.random_range(0..6) {
                0 => String::new(),
                1 => json!({"token": "forged"}).to_string(),
                2 => "\"token\"".to_owned(),
                3 => "5".to_owned(),
                4 => nested(rng),
                _ => json!({"token": pick(rng, &target.tokens)}).to_string(),
            };
            format!("0{namespace}{auth}")
        }
        70..75 => format!("3{namespace}{ack}[{}]", WRONG_VALUES.join(",")),
        75..79 => format!(
            "{}1-[\"up\",{{\"_placeholder\":true,\"num\":0}}]",
            pick(rng, &["5", "6"])
        ),
        79..82 => format!("2{ack}[\"x\"]").replace('[', "{"),
        82..85 => "2[]".to_owned(),
        85..88 => format!("2[{}]", nested(rng)),
        88..90 => format!("4{namespace}{{\"message\":\"x\"}}"),
        _ => (0..rng.random_range(0..20))
            .map(|_| char::from(*pick(rng, b"0123456789/,[]{}\":abc")))
            .collect(),
    }
}

/// One Engine.IO packet as text.
fn engine_packet(rng: &mut StdRng, commands: &mut Commands, target: &Target) -> String {
    match rng.random_range(0..100) {
        0..80 => format!("4{}", socket_packet(rng, commands, target)),
        80..84 => "2".to_owned(),
        84..87 => "2probe".to_owned(),
        87..89 => "3".to_owned(),
        89..91 => (*pick(rng, &["5", "6", "0{}", "7", "9", "", "b", "bAQID"])).to_owned(),
        91..93 => (*pick(rng, &["40", "41", "4"])).to_owned(),
        _ => (0..rng.random_range(0..30))
            .map(|_| char::from(rng.random_range(b' '..=b'~')))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw clients: WebSocket frames and HTTP requests written by hand, so that anything can be
// sent (invalid UTF-8 in text frames, unmasked or reserved frames, lying lengths).
// ---------------------------------------------------------------------------------------

/// A WebSocket frame as a client writes it (RFC 6455 5.2), masked unless `mask` is off.
fn ws_frame(
    rng: &mut StdRng,
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: bool,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = u8::from(mask) << 7;
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if mask {
        let key: [u8; 4] = rng.random();
        out.extend_from_slice(&key);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ key[i % 4]),
        );
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A raw WebSocket connection; a thread drains what the server sends.
struct RawSocket {
    stream: TcpStream,
    closed: Arc<AtomicBool>,
}

impl RawSocket {
    /// Opens `path` with the upgrade handshake; `None` when the server refuses it.
    fn open(port: u16, path: &str, token: Option<&str>) -> Option<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .ok()?;
        let auth = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{auth}\r\n"
        );
        stream.write_all(request.as_bytes()).ok()?;
        // The status line and headers, byte by byte so no frame is read past them.
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 || head.len() > 16 * 1024 {
                return None;
            }
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return None;
        }
        let closed = Arc::new(AtomicBool::new(false));
        let mut reader = stream.try_clone().ok()?;
        let reader_closed = Arc::clone(&closed);
        std::thread::spawn(move || {
            let mut buffer = vec![0_u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
                if reader_closed.load(Ordering::Relaxed) {
                    break;
                }
            }
            reader_closed.store(true, Ordering::Relaxed);
        });
        Some(Self { stream, closed })
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.stream.write_all(bytes).is_ok()
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The frame a WebSocket fuzz client sends: mostly `text` in a text frame, otherwise
/// frames that break the protocol in one way or another.
fn hostile_frame(rng: &mut StdRng, text: String) -> Vec<u8> {
    match rng.random_range(0..1000) {
        0..870 => ws_frame(rng, true, 0, 1, text.as_bytes(), true),
        // Binary frames are refused, the socket stays open.
        870..910 => {
            let len = rng.random_range(0..2000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            ws_frame(rng, true, 0, 2, &bytes, true)
        }
        // A text message in two fragments, and a continuation out of the blue.
        910..930 => {
            let bytes = text.as_bytes();
            let half = bytes.len() / 2;
            let mut out = ws_frame(rng, false, 0, 1, &bytes[..half], true);
            out.extend(ws_frame(rng, true, 0, 0, &bytes[half..], true));
            out
        }
        930..940 => ws_frame(rng, true, 0, 0, text.as_bytes(), true),
        // Pings and pongs with payloads.
        940..960 => {
            let opcode = *pick(rng, &[9, 10]);
            ws_frame(rng, true, 0, opcode, b"are you there", true)
        }
        // The rest ends the connection: invalid UTF-8 in a text frame, a frame over the
        // size limit, one announcing 1 TiB, reserved opcodes and bits, an unmasked frame,
        // a close with a random code.
        960..970 => {
            let bytes: Vec<u8> = (0..rng.random_range(1..500))
                .map(|_| rng.random_range(0x80..=0xff))
                .collect();
            ws_frame(rng, true, 0, 1, &bytes, true)
        }
        970..976 => {
            let big = format!(r#"{{"type":"sync","data":"{}"}}"#, "x".repeat(70_000));
            ws_frame(rng, true, 0, 1, big.as_bytes(), true)
        }
        976..980 => {
            let mut out = vec![0x81, 0xff];
            out.extend_from_slice(&(1_u64 << 40).to_be_bytes());
            out.extend_from_slice(&[1, 2, 3, 4]);
            out
        }
        980..986 => {
            let opcode = *pick(rng, &[3, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
            ws_frame(rng, true, 0, opcode, b"?", true)
        }
        986..990 => {
            let rsv = rng.random_range(1..8);
            ws_frame(rng, true, rsv, 1, text.as_bytes(), true)
        }
        990..995 => ws_frame(rng, true, 0, 1, text.as_bytes(), false),
        _ => {
            let code: u16 = rng.random();
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(b"bye");
            ws_frame(rng, true, 0, 8, &payload, true)
        }
    }
}

/// A plain HTTP/1.1 request on its own connection; the status and body of the answer.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let status = std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()?;
    let at = answer.windows(4).position(|window| window == b"\r\n\r\n")?;
    Some((status, answer[at + 4..].to_vec()))
}

// ---------------------------------------------------------------------------------------
// The hostile clients, each a thread until `stop`.
// ---------------------------------------------------------------------------------------

/// Native WebSocket: commands of every shape, and frames of every kind.
fn native_client(seed: u64, target: Target, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut commands = Commands {
        cursor: seed as usize,
    };
    while !stop.load(Ordering::Relaxed) {
        // Now and then an upgrade with a forged token, which must be refused.
        let token = if rng.random_bool(0.05) {
            "forged".to_owned()
        } else {
            pick(&mut rng, &target.tokens).clone()
        };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let Some(mut socket) = RawSocket::open(target.port, "/api/v1/ws", Some(&token)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let text = native_text(&mut rng, &mut commands, &target);
            let frame = hostile_frame(&mut rng, text);
            if !socket.send(&frame) {
                break;
            }
            counts.frames.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(rng.random_range(200..2000)));
        }
    }
}

/// Socket.IO over a WebSocket alone: Engine.IO and Socket.IO packets, well formed or not,
/// before and after a CONNECT with a valid token.
fn socketio_ws_client(seed: u64, target: Target, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut commands = Commands {
        cursor: seed as usize,
    };
    let path = "/socket.io/?EIO=4&transport=websocket";
    while !stop.load(Ordering::Relaxed) {
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let Some(mut socket) = RawSocket::open(target.port, path, None) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if rng.random_bool(0.8) {
            let connect = format!("40{}", json!({"token": pick(&mut rng, &target.tokens)}));
            let frame = ws_frame(&mut rng, true, 0, 1, connect.as_bytes(), true);
            socket.send(&frame);
        }
        while !stop.load(Ordering::Relaxed) {
            let mut text = engine_packet(&mut rng, &mut commands, &target);
            // Polling's separator has no meaning on a WebSocket.
            if rng.random_bool(0.03) {
                text = format!("{text}\u{1e}{text}");
            }
            let frame = hostile_frame(&mut rng, text);
            if !socket.send(&frame) {
                break;
            }
            counts.frames.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(rng.random_range(200..2000)));
        }
    }
}

/// Socket.IO over long-polling: POSTs of packet batches (and of bytes that are none), a
/// GET loop that reads the answers as a real client does, and requests for unknown
/// sessions.
fn polling_client(seed: u64, target: Target, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut commands = Commands {
        cursor: seed as usize,
    };
    let port = target.port;
    let base = "/socket.io/?EIO=4&transport=polling";
    while !stop.load(Ordering::Relaxed) {
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let Some((200, open)) = http(port, "GET", base, b"", Duration::from_secs(5)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let handshake: Value = open
            .strip_prefix(b"0")
            .and_then(|json| serde_json::from_slice(json).ok())
            .expect("the handshake answers an open packet");
        let sid = handshake["sid"].as_str().expect("a sid").to_owned();
        let session = format!("{base}&sid={sid}");
        // One pending GET at a time, as the protocol allows.
        let ended = Arc::new(AtomicBool::new(false));
        let poller = {
            let (session, stop, ended) = (session.clone(), Arc::clone(&stop), Arc::clone(&ended));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && !ended.load(Ordering::Relaxed) {
                    match http(port, "GET", &session, b"", Duration::from_secs(2)) {
                        Some((200, body)) if body != b"1" => {}
                        // Closed, or the session is gone.
                        Some(_) => break,
                        // A long poll that timed out: the request is dropped, poll again.
                        None => {}
                    }
                }
                ended.store(true, Ordering::Relaxed);
            })
        };
        if rng.random_bool(0.8) {
            let connect = format!("40{}", json!({"token": pick(&mut rng, &target.tokens)}));
            http(
                port,
                "POST",
                &session,
                connect.as_bytes(),
                Duration::from_secs(5),
            );
        }
        while !stop.load(Ordering::Relaxed) && !ended.load(Ordering::Relaxed) {
            let body: Vec<u8> = match rng.random_range(0..100) {
                0..85 => {
                    let count = rng.random_range(1..12);
                    let packets: Vec<String> = (0..count)
                        .map(|_| engine_packet(&mut rng, &mut commands, &target))
                        .collect();
                    packets.join("\u{1e}").into_bytes()
                }
                85..90 => (0..rng.random_range(1..2000))
                    .map(|_| rng.random())
                    .collect(),
                90..93 => "\u{1e}".repeat(rng.random_range(1..5000)).into_bytes(),
                93..95 => vec![b'x'; 300 * 1024],
                _ => {
                    let path = *pick(
                        &mut rng,
                        &[
                            "/socket.io/?EIO=4&transport=polling&sid=nope",
                            "/socket.io/?EIO=3&transport=polling",
                            "/socket.io/?transport=carrier-pigeon",
                            "/socket.io/?EIO=4&transport=websocket",
                        ],
                    );
                    http(port, "POST", path, b"40", Duration::from_secs(5));
                    counts.posts.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            match http(port, "POST", &session, &body, Duration::from_secs(5)) {
                Some((200, _)) | Some((400 | 413, _)) => {}
                _ => break,
            }
            counts.posts.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(rng.random_range(500..5000)));
        }
        ended.store(true, Ordering::Relaxed);
        let _ = poller.join();
    }
}

/// Raw TCP: bytes that are no HTTP, broken requests, upgrades that go wrong.
fn raw_tcp_client(seed: u64, target: Target, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", target.port)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let bytes: Vec<u8> = match rng.random_range(0..5) {
            0 => (0..rng.random_range(1..4096)).map(|_| rng.random()).collect(),
            1 => b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
            2 => b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: x\r\n\r\n".to_vec(),
            3 => format!(
                "POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
                "4".repeat(1000)
            )
            .into_bytes(),
            _ => format!("GET /{} HTTP/1.1\r\n\r\n", "a/".repeat(rng.random_range(1..4000))).into_bytes(),
        };
        let _ = stream.write_all(&bytes);
        let mut sink = [0_u8; 4096];
        let _ = stream.read(&mut sink);
        counts.raw.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(rng.random_range(2..10)));
    }
}

// ---------------------------------------------------------------------------------------
// The control pair.
// ---------------------------------------------------------------------------------------

/// A well-behaved native client that records the control conversation's messages.
struct Control {
    socket: helpers::Socket,
    conversation: i64,
    /// `(seq, body)` of every `message:received` of the control conversation, in order.
    received: Vec<(i64, String)>,
}

impl Control {
    /// The next text frame, answering pings; panics on a close or after [`STEP`].
    async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(STEP, self.socket.framed.next())
                .await
                .expect("the control client waited too long for a frame");
            match frame {
                Some(Ok(ws::Frame::Text(bytes))) => {
                    let frame: Value = serde_json::from_slice(&bytes).unwrap();
                    if frame["type"] == "message:received"
                        && frame["data"]["conversationId"] == self.conversation
                    {
                        let seq = frame["data"]["seq"].as_i64().unwrap();
                        let body = frame["data"]["body"].as_str().unwrap().to_owned();
                        self.received.push((seq, body));
                    }
                    return frame;
                }
                Some(Ok(ws::Frame::Ping(payload))) => {
                    self.socket
                        .framed
                        .send(ws::Message::Pong(payload))
                        .await
                        .unwrap();
                }
                Some(Ok(ws::Frame::Close(reason))) => panic!("control socket closed: {reason:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("control socket error: {error}"),
                None => panic!("control socket ended"),
            }
        }
    }

    /// Sends a message and returns its ack's message, or the frame that refused it.
    async fn send(&mut self, key: &str, body: &str) -> Result<Value, Value> {
        let data = json!({"conversationId": self.conversation, "clientMsgId": key, "body": body});
        let reference = self.socket.command("message:send", data).await;
        loop {
            let frame = self.next().await;
            if frame["ref"] == reference.as_str() {
                return if frame["type"] == "ack" {
                    Ok(frame["data"]["message"].clone())
                } else {
                    Err(frame)
                };
            }
        }
    }

    /// Waits until the message with `seq` has been received.
    async fn wait_for(&mut self, seq: i64) {
        while self.received.last().is_none_or(|(last, _)| *last < seq) {
            self.next().await;
        }
    }
}

async fn connect(api: &Api, user: &TestUser, conversation: i64) -> Control {
    Control {
        socket: api.socket(user).await,
        conversation,
        received: Vec::new(),
    }
}

fn soak_duration() -> Duration {
    let seconds = std::env::var("COURIER_SOAK_SECS")
        .ok()
        .map(|value| {
            value
                .parse::<u64>()
                .expect("COURIER_SOAK_SECS is whole seconds")
        })
        .unwrap_or(10);
    Duration::from_secs(seconds.max(1))
}

#[actix_rt::test]
async fn control_clients_keep_talking_while_hostile_clients_fuzz_every_socket() {
    let seed = std::env::var("COURIER_SOAK_SEED")
        .ok()
        .map(|value| value.parse::<u64>().expect("COURIER_SOAK_SEED is a u64"))
        .unwrap_or_else(rand::random);
    let duration = soak_duration();
    eprintln!("hostile clients: seed {seed} (COURIER_SOAK_SEED={seed} replays it), {duration:?}");

    let server = Server::start();
    let api = Api::new(server.port);
    let ann = api.register("ann").await;
    let bob = api.register("bob").await;
    let control = api.group(&ann, &[&bob]).await;
    let mut hostile_users = Vec::new();
    for index in 0..4 {
        hostile_users.push(api.register(&format!("mallory{index}")).await);
    }
    // The hostile users' own group: their valid commands reach the engine and their
    // events are pushed to them. The control conversation's id is known to them too.
    let (owner, others) = hostile_users.split_first().unwrap();
    let noise = api.group(owner, &others.iter().collect::<Vec<_>>()).await;
    let mut messages = Vec::new();
    for index in 0..3 {
        let sent = api
            .send(owner, noise, &format!("seed-{index}"), "noise")
            .await;
        messages.push(sent["id"].as_i64().unwrap());
    }
    let target = Target {
        port: server.port,
        tokens: hostile_users
            .iter()
            .map(|user| user.access.clone())
            .collect(),
        conversations: vec![noise, control],
        users: hostile_users
            .iter()
            .map(|user| user.id)
            .chain([ann.id, bob.id])
            .collect(),
        messages,
    };

    let mut ann_ws = connect(&api, &ann, control).await;
    let mut bob_ws = connect(&api, &bob, control).await;

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    type Client = fn(u64, Target, Arc<AtomicBool>, Arc<Counts>);
    const CLIENT_KINDS: [&str; 8] = [
        "native", "native", "native", "socketio", "socketio", "polling", "polling", "raw",
    ];
    let clients: [Client; 8] = [
        native_client,
        native_client,
        native_client,
        socketio_ws_client,
        socketio_ws_client,
        polling_client,
        polling_client,
        raw_tcp_client,
    ];
    // `COURIER_SOAK_CLIENTS=native,socketio,polling,raw` narrows a failure down to some.
    let kinds = std::env::var("COURIER_SOAK_CLIENTS")
        .unwrap_or_else(|_| "native,socketio,polling,raw".to_owned());
    let threads: Vec<JoinHandle<()>> = clients
        .into_iter()
        .enumerate()
        .filter(|(index, _)| kinds.contains(CLIENT_KINDS[*index]))
        .map(|(index, client)| {
            let (target, stop, counts) = (target.clone(), Arc::clone(&stop), Arc::clone(&counts));
            let seed = seed.wrapping_add(index as u64);
            std::thread::spawn(move || client(seed, target, stop, counts))
        })
        .collect();

    // The control pair talks in turns, each send waiting for its ack and for both sides to
    // receive it, from the start of the hostile traffic to its end.
    let started = Instant::now();
    let warm_up = (duration / 5).min(Duration::from_secs(3));
    let mut rss_after_warm_up = None;
    let mut sent: Vec<(i64, String)> = Vec::new();
    let (mut rss_samples, mut next_sample) = (Vec::new(), Duration::ZERO);
    while started.elapsed() < duration {
        let seq = sent.len() as i64 + 1;
        let body = format!("control message {seq}");
        let sender = if seq % 2 == 1 {
            &mut ann_ws
        } else {
            &mut bob_ws
        };
        // `unavailable` is the documented "nothing was stored, retry": a client retries
        // it with the same key, and so does this one, a few times. Anything else, or
        // unavailability that does not pass, fails the test.
        let mut attempts = 0;
        let acked = loop {
            attempts += 1;
            match sender.send(&format!("control-{seq}"), &body).await {
                Ok(acked) => break acked,
                Err(refusal) => {
                    let warnings = server.warnings.lock().unwrap().join("\n");
                    assert!(
                        refusal["error"] == "unavailable" && attempts < 3,
                        "control send refused: {refusal}\nthe server's warnings:\n{warnings}"
                    );
                    eprintln!(
                        "control send {seq} unavailable, retrying; the server's warnings:\n{warnings}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(acked["seq"], seq, "acked out of order: {acked}");
        assert_eq!(acked["body"], body.as_str());
        sent.push((seq, body));
        ann_ws.wait_for(seq).await;
        bob_ws.wait_for(seq).await;
        if rss_after_warm_up.is_none() && started.elapsed() >= warm_up {
            rss_after_warm_up = Some(server.rss_kib());
        }
        if started.elapsed() >= next_sample {
            rss_samples.push(format!(
                "{}s {} KiB",
                next_sample.as_secs(),
                server.rss_kib()
            ));
            next_sample += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let rss_at_end = server.rss_kib();
    for thread in threads {
        thread.join().expect("a hostile client thread panicked");
    }

    let frames = counts.frames.load(Ordering::Relaxed);
    let posts = counts.posts.load(Ordering::Relaxed);
    eprintln!(
        "hostile clients: {frames} WebSocket frames over {} connections, {posts} polling POSTs, \
         {} raw TCP connections; control: {} messages",
        counts.connections.load(Ordering::Relaxed),
        counts.raw.load(Ordering::Relaxed),
        sent.len(),
    );
    let rss_after_warm_up = rss_after_warm_up.expect("measured after the warm-up");
    eprintln!("server RSS: {rss_after_warm_up} KiB after warm-up, {rss_at_end} KiB at the end");
    eprintln!("server RSS each second: {}", rss_samples.join(", "));
    // The hostile traffic really happened.
    if kinds.contains("native") || kinds.contains("socketio") {
        assert!(
            frames > 100 * duration.as_secs(),
            "only {frames} hostile frames"
        );
    }
    if kinds.contains("polling") {
        assert!(
            posts > 10 * duration.as_secs(),
            "only {posts} polling POSTs"
        );
    }

    // Every control message reached both clients once, in seq order, with its body.
    assert!(sent.len() >= 10, "only {} control messages", sent.len());
    assert_eq!(ann_ws.received, sent, "ann's messages");
    assert_eq!(bob_ws.received, sent, "bob's messages");
    // And they are stored so: a new session syncs them back without a gap.
    let mut fresh = connect(&api, &ann, control).await;
    let mut stored = Vec::new();
    loop {
        let after = stored.len();
        let data = json!({"conversationId": control, "afterSeq": after, "limit": 200});
        let reference = fresh.socket.command("sync", data).await;
        let page = loop {
            let frame = fresh.next().await;
            if frame["ref"] == reference.as_str() {
                break frame;
            }
        };
        assert_eq!(page["type"], "ack", "{page}");
        for message in page["data"]["messages"].as_array().unwrap() {
            stored.push((
                message["seq"].as_i64().unwrap(),
                message["body"].as_str().unwrap().to_owned(),
            ));
        }
        if page["data"]["hasMore"] != true {
            break;
        }
    }
    assert_eq!(stored, sent, "stored messages");

    // The server is up, answers, and never panicked nor logged an error.
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    let health = api.http.get(api.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let alarms = server.alarms.lock().unwrap().clone();
    assert!(
        alarms.is_empty(),
        "the server's output shows:\n{}",
        alarms.join("\n")
    );

    // Memory is flat (see RSS_GROWTH_BOUND_KIB).
    assert!(
        rss_at_end < rss_after_warm_up + RSS_GROWTH_BOUND_KIB,
        "server RSS grew from {rss_after_warm_up} KiB to {rss_at_end} KiB"
    );
}
