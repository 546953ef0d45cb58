//! `duikou check` on the real servers: after bookings of every kind every
//! invariant holds; a corrupted ledger, a leaked room and spend, certified
//! spend, host income and a fund share credited that payment never took
//! are all found.

mod common;

use chrono::Duration;
use common::{TestApp, spawn_app, tomorrow};
use sea_orm::ConnectionTrait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_passes_after_real_traffic_and_finds_corruption() {
    let mut app = spawn_app().await;
    // The traveler is from 海淀区; the homestay is in 敖汉旗.
    let district = app.pair("110108", "150430").await;
    let room_type = app.homestay(3).await.room_type_id.to_string();
    let kept = app
        .paid_booking(&room_type, tomorrow() + Duration::days(12), "tok_success")
        .await;
    let cancelled = app
        .paid_booking(&room_type, tomorrow() + Duration::days(12), "tok_success")
        .await;
    // Two more paid bookings, whose captures booking is then made to have
    // not handled, and to have handled long ago unheard of by payment.
    let never_handled = app
        .paid_booking(&room_type, tomorrow() + Duration::days(13), "tok_success")
        .await;
    let unheard = app
        .paid_booking(&room_type, tomorrow() + Duration::days(13), "tok_success")
        .await;
    let unpaid = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow(), 1, "unpaid")
            .await,
    );
    app.wait_for_status(&kept, "CONFIRMED").await;
    app.wait_for_status(&cancelled, "CONFIRMED").await;
    app.wait_for_status(&unpaid, "AWAITING_PAYMENT").await;
    for id in [&never_handled, &unheard] {
        app.wait_for_status(id, "CONFIRMED").await;
    }
    app.cancel(&cancelled, "c").await;
    app.wait_for_booking(&cancelled, "the refund", |b| {
        b["refunded"]["amount"] == "380.00"
    })
    .await;
    // An admin's goodwill refund: the booking stays CONFIRMED with a second
    // ledger transaction, which is not a second capture.
    let admin = app.admin_token().await;
    let goodwill = app
        .graphql_as(
            Some(&admin),
            "mutation($b: ID!) { refundPayment(bookingId: $b, amount: \"10.00\",
                reason: \"停电\", idempotencyKey: \"goodwill\") { status } }",
            serde_json::json!({ "b": kept }),
        )
        .await;
    assert_eq!(
        goodwill["data"]["refundPayment"]["status"], "SUCCEEDED",
        "{goodwill}"
    );
    app.wait_for_booking(&kept, "the goodwill refund", |b| {
        b["refunded"]["amount"] == "10.00"
    })
    .await;

    let settings = app.app.rt.settings.clone();
    // No grace: every booking above has settled, so each is held to the
    // checks across services (a grace would leave these recent ones out).
    let grace = chrono::Duration::zero();
    // Outbox rows may still be in flight for a moment: polled until every
    // one of the eighteen holds.
    app.until_invariants_hold().await;

    // Read by a script that stops at the first line (`duikou check | head
    // -1`): it exits 0 as it found, not 101 with a panic on the pipe.
    {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duikou"))
            .args(["check", "--grace-seconds", "0"])
            .env("DUIKOU_POSTGRES_URL", common::postgres_url())
            .env("DUIKOU_AMQP_URL", common::amqp_url())
            .env("DUIKOU_DB_PREFIX", &settings.db_prefix)
            .env("DUIKOU_BUS_PREFIX", &settings.bus_prefix)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        let stdout = child.stdout.take().expect("piped");
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("a line");
        assert!(first.starts_with("invariants"), "{first}");
        let out = child.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }

    // An unbalanced ledger row and a room taken without a hold.
    app.ledger_tampered = true;
    let payment = app.service_db("payment").await;
    payment
        .execute_unprepared(
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'platform_revenue', 1, '150430', now())",
        )
        .await
        .expect("corrupted");
    // A balanced transaction that takes a yuan of the kept booking's host
    // share for the platform: every sum still holds, the fund is untouched,
    // and a payout run would pay the household short (an exploratory run of
    // the checker found it passed).
    let kept_id: uuid::Uuid = kept.parse().expect("booking id");
    payment
        .execute_unprepared(&format!(
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             SELECT t.id, '{kept_id}', l.account, l.amount, '150430', now()
             FROM (SELECT gen_random_uuid() AS id) t,
                  (SELECT (SELECT account FROM ledger_entries
                           WHERE booking_id = '{kept_id}' AND account LIKE 'host:%' LIMIT 1) AS account,
                          -100 AS amount
                   UNION ALL SELECT 'platform_revenue', 100) l"
        ))
        .await
        .expect("host short-changed");
    let inventory = app.service_db("inventory").await;
    inventory
        .execute_unprepared(
            "UPDATE room_nights SET available = available - 1
             WHERE night = (SELECT MIN(night) FROM room_nights) AND available > 0",
        )
        .await
        .expect("leaked");
    // A fen more of spend, certified spend (of a listing that is not
    // certified), host income and fund, in the pair's attributions
    // and its kept totals alike: partnership agrees with itself, not with
    // payment.
    let partnership = app.service_db("partnership").await;
    for table in ["attributions", "impact_totals"] {
        let tampered = partnership
            .execute_unprepared(&format!(
                "UPDATE {table}
                 SET spend_fen = spend_fen + 1, certified_fen = certified_fen + 1,
                     host_fen = host_fen + 1, fund_fen = fund_fen + 1
                 WHERE ctid = (SELECT ctid FROM {table} WHERE partnership_id = '{}' LIMIT 1)",
                district.id
            ))
            .await
            .expect("tampered");
        assert_eq!(tampered.rows_affected(), 1, "{table}");
    }
    // The cancelled booking's nights taken again and its refund undone, in
    // inventory's and payment's books alone: each service agrees with
    // itself, not with booking.
    let cancelled_id: uuid::Uuid = cancelled.parse().expect("booking id");
    let retaken = inventory
        .execute_unprepared(&format!(
            "UPDATE holds SET state = 'COMMITTED' WHERE booking_id = '{cancelled_id}'"
        ))
        .await
        .expect("hold tampered");
    assert_eq!(retaken.rows_affected(), 1);
    // The kept booking's hold a night longer than the booking.
    let longer = inventory
        .execute_unprepared(&format!(
            "UPDATE holds SET check_out = check_out + 1 WHERE booking_id = '{kept_id}'"
        ))
        .await
        .expect("hold tampered");
    assert_eq!(longer.rows_affected(), 1);
    let undone = payment
        .execute_unprepared(&format!(
            "UPDATE refunds SET status = 'FAILED' WHERE booking_id = '{cancelled_id}'"
        ))
        .await
        .expect("refund tampered");
    assert_eq!(undone.rows_affected(), 1);
    // The unpaid booking gone from booking's books (a restore from an
    // older backup): its rooms are held for nobody's booking.
    let booking = app.service_db("booking").await;
    for table in ["booking_history WHERE booking_id", "bookings WHERE id"] {
        booking
            .execute_unprepared(&format!("DELETE FROM {table} = '{unpaid}'"))
            .await
            .expect("forgotten");
    }
    // A capture booking never handled (its message dead-lettered), and one
    // it handled an hour ago that payment never heard of: both kept back
    // from payouts.
    payment
        .execute_unprepared(&format!(
            "UPDATE payments SET booking_heard_at = NULL
             WHERE booking_id IN ('{never_handled}', '{unheard}')"
        ))
        .await
        .expect("unmarked");
    let forgotten = booking
        .execute_unprepared(&format!(
            "DELETE FROM captures_heard WHERE booking_id = '{never_handled}'"
        ))
        .await
        .expect("capture forgotten");
    assert_eq!(forgotten.rows_affected(), 1);
    let long_ago = booking
        .execute_unprepared(&format!(
            "UPDATE captures_heard SET heard_at = now() - interval '1 hour'
             WHERE booking_id = '{unheard}'"
        ))
        .await
        .expect("capture heard long ago");
    assert_eq!(long_ago.rows_affected(), 1);
    // A confirmed booking whose total is not what payment captured (as a
    // payment made from a stale view of it would be).
    let repriced = booking
        .execute_unprepared(&format!(
            "UPDATE bookings SET total_fen = total_fen + 100 WHERE id = '{never_handled}'"
        ))
        .await
        .expect("repriced");
    assert_eq!(repriced.rows_affected(), 1);
    // The fund's public totals drifted from its entries (kept by a
    // trigger as entries are posted: here changed by hand).
    let drifted = payment
        .execute_unprepared("UPDATE fund_totals SET amount_fen = amount_fen + 1")
        .await
        .expect("fund totals drifted");
    assert!(drifted.rows_affected() > 0);
    // A payout recorded that the ledger never moved (paid again next run).
    payment
        .execute_unprepared(
            "INSERT INTO payouts (reference, host_id, amount_fen, created_at)
             VALUES ('run-lost', gen_random_uuid(), 100, now())",
        )
        .await
        .expect("a payout without its posting");
    // A host's sum kept up to the mark that its entries do not make (its
    // balance read wrong by every run after), under another region than
    // its entries' (its payouts in another region's report).
    payment
        .execute_unprepared(
            "INSERT INTO ledger_entries (txn_id, booking_id, account, amount_fen, region_code, created_at)
             VALUES (gen_random_uuid(), gen_random_uuid(),
                     'host:00000000-0000-7000-8000-0000000000aa', 30, '110108',
                     '1970-01-01T12:00:00Z')",
        )
        .await
        .expect("an entry before the mark");
    payment
        .execute_unprepared(
            "INSERT INTO host_marks (account, region_code, owed_fen, mark_at)
             VALUES ('host:00000000-0000-7000-8000-0000000000aa', '150430', 100,
                     '1970-01-02T00:00:00Z')",
        )
        .await
        .expect("a mark no entry makes");
    // A charge at the provider that no payment made.
    payment
        .execute_unprepared(
            "INSERT INTO sandbox_charges (idempotency_key, reference, amount_fen, created_at)
             VALUES ('orphan-charge', 'ch_orphan', 100, now())",
        )
        .await
        .expect("charged");
    let findings = duikou::check::run(&settings, grace)
        .await
        .expect("checks run");
    let failing: Vec<&str> = findings
        .iter()
        .filter(|f| !f.holds)
        .map(|f| f.invariant)
        .collect();
    assert_eq!(
        failing,
        [
            "capacity: taken = live holds, never over capacity",
            "each CONFIRMED booking: one capture of its total for its agency, one ledger transaction",
            "ledger: every transaction sums to zero",
            "ledger: each booking's postings follow its splits",
            // The refund undone shows in payment's own books too.
            "welfare fund: balance = fund shares of captures less refunds",
            // Payment still counts the undone refund as refunded.
            "payment: each payment's refunded total = its refunds made or under way",
            "payouts: each host's payouts = the ledger's postings to the payout account, each host's mark = its entries before it",
            "provider: one charge per captured payment, refunds agree",
            "impact: credited spend, certified spend, host income and fund = payment's, booking by booking",
            "holds follow bookings: CONFIRMED is COMMITTED for what it booked, an ended booking and a cancelled departure hold nothing",
            "money follows bookings: refunds agree, an ended booking keeps only what it may",
            "nothing for unknown bookings: no money kept, no capacity held for a booking booking lacks",
            "payouts: no capture kept back past booking's handling and payment's next round"
        ],
        "{findings:#?}"
    );
    let fund = findings
        .iter()
        .find(|f| f.invariant.starts_with("welfare fund"))
        .expect("the fund's finding");
    assert!(
        fund.detail.contains("the fund's kept totals say"),
        "{fund:#?}"
    );
    // The offender named, so an operator can find it among many listings.
    let capacity = findings
        .iter()
        .find(|f| f.invariant.starts_with("capacity"))
        .expect("the capacity check ran");
    assert!(capacity.detail.contains("room type "), "{capacity:#?}");
    let holds = findings
        .iter()
        .find(|f| f.invariant.starts_with("holds follow"))
        .expect("the holds check ran");
    assert!(
        holds
            .detail
            .contains(&format!("{kept_id} CONFIRMED for 1 room(s) of ")),
        "{holds:#?}"
    );
    let postings = findings
        .iter()
        .find(|f| f.invariant.starts_with("ledger: each booking"))
        .expect("the postings check ran");
    assert!(
        postings.detail.contains(&format!("{kept_id}: host:")),
        "{postings:#?}"
    );
    assert!(
        postings.detail.contains(&format!("{cancelled_id}: ")),
        "the undone refund's postings: {postings:#?}"
    );
    let provider = findings
        .iter()
        .find(|f| f.invariant.starts_with("provider"))
        .expect("the provider check ran");
    assert!(
        provider
            .detail
            .contains("charge orphan-charge (100 fen) belongs to a payment that does not exist"),
        "{provider:#?}"
    );
    let captured = findings
        .iter()
        .find(|f| f.invariant.starts_with("each CONFIRMED booking"))
        .expect("the capture check ran");
    assert!(
        captured
            .detail
            .contains(&format!("{never_handled}: captured 38000 fen")),
        "{captured:#?}"
    );
    let paid = findings
        .iter()
        .find(|f| f.invariant.starts_with("payouts: each host's payouts"))
        .expect("the payouts' postings check ran");
    assert!(
        paid.detail
            .contains("payouts recorded 100 fen, the ledger moved 0 fen")
            && paid
                .detail
                .contains("the payout account holds 0 fen, payouts recorded 100 fen")
            && paid.detail.contains(
                "host:00000000-0000-7000-8000-0000000000aa: kept 100 fen up to the hosts' mark, \
                 the entries before it sum to 30 fen"
            )
            && paid.detail.contains(
                "host:00000000-0000-7000-8000-0000000000aa: kept under region 150430, \
                 its entries before the mark are of 110108"
            ),
        "{paid:#?}"
    );
    let payouts = findings
        .iter()
        .find(|f| f.invariant.starts_with("payouts: no capture kept back"))
        .expect("the payouts check ran");
    for (booking, why) in [
        (&never_handled, "booking has not handled its capture"),
        (&unheard, "booking handled its capture at"),
    ] {
        assert!(
            payouts
                .detail
                .contains(&format!("of booking {booking}: {why}")),
            "{booking}: {payouts:#?}"
        );
    }
    assert!(payouts.detail.starts_with("2 offenders"), "{payouts:#?}");
    let money = findings
        .iter()
        .find(|f| f.invariant.starts_with("impact: credited spend"))
        .expect("the money check ran");
    for figure in [
        "fen spend",
        "fen certified spend",
        "fen host income",
        "fen fund",
    ] {
        assert!(money.detail.contains(figure), "{figure}: {money:#?}");
    }
    // A row it cannot read (a newer release's variant, a hand's mistake):
    // the error names the row, not only the parser's words.
    booking
        .execute_unprepared(&format!(
            "UPDATE bookings SET item = '{{\"kind\":\"ROOM_NIGHT\"}}' WHERE id = '{kept_id}'"
        ))
        .await
        .expect("item garbled");
    let unreadable = duikou::check::run(&settings, grace)
        .await
        .expect_err("cannot check");
    let said = format!("{unreadable:#}");
    assert!(
        said.contains(&format!("the item of booking {kept_id} cannot be read"))
            && said.contains("ROOM_NIGHT"),
        "{said}"
    );
}

