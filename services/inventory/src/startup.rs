//! Starting inventory: database, migrations, demo catalogue, consumers.

use crate::SERVICE;
use crate::messaging::Inventory;
use crate::storage::{self, Migrator};
use chrono::{Duration, Utc};
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{CreateHomestay, NewRoomType, SetRoomCalendar};
use shared::runtime::Runtime;
use tracing::info;

/// Connects, migrates, seeds the demo catalogue if asked and empty, and
/// starts consuming events and RPCs.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    let inventory = Inventory { db, outbox };
    if rt.settings.demo && storage::homestay_count(&inventory.db).await? == 0 {
        seed_demo(&inventory).await?;
    }
    rt.bus.subscribe(inventory.events()).await?;
    rt.bus.serve(inventory.rpc()).await?;
    Ok(())
}

/// Demonstration data (labelled [演示]): a yurt homestay in 敖汉旗 with 90 nights on sale.
pub async fn seed_demo(inventory: &Inventory) -> anyhow::Result<()> {
    let aohan = RegionCode::parse("150430")?;
    let created = inventory
        .create_homestay(CreateHomestay {
            host_name: "[演示] 敖汉旗宝国吐乡牧民合作社".into(),
            region_code: aohan,
            name: "[演示] 敖汉草原蒙古包民宿".into(),
            room_type: NewRoomType {
                name: "蒙古包双床房".into(),
                beds: 2,
                max_guests: 2,
            },
            cancellation_policy: None,
            by: None,
        })
        .await?;
    let today = Utc::now().date_naive();
    inventory
        .set_room_calendar(SetRoomCalendar {
            room_type_id: created.room_type_id,
            from: today,
            to: today + Duration::days(90),
            rooms: 5,
            price: Fen::yuan(380),
            by: None,
        })
        .await?;
    info!(homestay = %created.homestay_id, room_type = %created.room_type_id, "seeded the demonstration homestay");
    Ok(())
}
