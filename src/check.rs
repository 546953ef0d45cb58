//! `duikou check`: the invariants that must hold across the services'
//! databases and the broker, whatever crashed, was redelivered or raced.
//! Read-only (it creates no database either); run it alone on a quiet system, or after a chaos run once the
//! load has stopped and `settle` has passed.
//!
//! 1. Capacity: on every night and departure, what is taken (capacity less
//!    available) equals what live holds (HELD, COMMITTED) say they took —
//!    never more than capacity, and nothing leaked or held twice.
//! 2. Sagas end: no booking PENDING or AWAITING_PAYMENT for longer than its
//!    hold and the grace period (AWAITING_PAYMENT: and the wait for a
//!    payment in flight).
//! 3. Money: each CONFIRMED booking has exactly one CAPTURED payment and one
//!    ledger transaction; every ledger transaction sums to zero; each
//!    booking's postings, account by account (its host's, the platform's,
//!    the fund's, an agency's, clearing), are its captures' splits less its
//!    refunds' reversed splits; no payment
//!    is left PROCESSING longer than the grace period; the welfare fund's
//!    balance is the fund shares of the captures less those of the refunds;
//!    the provider's books (the sandbox's) agree with the payments: one
//!    charge per captured payment, for its amount, and none for any other,
//!    and refunds at the provider equal the refunds that succeeded.
//! 4. Impact: every partnership's kept monthly totals equal the
//!    recomputation from its raw attribution records, and the tourists and
//!    bookings it was credited equal the CONFIRMED bookings (in booking's
//!    own database) whose sponsor region lies in its sponsor and whose
//!    listing lies in its beneficiary; and the spend, host income and
//!    welfare-fund share it was credited equal, over the bookings that were
//!    ever confirmed there, the gross, host and fund shares payment
//!    captured less those it refunded.
//! 5. Messaging: no outbox row older than the grace period; dead-letter
//!    queues empty (on RabbitMQ).
//! 6. Across services, for every booking that last moved before the grace
//!    period: inventory's hold follows booking's decision (a CONFIRMED
//!    booking's hold COMMITTED, holding what it booked; an ended booking's neither HELD nor
//!    COMMITTED), and the money does too (booking's refunded figure is
//!    payment's succeeded refunds; a REJECTED or EXPIRED booking, or one
//!    cancelled before it was paid, keeps nothing it captured; a cancelled
//!    paid booking got at least the refund it was promised); no refund is
//!    left PENDING past the grace period.
//! 7. Payouts: every capture older than the grace period was handled by
//!    booking, and heard of by payment within two reconciler rounds of
//!    that: until then payout runs keep its host's share back.

use chrono::{Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Value};
use shared::config::Settings;
use std::collections::{BTreeMap, BTreeSet};

/// One invariant's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// What was checked.
    pub invariant: &'static str,
    /// Whether it holds.
    pub holds: bool,
    /// Counts, or the first offenders when it does not hold.
    pub detail: String,
}

struct Dbs {
    inventory: DatabaseConnection,
    booking: DatabaseConnection,
    payment: DatabaseConnection,
    partnership: DatabaseConnection,
}

async fn rows(
    db: &DatabaseConnection,
    sql: &str,
    values: Vec<Value>,
) -> anyhow::Result<Vec<QueryResult>> {
    let b = db.get_database_backend();
    Ok(db
        .query_all_raw(shared::outbox::stmt(b, sql, values))
        .await?)
}

async fn count(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> anyhow::Result<i64> {
    let found = rows(db, sql, values).await?;
    Ok(match found.first() {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    })
}

/// `text`, a row's JSON, read as a `T`, or an error naming the row: one
/// unreadable row (corrupted by hand, or a newer release's variant read by
/// an older check) said where it is, not only the parser's words.
fn json_of<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
    id: uuid::Uuid,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    serde_json::from_str(text).with_context(|| format!("{what} {id} cannot be read ({text:.200})"))
}

fn finding(invariant: &'static str, offenders: Vec<String>, ok_detail: String) -> Finding {
    Finding {
        invariant,
        holds: offenders.is_empty(),
        detail: if offenders.is_empty() {
            ok_detail
        } else {
            let shown: Vec<&str> = offenders.iter().take(5).map(String::as_str).collect();
            format!("{} offenders, e.g. {}", offenders.len(), shown.join("; "))
        },
    }
}

/// Refuses, saying to migrate, a database `service`'s migrations `M` are
/// not all applied to (the invariants read what they add: an upgrade
/// checked before its `duikou migrate` failed on a missing table); and one
/// a later release migrated (its invariants may read what this check does
/// not know, and call good data broken). Read from `seaql_migrations`
/// directly: the check writes nothing.
async fn migrated<M: sea_orm_migration::MigratorTrait>(
    db: &DatabaseConnection,
    service: &str,
) -> anyhow::Result<()> {
    let applied: BTreeSet<String> = rows(db, "SELECT version FROM seaql_migrations", vec![])
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "version"))
        .collect::<Result<_, _>>()?;
    let known: Vec<String> = M::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let pending: Vec<&String> = known
        .iter()
        .filter(|name| !applied.contains(*name))
        .collect();
    if let Some(first) = pending.first() {
        anyhow::bail!(
            "{service}'s database is behind this release: {} migration(s) not applied, from \
             {first}: run `duikou migrate` with the services' settings first",
            pending.len()
        );
    }
    if let Some(newer) = applied.iter().rfind(|name| !known.contains(name)) {
        anyhow::bail!(
            "{service}'s database was migrated by a later release ({newer}): check it with the \
             services' release of duikou"
        );
    }
    Ok(())
}