/// The checker reads: pointed at databases that do not exist (a mistyped
/// prefix), it says so and creates none.
#[tokio::test]
async fn the_checker_creates_no_database_it_does_not_find() {
    let app = spawn_app().await;
    let mut settings = (*app.app.rt.settings).clone();
    settings.db_prefix = format!("{}typo_", settings.db_prefix);
    let refused = duikou::check::run(&settings, Duration::seconds(60))
        .await
        .expect_err("no databases to check");
    assert!(
        format!("{refused:#}").contains("creates nothing"),
        "{refused:#}"
    );
    let inventory = app.service_db("inventory").await;
    let created = common::count_of(
        &inventory,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_database WHERE datname LIKE $1",
        vec![format!("{}%", settings.db_prefix).into()],
    )
    .await;
    assert_eq!(created, 0);
}

/// A database created but never migrated (a `migrate` that stopped before
/// it) is said to be so, with what to do, not read as a missing table.
#[tokio::test]
async fn a_database_never_migrated_is_said_to_need_migrate() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let mut settings = (*app.app.rt.settings).clone();
    settings.db_prefix = format!("{}bare_", settings.db_prefix);
    let bare = shared::db::database_name(&settings, "inventory");
    let admin = sea_orm::Database::connect(common::postgres_url())
        .await
        .expect("postgres");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{bare}\""))
        .await
        .expect("created");
    let refused = duikou::check::run(&settings, Duration::seconds(60)).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{bare}\" WITH (FORCE)"))
        .await
        .expect("dropped");
    let refused = format!("{:#}", refused.expect_err("nothing to check"));
    assert!(
        refused.contains(&bare) && refused.contains("run `duikou migrate`"),
        "{refused}"
    );
    assert!(!refused.contains("DUIKOU_DB_PREFIX"), "{refused}");
}

