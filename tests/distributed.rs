//! The parts run apart, two copies of each service competing for their
//! queues, and bookings still go from request to confirmed.

mod common;

use common::{TestApp, spawn_parts, test_settings, tomorrow};
use duikou::Part;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_every_service_share_the_work_of_a_booking() {
    let parts = [
        Part::Inventory,
        Part::Inventory,
        Part::Booking,
        Part::Booking,
        Part::Payment,
        Part::Payment,
        Part::Partnership,
        Part::Gateway,
    ];
    let app = spawn_parts(test_settings(), &parts).await;
    let room_type = app.homestay(5).await.room_type_id.to_string();
    for i in 0..4 {
        let id = TestApp::id_of(
            &app.create_booking(&room_type, tomorrow(), 1, &format!("apart-{i}"))
                .await,
        );
        app.wait_for_status(&id, "AWAITING_PAYMENT").await;
        let paid = app.pay(&id, "tok_success", &format!("pay-apart-{i}")).await;
        assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
        app.wait_for_status(&id, "CONFIRMED").await;
    }
}
