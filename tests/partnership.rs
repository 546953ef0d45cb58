//! Attribution end to end: bookings credit the partnerships whose sponsor
//! contains the booker's region and whose beneficiary contains the listing,
//! once each; cancellations and refunds take back exactly what they undo;
//! duplicated and reordered events change nothing; the kept totals always
//! equal a recomputation from the raw attribution records.

mod common;

use chrono::{Datelike, Duration as Days, FixedOffset, Utc};
use common::{TestApp, spawn_app, spawn_app_with, test_settings, tomorrow};
use serde_json::{Value, json};
use shared::ErrorCode;
use shared::auth::Principal;
use shared::bus::call;
use shared::ids::PartnershipId;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{CreateAgreement, YearTarget};
use std::time::{Duration, Instant};

fn year_now() -> i32 {
    let china = FixedOffset::east_opt(8 * 3600).expect("offset");
    Utc::now().with_timezone(&china).year()
}

/// The booking's credits as (sponsor, beneficiary) → impact.
async fn impact_of(app: &TestApp, booking: &str) -> Vec<(String, Value)> {
    let body = app
        .graphql(
            "query($id: ID!) { bookingImpact(bookingId: $id) { partnerships {
                partnership { sponsor { code } beneficiary { code } }
                impact { tourists bookings spend { amount } certifiedSpend { amount } hostIncome { amount } fund { amount } } } } }",
            json!({ "id": booking }),
        )
        .await;
    body["data"]["bookingImpact"]["partnerships"]
        .as_array()
        .unwrap_or_else(|| panic!("no impact in {body}"))
        .iter()
        .map(|c| {
            let p = &c["partnership"];
            (
                format!(
                    "{}-{}",
                    p["sponsor"]["code"].as_str().unwrap_or("?"),
                    p["beneficiary"]["code"].as_str().unwrap_or("?")
                ),
                c["impact"].clone(),
            )
        })
        .collect()
}

fn impact(tourists: i64, bookings: i64, spend: &str, host: &str, fund: &str) -> Value {
    json!({
        "tourists": tourists, "bookings": bookings, "spend": { "amount": spend },
        "certifiedSpend": { "amount": "0.00" }, "hostIncome": { "amount": host }, "fund": { "amount": fund }
    })
}

/// Where the booking's money went, as `bookingImpact` traces it.
async fn money_trace(app: &TestApp, booking: &str) -> Value {
    let body = app
        .graphql(
            "query($id: ID!) { bookingImpact(bookingId: $id) {
                booking { id } paid { amount } refunded { amount }
                kept { host { amount } platform { amount } fund { amount } agency { amount } }
                hostId certified fundReference } }",
            json!({ "id": booking }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["bookingImpact"].clone()
}

fn kept(host: &str, platform: &str, fund: &str) -> Value {
    json!({ "host": { "amount": host }, "platform": { "amount": platform },
            "fund": { "amount": fund }, "agency": { "amount": "0.00" } })
}

