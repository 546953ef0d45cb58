//! The walking skeleton end to end: GraphQL → booking → inventory hold →
//! payment capture → confirmed, over RabbitMQ and the outboxes.

mod common;

use common::{spawn_app, spawn_app_with, test_settings, tomorrow};
use serde_json::json;

#[tokio::test]
async fn the_regions_query_lists_the_banners_of_chifeng() {
    let app = spawn_app().await;
    let body = app
        .graphql(
            "{ regions(parentCode: \"150400\", povertyOnly: true) { code name nameEn } }",
            json!({}),
        )
        .await;
    let regions = body["data"]["regions"].as_array().expect("a list").clone();
    assert!(
        regions
            .iter()
            .any(|r| r["code"] == "150430" && r["name"] == "敖汉旗"),
        "{body}"
    );
    assert!(
        regions
            .iter()
            .all(|r| r["code"].as_str().is_some_and(|c| c.starts_with("1504")))
    );
}

#[tokio::test]
async fn a_room_night_is_booked_paid_and_confirmed_through_the_gateway() {
    let app = spawn_app().await;
    let homestay = app.homestay(2).await;
    let room_type = homestay.room_type_id.to_string();

    let created = app
        .create_booking(&room_type, tomorrow(), 1, "skeleton-1")
        .await;
    let id = created["data"]["createBooking"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(created["data"]["createBooking"]["status"], "PENDING");

    let held = app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    assert_eq!(
        held["total"],
        json!({ "amount": "380.00", "currency": "CNY" })
    );

    let paid = app
        .graphql(
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"pay-1\") {
                status amount { amount } split { host { amount } platform { amount } fund { amount } agency { amount } } } }",
            json!({ "id": id }),
        )
        .await;
    let payment = &paid["data"]["payBooking"];
    assert_eq!(payment["status"], "CAPTURED", "{paid}");
    assert_eq!(payment["split"]["host"]["amount"], "364.80");
    assert_eq!(payment["split"]["platform"]["amount"], "11.40");
    assert_eq!(payment["split"]["fund"]["amount"], "3.80");

    app.wait_for_status(&id, "CONFIRMED").await;

    let calendar = app
        .graphql(
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available rooms } }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() }),
        )
        .await;
    assert_eq!(
        calendar["data"]["roomCalendar"],
        json!([{ "available": 1, "rooms": 2 }])
    );
}

