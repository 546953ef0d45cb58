//! Holds that outlive their deadline, and stays that are all or nothing,
//! at the source: inventory runs alone (with the gateway the harness needs)
//! and the test speaks booking's part of the conversation itself.

mod common;

use chrono::{Duration, Utc};
use common::{TestApp, spawn_parts, test_settings, tomorrow};
use duikou::Part;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use shared::bus::{Bus, EventRouter};
use shared::envelope::Envelope;
use shared::events::{
    BookingConfirmed, HoldCommitRefused, HoldItem, HoldReleaseRequested, HoldReleased,
    HoldRequested, ListingSnapshot,
};
use shared::ids::{BookingId, HostId, RoomTypeId};
use shared::money::Fen;
use shared::region::RegionCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What inventory told booking, as the test's own consumer saw it.
#[derive(Debug)]
enum Told {
    Released(HoldReleased),
    Refused(HoldCommitRefused),
}

/// Inventory alone with no grace past a hold's deadline, and a consumer
/// standing in for booking's queue.
async fn inventory_with_listener() -> (TestApp, Arc<dyn Bus>, mpsc::UnboundedReceiver<Told>) {
    let mut settings = test_settings();
    settings.hold_grace_seconds = 0;
    let app = spawn_parts(settings, &[Part::Inventory, Part::Gateway]).await;
    let bus = app.app.rt.bus.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let (released, refused) = (tx.clone(), tx);
    let router = EventRouter::new("test.booking.stand-in")
        .on::<HoldReleased, _, _>(move |_, ev| {
            let _ = released.send(Told::Released(ev));
            async { Ok(()) }
        })
        .on::<HoldCommitRefused, _, _>(move |_, ev| {
            let _ = refused.send(Told::Refused(ev));
            async { Ok(()) }
        });
    bus.subscribe(router).await.expect("listening");
    (app, bus, rx)
}

async fn scalar(db: &DatabaseConnection, sql: &str, id: uuid::Uuid) -> Option<String> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [id.into()],
        ))
        .await
        .expect("query")?;
    row.try_get::<Option<String>>("", "v").expect("v")
}

async fn hold_state(db: &DatabaseConnection, booking: BookingId) -> Option<String> {
    scalar(
        db,
        "SELECT state AS v FROM holds WHERE booking_id = $1",
        booking.0,
    )
    .await
}

/// Polls until the hold is in `state`.
async fn wait_for_hold(db: &DatabaseConnection, booking: BookingId, state: &str) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = hold_state(db, booking).await;
        if now.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "hold of {booking} stayed {now:?}, expected {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Free rooms on each night from tomorrow, `nights` of them.
async fn free(db: &DatabaseConnection, room_type: RoomTypeId, nights: i64) -> Vec<i32> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT available FROM room_nights WHERE room_type_id = $1 AND night >= $2 AND night < $3 ORDER BY night",
            [
                room_type.0.into(),
                tomorrow().into(),
                (tomorrow() + Duration::days(nights)).into(),
            ],
        ))
        .await
        .expect("nights");
    rows.iter()
        .map(|r| r.try_get("", "available").expect("available"))
        .collect()
}

fn request(room_type: RoomTypeId, night: i64, nights: i64, expires_in: Duration) -> Envelope {
    request_until(room_type, night, nights, Utc::now() + expires_in)
}

fn request_until(
    room_type: RoomTypeId,
    night: i64,
    nights: i64,
    expires_at: chrono::DateTime<Utc>,
) -> Envelope {
    let id = BookingId::new();
    let hold = HoldRequested {
        booking_id: id,
        item: HoldItem::RoomNights {
            room_type_id: room_type,
            check_in: tomorrow() + Duration::days(night),
            check_out: tomorrow() + Duration::days(night + nights),
            rooms: 1,
        },
        expires_at,
        travelers: 1,
    };
    Envelope::new("test", id.0, &hold)
}

fn confirmed(booking: BookingId) -> Envelope {
    let ev = BookingConfirmed {
        booking_id: booking,
        travelers: 1,
        sponsor_region: None,
        listing: ListingSnapshot {
            title: "测试".into(),
            title_en: None,
            host_id: HostId::new(),
            region_code: RegionCode::parse("150430").expect("code"),
            certified: false,
            cancellation_policy: Default::default(),
            starts_on: None,
            listing_id: None,
        },
        total: Fen::yuan(380),
        booker_home_region: None,
        agency_id: None,
        commission_bp: 0,
        captured: None,
        booking: None,
    };
    Envelope::new("test", booking.0, &ev)
}