async fn wait_for_impact(app: &TestApp, booking: &str, expected: &[(&str, Value)]) {
    let expected: Vec<(String, Value)> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = impact_of(app, booking).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "impact stayed {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A paid booking of the traveler's (sponsor 110108) in 敖汉旗, CONFIRMED
/// and heard by partnership: the `heard`-th captured one it knows of.
async fn confirmed_and_heard(
    app: &TestApp,
    room_type: &str,
    check_in: chrono::NaiveDate,
    heard: usize,
) -> String {
    let id = app.paid_booking(room_type, check_in, "tok_success").await;
    app.wait_for_status(&id, "CONFIRMED").await;
    app.wait_for_partnership_facts("150430", |facts| {
        facts
            .iter()
            .filter(|f| f.captured.gross > Fen::ZERO)
            .count()
            >= heard
    })
    .await;
    id
}

async fn report(app: &TestApp, id: PartnershipId) -> Value {
    let body = app
        .graphql(
            "query($id: ID!, $year: Int!) { partnershipReport(partnershipId: $id, year: $year) {
                totals { tourists bookings spend { amount } fund { amount } }
                monthly { month impact { tourists spend { amount } } }
                touristsProgress { actual target percent onTrack }
                spendProgress { actual { amount } target { amount } percent }
                targets { tourists spend { amount } custom { name target unit } } csv } }",
            json!({ "id": id.to_string(), "year": year_now() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["partnershipReport"].clone()
}

/// The kept monthly totals equal the sums of the raw attribution records.
async fn assert_totals_match_the_records(app: &TestApp, ids: &[PartnershipId]) {
    let db = app.service_db("partnership").await;
    for id in ids {
        let kept = partnership::storage::monthly_totals(&db, *id, year_now())
            .await
            .expect("totals");
        let recomputed = partnership::storage::monthly_recomputed(&db, *id, year_now())
            .await
            .expect("records");
        assert_eq!(kept, recomputed, "partnership {id}");
    }
}

#[tokio::test]
async fn a_haidian_booking_in_aohan_credits_the_district_and_province_pairs_once_and_a_cancel_reverses_both()
 {
    let app = spawn_app().await;
    let district = app.pair("110108", "150430").await;
    let province = app.pair("110000", "150000").await;
    let other_sponsor = app.pair("110105", "150430").await;
    let other_beneficiary = app.pair("110108", "150423").await;
    call(
        app.app.rt.bus.as_ref(),
        &CreateAgreement {
            partnership_id: province.id,
            title: "《京蒙旅游扶贫协作框架协议》".into(),
            signed_on: chrono::NaiveDate::from_ymd_opt(2018, 6, 1).expect("date"),
            starts_on: chrono::NaiveDate::from_ymd_opt(2018, 6, 1).expect("date"),
            ends_on: chrono::NaiveDate::from_ymd_opt(2030, 12, 31).expect("date"),
            signatories: vec!["北京市".into(), "内蒙古自治区".into()],
            targets: vec![YearTarget {
                year: year_now(),
                tourists: Some(4),
                spend: Some(Fen::yuan(10_000)),
                certified_spend: None,
                custom: vec![],
            }],
            by: Principal::platform(),
        },
    )
    .await
    .expect("agreement");
    // A supplementary agreement adds a training target for the year; the
    // framework's tourist and spend targets stand. A later one raises it,
    // its name typed with spaces: the same indicator.
    let supplementary =
        |title: &str, starts: u32, name: &str, target: f64, unit: &str| CreateAgreement {
            partnership_id: province.id,
            title: title.into(),
            signed_on: chrono::NaiveDate::from_ymd_opt(year_now(), 1, 1).expect("date"),
            starts_on: chrono::NaiveDate::from_ymd_opt(year_now(), 1, starts).expect("date"),
            ends_on: chrono::NaiveDate::from_ymd_opt(year_now(), 12, 31).expect("date"),
            signatories: vec![" 北京市 ".into()],
            targets: vec![YearTarget {
                year: year_now(),
                tourists: None,
                spend: None,
                certified_spend: None,
                custom: vec![shared::rpcs::CustomTarget {
                    name: name.into(),
                    target,
                    unit: Some(unit.into()),
                }],
            }],
            by: Principal::platform(),
        };
    for agreement in [
        supplementary(
            "《乡村旅游人才培训补充协议》",
            1,
            "培训乡村旅游带头人",
            30.0,
            "人次",
        ),
        supplementary(
            "《补充协议（二）》",
            2,
            " 培训乡村旅游带头人 ",
            40.0,
            " 人次 ",
        ),
    ] {
        call(app.app.rt.bus.as_ref(), &agreement)
            .await
            .expect("supplementary agreement");
    }

    let homestay = app.homestay(1).await;
    let room_type = homestay.room_type_id.to_string();
    // The traveler's sponsor region is 110108 海淀区; the homestay is in 敖汉旗.
    let id = app
        .paid_booking(&room_type, tomorrow() + Days::days(9), "tok_success")
        .await;
    app.wait_for_status(&id, "CONFIRMED").await;
    let credited = impact(1, 1, "380.00", "364.80", "3.80");
    wait_for_impact(
        &app,
        &id,
        &[
            ("110108-150430", credited.clone()),
            ("110000-150000", credited),
        ],
    )
    .await;

    // Every yuan of the 380: 364.80 to the household, 11.40 platform fee
    // (3 %), 3.80 to the welfare fund (1 %), where the public ledger shows
    // it under the booking's reference.
    let money = money_trace(&app, &id).await;
    assert_eq!(money["booking"]["id"], id.as_str());
    assert_eq!(money["paid"]["amount"], "380.00", "{money}");
    assert_eq!(money["refunded"]["amount"], "0.00", "{money}");
    assert_eq!(money["kept"], kept("364.80", "11.40", "3.80"), "{money}");
    assert_eq!(money["hostId"], homestay.host_id.to_string().as_str());
    assert_eq!(money["certified"], false);
    let fund = app
        .graphql(
            "{ welfareFund { entries(first: 100) { edges { node { bookingReference amount { amount } } } } } }",
            json!({}),
        )
        .await;
    let entries = fund["data"]["welfareFund"]["entries"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["node"]["bookingReference"] == money["fundReference"]
                && e["node"]["amount"]["amount"] == "3.80"),
        "{money} not in {fund}"
    );
    // Nobody else may trace it; the rest of the answer stays (the field is
    // nullable, as DESIGN.md has it: non-null, the refusal nulled `data`).
    let stranger = app.register("stranger@example.cn", "110105").await;
    let refused = app
        .graphql_as(
            Some(&stranger),
            "query($id: ID!) { regions(parentCode: \"150400\") { code }
                bookingImpact(bookingId: $id) { paid { amount } } }",
            json!({ "id": id }),
        )
        .await;
    assert!(refused["data"]["bookingImpact"].is_null(), "{refused}");
    assert!(
        refused["data"]["regions"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{refused}"
    );
    assert!(
        matches!(
            refused["errors"][0]["extensions"]["code"].as_str(),
            Some("FORBIDDEN" | "NOT_FOUND")
        ),
        "{refused}"
    );

    let r = report(&app, province.id).await;
    assert_eq!(r["totals"]["tourists"], 1, "{r}");
    assert_eq!(r["totals"]["spend"]["amount"], "380.00");
    assert_eq!(r["touristsProgress"]["target"], 4);
    assert_eq!(r["touristsProgress"]["percent"], 25.0);
    assert_eq!(
        r["targets"],
        json!({ "tourists": 4, "spend": { "amount": "10000.00" },
                "custom": [{ "name": "培训乡村旅游带头人", "target": 40.0, "unit": "人次" }] }),
        "{r}"
    );
    // Money against money (a province's target in fen is past a GraphQL Int).
    assert_eq!(
        r["spendProgress"],
        json!({ "actual": { "amount": "380.00" }, "target": { "amount": "10000.00" }, "percent": 3.8 }),
        "{r}"
    );
    assert!(
        r["csv"].as_str().is_some_and(|c| c.lines().last()
            == Some(&format!("110000,150000,{},1,1,380.00,0.00,364.80,3.80", year_now())[..])),
        "{r}"
    );
    for untouched in [&other_sponsor, &other_beneficiary] {
        let r = report(&app, untouched.id).await;
        assert_eq!(r["totals"]["bookings"], 0, "{r}");
    }
    // Beijing as a sponsor counts the booking once, though two of its pairs got it.
    let region = app
        .graphql(
            "query($y: Int!) { regionImpact(regionCode: \"110000\", year: $y) { asSponsor { tourists bookings spend { amount } } asBeneficiary { bookings } } }",
            json!({ "y": year_now() }),
        )
        .await;
    assert_eq!(
        region["data"]["regionImpact"]["asSponsor"],
        json!({ "tourists": 1, "bookings": 1, "spend": { "amount": "380.00" } }),
        "{region}"
    );
    assert_eq!(
        region["data"]["regionImpact"]["asBeneficiary"]["bookings"],
        0
    );

    // Cancelled ten days ahead: full refund, and both pairs go back to
    // zero: the booking counts for neither now.
    app.cancel(&id, "cancel").await;
    app.wait_for_booking(&id, "the refund", |b| b["refunded"]["amount"] == "380.00")
        .await;
    wait_for_impact(&app, &id, &[]).await;
    // The refund took back each share exactly.
    let money = money_trace(&app, &id).await;
    assert_eq!(money["paid"]["amount"], "380.00", "{money}");
    assert_eq!(money["refunded"]["amount"], "380.00", "{money}");
    assert_eq!(money["kept"], kept("0.00", "0.00", "0.00"), "{money}");
    let r = report(&app, district.id).await;
    assert_eq!(
        r["totals"],
        json!({ "tourists": 0, "bookings": 0, "spend": { "amount": "0.00" }, "fund": { "amount": "0.00" } })
    );
    assert_totals_match_the_records(
        &app,
        &[
            district.id,
            province.id,
            other_sponsor.id,
            other_beneficiary.id,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_events_give_the_same_report_as_a_clean_delivery() {
    let mut settings = test_settings();
    settings.faults = "all".into();
    let app = spawn_app_with(settings).await;
    let district = app.pair("110108", "150430").await;
    let room_type = app.homestay(3).await.room_type_id.to_string();

    // Three bookings: one kept, one cancelled with a full refund, one
    // cancelled four days ahead with half back.
    let kept = app
        .paid_booking(&room_type, tomorrow() + Days::days(9), "tok_success")
        .await;
    let gone = app
        .paid_booking(&room_type, tomorrow() + Days::days(9), "tok_success")
        .await;
    let half = app
        .paid_booking(&room_type, tomorrow() + Days::days(3), "tok_success")
        .await;
    for id in [&kept, &gone, &half] {
        app.wait_for_status(id, "CONFIRMED").await;
    }
    app.cancel(&gone, "c1").await;
    app.cancel(&half, "c2").await;
    app.wait_for_booking(&gone, "full refund", |b| {
        b["refunded"]["amount"] == "380.00"
    })
    .await;
    app.wait_for_booking(&half, "half refund", |b| {
        b["refunded"]["amount"] == "190.00"
    })
    .await;

    // What one clean delivery gives: one booking and tourist; 380 + 190 spent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = report(&app, district.id).await;
        let expected = json!({ "tourists": 1, "bookings": 1, "spend": { "amount": "570.00" }, "fund": { "amount": "5.70" } });
        if r["totals"] == expected {
            break;
        }
        assert!(Instant::now() < deadline, "report stayed {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_impact(
        &app,
        &half,
        &[("110108-150430", impact(0, 0, "190.00", "182.40", "1.90"))],
    )
    .await;
    assert_totals_match_the_records(&app, &[district.id]).await;
}

#[tokio::test]
async fn a_pair_recorded_after_a_booking_is_credited_with_it() {
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = confirmed_and_heard(&app, &room_type, tomorrow(), 1).await;
    app.pair("110000", "150400").await;
    let credited = impact(1, 1, "380.00", "364.80", "3.80");
    assert_eq!(
        impact_of(&app, &id).await,
        vec![("110000-150400".to_owned(), credited)]
    );
}

/// A partnership counts the bookings confirmed within its term — from
/// `since` through the day it ended — whether the term is set before the
/// booking is heard of or moved afterwards; the invariant check agrees.
#[tokio::test]
async fn a_partnership_counts_the_bookings_confirmed_within_its_term() {
    // The test judges days: not across China's midnight.
    let now = Utc::now().with_timezone(&FixedOffset::east_opt(8 * 3600).expect("offset"));
    let midnight = (now.date_naive() + Days::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    let left = midnight - now.naive_local();
    if left < Days::minutes(1) {
        tokio::time::sleep((left + Days::seconds(1)).to_std().unwrap_or_default()).await;
    }
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let today = shared::policy::china_today(Utc::now());
    let room_type = app.homestay(2).await.room_type_id.to_string();
    let first = confirmed_and_heard(&app, &room_type, tomorrow() + Days::days(3), 1).await;

    // Recorded today as paired from tomorrow: today's booking is not its.
    let pair = call(
        app.app.rt.bus.as_ref(),
        &shared::rpcs::CreatePartnership {
            since: Some(today + Days::days(1)),
            ..common::pairing("110108", "150430")
        },
    )
    .await
    .expect("partnership created");
    let credited = impact(1, 1, "380.00", "364.80", "3.80");
    assert_eq!(impact_of(&app, &first).await, vec![]);

    let update = "mutation($i: PartnershipUpdate!) {
        updatePartnership(input: $i) { status since endedOn } }";
    let edit = |changes: Value| {
        let (app, admin) = (&app, &admin);
        let mut input = json!({ "partnershipId": pair.id.to_string() });
        if let (Some(input), Some(changes)) = (input.as_object_mut(), changes.as_object()) {
            input.extend(changes.clone());
        }
        async move {
            app.graphql_as(Some(admin), update, json!({ "i": input }))
                .await
        }
    };
    let day = |d: chrono::NaiveDate| d.to_string();
    // Its start corrected to today: credited at once.
    let moved = edit(json!({ "since": day(today) })).await;
    assert_eq!(
        moved["data"]["updatePartnership"],
        json!({ "status": "ACTIVE", "since": day(today), "endedOn": null }),
        "{moved}"
    );
    assert_eq!(
        impact_of(&app, &first).await,
        vec![("110108-150430".to_owned(), credited.clone())]
    );

    // It cannot end before it began, nor in the future, nor be ACTIVE
    // with an end; nothing changes.
    for bad in [
        json!({ "endedOn": day(today - Days::days(1)) }),
        json!({ "endedOn": day(today + Days::days(1)) }),
        json!({ "status": "ACTIVE", "endedOn": day(today) }),
        json!({ "since": "1950-01-01" }),
    ] {
        let refused = edit(bad.clone()).await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{bad}: {refused}"
        );
    }

    // Ended today: what it counted today stays (figures are history).
    let ended = edit(json!({ "status": "ENDED" })).await;
    assert_eq!(
        ended["data"]["updatePartnership"],
        json!({ "status": "ENDED", "since": day(today), "endedOn": day(today) }),
        "{ended}"
    );
    assert_eq!(
        impact_of(&app, &first).await,
        vec![("110108-150430".to_owned(), credited.clone())]
    );

    // Its term put back to a year that ended yesterday: today's booking
    // falls outside it (and off its trace), and one confirmed now is not
    // its either.
    let past = edit(json!({ "since": "2018-06-01", "endedOn": day(today - Days::days(1)) })).await;
    assert_eq!(
        past["data"]["updatePartnership"]["status"], "ENDED",
        "{past}"
    );
    assert_eq!(impact_of(&app, &first).await, vec![]);
    let second = confirmed_and_heard(&app, &room_type, tomorrow() + Days::days(4), 2).await;
    assert_eq!(impact_of(&app, &second).await, vec![]);
    // The invariant check judges the term the same way.
    impact_checks_hold(&app).await;

    // Active again: both count.
    let active = edit(json!({ "status": "ACTIVE" })).await;
    assert_eq!(
        active["data"]["updatePartnership"]["endedOn"],
        Value::Null,
        "{active}"
    );
    for booking in [&first, &second] {
        assert_eq!(
            impact_of(&app, booking).await,
            vec![("110108-150430".to_owned(), credited.clone())]
        );
    }
    assert_totals_match_the_records(&app, &[pair.id]).await;
    impact_checks_hold(&app).await;
}

/// A database from before partnerships had terms holds credits outside
/// them; the first start after the migration puts them right, once.
#[tokio::test]
async fn credits_made_before_terms_existed_are_put_right_once() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = confirmed_and_heard(&app, &room_type, tomorrow() + Days::days(2), 1).await;
    let pair = app.pair("110108", "150430").await;
    let key = "110108-150430".to_owned();
    let credited = impact(1, 1, "380.00", "364.80", "3.80");
    assert_eq!(impact_of(&app, &id).await, vec![(key, credited)]);

    // As the old code left it: a later `since` that the credits ignore, and
    // the one-time work not yet done.
    let db = app.service_db("partnership").await;
    let later = shared::policy::china_today(Utc::now()) + Days::days(1);
    let behind_its_back = |since: String| {
        let db = &db;
        let sql = format!(
            "UPDATE partnerships SET since = {since} WHERE id = '{}'",
            pair.id
        );
        async move { db.execute_unprepared(&sql).await.expect("updated") }
    };
    behind_its_back(format!("'{later}'")).await;
    db.execute_unprepared("DELETE FROM claims WHERE name = 'partnership terms'")
        .await
        .expect("claim removed");
    let partnerships = partnership::messaging::Partnerships { db: db.clone() };
    partnerships.apply_terms_once().await.expect("applied");
    assert_eq!(impact_of(&app, &id).await, vec![]);
    assert_totals_match_the_records(&app, &[pair.id]).await;

    // Once: a second start changes nothing (the credits stay taken back,
    // though the term now holds the booking).
    behind_its_back("NULL".into()).await;
    partnerships.apply_terms_once().await.expect("applied");
    assert_eq!(impact_of(&app, &id).await, vec![]);
}

/// The invariant check's three impact findings hold (the bookings settled).
async fn impact_checks_hold(app: &TestApp) {
    let findings = duikou::check::run(&app.app.rt.settings, chrono::Duration::zero())
        .await
        .expect("checks run");
    let impact_checks: Vec<_> = findings
        .iter()
        .filter(|f| f.invariant.starts_with("impact"))
        .collect();
    assert_eq!(impact_checks.len(), 3, "{findings:?}");
    assert!(impact_checks.iter().all(|f| f.holds), "{impact_checks:#?}");
}

#[tokio::test]
async fn bad_pairs_and_agreements_are_refused_with_bad_user_input() {
    let app = spawn_app().await;
    let bus = app.app.rt.bus.as_ref();
    let create = common::pairing;
    for (sponsor, beneficiary) in [
        ("150430", "150430"),
        ("150000", "150430"),
        ("150430", "150400"),
        ("110108", "150499"),
    ] {
        let e = call(bus, &create(sponsor, beneficiary))
            .await
            .expect_err("refused");
        assert_eq!(
            e.code,
            ErrorCode::BadUserInput,
            "{sponsor}-{beneficiary}: {e:?}"
        );
    }
    let p = call(bus, &create("110108", "150430"))
        .await
        .expect("created");
    // Asked again as it was recorded (a retry after SERVICE_UNAVAILABLE,
    // the pair committed meanwhile): that pair. With another term: already
    // paired.
    let again = call(bus, &create("110108", "150430"))
        .await
        .expect("the same pair");
    assert_eq!(again.id, p.id);
    let e = call(
        bus,
        &shared::rpcs::CreatePartnership {
            since: chrono::NaiveDate::from_ymd_opt(2020, 1, 1),
            ..create("110108", "150430")
        },
    )
    .await
    .expect_err("duplicate");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    assert!(e.message.contains("already paired"), "{e:?}");
    // The same two the other way round: a mistake, not a second pair.
    let e = call(bus, &create("150430", "110108"))
        .await
        .expect_err("reversed");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    assert!(
        e.message.contains("110108 already sponsors 150430"),
        "{e:?}"
    );

    let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let agreement = |ends_on, tourists| CreateAgreement {
        partnership_id: p.id,
        title: "协议".into(),
        signed_on: date(2018, 1, 1),
        starts_on: date(2018, 1, 1),
        ends_on,
        signatories: vec![],
        targets: vec![YearTarget {
            year: 2026,
            tourists: Some(tourists),
            spend: None,
            certified_spend: None,
            custom: vec![],
        }],
        by: Principal::platform(),
    };
    let e = call(bus, &agreement(date(2017, 12, 31), 1))
        .await
        .expect_err("ends before it starts");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    let e = call(bus, &agreement(date(2020, 1, 1), -1))
        .await
        .expect_err("negative target");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    // One target per custom indicator (a second would be dropped from the
    // report), and not hundreds of them.
    let custom = |names: Vec<String>| {
        let mut a = agreement(date(2030, 1, 1), 1);
        a.targets[0].custom = names
            .into_iter()
            .map(|name| shared::rpcs::CustomTarget {
                name,
                target: 3.0,
                unit: Some("人次".into()),
            })
            .collect();
        a
    };
    let e = call(bus, &custom(vec!["培训".into(), " 培训".into()]))
        .await
        .expect_err("one indicator twice");
    assert!(e.message.contains("`培训` has two"), "{e:?}");
    let e = call(bus, &custom((0..21).map(|i| format!("指标{i}")).collect()))
        .await
        .expect_err("too many indicators");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    // A unit is text people type, as the name is.
    for unit in ["人\u{7}次", "人\u{202e}次", &"次".repeat(21)] {
        let mut odd = custom(vec!["培训".into()]);
        odd.targets[0].custom[0].unit = Some(unit.to_owned());
        let e = call(bus, &odd).await.expect_err("an odd unit");
        assert_eq!(e.code, ErrorCode::BadUserInput, "{unit}: {e:?}");
        assert!(e.message.contains("custom indicator unit"), "{e:?}");
    }
    // A count past a GraphQL Int is refused before it is stored.
    let admin = app.admin_token().await;
    let huge = app
        .graphql_as(
            Some(&admin),
            "mutation($id: ID!) { recordAgreement(input: { partnershipId: $id, title: \"协议\",
                signedOn: \"2018-01-01\", startsOn: \"2018-01-01\", endsOn: \"2030-12-31\",
                targets: [{ year: 2026, tourists: 3000000000 }] }) { id } }",
            json!({ "id": p.id.to_string() }),
        )
        .await;
    assert_eq!(common::code(&huge), "BAD_USER_INPUT", "{huge}");
    // Its 2026 target lies past an agreement ending in 2020.
    let e = call(bus, &agreement(date(2020, 1, 1), 10))
        .await
        .expect_err("a target outside the agreement");
    assert_eq!(e.code, ErrorCode::BadUserInput);
    call(bus, &agreement(date(2027, 12, 31), 10))
        .await
        .expect("a good agreement");

    let report = "query($id: ID!, $year: Int!) { partnershipReport(partnershipId: $id, year: $year) { year } }";
    let unknown = json!({ "id": PartnershipId::new().to_string(), "year": 2026 });
    assert_eq!(app.error_code(report, unknown).await, "NOT_FOUND");
    let bad_year = json!({ "id": p.id.to_string(), "year": 99999 });
    assert_eq!(app.error_code(report, bad_year).await, "BAD_USER_INPUT");
}

