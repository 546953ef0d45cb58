//! Holds at the source: 500 hold requests for 10 rooms (and 10 seats) sent
//! straight to inventory's queue, each twice, while a sampler watches the
//! capacity. Inventory runs alone (with the gateway the harness needs), so
//! nothing but the holds touches the counts.

mod common;

use chrono::{Duration, Utc};
use common::{TestApp, spawn_parts, test_settings, tomorrow};
use duikou::Part;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use shared::auth::Principal;
use shared::bus::{Bus, call};
use shared::envelope::Envelope;
use shared::events::{HoldItem, HoldRequested};
use shared::ids::BookingId;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{AddDeparture, CreateRoute, ItineraryDay, RouteStatus, SetRouteStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

const REQUESTS: usize = 500;
const CAPACITY: i64 = 10;

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("a row");
    row.try_get("", "n").expect("n")
}

/// Inventory alone (and the gateway the harness needs), on the real
/// servers or embedded. On RabbitMQ requests go through the gateway's
/// connection, as from another process; embedded, each part has its own
/// in-process bus, so through inventory's.
async fn inventory_alone(settings: shared::config::Settings) -> (TestApp, Arc<dyn Bus>) {
    let embedded = settings.amqp_url.is_none();
    let app = spawn_parts(settings, &[Part::Inventory, Part::Gateway]).await;
    let bus = if embedded {
        app.parts[0].rt.bus.clone()
    } else {
        app.app.rt.bus.clone()
    };
    (app, bus)
}

