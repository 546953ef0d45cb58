//! Host payouts: what each host is owed (captured less refunded), paid once
//! per batch reference with balanced entries, and the books still sum to zero.

mod common;

use chrono::Duration as Days;
use common::{code, spawn_app, tomorrow};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use shared::config::Settings;

fn amounts(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|b| b["amount"]["amount"].as_str().unwrap_or("?").to_owned())
        .collect();
    out.sort();
    out
}

/// What a payout run now would pay each host (the preview), as `admin`.
async fn payable(app: &common::TestApp, admin: &str) -> Value {
    app.graphql_as(
        Some(admin),
        "{ hostBalances(payable: true) { amount { amount } } }",
        json!({}),
    )
    .await
}

/// `runPayouts` under `reference`, as `admin`: the run's total.
async fn run_payouts(app: &common::TestApp, admin: &str, reference: &str) -> Value {
    app.graphql_as(
        Some(admin),
        "mutation($r: String!) { runPayouts(reference: $r) { total { amount } } }",
        json!({ "r": reference }),
    )
    .await
}

#[tokio::test]
async fn hosts_are_paid_what_they_are_owed_once_per_batch() {
    let app = spawn_app().await;
    let first = app.homestay(1).await.room_type_id.to_string();
    let second = app.homestay(1).await.room_type_id.to_string();
    let kept = app
        .paid_booking(&first, tomorrow() + Days::days(3), "tok_success")
        .await;
    let halved = app
        .paid_booking(&second, tomorrow() + Days::days(3), "tok_success")
        .await;
    app.wait_for_status(&kept, "CONFIRMED").await;
    app.wait_for_status(&halved, "CONFIRMED").await;
    app.stays_under_way().await;
    app.cancel(&halved, "c").await;
    app.wait_for_booking(&halved, "the half refund", |b| {
        b["refunded"]["amount"] == "190.00"
    })
    .await;

    let admin = app.admin_token().await;
    let balances = "{ hostBalances { hostId amount { amount } } }";
    let owed = app.graphql_as(Some(&admin), balances, json!({})).await;
    // 364.80 each captured; the refund took back 182.40 of the second.
    assert_eq!(
        amounts(&owed["data"]["hostBalances"]),
        ["182.40", "364.80"],
        "{owed}"
    );
    let traveler = app.graphql(balances, json!({})).await;
    assert_eq!(traveler["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // A region's admins see what its households are owed, and no other
    // region's (they were FORBIDDEN every balance).
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let own = app.graphql_as(Some(&chifeng), balances, json!({})).await;
    assert_eq!(own["data"], owed["data"], "{own}");
    // The preview of a run (it asks the other services) is a run's, and
    // the refusal names what made it one.
    let preview = "{ hostBalances(payable: true) { hostId } }";
    let refused = app.graphql_as(Some(&chifeng), preview, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("`payable: true` previews a payout run")),
        "{refused}"
    );
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let none = app.graphql_as(Some(&beijing), balances, json!({})).await;
    assert_eq!(none["data"]["hostBalances"], json!([]), "{none}");
    // Whom to pay: each host's name and region beside its balance, read
    // for the whole list in one call.
    let calls = || app.metric("duikou_rpc_total", &["method=\"get_hosts\""]);
    let before = calls().await;
    let named = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances { hostId host { id name regionCode } } }",
            json!({}),
        )
        .await;
    let named = named["data"]["hostBalances"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{named}"));
    assert_eq!(named.len(), 2);
    for b in &named {
        assert_eq!(b["host"]["id"], b["hostId"], "{b}");
        assert_eq!(b["host"]["name"], "敖汉旗测试牧户", "{b}");
        assert_eq!(b["host"]["regionCode"], "150430", "{b}");
    }
    assert_eq!(calls().await, before + 1.0, "one call for the list");

    // Before the run, its preview: the hosts and amounts it will pay.
    let preview = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances(payable: true) { hostId amount { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        amounts(&preview["data"]["hostBalances"]),
        ["182.40", "364.80"],
        "{preview}"
    );
    // A moment after both captures and before the first run.
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let run = "mutation($r: String!) { runPayouts(reference: $r) { reference total { amount } payouts { hostId amount { amount } } } }";
    let paid = app
        .graphql_as(Some(&admin), run, json!({ "r": "BATCH-2026-11" }))
        .await;
    let paid = &paid["data"]["runPayouts"];
    assert_eq!(paid["total"]["amount"], "547.20", "{paid}");
    assert_eq!(amounts(&paid["payouts"]), ["182.40", "364.80"]);
    // What a run would pay, asked after it: nothing more.
    let payable = "{ hostBalances(payable: true) { hostId amount { amount } } }";
    let left = app.graphql_as(Some(&admin), payable, json!({})).await;
    assert_eq!(left["data"]["hostBalances"], json!([]), "{left}");
    let again = app
        .graphql_as(Some(&admin), run, json!({ "r": "BATCH-2026-11" }))
        .await;
    assert_eq!(
        &again["data"]["runPayouts"], paid,
        "the same reference returns the first run"
    );
    let next = app
        .graphql_as(Some(&admin), run, json!({ "r": "BATCH-2026-12" }))
        .await;
    assert_eq!(
        next["data"]["runPayouts"]["total"]["amount"], "0.00",
        "nothing is paid twice: {next}"
    );
    // A run over an earlier period (captures before `between`) finds them
    // already paid by the run made after it.
    let earlier = app
        .graphql_as(
            Some(&admin),
            "mutation($r: String!, $t: DateTime!) { runPayouts(reference: $r, upTo: $t) { total { amount } } }",
            json!({ "r": "BATCH-LATE-FILED", "t": between.to_rfc3339() }),
        )
        .await;
    assert_eq!(
        earlier["data"]["runPayouts"]["total"]["amount"], "0.00",
        "earnings paid by a later run are not paid again: {earlier}"
    );
    // Its retry gets it again; the same reference for another period is
    // refused.
    let late = "mutation($r: String!, $t: DateTime!) { runPayouts(reference: $r, upTo: $t) { total { amount } } }";
    let again = app
        .graphql_as(
            Some(&admin),
            late,
            json!({ "r": "BATCH-LATE-FILED", "t": between.to_rfc3339() }),
        )
        .await;
    assert_eq!(again, earlier);
    let other = app
        .graphql_as(
            Some(&admin),
            late,
            json!({ "r": "BATCH-LATE-FILED", "t": (between - chrono::Duration::seconds(1)).to_rfc3339() }),
        )
        .await;
    assert_eq!(code(&other), "IDEMPOTENCY_KEY_REUSED", "{other}");
    let owed = app.graphql_as(Some(&admin), balances, json!({})).await;
    assert_eq!(owed["data"]["hostBalances"], json!([]));

    // Balances as of a moment: before anything was earned, nobody was owed.
    let as_of = "query($t: DateTime!) { hostBalances(upTo: $t) { amount { amount } } }";
    let before = app
        .graphql_as(Some(&admin), as_of, json!({ "t": "2020-01-01T00:00:00Z" }))
        .await;
    assert_eq!(before["data"]["hostBalances"], json!([]), "{before}");

    // The payout history, newest first, each run with what it paid.
    let history = app
        .graphql_as(
            Some(&admin),
            "{ payoutRuns(first: 2) { edges { node { reference total { amount } upTo ranAt } } pageInfo { hasNextPage endCursor } totalCount } }",
            json!({}),
        )
        .await;
    let runs = &history["data"]["payoutRuns"];
    let references: Vec<&str> = runs["edges"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|r| r["node"]["reference"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        references,
        ["BATCH-LATE-FILED", "BATCH-2026-12"],
        "{history}"
    );
    assert_eq!(runs["pageInfo"]["hasNextPage"], true);
    let rest = app
        .graphql_as(
            Some(&admin),
            "query($a: String) { payoutRuns(first: 2, after: $a) { edges { node { reference total { amount } } } } }",
            json!({ "a": runs["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        rest["data"]["payoutRuns"]["edges"][0]["node"],
        json!({ "reference": "BATCH-2026-11", "total": { "amount": "547.20" } }),
        "{rest}"
    );
    let all_pages = 2 + rest["data"]["payoutRuns"]["edges"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(runs["totalCount"], all_pages, "{history}");
    // A cursor no run has is refused, as on every other list.
    let unknown = app
        .graphql_as(
            Some(&admin),
            "{ payoutRuns(first: 2, after: \"zz\") { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{unknown}"
    );
    let refused = app
        .graphql("{ payoutRuns { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // Every transaction balanced: the whole ledger sums to zero.
    let db = app.service_db("payment").await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS total FROM ledger_entries",
        ))
        .await
        .expect("query")
        .expect("a row");
    assert_eq!(row.try_get::<i64>("", "total").expect("total"), 0);
    // And every invariant holds, the payouts recorded = their postings.
    app.until_invariants_hold().await;
}

in_both_modes!(runs_read_the_hosts_sums_up_to_their_mark_and_the_entries_since);
/// A run keeps each host's sum up to a mark (its `upTo`, or an hour before
/// the database's clock if earlier), and the next run, its preview and the
/// balances read the sums and only the entries since: they pay and owe
/// what reading every entry does. Two captures are moved two days back
/// (under the first run's mark, three hours ago), a refund and a third
/// capture two hours back (between it and the second run's); a balance asked as of before the
/// mark reads every entry; a host entry stamped before the mark is
/// refused, not lost.
async fn runs_read_the_hosts_sums_up_to_their_mark_and_the_entries_since(settings: Settings) {
    use sea_orm::{Statement, TransactionTrait};
    let app = common::spawn_app_with(settings).await;
    let now = chrono::Utc::now;
    app.confirmed_booking(3).await;
    let second = app.confirmed_booking(3).await;
    app.stays_under_way().await;
    host_entries_back(&app, chrono::DateTime::UNIX_EPOCH, Days::days(2)).await;
    let admin = app.admin_token().await;
    let run = |reference: &'static str, up_to: chrono::DateTime<chrono::Utc>| {
        let (app, admin) = (&app, &admin);
        async move {
            app.graphql_as(
                Some(admin),
                "mutation($r: String!, $t: DateTime!) { runPayouts(reference: $r, upTo: $t) { total { amount } } }",
                json!({ "r": reference, "t": up_to.to_rfc3339() }),
            )
            .await
        }
    };
    let first = run("MARK-1", now() - Days::hours(3)).await;
    assert_eq!(
        first["data"]["runPayouts"]["total"]["amount"], "729.60",
        "{first}"
    );
    let payment = app.service_db("payment").await;
    let kept = |db: sea_orm::DatabaseConnection| async move {
        db.query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT owed_fen FROM host_marks ORDER BY owed_fen",
        ))
        .await
        .expect("marks read")
        .iter()
        .map(|r| r.try_get::<i64>("", "owed_fen").expect("owed"))
        .collect::<Vec<_>>()
    };
    assert_eq!(kept(payment.clone()).await, [36_480, 36_480]);

    // Between the marks (two hours back): a refund of a stay under the
    // first, and a third stay.
    let since_the_run = now();
    let refund = app
        .graphql_as(
            Some(&admin),
            "mutation($b: ID!) { refundPayment(bookingId: $b, amount: \"100.00\", reason: \"停电\",
                 idempotencyKey: \"part\") { status } }",
            json!({ "b": second }),
        )
        .await;
    assert_eq!(
        refund["data"]["refundPayment"]["status"], "SUCCEEDED",
        "{refund}"
    );
    app.confirmed_booking(4).await;
    app.stays_under_way().await;
    host_entries_back(&app, since_the_run, Days::hours(2)).await;
    // As of before the mark: every entry read (the kept sums are later).
    let as_of = app
        .graphql_as(
            Some(&admin),
            "query($t: DateTime!) { hostBalances(upTo: $t) { amount { amount } } }",
            json!({ "t": (now() - Days::hours(4)).to_rfc3339() }),
        )
        .await;
    assert_eq!(
        amounts(&as_of["data"]["hostBalances"]),
        ["364.80", "364.80"],
        "{as_of}"
    );
    let preview = payable(&app, &admin).await;
    assert_eq!(
        amounts(&preview["data"]["hostBalances"]),
        ["364.80"],
        "{preview}"
    );
    let second_run = run("MARK-2", now()).await;
    assert_eq!(
        second_run["data"]["runPayouts"]["total"]["amount"], "364.80",
        "{second_run}"
    );
    // The refund and the third capture are under the new mark, added to
    // the sums; the payouts are after it. The refund's host share (96.00
    // of 100.00) is owed back.
    assert_eq!(kept(payment.clone()).await, [26_880, 36_480, 36_480]);
    let owed = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances { amount { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(amounts(&owed["data"]["hostBalances"]), ["-96.00"], "{owed}");

    // A host entry stamped before the mark (a clock behind) is refused.
    let b = payment.get_database_backend();
    let txn = payment.begin().await.expect("begin");
    let refused = txn
        .execute_raw(Statement::from_sql_and_values(
            b,
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             VALUES ($1, $2, 'host:00000000-0000-7000-8000-0000000000bb', 100, '150430', $3)",
            [
                shared::db::uuid_value(b, uuid::Uuid::now_v7()),
                shared::db::uuid_value(b, uuid::Uuid::now_v7()),
                (now() - Days::hours(2)).into(),
            ],
        ))
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("before the hosts' mark")),
        "{refused:?}"
    );
    drop(txn);
    // A mark a day ahead, as a run on a clock running fast would set it:
    // payments still capture (their entries refused until the clock caught
    // up), posted at the mark.
    let ahead = now() + Days::days(1);
    payment::storage::advance_host_marks(&payment, ahead)
        .await
        .expect("mark moved ahead");
    let late = app.confirmed_booking(5).await;
    let stamped = payment
        .query_all_raw(Statement::from_sql_and_values(
            b,
            "SELECT created_at FROM ledger_entries WHERE booking_id = $1",
            [shared::db::uuid_value(b, late.parse().expect("booking id"))],
        ))
        .await
        .expect("entries read");
    assert_eq!(stamped.len(), 4, "the capture's legs");
    for r in &stamped {
        let at: chrono::DateTime<chrono::Utc> = r.try_get("", "created_at").expect("stamp");
        assert!(
            (at - ahead).num_milliseconds().abs() < 1,
            "{at} is not the mark {ahead}"
        );
    }
    app.until_invariants_hold().await;
}

/// Moves the hosts' ledger entries stamped at or after `from` back by
/// `by`, as if posted then (the ledger's append-only triggers off
/// meanwhile).
async fn host_entries_back(app: &common::TestApp, from: chrono::DateTime<chrono::Utc>, by: Days) {
    use sea_orm::{DbBackend, Statement, TransactionTrait};
    let payment = app.service_db("payment").await;
    let b = payment.get_database_backend();
    let txn = payment.begin().await.expect("begin");
    if b == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL session_replication_role = replica")
            .await
            .expect("triggers off");
        txn.execute_raw(Statement::from_sql_and_values(
            b,
            format!(
                "UPDATE ledger_entries SET created_at = created_at - interval '{} seconds'
                 WHERE account LIKE 'host:%' AND created_at >= $1",
                by.num_seconds()
            ),
            [from.into()],
        ))
        .await
        .expect("moved back");
        return txn.commit().await.expect("committed");
    }
    // SQLite: the triggers dropped and made again; each instant written
    // back bound, as the application writes it.
    let triggers = txn
        .query_all_raw(Statement::from_string(
            b,
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ledger_entries'",
        ))
        .await
        .expect("triggers read");
    let triggers: Vec<(String, String)> = triggers
        .iter()
        .map(|r| {
            (
                r.try_get("", "name").expect("name"),
                r.try_get("", "sql").expect("sql"),
            )
        })
        .collect();
    for (name, _) in &triggers {
        txn.execute_unprepared(&format!("DROP TRIGGER {name}"))
            .await
            .expect("trigger dropped");
    }
    let entries = txn
        .query_all_raw(Statement::from_string(
            b,
            "SELECT id, created_at FROM ledger_entries WHERE account LIKE 'host:%'",
        ))
        .await
        .expect("entries read");
    for r in &entries {
        let id: i64 = r.try_get("", "id").expect("id");
        let at: chrono::DateTime<chrono::Utc> = r.try_get("", "created_at").expect("created_at");
        if at < from {
            continue;
        }
        txn.execute_raw(Statement::from_sql_and_values(
            b,
            "UPDATE ledger_entries SET created_at = $1 WHERE id = $2",
            [(at - by).into(), id.into()],
        ))
        .await
        .expect("moved back");
    }
    for (_, sql) in &triggers {
        txn.execute_unprepared(sql)
            .await
            .expect("trigger made again");
    }
    txn.commit().await.expect("committed");
}

/// A run over a period that ended before a refund still counts the refund:
/// the host is not paid earnings the traveler has since had back.
#[tokio::test]
async fn a_run_over_an_earlier_period_does_not_pay_what_was_refunded_since() {
    let app = spawn_app().await;
    let id = app.confirmed_booking(9).await;
    app.stays_under_way().await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    app.cancel(&id, "c").await;
    app.wait_for_booking(&id, "the full refund", |b| {
        b["refunded"]["amount"] == "380.00"
    })
    .await;

    let admin = app.admin_token().await;
    // As the ledger stood then, the host was owed the capture's share...
    let as_of = app
        .graphql_as(
            Some(&admin),
            "query($t: DateTime!) { hostBalances(upTo: $t) { amount { amount } } }",
            json!({ "t": between.to_rfc3339() }),
        )
        .await;
    assert_eq!(
        amounts(&as_of["data"]["hostBalances"]),
        ["364.80"],
        "{as_of}"
    );
    // ...but a run over that period pays nothing: it was all given back,
    // as the preview of that run says before it is made.
    let preview = app
        .graphql_as(
            Some(&admin),
            "query($t: DateTime!) { hostBalances(upTo: $t, payable: true) { amount { amount } } }",
            json!({ "t": between.to_rfc3339() }),
        )
        .await;
    assert_eq!(preview["data"]["hostBalances"], json!([]), "{preview}");
    let run = app
        .graphql_as(
            Some(&admin),
            "mutation($t: DateTime!) { runPayouts(reference: \"BATCH-OLD\", upTo: $t) { total { amount } } }",
            json!({ "t": between.to_rfc3339() }),
        )
        .await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "0.00",
        "{run}"
    );
}

