//! The saga under duplicated, reordered and late deliveries ends where a
//! clean run ends.

mod common;

use common::{spawn_app_with, test_settings, tomorrow};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_reach_the_same_end_when_events_are_duplicated_reordered_and_late() {
    let mut settings = test_settings();
    settings.faults = "all".into();
    let app = spawn_app_with(settings).await;
    let homestay = app.homestay(2).await;
    let room_type = homestay.room_type_id.to_string();

    // Two bookings paid, one cancelled, one refused for lack of room.
    let mut ids = Vec::new();
    for key in ["f-1", "f-2", "f-3"] {
        let created = app.create_booking(&room_type, tomorrow(), 1, key).await;
        let id = created["data"]["createBooking"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        ids.push(id);
    }
    let mut statuses = Vec::new();
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let b = app
                .graphql(
                    "query($id: ID!) { booking(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
            let s = b["data"]["booking"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if s == "AWAITING_PAYMENT" || s == "REJECTED" {
                statuses.push(s);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never settled");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "AWAITING_PAYMENT").count(),
        2,
        "{statuses:?}"
    );
    let held: Vec<&String> = ids
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| *s == "AWAITING_PAYMENT")
        .map(|(id, _)| id)
        .collect();

    let paid = app
        .graphql(
            "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"f-pay\") { status } }",
            json!({ "id": held[0] }),
        )
        .await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    let cancelled = app
        .graphql(
            "mutation($id: ID!) { cancelBooking(bookingId: $id, idempotencyKey: \"f-cancel\") { status } }",
            json!({ "id": held[1] }),
        )
        .await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
        "{cancelled}"
    );
    app.wait_for_status(held[0], "CONFIRMED").await;

    // One room sold, one given back: the calendar settles at one free room
    // and stays there while late copies keep arriving.
    let calendar = "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }";
    let vars = json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + chrono::Duration::days(1)).to_string() });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.graphql(calendar, vars.clone()).await["data"]["roomCalendar"]
        != json!([{ "available": 1 }])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the calendar never settled at one free room"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.graphql(calendar, vars).await["data"]["roomCalendar"],
        json!([{ "available": 1 }])
    );
    app.wait_for_status(held[0], "CONFIRMED").await;
    app.wait_for_status(held[1], "CANCELLED").await;
}
