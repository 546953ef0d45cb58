//! The embedded default: no server configured — SQLite files, the
//! in-process bus — and the demo data, as a newcomer gets from `duikou serve`.

mod common;

use chrono::Duration;
use common::{TestApp, embedded_settings, spawn_app_with, tomorrow};
use gateway::identity::{DEMO_PASSWORD, DEMO_TRAVELER};
use serde_json::json;

#[tokio::test]
async fn with_no_servers_the_demo_traveler_books_and_pays_a_demo_homestay_and_route() {
    let mut app = spawn_app_with(embedded_settings()).await;
    assert_eq!(app.app.rt.settings.mode(), "embedded");

    let graphiql = app
        .http
        .get(app.url.replace("/graphql", "/"))
        .send()
        .await
        .expect("GraphiQL answers");
    assert!(graphiql.status().is_success());
    assert!(
        graphiql
            .text()
            .await
            .unwrap_or_default()
            .contains("graphiql")
    );

    let login = app
        .graphql_as(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
            json!({ "e": DEMO_TRAVELER, "p": DEMO_PASSWORD }),
        )
        .await;
    app.token = login["data"]["login"]["accessToken"]
        .as_str()
        .map(str::to_owned);
    assert!(app.token.is_some(), "{login}");

    // A homestay night in 敖汉旗.
    let check_in = tomorrow() + Duration::days(3);
    let offers = app
        .graphql(
            "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150430\", checkIn: $in, checkOut: $out, guests: 2) { edges { node { roomTypeId total { amount } } } } }",
            json!({ "in": check_in.to_string(), "out": (check_in + Duration::days(1)).to_string() }),
        )
        .await;
    let room_type = offers["data"]["searchHomestays"]["edges"][0]["node"]["roomTypeId"]
        .as_str()
        .unwrap_or_else(|| panic!("{offers}"))
        .to_owned();
    let booking = TestApp::id_of(&app.create_booking(&room_type, check_in, 1, "stay").await);
    app.wait_for_status(&booking, "AWAITING_PAYMENT").await;
    let paid = app.pay(&booking, "tok_success", "pay-stay").await;
    assert!(paid["errors"].is_null(), "{paid}");
    app.wait_for_status(&booking, "CONFIRMED").await;

    // SQLite writes each step's history row as a statement of its own
    // (PostgreSQL in the step's statement) and the capture's ledger legs in
    // one insert: the history reads back in order and the fund holds the
    // booking's share.
    let read = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { history { status cause } } welfareFund { entries(first: 5) { edges { node { amount { amount } } } } } }",
            json!({ "id": booking }),
        )
        .await;
    let steps: Vec<&str> = read["data"]["booking"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        steps,
        ["PENDING", "AWAITING_PAYMENT", "CONFIRMED"],
        "{read}"
    );
    assert_eq!(
        read["data"]["booking"]["history"][0]["cause"], "created",
        "{read}"
    );
    let fund_entries = read["data"]["welfareFund"]["entries"]["edges"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(fund_entries, 1, "{read}");

    // On SQLite too, attribution records the booking's facts (an upsert
    // per event: the confirmation, and the capture's host and fund shares)
    // and credits the demo pairing of 海淀区 and 敖汉旗.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let impact = app
            .graphql(
                "query($id: ID!) { bookingImpact(bookingId: $id) { partnerships {
                    partnership { sponsor { code } beneficiary { code } }
                    impact { bookings spend { amount } hostIncome { amount } fund { amount } } } } }",
                json!({ "id": booking }),
            )
            .await;
        let credited = impact["data"]["bookingImpact"]["partnerships"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["partnership"]["sponsor"]["code"] == "110108"
                    && c["partnership"]["beneficiary"]["code"] == "150430"
                    && c["impact"]["bookings"] == 1
                    && c["impact"]["spend"]["amount"] != "0.00"
                    && c["impact"]["hostIncome"]["amount"] != "0.00"
                    && c["impact"]["fund"]["amount"] != "0.00"
            });
        if credited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "海淀区—敖汉旗 never credited: {impact}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // Two seats on the 首都—草原 route.
    let routes = app
        .graphql(
            "query($from: Date!, $to: Date!) { searchRoutes(regionCode: \"150400\", from: $from, to: $to, travelers: 2) { edges { node { departures { id pricePerPerson { amount } } } } } }",
            json!({ "from": tomorrow().to_string(), "to": (tomorrow() + Duration::days(60)).to_string() }),
        )
        .await;
    let departure = routes["data"]["searchRoutes"]["edges"][0]["node"]["departures"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{routes}"))
        .to_owned();
    let booked = app
        .graphql(
            "mutation($input: CreateBookingInput!) { createBooking(input: $input, idempotencyKey: \"route\") { id } }",
            json!({ "input": {
                "departureId": departure,
                "travelers": [
                    { "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" },
                    { "name": "John Smith", "idType": "PASSPORT", "idNumber": "E12345678" }
                ],
                "contact": { "name": "张三", "phone": "13800138000" }
            } }),
        )
        .await;
    let trip = TestApp::id_of(&booked);
    let held = app.wait_for_status(&trip, "AWAITING_PAYMENT").await;
    assert_eq!(held["total"]["amount"], "5960.00", "{held}");
    app.pay(&trip, "tok_success", "pay-route").await;
    app.wait_for_status(&trip, "CONFIRMED").await;
}