/// A refund the provider has not answered yet is money promised back to
/// the traveler: a payout run (and its preview) keeps the host's share of
/// it back, so the host is not paid what the refund then takes away.
#[tokio::test]
async fn a_run_keeps_back_the_host_share_of_refunds_still_pending() {
    let mut settings = common::test_settings();
    settings.reconcile_after_seconds = 1;
    let app = common::spawn_app_with(settings).await;
    let id = app.confirmed_booking(9).await;
    app.stays_under_way().await;
    // The provider takes no refund for now: each try goes unanswered.
    let admin = app.pending_refund(&id, "pending-1").await;

    // Owed 364.80 for the night; 96.00 of it goes back with the refund.
    let preview = payable(&app, &admin).await;
    assert_eq!(
        amounts(&preview["data"]["hostBalances"]),
        ["268.80"],
        "{preview}"
    );
    let run = run_payouts(&app, &admin, "WHILE-PENDING").await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "268.80",
        "{run}"
    );

    // The provider answers again; the reconciler finishes the refund and
    // the host owes nothing, nor is owed anything.
    app.refund_provider(true).await;
    app.wait_for_booking(&id, "the refund", |b| b["refunded"]["amount"] == "100.00")
        .await;
    let after = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances { amount { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(after["data"]["hostBalances"], json!([]), "{after}");
    let future = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances(upTo: \"2999-01-01T00:00:00Z\", payable: true) { amount { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&future), "BAD_USER_INPUT", "{future}");
}

/// A pending refund the provider confirms while a payout run reads the
/// books (the confirmation holds the ledger until it commits, between the
/// run's look at the pending refunds and its look at the balances): the
/// run reads both as of one moment, and pays the host's balance less the
/// refund once (it held the refund back as pending and deducted it as
/// posted: 172.80 instead of 268.80).
#[tokio::test]
async fn a_refund_confirmed_while_a_run_reads_the_books_is_taken_off_once() {
    let app = spawn_app().await;
    let id = app.confirmed_booking(9).await;
    app.stays_under_way().await;
    let admin = app.pending_refund(&id, "during-run").await;
    // The provider's answer recorded as payment records it: the refund
    // SUCCEEDED and its legs posted (the host's 96.00 of the 100.00).
    let confirming = common::LockHeld::begin(
        app.service_db("payment").await,
        "LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE;
         UPDATE refunds SET status = 'SUCCEEDED', provider_ref = 'test', updated_at = now();
         INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
         SELECT gen_random_uuid(), booking_id, leg.account, leg.amount, region_code, now()
         FROM payments, LATERAL (VALUES ('host:' || payments.host_id, -9600), ('clearing', 9600))
                        AS leg (account, amount)",
    )
    .await;
    let (run, ()) = tokio::join!(run_payouts(&app, &admin, "DURING-REFUND"), async {
        confirming.until_waiting(1, true).await;
        confirming.release().await;
    });
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "268.80",
        "{run}"
    );
    let after = app
        .graphql_as(
            Some(&admin),
            "{ hostBalances { amount { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(after["data"]["hostBalances"], json!([]), "{after}");
}

/// A cancellation answered before a payout run is kept back from it even
/// while payment has not heard of its refund yet (the request on its way;
/// here held up on the payment's row): the host is not paid for the
/// cancelled stay and then left owing it. (Payment heard of it only when
/// the request arrived: an exploratory run paid 960.00 of a 1,000.00 stay
/// cancelled just before, 8 times in 10.)
#[tokio::test]
async fn a_cancellation_answered_before_a_run_is_kept_back_while_its_refund_is_on_its_way() {
    let (app, id, held) = confirmed_with_its_payment_held().await;
    let cancelled = app.cancel(&id, "plans-changed").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "380.00",
        "{cancelled}"
    );
    run_keeps_the_refund_back(&app, &id, held).await;
}

/// A run that waits out another (here its lock held) asks again which
/// refunds are on their way once its turn comes: a cancellation answered
/// while it waited is kept back too. (Asked only before it waited, the run
/// paid the host 364.80 of a stay refunded in full, and the host then owed
/// it back.)
#[tokio::test]
async fn a_cancellation_answered_while_a_run_waits_for_another_is_kept_back() {
    let app = spawn_app().await;
    let id = app.confirmed_booking(20).await;
    app.stays_under_way().await;
    let admin = app.admin_token().await;
    // Payable before the cancellation (and its capture heard by payment).
    let preview = payable(&app, &admin).await;
    assert_eq!(
        amounts(&preview["data"]["hostBalances"]),
        ["364.80"],
        "{preview}"
    );
    let held = app.payment_row_held(&id).await;
    let other_run = common::LockHeld::begin(
        app.service_db("payment").await,
        "SELECT pg_advisory_xact_lock(7461)",
    )
    .await;
    let (run, held) = tokio::join!(run_payouts(&app, &admin, "WAITED"), async {
        other_run.until_waiting(1, true).await;
        let cancelled = app.cancel(&id, "while-waiting").await;
        assert_eq!(
            cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "380.00",
            "{cancelled}"
        );
        held.until_waiting(1, true).await;
        other_run.release().await;
        held
    });
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "0.00",
        "{run}"
    );
    held.release().await;
}