/// Checks every invariant; `grace` is how long a saga step or an outbox row
/// may legitimately still be in flight.
pub async fn run(settings: &Settings, grace: Duration) -> anyhow::Result<Vec<Finding>> {
    let open = |service: &'static str| async move {
        let name = shared::db::database_name(settings, service);
        let db = match shared::db::connect_existing(settings, service).await {
            Ok(db) => db,
            // The prefix is the likely mistake only when the server answered
            // that there is no such database.
            Err(e)
                if e.to_string()
                    .contains(&format!("database \"{name}\" does not exist"))
                    || e.to_string().contains("no database") =>
            {
                anyhow::bail!(
                    "{service}'s database {name}: {e} (check reads, it creates nothing: is \
                     DUIKOU_DB_PREFIX ({:?}) the one the services run with?)",
                    settings.db_prefix
                )
            }
            Err(e) => anyhow::bail!("{service}'s database {name}: {e}"),
        };
        // Created but never migrated (a `migrate` that stopped, another
        // release's prefix): said here, not as a missing table later.
        if let Err(e) = rows(&db, "SELECT 1 AS one FROM seaql_migrations LIMIT 1", vec![]).await {
            anyhow::bail!(
                "{service}'s database {name} has no migrations applied ({e}): run `duikou \
                 migrate` with the services' settings first"
            );
        }
        anyhow::Ok(db)
    };
    let dbs = Dbs {
        inventory: open("inventory").await?,
        booking: open("booking").await?,
        payment: open("payment").await?,
        partnership: open("partnership").await?,
    };
    migrated::<inventory::storage::Migrator>(&dbs.inventory, "inventory").await?;
    migrated::<booking::storage::Migrator>(&dbs.booking, "booking").await?;
    migrated::<payment::storage::Migrator>(&dbs.payment, "payment").await?;
    migrated::<partnership::storage::Migrator>(&dbs.partnership, "partnership").await?;
    let cutoff = Utc::now() - grace;
    let [impact_counts, impact_money] = impact_matches_bookings_and_payments(&dbs).await?;
    let mut out = vec![
        capacity(&dbs.inventory).await?,
        // A booking whose payment is in flight is kept past its deadline.
        sagas_end(
            &dbs.booking,
            cutoff,
            cutoff - chrono::Duration::seconds(settings.payment_wait_in_effect()),
        )
        .await?,
        one_capture_per_confirmed_booking(&dbs).await?,
        balanced_ledger(&dbs.payment).await?,
        ledger_follows_splits(&dbs.payment).await?,
        no_stuck_payment(&dbs.payment, cutoff).await?,
        fund_matches_splits(&dbs.payment).await?,
        refunds_reserved_match(&dbs.payment).await?,
        payouts_follow_the_ledger(&dbs.payment).await?,
        provider_matches_payments(&dbs.payment, cutoff).await?,
        impact_totals(&dbs.partnership).await?,
        impact_counts,
        impact_money,
        outboxes_drained(&dbs, cutoff).await?,
    ];
    let settled = settled_bookings(&dbs.booking, cutoff).await?;
    out.push(holds_follow_bookings(&dbs, &settled, cutoff).await?);
    out.push(money_follows_bookings(&dbs, &settled, cutoff).await?);
    out.push(nothing_for_unknown_bookings(&dbs).await?);
    out.push(
        captures_heard(
            &dbs,
            cutoff,
            Duration::from_std(settings.reconcile_round())?,
        )
        .await?,
    );
    // Said in embedded mode too, as not applying: a line left out read as
    // one more invariant missing, and scripts count the lines.
    out.push(match settings.amqp() {
        Some(amqp) => dead_letters(amqp, settings).await?,
        None => finding(
            DEAD_LETTERS,
            vec![],
            "none to look at: the in-process bus keeps no dead-letter queues (embedded mode; \
             its dead letters are logged)"
                .into(),
        ),
    });
    for db in [dbs.inventory, dbs.booking, dbs.payment, dbs.partnership] {
        let _ = db.close().await;
    }
    Ok(out)
}

async fn capacity(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let nights = rows(
        db,
        // One grouped join over the live holds (a subquery per night read
        // every hold once per night: nights × holds on a real catalogue).
        "SELECT n.room_type_id AS what, n.night, n.rooms AS capacity,
                n.rooms - n.available AS taken,
                CAST(COALESCE(SUM(h.rooms), 0) AS BIGINT) AS held
         FROM room_nights n
         LEFT JOIN holds h
           ON h.room_type_id = n.room_type_id AND h.state IN ('HELD', 'COMMITTED')
          AND h.check_in <= n.night AND h.check_out > n.night
         GROUP BY n.room_type_id, n.night, n.rooms, n.available",
        vec![],
    )
    .await?;
    let departures = rows(
        db,
        "SELECT d.id AS what, d.starts_on AS night, d.seats AS capacity,
                d.seats - d.available AS taken,
                CAST(COALESCE(SUM(h.rooms), 0) AS BIGINT) AS held
         FROM departures d
         LEFT JOIN holds h ON h.departure_id = d.id AND h.state IN ('HELD', 'COMMITTED')
         GROUP BY d.id, d.starts_on, d.seats, d.available",
        vec![],
    )
    .await?;
    let mut offenders = Vec::new();
    for (kind, r) in nights
        .iter()
        .map(|r| ("room type", r))
        .chain(departures.iter().map(|r| ("departure", r)))
    {
        let taken: i64 = r.try_get::<i32>("", "taken").map(i64::from)?;
        let held: i64 = r
            .try_get::<i64>("", "held")
            .or_else(|_| r.try_get::<i32>("", "held").map(i64::from))?;
        if taken != held {
            let night: chrono::NaiveDate = r.try_get("", "night")?;
            let what = shared::db::row_uuid(r, "what")?;
            let capacity: i64 = r.try_get::<i32>("", "capacity").map(i64::from)?;
            let over = if held > capacity {
                format!(" (over capacity by {})", held - capacity)
            } else {
                String::new()
            };
            offenders.push(format!(
                "{kind} {what}, {night}: taken {taken} of {capacity}, holds say {held}{over}"
            ));
        }
    }
    Ok(finding(
        "capacity: taken = live holds, never over capacity",
        offenders,
        format!(
            "{} nights and {} departures agree",
            nights.len(),
            departures.len()
        ),
    ))
}

