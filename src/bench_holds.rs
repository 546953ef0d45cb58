//! `duikou bench holds`: hold requests answered per second by inventory
//! alone, at several numbers of requests in flight, on one hot room type
//! and spread over 1,000 room types. Each client sends `booking.hold_requested`
//! to the bus and waits for its `inventory.hold_granted`/`hold_rejected`
//! (through a temporary queue of its own): outbox, broker and the hold's
//! conditional UPDATE, end to end. A figure, not a test.

use crate::bench_search::{bench_settings, cleanup, seed_room_types};
use crate::{App, Part};
use chrono::{Duration as Days, Utc};
use hdrhistogram::Histogram;
use sea_orm::ConnectionTrait;
use shared::bus::EventRouter;
use shared::config::Settings;
use shared::envelope::Envelope;
use shared::events::{HoldGranted, HoldItem, HoldRejected, HoldRequested};
use shared::ids::{BookingId, RoomTypeId};
use shared::money::Fen;
use shared::region::RegionCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One measured load.
#[derive(Debug, serde::Serialize)]
pub struct HoldsRun {
    /// Room types the requests are spread over.
    pub room_types: usize,
    /// Requests in flight.
    pub clients: usize,
    /// Requests answered per second.
    pub holds_per_second: f64,
    /// Granted in the measured time.
    pub granted: u64,
    /// Refused in the measured time.
    pub refused: u64,
    /// Request → answer, median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

type Waiting = Arc<Mutex<HashMap<BookingId, oneshot::Sender<bool>>>>;

const NIGHTS: i64 = 30;

/// Runs the holds benchmark.
pub async fn holds(
    settings: Settings,
    client_counts: &[usize],
    seconds: u64,
) -> anyhow::Result<Vec<HoldsRun>> {
    let (settings, _) = bench_settings(settings);
    let app = crate::bench_search::start_app(&settings, Part::Inventory).await?;
    let waiting: Waiting = Arc::default();
    let answers = {
        let (granted, refused) = (waiting.clone(), waiting.clone());
        let answer = |waiting: &Waiting, id: BookingId, ok: bool| {
            let sender = waiting.lock().ok().and_then(|mut w| w.remove(&id));
            if let Some(sender) = sender {
                let _ = sender.send(ok);
            }
        };
        EventRouter::new(format!("bench.holds.{}", uuid::Uuid::now_v7().simple()))
            .ephemeral()
            .on::<HoldGranted, _, _>(move |_env, ev| {
                answer(&granted, ev.booking_id, true);
                async { Ok(()) }
            })
            .on::<HoldRejected, _, _>(move |_env, ev| {
                answer(&refused, ev.booking_id, false);
                async { Ok(()) }
            })
    };
    app.rt.bus.subscribe(answers).await?;
    let result = async {
        print!("  seeding 1,000 room types… ");
        let spread = room_types(&app, 1_000, 1_000).await?;
        // One night of one room type, with rooms enough never to sell out.
        let hot = room_types(&app, 1, 1_000_000).await?;
        println!("done");
        let mut runs = Vec::new();
        for (name, types) in [("one hot room type", &hot), ("1,000 room types", &spread)] {
            for &clients in client_counts {
                let run = load(&app, &waiting, types, clients, seconds).await?;
                println!(
                    "  {name:<18} {clients:>3} in flight: {:>7.0} holds/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} granted, {} refused)",
                    run.holds_per_second, run.p50_ms, run.p99_ms, run.granted, run.refused
                );
                runs.push(run);
            }
        }
        Ok::<_, anyhow::Error>(runs)
    }
    .await;
    let queues = app.rt.bus.declared_queues();
    app.stop().await;
    cleanup(&settings, &queues).await;
    result
}

async fn room_types(app: &App, count: usize, rooms: u32) -> anyhow::Result<Vec<RoomTypeId>> {
    // A homestay lists at most 500 rooms of a type; the bench wants more
    // (a night that never sells out), so it raises the counts it seeded
    // behind inventory's back, in its own scratch database.
    let listed = rooms.min(500);
    let ids = seed_room_types(app.rt.bus.as_ref(), count, listed, NIGHTS + 2, |_| {
        Ok((RegionCode::parse("150430")?, Fen::yuan(300)))
    })
    .await?;
    if rooms > listed {
        let db = shared::db::connect(&app.rt.settings, "inventory").await?;
        let list = shared::db::placeholders(2, ids.len());
        let mut values: Vec<sea_orm::Value> = vec![i32::try_from(rooms)?.into()];
        values.extend(ids.iter().map(|id| id.0.into()));
        for sql in [
            format!("UPDATE room_types SET rooms = $1 WHERE id IN ({list})"),
            format!(
                "UPDATE room_nights SET rooms = $1, available = $1 WHERE room_type_id IN ({list})"
            ),
        ] {
            db.execute_raw(sea_orm::Statement::from_sql_and_values(
                db.get_database_backend(),
                sql,
                values.clone(),
            ))
            .await?;
        }
        db.close().await?;
    }
    Ok(ids)
}

async fn load(
    app: &App,
    waiting: &Waiting,
    types: &[RoomTypeId],
    clients: usize,
    seconds: u64,
) -> anyhow::Result<HoldsRun> {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(seconds);
    let tomorrow = Utc::now().date_naive() + Days::days(1);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (bus, waiting, types) = (app.rt.bus.clone(), waiting.clone(), types.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut granted, mut refused) = (0u64, 0u64);
            let mut n = c * 7919;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                n = n.wrapping_add(1);
                let id = BookingId::new();
                let night = if types.len() == 1 {
                    tomorrow
                } else {
                    tomorrow + Days::days((n / types.len()) as i64 % NIGHTS)
                };
                let request = HoldRequested {
                    booking_id: id,
                    item: HoldItem::RoomNights {
                        room_type_id: types[n % types.len()],
                        check_in: night,
                        check_out: night + Days::days(1),
                        rooms: 1,
                    },
                    expires_at: Utc::now() + Days::minutes(15),
                    travelers: 1,
                };
                let (tx, rx) = oneshot::channel();
                if let Ok(mut w) = waiting.lock() {
                    w.insert(id, tx);
                }
                for published in bus.publish(&[Envelope::new("bench", id.0, &request)]).await {
                    published?;
                }
                let ok = tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer to a hold request in 30 s"))??;
                if started >= warm_until {
                    hist.record(started.elapsed().as_micros() as u64)?;
                    if ok {
                        granted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, granted, refused))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut granted, mut refused) = (0, 0);
    for task in tasks {
        let (hist, g, r) = task.await??;
        all.add(hist)?;
        granted += g;
        refused += r;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(HoldsRun {
        room_types: types.len(),
        clients,
        holds_per_second: all.len() as f64 / seconds as f64,
        granted,
        refused,
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
    })
}