#[tokio::test]
async fn on_sqlite_too_racing_bookings_never_oversell_a_night() {
    let app = spawn_app_with(embedded_settings()).await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let keys: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    let bookings = futures::future::join_all(
        keys.iter()
            .map(|key| app.create_booking(&room_type, tomorrow(), 2, key)),
    )
    .await;
    let mut held = 0;
    for body in &bookings {
        if app.wait_until_held_or_rejected(&TestApp::id_of(body)).await == "AWAITING_PAYMENT" {
            held += 1;
        }
    }
    assert_eq!(held, 3, "3 rooms, {held} held");
    app.wait_for_available(&room_type, json!([0, 0])).await;
}

/// A payment whose caller gave up waiting (its RPC deadline passed, or the
/// client went away) still settles: the in-process bus ran the service's
/// handler inside the caller's wait, so giving up dropped it half way (the
/// provider asked, nothing recorded); it runs on its own now, as a
/// service's consumer does over RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_payment_whose_caller_gave_up_still_settles() {
    let mut settings = common::embedded_test_settings();
    settings.rpc_timeout_ms = 1_000;
    settings.sandbox_slow_ms = 3_000;
    let app = spawn_app_with(settings).await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "gave-up")
            .await,
    );
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let paid = app.pay(&id, "tok_slow", "gave-up").await;
    assert_eq!(common::code(&paid), "SERVICE_UNAVAILABLE", "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
}

