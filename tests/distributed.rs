//! The parts run apart, two copies of each service competing for their
//! queues, and bookings still go from request to confirmed.

mod common;

use common::{TestApp, spawn_parts, test_settings, tomorrow};
use duikou::{App, Part};
use shared::money::Fen;

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
        let confirmed = app.wait_for_status(&id, "CONFIRMED").await;
        let history = app
            .graphql(
                "query($id: ID!) { booking(id: $id) { history { status cause } } }",
                serde_json::json!({ "id": id }),
            )
            .await;
        let causes: Vec<String> = history["data"]["booking"]["history"]
            .as_array()
            .unwrap_or_else(|| panic!("{history} {confirmed}"))
            .iter()
            .map(|h| h["cause"].as_str().unwrap_or_default().to_owned())
            .collect();
        // Each step once: no copy processed a message another had handled.
        for step in ["created", "hold granted", "payment captured"] {
            assert_eq!(
                causes.iter().filter(|c| c.as_str() == step).count(),
                1,
                "{step} in {causes:?}"
            );
        }
    }
    // The two copies of booking (and of inventory and payment) compete on
    // one queue each: two consumers.
    let bus = app.app.rt.settings.bus();
    for service in ["inventory", "booking", "payment"] {
        let queue = bus.queue(&format!("{service}.events"));
        let counts = shared::bus::amqp::admin::queue_counts(&common::amqp_url(), &queue)
            .await
            .expect("the broker answers");
        assert_eq!(counts.map(|(_, consumers)| consumers), Some(2), "{queue}");
    }
}

/// `duikou migrate` declares every service's event queue: partnership,
/// started for the first time after a booking was confirmed, still hears
/// of it (without the queue, `booking.confirmed` reached only inventory's
/// queue and the gateway's, and partnership never learnt of the booking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_first_started_after_migrate_hears_what_was_published_before() {
    let settings = test_settings();
    duikou::migrate(&settings).await.expect("migrate");
    let parts = [Part::Inventory, Part::Booking, Part::Payment, Part::Gateway];
    let mut app = spawn_parts(settings.clone(), &parts).await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = app
        .paid_booking(&room_type, tomorrow(), "tok_success")
        .await;
    app.wait_for_status(&id, "CONFIRMED").await;

    let partnership = App::start(settings, Part::Partnership)
        .await
        .expect("partnership starts");
    app.parts.push(partnership);
    app.wait_until_partnership_heard("150430", Fen::yuan(380))
        .await;
}