/// A database a migration of this release has not reached (checked
/// before `duikou migrate`, in an upgrade) is said to need it, not failed
/// on a table the invariants read (payment's `fund_totals` was "relation
/// does not exist"); migrated, it is checked.
#[tokio::test]
async fn a_database_behind_or_ahead_of_this_release_is_refused() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let settings = (*app.app.rt.settings).clone();
    let payment = app.service_db("payment").await;
    let refusal = || async {
        let refused = duikou::check::run(&settings, Duration::seconds(60)).await;
        format!("{:#}", refused.expect_err("refused"))
    };
    payment
        .execute_unprepared(
            "DELETE FROM seaql_migrations WHERE version = 'm20261207_000004_host_marks'",
        )
        .await
        .expect("a migration undone on record");
    let refused = refusal().await;
    assert!(
        refused.contains("payment's database is behind this release: 1 migration(s) not applied, from m20261207_000004_host_marks")
            && refused.contains("run `duikou migrate`"),
        "{refused}"
    );
    payment
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20261207_000004_host_marks', 0)",
        )
        .await
        .expect("on record again");
    duikou::check::run(&settings, Duration::seconds(60))
        .await
        .expect("checked");
    // Ahead of this check (a later release's migration on record): refused
    // too, naming it, rather than checked by rules it may have outgrown.
    payment
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20991231_000001_later', 0)",
        )
        .await
        .expect("a later migration on record");
    let refused = refusal().await;
    assert!(
        refused.contains(
            "payment's database was migrated by a later release (m20991231_000001_later)"
        ),
        "{refused}"
    );
}

