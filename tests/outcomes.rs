//! Each way a booking ends is announced on its own routing key
//! (`booking.confirmed`, `.cancelled`, `.expired`, `.rejected`) with what
//! partnership and pushes need, read here by a consumer of the test's own.

mod common;

use common::{TestApp, spawn_app_with, test_settings, tomorrow};
use serde_json::{Value, json};
use shared::bus::EventRouter;
use shared::events::{BookingCancelled, BookingConfirmed, BookingExpired, BookingRejected};
use shared::region::RegionCode;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug)]
enum Outcome {
    Confirmed(BookingConfirmed),
    Cancelled(BookingCancelled),
    Expired(BookingExpired),
    Rejected(BookingRejected),
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an outcome in time")
        .expect("listening")
}

fn region(code: &str) -> Option<RegionCode> {
    RegionCode::parse(code).ok()
}

/// `createBooking` of one night `nights_ahead` after tomorrow, declaring
/// `sponsor` (none: the booker's home region): the answer's id and
/// sponsor region, or its errors.
async fn create(
    app: &TestApp,
    room_type: &str,
    nights_ahead: i64,
    sponsor: Option<&str>,
    key: &str,
) -> Value {
    let mut input = json!({
        "roomTypeId": room_type,
        "checkIn": (tomorrow() + chrono::Duration::days(nights_ahead)).to_string(),
        "checkOut": (tomorrow() + chrono::Duration::days(nights_ahead + 1)).to_string(),
        "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
        "contact": { "name": "张三", "phone": "13800138000" } });
    if let Some(sponsor) = sponsor {
        input["sponsorRegionCode"] = json!(sponsor);
    }
    app.graphql(
        "mutation($input: CreateBookingInput!, $key: String!) { createBooking(input: $input, idempotencyKey: $key) { id sponsorRegion { code } } }",
        json!({ "key": key, "input": input }),
    )
    .await
}

async fn book(
    app: &TestApp,
    room_type: &str,
    nights_ahead: i64,
    sponsor: &str,
    key: &str,
) -> String {
    TestApp::id_of(&create(app, room_type, nights_ahead, Some(sponsor), key).await)
}

