//! Reconciliation: a payment the provider charged but never confirmed is
//! found by asking the provider and completed (ledger, saga); one the
//! provider never charged is failed. Nothing stays PROCESSING.

mod common;

use common::{TestApp, spawn_app_with, test_settings, tomorrow};
use serde_json::json;
use shared::config::Settings;
use shared::ids::{BookingId, HostId, PaymentId};
use shared::money::{Fen, Split, SplitRates};
use shared::region::RegionCode;
use std::time::{Duration, Instant};

async fn app() -> TestApp {
    let mut settings = test_settings();
    settings.reconcile_after_seconds = 1;
    spawn_app_with(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_answer_was_lost_is_captured_and_the_booking_confirmed() {
    let app = app().await;
    let id = app.charged_unanswered().await;
    // Paying again while it is unsettled is refused, not charged twice.
    let again = app.pay(&id, "tok_success", "pay-again").await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "CONFLICT",
        "{again}"
    );

    app.wait_for_status(&id, "CONFIRMED").await;
    assert_eq!(app.fund_balance().await, "3.80");
    // The client's retry with its key now gets the captured payment.
    let retried = app.pay(&id, "tok_lost_answer", "pay").await;
    assert_eq!(
        retried["data"]["payBooking"]["status"], "CAPTURED",
        "{retried}"
    );
}

#[tokio::test]
async fn a_payment_the_provider_never_charged_is_failed() {
    let app = app().await;
    let db = app.service_db("payment").await;
    let id = PaymentId::new();
    let new = payment::storage::NewPayment {
        id,
        booking: BookingId::new(),
        key: "crashed-before-charging",
        fingerprint: "f",
        amount: Fen::yuan(380),
        host: HostId::new(),
        region: RegionCode::parse("150430").expect("code"),
        agency: None,
        account: None,
        split: Split::of(Fen::yuan(380), SplitRates::default()),
        starts_on: None,
    };
    assert!(
        payment::storage::insert_processing(&db, &new)
            .await
            .expect("inserted")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = payment::storage::by_key(&db, "crashed-before-charging")
            .await
            .expect("read")
            .expect("there");
        if stored.view.status == "FAILED" {
            assert!(
                stored
                    .view
                    .failure_reason
                    .is_some_and(|r| r.contains("nothing was charged"))
            );
            break;
        }
        assert!(Instant::now() < deadline, "still {}", stored.view.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fund = app
        .graphql_as(None, "{ welfareFund { balance { amount } } }", json!({}))
        .await;
    assert_eq!(fund["data"]["welfareFund"]["balance"]["amount"], "0.00");
}

/// The reconciler must not fail a payment whose charge is still on its way
/// and then let the charge land: it closes the payment at the provider, so
/// the late charge is declined and no money is taken for a FAILED payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_still_in_flight_when_reconciled_is_closed_never_taken() {
    let mut settings = test_settings();
    settings.reconcile_after_seconds = 1;
    settings.sandbox_slow_ms = 4_000;
    let app = spawn_app_with(settings).await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "slow").await);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;

    let paid = app.pay(&id, "tok_slow", "pay").await;
    assert_eq!(
        paid["errors"][0]["extensions"]["code"], "PAYMENT_DECLINED",
        "{paid}"
    );
    assert!(
        paid["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was charged")),
        "{paid}"
    );

    // The provider's books: the key is closed, nothing was charged.
    let db = app.service_db("payment").await;
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT CAST(COUNT(*) AS BIGINT) AS charged FROM sandbox_charges WHERE NOT closed",
        ),
    )
    .await
    .expect("query")
    .expect("a row");
    assert_eq!(row.try_get::<i64>("", "charged").expect("count"), 0);
    assert_eq!(app.fund_balance().await, "0.00");
    // The traveler pays again, and this time it goes through.
    let again = app.pay(&id, "tok_success", "pay-2").await;
    assert_eq!(again["data"]["payBooking"]["status"], "CAPTURED", "{again}");
    app.wait_for_status(&id, "CONFIRMED").await;
}

