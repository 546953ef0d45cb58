//! Whole journeys through HTTP and WebSocket on the real servers, as the
//! platform's users make them: a 赤峰 region admin lists a homestay in
//! 敖汉旗, opens its calendar, certifies it and records the 海淀↔敖汉
//! partnership; a 海淀 traveler registers, searches two nights, books, pays,
//! is pushed the confirmation, cancels and sees the refund; the admin reads
//! the partnership's report move with the booking and back.
//! (The one step not over HTTP: the seven-day public notice is written as
//! served, since a week cannot pass in a test.)

mod common;

use chrono::{Datelike, Duration as Days};
use common::ws::{next, subscribed};
use common::{TestApp, spawn_app, tomorrow};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use shared::policy::china_today;
use std::time::{Duration, Instant};

/// `data.<field>` of a body that must have no errors.
fn ok<'a>(body: &'a Value, field: &str) -> &'a Value {
    assert!(body["errors"].is_null(), "{field}: {body}");
    &body["data"][field]
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// The year the report counts a booking confirmed now in (China time).
fn this_year() -> i32 {
    china_today(chrono::Utc::now()).year()
}

/// What the admin sees of the partnership's year.
async fn report(app: &TestApp, admin: &str, partnership: &str) -> Value {
    let body = app
        .graphql_as(
            Some(admin),
            "query($id: ID!, $y: Int!) { partnership(id: $id) { report(year: $y) {
                totals { tourists bookings spend { amount } certifiedSpend { amount } }
                touristsProgress { actual target } } } }",
            json!({ "id": partnership, "y": this_year() }),
        )
        .await;
    ok(&body, "partnership")["report"].clone()
}

