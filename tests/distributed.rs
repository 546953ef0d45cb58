//! The parts run apart, two copies of each service competing for their
//! queues, and a booking still goes from request to confirmed.

mod common;

use common::{spawn_parts, test_settings, tomorrow};
use duikou::Part;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_every_service_share_the_work_of_a_booking() {
    let app = spawn_parts(
        test_settings(),
        &[
            Part::Inventory,
            Part::Inventory,
            Part::Booking,
            Part::Booking,
            Part::Payment,
            Part::Payment,
            Part::Partnership,
            Part::Gateway,
        ],
    )
    .await;
    let homestay = app.homestay(5).await;
    let room_type = homestay.room_type_id.to_string();
    let mut ids = Vec::new();
    for i in 0..4 {
        let created = app
            .create_booking(&room_type, tomorrow(), 1, &format!("apart-{i}"))
            .await;
        ids.push(
            created["data"]["createBooking"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        app.wait_for_status(id, "AWAITING_PAYMENT").await;
        let paid = app
            .graphql(
                "mutation($id: ID!, $key: String!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: $key) { status } }",
                json!({ "id": id, "key": format!("pay-apart-{i}") }),
            )
            .await;
        assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
        app.wait_for_status(id, "CONFIRMED").await;
    }
}
