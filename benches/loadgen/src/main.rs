//! `loadgen`: a load generator for courier. It sets up its own users and conversations
//! over REST, connects them over the native WebSocket protocol or Socket.IO, sends with a
//! bounded window of unacked messages, and checks every delivery: end-to-end latency,
//! and lost, duplicated and out-of-order counts, which must all be zero. Given the
//! server's pid it reads the server's CPU time and memory from /proc, so that it reports
//! CPU time per delivered message, the figure that holds up on a noisy machine.
//!
//! ```sh
//! loadgen fanout --receivers 1000 --server-pid "$(pgrep -x courier)"
//! ```

mod client;
mod server;
mod setup;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use courier_loadgen::report::{Latency, RunReport};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;

use crate::client::{Connection, Incoming, Protocol};
use crate::server::ServerProcess;
use crate::setup::{Rest, User};
use crate::stats::{Received, Totals};

/// What the load looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One group: `--senders` send, every member (`--receivers` plus the senders) receives.
    Fanout,
    /// `--pairs` direct conversations, both sides sending.
    Pairs,
    /// `--groups` groups of `--group-size`, every member sending.
    Groups,
    /// `--connections` authenticated connections held for `--duration`, nothing sent.
    Idle,
    /// Fan-out as above while `--churners` more members connect and disconnect at
    /// `--churn-rate` connections per second.
    Churn,
}

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for courier", long_about = None)]
struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The protocol the clients speak.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
    /// fanout, churn: members that only receive.
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// fanout, churn: members that send (and receive).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// pairs: direct conversations.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// groups: how many.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// groups: members of each.
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// idle: connections to hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// churn: members that come and go.
    #[arg(long, default_value_t = 20)]
    churners: usize,
    /// churn: connections opened (and closed) per second.
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,
    /// Messages per sender; without it, senders send until `--duration` is up.
    #[arg(long)]
    messages: Option<u64>,
    /// Unacked sends each sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Bytes per message body.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds of load (a run with `--messages` stops at whichever comes first).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Client threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// The server's process id, to report its CPU time per delivery and its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Allow a server outside the loopback range (load is only ever sent to a server
    /// of your own).
    #[arg(long)]
    allow_remote: bool,
    /// No progress line (for scripts).
    #[arg(long)]
    quiet: bool,
    /// Report lost, duplicated and reordered deliveries without failing: for servers
    /// that do not promise order (the reference in benches/compare).
    #[arg(long)]
    report_only: bool,
}

/// How long the end of a run waits for deliveries still on their way.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once while connecting.
const CONNECT_CONCURRENCY: usize = 64;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.enable_all().build()?.block_on(run(args))
}

/// One client connection of the run: whose, in which conversation, and whether it sends.
struct Member {
    user: User,
    conversation: Option<i64>,
    sends: bool,
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_loopback(&args.url, args.allow_remote).await?;
    let ws_base = match args.url.split_once("://") {
        Some(("http", rest)) => format!("ws://{}", rest.trim_end_matches('/')),
        _ => bail!("--url must be http://host:port"),
    };
    let deadline_setup = Instant::now();
    let rest = Rest::new(&args.url);
    let (members, churners) = set_up(&args, &rest).await?;
    let server = args.server_pid.map(ServerProcess::new).transpose()?;
    eprintln!(
        "set up {} members{} in {:.1?}",
        members.len(),
        if churners.is_empty() {
            String::new()
        } else {
            format!(" and {} churners", churners.len())
        },
        deadline_setup.elapsed()
    );

