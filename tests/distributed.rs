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

/// A gateway stopped cleanly (SIGTERM) logs no ERROR: closing the RabbitMQ
/// connection under open channels made lapin log "Connection error …
/// invalid channel state: Closing" on most stops, which monitoring reads as
/// a fault. Five stops, since the old order lost the race on about three
/// in five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_cleanly_logs_no_error() {
    use tokio::io::AsyncBufReadExt;
    let settings = test_settings();
    for _ in 0..5 {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DUIKOU_")) {
            command.env_remove(key);
        }
        let mut gateway = command
            .args(["serve", "gateway"])
            .env("DUIKOU_POSTGRES_URL", common::postgres_url())
            .env("DUIKOU_AMQP_URL", common::amqp_url())
            .env("DUIKOU_DB_PREFIX", &settings.db_prefix)
            .env("DUIKOU_BUS_PREFIX", &settings.bus_prefix)
            .env("DUIKOU_GATEWAY_ADDR", "127.0.0.1:0")
            .env("DUIKOU_DB_MAX_CONNECTIONS", "2")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway starts");
        let mut lines = tokio::io::BufReader::new(gateway.stdout.take().expect("stdout")).lines();
        let mut log = Vec::new();
        let up = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let ready = line.contains("Press Ctrl-C to stop");
                log.push(line);
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(up, Ok(true), "{log:?}");
        let pid = gateway.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(line);
            }
            gateway.wait().await
        })
        .await;
        assert!(
            ended.is_ok_and(|status| status.is_ok_and(|s| s.success())),
            "{log:?}"
        );
        assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
    }
    let _ = shared::db::drop_database(
        &common::postgres_url(),
        &format!("{}gateway", settings.db_prefix),
    )
    .await;
}

/// Whatever `RUST_LOG` asks, the broker's login is never logged: lapin's
/// trace lines print every frame, the PLAIN `\0user\0password` of the
/// connection's StartOk among them (`RUST_LOG=trace` printed the test
/// broker's password as bytes); its debug lines still show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_password_is_not_logged_even_at_trace() {
    let settings = test_settings();
    // Its databases and queues, which `migrate` finds made, are the app's
    // to remove.
    let _app = common::spawn_app_with(settings.clone()).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DUIKOU_")) {
        command.env_remove(key);
    }
    let migrated = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        command
            .arg("migrate")
            .env("DUIKOU_POSTGRES_URL", common::postgres_url())
            .env("DUIKOU_AMQP_URL", common::amqp_url())
            .env("DUIKOU_DB_PREFIX", &settings.db_prefix)
            .env("DUIKOU_BUS_PREFIX", &settings.bus_prefix)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("migrate ends within two minutes")
    .expect("migrate runs");
    assert!(migrated.status.success(), "{migrated:?}");
    let log = String::from_utf8_lossy(&migrated.stdout);
    assert!(log.contains("DEBUG lapin"), "lapin's debug lines are shown");
    // The login's frame, and the URI lapin's TCP layer traces as it
    // connects (password included).
    for secret in ["StartOk", "LongString([0,", "Connecting."] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