/// A stay not begun is kept back whole; its cancellation, whose refund
/// has not reached payment yet, is in that and is not kept back again
/// (it was: the host's stay under way went unpaid, 0.00 instead of 364.80,
/// until payment heard of the refund).
#[tokio::test]
async fn a_stay_not_begun_cancelled_while_its_refund_is_on_its_way_is_kept_back_once() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let begun = app
        .paid_booking(&room_type, tomorrow() + Days::days(1), "tok_success")
        .await;
    app.wait_for_status(&begun, "CONFIRMED").await;
    app.stays_under_way().await;
    let ahead = app
        .paid_booking(&room_type, tomorrow() + Days::days(20), "tok_success")
        .await;
    app.wait_for_status(&ahead, "CONFIRMED").await;
    let held = app.payment_row_held(&ahead).await;
    let cancelled = app.cancel(&ahead, "plans-changed").await;
    assert_eq!(
        cancelled["data"]["cancelBooking"]["refundDue"]["amount"], "380.00",
        "{cancelled}"
    );
    held.until_waiting(1, true).await;
    let admin = app.admin_token().await;
    let run = run_payouts(&app, &admin, "ONCE").await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "364.80",
        "{run}"
    );
    held.release().await;
}

/// A confirmed booking of 380.00, with its payment's row held (so payment
/// records no refund of it until released).
async fn confirmed_with_its_payment_held() -> (common::TestApp, String, common::LockHeld) {
    let app = spawn_app().await;
    let id = app.confirmed_booking(20).await;
    app.stays_under_way().await;
    let held = app.payment_row_held(&id).await;
    (app, id, held)
}