    let rss_before = server.as_ref().map(ServerProcess::rss_kib).transpose()?;
    let connect_started = Instant::now();
    let connections: Vec<(Member, Connection)> = stream::iter(members)
        .map(|member| {
            let base = ws_base.clone();
            async move {
                let connection = Connection::open(args.protocol, &base, &member.user.token).await?;
                Ok::<_, anyhow::Error>((member, connection))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    let connect_time = connect_started.elapsed();
    eprintln!("connected {} in {connect_time:.1?}", connections.len());

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    // Highest acked seq per conversation: conversations are new, so every seq up to it
    // is a stored message that each member must receive.
    let acked_seq: HashMap<i64, Arc<AtomicI64>> = connections
        .iter()
        .filter_map(|(member, _)| member.conversation)
        .map(|conversation| (conversation, Arc::new(AtomicI64::new(0))))
        .collect();

    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut outboxes = Vec::new();
    let mut receiving = Vec::new();
    let sending = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let cpu_before = server
        .as_ref()
        .map(ServerProcess::cpu_seconds)
        .transpose()?;
    for (index, (member, connection)) in connections.into_iter().enumerate() {
        let window = Arc::new(Semaphore::new(args.window));
        let outbox = connection.outbox();
        outboxes.push(outbox.clone());
        receiving.push(member.conversation);
        let reader_window = Arc::clone(&window);
        let reader_counters = Arc::clone(&counters);
        let reader_acked = member
            .conversation
            .and_then(|conversation| acked_seq.get(&conversation).cloned());
        let reader_stop = Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            let mut received = Received::default();
            let result = connection
                .run(reader_stop, |incoming| match incoming {
                    Incoming::Acked { seq, .. } => {
                        reader_counters.acked.fetch_add(1, Ordering::Relaxed);
                        if let Some(acked) = &reader_acked {
                            acked.fetch_max(seq, Ordering::Relaxed);
                        }
                        reader_window.add_permits(1);
                    }
                    Incoming::Refused { error, .. } => {
                        reader_counters.refused.fetch_add(1, Ordering::Relaxed);
                        reader_counters.note_refusal(error);
                        reader_window.add_permits(1);
                    }
                    Incoming::Message {
                        conversation,
                        seq,
                        body,
                    } => {
                        let before = received.deliveries;
                        received.record(conversation, seq, &body);
                        if received.deliveries > before {
                            reader_counters.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Incoming::Other => {}
                })
                .await;
            if let Err(error) = result {
                reader_counters.errors.fetch_add(1, Ordering::Relaxed);
                reader_counters.note_refusal(format!("connection: {error}"));
            }
            received
        }));
        if let (true, Some(conversation)) = (member.sends, member.conversation) {
            let sending = Arc::clone(&sending);
            let counters = Arc::clone(&counters);
            let payload = args.payload;
            let limit = args.messages.unwrap_or(u64::MAX);
            let run_id = rest.run_id().to_owned();
            let window_size = args.window;
            senders.push(tokio::spawn(async move {
                let mut sent = 0_u64;
                while sent < limit && sending.load(Ordering::Relaxed) {
                    // Bounded, so that the end of the run is seen while acks are late.
                    let permit = tokio::time::timeout(Duration::from_millis(200), window.acquire());
                    let Ok(permit) = permit.await else {
                        continue;
                    };
                    let Ok(permit) = permit else {
                        break;
                    };
                    permit.forget();
                    let key = sent;
                    let client_msg_id = format!("{run_id}-{index}-{key}");
                    if outbox
                        .send_message(key, conversation, &client_msg_id, &stats::body(payload))
                        .is_err()
                    {
                        break;
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
                // Wait for the acks still out: every permit back.
                let all = u32::try_from(window_size).unwrap_or(u32::MAX);
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, window.acquire_many(all)).await;
            }));
        }
    }
    let churn = (!churners.is_empty()).then(|| {
        tokio::spawn(churn(
            args.protocol,
            ws_base.clone(),
            churners,
            args.churn_rate,
            Arc::clone(&sending),
            Arc::clone(&counters),
        ))
    });

    let progress = progress_bar(args.quiet);
    let duration = Duration::from_secs(args.duration);
    let mut last = (Instant::now(), 0_u64, 0_u64);
    let all_sent = |senders: &[tokio::task::JoinHandle<()>]| {
        args.messages.is_some()
            && !senders.is_empty()
            && senders.iter().all(|sender| sender.is_finished())
    };
    while started.elapsed() < duration && !all_sent(&senders) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (acked, delivered) = (
            counters.acked.load(Ordering::Relaxed),
            counters.delivered.load(Ordering::Relaxed),
        );
        let seconds = last.0.elapsed().as_secs_f64();
        progress.set_message(format!(
            "{:.0?} acked {acked} ({:.0}/s), delivered {delivered} ({:.0}/s)",
            started.elapsed(),
            (acked - last.1) as f64 / seconds,
            (delivered - last.2) as f64 / seconds,
        ));
        last = (Instant::now(), acked, delivered);
    }
    sending.store(false, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.await;
    }
    let load_time = started.elapsed();
    if let Some(churn) = churn {
        let _ = churn.await;
    }
    // Deliveries still on their way.
    let expected: u64 = receiving
        .iter()
        .flatten()
        .map(|conversation| acked_seq[conversation].load(Ordering::Relaxed).max(0) as u64)
        .sum();
    let drain_started = Instant::now();
    while counters.delivered.load(Ordering::Relaxed) < expected
        && drain_started.elapsed() < DRAIN_TIMEOUT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_after = server
        .as_ref()
        .map(ServerProcess::cpu_seconds)
        .transpose()?;
    let rss_loaded = server.as_ref().map(ServerProcess::rss_kib).transpose()?;
    progress.finish_and_clear();

    stop.store(true, Ordering::Relaxed);
    for outbox in &outboxes {
        outbox.close();
    }
    let mut totals = Totals::new();
    let mut lost = 0_u64;
    for (reader, conversation) in readers.into_iter().zip(&receiving) {
        let Ok(Ok(received)) = tokio::time::timeout(DRAIN_TIMEOUT, reader).await else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if let Some(conversation) = conversation {
            let acked = acked_seq[conversation].load(Ordering::Relaxed);
            lost +=
                (acked.max(0) as u64).saturating_sub(received.distinct_up_to(*conversation, acked));
        }
        totals.add(&received);
    }

    let acked = counters.acked.load(Ordering::Relaxed);
    let seconds = load_time.as_secs_f64();
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let connections = receiving.len();
    let percentile = |q: f64| (totals.deliveries > 0).then(|| totals.latency.value_at_quantile(q));
    let report = RunReport {
        target: None,
        scenario: value_name(args.scenario),
        protocol: value_name(args.protocol),
        connections: connections as u64,
        payload_bytes: args.payload as u64,
        window: args.window as u64,
        seconds,
        connect_seconds: connect_time.as_secs_f64(),
        sent: counters.sent.load(Ordering::Relaxed),
        acked,
        refused: counters.refused.load(Ordering::Relaxed),
        acked_per_second: acked as f64 / seconds,
        delivered: totals.deliveries,
        delivered_per_second: totals.deliveries as f64 / seconds,
        latency_us: Latency {
            p50: percentile(0.5),
            p90: percentile(0.9),
            p99: percentile(0.99),
            max: (totals.deliveries > 0).then(|| totals.latency.max()),
        },
        lost,
        duplicated: totals.duplicates,
        out_of_order: totals.out_of_order,
        connection_errors: counters.errors.load(Ordering::Relaxed),
        churn_connections: counters.churned.load(Ordering::Relaxed),
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivery: cpu
            .filter(|_| totals.deliveries > 0)
            .map(|cpu| cpu * 1e6 / totals.deliveries as f64),
        server_rss_kib: rss_loaded,
        server_rss_kib_per_connection: match (rss_before, rss_loaded) {
            (Some(before), Some(after)) if connections > 0 => {
                Some(after.saturating_sub(before) as f64 / connections as f64)
            }
            _ => None,
        },
        refusals: counters.refusals(),
    };
    println!("{}", serde_json::to_string(&report)?);
    summary(&report);
    if !args.report_only && (lost > 0 || totals.duplicates > 0 || totals.out_of_order > 0) {
        bail!("deliveries were lost, duplicated or reordered");
    }
    Ok(())
}

/// Registers the run's users and makes its conversations.
async fn set_up(args: &Args, rest: &Rest) -> anyhow::Result<(Vec<Member>, Vec<User>)> {
    let member = |user: &User, conversation: i64, sends: bool| Member {
        user: user.clone(),
        conversation: Some(conversation),
        sends,
    };
    Ok(match args.scenario {
        Scenario::Fanout | Scenario::Churn => {
            let churners = if args.scenario == Scenario::Churn {
                args.churners
            } else {
                0
            };
            let users = rest.users(args.senders + args.receivers + churners).await?;
            let (owner, others) = users.split_first().context("at least one member")?;
            let group = rest.group(owner, others).await?;
            let members = users[..args.senders + args.receivers]
                .iter()
                .enumerate()
                .map(|(index, user)| member(user, group, index < args.senders))
                .collect();
            (members, users[args.senders + args.receivers..].to_vec())
        }
        Scenario::Pairs => {
            let users = rest.users(2 * args.pairs).await?;
            let pairs: Vec<(User, User)> = users
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            let conversations = rest.directs(&pairs).await?;
            let members = pairs
                .iter()
                .zip(conversations)
                .flat_map(|((a, b), conversation)| {
                    [member(a, conversation, true), member(b, conversation, true)]
                })
                .collect();
            (members, Vec::new())
        }
        Scenario::Groups => {
            let users = rest.users(args.groups * args.group_size.max(1)).await?;
            let mut members = Vec::new();
            for group in users.chunks(args.group_size.max(1)) {
                let (owner, others) = group.split_first().context("a member")?;
                let conversation = rest.group(owner, others).await?;
                members.extend(group.iter().map(|user| member(user, conversation, true)));
            }
            (members, Vec::new())
        }
        Scenario::Idle => {
            let users = rest.users(args.connections).await?;
            let members = users
                .into_iter()
                .map(|user| Member {
                    user,
                    conversation: None,
                    sends: false,
                })
                .collect();
            (members, Vec::new())
        }
    })
}

/// Churners connect and disconnect in turn until `running` is cleared, `rate`
/// connections a second in all.
async fn churn(
    protocol: Protocol,
    base: String,
    churners: Vec<User>,
    rate: f64,
    running: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut next = 0;
    let mut open: Vec<client::Outbox> = Vec::new();
    while running.load(Ordering::Relaxed) {
        let user = &churners[next % churners.len()];
        next += 1;
        // Close the oldest once all churners are connected: connects and disconnects
        // then come at the same rate.
        if open.len() >= churners.len() {
            open.remove(0).close();
        }
        match Connection::open(protocol, &base, &user.token).await {
            Ok(connection) => {
                open.push(connection.outbox());
                let stop = Arc::new(AtomicBool::new(false));
                tokio::spawn(connection.run(stop, |_| {}));
                counters.churned.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                counters.note_refusal(format!("churn connect: {error}"));
            }
        }
        tokio::time::sleep(interval).await;
    }
    for outbox in open {
        outbox.close();
    }
}

/// Counters the tasks share.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    churned: AtomicU64,
    /// Refusal codes and connection errors, counted by kind.
    refusal_kinds: std::sync::Mutex<HashMap<String, u64>>,
}

impl Counters {
    fn note_refusal(&self, kind: String) {
        if let Ok(mut kinds) = self.refusal_kinds.lock() {
            *kinds.entry(kind).or_default() += 1;
        }
    }