async fn sagas_end(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
    awaiting_cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Finding> {
    let stuck = rows(
        db,
        "SELECT id, status FROM bookings
         WHERE (status = 'PENDING' AND updated_at < $1)
            OR (status = 'AWAITING_PAYMENT' AND expires_at < $2)",
        vec![cutoff.into(), awaiting_cutoff.into()],
    )
    .await?;
    let offenders = stuck
        .iter()
        .map(|r| {
            let id = shared::db::row_uuid(r, "id")?;
            let status: String = r.try_get("", "status")?;
            Ok(format!("{id} {status}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total = count(
        db,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM bookings",
        vec![],
    )
    .await?;
    Ok(finding(
        "sagas end: nothing PENDING or AWAITING_PAYMENT past its time",
        offenders,
        format!("{total} bookings"),
    ))
}

async fn one_capture_per_confirmed_booking(dbs: &Dbs) -> anyhow::Result<Finding> {
    let confirmed = rows(
        &dbs.booking,
        "SELECT id, total_fen, agency_id FROM bookings WHERE status = 'CONFIRMED'",
        vec![],
    )
    .await?;
    // What payment captured for each, and for whom: its total, its agency
    // (payment takes both from the booking's view the gateway sent; a
    // stale or wrong one paid another amount, or the commission to no
    // agency, with every sum in payment's books still agreeing).
    let captured: BTreeMap<uuid::Uuid, (i64, Option<uuid::Uuid>)> = rows(
        &dbs.payment,
        "SELECT booking_id, amount_fen, agency_id FROM payments WHERE status = 'CAPTURED'",
        vec![],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            shared::db::row_uuid(r, "booking_id")?,
            (
                r.try_get::<i64>("", "amount_fen")?,
                shared::db::opt_row_uuid(r, "agency_id")?,
            ),
        ))
    })
    .collect::<anyhow::Result<_>>()?;
    let captures = by_booking(
        &dbs.payment,
        "SELECT booking_id, CAST(COUNT(*) AS BIGINT) AS n FROM payments
         WHERE status = 'CAPTURED' GROUP BY booking_id",
    )
    .await?;
    let ledger = by_booking(
        &dbs.payment,
        // A capture's transaction takes the gross out of clearing; a
        // refund's (an admin's partial one leaves the booking CONFIRMED)
        // puts it back and is not counted here.
        "SELECT booking_id, CAST(COUNT(DISTINCT txn_id) AS BIGINT) AS n FROM ledger_entries
         WHERE account = 'traveler_clearing' AND amount_fen < 0
         GROUP BY booking_id",
    )
    .await?;
    let mut offenders = Vec::new();
    for r in &confirmed {
        let id = shared::db::row_uuid(r, "id")?;
        let (c, l) = (
            captures.get(&id).copied().unwrap_or(0),
            ledger.get(&id).copied().unwrap_or(0),
        );
        if c != 1 || l != 1 {
            offenders.push(format!("{id}: {c} captures, {l} ledger transactions"));
            continue;
        }
        let total: Option<i64> = r.try_get("", "total_fen")?;
        let agency = shared::db::opt_row_uuid(r, "agency_id")?;
        // A payment with no agency is one of a booking without, or one
        // recorded before payments kept theirs: only the amount is compared
        // (a commission it posted to no agency shows below).
        if let Some((amount, paid_for)) = captured.get(&id)
            && (Some(*amount) != total || paid_for.is_some() && *paid_for != agency)
        {
            offenders.push(format!(
                "{id}: captured {amount} fen for agency {paid_for:?}, booking says {total:?} fen \
                 for agency {agency:?}"
            ));
        }
    }
    // A commission posted to no agency (`agency:unknown`, where a capture
    // whose split has an agency share but no agency puts it).
    for r in rows(
        &dbs.payment,
        "SELECT DISTINCT booking_id FROM ledger_entries WHERE account = 'agency:unknown'",
        vec![],
    )
    .await?
    {
        offenders.push(format!(
            "{}: a commission posted to no agency (agency:unknown)",
            shared::db::row_uuid(&r, "booking_id")?
        ));
    }
    Ok(finding(
        "each CONFIRMED booking: one capture of its total for its agency, one ledger transaction",
        offenders,
        format!("{} confirmed bookings", confirmed.len()),
    ))
}

async fn balanced_ledger(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let unbalanced = rows(
        db,
        "SELECT txn_id, CAST(SUM(amount_fen) AS BIGINT) AS total FROM ledger_entries
         GROUP BY txn_id HAVING SUM(amount_fen) <> 0",
        vec![],
    )
    .await?;
    let offenders = unbalanced
        .iter()
        .map(|r| {
            let total: i64 = r.try_get("", "total")?;
            Ok(format!(
                "{} sums to {total} fen",
                shared::db::row_uuid(r, "txn_id")?
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let txns = count(
        db,
        "SELECT CAST(COUNT(DISTINCT txn_id) AS BIGINT) AS n FROM ledger_entries",
        vec![],
    )
    .await?;
    Ok(finding(
        "ledger: every transaction sums to zero",
        offenders,
        format!("{txns} transactions balanced"),
    ))
}

/// Each booking's postings, account by account, are what its captures'
/// splits give less its refunds' reversed splits: a transaction that pays
/// the host less than its split and the platform more still balances and
/// leaves the fund alone, and payout runs pay hosts from these accounts.
/// (Payouts post under no booking.)
async fn ledger_follows_splits(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    use shared::ids::{AgencyId, HostId};
    type Books = BTreeMap<uuid::Uuid, BTreeMap<String, i64>>;
    let (mut expected, mut posted): (Books, Books) = Default::default();
    let mut unknown = BTreeSet::new();
    let mut offenders = Vec::new();
    // One statement, so one snapshot: a capture committing between two
    // reads would show its postings without its split, or the other way.
    let found = rows(
        db,
        "SELECT 'capture' AS what, p.id AS payment, p.booking_id, p.host_id, p.agency_id, p.split,
                CAST(NULL AS TEXT) AS account, CAST(NULL AS BIGINT) AS n
         FROM payments p WHERE p.status = 'CAPTURED'
         UNION ALL
         SELECT 'refund', p.id, r.booking_id, p.host_id, p.agency_id, r.split, NULL, NULL
         FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.status = 'SUCCEEDED'
         UNION ALL
         SELECT 'posted', NULL, booking_id, NULL, NULL, NULL, account, CAST(SUM(amount_fen) AS BIGINT)
         FROM ledger_entries GROUP BY booking_id, account",
        vec![],
    )
    .await?;
    for r in &found {
        let what: String = r.try_get("", "what")?;
        let booking = shared::db::row_uuid(r, "booking_id")?;
        if what == "posted" {
            // Payouts post under no booking.
            if !booking.is_nil() {
                posted
                    .entry(booking)
                    .or_default()
                    .insert(r.try_get("", "account")?, r.try_get("", "n")?);
            }
            continue;
        }
        let payment = shared::db::row_uuid(r, "payment")?;
        let split: Option<String> = r.try_get("", "split")?;
        let (Some(host), Some(split)) = (shared::db::opt_row_uuid(r, "host_id")?, split) else {
            // Recorded before payments kept them (payouts and the fund
            // leave these out too): nothing to compare with.
            tracing::debug!(%payment, "a {what} with no host or split; its booking not compared");
            unknown.insert(booking);
            continue;
        };
        let split: shared::money::Split = json_of(&split, "the split of payment", payment)?;
        let agency = shared::db::opt_row_uuid(r, "agency_id")?.map(AgencyId);
        let legs = if what == "capture" {
            payment::domain::capture_legs(&split, HostId(host), agency)
        } else {
            payment::domain::refund_legs(&split, HostId(host), agency)
        };
        let accounts = expected.entry(booking).or_default();
        for (account, amount) in legs {
            *accounts.entry(account).or_default() += amount.get();
        }
    }
    let none = BTreeMap::new();
    let bookings: BTreeSet<&uuid::Uuid> = expected
        .keys()
        .chain(posted.keys())
        .filter(|b| !unknown.contains(*b))
        .collect();
    for booking in &bookings {
        let (want, got) = (
            expected.get(booking).unwrap_or(&none),
            posted.get(booking).unwrap_or(&none),
        );
        let accounts: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        let differs = accounts.into_iter().find_map(|account| {
            let (w, g) = (
                want.get(account).copied().unwrap_or(0),
                got.get(account).copied().unwrap_or(0),
            );
            (w != g)
                .then(|| format!("{booking}: {account} posted {g} fen, its splits give {w} fen"))
        });
        offenders.extend(differs);
    }
    Ok(finding(
        "ledger: each booking's postings follow its splits",
        offenders,
        if unknown.is_empty() {
            format!("{} bookings' postings agree", bookings.len())
        } else {
            format!(
                "{} bookings' postings agree ({} paid before payments kept their splits, not compared)",
                bookings.len(),
                unknown.len()
            )
        },
    ))
}

async fn fund_matches_splits(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let fund_share = |rows: &[QueryResult]| -> anyhow::Result<i64> {
        rows.iter().try_fold(0i64, |sum, r| {
            let split: Option<String> = r.try_get("", "split")?;
            let fund = match split {
                Some(s) => json_of::<shared::money::Split>(
                    &s,
                    "a split of booking",
                    shared::db::row_uuid(r, "booking_id")?,
                )?
                .fund
                .get(),
                None => 0,
            };
            Ok(sum + fund)
        })
    };
    let captured = fund_share(
        &rows(
            db,
            "SELECT booking_id, split FROM payments WHERE status = 'CAPTURED'",
            vec![],
        )
        .await?,
    )?;
    let refunded = fund_share(
        &rows(
            db,
            "SELECT booking_id, split FROM refunds WHERE status = 'SUCCEEDED'",
            vec![],
        )
        .await?,
    )?;
    let balance = count(
        db,
        "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS n FROM ledger_entries WHERE account = 'welfare_fund'",
        vec![],
    )
    .await?;
    let expected = captured - refunded;
    let mut offenders = if balance == expected {
        Vec::new()
    } else {
        vec![format!(
            "fund entries sum to {balance} fen, captures less refunds give {expected} fen"
        )]
    };
    // The public figures read the totals the database keeps as fund entries
    // are posted (`fund_totals`): region by region, they are the entries'.
    let drifted = rows(
        db,
        "SELECT COALESCE(l.region_code, k.region_code) AS region_code,
                COALESCE(l.amount, 0) AS posted, COALESCE(l.entries, 0) AS posted_entries,
                COALESCE(k.amount, 0) AS kept, COALESCE(k.entries, 0) AS kept_entries
         FROM (SELECT region_code, CAST(SUM(amount_fen) AS BIGINT) AS amount,
                      CAST(SUM(CASE WHEN amount_fen <> 0 THEN 1 ELSE 0 END) AS BIGINT) AS entries
               FROM ledger_entries WHERE account = 'welfare_fund' GROUP BY region_code) l
         FULL OUTER JOIN
              (SELECT region_code, CAST(SUM(amount_fen) AS BIGINT) AS amount,
                      CAST(SUM(entries) AS BIGINT) AS entries
               FROM fund_totals GROUP BY region_code) k ON k.region_code = l.region_code
         WHERE COALESCE(l.amount, 0) <> COALESCE(k.amount, 0)
            OR COALESCE(l.entries, 0) <> COALESCE(k.entries, 0)
         ORDER BY 1",
        vec![],
    )
    .await?;
    for r in &drifted {
        offenders.push(format!(
            "region {}: the fund's kept totals say {} fen over {} entries, its entries {} fen over {}",
            r.try_get::<String>("", "region_code")?,
            r.try_get::<i64>("", "kept")?,
            r.try_get::<i64>("", "kept_entries")?,
            r.try_get::<i64>("", "posted")?,
            r.try_get::<i64>("", "posted_entries")?,
        ));
    }
    Ok(finding(
        "welfare fund: balance = fund shares of captures less refunds",
        offenders,
        format!("{expected} fen"),
    ))
}

/// What payment counts as refunded of each payment (`refunded_fen`: the
/// reservation every refund, payout and cancellation's share is taken
/// against) is the sum of its refunds made or under way. A drift would
/// refund a traveler less than the policy (a share of too little left), or
/// let more than was paid go back, with every other check holding.
async fn refunds_reserved_match(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let drifted = rows(
        db,
        "SELECT p.id, p.refunded_fen AS reserved,
                CAST(COALESCE(SUM(r.amount_fen), 0) AS BIGINT) AS refunds
         FROM payments p
         LEFT JOIN refunds r ON r.payment_id = p.id AND r.status IN ('PENDING', 'SUCCEEDED')
         GROUP BY p.id, p.refunded_fen
         HAVING p.refunded_fen <> COALESCE(SUM(r.amount_fen), 0)",
        vec![],
    )
    .await?;
    let offenders = drifted
        .iter()
        .map(|r| {
            Ok(format!(
                "payment {} counts {} fen refunded, its refunds {} fen",
                shared::db::row_uuid(r, "id")?,
                r.try_get::<i64>("", "reserved")?,
                r.try_get::<i64>("", "refunds")?
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let payments = shared::db::count(db, "payments", vec![]).await?;
    Ok(finding(
        "payment: each payment's refunded total = its refunds made or under way",
        offenders,
        format!("{payments} payments"),
    ))
}

/// Every charge the provider holds is a CAPTURED payment's, of its amount,
/// and refunded there as much as the SUCCEEDED refunds say — but for work
/// in flight since `cutoff`: a charge whose answer is still awaited (the
/// payment PROCESSING, the reconciler not due yet), a refund made at the
/// provider and still PENDING here.
async fn provider_matches_payments(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Finding> {
    let mismatched = rows(
        db,
        "SELECT c.idempotency_key AS key, c.amount_fen AS charged, p.status, p.amount_fen AS amount
         FROM sandbox_charges c
         LEFT JOIN payments p ON CAST(p.id AS TEXT) = c.idempotency_key
         WHERE NOT c.closed AND (p.id IS NULL OR p.status <> 'CAPTURED' OR p.amount_fen <> c.amount_fen)
           AND NOT (p.id IS NOT NULL AND p.status = 'PROCESSING' AND p.updated_at >= $1)",
        vec![cutoff.into()],
    )
    .await?;
    let mut offenders: Vec<String> = mismatched
        .iter()
        .map(|r| {
            let key: String = r.try_get("", "key")?;
            let status: Option<String> = r.try_get("", "status")?;
            let charged: i64 = r.try_get("", "charged")?;
            let amount: Option<i64> = r.try_get("", "amount")?;
            Ok(match (status, amount) {
                (Some(status), Some(amount)) if status == "CAPTURED" => {
                    format!("charge {key} is for {charged} fen, its payment for {amount} fen")
                }
                (Some(status), _) => {
                    format!("charge {key} ({charged} fen) belongs to a payment {status}")
                }
                (None, _) => {
                    format!("charge {key} ({charged} fen) belongs to a payment that does not exist")
                }
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let uncharged = rows(
        db,
        "SELECT p.id FROM payments p WHERE p.status = 'CAPTURED' AND NOT EXISTS (
             SELECT 1 FROM sandbox_charges c WHERE c.idempotency_key = CAST(p.id AS TEXT) AND NOT c.closed)",
        vec![],
    )
    .await?;
    for r in &uncharged {
        offenders.push(format!(
            "payment {} is CAPTURED with no charge",
            shared::db::row_uuid(r, "id")?
        ));
    }
    let refunds = rows(
        db,
        "SELECT c.idempotency_key AS key,
                CAST(COALESCE((SELECT SUM(s.amount_fen) FROM sandbox_refunds s WHERE s.charge_key = c.idempotency_key), 0) AS BIGINT) AS at_provider,
                CAST(COALESCE((SELECT SUM(r.amount_fen) FROM refunds r
                               WHERE CAST(r.payment_id AS TEXT) = c.idempotency_key AND r.status = 'SUCCEEDED'), 0) AS BIGINT) AS recorded
         FROM sandbox_charges c WHERE NOT c.closed
           AND NOT EXISTS (SELECT 1 FROM refunds r WHERE CAST(r.payment_id AS TEXT) = c.idempotency_key
                             AND r.status = 'PENDING' AND r.updated_at >= $1)",
        vec![cutoff.into()],
    )
    .await?;
    for r in &refunds {
        let (at_provider, recorded): (i64, i64) =
            (r.try_get("", "at_provider")?, r.try_get("", "recorded")?);
        if at_provider != recorded {
            let key: String = r.try_get("", "key")?;
            offenders.push(format!(
                "charge {key}: {at_provider} fen refunded at the provider, {recorded} recorded"
            ));
        }
    }
    Ok(finding(
        "provider: one charge per captured payment, refunds agree",
        offenders,
        format!("{} charges", refunds.len()),
    ))
}

async fn no_stuck_payment(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Finding> {
    let stuck = rows(
        db,
        "SELECT 'payment' AS what, id FROM payments WHERE status = 'PROCESSING' AND updated_at < $1
         UNION ALL
         SELECT 'refund' AS what, id FROM refunds WHERE status = 'PENDING' AND updated_at < $1",
        vec![cutoff.into()],
    )
    .await?;
    let offenders = stuck
        .iter()
        .map(|r| {
            let what: String = r.try_get("", "what")?;
            Ok(format!("{what} {}", shared::db::row_uuid(r, "id")?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(finding(
        "payments settle: none PROCESSING, no refund PENDING past the grace period",
        offenders,
        "none stuck".into(),
    ))
}

async fn impact_totals(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let pairs = partnership::storage::partnerships(db).await?;
    let years = rows(
        db,
        "SELECT DISTINCT year FROM impact_totals UNION SELECT DISTINCT year FROM attributions",
        vec![],
    )
    .await?;
    let years: Vec<i32> = years
        .iter()
        .map(|r| r.try_get("", "year"))
        .collect::<Result<_, _>>()?;
    let mut offenders = Vec::new();
    for pair in &pairs {
        for &year in &years {
            let kept = partnership::storage::monthly_totals(db, pair.id, year).await?;
            let raw = partnership::storage::monthly_recomputed(db, pair.id, year).await?;
            if kept != raw {
                let month = |list: &[(u32, shared::rpcs::Figures)], m: u32| {
                    list.iter()
                        .find(|(at, _)| *at == m)
                        .map_or_else(|| "nothing".to_owned(), |(_, f)| format!("{f:?}"))
                };
                let months: BTreeSet<u32> = kept.iter().chain(&raw).map(|(m, _)| *m).collect();
                let first = months
                    .into_iter()
                    .find(|m| month(&kept, *m) != month(&raw, *m))
                    .unwrap_or(0);
                offenders.push(format!(
                    "partnership {} in {year}-{first:02}: kept {}, attributions give {}",
                    pair.id,
                    month(&kept, first),
                    month(&raw, first)
                ));
            }
        }
    }
    Ok(finding(
        "impact: kept totals = recomputation from attributions",
        offenders,
        format!("{} partnerships × {} years agree", pairs.len(), years.len()),
    ))
}

/// A booking's money as payment's books have it, in fen.
#[derive(Default)]
struct Money {
    spend: i64,
    certified: i64,
    host: i64,
    fund: i64,
}

/// The bookings whose hold inventory granted on a certified listing (the
/// snapshot it sent with the grant, kept as the hold's answer).
async fn held_certified(inventory: &DatabaseConnection) -> anyhow::Result<BTreeSet<uuid::Uuid>> {
    let mut certified = BTreeSet::new();
    let sql = "SELECT booking_id, reply_payload FROM holds WHERE reply_kind = $1";
    let kind = <shared::events::HoldGranted as shared::envelope::Event>::TYPE;
    for r in rows(inventory, sql, vec![kind.into()]).await? {
        let payload: Option<String> = r.try_get("", "reply_payload")?;
        let Some(payload) = payload else { continue };
        let booking = shared::db::row_uuid(&r, "booking_id")?;
        let granted: shared::events::HoldGranted =
            json_of(&payload, "the hold granted to booking", booking)?;
        if granted.listing.certified {
            certified.insert(booking);
        }
    }
    Ok(certified)
}

/// Each partnership's credits against the other services' books: the
/// bookings and tourists against booking's CONFIRMED bookings of its pair,
/// and the spend, host income and welfare-fund share against payment's —
/// the gross, host and fund shares captured less those refunded, over the
/// bookings ever confirmed in its pair; the certified spend is that spend
/// over the bookings inventory held on a certified listing. The split and
/// the listing travel payment / inventory → booking → partnership in
/// events, so this is where a lost or altered one would show.
async fn impact_matches_bookings_and_payments(dbs: &Dbs) -> anyhow::Result<[Finding; 2]> {
    // What payment's books say each booking brought: captured less refunded.
    let mut kept_money: BTreeMap<uuid::Uuid, Money> = BTreeMap::new();
    for (sql, sign) in [
        (
            "SELECT booking_id, split FROM payments WHERE status = 'CAPTURED'",
            1,
        ),
        (
            "SELECT booking_id, split FROM refunds WHERE status = 'SUCCEEDED'",
            -1,
        ),
    ] {
        for r in rows(&dbs.payment, sql, vec![]).await? {
            let split: Option<String> = r.try_get("", "split")?;
            let Some(split) = split else { continue };
            let booking = shared::db::row_uuid(&r, "booking_id")?;
            let split: shared::money::Split = json_of(&split, "a split of booking", booking)?;
            let money = kept_money.entry(booking).or_default();
            money.spend += sign * split.gross.get();
            money.host += sign * split.host.get();
            money.fund += sign * split.fund.get();
        }
    }
    let certified = held_certified(&dbs.inventory).await?;
    // Every booking ever confirmed, and every one paid before it was
    // cancelled (its capture heard after: it keeps the policy's share,
    // counted from the day booking heard of it): (id, sponsor, listing,
    // travelers, CONFIRMED now, the day of its confirmation in China time).
    let confirmed = rows(
        &dbs.booking,
        "SELECT b.id, b.sponsor_region, b.listing_region, b.traveler_count, b.status, MIN(h.at) AS at
         FROM bookings b JOIN booking_history h ON h.booking_id = b.id
              AND (h.status = 'CONFIRMED' OR h.cause LIKE $1)
         GROUP BY b.id, b.sponsor_region, b.listing_region, b.traveler_count, b.status",
        vec![format!("{}%", booking::messaging::PAID_BEFORE_CANCELLING).into()],
    )
    .await?
    .iter()
    .map(|r| {
        let at: chrono::DateTime<Utc> = r.try_get("", "at")?;
        Ok((
            shared::db::row_uuid(r, "id")?,
            shared::db::opt_row_region(r, "sponsor_region")?,
            shared::db::opt_row_region(r, "listing_region")?,
            i64::from(r.try_get::<i32>("", "traveler_count")?),
            r.try_get::<String>("", "status")? == "CONFIRMED",
            shared::policy::china_today(at),
        ))
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let credited = rows(
        &dbs.partnership,
        "SELECT p.id, p.sponsor_code, p.beneficiary_code, p.since, p.ended_on, p.status,
                CAST(COALESCE(SUM(t.tourists), 0) AS BIGINT) AS tourists,
                CAST(COALESCE(SUM(t.bookings), 0) AS BIGINT) AS bookings,
                CAST(COALESCE(SUM(t.spend_fen), 0) AS BIGINT) AS spend,
                CAST(COALESCE(SUM(t.certified_fen), 0) AS BIGINT) AS certified,
                CAST(COALESCE(SUM(t.host_fen), 0) AS BIGINT) AS host,
                CAST(COALESCE(SUM(t.fund_fen), 0) AS BIGINT) AS fund
         FROM partnerships p LEFT JOIN impact_totals t ON t.partnership_id = p.id
         GROUP BY p.id, p.sponsor_code, p.beneficiary_code, p.since, p.ended_on, p.status",
        vec![],
    )
    .await?;
    let (mut counts_off, mut money_off) = (Vec::new(), Vec::new());
    for r in &credited {
        let (Some(sponsor), Some(beneficiary)) = (
            shared::db::opt_row_region(r, "sponsor_code")?,
            shared::db::opt_row_region(r, "beneficiary_code")?,
        ) else {
            continue;
        };
        let pair = partnership::domain::Pair {
            since: r.try_get("", "since")?,
            ended_on: r.try_get("", "ended_on")?,
            withdrawn: r.try_get::<String>("", "status")? == "WITHDRAWN",
            ..partnership::domain::Pair::of(sponsor, beneficiary)
        };
        let in_pair = confirmed.iter().filter(|(_, s, l, _, _, day)| {
            matches!((s, l), (Some(s), Some(l)) if pair.credits(*s, *l, *day))
        });
        let (mut bookings, mut tourists, mut money) = (0i64, 0i64, Money::default());
        for (id, _, _, travelers, now_confirmed, _) in in_pair {
            if *now_confirmed {
                bookings += 1;
                tourists += travelers;
            }
            if let Some(kept) = kept_money.get(id) {
                money.spend += kept.spend;
                if certified.contains(id) {
                    money.certified += kept.spend;
                }
                money.host += kept.host;
                money.fund += kept.fund;
            }
        }
        let kept: (i64, i64) = (r.try_get("", "bookings")?, r.try_get("", "tourists")?);
        if kept != (bookings, tourists) {
            counts_off.push(format!(
                "{sponsor}→{beneficiary}: credited {} bookings / {} tourists, booking says {bookings} / {tourists}",
                kept.0, kept.1
            ));
        }
        for (figure, column, books) in [
            ("spend", "spend", money.spend),
            ("certified spend", "certified", money.certified),
            ("host income", "host", money.host),
            ("fund", "fund", money.fund),
        ] {
            let credited: i64 = r.try_get("", column)?;
            if credited != books {
                money_off.push(format!(
                    "{sponsor}→{beneficiary}: credited {credited} fen {figure}, payment's books give {books} fen"
                ));
            }
        }
    }
    // A pair recorded or its term moved is credited a batch at a time:
    // until that is done its figures are not final, which a failure says
    // first.
    let queued = rows(&dbs.partnership, "SELECT id FROM recredits", vec![])
        .await?
        .len();
    let under_way = |mut found: Finding| {
        if queued > 0 && !found.holds {
            found.detail = format!(
                "{queued} recredits of partnerships still under way (run the check again when \
                 they are done): {}",
                found.detail
            );
        }
        found
    };
    let now_confirmed = confirmed.iter().filter(|c| c.4).count();
    Ok([
        under_way(finding(
            "impact: credited bookings and tourists = CONFIRMED bookings",
            counts_off,
            format!(
                "{} partnerships, {now_confirmed} confirmed bookings",
                credited.len()
            ),
        )),
        under_way(finding(
            "impact: credited spend, certified spend, host income and fund = payment's, booking by booking",
            money_off,
            format!("{} partnerships", credited.len()),
        )),
    ])
}

/// Booking's statuses that are the end of a booking.
const ENDED: [&str; 3] = ["REJECTED", "EXPIRED", "CANCELLED"];

/// Bookings that last moved before `cutoff` and are CONFIRMED or ended:
/// (id, status, refund due, refunded), as booking has them.
async fn settled_bookings(
    booking: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<Settled>> {
    rows(
        booking,
        "SELECT id, status, refund_due_fen, refunded_fen FROM bookings
         WHERE updated_at < $1 AND status IN ('CONFIRMED', 'REJECTED', 'EXPIRED', 'CANCELLED')",
        vec![cutoff.into()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            shared::db::row_uuid(r, "id")?,
            r.try_get("", "status")?,
            r.try_get("", "refund_due_fen")?,
            r.try_get("", "refunded_fen")?,
        ))
    })
    .collect()
}

/// `sql`'s `n` by its `booking_id` (a count or a sum of fen).
async fn by_booking(
    db: &DatabaseConnection,
    sql: &str,
) -> anyhow::Result<BTreeMap<uuid::Uuid, i64>> {
    rows(db, sql, vec![])
        .await?
        .iter()
        .map(|r| Ok((shared::db::row_uuid(r, "booking_id")?, r.try_get("", "n")?)))
        .collect()
}

/// A booking as [`settled_bookings`] reads it.
type Settled = (uuid::Uuid, String, Option<i64>, i64);

/// What a hold holds, as inventory has it: a room type's nights, or a
/// departure's seats; and how many.
#[derive(Debug, PartialEq, Eq)]
enum Holding {
    Nights(uuid::Uuid, chrono::NaiveDate, chrono::NaiveDate, i64),
    Seats(uuid::Uuid, i64),
    Nothing,
}

impl Holding {
    fn of(item: &shared::events::HoldItem) -> Holding {
        match item {
            shared::events::HoldItem::RoomNights {
                room_type_id,
                check_in,
                check_out,
                rooms,
            } => Holding::Nights(room_type_id.0, *check_in, *check_out, i64::from(*rooms)),
            shared::events::HoldItem::Seats {
                departure_id,
                seats,
            } => Holding::Seats(departure_id.0, i64::from(*seats)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Holding::Nights(room_type, from, to, n) => {
                format!("{n} room(s) of {room_type} {from}..{to}")
            }
            Holding::Seats(departure, n) => format!("{n} seat(s) on {departure}"),
            Holding::Nothing => "nothing".into(),
        }
    }
}

async fn holds_follow_bookings(
    dbs: &Dbs,
    bookings: &[Settled],
    cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Finding> {
    let holds: BTreeMap<uuid::Uuid, (String, Holding)> = rows(
        &dbs.inventory,
        "SELECT booking_id, state, room_type_id, check_in, check_out, departure_id, rooms
         FROM holds",
        vec![],
    )
    .await?
    .iter()
    .map(|r| {
        let rooms = i64::from(r.try_get::<i32>("", "rooms")?);
        let holding = match (
            shared::db::opt_row_uuid(r, "room_type_id")?,
            shared::db::opt_row_uuid(r, "departure_id")?,
        ) {
            (Some(room_type), _) => Holding::Nights(
                room_type,
                r.try_get("", "check_in")?,
                r.try_get("", "check_out")?,
                rooms,
            ),
            (None, Some(departure)) => Holding::Seats(departure, rooms),
            (None, None) => Holding::Nothing,
        };
        Ok((
            shared::db::row_uuid(r, "booking_id")?,
            (r.try_get("", "state")?, holding),
        ))
    })
    .collect::<anyhow::Result<_>>()?;
    // What each CONFIRMED booking booked: its hold must hold exactly that.
    let booked: BTreeMap<uuid::Uuid, Holding> = rows(
        &dbs.booking,
        "SELECT id, item FROM bookings WHERE status = 'CONFIRMED'",
        vec![],
    )
    .await?
    .iter()
    .map(|r| {
        let item: String = r.try_get("", "item")?;
        let id = shared::db::row_uuid(r, "id")?;
        let item: shared::events::HoldItem = json_of(&item, "the item of booking", id)?;
        Ok((id, Holding::of(&item)))
    })
    .collect::<anyhow::Result<_>>()?;
    let mut offenders = Vec::new();
    for (id, status, _, _) in bookings {
        let hold = holds.get(id);
        let state = hold.map(|(state, _)| state.as_str());
        let agrees = match status.as_str() {
            "CONFIRMED" => state == Some("COMMITTED"),
            _ => !matches!(state, Some("HELD" | "COMMITTED")),
        };
        if !agrees {
            offenders.push(format!("{id} {status}, hold {}", state.unwrap_or("none")));
            continue;
        }
        if let (Some((_, holding)), Some(wanted)) = (hold, booked.get(id))
            && holding != wanted
        {
            offenders.push(format!(
                "{id} {status} for {}, its hold holds {}",
                wanted.describe(),
                holding.describe()
            ));
        }
    }
    // A departure cancelled before the cutoff carries no one: booking ends
    // each of its bookings (refunded in full) and their holds go, whatever
    // booking says of them (one it never heard of keeps a trip that is not
    // running, and its host the money).
    for r in rows(
        &dbs.inventory,
        "SELECT h.booking_id, h.state FROM holds h JOIN departures d ON d.id = h.departure_id
         WHERE d.cancelled_at < $1 AND h.state IN ('HELD', 'COMMITTED')",
        vec![cutoff.into()],
    )
    .await?
    {
        offenders.push(format!(
            "{} holds seats ({}) on a departure cancelled before the grace",
            shared::db::row_uuid(&r, "booking_id")?,
            r.try_get::<String>("", "state")?
        ));
    }
    Ok(finding(
        "holds follow bookings: CONFIRMED is COMMITTED for what it booked, an ended booking and a cancelled departure hold nothing",
        offenders,
        format!("{} settled bookings", bookings.len()),
    ))
}

async fn money_follows_bookings(
    dbs: &Dbs,
    bookings: &[Settled],
    cutoff: chrono::DateTime<Utc>,
) -> anyhow::Result<Finding> {
    let captured = by_booking(
        &dbs.payment,
        "SELECT booking_id, CAST(SUM(amount_fen) AS BIGINT) AS n FROM payments
         WHERE status = 'CAPTURED' GROUP BY booking_id",
    )
    .await?;
    let refunded = by_booking(
        &dbs.payment,
        "SELECT booking_id, CAST(SUM(amount_fen) AS BIGINT) AS n FROM refunds
         WHERE status = 'SUCCEEDED' GROUP BY booking_id",
    )
    .await?;
    // Money still moving (a late capture, an admin's refund that booking
    // has not heard of yet) is not an offence.
    let moving: BTreeSet<uuid::Uuid> = rows(
        &dbs.payment,
        "SELECT booking_id FROM payments WHERE updated_at >= $1
         UNION SELECT booking_id FROM refunds WHERE updated_at >= $1",
        vec![cutoff.into()],
    )
    .await?
    .iter()
    .map(|r| shared::db::row_uuid(r, "booking_id"))
    .collect::<Result<_, _>>()?;
    let mut offenders = Vec::new();
    for (id, status, due, told) in bookings.iter().filter(|(id, ..)| !moving.contains(id)) {
        let (taken, back) = (
            captured.get(id).copied().unwrap_or(0),
            refunded.get(id).copied().unwrap_or(0),
        );
        if *told != back {
            offenders.push(format!(
                "{id}: booking says {told} fen refunded, payment {back}"
            ));
        }
        let ended = ENDED.contains(&status.as_str());
        match due {
            Some(due) if ended && back < *due => offenders.push(format!(
                "{id} {status}: {due} fen refund due, {back} refunded"
            )),
            None if ended && taken != back => offenders.push(format!(
                "{id} {status}: keeps {} fen it captured",
                taken - back
            )),
            _ => {}
        }
    }
    Ok(finding(
        "money follows bookings: refunds agree, an ended booking keeps only what it may",
        offenders,
        format!("{} settled bookings", bookings.len()),
    ))
}

/// The other way round: money kept and capacity taken only for bookings
/// booking has (a booking database restored from an older backup, or a
/// create rolled back after its hold went out, would leave money or rooms
/// with nobody's booking, which every check from booking's rows passes).
async fn nothing_for_unknown_bookings(dbs: &Dbs) -> anyhow::Result<Finding> {
    // Money and holds first, the bookings after: a booking is committed
    // before anything is held or paid for it, so one made meanwhile is
    // read as known.
    let kept = by_booking(
        &dbs.payment,
        "SELECT booking_id, CAST(SUM(amount_fen - refunded_fen) AS BIGINT) AS n FROM payments
         WHERE status = 'CAPTURED' GROUP BY booking_id",
    )
    .await?;
    let held = rows(
        &dbs.inventory,
        "SELECT booking_id, state FROM holds WHERE state IN ('HELD', 'COMMITTED')",
        vec![],
    )
    .await?;
    let known: BTreeSet<uuid::Uuid> = rows(&dbs.booking, "SELECT id FROM bookings", vec![])
        .await?
        .iter()
        .map(|r| shared::db::row_uuid(r, "id"))
        .collect::<Result<_, _>>()?;
    let mut offenders: Vec<String> = kept
        .iter()
        .filter(|(id, n)| **n > 0 && !known.contains(id))
        .map(|(id, n)| format!("{id}: payment keeps {n} fen for a booking booking does not have"))
        .collect();
    for r in &held {
        let id = shared::db::row_uuid(r, "booking_id")?;
        if !known.contains(&id) {
            let state: String = r.try_get("", "state")?;
            offenders.push(format!(
                "{id}: a {state} hold for a booking booking does not have"
            ));
        }
    }
    Ok(finding(
        "nothing for unknown bookings: no money kept, no capacity held for a booking booking lacks",
        offenders,
        format!("{} bookings", known.len()),
    ))
}

/// Every capture's host share is paid out once booking has handled the
/// capture (it asks for its refund then, when one is due) and payment has
/// heard so in a reconciler round: until both, payout runs keep it back.
/// A capture booking never handled (its `payment.captured` dead-lettered,
/// say) would be kept back for ever, with nothing else to say so.
async fn captures_heard(
    dbs: &Dbs,
    cutoff: chrono::DateTime<Utc>,
    round: Duration,
) -> anyhow::Result<Finding> {
    let unheard = rows(
        &dbs.payment,
        "SELECT id, booking_id FROM payments WHERE booking_heard_at IS NULL
           AND status = 'CAPTURED' AND refunded_fen < amount_fen AND updated_at < $1
         ORDER BY id",
        vec![cutoff.into()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            shared::db::row_uuid(r, "id")?,
            shared::db::row_uuid(r, "booking_id")?,
        ))
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let mut heard: BTreeMap<uuid::Uuid, chrono::DateTime<Utc>> = BTreeMap::new();
    let mut known: BTreeSet<uuid::Uuid> = BTreeSet::new();
    for page in unheard.chunks(shared::rpcs::CAPTURES_A_CALL) {
        for r in shared::db::rows_with_ids(
            &dbs.booking,
            "SELECT payment_id, heard_at FROM captures_heard WHERE payment_id IN ({ids})",
            page.iter().map(|(payment, _)| *payment),
        )
        .await?
        {
            heard.insert(
                shared::db::row_uuid(&r, "payment_id")?,
                r.try_get("", "heard_at")?,
            );
        }
        for r in shared::db::rows_with_ids(
            &dbs.booking,
            "SELECT id FROM bookings WHERE id IN ({ids})",
            page.iter().map(|(_, booking)| *booking),
        )
        .await?
        {
            known.insert(shared::db::row_uuid(&r, "id")?);
        }
    }
    // Payment looks once a round; a round may start just before booking
    // handles a capture, and take a while.
    let marked_by = cutoff - round * 2;
    let mut offenders = Vec::new();
    for (payment, booking) in &unheard {
        match heard.get(payment) {
            // An unknown booking's capture is `nothing_for_unknown_bookings`'.
            None if !known.contains(booking) => {}
            None => offenders.push(format!(
                "payment {payment} of booking {booking}: booking has not handled its capture \
                 (still queued, booking behind or not running, or dead-lettered: see booking's \
                 queue and the dead letters); its host's share is kept back from payouts"
            )),
            Some(at) if *at < marked_by => offenders.push(format!(
                "payment {payment} of booking {booking}: booking handled its capture at {at}, \
                 payment has not heard so since (is payment's reconciler running?)"
            )),
            Some(_) => {}
        }
    }
    Ok(finding(
        "payouts: no capture kept back past booking's handling and payment's next round",
        offenders,
        format!("{} captures not yet heard of", unheard.len()),
    ))
}

/// The payouts' invariant's name.
const PAYOUTS_FOLLOW_THE_LEDGER: &str = "payouts: each host's payouts = the ledger's postings to \
     the payout account, each host's mark = its entries before it";

/// The hosts' kept sums up to their mark (`host_marks`, which host
/// balances and payout runs read in place of the entries before it) =
/// those entries, host by host, in one statement (a run moves the mark):
/// an entry stamped before the mark but committed after it moved would be
/// in no balance. One mark for all.
async fn host_marks_follow_the_ledger(db: &DatabaseConnection) -> anyhow::Result<Vec<String>> {
    let drifted = rows(
        db,
        "WITH mark AS (SELECT MAX(mark_at) AS at, COUNT(DISTINCT mark_at) AS marks
                       FROM host_marks)
         SELECT COALESCE(k.account, l.account) AS account, COALESCE(k.owed, 0) AS kept,
                COALESCE(l.owed, 0) AS posted, k.region AS kept_region, l.region AS region,
                (SELECT marks FROM mark) AS marks
         FROM (SELECT account, owed_fen AS owed, region_code AS region FROM host_marks) k
         FULL OUTER JOIN
              (SELECT account, CAST(SUM(amount_fen) AS BIGINT) AS owed,
                      MIN(region_code) AS region
               FROM ledger_entries
               WHERE account LIKE 'host:%' AND created_at < (SELECT at FROM mark)
               GROUP BY account) l ON l.account = k.account
         WHERE COALESCE(k.owed, 0) <> COALESCE(l.owed, 0) OR k.region <> l.region
            OR (SELECT marks FROM mark) > 1
         ORDER BY 1",
        vec![],
    )
    .await?;
    let mut offenders = Vec::new();
    for r in &drifted {
        let marks: i64 = r.try_get("", "marks")?;
        if marks > 1 {
            offenders.push(format!(
                "the hosts' sums are kept up to {marks} moments, not one"
            ));
            break;
        }
    }
    for r in &drifted {
        let account = r.try_get::<String>("", "account")?;
        let (kept, posted): (i64, i64) = (r.try_get("", "kept")?, r.try_get("", "posted")?);
        if kept != posted {
            offenders.push(format!(
                "{account}: kept {kept} fen up to the hosts' mark, the entries before it sum to {posted} fen"
            ));
        }
        // The balances and payouts name a host's region as its kept sum's
        // and its entries' least: a sum kept under another would move the
        // host's payouts to another region's report.
        let regions: (Option<String>, Option<String>) =
            (r.try_get("", "kept_region")?, r.try_get("", "region")?);
        if let (Some(kept), Some(posted)) = regions
            && kept != posted
        {
            offenders.push(format!(
                "{account}: kept under region {kept}, its entries before the mark are of {posted}"
            ));
        }
    }
    Ok(offenders)
}

/// What the payout runs recorded paying each host (`payouts`) is what the
/// ledger moved from its account to the payout account (the postings a
/// run makes under no booking), and the payout account holds all of it: a
/// run that recorded a payout and lost its posting would pay the household
/// again next time; a posting without its record, pay it short.
async fn payouts_follow_the_ledger(db: &DatabaseConnection) -> anyhow::Result<Finding> {
    let nil = shared::db::uuid_value(db.get_database_backend(), uuid::Uuid::nil());
    let drifted = rows(
        db,
        "SELECT COALESCE(p.host, l.host) AS host, COALESCE(p.paid, 0) AS recorded,
                COALESCE(l.posted, 0) AS posted
         FROM (SELECT CAST(host_id AS TEXT) AS host, CAST(SUM(amount_fen) AS BIGINT) AS paid
               FROM payouts GROUP BY host_id) p
         FULL OUTER JOIN
              (SELECT substr(account, 6) AS host, CAST(-SUM(amount_fen) AS BIGINT) AS posted
               FROM ledger_entries WHERE account LIKE 'host:%' AND booking_id = $1
               GROUP BY account) l ON l.host = p.host
         WHERE COALESCE(p.paid, 0) <> COALESCE(l.posted, 0)
         ORDER BY 1",
        vec![nil],
    )
    .await?;
    let mut offenders = drifted
        .iter()
        .map(|r| {
            Ok(format!(
                "host {}: payouts recorded {} fen, the ledger moved {} fen to the payout account",
                r.try_get::<String>("", "host")?,
                r.try_get::<i64>("", "recorded")?,
                r.try_get::<i64>("", "posted")?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Both in one statement: a run committing between two would part them.
    let totals = rows(
        db,
        "SELECT (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM payouts) AS recorded,
                (SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM ledger_entries
                 WHERE account = 'payouts_bank') AS banked",
        vec![],
    )
    .await?;
    let (recorded, banked) = match totals.first() {
        Some(r) => (
            r.try_get::<i64>("", "recorded")?,
            r.try_get::<i64>("", "banked")?,
        ),
        None => (0, 0),
    };
    if banked != recorded {
        offenders.push(format!(
            "the payout account holds {banked} fen, payouts recorded {recorded} fen"
        ));
    }
    offenders.extend(host_marks_follow_the_ledger(db).await?);
    Ok(finding(
        PAYOUTS_FOLLOW_THE_LEDGER,
        offenders,
        format!("{recorded} fen paid out"),
    ))
}

async fn outboxes_drained(dbs: &Dbs, cutoff: chrono::DateTime<Utc>) -> anyhow::Result<Finding> {
    let mut offenders = Vec::new();
    for (service, db) in [
        ("inventory", &dbs.inventory),
        ("booking", &dbs.booking),
        ("payment", &dbs.payment),
        ("partnership", &dbs.partnership),
    ] {
        // SQLite's `CURRENT_TIMESTAMP` default writes "YYYY-MM-DD HH:MM:SS":
        // compare like with like (a bound instant is RFC 3339, whose "T"
        // sorts after the space, so every row of the day was "older").
        let cutoff: Value = match db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => cutoff.format("%Y-%m-%d %H:%M:%S").to_string().into(),
            _ => cutoff.into(),
        };
        let old = rows(
            db,
            "SELECT CAST(COUNT(*) OVER () AS BIGINT) AS n, seq, kind, created_at FROM outbox
             WHERE created_at < $1 ORDER BY seq LIMIT 1",
            vec![cutoff],
        )
        .await?;
        if let Some(r) = old.first() {
            let (n, seq, kind): (i64, i64, String) = (
                r.try_get("", "n")?,
                r.try_get("", "seq")?,
                r.try_get("", "kind")?,
            );
            // SQLite keeps it as text.
            let at = match r.try_get::<chrono::DateTime<Utc>>("", "created_at") {
                Ok(at) => at.to_rfc3339(),
                Err(_) => r.try_get::<String>("", "created_at")?,
            };
            offenders.push(format!(
                "{service}: {n} unpublished, the oldest row {seq} ({kind}, written {at})"
            ));
        }
    }
    Ok(finding(
        "outbox: nothing unpublished past the grace period",
        offenders,
        "all published".into(),
    ))
}

/// The dead-letters invariant's name.
const DEAD_LETTERS: &str = "dead letters: every *.events.dead queue empty";

async fn dead_letters(amqp: &str, settings: &Settings) -> anyhow::Result<Finding> {
    let config = settings.bus();
    let mut offenders = Vec::new();
    for service in ["inventory", "booking", "payment", "partnership"] {
        let queue = config.dead_queue(&format!("{service}.events"));
        // Missing, it was never declared under this prefix: a mistyped
        // DUIKOU_BUS_PREFIX would otherwise read as "empty".
        let Some(n) = shared::bus::amqp::admin::message_count(amqp, &queue).await? else {
            anyhow::bail!(
                "RabbitMQ has no queue {queue}: is DUIKOU_BUS_PREFIX ({:?}) the one the services \
                 run with?",
                settings.bus_prefix
            );
        };
        if n > 0 {
            offenders.push(format!("{queue}: {n} messages"));
        }
    }
    Ok(finding(DEAD_LETTERS, offenders, "empty".into()))
}

/// Prints the findings as a table; true when every invariant holds. A
/// reader that stops reading (`duikou check | head -1`) ends the printing,
/// not the process (`println!` panicked, exit 101 instead of 0, 1 or 2).
pub fn report(findings: &[Finding]) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // The details in one column, however long the invariants' names grow.
    let width = findings
        .iter()
        .map(|f| f.invariant.chars().count())
        .max()
        .unwrap_or(0);
    for f in findings {
        let mark = if f.holds { "ok  " } else { "FAIL" };
        if writeln!(out, "  {mark} {:<width$} {}", f.invariant, f.detail).is_err() {
            break;
        }
    }
    findings.iter().all(|f| f.holds)
}