/// With booking `id`'s full refund asked and waiting on its payment's row
/// (`held`): a payout run pays nothing, and once the refund is made the
/// host owes nothing.
async fn run_keeps_the_refund_back(app: &common::TestApp, id: &str, held: common::LockHeld) {
    // Payment's refund waits on the row: nothing recorded of it yet.
    held.until_waiting(1, true).await;
    let admin = app.admin_token().await;
    let ask = |query: &'static str| app.graphql_as(Some(&admin), query, json!({}));
    let preview = ask("{ hostBalances(payable: true) { amount { amount } } }").await;
    assert_eq!(preview["data"]["hostBalances"], json!([]), "{preview}");
    let run = ask("mutation { runPayouts(reference: \"KEPT-BACK\") { total { amount } } }").await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "0.00",
        "{run}"
    );
    held.release().await;
    let refunded = app
        .wait_for_booking(id, "the refund", |b| b["refunded"]["amount"] == "380.00")
        .await;
    assert_eq!(refunded["refundDue"]["amount"], "380.00", "{refunded}");
    let after = ask("{ hostBalances { amount { amount } } }").await;
    assert_eq!(
        after["data"]["hostBalances"],
        json!([]),
        "owes nothing: {after}"
    );
}

/// The same for a confirmed stay inventory could not keep (its expired
/// hold's rooms sold meanwhile): booking cancels it and asks for all of it
/// back, and a run before payment has heard keeps the host's share back
/// (the request was asked without its id on the booking, so the run did
/// not know of it and paid the host for a stay refunded in full).
#[tokio::test]
async fn a_stay_lost_to_an_expired_hold_is_kept_back_while_its_refund_is_on_its_way() {
    let (app, id, held) = confirmed_with_its_payment_held().await;
    let booking_id: shared::ids::BookingId = id.parse().expect("a booking id");
    let lost = shared::envelope::Envelope::new(
        "inventory",
        booking_id.0,
        &shared::events::HoldCommitRefused {
            booking_id,
            code: shared::ErrorCode::SoldOut,
            reason: "the room was sold after the hold expired".into(),
        },
    );
    app.publish(lost).await;
    app.wait_for_status(&id, "CANCELLED").await;
    run_keeps_the_refund_back(&app, &id, held).await;
}