    fn refusals(&self) -> BTreeMap<String, u64> {
        self.refusal_kinds
            .lock()
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|(kind, count)| (kind.clone(), *count))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The name clap gives a value on the command line, which the report uses too.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// The human summary, on stderr (stdout has the JSON line).
fn summary(report: &RunReport) {
    let show = |value: Option<f64>, unit: &str| {
        value.map_or("-".to_owned(), |value| format!("{value:.1}{unit}"))
    };
    let ms = |us: Option<u64>| show(us.map(|us| us as f64 / 1000.0), " ms");
    eprintln!(
        "{} over {}, {} connections, {:.1} s",
        report.scenario, report.protocol, report.connections, report.seconds
    );
    eprintln!(
        "  acked {:.1}/s, delivered {:.1}/s; latency p50 {} p90 {} p99 {} max {}",
        report.acked_per_second,
        report.delivered_per_second,
        ms(report.latency_us.p50),
        ms(report.latency_us.p90),
        ms(report.latency_us.p99),
        ms(report.latency_us.max),
    );
    eprintln!(
        "  lost {}, duplicated {}, out of order {}, refused {}, connection errors {}",
        report.lost,
        report.duplicated,
        report.out_of_order,
        report.refused,
        report.connection_errors
    );
    if report.server_cpu_seconds.is_some() {
        eprintln!(
            "  server: {} µs CPU per delivery, {} KiB RSS ({} KiB per connection)",
            show(report.server_cpu_us_per_delivery, ""),
            report
                .server_rss_kib
                .map_or("-".to_owned(), |kib| kib.to_string()),
            show(report.server_rss_kib_per_connection, ""),
        );
    }
}

/// Refuses a server outside the loopback range unless `allow_remote`.
async fn check_loopback(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    if allow_remote {
        return Ok(());
    }
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addresses: Vec<IpAddr> = tokio::net::lookup_host(&host_port)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .map(|address| address.ip())
        .collect();
    if addresses.is_empty() || !addresses.iter().all(IpAddr::is_loopback) {
        bail!(
            "{authority} is not a loopback address; pass --allow-remote to load a server of your own elsewhere"
        );
    }
    Ok(())
}
