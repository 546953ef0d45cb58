//! Starting partnership: database, migrations, the event consumer.

use crate::SERVICE;
use crate::messaging::Partnerships;
use crate::storage::Migrator;
use shared::runtime::Runtime;

/// Connects, migrates, and consumes booking events.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, _outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    rt.bus.subscribe(Partnerships { db }.events()).await?;
    Ok(())
}