/// A refund the provider refuses is FAILED and needs a person: it is in
/// `reconciliationLog` (REFUND_DECLINED), where an admin looks, not only in
/// an ERROR line of payment's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_provider_refuses_is_in_the_reconciliation_log() {
    use sea_orm::ConnectionTrait;
    let app = app().await;
    let id = app.confirmed_booking(9).await;
    // The money went back some other way, at the provider: it has nothing
    // left to refund.
    let payment = app.service_db("payment").await;
    payment
        .execute_unprepared(&format!(
            "INSERT INTO sandbox_refunds (idempotency_key, charge_key, reference, amount_fen, created_at)
             SELECT 'elsewhere', CAST(id AS TEXT), 'sbx_re_elsewhere', amount_fen, now()
             FROM payments WHERE booking_id = '{id}'"
        ))
        .await
        .expect("refunded at the provider");
    let admin = app.admin_token().await;
    let refund = app
        .graphql_as(
            Some(&admin),
            "mutation($b: ID!) { refundPayment(bookingId: $b, amount: \"100.00\", reason: \"投诉\",
                idempotencyKey: \"declined\") { status } }",
            json!({ "b": id }),
        )
        .await;
    assert_eq!(
        refund["data"]["refundPayment"]["status"], "FAILED",
        "{refund}"
    );
    let log = app
        .graphql_as(
            Some(&admin),
            "{ reconciliationLog(kind: REFUND_DECLINED) { totalCount edges { node { kind bookingId amount { amount } note } } } }",
            json!({}),
        )
        .await;
    let entries = &log["data"]["reconciliationLog"];
    assert_eq!(entries["totalCount"], 1, "{log}");
    let entry = &entries["edges"][0]["node"];
    assert_eq!(
        (
            &entry["kind"],
            &entry["bookingId"],
            &entry["amount"]["amount"]
        ),
        (&json!("REFUND_DECLINED"), &json!(id), &json!("100.00")),
        "{log}"
    );
    assert!(
        entry["note"].as_str().is_some_and(|n| n.contains("投诉")),
        "{log}"
    );
    // The traveler reads that it failed, not the provider's words to the
    // platform; the platform's admins read those.
    let read = "query($id: ID!) { booking(id: $id) { refunds { status failureReason } } }";
    let travelers = app.graphql(read, json!({ "id": id })).await;
    let theirs = &travelers["data"]["booking"]["refunds"][0];
    assert_eq!(theirs["status"], "FAILED", "{travelers}");
    assert!(
        theirs["failureReason"]
            .as_str()
            .is_some_and(|r| r.contains("the platform will settle it") && !r.contains("left")),
        "{travelers}"
    );
    let admins = app
        .graphql_as(Some(&admin), read, json!({ "id": id }))
        .await;
    assert!(
        admins["data"]["booking"]["refunds"][0]["failureReason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot refund")),
        "{admins}"
    );
}