/// A capture booking has not handled yet may still go back in full: here
/// the booker cancels while payment's capture is on its way to booking
/// (booking cancels it as unpaid), and a payout run in between paid the
/// host for a stay booking then refunded when the capture reached it. The
/// run keeps the host's share back until booking has handled the capture.
#[tokio::test]
async fn a_capture_booking_has_not_handled_is_not_paid_out_before_it_has() {
    let app = spawn_app().await;
    let (id, held) = app
        .cancelled_before_its_capture_is_heard(tomorrow() + Days::days(20), "unheard")
        .await;
    app.stays_under_way().await;

    let admin = app.admin_token().await;
    let ask = |query: &'static str| app.graphql_as(Some(&admin), query, json!({}));
    let owed = ask("{ hostBalances { amount { amount } } }").await;
    assert_eq!(amounts(&owed["data"]["hostBalances"]), ["364.80"], "{owed}");
    let preview = ask("{ hostBalances(payable: true) { amount { amount } } }").await;
    assert_eq!(preview["data"]["hostBalances"], json!([]), "{preview}");
    let run = ask("mutation { runPayouts(reference: \"UNHEARD\") { total { amount } } }").await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "0.00",
        "{run}"
    );

    held.release().await;
    app.wait_for_booking(&id, "the refund", |b| b["refunded"]["amount"] == "380.00")
        .await;
    let after = ask("{ hostBalances { amount { amount } } }").await;
    assert_eq!(
        after["data"]["hostBalances"],
        json!([]),
        "owes nothing, was paid nothing: {after}"
    );
}