/// Polls `url` until it answers 200, for up to a minute.
async fn until_up(http: &reqwest::Client, url: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return r.text().await.unwrap_or_default();
        }
        assert!(std::time::Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_nothing_configured_serves_graphiql_and_the_demo_traveler_books() {
    // `duikou serve` in an empty directory, no DUIKOU_* variable set: what a
    // newcomer runs.
    let dir = std::env::temp_dir().join(format!("duikou-newcomer-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DUIKOU_")) {
        command.env_remove(key);
    }
    let _serve = command
        .arg("serve")
        .current_dir(&dir)
        .env("DUIKOU_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("duikou serve starts");
    let http = reqwest::Client::new();
    let page = until_up(&http, &format!("http://127.0.0.1:{port}/")).await;
    assert!(page.contains("graphiql"), "GraphiQL at /");
    assert!(dir.join("data").is_dir(), "SQLite files under ./data");

    let graphql = format!("http://127.0.0.1:{port}/graphql");
    let send = |token: Option<String>, query: &str, variables: serde_json::Value| {
        let mut request = http
            .post(&graphql)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move {
            request
                .send()
                .await
                .expect("answered")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let login = send(
        None,
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
        json!({ "e": DEMO_TRAVELER, "p": DEMO_PASSWORD }),
    )
    .await;
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .map(str::to_owned);
    assert!(token.is_some(), "{login}");
    let check_in = tomorrow() + Duration::days(5);
    let offers = send(
        None,
        "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150430\", checkIn: $in, checkOut: $out, guests: 2) { edges { node { roomTypeId } } } }",
        json!({ "in": check_in.to_string(), "out": (check_in + Duration::days(1)).to_string() }),
    )
    .await;
    let room_type = offers["data"]["searchHomestays"]["edges"][0]["node"]["roomTypeId"].clone();
    let booked = send(
        token.clone(),
        "mutation($input: CreateBookingInput!) { createBooking(input: $input, idempotencyKey: \"newcomer\") { id } }",
        json!({ "input": { "roomTypeId": room_type, "checkIn": check_in.to_string(),
            "checkOut": (check_in + Duration::days(1)).to_string(),
            "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
            "contact": { "name": "张三", "phone": "13800138000" } } }),
    )
    .await;
    let id = booked["data"]["createBooking"]["id"].clone();
    assert!(id.is_string(), "{booked}");
    let status = |want: &'static str| {
        let (send, token, id) = (&send, token.clone(), id.clone());
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let b = send(
                    token.clone(),
                    "query($id: ID!) { booking(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
                if b["data"]["booking"]["status"] == want {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "never {want}: {b}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    status("AWAITING_PAYMENT").await;
    let paid = send(
        token.clone(),
        "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"pay\") { status } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    status("CONFIRMED").await;
    drop(_serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without servers each process has its own in-process bus, so one part
/// alone would wait for messages that never come: `serve <part>` refuses,
/// saying what it needs, and leaves nothing behind.
#[test]
fn one_part_alone_without_servers_is_refused() {
    let dir = std::env::temp_dir().join(format!("duikou-part-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DUIKOU_")) {
        command.env_remove(key);
    }
    let out = command
        .args(["serve", "booking"])
        .current_dir(&dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one part alone needs the servers"),
        "{out:?}"
    );
    assert!(!dir.join("data").exists(), "nothing created");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without servers each process has its own bus, so two on one data
/// directory would each publish the other's outbox to itself: the second is
/// refused, saying why, until the first stops; so is `duikou migrate`.
#[tokio::test]
async fn a_second_process_on_the_same_data_directory_is_refused() {
    let settings = common::embedded_test_settings();
    let first = duikou::App::start(settings.clone(), duikou::Part::All)
        .await
        .expect("the first starts");
    let second = duikou::App::start(settings.clone(), duikou::Part::All).await;
    let refused = second.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        refused.contains("another Duikou is running on"),
        "{refused}"
    );
    // Nor are its databases migrated under it (`duikou migrate` was not).
    let migrated = duikou::migrate(&settings).await;
    let refused = migrated.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        refused.contains("another Duikou is running on"),
        "{refused}"
    );
    first.stop().await;
    duikou::migrate(&settings)
        .await
        .expect("migrates once the first has stopped");
    let again = duikou::App::start(settings.clone(), duikou::Part::All)
        .await
        .expect("starts once the first has stopped");
    again.stop().await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
}

/// With `DUIKOU_LOG_FORMAT=json` every line on stdout is JSON, the start-up
/// summary too (the address, the demo accounts), so a collector reading
/// stdout parses all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_json_log_format_every_start_up_line_is_json() {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("duikou-json-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DUIKOU_")) {
        command.env_remove(key);
    }
    let mut serve = command
        .arg("serve")
        .current_dir(&dir)
        .env("DUIKOU_GATEWAY_ADDR", "127.0.0.1:0")
        .env("DUIKOU_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("duikou serve starts");
    let mut lines = tokio::io::BufReader::new(serve.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let running = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            seen.push(parsed["fields"]["message"].clone());
            if parsed["fields"]["message"] == "Duikou is running" {
                return parsed;
            }
        }
        panic!("stdout ended before the start-up line: {seen:?}")
    })
    .await
    .expect("started within a minute");
    let graphql = running["fields"]["graphql"].as_str().unwrap_or_default();
    assert!(graphql.starts_with("http://127.0.0.1:"), "{running}");
    assert_eq!(running["fields"]["mode"], "embedded", "{running}");
    assert!(seen.contains(&json!("demonstration accounts")), "{seen:?}");
    let page = until_up(&reqwest::Client::new(), &graphql.replace("/graphql", "/")).await;
    assert!(page.contains("graphiql"));
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An event left in a part's outbox at a stop reaches every part it is for
/// at the next start: the relays start once every part has subscribed. (The
/// in-process bus has a queue only for a part that subscribed: booking's
/// relay, started with booking, handed a left `booking.confirmed` to
/// inventory alone, before partnership subscribed, and partnership never
/// heard of the booking.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_left_in_an_outbox_at_a_stop_reaches_every_part_at_the_next_start() {
    let settings = common::embedded_test_settings();
    // The databases made as a start makes them; then a confirmation in
    // booking's outbox, as a stop leaves one.
    duikou::App::start(settings.clone(), duikou::Part::All)
        .await
        .expect("first start")
        .stop()
        .await;
    let db = shared::db::connect(&settings, "booking")
        .await
        .expect("booking's database");
    let booking = leave_a_confirmation(&db, 2).await;
    let _ = db.close().await;

    let app = duikou::App::start(settings.clone(), duikou::Part::All)
        .await
        .expect("second start");
    let partnership = shared::db::connect(&settings, "partnership")
        .await
        .expect("partnership's database");
    let heard = || travelers_heard(&partnership, booking);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while heard().await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "partnership never heard of the confirmation left in booking's outbox"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(heard().await, Some(2));
    let _ = partnership.close().await;
    app.stop().await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
}

/// A clean stop in embedded mode relays what the outboxes hold while the
/// parts still consume: a confirmation committed in booking's outbox just
/// before the stop reaches partnership before the process ends, and no
/// outbox keeps a row. (The parts stopped consuming first: the relay's
/// last rounds could not deliver on the in-process bus, the event waited
/// for the next start, and `duikou check` on the stopped data failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_in_embedded_mode_delivers_what_the_outboxes_hold() {
    let settings = common::embedded_test_settings();
    let app = duikou::App::start(settings.clone(), duikou::Part::All)
        .await
        .expect("start");
    let db = shared::db::connect(&settings, "booking")
        .await
        .expect("booking's database");
    // Committed without waking the relay (its next poll is up to half a
    // second away): the stop begins with it in the outbox.
    let booking = leave_a_confirmation(&db, 3).await;
    app.stop().await;

    let left = common::count_of(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM outbox",
        vec![],
    )
    .await;
    assert_eq!(left, 0, "booking's outbox emptied before the stop");
    let partnership = shared::db::connect(&settings, "partnership")
        .await
        .expect("partnership's database");
    let travelers = travelers_heard(&partnership, booking).await;
    assert_eq!(
        travelers,
        Some(3),
        "partnership heard of it before the stop"
    );
    let _ = db.close().await;
    let _ = partnership.close().await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
}

/// A confirmation of a new booking with `travelers`, committed in booking's
/// outbox `db` as a stop may leave one (without waking a relay).
async fn leave_a_confirmation(
    db: &sea_orm::DatabaseConnection,
    travelers: u32,
) -> shared::ids::BookingId {
    use shared::events::{BookingConfirmed, ListingSnapshot};
    let booking = shared::ids::BookingId::new();
    let confirmed = BookingConfirmed {
        booking_id: booking,
        travelers,
        sponsor_region: shared::region::RegionCode::parse("110108").ok(),
        listing: ListingSnapshot {
            title: "草原人家".into(),
            title_en: None,
            host_id: shared::ids::HostId::new(),
            region_code: shared::region::RegionCode::parse("150430").expect("code"),
            certified: false,
            cancellation_policy: Default::default(),
            starts_on: None,
            listing_id: None,
        },
        total: shared::money::Fen::yuan(380),
        booker_home_region: None,
        agency_id: None,
        commission_bp: 0,
        captured: None,
        booking: None,
    };
    shared::outbox::enqueue(
        db,
        &[shared::envelope::Envelope::new(
            "booking", booking.0, &confirmed,
        )],
    )
    .await
    .expect("left in the outbox");
    booking
}

/// The travelers partnership recorded for `booking`, if it heard of it.
async fn travelers_heard(
    partnership: &sea_orm::DatabaseConnection,
    booking: shared::ids::BookingId,
) -> Option<i32> {
    use sea_orm::ConnectionTrait;
    partnership
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            partnership.get_database_backend(),
            "SELECT travelers FROM booking_facts WHERE booking_id = $1",
            [booking.0.to_string().into()],
        ))
        .await
        .expect("read")
        .map(|r| r.try_get::<i32>("", "travelers").expect("travelers"))
}