#[tokio::test]
async fn a_booking_for_a_full_night_is_rejected_as_sold_out() {
    let app = spawn_app().await;
    let homestay = app.homestay(1).await;
    let room_type = homestay.room_type_id.to_string();
    let first = app
        .create_booking(&room_type, tomorrow(), 2, "full-1")
        .await;
    let first = first["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for_status(&first, "AWAITING_PAYMENT").await;

    // Overlaps the second night only: all or nothing, so nothing is held.
    let second = app
        .create_booking(
            &room_type,
            tomorrow() + chrono::Duration::days(1),
            2,
            "full-2",
        )
        .await;
    let second = second["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rejected = app.wait_for_status(&second, "REJECTED").await;
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not enough rooms")),
        "{rejected}"
    );

    let calendar = app
        .graphql(
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(3)).to_string() }),
        )
        .await;
    assert_eq!(
        calendar["data"]["roomCalendar"],
        json!([{ "available": 0 }, { "available": 0 }, { "available": 1 }])
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_booking_and_different_input_is_refused() {
    let app = spawn_app().await;
    let homestay = app.homestay(3).await;
    let room_type = homestay.room_type_id.to_string();
    let a = app
        .create_booking(&room_type, tomorrow(), 1, "same-key")
        .await;
    let b = app
        .create_booking(&room_type, tomorrow(), 1, "same-key")
        .await;
    assert_eq!(
        a["data"]["createBooking"]["id"],
        b["data"]["createBooking"]["id"]
    );

    let c = app
        .create_booking(&room_type, tomorrow(), 2, "same-key")
        .await;
    assert_eq!(
        c["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED",
        "{c}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_code() {
    let app = spawn_app().await;
    let homestay = app.homestay(1).await;
    let body = app
        .graphql(
            "mutation { createBooking(idempotencyKey: \"k\", input: {
                roomTypeId: \"not-a-uuid\", checkIn: \"2030-01-01\", checkOut: \"2030-01-02\",
                travelers: [{ name: \"李四\", idType: RESIDENT_ID, idNumber: \"110105194912310021\" }],
                contact: { name: \"李四\", phone: \"13800138000\" } }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );

    let bad_id = app
        .graphql(
            "mutation($rt: ID!) { createBooking(idempotencyKey: \"k2\", input: {
                roomTypeId: $rt, checkIn: \"2030-01-01\", checkOut: \"2030-01-02\",
                travelers: [{ name: \"李四\", idType: RESIDENT_ID, idNumber: \"110105194912310021\" }],
                contact: { name: \"李四\", phone: \"13800138000\" } }) { id } }",
            json!({ "rt": homestay.room_type_id.to_string() }),
        )
        .await;
    assert_eq!(
        bad_id["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad_id}"
    );
    assert!(
        bad_id["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("resident ID")),
        "{bad_id}"
    );

    let declined = app
        .graphql(
            "mutation { payBooking(bookingId: \"01a20882-389f-7099-8d8f-ed3293debc8c\", paymentToken: \"tok_success\", idempotencyKey: \"p\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        declined["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{declined}"
    );
}

#[tokio::test]
async fn an_unpaid_booking_expires_and_its_rooms_go_back_on_sale() {
    let mut settings = test_settings();
    settings.hold_seconds = 1;
    let app = spawn_app_with(settings).await;
    let homestay = app.homestay(1).await;
    let room_type = homestay.room_type_id.to_string();
    let created = app
        .create_booking(&room_type, tomorrow(), 1, "expire-1")
        .await;
    let id = created["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let expired = app.wait_for_status(&id, "EXPIRED").await;
    assert_eq!(expired["reason"], "not paid in time");

    let calendar = "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }";
    let vars = json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.graphql(calendar, vars.clone()).await["data"]["roomCalendar"]
        != json!([{ "available": 1 }])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the room never went back on sale"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let late = app
        .graphql(
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"late\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        late["errors"][0]["extensions"]["code"], "CONFLICT",
        "{late}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_never_hold_more_rooms_than_there_are() {
    const ROOMS: usize = 3;
    const CLIENTS: usize = 20;
    let app = spawn_app().await;
    let homestay = app.homestay(ROOMS as u32).await;
    let room_type = homestay.room_type_id.to_string();
    let keys: Vec<String> = (0..CLIENTS).map(|i| format!("race-{i}")).collect();
    let requests = keys
        .iter()
        .map(|key| app.create_booking(&room_type, tomorrow(), 2, key));
    let created = futures::future::join_all(requests).await;
    let ids: Vec<String> = created
        .iter()
        .map(|c| {
            c["data"]["createBooking"]["id"]
                .as_str()
                .expect("created")
                .to_owned()
        })
        .collect();

    let mut held = 0;
    let mut rejected = 0;
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let b = app
                .graphql(
                    "query($id: ID!) { booking(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
            match b["data"]["booking"]["status"].as_str() {
                Some("AWAITING_PAYMENT") => {
                    held += 1;
                    break;
                }
                Some("REJECTED") => {
                    rejected += 1;
                    break;
                }
                _ => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "booking {id} never settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    assert_eq!((held, rejected), (ROOMS, CLIENTS - ROOMS));
    let calendar = app
        .graphql(
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(2)).to_string() }),
        )
        .await;
    assert_eq!(
        calendar["data"]["roomCalendar"],
        json!([{ "available": 0 }, { "available": 0 }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_creates_with_one_key_make_one_booking() {
    let app = spawn_app().await;
    let homestay = app.homestay(10).await;
    let room_type = homestay.room_type_id.to_string();
    let requests = (0..100).map(|_| app.create_booking(&room_type, tomorrow(), 1, "one-key"));
    let answers = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| {
            a["data"]["createBooking"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{a}"))
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one booking for one key");
    let id = ids.into_iter().next().expect("an id");
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let calendar = app
        .graphql(
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
            json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() }),
        )
        .await;
    assert_eq!(
        calendar["data"]["roomCalendar"],
        json!([{ "available": 9 }]),
        "one room held"
    );
}

#[tokio::test]
async fn a_booking_cancelled_before_payment_releases_its_rooms() {
    let app = spawn_app().await;
    let homestay = app.homestay(1).await;
    let room_type = homestay.room_type_id.to_string();
    let created = app
        .create_booking(&room_type, tomorrow(), 1, "cancel-1")
        .await;
    let id = created["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;

    let cancel = "mutation($id: ID!, $key: String!) { cancelBooking(bookingId: $id, idempotencyKey: $key) { status reason } }";
    let first = app.graphql(cancel, json!({ "id": id, "key": "c-1" })).await;
    assert_eq!(
        first["data"]["cancelBooking"]["status"], "CANCELLED",
        "{first}"
    );
    let again = app.graphql(cancel, json!({ "id": id, "key": "c-1" })).await;
    assert_eq!(
        again["data"]["cancelBooking"],
        first["data"]["cancelBooking"]
    );

    // The room is for sale again: a second booking of the same night is held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let calendar = "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }";
    let vars = json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() });
    while app.graphql(calendar, vars.clone()).await["data"]["roomCalendar"]
        != json!([{ "available": 1 }])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the room never went back on sale"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let paid = app
        .graphql(
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"after-cancel\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        paid["errors"][0]["extensions"]["code"], "CONFLICT",
        "{paid}"
    );

    let other = app
        .create_booking(&room_type, tomorrow(), 1, "cancel-2")
        .await;
    let other = other["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let reused = app
        .graphql(cancel, json!({ "id": other, "key": "c-1" }))
        .await;
    assert_eq!(
        reused["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED",
        "{reused}"
    );
    app.wait_for_status(&other, "AWAITING_PAYMENT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_inventory_does_not_answer_is_rejected_and_a_late_hold_is_given_back() {
    use duikou::Part;
    let mut settings = test_settings();
    settings.pending_retry_seconds = 1;
    settings.hold_attempts = 2;
    let mut app = common::spawn_parts(
        settings.clone(),
        &[
            Part::Inventory,
            Part::Booking,
            Part::Payment,
            Part::Partnership,
            Part::Gateway,
        ],
    )
    .await;
    let homestay = app.homestay(1).await;
    let room_type = homestay.room_type_id.to_string();

    // Inventory stops consuming: hold requests wait in its queue.
    app.parts.remove(0).stop().await;
    let created = app
        .create_booking(&room_type, tomorrow(), 1, "unanswered")
        .await;
    let id = created["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rejected = app.wait_for_status(&id, "REJECTED").await;
    assert_eq!(
        rejected["reason"],
        "inventory did not answer; nothing is held"
    );

    // Inventory comes back and works through the backlog: it holds the room
    // for the old requests, and the saga makes it give the room back.
    app.parts.push(
        duikou::App::start(settings, Part::Inventory)
            .await
            .expect("inventory restarts"),
    );
    let calendar = "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }";
    let vars = json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() });
    let late = app
        .create_booking(&room_type, tomorrow(), 1, "after-the-backlog")
        .await;
    let late = late["data"]["createBooking"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The room is free again once the backlog is handled, and the new booking gets it
    // (it is behind the backlog in inventory's queue, so it is either held or,
    // if it overtook the release, rejected as sold out; it never oversells).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = app
            .graphql(
                "query($id: ID!) { booking(id: $id) { status } }",
                json!({ "id": late }),
            )
            .await["data"]["booking"]["status"]
            .clone();
        let available =
            app.graphql(calendar, vars.clone()).await["data"]["roomCalendar"][0]["available"]
                .clone();
        if (status == "AWAITING_PAYMENT" && available == 0)
            || (status == "REJECTED" && available == 1)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never settled: {status} with {available} available"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let old = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(old["data"]["booking"]["status"], "REJECTED");
}