#[tokio::test]
async fn every_outcome_is_announced_with_its_regions_travelers_and_amounts() {
    let mut settings = test_settings();
    settings.hold_seconds = 2;
    let app = spawn_app_with(settings).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let [a, b, c, d] = [(); 4].map(|()| tx.clone());
    let router = EventRouter::new("test.outcomes")
        .on::<BookingConfirmed, _, _>(move |_, ev| {
            let _ = a.send(Outcome::Confirmed(ev));
            async { Ok(()) }
        })
        .on::<BookingCancelled, _, _>(move |_, ev| {
            let _ = b.send(Outcome::Cancelled(ev));
            async { Ok(()) }
        })
        .on::<BookingExpired, _, _>(move |_, ev| {
            let _ = c.send(Outcome::Expired(ev));
            async { Ok(()) }
        })
        .on::<BookingRejected, _, _>(move |_, ev| {
            let _ = d.send(Outcome::Rejected(ev));
            async { Ok(()) }
        });
    app.app.rt.bus.subscribe(router).await.expect("listening");
    let room_type = app.homestay(2).await.room_type_id.to_string();

    // Paid: confirmed, counted for 海淀 (the traveler's home and the sponsor
    // named), in 敖汉旗.
    let paid = book(&app, &room_type, 0, "110108", "outcome-paid").await;
    app.wait_for_status(&paid, "AWAITING_PAYMENT").await;
    app.pay(&paid, "tok_success", "outcome-pay").await;
    match next(&mut rx).await {
        Outcome::Confirmed(ev) => {
            assert_eq!(ev.booking_id.to_string(), paid);
            assert_eq!(
                ev.listing.region_code,
                RegionCode::parse("150430").expect("code")
            );
            assert_eq!(
                (ev.sponsor_region, ev.booker_home_region),
                (region("110108"), region("110108"))
            );
            assert_eq!((ev.travelers, ev.total.get()), (1, 38_000));
        }
        other => panic!("expected booking.confirmed, got {other:?}"),
    }

    // Cancelled after payment, the day before: nothing back by the policy.
    app.cancel(&paid, "outcome-cancel").await;
    match next(&mut rx).await {
        Outcome::Cancelled(ev) => {
            assert_eq!(ev.facts.booking_id.to_string(), paid);
            assert!(ev.was_confirmed);
            assert_eq!(ev.facts.listing_region, region("150430"));
            assert_eq!(ev.facts.refund_due.map(|f| f.get()), Some(0));
            assert_eq!(ev.facts.total.map(|f| f.get()), Some(38_000));
        }
        other => panic!("expected booking.cancelled, got {other:?}"),
    }

    // Not paid: expired, counted for the sponsor named (北京市, around the
    // booker's own 海淀区).
    let unpaid = book(&app, &room_type, 1, "110000", "outcome-unpaid").await;
    match next(&mut rx).await {
        Outcome::Expired(ev) => {
            assert_eq!(ev.facts.booking_id.to_string(), unpaid);
            assert_eq!(ev.facts.sponsor_region, region("110000"));
            assert_eq!(ev.facts.booker_home_region, region("110108"));
            assert_eq!(ev.facts.reason.as_deref(), Some("not paid in time"));
            assert_eq!(ev.facts.travelers, 1);
        }
        other => panic!("expected booking.expired, got {other:?}"),
    }

    // Nothing on sale that night (the calendar never opened it): rejected
    // as CLOSED, nothing held, the listing named as found.
    let refused = book(&app, &room_type, 90, "110108", "outcome-refused").await;
    match next(&mut rx).await {
        Outcome::Rejected(ev) => {
            assert_eq!(ev.facts.booking_id.to_string(), refused);
            assert_eq!(ev.facts.listing_region, region("150430"));
            assert!(ev.facts.total.is_none(), "nothing was held");
            assert!(
                ev.facts
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("CLOSED")),
                "{:?}",
                ev.facts.reason
            );
            assert!(ev.facts.account_id.is_some());
        }
        other => panic!("expected booking.rejected, got {other:?}"),
    }

    // Another district than the booker's own is no sponsor of its trips
    // (it would credit 朝阳区's partnerships with a 海淀 traveler).
    let elsewhere = create(&app, &room_type, 3, Some("110105"), "elsewhere").await;
    assert_eq!(common::code(&elsewhere), "BAD_USER_INPUT", "{elsewhere}");

    // What it counts for is read back: declared (北京市, around the home),
    // or the booker's home when none was.
    let declared = book(&app, &room_type, 5, "110000", "declared").await;
    let plain = create(&app, &room_type, 6, None, "plain").await;
    assert_eq!(
        plain["data"]["createBooking"]["sponsorRegion"]["code"], "110108",
        "{plain}"
    );
    // Its retry spelling out the home region is the same request (it was
    // IDEMPOTENCY_KEY_REUSED); declaring another is not.
    let spelled_out = create(&app, &room_type, 6, Some("110108"), "plain").await;
    assert_eq!(
        spelled_out["data"]["createBooking"]["sponsorRegion"]["code"], "110108",
        "{spelled_out}"
    );
    assert_eq!(
        spelled_out["data"]["createBooking"]["id"],
        plain["data"]["createBooking"]["id"]
    );
    let other = create(&app, &room_type, 6, Some("110000"), "plain").await;
    assert_eq!(common::code(&other), "IDEMPOTENCY_KEY_REUSED", "{other}");
    // And the other way: made spelling it out, retried leaving it out.
    let spelled = create(&app, &room_type, 8, Some("110108"), "spelled").await;
    let left_out = create(&app, &room_type, 8, None, "spelled").await;
    assert_eq!(
        left_out["data"]["createBooking"]["id"], spelled["data"]["createBooking"]["id"],
        "{left_out}"
    );
    let read = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { sponsorRegion { code name } } }",
            json!({ "id": declared }),
        )
        .await;
    assert_eq!(
        read["data"]["booking"]["sponsorRegion"],
        json!({ "code": "110000", "name": "北京市" }),
        "{read}"
    );
}
