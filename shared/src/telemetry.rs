//! Logging: `RUST_LOG` filters (default `info`, quieter for sqlx, lapin and
//! sea-orm), `pretty` or `json` output.
//! Event and RPC handlers run inside spans carrying the correlation id, so
//! every line a saga step logs names its booking.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber once; later calls do nothing (tests).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,sea_orm=warn"));
    // Colours only for a terminal: piped to a file or a collector, escape
    // codes are noise.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let lines = if format.eq_ignore_ascii_case("json") {
        lines.json().boxed()
    } else {
        lines.boxed()
    };
    let _ = tracing_subscriber::registry()
        // The EnvFilter outermost: its level hint is the one the registry
        // keeps (and hands to the `log` crate), so lines below `RUST_LOG`'s
        // level are not even made.
        .with(lines.with_filter(no_frames()).with_filter(filter))
        .try_init();
}

/// The AMQP client's trace lines print the frames it sends and hears, the
/// broker login's `\0user\0password` among them: never shown, whatever
/// `RUST_LOG` asks (its debug lines and above are).
fn no_frames<S>() -> impl tracing_subscriber::layer::Filter<S> {
    tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::DEBUG
            || !(meta.target().starts_with("lapin") || meta.target().starts_with("amq_protocol"))
    })
}

tokio::task_local! {
    /// The public request a piece of work serves (the gateway's
    /// `x-request-id`), carried with every RPC it makes.
    static REQUEST_ID: String;
}

/// Runs `work` on behalf of the public request `id`, if any: the RPCs it
/// calls carry the id, and the services log their handling of them under it.
pub async fn with_request_id<F: std::future::Future>(id: Option<String>, work: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, work).await,
        None => work.await,
    }
}

/// The request the current task serves, if it serves one.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A spawner for per-request work (DataLoaders) that keeps the request id.
pub fn spawn_in_request<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match request_id() {
        Some(id) => tokio::spawn(REQUEST_ID.scope(id, work)),
        None => tokio::spawn(work),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_id_follows_the_work_and_its_spawned_loaders() {
        assert_eq!(request_id(), None);
        let seen = with_request_id(Some("req-1".into()), async {
            let inner = spawn_in_request(async { request_id() })
                .await
                .ok()
                .flatten();
            (request_id(), inner)
        })
        .await;
        assert_eq!(seen, (Some("req-1".into()), Some("req-1".into())));
        assert_eq!(
            spawn_in_request(async { request_id() })
                .await
                .ok()
                .flatten(),
            None
        );
    }
}
