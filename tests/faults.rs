//! The saga under duplicated, reordered and late deliveries ends where a
//! clean run ends.

mod common;

use common::{TestApp, spawn_app_with, test_settings, tomorrow};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_reach_the_same_end_when_events_are_duplicated_reordered_and_late() {
    let mut settings = test_settings();
    settings.faults = "all".into();
    let app = spawn_app_with(settings).await;
    let room_type = app.homestay(2).await.room_type_id.to_string();

    // Three bookings for two rooms: two held (one paid, one cancelled), one refused.
    let mut held = Vec::new();
    for key in ["f-1", "f-2", "f-3"] {
        let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, key).await);
        if app.wait_until_held_or_rejected(&id).await == "AWAITING_PAYMENT" {
            held.push(id);
        }
    }
    assert_eq!(held.len(), 2);

    let paid = app.pay(&held[0], "tok_success", "f-pay").await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    let cancelled = app.cancel(&held[1], "f-cancel").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
        "{cancelled}"
    );
    app.wait_for_status(&held[0], "CONFIRMED").await;

    // One room sold, one given back, whatever copies arrive late.
    app.wait_for_available(&room_type, json!([1])).await;
    app.wait_for_status(&held[0], "CONFIRMED").await;
    app.wait_for_status(&held[1], "CANCELLED").await;
}
