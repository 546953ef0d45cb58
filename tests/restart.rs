//! The booking service killed (SIGKILL, a process of its own) between the
//! saga's steps and started again: every booking still reaches its end,
//! each step once. The other parts run in the test's process.

mod common;

use common::{TestApp, spawn_child, spawn_without, test_settings, tomorrow};
use duikou::Part;
use serde_json::json;
use std::time::Duration;

const BOOKINGS: usize = 10;

/// createBooking until the booking service answers (it may be starting).
async fn create(app: &TestApp, room_type: &str, n: usize) -> String {
    let check_in = tomorrow() + chrono::Duration::days(n as i64);
    app.create_booking_once_up(room_type, check_in, &format!("restart-{n}"))
        .await
}

/// The history causes of a booking (read once booking answers again).
async fn causes(app: &TestApp, id: &str) -> Vec<String> {
    let body = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { history { cause } } }",
            json!({ "id": id }),
        )
        .await;
    body["data"]["booking"]["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|h| h["cause"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_reach_their_end_when_the_booking_process_is_killed_between_steps() {
    let settings = test_settings();
    let app = spawn_without(&settings, Part::Booking).await;
    let room_type = app.homestay(BOOKINGS as u32).await.room_type_id.to_string();

    // Created, then the process dies before it hears of the holds.
    let mut booking = spawn_child(&settings, "booking");
    let mut ids = Vec::new();
    for n in 0..BOOKINGS {
        ids.push(create(&app, &room_type, n).await);
    }
    booking.kill().await.expect("killed");
    // Inventory holds meanwhile; its answers wait in booking's queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut booking = spawn_child(&settings, "booking");
    for id in &ids {
        app.wait_for_status(id, "AWAITING_PAYMENT").await;
    }

    // Paid, then the process dies before it hears of the captures.
    for id in &ids {
        let paid = app.pay(id, "tok_success", &format!("pay-{id}")).await;
        assert!(paid["errors"].is_null(), "{paid}");
    }
    booking.kill().await.expect("killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _booking = spawn_child(&settings, "booking");
    for id in &ids {
        app.wait_for_status(id, "CONFIRMED").await;
    }
    // Each step once, for all the redeliveries a killed consumer causes.
    for id in &ids {
        let causes = causes(&app, id).await;
        for step in ["created", "hold granted", "payment captured"] {
            assert_eq!(
                causes.iter().filter(|c| c.as_str() == step).count(),
                1,
                "{id}: {causes:?}"
            );
        }
    }
    // One room sold on each of the ten nights, none twice.
    app.wait_for_available(&room_type, json!(vec![BOOKINGS - 1; BOOKINGS]))
        .await;
    let findings = duikou::check::run(&settings, chrono::Duration::seconds(120))
        .await
        .expect("checked");
    assert!(findings.iter().all(|f| f.holds), "{findings:?}");
}

/// A part waiting for a broker that is not there stops when asked: it
/// waited for ever, deaf to SIGTERM and Ctrl-C, until killed.
#[tokio::test]
async fn a_part_waiting_for_the_broker_stops_when_asked() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"))
        .args(["serve", "inventory"])
        .env("DUIKOU_POSTGRES_URL", common::postgres_url())
        // Nothing listens on port 1: "RabbitMQ does not answer yet".
        .env("DUIKOU_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("DUIKOU_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the part starts as a process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("does not answer yet") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(waiting.ok(), Some(true), "it waits for the broker");
    let pid = child.id().expect("running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let exited = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("it stops when asked")
        .expect("an exit status");
    assert!(exited.success(), "{exited:?}");
}