#[tokio::test]
async fn admins_record_pairs_and_agreements_of_their_own_regions_only() {
    let app = spawn_app().await;
    let create = "mutation($i: PartnershipInput!) { createPartnership(input: $i) { id sponsor { code } beneficiary { name } } }";
    let input = |s: &str, b: &str| json!({ "i": { "sponsorRegionCode": s, "beneficiaryRegionCode": b, "since": "2018-06-01" } });

    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let ok = app
        .graphql_as(Some(&chifeng), create, input("110108", "150430"))
        .await;
    assert_eq!(
        ok["data"]["createPartnership"]["beneficiary"]["name"], "敖汉旗",
        "{ok}"
    );
    let id = ok["data"]["createPartnership"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Not a pair of 赤峰市: refused; a traveler and an anonymous caller too.
    let theirs = app
        .graphql_as(Some(&chifeng), create, input("110105", "150921"))
        .await;
    assert_eq!(
        theirs["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{theirs}"
    );
    let traveler = app.graphql(create, input("110105", "150921")).await;
    assert_eq!(traveler["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let anonymous = app
        .graphql_as(None, create, input("110105", "150921"))
        .await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let admin = app.admin_token().await;
    let platform = app
        .graphql_as(Some(&admin), create, input("110105", "150921"))
        .await;
    assert!(platform["errors"].is_null(), "{platform}");

    let record = "mutation($i: AgreementInput!) { recordAgreement(input: $i) { title targets { year tourists spend { amount } custom { name target unit } } } }";
    let agreement = |ends: &str, spend: &str| {
        json!({ "i": {
        "partnershipId": id, "title": "《京蒙旅游扶贫协作框架协议》", "signedOn": "2018-06-01",
        "startsOn": "2018-06-01", "endsOn": ends, "signatories": ["海淀区", "敖汉旗"],
        "targets": [{ "year": 2026, "tourists": 500, "spend": spend,
                      "custom": [{ "name": "培训乡村旅游带头人", "target": 30.0, "unit": "人次" }] }] } })
    };
    let recorded = app
        .graphql_as(Some(&chifeng), record, agreement("2027-12-31", "380000.00"))
        .await;
    assert_eq!(
        recorded["data"]["recordAgreement"]["targets"],
        json!([{ "year": 2026, "tourists": 500, "spend": { "amount": "380000.00" },
                 "custom": [{ "name": "培训乡村旅游带头人", "target": 30.0, "unit": "人次" }] }]),
        "{recorded}"
    );
    let backwards = app
        .graphql_as(Some(&chifeng), record, agreement("2017-12-31", "1.00"))
        .await;
    assert_eq!(
        backwards["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{backwards}"
    );
    let not_money = app
        .graphql_as(Some(&chifeng), record, agreement("2027-12-31", "lots"))
        .await;
    assert_eq!(
        not_money["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{not_money}"
    );
    // Signed in a century from now, by 10,000 signatories, for year −1.
    let mut ahead = agreement("2027-12-31", "1.00");
    ahead["i"]["signedOn"] = json!("2126-01-01");
    let mut crowd = agreement("2027-12-31", "1.00");
    crowd["i"]["signatories"] = json!(vec!["海淀区"; 10_000]);
    let mut year = agreement("2027-12-31", "1.00");
    year["i"]["targets"][0]["year"] = json!(-1);
    let mut hidden = agreement("2027-12-31", "1.00");
    hidden["i"]["title"] = json!("协议\u{0}");
    hidden["i"]["signatories"] = json!(["海淀区\u{202E}"]);
    // A target for a year the agreement does not run.
    let mut beyond = agreement("2027-12-31", "1.00");
    beyond["i"]["targets"][0]["year"] = json!(2030);
    // A certified-spend target above the spend it is part of; a signatory
    // named twice; a custom target past any plan; a term that ended before
    // the pair began (2018-06-01).
    let mut certified = agreement("2027-12-31", "1.00");
    certified["i"]["targets"][0]["certifiedSpend"] = json!("2.00");
    let mut twice = agreement("2027-12-31", "1.00");
    twice["i"]["signatories"] = json!(["海淀区", " 海淀区"]);
    let mut huge = agreement("2027-12-31", "1.00");
    huge["i"]["targets"][0]["custom"][0]["target"] = json!(1e308);
    let mut before = agreement("2011-01-01", "1.00");
    before["i"]["startsOn"] = json!("2010-01-01");
    before["i"]["signedOn"] = json!("2010-01-01");
    before["i"]["targets"][0]["year"] = json!(2010);
    // A supplement setting only certified spend for 2026, above the 380,000
    // spend the framework agreement above sets: alone it is fine, merged
    // (the report's targets) it is not.
    let mut supplement = agreement("2027-12-31", "1.00");
    supplement["i"]["startsOn"] = json!("2022-01-01");
    supplement["i"]["signedOn"] = json!("2022-01-01");
    supplement["i"]["targets"] = json!([{ "year": 2026, "certifiedSpend": "400000.00" }]);
    // A year named with nothing to reach (the report showed it as targets
    // all empty).
    let mut empty = agreement("2027-12-31", "1.00");
    empty["i"]["targets"] = json!([{ "year": 2026 }]);
    for bad in [
        ahead, crowd, year, hidden, beyond, certified, twice, huge, before, supplement, empty,
    ] {
        let refused = app.graphql_as(Some(&chifeng), record, bad).await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{refused}"
        );
    }
    let beijing = app.region_admin("xicheng@example.cn", "110102").await;
    let other = app
        .graphql_as(Some(&beijing), record, agreement("2027-12-31", "1.00"))
        .await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{other}"
    );

    let update =
        "mutation($i: PartnershipUpdate!) { updatePartnership(input: $i) { status notes since } }";
    // The pair cannot begin after its agreement (to 2027-12-31) ended.
    let late = app
        .graphql_as(
            Some(&chifeng),
            update,
            json!({ "i": { "partnershipId": id, "since": "2028-01-01" } }),
        )
        .await;
    assert_eq!(
        late["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{late}"
    );
    let ended = json!({ "i": { "partnershipId": id, "status": "ENDED", "notes": "协议期满" } });
    let refused = app.graphql_as(Some(&beijing), update, ended.clone()).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let done = app.graphql_as(Some(&chifeng), update, ended).await;
    assert_eq!(
        done["data"]["updatePartnership"],
        json!({ "status": "ENDED", "notes": "协议期满", "since": "2018-06-01" }),
        "{done}"
    );
    // Nothing to change (it answered as saved).
    let empty = app
        .graphql_as(
            Some(&chifeng),
            update,
            json!({ "i": { "partnershipId": id } }),
        )
        .await;
    assert!(
        empty["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("nothing to change: give status")),
        "{empty}"
    );
    let cleared = app
        .graphql_as(
            Some(&chifeng),
            update,
            json!({ "i": { "partnershipId": id, "notes": "" } }),
        )
        .await;
    assert_eq!(
        cleared["data"]["updatePartnership"]["notes"],
        Value::Null,
        "{cleared}"
    );
    assert_eq!(cleared["data"]["updatePartnership"]["status"], "ENDED");
}

#[tokio::test]
async fn partnerships_page_by_cursor_and_one_is_read_with_its_report() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for (sponsor, beneficiary) in [
        ("110108", "150430"),
        ("110105", "150423"),
        ("110000", "150000"),
        ("440105", "511133"),
    ] {
        made.push(app.pair(sponsor, beneficiary).await.id.to_string());
    }
    let page = |after: Option<String>| {
        let app = &app;
        async move {
            app.graphql_as(
                None,
                "query($after: String) { partnerships(regionCode: \"110000\", first: 2, after: $after) {
                    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }",
                json!({ "after": after }),
            )
            .await
        }
    };
    let first = page(None).await;
    let list = &first["data"]["partnerships"];
    assert_eq!(list["totalCount"], 3, "{first}");
    assert_eq!(list["pageInfo"]["hasNextPage"], true, "{first}");
    let ids = |body: &Value| -> Vec<String> {
        body["data"]["partnerships"]["edges"]
            .as_array()
            .map(|edges| {
                edges
                    .iter()
                    .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&first), made[..2].to_vec(), "oldest first");
    let cursor = list["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    let second = page(cursor).await;
    assert_eq!(ids(&second), made[2..3].to_vec(), "{second}");
    assert_eq!(
        second["data"]["partnerships"]["pageInfo"]["hasNextPage"],
        false
    );

    // One partnership, with its report as a field.
    let one = app
        .graphql_as(
            None,
            "query($id: ID!, $y: Int!) { partnership(id: $id) { id sponsor { code } beneficiary { code }
                report(year: $y) { year totals { bookings } } } }",
            json!({ "id": made[0], "y": year_now() }),
        )
        .await;
    assert_eq!(
        one["data"]["partnership"],
        json!({ "id": made[0], "sponsor": { "code": "110108" }, "beneficiary": { "code": "150430" },
                "report": { "year": year_now(), "totals": { "bookings": 0 } } }),
        "{one}"
    );
    let none = app
        .graphql_as(
            None,
            "query($id: ID!) { partnership(id: $id) { id } }",
            json!({ "id": PartnershipId::new().to_string() }),
        )
        .await;
    assert!(none["data"]["partnership"].is_null(), "{none}");
    assert!(none["errors"].is_null(), "{none}");

    // Bad pages are the caller's mistake.
    for (first, after) in [
        (0, None),
        (101, None),
        (2, Some(PartnershipId::new().to_string())),
        (2, Some("not-a-cursor".to_owned())),
    ] {
        let body = app
            .graphql_as(
                None,
                "query($first: Int!, $after: String) { partnerships(first: $first, after: $after) { totalCount } }",
                json!({ "first": first, "after": after }),
            )
            .await;
        assert_eq!(
            common::code(&body),
            "BAD_USER_INPUT",
            "first {first}: {body}"
        );
    }
}

/// A capture booking hears while the booking is still PENDING (the hold's
/// answer not yet recorded) confirms it when the answer comes; the
/// confirmation then carries that capture's split, so attribution — which
/// learns of a booking from `booking.confirmed` alone — still credits the
/// household's income and the fund's share. Inventory does not run, and
/// payment is never asked to pay: the test speaks their part.
#[tokio::test]
async fn a_capture_heard_before_the_hold_still_credits_host_income_and_fund() {
    use shared::ids::RoomTypeId;

    let app = common::spawn_parts(
        test_settings(),
        &[
            duikou::Part::Booking,
            duikou::Part::Partnership,
            duikou::Part::Payment,
            duikou::Part::Gateway,
        ],
    )
    .await;
    app.pair("110108", "150430").await;
    let room_type = RoomTypeId::new().to_string();
    let id = TestApp::id_of(
        &app.create_booking(&room_type, tomorrow() + Days::days(5), 1, "early")
            .await,
    );
    app.publish_captured(&id, 380).await;
    let read = app
        .wait_for_cause(&id, "payment captured before the hold")
        .await;
    assert_eq!(read["status"], "PENDING", "{read}");
    app.publish_granted(&id, 380).await;
    app.wait_for_status(&id, "CONFIRMED").await;
    wait_for_impact(
        &app,
        &id,
        &[("110108-150430", impact(1, 1, "380.00", "364.80", "3.80"))],
    )
    .await;
}

/// `regionImpact` sums a region's year in the database: its figures are
/// each booking's contribution as the pair reports count it (Rust's
/// `Facts::contribution`), over facts of every kind — cancelled or not,
/// captured or not yet, refunded in part, certified or not — and leave out
/// bookings of another region or year.
#[tokio::test]
async fn a_regions_year_is_summed_as_each_booking_contributes() {
    use partnership::domain::{Facts, Money3};
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let db = app.service_db("partnership").await;
    let now = Utc::now();
    let region = |code: &str| RegionCode::parse(code).ok();
    let money = |gross: i64, host: i64, fund: i64| Money3 {
        gross: Fen(gross),
        host: Fen(host),
        fund: Fen(fund),
    };
    let mut expected = shared::rpcs::Figures::default();
    let mut n = 0;
    for cancelled in [false, true] {
        for certified in [false, true] {
            for (captured, refunded) in [
                (money(0, 0, 0), money(0, 0, 0)),
                (money(38_000, 36_480, 380), money(0, 0, 0)),
                (money(38_000, 36_480, 380), money(19_000, 18_240, 190)),
            ] {
                for (listing, at) in [
                    ("150430", now),
                    ("150430", now - Days::days(800)),
                    ("152223", now),
                ] {
                    n += 1;
                    let facts = Facts {
                        sponsor: region("110108"),
                        listing: region(listing),
                        certified,
                        travelers: n % 3 + 1,
                        total: Fen(40_000 + i64::from(n)),
                        confirmed_at: Some(at),
                        captured,
                        refunded,
                        cancelled,
                    };
                    if listing == "150430" && at == now {
                        expected = expected + facts.contribution();
                    }
                    db.execute_unprepared(&format!(
                        "INSERT INTO booking_facts (booking_id, sponsor_code, listing_code, certified,
                             travelers, total_fen, confirmed_at, captured_gross, captured_host,
                             captured_fund, refunded_gross, refunded_host, refunded_fund, cancelled)
                         VALUES ('{}', '110108', '{listing}', {certified}, {}, {}, '{}', {}, {}, {},
                             {}, {}, {}, {cancelled})",
                        uuid::Uuid::now_v7(),
                        facts.travelers,
                        facts.total.get(),
                        at.to_rfc3339(),
                        captured.gross.get(),
                        captured.host.get(),
                        captured.fund.get(),
                        refunded.gross.get(),
                        refunded.host.get(),
                        refunded.fund.get(),
                    ))
                    .await
                    .expect("a booking's facts");
                }
            }
        }
    }
    let fields = "tourists bookings spend { amount } certifiedSpend { amount } hostIncome { amount } fund { amount }";
    let impact = app
        .graphql(
            &format!(
                "query($y: Int!) {{ regionImpact(regionCode: \"150400\", year: $y) {{ asBeneficiary {{ {fields} }} }} }}"
            ),
            json!({ "y": year_now() }),
        )
        .await;
    let yuan = |f: Fen| json!({ "amount": f.to_string() });
    assert_eq!(
        impact["data"]["regionImpact"]["asBeneficiary"],
        json!({
            "tourists": expected.tourists,
            "bookings": expected.bookings,
            "spend": yuan(expected.spend),
            "certifiedSpend": yuan(expected.certified_spend),
            "hostIncome": yuan(expected.host_income),
            "fund": yuan(expected.fund),
        }),
        "{impact}"
    );
    assert!(expected.bookings > 0 && expected.certified_spend > Fen::ZERO);
}

/// A pair cannot end before one of its agreements starts, nor take an
/// agreement that starts after it ended, or has a target for a year after
/// it ended: that agreement's targets could never be met, and the report
/// would show them all the same (the `since` side was guarded, the end
/// side not).
#[tokio::test]
async fn a_pair_and_its_agreements_agree_on_when_it_ended() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let pair = app.pair("110113", "150426").await.id.to_string();
    let record_for = |starts: &'static str, year: i32| {
        let (app, admin, pair) = (&app, &admin, &pair);
        async move {
            app.graphql_as(
                Some(admin),
                "mutation($id: ID!, $s: Date!, $y: Int!) { recordAgreement(input: {
                    partnershipId: $id, title: \"帮扶协议\", signedOn: \"2026-01-01\",
                    startsOn: $s, endsOn: \"2028-12-31\", targets: [{ year: $y, tourists: 100 }] })
                    { id } }",
                json!({ "id": pair, "s": starts, "y": year }),
            )
            .await
        }
    };
    let end = |on: &'static str| {
        let (app, admin, pair) = (&app, &admin, &pair);
        async move {
            app.graphql_as(
                Some(admin),
                "mutation($id: ID!, $e: Date!) { updatePartnership(input: { partnershipId: $id,
                    endedOn: $e }) { status endedOn } }",
                json!({ "id": pair, "e": on }),
            )
            .await
        }
    };
    let record = |starts: &'static str| record_for(starts, 2027);
    let first = record("2026-03-01").await;
    assert!(first["errors"].is_null(), "{first}");
    let too_early = end("2025-12-31").await;
    assert_eq!(common::code(&too_early), "BAD_USER_INPUT", "{too_early}");
    let ended = end("2026-06-30").await;
    assert_eq!(
        ended["data"]["updatePartnership"],
        json!({ "status": "ENDED", "endedOn": "2026-06-30" }),
        "{ended}"
    );
    let after = record("2026-07-01").await;
    assert_eq!(common::code(&after), "BAD_USER_INPUT", "{after}");
    let later_target = record("2026-05-01").await;
    assert_eq!(
        common::code(&later_target),
        "BAD_USER_INPUT",
        "a target for 2027 of a pair ended in 2026: {later_target}"
    );
    let within = record_for("2026-05-01", 2026).await;
    assert!(within["errors"].is_null(), "{within}");
}

