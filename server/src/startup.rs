//! Building and running the application: shared by `main` and the tests.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};
use courier_engine::bus::{Bus, LocalBus, RedisBus, RedisBusConfig};
use courier_engine::store::{DieselStore, Store, StoreConfig};
use courier_engine::{Engine, Limits};

use crate::auth::Tokens;
use crate::config::Config;
use crate::error;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::realtime::dispatch::Dispatcher;
use crate::realtime::heartbeat::Heartbeats;

/// What the auth routes need of the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// bcrypt work factor.
    pub bcrypt_cost: u32,
}

/// What the socket transports need of the configuration.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Browser origins allowed to open sockets besides the server's own.
    pub allowed_origins: Vec<String>,
}

/// A bound server, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    engine: Engine,
}

/// Opens the store named by the configuration, applying migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<DieselStore> {
    let store_config = StoreConfig::new(config.database_url());
    Ok(DieselStore::connect(store_config).await?)
}

impl Application {
    /// Checks the settings ([`Config::validate`]), opens the store, builds the engine and
    /// binds the listener (port 0 picks one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before anything is opened or written: a bad setting changes nothing.
        config.validate()?;
        let secret = config.resolve_jwt_secret()?;
        let store = open_store(&config).await?;
        let limits = Limits {
            outbound_queue_capacity: config.outbound_queue_capacity,
            max_commit_batch: config.max_commit_batch,
            commit_concurrency: config.commit_concurrency,
            presence_grace: Duration::from_millis(config.presence_grace_ms),
            write_delay: Duration::from_millis(config.write_delay_ms),
            write_delay_min_audience: config.write_delay_min_audience,
            ..Limits::default()
        };
        let store: Arc<dyn Store> = Arc::new(store);
        let mut builder = Engine::builder(Arc::clone(&store)).limits(limits);
        let redis_bus = Arc::new(OnceLock::new());
        if !config.redis_url.is_empty() {
            let bus_config = RedisBusConfig {
                presence_ttl: Duration::from_millis(config.presence_ttl_ms),
                ..RedisBusConfig::new(config.redis_url.clone())
            };
            // Checked here so that a malformed URL stops the start with a clear error.
            bus_config
                .check()
                .map_err(|error| anyhow::anyhow!("REDIS_URL is not usable: {error}"))?;
            let slot = Arc::clone(&redis_bus);
            builder = builder.bus(move |local| -> Arc<dyn Bus> {
                match RedisBus::start(bus_config, store, local.clone()) {
                    Ok(bus) => {
                        let _ = slot.set(Arc::clone(&bus));
                        bus
                    }
                    Err(error) => {
                        tracing::error!(%error, "the Redis bus did not start; serving this node only");
                        Arc::new(LocalBus::new(local))
                    }
                }
            });
        }
        let metrics = Arc::new(Metrics::new(redis_bus)?);
        let engine = builder.observer(metrics.clone()).build();
        let tokens = Tokens::new(
            secrecy::ExposeSecret::expose_secret(&secret),
            config.access_token_ttl(),
            config.refresh_token_ttl(),
        );
        let listener = TcpListener::bind(&config.listen)?;
        let port = listener.local_addr()?.port();

        let engine_data = web::Data::new(engine.clone());
        let tokens = web::Data::new(tokens);
        let auth = web::Data::new(AuthSettings {
            bcrypt_cost: config.bcrypt_cost,
        });
        let sockets = web::Data::new(SocketSettings {
            max_frame_bytes: config.ws_max_frame_bytes,
            allowed_origins: config.cors_allowed_origins.clone(),
        });
        let calls = web::Data::new(crate::routes::calls::CallSettings {
            ice_servers: config.ice_servers.clone(),
        });
        let metrics = web::Data::from(metrics);
        let limits = web::Data::new(RateLimits::new(&config));
        let heartbeats = Heartbeats::new();
        actix_web::rt::spawn(Heartbeats::run(Arc::downgrade(&heartbeats)));
        let dispatcher = web::Data::new(Dispatcher {
            limits: limits.clone().into_inner(),
            metrics: metrics.clone().into_inner(),
            heartbeats: heartbeats.clone(),
        });
        let idle_limits = limits.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                idle_limits.forget_idle();
            }
        });
        let socketio = web::Data::new(crate::realtime::socketio::SocketIoState {
            registry: Arc::default(),
        });
        let json_limit = config.max_json_body_bytes;
        let origins = config.cors_allowed_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&origins))
                .wrap(security_headers())
                .wrap(from_fn(request_log))
                .app_data(engine_data.clone())
                .app_data(tokens.clone())
                .app_data(auth.clone())
                .app_data(sockets.clone())
                .app_data(calls.clone())
                .app_data(metrics.clone())
                .app_data(limits.clone())
                .app_data(dispatcher.clone())
                .app_data(socketio.clone())
                .app_data(web::PayloadConfig::new(json_limit))
                .app_data(
                    web::JsonConfig::default()
                        .limit(json_limit)
                        .error_handler(error::json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(crate::routes::configure)
                .default_service(web::to(not_found))
        })
        // Acks and events are small writes that must leave at once: with Nagle's
        // algorithm a write waits for the client's delayed ACK (40 ms on Linux).
        .tcp_nodelay(true)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(10)
        .run();
        Ok(Self {
            port,
            server,
            engine,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            engine: self.engine.clone(),
        }
    }

    /// Serves until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Stops the server: sockets are told to go away (close code 1001), this node's users
/// leave the cluster's presence, no new connections are accepted, and requests in
/// flight, sends awaiting their commit included, finish.
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    engine: Engine,
}

impl ShutdownHandle {
    /// Stops gracefully.
    pub async fn stop(&self) {
        self.engine.close_all_sessions();
        // Before the server stops: once it has, the process exits.
        self.engine.leave_cluster().await;
        self.server.stop(true).await;
    }
}

/// CORS for the configured origins only; none by default (same-origin use).
fn cors(origins: &[String]) -> actix_cors::Cors {
    origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        })
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
        ])
        .max_age(600)
}

/// Headers on every response. The CSP allows only this origin's scripts and styles
/// (Swagger UI's inline styles included) and no framing anywhere.
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Frame-Options", "DENY"))
        .add((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ))
}

async fn not_found() -> Result<actix_web::HttpResponse, error::ApiError> {
    Err(error::ApiError::not_found("no such route"))
}

/// Logs one line per request with a request id, the method, the path (never the query
/// string, which may carry an access token), the status and the duration. Hand-written
/// because tracing-actix-web's root span records the full URI, query included.
async fn request_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = format!("{:016x}", rand::random::<u64>());
    let method = req.method().clone();
    let path = req.path().to_owned();
    // Handlers and the rate limiter answer errors as responses, so they pass here too.
    let mut response = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    let elapsed: Duration = started.elapsed();
    if let Some(metrics) = response.request().app_data::<web::Data<Metrics>>() {
        let class = match response.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics.http_responses.with_label_values(&[class]).inc();
    }
    tracing::info!(
        request_id,
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}
