//! `duikou`: run Duikou, migrate its databases, seed demonstration data.

use clap::{Parser, Subcommand};
use duikou::{App, Part, migrate};
use shared::config::Settings;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "duikou",
    version,
    about = "Duikou (对口): poverty-relief travel routes and rural homestays, with every yuan traced."
)]
struct Cli {
    /// Optional TOML file; DUIKOU_* environment variables override it.
    #[arg(long, global = true, env = "DUIKOU_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Duikou: every part in one process (default), or one part.
    ///
    /// With no DUIKOU_POSTGRES_URL / DUIKOU_AMQP_URL it runs embedded
    /// (SQLite files under ./data, the in-process bus); with them, on the
    /// real servers, where N copies of any part share the work.
    Serve {
        /// Which part to run.
        #[arg(value_enum, default_value = "all")]
        part: Part,
    },
    /// Create each service's database if missing and run its migrations.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    shared::telemetry::init(&settings.log_format);
    match cli.command {
        Command::Serve { part } => serve(settings, part).await,
        Command::Migrate => {
            migrate(&settings).await?;
            println!("migrated the databases of inventory, booking, payment and partnership");
            Ok(())
        }
    }
}

async fn serve(settings: Settings, part: Part) -> anyhow::Result<()> {
    let mode = settings.mode();
    let app = App::start(settings, part).await?;
    println!("Duikou is running ({mode} mode, part: {part:?}).");
    if let Some(addr) = app.gateway_addr {
        println!("  GraphQL:  http://{addr}/graphql");
        println!("  GraphiQL: http://{addr}/");
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    println!("Stopping: finishing messages in flight…");
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