/// A refund adds to what a booking had refunded: counted once by its id,
/// not only while the inbox remembers its event (a week). A
/// `payment.refunded` replayed after the inbox forgot it (an operator
/// replaying a dead letter through `duikou.events`) took the refund off the
/// pair's figures a second time.
#[tokio::test]
async fn a_refund_replayed_after_the_inbox_forgot_it_is_counted_once() {
    use sea_orm::ConnectionTrait;
    use shared::envelope::Envelope;
    use shared::events::PaymentRefunded;
    use shared::ids::{BookingId, PaymentId, RefundId};
    use shared::money::{Split, SplitRates};
    let app = spawn_app().await;
    app.pair("110108", "150430").await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let id = app
        .paid_booking(&room_type, tomorrow() + Days::days(9), "tok_success")
        .await;
    app.wait_for_status(&id, "CONFIRMED").await;
    let pair = "110108-150430";
    wait_for_impact(
        &app,
        &id,
        &[(pair, impact(1, 1, "380.00", "364.80", "3.80"))],
    )
    .await;
    let booking = BookingId(id.parse().expect("a booking id"));
    let refunded = |yuan: i64| {
        Envelope::new(
            "payment",
            booking.0,
            &PaymentRefunded {
                booking_id: booking,
                payment_id: PaymentId::new(),
                refund_id: RefundId::new(),
                split: Split::of(Fen::yuan(yuan), SplitRates::default()),
                reason: "停电".into(),
                request: None,
            },
        )
    };
    let goodwill = refunded(100);
    app.publish(goodwill.clone()).await;
    wait_for_impact(
        &app,
        &id,
        &[(pair, impact(1, 1, "280.00", "268.80", "2.80"))],
    )
    .await;
    // A week on, the inbox has forgotten it, and it is replayed; then a
    // second refund of 10.00, heard after it.
    let partnership = app.service_db("partnership").await;
    partnership
        .execute_unprepared("DELETE FROM inbox")
        .await
        .expect("forgotten");
    let replayed = goodwill.id;
    app.publish(goodwill).await;
    // Handled (in the inbox again) before the second refund is sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let handled = common::try_count_of(
            &partnership,
            &format!("SELECT COUNT(*) AS n FROM inbox WHERE event_id = '{replayed}'"),
            vec![],
        )
        .await;
        if matches!(handled, Ok(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the replay was never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.publish(refunded(10)).await;
    wait_for_impact(
        &app,
        &id,
        &[(pair, impact(1, 1, "270.00", "259.20", "2.70"))],
    )
    .await;
}

/// Every part but partnership running on `settings` (nothing but the test
/// does partnership's work), partnership's database migrated, what its
/// first start does once done, and a pair of 海淀区 with `beneficiary`
/// recorded: the app, the database, partnership's service on it and the
/// pair.
async fn without_partnership_running(
    settings: shared::config::Settings,
    beneficiary: &str,
) -> (
    TestApp,
    sea_orm::DatabaseConnection,
    partnership::messaging::Partnerships,
    shared::rpcs::PartnershipView,
) {
    use duikou::Part;
    let app = common::spawn_parts(
        settings,
        &[Part::Inventory, Part::Booking, Part::Payment, Part::Gateway],
    )
    .await;
    let db = app.service_db("partnership").await;
    shared::db::migrate::<partnership::storage::Migrator>(&db)
        .await
        .expect("migrated");
    let partnerships = partnership::messaging::Partnerships { db: db.clone() };
    // What a first start does once, so a later start leaves it be.
    partnerships
        .apply_terms_once()
        .await
        .expect("terms applied");
    let pair = partnerships
        .create_partnership(common::pairing("110108", beneficiary))
        .await
        .expect("paired");
    (app, db, partnerships, pair)
}

/// Recording a pair credits the bookings it covers a batch per
/// transaction, not in one transaction that holds attribution up: a
/// recredit stopped after its first batch (a replica gone, the admin's
/// call out of time) is finished by the service when it starts, each
/// booking credited once.
#[tokio::test]
async fn a_recredit_goes_a_batch_at_a_time_and_what_is_left_is_finished_by_the_service() {
    use duikou::{App, Part};
    use sea_orm::ConnectionTrait;
    let settings = test_settings();
    let (mut app, db, partnerships, pair) =
        without_partnership_running(settings.clone(), "150430").await;
    // Bookings partnership knows of and has not credited (as if confirmed
    // while the pair was recorded).
    let now = Utc::now();
    for n in 0..5 {
        db.execute_unprepared(&format!(
            "INSERT INTO booking_facts (booking_id, sponsor_code, listing_code, travelers,
                 total_fen, confirmed_at, captured_gross, captured_host, captured_fund)
             VALUES ('{}', '110108', '150430', 2, 38000, '{}', 38000, 36480, 380)",
            uuid::Uuid::now_v7(),
            (now - chrono::Duration::seconds(n)).to_rfc3339(),
        ))
        .await
        .expect("a booking's facts");
    }
    let credited = || async {
        partnership::storage::monthly_totals(&db, pair.id, year_now())
            .await
            .expect("totals")
            .iter()
            .map(|(_, f)| f.bookings)
            .sum::<i64>()
    };
    assert_eq!(credited().await, 0);

    let queued = partnership::storage::queue_recredit(&db, "150430", "test")
        .await
        .expect("queued");
    let done = partnerships
        .recredit(queued, 2, &|| true)
        .await
        .expect("one batch");
    assert!(!done, "one batch, of two of the five bookings");
    assert_eq!(credited().await, 2);
    let view = partnership::storage::partnership_by_id(&db, pair.id)
        .await
        .expect("read")
        .expect("the pair");
    assert!(view.crediting, "its figures are still being credited");

    app.parts.push(
        App::start(settings, Part::Partnership)
            .await
            .expect("partnership starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = report(&app, pair.id).await;
        if report["totals"]["bookings"] == 5 {
            assert_eq!(report["totals"]["tourists"], 10, "{report}");
            assert_eq!(report["totals"]["spend"]["amount"], "1900.00", "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not finish the recredit: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = partnership::storage::queued_recredits(&db)
        .await
        .expect("queue read");
    assert!(left.is_empty(), "{left:?}");
    let read = app
        .graphql(
            "query($id: ID!) { partnership(id: $id) { crediting } }",
            json!({ "id": pair.id.to_string() }),
        )
        .await;
    assert_eq!(read["data"]["partnership"]["crediting"], false, "{read}");
    let twice = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT booking_id FROM attributions
             GROUP BY booking_id, partnership_id HAVING COUNT(*) > 1",
        ))
        .await
        .expect("attributions read");
    assert!(twice.is_empty(), "{} bookings credited twice", twice.len());
    assert_totals_match_the_records(&app, &[pair.id]).await;
}

/// Two crediting runs of one pair side by side, each meeting bookings of
/// two months in the other's order, both finish: a transaction adds its
/// months' totals in one order, not booking by booking. Staged with
/// March's totals row held by the test: run A (March, then January) waits
/// for it first; run B (January, then March) takes January and waits for
/// March too. Let go, A took March and waited for January, B held January
/// and waited for March, and PostgreSQL aborted one as a deadlock; now A
/// takes January first, so B waits for A and both finish.
#[tokio::test]
async fn two_crediting_runs_over_the_same_months_do_not_deadlock() {
    use sea_orm::ConnectionTrait;
    // 赤峰市: every banner's bookings count for it.
    let (app, db, partnerships, pair) =
        without_partnership_running(test_settings(), "150400").await;
    let year = year_now();
    let facts = |banner: &str, month: u32| {
        format!(
            "INSERT INTO booking_facts (booking_id, sponsor_code, listing_code, travelers,
                 total_fen, confirmed_at, captured_gross, captured_host, captured_fund)
             VALUES ('{}', '110108', '{banner}', 2, 38000, '{year}-{month:02}-15T04:00:00Z',
                     38000, 36480, 380)",
            uuid::Uuid::now_v7()
        )
    };
    // March's totals row, made by a booking of a third banner.
    db.execute_unprepared(&facts("150422", 3))
        .await
        .expect("a booking's facts");
    let queued = partnership::storage::queue_recredit(&db, "150422", "test")
        .await
        .expect("queued");
    assert!(
        partnerships
            .recredit(queued, 10, &|| false)
            .await
            .expect("credited")
    );
    // Each banner's bookings in id order: 敖汉旗 March then January,
    // 阿鲁科尔沁旗 January then March.
    for (banner, months) in [("150430", [3, 1]), ("150421", [1, 3])] {
        for month in months {
            db.execute_unprepared(&facts(banner, month))
                .await
                .expect("a booking's facts");
        }
    }
    let held = common::LockHeld::begin(
        app.service_db("partnership").await,
        &format!(
            "SELECT month FROM impact_totals WHERE partnership_id = '{}' AND month = 3 FOR UPDATE",
            pair.id
        ),
    )
    .await;
    let mut runs = Vec::new();
    for banner in ["150430", "150421"] {
        let queued = partnership::storage::queue_recredit(&db, banner, "test")
            .await
            .expect("queued");
        let run = partnership::messaging::Partnerships {
            db: app.service_db("partnership").await,
        };
        runs.push(tokio::spawn(async move {
            run.recredit(queued, 10, &|| false).await
        }));
    }
    // A waiting for the test, B for A (or, booking by booking, for the test).
    held.until_waiting(2, false).await;
    held.release().await;
    for run in runs {
        let done = run.await.expect("the run").expect("credited, no deadlock");
        assert!(done, "the run finished its banner");
    }
    let totals = partnership::storage::monthly_totals(&db, pair.id, year)
        .await
        .expect("totals");
    let bookings = |month: u32| {
        totals
            .iter()
            .find(|(m, _)| *m == month)
            .map_or(0, |(_, f)| f.bookings)
    };
    assert_eq!((bookings(1), bookings(3)), (2, 3), "{totals:?}");
    assert_totals_match_the_records(&app, &[pair.id]).await;
}

/// A traveler living outside mainland China registers without a home
/// region (before, `homeRegionCode` was required, and a foreigner had to
/// claim a Chinese region, whose partnerships their bookings then counted
/// for): their bookings count for no partnership unless they declare a
/// sponsor region.
#[tokio::test]
async fn a_traveler_from_abroad_registers_without_a_home_region_and_credits_no_pair() {
    let mut app = spawn_app().await;
    app.pair("110108", "150430").await;
    let registered = app
        .graphql_as(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken account { homeRegionCode } } }",
            json!({ "i": { "email": "abroad@example.com", "password": common::PASSWORD, "displayName": "Jane Doe" } }),
        )
        .await;
    let token = registered["data"]["register"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"))
        .to_owned();
    assert_eq!(
        registered["data"]["register"]["account"]["homeRegionCode"],
        Value::Null,
        "{registered}"
    );
    // A form's empty field is none too; a region the table lacks is said
    // with what would do: the city around it, or (Hong Kong) none.
    let register =
        "mutation($i: RegisterInput!) { register(input: $i) { account { homeRegionCode } } }";
    for (email, home, answer) in [
        ("blank@example.hk", "", None),
        ("tianhe@example.cn", "440106", Some("广州市 (440100)")),
        ("hk@example.hk", "810000", Some("Hong Kong")),
    ] {
        let body = app
            .graphql_as(
                None,
                register,
                json!({ "i": { "email": email, "password": common::PASSWORD,
                               "displayName": "陳大文", "homeRegionCode": home } }),
            )
            .await;
        match answer {
            None => assert_eq!(
                body["data"]["register"]["account"]["homeRegionCode"],
                Value::Null,
                "{body}"
            ),
            Some(said) => {
                assert_eq!(common::code(&body), "BAD_USER_INPUT", "{body}");
                assert!(body.to_string().contains(said), "{body}");
            }
        }
    }
    app.token = Some(token);
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let check_in = tomorrow() + Days::days(5);
    let created = app
        .graphql(
            "mutation($input: CreateBookingInput!) { createBooking(input: $input, idempotencyKey: \"abroad\") { id } }",
            json!({ "input": {
                "roomTypeId": room_type,
                "checkIn": check_in.to_string(),
                "checkOut": (check_in + Days::days(1)).to_string(),
                "travelers": [{ "name": "Jane Doe", "idType": "PASSPORT", "idNumber": "X1234567" }],
                "contact": { "name": "Jane Doe", "phone": "13800138000" }
            } }),
        )
        .await;
    let id = TestApp::id_of(&created);
    app.wait_for_status(&id, "AWAITING_PAYMENT").await;
    let paid = app.pay(&id, "tok_success", "abroad").await;
    assert!(paid["errors"].is_null(), "{paid}");
    app.wait_for_status(&id, "CONFIRMED").await;
    app.wait_for_partnership_facts("150430", |facts| {
        facts.iter().any(|f| f.captured.gross > Fen::ZERO)
    })
    .await;
    assert_eq!(impact_of(&app, &id).await, vec![], "credited to no pair");
    let trace = money_trace(&app, &id).await;
    assert_eq!(trace["paid"]["amount"], "380.00", "{trace}");
}