/// Pointed at the right databases but a mistyped bus prefix, the checker
/// does not read the dead-letter queues it cannot find as empty.
#[tokio::test]
async fn a_wrong_bus_prefix_cannot_be_checked_not_read_as_no_dead_letters() {
    let app = spawn_app().await;
    let mut settings = (*app.app.rt.settings).clone();
    let right = duikou::check::run(&settings, Duration::seconds(60))
        .await
        .expect("checked");
    assert!(
        right
            .iter()
            .any(|f| f.invariant.starts_with("dead letters") && f.holds)
    );
    settings.bus_prefix = format!("{}typo.", settings.bus_prefix);
    let refused = duikou::check::run(&settings, Duration::seconds(60))
        .await
        .expect_err("no dead-letter queues under that prefix");
    assert!(
        format!("{refused:#}").contains("DUIKOU_BUS_PREFIX"),
        "{refused:#}"
    );
}

/// A charge whose answer was lost leaves its payment PROCESSING until the
/// reconciler asks (a minute by default): within the grace period that is
/// work in flight, not a provider that disagrees with the payments. An
/// exploratory run saw `check` fail on it while the docs call it no
/// offence.
#[tokio::test]
async fn a_charge_awaiting_its_answer_is_in_flight_within_the_grace() {
    let app = spawn_app().await;
    app.charged_unanswered().await;
    let provider = |findings: Vec<duikou::check::Finding>| {
        findings
            .into_iter()
            .find(|f| f.invariant.starts_with("provider"))
            .expect("the provider is checked")
    };
    let settings = &app.app.rt.settings;
    let within = duikou::check::run(settings, Duration::minutes(2))
        .await
        .expect("checks run");
    let within = provider(within);
    assert!(within.holds, "{within:?}");
    let past = provider(
        duikou::check::run(settings, Duration::zero())
            .await
            .expect("checks run"),
    );
    assert!(
        !past.holds && past.detail.contains("PROCESSING"),
        "{past:?}"
    );
}

