//! The walking skeleton end to end: GraphQL → booking → inventory hold →
//! payment capture → confirmed, over RabbitMQ and the outboxes.

mod common;

use common::{spawn_app, tomorrow};
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