/// An agreement sent again (a retry after an unanswered call) is the one
/// recorded, not a second copy no one can remove; a target for a year
/// before the pair began is refused (no booking could meet it).
#[tokio::test]
async fn an_agreement_sent_again_is_the_one_recorded_and_no_target_precedes_the_pair() {
    let app = spawn_app().await;
    let bus = app.app.rt.bus.as_ref();
    let pair = call(
        bus,
        &shared::rpcs::CreatePartnership {
            since: chrono::NaiveDate::from_ymd_opt(2021, 1, 1),
            ..common::pairing("110108", "150425")
        },
    )
    .await
    .expect("pair");
    let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let agreement = |year: i32| CreateAgreement {
        partnership_id: pair.id,
        title: "《海淀—克旗协议》".into(),
        signed_on: date(2020, 12, 1),
        starts_on: date(2020, 12, 1),
        ends_on: date(2030, 12, 31),
        signatories: vec!["海淀区".into(), "克什克腾旗".into()],
        targets: vec![YearTarget {
            year,
            tourists: Some(100),
            spend: None,
            certified_spend: None,
            custom: vec![],
        }],
        by: Principal::platform(),
    };
    let first = call(bus, &agreement(2026)).await.expect("recorded");
    let again = call(bus, &agreement(2026)).await.expect("sent again");
    assert_eq!(again.id, first.id, "the one recorded");
    let now = call(
        bus,
        &shared::rpcs::GetPartnership {
            partnership_id: pair.id,
        },
    )
    .await
    .expect("read")
    .expect("the pair");
    assert_eq!(now.agreements.len(), 1, "{now:?}");
    let before = call(bus, &agreement(2020))
        .await
        .expect_err("a year before the pair");
    assert_eq!(before.code, ErrorCode::BadUserInput);
    assert!(
        before.message.contains("before the partnership began"),
        "{before:?}"
    );
    // Nor may the pair's beginning move past a target's year.
    let later = call(
        bus,
        &shared::rpcs::UpdatePartnership {
            partnership_id: pair.id,
            status: None,
            since: chrono::NaiveDate::from_ymd_opt(2027, 1, 1),
            ended_on: None,
            notes: None,
            by: Principal::platform(),
        },
    )
    .await
    .expect_err("a since past a target");
    assert_eq!(later.code, ErrorCode::BadUserInput);
    assert!(later.message.contains("has a target for 2026"), "{later:?}");
}