/// `duikou check` that cannot check at all (here: no databases where the
/// settings point) exits 2, not the 1 of an invariant that fails, so that
/// monitoring tells a configuration fault from an inconsistency.
#[test]
fn a_check_that_cannot_check_exits_2() {
    let data_dir = std::env::temp_dir().join(format!("duikou-nothing-{}", uuid::Uuid::now_v7()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duikou"))
        .arg("check")
        .env("DUIKOU_DATA_DIR", &data_dir)
        .env_remove("DUIKOU_POSTGRES_URL")
        .env_remove("DUIKOU_AMQP_URL")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not check"),
        "{out:?}"
    );
    assert!(!data_dir.exists(), "check creates nothing");
    // Settings that cannot be read are not a broken invariant either.
    for (name, value) in [
        ("DUIKOU_RATE_LIMIT", "x"),
        ("DUIKOU_CONFIG", "/nowhere/duikou.toml"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_duikou"))
            .arg("check")
            .env("DUIKOU_DATA_DIR", &data_dir)
            .env(name, value)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
    }
}

/// `check` and `migrate` given PostgreSQL without RabbitMQ refuse as `serve`
/// does, rather than checking SQLite files or migrating half a deployment.
#[test]
fn check_and_migrate_refuse_one_server_url_without_the_other() {
    let data_dir = std::env::temp_dir().join(format!("duikou-half-{}", uuid::Uuid::now_v7()));
    for (command, code) in [("check", 2), ("migrate", 1)] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_duikou"))
            .arg(command)
            .env("DUIKOU_DATA_DIR", &data_dir)
            .env("DUIKOU_POSTGRES_URL", "postgres://root@127.0.0.1:5432")
            .env_remove("DUIKOU_AMQP_URL")
            // A refusal is one line, not a crash's stack trace, whatever
            // the operator's shell sets.
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(code), "{command}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("go together"), "{command}: {out:?}");
        assert!(!said.contains("backtrace"), "{command}: {said}");
    }
    assert!(!data_dir.exists(), "nothing created");
}
