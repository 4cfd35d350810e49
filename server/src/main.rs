//! `courier`: the reference server.

use courier_server::{Application, Settings};
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let settings = Settings::from_env();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "courier listening");
    app.run().await?;
    Ok(())
}
