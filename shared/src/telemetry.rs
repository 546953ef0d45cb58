//! Logging: `RUST_LOG` filters (default `info`, quieter for sqlx, lapin and
//! sea-orm), `pretty` or `json` output.
//! Event and RPC handlers run inside spans carrying the correlation id, so
//! every line a saga step logs names its booking.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing (tests).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,sea_orm=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