/// An agreement recorded by mistake (or superseded, or never signed) is
/// withdrawn: it stays on record apart from those in force, its targets
/// count no more, and it no longer keeps the pair from ending before it
/// starts. Before, one starting in the future kept the pair from ever
/// ending, and nothing but the database could take it back.
#[tokio::test]
async fn a_withdrawn_agreement_stays_on_record_and_no_longer_counts_or_bounds_the_term() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let pair = app.pair("110114", "150425").await.id.to_string();
    let today = shared::policy::china_today(Utc::now());
    let starts = today + Days::days(30);
    let year = starts.year();
    let recorded = app
        .graphql_as(
            Some(&admin),
            "mutation($id: ID!, $s: Date!, $e: Date!, $y: Int!) { recordAgreement(input: {
                partnershipId: $id, title: \"帮扶协议\", signedOn: \"2026-01-01\", startsOn: $s,
                endsOn: $e, targets: [{ year: $y, tourists: 100 }] }) { id withdrawal { on } } }",
            json!({ "id": pair, "s": starts, "e": starts + Days::days(400), "y": year }),
        )
        .await;
    assert!(recorded["errors"].is_null(), "{recorded}");
    assert!(recorded["data"]["recordAgreement"]["withdrawal"].is_null());
    let agreement = recorded["data"]["recordAgreement"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let end_today = || {
        app.graphql_as(
            Some(&admin),
            "mutation($id: ID!) { updatePartnership(input: { partnershipId: $id, status: ENDED })
                { status } }",
            json!({ "id": pair }),
        )
    };
    let target = || async {
        let body = app
            .graphql(
                "query($id: ID!, $y: Int!) { partnershipReport(partnershipId: $id, year: $y) {
                    targets { tourists } } }",
                json!({ "id": pair, "y": year }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["partnershipReport"]["targets"]["tourists"].clone()
    };
    assert_eq!(common::code(&end_today().await), "BAD_USER_INPUT");
    assert_eq!(target().await, 100);

    let withdraw = "mutation($id: ID!, $r: String!) { withdrawAgreement(agreementId: $id,
        reason: $r) { id title withdrawal { on reason } } }";
    let stranger = app.region_admin("chaoyang@example.cn", "110105").await;
    let refused = app
        .graphql_as(
            Some(&stranger),
            withdraw,
            json!({ "id": agreement, "r": "录入错误" }),
        )
        .await;
    assert_eq!(common::code(&refused), "FORBIDDEN", "{refused}");
    let blank = app
        .graphql_as(
            Some(&admin),
            withdraw,
            json!({ "id": agreement, "r": " \u{3164} " }),
        )
        .await;
    assert_eq!(common::code(&blank), "BAD_USER_INPUT", "{blank}");
    let unknown = app
        .graphql_as(
            Some(&admin),
            withdraw,
            json!({ "id": uuid::Uuid::new_v4().to_string(), "r": "录入错误" }),
        )
        .await;
    assert_eq!(common::code(&unknown), "NOT_FOUND", "{unknown}");

    let withdrawn = app
        .graphql_as(
            Some(&admin),
            withdraw,
            json!({ "id": agreement, "r": " 录入错误：起始日期写错 " }),
        )
        .await;
    assert_eq!(
        withdrawn["data"]["withdrawAgreement"],
        json!({ "id": agreement, "title": "帮扶协议",
                "withdrawal": { "on": today, "reason": "录入错误：起始日期写错" } }),
        "{withdrawn}"
    );
    // A retry answers the withdrawal recorded; another reason is refused.
    let again = app
        .graphql_as(
            Some(&admin),
            withdraw,
            json!({ "id": agreement, "r": "录入错误：起始日期写错" }),
        )
        .await;
    assert_eq!(again["data"], withdrawn["data"], "{again}");
    let other = app
        .graphql_as(
            Some(&admin),
            withdraw,
            json!({ "id": agreement, "r": "未签署" }),
        )
        .await;
    assert_eq!(common::code(&other), "CONFLICT", "{other}");

    let read = app
        .graphql(
            "query($id: ID!) { partnership(id: $id) { agreements { id }
                withdrawnAgreements { id withdrawal { reason } } } }",
            json!({ "id": pair }),
        )
        .await;
    assert_eq!(
        read["data"]["partnership"],
        json!({ "agreements": [], "withdrawnAgreements": [
            { "id": agreement, "withdrawal": { "reason": "录入错误：起始日期写错" } }] }),
        "{read}"
    );
    assert!(target().await.is_null());
    let ended = end_today().await;
    assert_eq!(
        ended["data"]["updatePartnership"]["status"], "ENDED",
        "{ended}"
    );
}