/// Sends 500 hold requests for `item` (each twice), samples `available`
/// until all are answered, and checks exactly `CAPACITY` were granted.
async fn race(app: &TestApp, bus: Arc<dyn Bus>, item: HoldItem, available_sql: &'static str) {
    let db = app.service_db("inventory").await;
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let most_held = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (db, lowest, most_held, done) =
            (db.clone(), lowest.clone(), most_held.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                lowest.fetch_min(scalar(&db, available_sql).await, Ordering::Relaxed);
                let held = scalar(
                    &db,
                    "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds WHERE state = 'HELD'",
                )
                .await;
                most_held.fetch_max(held, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let requests: Vec<Envelope> = (0..REQUESTS)
        .map(|_| {
            let id = BookingId::new();
            let hold = HoldRequested {
                booking_id: id,
                item: item.clone(),
                expires_at: Utc::now() + Duration::minutes(15),
                travelers: 1,
            };
            Envelope::new("test", id.0, &hold)
        })
        .collect();
    // Every request delivered twice: redeliveries must not hold again.
    for batch in [&requests, &requests] {
        for result in bus.publish(batch).await {
            result.expect("published");
        }
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while scalar(&db, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds").await < REQUESTS as i64 {
        assert!(Instant::now() < deadline, "not every request was answered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let granted = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds WHERE state = 'HELD'",
    )
    .await;
    let refused = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds WHERE state = 'REJECTED'",
    )
    .await;
    assert_eq!((granted, refused), (CAPACITY, REQUESTS as i64 - CAPACITY));
    assert_eq!(scalar(&db, available_sql).await, 0);
    assert!(
        lowest.load(Ordering::Relaxed) >= 0,
        "capacity went below zero"
    );
    assert!(
        most_held.load(Ordering::Relaxed) <= CAPACITY,
        "more held than capacity at a sample"
    );
    let replies = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds WHERE reply_kind IS NOT NULL",
    )
    .await;
    assert_eq!(replies, REQUESTS as i64, "one answer per request");
    let sold_out = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds
         WHERE reply_kind = 'inventory.hold_rejected' AND reply_payload LIKE '%\"SOLD_OUT\"%'",
    )
    .await;
    assert_eq!(
        sold_out,
        REQUESTS as i64 - CAPACITY,
        "each refusal says SOLD_OUT"
    );
}

async fn ten_rooms(settings: shared::config::Settings) {
    let (app, bus) = inventory_alone(settings).await;
    let created = common::homestay_on(bus.as_ref(), CAPACITY as u32).await;
    let item = HoldItem::RoomNights {
        room_type_id: created.room_type_id,
        check_in: tomorrow(),
        check_out: tomorrow() + Duration::days(1),
        rooms: 1,
    };
    race(
        &app,
        bus,
        item,
        "SELECT CAST(MIN(available) AS BIGINT) AS n FROM room_nights WHERE night = (SELECT MIN(night) FROM room_nights)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_for_ten_rooms_hold_exactly_ten() {
    ten_rooms(test_settings()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_too_five_hundred_requests_for_ten_rooms_hold_exactly_ten() {
    ten_rooms(embedded()).await;
}

/// The embedded default without its demo catalogue (its nights would be
/// sampled too).
fn embedded() -> shared::config::Settings {
    let mut settings = common::embedded_settings();
    settings.demo_data = Some(false);
    settings
}

async fn ten_seats(settings: shared::config::Settings) {
    let (app, bus) = inventory_alone(settings).await;
    let banner = RegionCode::parse("150430").expect("code");
    let route = call(
        bus.as_ref(),
        &CreateRoute {
            idempotency_key: None,
            host_name: "合作社".into(),
            host_id: None,
            region_code: banner,
            title_zh: "敖汉 一日".into(),
            title_en: "Aohan, one day".into(),
            description_zh: String::new(),
            description_en: String::new(),
            itinerary: vec![ItineraryDay {
                day: 1,
                title: "兴隆洼".into(),
                title_en: String::new(),
                regions: vec![banner],
            }],
            price: Fen::yuan(500),
            cancellation_policy: None,
            by: Principal::platform(),
        },
    )
    .await
    .expect("route");
    let departure = call(
        bus.as_ref(),
        &AddDeparture {
            idempotency_key: None,
            route_id: route.route_id,
            starts_on: tomorrow() + Duration::days(20),
            seats: CAPACITY as u32,
            price: None,
            cutoff_days: 1,
            by: Principal::platform(),
        },
    )
    .await
    .expect("departure");
    call(
        bus.as_ref(),
        &SetRouteStatus {
            route_id: route.route_id,
            status: RouteStatus::Published,
            by: Principal::platform(),
        },
    )
    .await
    .expect("published");
    let item = HoldItem::Seats {
        departure_id: departure.id,
        seats: 1,
    };
    race(
        &app,
        bus,
        item,
        "SELECT CAST(MIN(available) AS BIGINT) AS n FROM departures",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_for_ten_seats_hold_exactly_ten() {
    ten_seats(test_settings()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_too_five_hundred_requests_for_ten_seats_hold_exactly_ten() {
    ten_seats(embedded()).await;
}

/// The saga repeats a hold request it got no answer to: a new event for the
/// same booking. Inventory takes nothing more and answers it as the first
/// time. A request that comes after its booking's release (or overtaken by
/// it) holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_is_answered_as_the_first_and_takes_nothing_more() {
    use shared::bus::EventRouter;
    use shared::events::{HoldGranted, HoldReleaseRequested};
    let (app, bus) = inventory_alone(test_settings()).await;
    let db = app.service_db("inventory").await;
    let created = common::homestay_on(bus.as_ref(), 3).await;
    let item = HoldItem::RoomNights {
        room_type_id: created.room_type_id,
        check_in: tomorrow(),
        check_out: tomorrow() + Duration::days(1),
        rooms: 1,
    };
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let router = EventRouter::new(format!("test.answers.{}", uuid::Uuid::now_v7().simple()))
        .ephemeral()
        .on::<HoldGranted, _, _>(move |env, ev| {
            let _ = tx.send((env.causation_id, ev.booking_id, ev.total));
            async { Ok(()) }
        });
    bus.subscribe(router).await.expect("subscribe");
    let request = |booking: BookingId| {
        Envelope::new(
            "test",
            booking.0,
            &HoldRequested {
                booking_id: booking,
                item: item.clone(),
                expires_at: Utc::now() + Duration::minutes(15),
                travelers: 1,
            },
        )
    };
    let publish = |env: Envelope| {
        let bus = bus.clone();
        async move {
            for result in bus.publish(&[env]).await {
                result.expect("published");
            }
        }
    };
    let available = "SELECT CAST(MIN(available) AS BIGINT) AS n FROM room_nights
                     WHERE night = (SELECT MIN(night) FROM room_nights)";
    async fn next_answer<T>(answers: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(20), answers.recv());
        wait.await.expect("an answer in time").expect("answers")
    }

    let booking = BookingId::new();
    let first = request(booking);
    publish(first.clone()).await;
    let (cause, held_for, total) = next_answer(&mut answers).await;
    assert_eq!((cause, held_for), (Some(first.id), booking));
    assert_eq!(scalar(&db, available).await, 2);

    let again = request(booking);
    publish(again.clone()).await;
    let (cause, held_for, total_again) = next_answer(&mut answers).await;
    assert_eq!(
        (cause, held_for, total_again),
        (Some(again.id), booking, total)
    );
    assert_eq!(scalar(&db, available).await, 2, "the repeat took nothing");
    assert_eq!(
        scalar(&db, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds").await,
        1
    );

    // Released, then asked again: nothing is held, the room is free.
    let release = |booking: BookingId| {
        Envelope::new(
            "test",
            booking.0,
            &HoldReleaseRequested {
                booking_id: booking,
                reason: "test".into(),
            },
        )
    };
    publish(release(booking)).await;
    let late = BookingId::new();
    // This one's release overtakes its request.
    publish(release(late)).await;
    let (repeat, overtaken) = (request(booking), request(late));
    let handled = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM inbox WHERE event_id IN ('{}', '{}')",
        repeat.id, overtaken.id
    );
    let released = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds WHERE state = 'RELEASED'";
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while scalar(&db, released).await < 2 {
        assert!(Instant::now() < deadline, "the releases were not handled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    publish(repeat).await;
    publish(overtaken).await;
    while scalar(&db, &handled).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the late requests were not handled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        scalar(&db, available).await,
        3,
        "nothing held after a release"
    );
    assert_eq!(scalar(&db, released).await, 2);
    assert_eq!(
        scalar(&db, "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM holds").await,
        2
    );
}

/// A hold asked for a listing gone off sale — a booking the gateway took
/// before it heard of the change (it refuses the rest at once, NOT_FOUND)
/// — is refused NOT_PUBLISHED and takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_a_listing_off_sale_is_refused_not_published() {
    use shared::bus::EventRouter;
    use shared::events::HoldRejected;
    let (app, bus) = inventory_alone(test_settings()).await;
    let db = app.service_db("inventory").await;
    let created = common::homestay_on(bus.as_ref(), 3).await;
    let off = shared::rpcs::PublishListing {
        listing_id: created.homestay_id.0,
        published: false,
        by: Principal::platform(),
    };
    call(bus.as_ref(), &off).await.expect("off sale");
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let router = EventRouter::new(format!("test.refusals.{}", uuid::Uuid::now_v7().simple()))
        .ephemeral()
        .on::<HoldRejected, _, _>(move |_, ev| {
            let _ = tx.send(ev);
            async { Ok(()) }
        });
    bus.subscribe(router).await.expect("subscribe");
    let booking = BookingId::new();
    let request = HoldRequested {
        booking_id: booking,
        item: HoldItem::RoomNights {
            room_type_id: created.room_type_id,
            check_in: tomorrow(),
            check_out: tomorrow() + Duration::days(1),
            rooms: 1,
        },
        expires_at: Utc::now() + Duration::minutes(15),
        travelers: 1,
    };
    for result in bus
        .publish(&[Envelope::new("test", booking.0, &request)])
        .await
    {
        result.expect("published");
    }
    let wait = tokio::time::timeout(std::time::Duration::from_secs(20), answers.recv());
    let refused = wait.await.expect("an answer in time").expect("answers");
    assert_eq!(
        (refused.booking_id, refused.code),
        (booking, shared::ErrorCode::NotPublished),
        "{refused:?}"
    );
    let available = "SELECT CAST(MIN(available) AS BIGINT) AS n FROM room_nights
                     WHERE night = (SELECT MIN(night) FROM room_nights)";
    assert_eq!(scalar(&db, available).await, 3, "the refusal took a room");
}