/// A refund the reconciler asks again, which the provider pays, while the
/// refund is recorded as declined meanwhile (another asker heard a decline;
/// the test writes it, holding the row until the reconciler's record waits
/// on it): the money went back but the ledger says it did not — a MISMATCH
/// for a person, not a refund logged as completed. A second refund of the
/// same payment that goes the same way is a second MISMATCH (they were
/// noted once per payment: the second was not noted at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_paid_by_the_provider_after_it_was_recorded_declined_is_a_mismatch() {
    let app = app().await;
    let id = app.confirmed_booking(9).await;
    for (n, key) in ["both-ways", "both-ways-again"].into_iter().enumerate() {
        let admin = app.pending_refund(&id, key).await;
        let declined = common::LockHeld::begin(
            app.service_db("payment").await,
            "UPDATE refunds SET status = 'FAILED', failure_reason = 'declined', updated_at = now()
             WHERE status = 'PENDING'",
        )
        .await;
        app.refund_provider(true).await;
        declined.until_waiting(1, true).await;
        declined.release().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let kinds = loop {
            let log = app
                .graphql_as(
                    Some(&admin),
                    "{ reconciliationLog { edges { node { kind note } } } }",
                    json!({}),
                )
                .await;
            let kinds: Vec<String> = log["data"]["reconciliationLog"]["edges"]
                .as_array()
                .unwrap_or_else(|| panic!("{log}"))
                .iter()
                .map(|e| e["node"]["kind"].as_str().unwrap_or("?").to_owned())
                .collect();
            if kinds.len() > n {
                break kinds;
            }
            assert!(Instant::now() < deadline, "nothing logged: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(kinds, vec!["MISMATCH"; n + 1]);
    }
}

in_both_modes!(a_charge_no_payment_made_is_logged_once_as_a_mismatch);
/// The provider's books against the payments (the reconciler's third
/// step, one statement over the day's charges): a charge under a payment
/// id no payment has is a MISMATCH, logged once; a charge under a key
/// that is no payment id at all is nobody's and breaks nothing; a
/// captured payment's own charge is no mismatch.
async fn a_charge_no_payment_made_is_logged_once_as_a_mismatch(mut settings: Settings) {
    use sea_orm::ConnectionTrait;
    settings.reconcile_after_seconds = 1;
    let app = spawn_app_with(settings).await;
    let id = app.confirmed_booking(9).await;
    let admin = app.admin_token().await;
    let stranger = uuid::Uuid::new_v4();
    let payment = app.service_db("payment").await;
    for (key, fen) in [
        (stranger.to_string(), 4200),
        ("not-a-payment-id".into(), 100),
    ] {
        payment
            .execute_raw(shared::outbox::stmt(
                payment.get_database_backend(),
                "INSERT INTO sandbox_charges (idempotency_key, reference, amount_fen, created_at)
                 VALUES ($1, 'ch_stranger', $2, $3)",
                vec![key.into(), i64::from(fen).into(), chrono::Utc::now().into()],
            ))
            .await
            .expect("charged");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let notes = loop {
        let log = app
            .graphql_as(
                Some(&admin),
                "{ reconciliationLog(kind: MISMATCH) { edges { node { paymentId bookingId note } } } }",
                json!({}),
            )
            .await;
        let edges = log["data"]["reconciliationLog"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{log}"))
            .clone();
        if !edges.is_empty() {
            break edges;
        }
        assert!(Instant::now() < deadline, "nothing logged: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(notes.len(), 1, "{notes:?}");
    let node = &notes[0]["node"];
    assert_eq!(node["paymentId"], stranger.to_string(), "{node}");
    assert_eq!(
        node["note"], "the provider charged 42.00 for no known payment",
        "{node}"
    );
    let booking = app.wait_for_status(&id, "CONFIRMED").await;
    assert!(booking["errors"].is_null(), "{booking}");
}

/// The reconciler reads stuck payments page by page and one it cannot read
/// is passed over: a hundred older PROCESSING rows without a split (as a
/// hand-made or half-restored row would be) stood before a charge whose
/// answer was lost. Before, the round's first read failed on them (and,
/// had it skipped them, its hundred were always the same: the charge was
/// never reached), so the booking waited for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_stuck_payments_do_not_keep_a_lost_charge_from_its_turn() {
    use sea_orm::ConnectionTrait;
    let app = app().await;
    let db = app.service_db("payment").await;
    db.execute_unprepared(
        "INSERT INTO payments (id, booking_id, idempotency_key, fingerprint, amount_fen, status,
                               created_at, updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'unreadable-' || n, 'x', 100, 'PROCESSING',
                TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-01-01 00:00:00+00'
           FROM generate_series(1, 100) AS n",
    )
    .await
    .expect("unreadable rows");
    let id = app.charged_unanswered().await;
    app.wait_for_status(&id, "CONFIRMED").await;
}

/// Publishes inventory's sweeper's release of booking `id`'s hold, past
/// its deadline (`expired: true`), as inventory would.
async fn released_by_inventory(app: &TestApp, id: &str) {
    let booking_id = BookingId(id.parse().expect("a booking id"));
    let released = shared::events::HoldReleased {
        booking_id,
        expired: true,
    };
    app.publish(shared::envelope::Envelope::new(
        "inventory",
        booking_id.0,
        &released,
    ))
    .await;
}

/// Inventory's sweeper releases the hold of a booking still awaiting
/// payment (booking was down past the hold's grace, so inventory could not
/// ask it; here the test speaks for inventory) while its payment is on its
/// way: the release does not expire the booking — booking's own expiry
/// decides, asking payment, and a capture confirms it (inventory takes the
/// room again). The release expired it, and a traveler who paid in time
/// was refunded (left by the eighteenth session).
#[tokio::test]
async fn a_hold_released_by_inventory_leaves_the_booking_to_bookings_own_expiry() {
    // The reconciler left at its default minute: the payment stays on its
    // way while the release is handled.
    let app = spawn_app_with(test_settings()).await;
    let id = app.charged_unanswered().await;
    released_by_inventory(&app, &id).await;
    app.wait_for_booking(&id, "the release handled", |b| {
        b["history"].as_array().into_iter().flatten().any(|h| {
            h["cause"]
                .as_str()
                .is_some_and(|c| c.contains("inventory released the hold"))
        })
    })
    .await;
    // Read again: a booking's history is read after its status, so the
    // answer that showed the step may show the status before it.
    let booking = app.wait_for_booking(&id, "a read", |_| true).await;
    assert_eq!(booking["status"], "AWAITING_PAYMENT", "{booking}");
}

/// Makes the card of `id`'s payment (its first request's) `token`, as if
/// the first request had paid with it.
async fn first_paid_with(app: &TestApp, id: &str, token: &str) {
    use sea_orm::ConnectionTrait;
    use sha2::Digest;
    let fingerprint = hex::encode(sha2::Sha256::digest(format!("{id}|{token}")));
    let changed = app
        .service_db("payment")
        .await
        .execute_unprepared(&format!(
            "UPDATE payments SET fingerprint = '{fingerprint}' WHERE booking_id = '{id}'"
        ))
        .await
        .expect("the first request's card");
    assert_eq!(changed.rows_affected(), 1);
}

/// `column` of the first row `sql` reads from payment's database.
async fn payment_scalar<T: sea_orm::TryGetable>(
    app: &TestApp,
    sql: &str,
    column: &str,
) -> Option<T> {
    use sea_orm::ConnectionTrait;
    app.service_db("payment")
        .await
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql.to_owned(),
        ))
        .await
        .expect("a read of payment's database")
        .and_then(|r| r.try_get::<T>("", column).ok())
}

async fn charges_at_the_provider(app: &TestApp) -> Option<i64> {
    payment_scalar(
        app,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sandbox_charges",
        "n",
    )
    .await
}

async fn payment_status(app: &TestApp, id: &str) -> Option<String> {
    payment_scalar(
        app,
        &format!("SELECT status AS s FROM payments WHERE booking_id = '{id}'"),
        "s",
    )
    .await
}

/// The traveler's retry of `id`'s payment with its key answers CAPTURED and
/// the booking is confirmed, on one charge at the provider: the first one,
/// found by its key.
async fn retried_to_one_charge(app: &TestApp, id: &str) {
    let retried = app.pay(id, "tok_success", "pay").await;
    assert_eq!(
        retried["data"]["payBooking"]["status"], "CAPTURED",
        "{retried}"
    );
    app.wait_for_status(id, "CONFIRMED").await;
    assert_eq!(charges_at_the_provider(app).await, Some(1));
}

/// A payment whose first request is gone — its process killed after the
/// provider charged and before the capture was recorded — is settled by
/// the traveler's retry with its key: payment asks the provider again by
/// the payment's own key, finds the charge, and answers CAPTURED. The retry
/// was told "still waiting" until the reconciler's round, a minute or more
/// (a run of replicas with payment killed mid-load). The test makes that
/// state from a lost answer: the provider charged, the payment PROCESSING;
/// the first request's card then stands for one that answers.
#[tokio::test]
async fn a_retry_of_a_payment_whose_first_request_is_gone_asks_the_provider_again() {
    let app = spawn_app_with(test_settings()).await;
    let id = app.charged_unanswered().await;
    first_paid_with(&app, &id, "tok_success").await;
    retried_to_one_charge(&app, &id).await;
}

/// The same retry sent once the first request has had its time (its
/// process killed, the traveler retrying after being told to): it asks the
/// provider at once, within the gateway's deadline — it waited 4 s for the
/// gone request before asking, and answered SERVICE_UNAVAILABLE to a
/// gateway that waits less (the first retry after a kill did, by default).
#[tokio::test]
async fn a_retry_long_after_its_first_request_asks_the_provider_at_once() {
    use sea_orm::ConnectionTrait;
    let mut settings = test_settings();
    settings.rpc_timeout_ms = 3_000;
    let app = spawn_app_with(settings).await;
    let id = app.charged_unanswered().await;
    first_paid_with(&app, &id, "tok_success").await;
    app.service_db("payment")
        .await
        .execute_unprepared(&format!(
            "UPDATE payments SET created_at = created_at - interval '1 minute' \
             WHERE booking_id = '{id}'"
        ))
        .await
        .expect("the first request a minute ago");
    retried_to_one_charge(&app, &id).await;
}

/// The same retry when the provider never made the charge (the first
/// request killed before its call) and the card is declined now: the retry
/// fails the payment and says why, and the booking can be paid again — it
/// was left PROCESSING, every other payment refused, until the reconciler.
#[tokio::test]
async fn a_retry_of_a_payment_never_charged_whose_card_is_declined_fails_it() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app_with(test_settings()).await;
    let id = app.charged_unanswered().await;
    app.service_db("payment")
        .await
        .execute_unprepared("DELETE FROM sandbox_charges")
        .await
        .expect("the charge never made");
    first_paid_with(&app, &id, "tok_decline").await;
    let retried = app.pay(&id, "tok_decline", "pay").await;
    assert_eq!(
        retried["errors"][0]["extensions"]["code"], "PAYMENT_DECLINED",
        "{retried}"
    );
    assert_eq!(
        retried["errors"][0]["message"], "the card was declined",
        "{retried}"
    );
    assert_eq!(payment_status(&app, &id).await.as_deref(), Some("FAILED"));
    let paid = app.pay(&id, "tok_success", "pay-again").await;
    assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
}

/// The same retry while the provider still gives no answer: it is told to
/// wait, as before, and nothing is settled or charged again — the payment
/// stays PROCESSING for the reconciler, one charge at the provider.
#[tokio::test]
async fn a_retry_the_provider_still_does_not_answer_leaves_the_payment_to_the_reconciler() {
    let app = spawn_app_with(test_settings()).await;
    let id = app.charged_unanswered().await;
    let retried = app.pay(&id, "tok_lost_answer", "pay").await;
    assert_eq!(
        retried["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{retried}"
    );
    assert_eq!(
        payment_status(&app, &id).await.as_deref(),
        Some("PROCESSING")
    );
    assert_eq!(charges_at_the_provider(&app).await, Some(1));
    let booking = app.wait_for_booking(&id, "a read", |_| true).await;
    assert_eq!(booking["status"], "AWAITING_PAYMENT", "{booking}");
}

/// The other side of the test above: a booking with no payment, its hold
/// released by inventory, is expired by booking's own sweeper at its
/// deadline — the release leaves nothing waiting for ever.
#[tokio::test]
async fn a_booking_whose_hold_inventory_released_is_expired_by_its_own_sweeper() {
    let mut settings = test_settings();
    settings.hold_seconds = 5;
    let app = spawn_app_with(settings).await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "unpaid")
            .await,
    );
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    released_by_inventory(&app, &id).await;
    // Noted while the booking still awaits payment (its deadline seconds
    // away), then ended by the sweeper.
    app.wait_for_cause(&id, "inventory released the hold").await;
    app.wait_for_status(&id, "EXPIRED").await;
    let expired = app.wait_for_booking(&id, "a read", |_| true).await;
    assert_eq!(expired["reason"], "not paid in time", "{expired}");
    let causes: Vec<&str> = expired["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["cause"].as_str())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.contains("inventory released the hold")),
        "{expired}"
    );
}