/// A sponsor district's admin reads which bookings make up its pair's
/// figures (ids, regions, what each counts for; no person), a page at a
/// time, adding up to the report: one cancelled with half refunded counts
/// the half it kept (no tourist), one refunded in full is left out.
/// Travelers and other regions' admins get null there, the rest of the
/// pair as it is. Before, a sponsor admin could read only the totals.
#[tokio::test]
async fn a_pairs_admins_list_the_bookings_that_make_up_its_figures() {
    let app = spawn_app().await;
    let pair = app.pair("110108", "150430").await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let mut ids = Vec::new();
    for (n, day) in [3, 5, 7].into_iter().enumerate() {
        ids.push(
            confirmed_and_heard(
                &app,
                &room_type,
                common::tomorrow() + Days::days(day),
                n + 1,
            )
            .await,
        );
    }
    // Six days ahead: half back by the policy; eight: all of it.
    for id in &ids[1..] {
        let cancelled = app.cancel(id, &format!("cancel-{id}")).await;
        assert_eq!(
            cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
            "{cancelled}"
        );
    }
    let haidian = app.region_admin("haidian@example.cn", "110108").await;
    let credits = |token: Option<String>, first: i32, after: Option<String>| {
        let app = &app;
        let id = pair.id.to_string();
        async move {
            app.graphql_as(
                token.as_deref(),
                "query($id: ID!, $y: Int!, $f: Int!, $a: String) { partnership(id: $id) {
                    id credits(year: $y, first: $f, after: $a) { totalCount
                        pageInfo { hasNextPage endCursor }
                        edges { node { bookingId sponsorRegion { code } listingRegion { code }
                            impact { tourists bookings spend { amount } } } } } } }",
                json!({ "id": id, "y": year_now(), "f": first, "a": after }),
            )
            .await
        }
    };
    // The cancellations' reversals reach partnership a moment later.
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = credits(Some(haidian.clone()), 10, None).await;
        let page = &all["data"]["partnership"]["credits"];
        if page["totalCount"] == 2 && page["edges"].to_string().contains("\"tourists\":0") {
            break all;
        }
        assert!(Instant::now() < deadline, "{all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = |id: &str, counted: i64, spend: &str| {
        json!({ "node": { "bookingId": id, "sponsorRegion": { "code": "110108" },
                "listingRegion": { "code": "150430" },
                "impact": { "tourists": counted, "bookings": counted, "spend": { "amount": spend } } } })
    };
    let mut expected = [node(&ids[0], 1, "380.00"), node(&ids[1], 0, "190.00")];
    expected.sort_by_key(|n| {
        n["node"]["bookingId"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let edges = &all["data"]["partnership"]["credits"]["edges"];
    assert_eq!(edges, &json!(expected), "{all}");
    // They add up to the report.
    assert_eq!(
        report(&app, pair.id).await["totals"]["spend"]["amount"],
        "570.00"
    );

    let first = credits(Some(haidian.clone()), 1, None).await;
    let page = &first["data"]["partnership"]["credits"];
    assert_eq!(page["edges"], json!([expected[0]]), "{first}");
    assert_eq!(page["pageInfo"]["hasNextPage"], true, "{first}");
    let cursor = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    let second = credits(Some(haidian.clone()), 1, cursor).await;
    let page = &second["data"]["partnership"]["credits"];
    assert_eq!(page["edges"], json!([expected[1]]), "{second}");
    assert_eq!(page["pageInfo"]["hasNextPage"], false, "{second}");

    let chaoyang = app.region_admin("chaoyang@example.cn", "110105").await;
    for token in [app.token.clone(), Some(chaoyang)] {
        let refused = credits(token, 10, None).await;
        assert_eq!(common::code(&refused), "FORBIDDEN", "{refused}");
        // The pair itself is public: only its credits are null.
        assert_eq!(
            refused["data"]["partnership"]["id"],
            pair.id.to_string(),
            "{refused}"
        );
        assert!(
            refused["data"]["partnership"]["credits"].is_null(),
            "{refused}"
        );
    }
}

/// Withdrawing an agreement whose spend target kept a later
/// certified-spend target in check would leave targets every record path
/// refuses (certified spend above spend): refused, saying which.
#[tokio::test]
async fn an_agreement_is_not_withdrawn_when_the_targets_left_would_contradict() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let pair = app.pair("110114", "150425").await.id.to_string();
    let record = |starts: &'static str, targets: Value| {
        let (app, admin, pair) = (&app, &admin, &pair);
        async move {
            let body = app
                .graphql_as(
                    Some(admin),
                    "mutation($id: ID!, $s: Date!, $t: [YearTargetInput!]!) { recordAgreement(input: {
                        partnershipId: $id, title: \"协议\", signedOn: \"2026-01-01\", startsOn: $s,
                        endsOn: \"2027-12-31\", targets: $t }) { id } }",
                    json!({ "id": pair, "s": starts, "t": targets }),
                )
                .await;
            body["data"]["recordAgreement"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .to_owned()
        }
    };
    record(
        "2027-01-01",
        json!([{ "year": 2027, "spend": "100.00", "certifiedSpend": "50.00" }]),
    )
    .await;
    let raising = record("2027-06-01", json!([{ "year": 2027, "spend": "300.00" }])).await;
    record(
        "2027-03-01",
        json!([{ "year": 2027, "certifiedSpend": "200.00" }]),
    )
    .await;
    let refused = app
        .graphql_as(
            Some(&admin),
            "mutation($id: ID!) { withdrawAgreement(agreementId: $id, reason: \"作废\") { id } }",
            json!({ "id": raising }),
        )
        .await;
    assert_eq!(common::code(&refused), "BAD_USER_INPUT", "{refused}");
    assert!(refused.to_string().contains("2027"), "{refused}");
}

/// A custom target with all seventeen digits of a double is read back as
/// it was recorded: sent again, it is the one recorded, not a second copy
/// one ulp apart (serde_json parsed some such numbers a unit in the last
/// place off until `float_roundtrip`; one in ten of those in 0 to 10¹²).
#[tokio::test]
async fn a_custom_target_of_seventeen_digits_is_read_back_exactly() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let pair = app.pair("110114", "150425").await.id.to_string();
    let record = "mutation($id: ID!) { recordAgreement(input: { partnershipId: $id,
        title: \"协议\", signedOn: \"2026-01-01\", startsOn: \"2027-01-01\", endsOn: \"2027-12-31\",
        targets: [{ year: 2027, custom: [{ name: \"农产品销售\", target: 207961810867.32758 }] }] })
        { id targets { custom { target } } } }";
    let first = app
        .graphql_as(Some(&admin), record, json!({ "id": pair }))
        .await;
    assert!(first["errors"].is_null(), "{first}");
    let again = app
        .graphql_as(Some(&admin), record, json!({ "id": pair }))
        .await;
    assert_eq!(
        again["data"]["recordAgreement"]["id"], first["data"]["recordAgreement"]["id"],
        "{again}"
    );
    assert_eq!(
        again["data"]["recordAgreement"]["targets"][0]["custom"][0]["target"],
        json!(207961810867.32758_f64)
    );
}

/// A pair recorded by mistake — the wrong way round, or Beijing for 海淀区
/// — is withdrawn by its admin: what it was credited is taken back, it is
/// listed no more but stays on record, and the right pair (refused as its
/// reverse before) is recorded; recorded again, a withdrawn pair comes back
/// under its id. Before, a mistaken pair could not be removed, and its
/// reverse was refused for good.
#[tokio::test]
async fn a_pair_recorded_by_mistake_is_withdrawn_and_the_right_one_recorded() {
    let app = spawn_app().await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let room_type = app.homestay(1).await.room_type_id.to_string();
    let booking = confirmed_and_heard(&app, &room_type, tomorrow(), 1).await;
    let create = "mutation($s: ID!, $b: ID!) { createPartnership(input: { sponsorRegionCode: $s,
        beneficiaryRegionCode: $b, since: \"2018-06-01\" }) { id status } }";
    let pair = |s: &'static str, b: &'static str| {
        let (app, chifeng) = (&app, &chifeng);
        async move {
            let body = app
                .graphql_as(Some(chifeng), create, json!({ "s": s, "b": b }))
                .await;
            (
                body["data"]["createPartnership"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body,
            )
        }
    };
    let withdraw = |id: &str, reason: &str| {
        app.graphql_as(
            Some(&chifeng),
            "mutation($id: ID!, $r: String!) { withdrawPartnership(partnershipId: $id, reason: $r) {
                status withdrawal { reason } } }",
            json!({ "id": id, "r": reason }),
        )
    };
    let (backwards, _) = pair("150430", "110108").await;
    // A reader pages the list one pair at a time: its first page ends
    // with the pair withdrawn before it asks for the next.
    let paged = "query($after: String) { partnerships(first: 1, after: $after) {
        edges { node { id } } pageInfo { endCursor } } }";
    let page = app.graphql_as(None, paged, json!({})).await;
    let cursor = page["data"]["partnerships"]["pageInfo"]["endCursor"].clone();
    assert_eq!(
        page["data"]["partnerships"]["edges"][0]["node"]["id"], backwards,
        "{page}"
    );
    let (_, refused) = pair("110108", "150430").await;
    assert_eq!(common::code(&refused), "BAD_USER_INPUT", "{refused}");
    let (city, _) = pair("110000", "150430").await;
    let one = impact(1, 1, "380.00", "364.80", "3.80");
    wait_for_impact(&app, &booking, &[("110000-150430", one.clone())]).await;

    // Its agreements go first.
    let agreement = app
        .graphql_as(
            Some(&chifeng),
            "mutation($id: ID!) { recordAgreement(input: { partnershipId: $id, title: \"协议\",
                signedOn: \"2026-01-01\", startsOn: \"2026-01-01\", endsOn: \"2026-12-31\" }) { id } }",
            json!({ "id": city }),
        )
        .await["data"]["recordAgreement"]["id"]
        .clone();
    let first = withdraw(&city, "应为海淀区").await;
    assert_eq!(common::code(&first), "BAD_USER_INPUT", "{first}");
    let out = app
        .graphql_as(
            Some(&chifeng),
            "mutation($id: ID!) { withdrawAgreement(agreementId: $id, reason: \"随结对撤回\") { id } }",
            json!({ "id": agreement }),
        )
        .await;
    assert!(out["errors"].is_null(), "{out}");
    let expected = json!({ "status": "WITHDRAWN", "withdrawal": { "reason": "应为海淀区" } });
    for _ in 0..2 {
        // Sent again (a retry): the withdrawal recorded.
        let done = withdraw(&city, "应为海淀区").await;
        assert_eq!(done["data"]["withdrawPartnership"], expected, "{done}");
    }
    let other = withdraw(&city, "另一个原因").await;
    assert_eq!(common::code(&other), "CONFLICT", "{other}");
    let edit = app
        .graphql_as(
            Some(&chifeng),
            "mutation($id: ID!) { updatePartnership(input: { partnershipId: $id, notes: \"x\" }) { id } }",
            json!({ "id": city }),
        )
        .await;
    assert_eq!(common::code(&edit), "CONFLICT", "{edit}");
    let backwards_out = withdraw(&backwards, "录反了").await;
    assert!(backwards_out["errors"].is_null(), "{backwards_out}");
    wait_for_impact(&app, &booking, &[]).await;
    // Its report reads nothing: not a month of zeros where it counted.
    let today = shared::policy::china_today(chrono::Utc::now());
    for year in [today.year(), tomorrow().year()] {
        let report = app
            .graphql_as(
                None,
                "query($id: ID!, $y: Int!) { partnershipReport(partnershipId: $id, year: $y) {
                    totals { tourists bookings } monthly { month } } }",
                json!({ "id": city, "y": year }),
            )
            .await;
        assert_eq!(
            report["data"]["partnershipReport"],
            json!({ "totals": { "tourists": 0, "bookings": 0 }, "monthly": [] }),
            "{report}"
        );
    }
    let on_record = app
        .graphql_as(
            None,
            "query($id: ID!) { partnership(id: $id) { status withdrawal { reason } } }",
            json!({ "id": city }),
        )
        .await;
    assert_eq!(on_record["data"]["partnership"], expected, "{on_record}");
    let listed = app
        .graphql_as(
            None,
            "{ partnerships(first: 100) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["data"]["partnerships"]["totalCount"], 0, "{listed}");

    // The right pair now, and the city's again (under its id).
    let (right, body) = pair("110108", "150430").await;
    assert!(!right.is_empty(), "{body}");
    let (again, body) = pair("110000", "150430").await;
    assert_eq!(
        (again.as_str(), &body["data"]["createPartnership"]["status"]),
        (city.as_str(), &json!("ACTIVE")),
        "{body}"
    );
    wait_for_impact(
        &app,
        &booking,
        &[("110108-150430", one.clone()), ("110000-150430", one)],
    )
    .await;
    impact_checks_hold(&app).await;
    // The reader's next page: after the withdrawn pair, the city's (first
    // recorded) and the right one.
    let next = app
        .graphql_as(
            None,
            "query($after: String) { partnerships(after: $after) {
            edges { node { id } } } }",
            json!({ "after": cursor }),
        )
        .await;
    assert_eq!(
        next["data"]["partnerships"]["edges"],
        json!([{ "node": { "id": city } }, { "node": { "id": right } }]),
        "{next}"
    );
}