async fn publish(bus: &Arc<dyn Bus>, events: &[Envelope]) {
    for result in bus.publish(events).await {
        result.expect("published");
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Told>) -> Told {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
        .await
        .expect("inventory said something in time")
        .expect("listening")
}

fn booking_of(env: &Envelope) -> BookingId {
    BookingId(env.correlation_id)
}

#[tokio::test]
async fn an_unpaid_hold_past_its_deadline_is_released_and_a_late_commit_is_refused_once_resold() {
    let (app, bus, mut told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;

    // A holds the one room for a second and never pays in time.
    let first = request(room_type, 0, 1, Duration::seconds(1));
    publish(&bus, std::slice::from_ref(&first)).await;
    wait_for_hold(&db, booking_of(&first), "HELD").await;
    assert_eq!(free(&db, room_type, 1).await, [0]);

    // Inventory's own sweeper gives it back and says so.
    match next(&mut told).await {
        Told::Released(ev) => {
            assert_eq!(ev.booking_id, booking_of(&first));
            assert!(ev.expired, "released because it expired");
        }
        other => panic!("expected a release, got {other:?}"),
    }
    assert_eq!(
        hold_state(&db, booking_of(&first)).await.as_deref(),
        Some("EXPIRED")
    );
    assert_eq!(free(&db, room_type, 1).await, [1]);

    // The next client gets the room.
    let second = request(room_type, 0, 1, Duration::minutes(15));
    publish(&bus, std::slice::from_ref(&second)).await;
    wait_for_hold(&db, booking_of(&second), "HELD").await;

    // A's payment lands now: the room is sold, so the commit is refused
    // (booking will refund it) and nothing goes below zero.
    publish(&bus, &[confirmed(booking_of(&first))]).await;
    match next(&mut told).await {
        Told::Refused(ev) => {
            assert_eq!(ev.booking_id, booking_of(&first));
            assert_eq!(ev.code, shared::ErrorCode::SoldOut);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    wait_for_hold(&db, booking_of(&first), "REFUSED").await;
    assert_eq!(free(&db, room_type, 1).await, [0]);
    assert_eq!(
        hold_state(&db, booking_of(&second)).await.as_deref(),
        Some("HELD")
    );
}

/// A hold that expired, then `change` (SQL made from its room type) done
/// by its host: the late payment is refused CLOSED, saying `why`, and
/// nothing is taken.
async fn late_commit_refused_after(
    change: impl AsyncFnOnce(&DatabaseConnection, RoomTypeId) -> String,
    why: &str,
) {
    let (app, bus, mut told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;
    let held = request(room_type, 0, 1, Duration::seconds(1));
    publish(&bus, std::slice::from_ref(&held)).await;
    assert!(matches!(next(&mut told).await, Told::Released(ev) if ev.expired));
    let changed = db
        .execute_unprepared(&change(&db, room_type).await)
        .await
        .expect("changed by its host");
    assert!(changed.rows_affected() > 0);

    publish(&bus, &[confirmed(booking_of(&held))]).await;
    match next(&mut told).await {
        Told::Refused(ev) => {
            assert_eq!(ev.code, shared::ErrorCode::Closed, "{}", ev.reason);
            assert!(ev.reason.contains(why), "{}", ev.reason);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    wait_for_hold(&db, booking_of(&held), "REFUSED").await;
    assert_eq!(free(&db, room_type, 1).await, [1], "nothing taken");
}

/// The host closes the night once the expired hold gave it back: a late
/// payment is refused as closed, not as "sold meanwhile" (it was not).
#[tokio::test]
async fn a_late_commit_of_an_expired_hold_on_a_night_closed_since_is_refused_as_closed() {
    late_commit_refused_after(
        async |_, room_type| {
            format!(
                "UPDATE room_nights SET closed = TRUE WHERE room_type_id = '{}'",
                room_type.0
            )
        },
        "a night of the stay was closed",
    )
    .await;
}

/// A late payment takes an expired hold's nights again while they are
/// free, and tells the gateways' caches (which heard the expiry's release)
/// that they are taken after all.
#[tokio::test]
async fn a_late_commit_of_an_expired_hold_takes_the_room_again_while_it_is_free() {
    let (app, bus, mut told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;
    let (tx, mut changes) = mpsc::unbounded_channel();
    let router = EventRouter::new("test.cache.stand-in")
        .on::<shared::events::CatalogueChanged, _, _>(move |_, ev| {
            let _ = tx.send(ev.by);
            async { Ok(()) }
        });
    bus.subscribe(router).await.expect("listening");
    let held = request(room_type, 0, 2, Duration::seconds(1));
    publish(&bus, std::slice::from_ref(&held)).await;
    assert!(matches!(next(&mut told).await, Told::Released(ev) if ev.expired));
    assert_eq!(free(&db, room_type, 2).await, [1, 1]);

    publish(&bus, &[confirmed(booking_of(&held))]).await;
    wait_for_hold(&db, booking_of(&held), "COMMITTED").await;
    assert_eq!(
        free(&db, room_type, 2).await,
        [0, 0],
        "both nights taken again"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Some(by)) if by == "late_payment" => break,
            Ok(Some(_)) => continue,
            _ => panic!("no catalogue change announced for the late payment"),
        }
    }
}

/// A booking confirmed after its hold expired and then cancelled at once:
/// the cancellation's release reaches inventory before the confirmation
/// (a redelivery, or competing consumers). The confirmation, coming last,
/// must not take the nights again for a booking that is cancelled.
#[tokio::test]
async fn a_release_of_an_expired_hold_is_final_even_when_the_confirmation_comes_after_it() {
    let (app, bus, mut told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;
    let held = request(room_type, 0, 1, Duration::seconds(1));
    let booking = booking_of(&held);
    publish(&bus, std::slice::from_ref(&held)).await;
    assert!(matches!(next(&mut told).await, Told::Released(ev) if ev.expired));

    let release = HoldReleaseRequested {
        booking_id: booking,
        reason: "cancelled".into(),
    };
    publish(&bus, &[Envelope::new("test", booking.0, &release)]).await;
    assert!(matches!(next(&mut told).await, Told::Released(ev) if !ev.expired));
    wait_for_hold(&db, booking, "RELEASED").await;

    let late = confirmed(booking);
    publish(&bus, std::slice::from_ref(&late)).await;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while scalar(
        &db,
        "SELECT kind AS v FROM inbox WHERE event_id = $1",
        late.id,
    )
    .await
    .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the confirmation was never handled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(hold_state(&db, booking).await.as_deref(), Some("RELEASED"));
    assert_eq!(free(&db, room_type, 1).await, [1], "the room stays free");
}

/// Twenty room types of one room each; on each, a three-night stay and a
/// one-night stay on its middle night race. Exactly one of each pair holds,
/// and the nights show exactly what the winner took: never the three-night
/// stay on two of its nights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_night_stay_racing_for_one_of_its_nights_holds_all_three_or_none() {
    let (app, bus, _told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let mut pairs = Vec::new();
    for _ in 0..20 {
        let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;
        let stay = request(room_type, 0, 3, Duration::minutes(15));
        let night = request(room_type, 1, 1, Duration::minutes(15));
        pairs.push((room_type, stay, night));
    }
    // All at once, the middle nights first in half the pairs.
    let batch: Vec<Envelope> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, (_, stay, night))| {
            if i % 2 == 0 {
                [stay.clone(), night.clone()]
            } else {
                [night.clone(), stay.clone()]
            }
        })
        .collect();
    publish(&bus, &batch).await;
    let mut stays_won = 0;
    for (room_type, stay, night) in &pairs {
        let answered = |b| {
            let db = db.clone();
            async move {
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    if let Some(s) = hold_state(&db, b).await {
                        return s;
                    }
                    assert!(Instant::now() < deadline, "no answer for {b}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let (s, n) = (
            answered(booking_of(stay)).await,
            answered(booking_of(night)).await,
        );
        let nights = free(&db, *room_type, 3).await;
        match (s.as_str(), n.as_str()) {
            ("HELD", "REJECTED") => {
                stays_won += 1;
                assert_eq!(nights, [0, 0, 0], "the stay holds all three nights");
            }
            ("REJECTED", "HELD") => {
                assert_eq!(nights, [1, 0, 1], "the refused stay holds nothing");
            }
            other => panic!("exactly one of the pair holds, got {other:?} with {nights:?}"),
        }
    }
    // Which wins is the race's business; that each pair settled cleanly is ours.
    assert!(stays_won <= pairs.len());
}

/// Inventory's sweeper gives back two overdue holds of one room type
/// while another transaction holds the earlier hold's first night (as a
/// room count change does, night by night from today). The sweep must
/// take the nights by date: had it begun with the hold that expired
/// first, the later nights would stay locked while it waits, and the
/// change reaching for them would close a circle PostgreSQL can only
/// break by failing one side. Here the test's own `NOWAIT` reach for the
/// later night stands for the change.
#[tokio::test]
async fn the_sweeper_gives_nights_back_by_date_so_a_room_count_change_never_deadlocks_with_it() {
    let (app, bus, _told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 2).await.room_type_id;

    // `late` (nights 10 and 11) expires a microsecond before `early`
    // (night 5), both a few seconds from now.
    let at = Utc::now() + Duration::seconds(3);
    let late = request_until(room_type, 10, 2, at);
    let early = request_until(room_type, 5, 1, at + Duration::microseconds(1));
    publish(&bus, &[late.clone(), early.clone()]).await;
    wait_for_hold(&db, booking_of(&late), "HELD").await;
    wait_for_hold(&db, booking_of(&early), "HELD").await;

    let night = |n: i64| {
        format!(
            "room_type_id = '{}' AND night = '{}'",
            room_type.0,
            tomorrow() + Duration::days(n)
        )
    };
    let held = common::LockHeld::begin(
        db.clone(),
        &format!(
            "SELECT night FROM room_nights WHERE {} FOR UPDATE",
            night(5)
        ),
    )
    .await;
    // Both expire; the sweep takes their holds and waits for night 5.
    held.until_waiting(1, true).await;
    let reach = db
        .execute_unprepared(&format!(
            "SELECT night FROM room_nights WHERE {} FOR UPDATE NOWAIT",
            night(10)
        ))
        .await;
    assert!(
        reach.is_ok(),
        "the waiting sweep held a later night: {reach:?}"
    );
    held.release().await;

    wait_for_hold(&db, booking_of(&late), "EXPIRED").await;
    wait_for_hold(&db, booking_of(&early), "EXPIRED").await;
    let nights = free(&db, room_type, 12).await;
    assert!(nights.iter().all(|&n| n == 2), "{nights:?}");
}

/// The homestay's id of a room type, and a statement taking it off sale.
async fn off_sale(db: &DatabaseConnection, room_type: RoomTypeId) -> String {
    let homestay = scalar(
        db,
        "SELECT CAST(homestay_id AS TEXT) AS v FROM room_types WHERE id = $1",
        room_type.0,
    )
    .await
    .expect("its homestay");
    format!("UPDATE homestays SET published = FALSE WHERE id = '{homestay}'")
}

/// The host takes the homestay off sale once the expired hold gave its
/// room back: a late payment is refused as off sale, not confirmed on a
/// listing its host withdrew (the take looked at free rooms only).
#[tokio::test]
async fn a_late_commit_of_an_expired_hold_on_a_homestay_taken_off_sale_is_refused() {
    late_commit_refused_after(off_sale, "taken off sale").await;
}

/// A hold request whose take runs while the homestay is being taken off
/// sale (its row locked by the change, here held open by the test) waits
/// for the change and is refused: before, the take did not look at the
/// homestay, and a booking was held on a listing just withdrawn.
#[tokio::test]
async fn a_hold_taken_while_its_homestay_goes_off_sale_is_refused() {
    let (app, bus, _told) = inventory_with_listener().await;
    let db = app.service_db("inventory").await;
    let room_type = common::homestay_on(bus.as_ref(), 1).await.room_type_id;
    let withdraw = off_sale(&db, room_type).await;
    let homestay = withdraw.rsplit('\'').nth(1).expect("the id").to_owned();
    let change = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM homestays WHERE id = '{homestay}' FOR UPDATE"),
    )
    .await;
    let asked = request(room_type, 0, 1, Duration::minutes(15));
    publish(&bus, std::slice::from_ref(&asked)).await;
    change.until_waiting(1, true).await;
    change.run(&withdraw).await.expect("taken off sale");
    change.release().await;
    wait_for_hold(&db, booking_of(&asked), "REJECTED").await;
    assert_eq!(free(&db, room_type, 1).await, [1], "nothing taken");
}