async fn wait_for_report(app: &TestApp, admin: &str, partnership: &str, tourists: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = report(app, admin, partnership).await;
        if r["totals"]["tourists"] == tourists {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the report stayed at {r}, expected {tourists} tourists"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next push for the subscription `sub`, skipping nothing else.
async fn pushed(ws: &mut common::ws::Socket, sub: &str) -> Value {
    let message = next(ws).await.expect("a push in time");
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], sub, "{message}");
    message["payload"]["data"]["bookingUpdated"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_admin_lists_and_certifies_a_homestay_a_traveler_books_pays_and_cancels_it_and_the_report_follows()
 {
    let app = spawn_app().await;

    // — The region admin of 赤峰市 —
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let created = app
        .graphql_as(
            Some(&admin),
            "mutation($i: HomestayInput!) { createHomestay(input: $i) { homestayId hostId roomTypeId } }",
            json!({ "i": { "hostName": "兴隆洼村旅游合作社", "regionCode": "150430", "name": "兴隆洼草原人家",
                           "address": "敖汉旗宝国吐乡兴隆洼村", "grade": "SILVER", "amenities": ["热水", "暖气"],
                           "roomType": { "name": "蒙古包", "beds": 2, "maxGuests": 2, "rooms": 2 } } }),
        )
        .await;
    let created = ok(&created, "createHomestay").clone();
    let homestay = created["homestayId"].as_str().expect("id").to_owned();
    let room_type = created["roomTypeId"].as_str().expect("id").to_owned();
    let opened = app
        .graphql_as(
            Some(&admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 2, price: \"300.00\") }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(30)).to_string() }),
        )
        .await;
    assert_eq!(ok(&opened, "setRoomCalendar"), 30);

    // Certified (扶贫产品认定): apply, public notice, certify.
    let applied = app
        .graphql_as(
            Some(&admin),
            "mutation($l: ID!) { applyForCertification(listingId: $l, statement: \"合作社带动12户脱贫户参与接待\") { id state } }",
            json!({ "l": homestay }),
        )
        .await;
    let certification = id(ok(&applied, "applyForCertification"));
    let notice = app
        .graphql_as(
            Some(&admin),
            "mutation($id: ID!) { acceptForPublicNotice(certificationId: $id, noticeDays: 7) { state } }",
            json!({ "id": certification }),
        )
        .await;
    assert_eq!(
        ok(&notice, "acceptForPublicNotice")["state"],
        "PUBLIC_NOTICE"
    );
    let db = app.service_db("inventory").await;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE certifications SET notice_ends_on = $1 WHERE id = $2",
        [
            china_today(chrono::Utc::now()).into(),
            certification
                .parse::<uuid::Uuid>()
                .expect("certification id")
                .into(),
        ],
    ))
    .await
    .expect("the notice served");
    let certified = app
        .graphql_as(
            Some(&admin),
            "mutation($id: ID!) { certifyListing(certificationId: $id) { state validUntil } }",
            json!({ "id": certification }),
        )
        .await;
    assert_eq!(ok(&certified, "certifyListing")["state"], "CERTIFIED");

    // The 海淀↔敖汉 pair (the admin's region is the beneficiary side), with
    // this year's target of 10 tourists.
    let paired = app
        .graphql_as(
            Some(&admin),
            "mutation { createPartnership(input: { sponsorRegionCode: \"110108\", beneficiaryRegionCode: \"150430\", since: \"2018-06-01\" }) { id } }",
            json!({}),
        )
        .await;
    let partnership = id(ok(&paired, "createPartnership"));
    let agreed = app
        .graphql_as(
            Some(&admin),
            "mutation($p: ID!, $y: Int!) { recordAgreement(input: { partnershipId: $p, title: \"《京蒙旅游扶贫协作框架协议》\",
                signedOn: \"2018-06-01\", startsOn: \"2018-06-01\", endsOn: \"2030-12-31\",
                targets: [{ year: $y, tourists: 10, spend: \"30000.00\" }] }) { id } }",
            json!({ "p": partnership, "y": this_year() }),
        )
        .await;
    ok(&agreed, "recordAgreement");
    let before = report(&app, &admin, &partnership).await;
    assert_eq!(before["totals"]["tourists"], 0, "{before}");

    // — A traveler from 海淀区 —
    let registered = app
        .graphql_as(
            None,
            "mutation { register(input: { email: \"li.na@example.cn\", password: \"草原上的蒙古包-2026\",
                displayName: \"李娜\", homeRegionCode: \"110108\" }) { accessToken account { role homeRegionCode } } }",
            json!({}),
        )
        .await;
    let registered = ok(&registered, "register");
    assert_eq!(registered["account"]["role"], "TRAVELER");
    let traveler = registered["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    // Two nights in 敖汉旗 for two, certified listings only.
    let check_in = tomorrow() + Days::days(10);
    let check_out = check_in + Days::days(2);
    let found = app
        .graphql_as(
            Some(&traveler),
            "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150430\", checkIn: $in, checkOut: $out, guests: 2, certifiedOnly: true) {
                edges { node { homestayName roomTypeId certified nights total { amount currency } } } } }",
            json!({ "in": check_in.to_string(), "out": check_out.to_string() }),
        )
        .await;
    assert_eq!(
        ok(&found, "searchHomestays")["edges"],
        json!([{ "node": { "homestayName": "兴隆洼草原人家", "roomTypeId": room_type, "certified": true,
                           "nights": 2, "total": { "amount": "600.00", "currency": "CNY" } } }]),
        "{found}"
    );

    // A quote first, then the booking.
    let stay = json!({ "roomTypeId": room_type, "checkIn": check_in.to_string(), "checkOut": check_out.to_string() });
    let quote = app
        .graphql_as(
            Some(&traveler),
            "query($q: BookingQuoteInput!) { bookingQuote(input: $q) { total { amount } bookable } }",
            json!({ "q": { "roomTypeId": room_type, "checkIn": check_in.to_string(),
                           "checkOut": check_out.to_string(), "travelers": 2 } }),
        )
        .await;
    assert_eq!(
        ok(&quote, "bookingQuote"),
        &json!({ "total": { "amount": "600.00" }, "bookable": true })
    );
    let mut input = stay.clone();
    input["travelers"] = json!([
        { "name": "李娜", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" },
        { "name": "王强", "idType": "PASSPORT", "idNumber": "E12345678" }
    ]);
    input["contact"] = json!({ "name": "李娜", "phone": "13800138000" });
    let booked = app
        .graphql_as(
            Some(&traveler),
            "mutation($i: CreateBookingInput!) { createBooking(input: $i, idempotencyKey: \"li-na-aohan-1\") { id status } }",
            json!({ "i": input }),
        )
        .await;
    let booking = id(ok(&booked, "createBooking"));

    // Live status over WebSocket from here on.
    let mut ws = subscribed(
        &app,
        &traveler,
        "mine",
        "subscription($id: ID!) { bookingUpdated(id: $id) { id status refunded { amount } } }",
        json!({ "id": booking }),
    )
    .await;
    let held = app
        .wait_for_status_as(&traveler, &booking, "AWAITING_PAYMENT")
        .await;
    assert_eq!(held["total"]["amount"], "600.00", "{held}");
    let paid = app
        .graphql_as(
            Some(&traveler),
            "mutation($b: ID!) { payBooking(bookingId: $b, paymentToken: \"tok_success\", idempotencyKey: \"li-na-pay-1\") { status amount { amount } } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(ok(&paid, "payBooking")["amount"]["amount"], "600.00");
    // The push says CONFIRMED (AWAITING_PAYMENT may come first if the
    // subscription began before the hold was granted).
    let mut push = pushed(&mut ws, "mine").await;
    if push["status"] == "AWAITING_PAYMENT" {
        push = pushed(&mut ws, "mine").await;
    }
    assert_eq!(push["status"], "CONFIRMED", "{push}");
    assert_eq!(push["id"], booking.as_str());

    // The admin's report counts two tourists sent, all of it certified spend.
    let counted = wait_for_report(&app, &admin, &partnership, 2).await;
    assert_eq!(
        counted["totals"],
        json!({ "tourists": 2, "bookings": 1, "spend": { "amount": "600.00" }, "certifiedSpend": { "amount": "600.00" } })
    );
    assert_eq!(
        counted["touristsProgress"],
        json!({ "actual": 2, "target": 10 })
    );
    // `duikou check` agrees: payment's spend of a booking that inventory
    // held on a certified listing.
    let grace = chrono::Duration::seconds(60);
    let findings = duikou::check::run(&app.app.rt.settings, grace)
        .await
        .expect("checks run");
    let money = findings
        .iter()
        .find(|f| f.invariant.contains("certified spend"))
        .expect("the money check ran");
    assert!(money.holds, "{money:#?}");

    // Ten days ahead: the quote promises all of it back; cancel.
    let cancel_quote = app
        .graphql_as(
            Some(&traveler),
            "query($b: ID!) { cancellationQuote(bookingId: $b) { cancellable refund { amount } refundPercent } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        ok(&cancel_quote, "cancellationQuote"),
        &json!({ "cancellable": true, "refund": { "amount": "600.00" }, "refundPercent": 100 })
    );
    let cancelled = app
        .graphql_as(
            Some(&traveler),
            "mutation($b: ID!) { cancelBooking(bookingId: $b, idempotencyKey: \"li-na-cancel-1\") { status refundDue { amount } } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        ok(&cancelled, "cancelBooking"),
        &json!({ "status": "CANCELLED", "refundDue": { "amount": "600.00" } })
    );
    assert_eq!(pushed(&mut ws, "mine").await["status"], "CANCELLED");

    // The refund lands: on the booking, its refunds, and its money trace.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = app
            .graphql_as(
                Some(&traveler),
                "query($b: ID!) { booking(id: $b) { status refunded { amount } } }",
                json!({ "b": booking }),
            )
            .await;
        if ok(&read, "booking")["refunded"]["amount"] == "600.00" {
            assert_eq!(read["data"]["booking"]["status"], "CANCELLED");
            break;
        }
        assert!(Instant::now() < deadline, "the refund never landed: {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace = app
        .graphql_as(
            Some(&traveler),
            "query($b: ID!) { booking(id: $b) { refunds { amount { amount } status } payment { status } }
                bookingImpact(bookingId: $b) { paid { amount } refunded { amount } certified kept { host { amount } fund { amount } } } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        ok(&trace, "booking"),
        &json!({ "refunds": [{ "amount": { "amount": "600.00" }, "status": "SUCCEEDED" }],
                 "payment": { "status": "CAPTURED" } })
    );
    assert_eq!(
        trace["data"]["bookingImpact"],
        json!({ "paid": { "amount": "600.00" }, "refunded": { "amount": "600.00" }, "certified": true,
                "kept": { "host": { "amount": "0.00" }, "fund": { "amount": "0.00" } } })
    );
    // And the report gives the tourists back.
    wait_for_report(&app, &admin, &partnership, 0).await;
}
