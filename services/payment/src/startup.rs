//! Starting payment: database, migrations, the provider, its consumers.

use crate::SERVICE;
use crate::messaging::Payments;
use crate::provider::Sandbox;
use crate::storage::Migrator;
use shared::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;

/// Connects, migrates, and serves payment's RPCs with the sandbox provider.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    let payments = Payments {
        db,
        outbox,
        provider: Arc::new(Sandbox::new(Duration::from_millis(
            rt.settings.sandbox_slow_ms,
        ))),
        rates: rt.settings.split_rates(),
    };
    rt.bus.subscribe(payments.events()).await?;
    rt.bus.serve(payments.rpc()).await?;
    Ok(())
}