/// A capture marked handled after a payout run asked booking for its
/// refunds — by another replica's reconciler, while the run waited for
/// its turn — is kept back from that run: booking records a capture
/// handled and the refund it asks for in one transaction, and the list the
/// run got may have left that refund out (a review found the run paying
/// the host's share: the capture counted as handled, its refund nowhere).
/// Staged at the statement: the interleaving itself needs a refund request
/// held between booking and payment, which the test cannot hold without
/// the payment's row (which the marking skips).
#[tokio::test]
async fn a_capture_marked_handled_after_a_run_asked_for_the_refunds_is_kept_back() {
    let app = spawn_app().await;
    let id = app.confirmed_booking(20).await;
    app.stays_under_way().await;
    let db = app.service_db("payment").await;
    let bus = app.app.rt.bus.clone();
    let replica = payment::messaging::Payments {
        bus: Some(std::sync::Arc::downgrade(&bus)),
        ..payment::startup::payments(
            &app.settings,
            db.clone(),
            shared::outbox::OutboxSignal::default(),
        )
    };
    // Not marked yet (whatever a round of the app's own did meanwhile).
    db.execute_unprepared("UPDATE payments SET booking_heard_at = NULL")
        .await
        .expect("unmarked");
    let asked_before = payment::storage::clock(&db).await.expect("clock");
    // Booking has handled it (CONFIRMED): the reconciler's round marks it.
    replica
        .hear_captures(bus.as_ref(), None)
        .await
        .expect("booking answers");
    let unheard = payment::storage::unheard_captures(&db, None)
        .await
        .expect("read");
    assert!(unheard.is_empty(), "marked: {unheard:?} ({id})");
    let asked_after = payment::storage::clock(&db).await.expect("clock");
    let payable = |asked_at| {
        let db = db.clone();
        async move {
            payment::storage::payable_balances(&db, chrono::Utc::now(), (&[], asked_at))
                .await
                .expect("balances")
                .into_iter()
                .map(|(_, owed, _)| owed.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(payable(asked_before).await, Vec::<String>::new());
    assert_eq!(payable(asked_after).await, ["364.80"]);
}

/// A payout run that committed is read back by a retry with its reference
/// whether or not booking answers now (an admin retrying a run whose answer
/// was lost, during a deploy of booking): the questions a run asks booking
/// are for making a run, not for reading one. Before, the retry asked
/// booking first and answered SERVICE_UNAVAILABLE. A new run still needs
/// booking, and the same reference for another period is still a mistake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_payout_run_is_read_back_while_booking_is_down() {
    use common::{spawn_child, spawn_without, test_settings};
    let settings = test_settings();
    let app = spawn_without(&settings, duikou::Part::Booking).await;
    let mut booking = spawn_child(&settings, "booking");
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let check_in = tomorrow() + Days::days(20);
    let id = app
        .create_booking_once_up(&room_type, check_in, "down")
        .await;
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let paid = app.pay(&id, "tok_success", "down").await;
    assert!(paid["errors"].is_null(), "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
    app.stays_under_way().await;
    let admin = app.admin_token().await;
    let run = |reference: &str, up_to: &str| {
        let query = format!(
            "mutation {{ runPayouts(reference: \"{reference}\", upTo: \"{up_to}\") \
             {{ reference total {{ amount }} ranAt }} }}"
        );
        let admin = admin.clone();
        let app = &app;
        async move { app.graphql_as(Some(&admin), &query, json!({})).await }
    };
    // Up to a moment past the capture, once that moment has passed.
    let up_to = a_moment_passed().await;
    let first = run("R-1", &up_to).await;
    assert_eq!(
        first["data"]["runPayouts"]["total"]["amount"], "364.80",
        "{first} ({id})"
    );

    booking.kill().await.expect("killed");
    let again = run("R-1", &up_to).await;
    assert_eq!(again["data"], first["data"], "the same run: {again}");
    let other_period = run("R-1", "2026-01-01T00:00:00Z").await;
    assert_eq!(
        code(&other_period),
        "IDEMPOTENCY_KEY_REUSED",
        "{other_period}"
    );
    let new_run = run("R-2", &up_to).await;
    assert_eq!(code(&new_run), "SERVICE_UNAVAILABLE", "{new_run}");
    assert!(
        new_run.to_string().contains("booking did not say"),
        "names the part: {new_run}"
    );
}

/// A host's share is paid once its stay is under way (from the day after
/// check-in, China time, as of the run's `upTo`): until then its booker may
/// cancel it for a full refund, and a host paid at capture was left owing
/// the platform (an exploratory run found hosts at −738.77). A stay that
/// has begun is paid as before.
#[tokio::test]
async fn a_host_is_paid_once_the_stay_is_under_way() {
    let app = spawn_app().await;
    let id = app.confirmed_booking(20).await;
    let admin = app.admin_token().await;
    let ask = |query: &'static str| app.graphql_as(Some(&admin), query, json!({}));
    let owed = ask("{ hostBalances { amount { amount } } }").await;
    assert_eq!(amounts(&owed["data"]["hostBalances"]), ["364.80"], "{owed}");
    let preview = ask("{ hostBalances(payable: true) { amount { amount } } }").await;
    assert_eq!(
        preview["data"]["hostBalances"],
        json!([]),
        "not yet: {preview}"
    );
    let before =
        ask("mutation { runPayouts(reference: \"BEFORE-STAY\") { total { amount } } }").await;
    assert_eq!(
        before["data"]["runPayouts"]["total"]["amount"], "0.00",
        "{before} ({id})"
    );
    app.stays_under_way().await;
    let during =
        ask("mutation { runPayouts(reference: \"DURING-STAY\") { total { amount } } }").await;
    assert_eq!(
        during["data"]["runPayouts"]["total"]["amount"], "364.80",
        "{during}"
    );
}

/// A run over a past period keeps back only what that period earned: a
/// stay sold after `upTo`, for a day to come, is not in what is owed up to
/// then, and holding it back from that took the period's earnings away
/// (a review: a host owed 1,000 for November, with 1,500 of January stays
/// sold in December, was paid nothing by December's run for November).
#[tokio::test]
async fn a_run_over_a_past_period_keeps_back_nothing_sold_after_it() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let earned = app
        .paid_booking(&room_type, tomorrow() + Days::days(3), "tok_success")
        .await;
    app.wait_for_status(&earned, "CONFIRMED").await;
    app.stays_under_way().await;
    let up_to = a_moment_passed().await;
    // Sold after the period, for a stay to come.
    let later = app
        .paid_booking(&room_type, tomorrow() + Days::days(30), "tok_success")
        .await;
    app.wait_for_status(&later, "CONFIRMED").await;
    // And one sold and cancelled after it: its refund is not the period's.
    let cancelled = app
        .paid_booking(&room_type, tomorrow() + Days::days(40), "tok_success")
        .await;
    app.wait_for_status(&cancelled, "CONFIRMED").await;
    app.cancel(&cancelled, "changed-plans").await;
    app.wait_for_booking(&cancelled, "refunded in full", |b| {
        b["refunded"]["amount"] == "380.00"
    })
    .await;
    // Nor is one sold after it whose refund is on its way (held up on its
    // payment's row): it took 364.80 off the period's pay.
    let on_its_way = app
        .paid_booking(&room_type, tomorrow() + Days::days(50), "tok_success")
        .await;
    app.wait_for_status(&on_its_way, "CONFIRMED").await;
    let held = app.payment_row_held(&on_its_way).await;
    app.cancel(&on_its_way, "changed-plans-too").await;
    held.until_waiting(1, true).await;
    let admin = app.admin_token().await;
    let run = app
        .graphql_as(
            Some(&admin),
            "mutation($t: DateTime!) { runPayouts(reference: \"PAST\", upTo: $t) { total { amount } } }",
            json!({ "t": up_to }),
        )
        .await;
    assert_eq!(
        run["data"]["runPayouts"]["total"]["amount"], "364.80",
        "the period's earnings: {run}"
    );
    held.release().await;
}

/// A moment in whole seconds after everything so far (an `upTo` a run
/// reads past what was just captured), once it has passed.
async fn a_moment_passed() -> String {
    let at = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true) <= at {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    at
}

/// The mark trails the clocks by an hour so that entries stamped but not
/// yet committed are after it; a transaction left open (a stuck task) is
/// ended by the server long before that, on every connection of a pool.
#[tokio::test]
async fn a_transaction_left_idle_is_ended_long_before_the_mark_passes_it() {
    use sea_orm::TransactionTrait;
    let app = spawn_app().await;
    let db = app.service_db("payment").await;
    // Two at once: two connections, each set up as it was opened.
    let open = [db.begin().await.expect("a"), db.begin().await.expect("b")];
    for txn in &open {
        let row = txn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SHOW idle_in_transaction_session_timeout",
            ))
            .await
            .expect("show")
            .expect("a row");
        let limit: String = row
            .try_get("", "idle_in_transaction_session_timeout")
            .expect("text");
        assert_eq!(limit, "10min");
    }
    assert!(Days::minutes(10) < payment::domain::MARK_BEHIND);
}
