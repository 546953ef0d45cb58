//! Certification (扶贫产品认定) through the gateway on the real servers:
//! apply → public notice with objections → certified until a date →
//! expired or revoked; the badge follows in search and in what bookings
//! snapshot.

mod common;

use chrono::Duration;
use common::{TestApp, code, spawn_app, spawn_app_with, test_settings, tomorrow};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use shared::policy::china_today;

const FIELDS: &str =
    "id state listingKind noticeEndsOn validUntil decisionNote evidence objections { text }";

async fn step(app: &TestApp, token: Option<&str>, mutation: &str, vars: Value) -> Value {
    let name = mutation
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_owned();
    // Declare just the variables given: GraphQL refuses unused ones.
    let declared = [("id", "ID!"), ("t", "String"), ("d", "Int"), ("v", "Date")]
        .iter()
        .filter(|(k, _)| vars.get(k).is_some())
        .map(|(k, t)| format!("${k}: {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = app
        .graphql_as(
            token,
            &format!("mutation({declared}) {{ {mutation} {{ {FIELDS} }} }}"),
            vars,
        )
        .await;
    if body["errors"].is_null() {
        body["data"][&name].clone()
    } else {
        body
    }
}

async fn apply(app: &TestApp, token: &str, listing: &str) -> Value {
    let body = app
        .graphql_as(
            Some(token),
            &format!("mutation($l: ID!) {{ applyForCertification(listingId: $l, statement: \"合作社带动12户脱贫户参与接待，收益按户分红\") {{ {FIELDS} }} }}"),
            json!({ "l": listing }),
        )
        .await;
    if body["errors"].is_null() {
        body["data"]["applyForCertification"].clone()
    } else {
        body
    }
}

/// The public notice's days pass: its end is written as today (a week
/// cannot pass in a test).
async fn serve_notice(app: &TestApp, certification: &str) {
    let db = app.service_db("inventory").await;
    let today = china_today(chrono::Utc::now());
    let id: uuid::Uuid = certification.parse().expect("certification id");
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE certifications SET notice_ends_on = $1 WHERE id = $2",
        [today.into(), id.into()],
    ))
    .await
    .expect("notice served");
}

/// Applies, accepts into a one-day notice, lets it pass and certifies for
/// the default three years; (certification id, the certified view).
async fn certify_now(app: &TestApp, admin: &str, listing: &str) -> (String, Value) {
    let id = apply(app, admin, listing).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let notice = "acceptForPublicNotice(certificationId: $id, noticeDays: $d)";
    step(app, Some(admin), notice, json!({ "id": id, "d": 1 })).await;
    serve_notice(app, &id).await;
    let certify = "certifyListing(certificationId: $id)";
    let certified = step(app, Some(admin), certify, json!({ "id": id })).await;
    (id, certified)
}

/// The homestay's badge as its region's admin reads it (the whole body).
async fn badge(app: &TestApp, admin: &str, listing: &str) -> Value {
    app.graphql_as(
        Some(admin),
        "query($id: ID!) { homestay(id: $id) { certified certifiedUntil } }",
        json!({ "id": listing }),
    )
    .await
}

async fn certified_offers(app: &TestApp) -> usize {
    let body = app
        .graphql_as(
            None,
            "query($in: Date!, $out: Date!) { searchHomestays(regionCode: \"150400\", checkIn: $in, checkOut: $out, guests: 1, certifiedOnly: true) { edges { node { certified } } } }",
            json!({ "in": tomorrow().to_string(), "out": (tomorrow() + Duration::days(1)).to_string() }),
        )
        .await;
    let edges = body["data"]["searchHomestays"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .clone();
    assert!(edges.iter().all(|e| e["node"]["certified"] == true));
    edges.len()
}

#[tokio::test]
async fn a_listing_is_certified_after_public_notice_and_loses_the_badge_when_revoked() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let homestay = app.homestay(2).await;
    let listing = homestay.homestay_id.to_string();
    assert_eq!(certified_offers(&app).await, 0);

    // Only the admins of the listing's region file and decide.
    let traveler = app.token.clone();
    assert_eq!(
        code(&apply(&app, traveler.as_deref().unwrap_or_default(), &listing).await),
        "FORBIDDEN"
    );
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    assert_eq!(code(&apply(&app, &beijing, &listing).await), "FORBIDDEN");
    assert_eq!(
        code(&apply(&app, &admin, &uuid::Uuid::new_v4().to_string()).await),
        "NOT_FOUND"
    );

    let first = apply(&app, &admin, &listing).await;
    assert_eq!(first["state"], "APPLIED", "{first}");
    assert_eq!(first["listingKind"], "HOMESTAY");
    let first = first["id"].as_str().unwrap_or_default().to_owned();
    // The same filing sent again (its answer lost) answers the one it
    // made; another is refused: one open application.
    let again = apply(&app, &admin, &listing).await;
    assert_eq!(again["id"], first.as_str(), "{again}");
    let other = app
        .graphql_as(
            Some(&admin),
            "mutation($l: ID!) { applyForCertification(listingId: $l, statement: \"另一份申请\") { id } }",
            json!({ "l": listing }),
        )
        .await;
    assert_eq!(code(&other), "CONFLICT", "one open application: {other}");
    let early = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id)",
        json!({ "id": first }),
    )
    .await;
    assert_eq!(code(&early), "CONFLICT", "{early}");
    // A resolution that is no text is the caller's input, said first as
    // every other step says it (it was CONFLICT "… is APPLIED").
    let garbled = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id, resolution: $t)",
        json!({ "id": first, "t": "a\u{1}b" }),
    )
    .await;
    assert_eq!(code(&garbled), "BAD_USER_INPUT", "{garbled}");
    assert!(garbled.to_string().contains("resolution:"), "{garbled}");
    // So is a validity of today or past five years (it was CONFLICT too).
    for day in [
        shared::policy::china_today(chrono::Utc::now()),
        shared::policy::china_today(chrono::Utc::now()) + chrono::Duration::days(6 * 366),
    ] {
        let far = step(
            &app,
            Some(&admin),
            "certifyListing(certificationId: $id, validUntil: $v)",
            json!({ "id": first, "v": day.to_string() }),
        )
        .await;
        assert_eq!(code(&far), "BAD_USER_INPUT", "{far}");
        assert!(far.to_string().contains("validUntil:"), "{far}");
    }

    // A seven-day notice: no certification before it ends.
    let notice = step(
        &app,
        Some(&admin),
        "acceptForPublicNotice(certificationId: $id, noticeDays: $d)",
        json!({ "id": first, "d": 7 }),
    )
    .await;
    let today = china_today(chrono::Utc::now());
    assert_eq!(notice["state"], "PUBLIC_NOTICE", "{notice}");
    // Seven whole days after today's: accepted late in the day, the
    // notice still stays up a week.
    assert_eq!(
        notice["noticeEndsOn"],
        (today + Duration::days(8)).to_string()
    );
    let during = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id)",
        json!({ "id": first }),
    )
    .await;
    assert_eq!(code(&during), "CONFLICT", "{during}");
    assert!(
        during["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!(
                "runs through {}; certify from {}",
                today + Duration::days(7),
                today + Duration::days(8)
            ))),
        "the notice's last day, then the first day to certify: {during}"
    );
    let rejected = step(
        &app,
        Some(&admin),
        "rejectCertification(certificationId: $id, reason: $t)",
        json!({ "id": first, "t": "价格高于市场均价" }),
    )
    .await;
    assert_eq!(rejected["state"], "REJECTED", "{rejected}");

    // Applied again, with evidence: a notice of no days is no notice; one
    // day, an objection, certified with the objection's resolution.
    let with_evidence = app
        .graphql_as(
            Some(&admin),
            &format!("mutation($l: ID!, $e: [String!]!) {{ applyForCertification(listingId: $l, statement: \"带动脱贫户\", evidence: $e) {{ {FIELDS} }} }}"),
            json!({ "l": listing, "e": ["ftp://example.cn/x"] }),
        )
        .await;
    assert_eq!(code(&with_evidence), "BAD_USER_INPUT", "{with_evidence}");
    // A link twice, a long link (said as too long, not as no URL), a
    // statement of a full stop: refused, each saying why.
    let apply = format!(
        "mutation($l: ID!, $s: String!, $e: [String!]!) {{ applyForCertification(listingId: $l, statement: $s, evidence: $e) {{ {FIELDS} }} }}"
    );
    let link = "https://a.example.cn/1";
    let long = format!("https://a.example.cn/{}", "x".repeat(600));
    for (statement, evidence, says) in [
        (
            "带动脱贫户",
            json!([link, format!(" {link} ")]),
            "listed twice",
        ),
        ("带动脱贫户", json!([long]), "at most 500 bytes"),
        ("。", json!([]), "statement: must hold a letter or a digit"),
    ] {
        let variables = json!({ "l": listing, "s": statement, "e": evidence });
        let refused = app.graphql_as(Some(&admin), &apply, variables).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
        let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{refused}");
        assert!(
            message.chars().count() < 200,
            "the link cut short: {refused}"
        );
    }
    let links = [
        "https://aohan.example.cn/fupin/2026-12.pdf",
        "https://aohan.example.cn/photos/1.jpg",
    ];
    let second = app
        .graphql_as(
            Some(&admin),
            &format!("mutation($l: ID!, $e: [String!]!) {{ applyForCertification(listingId: $l, statement: \"带动脱贫户\", evidence: $e) {{ {FIELDS} }} }}"),
            json!({ "l": listing, "e": links }),
        )
        .await["data"]["applyForCertification"]
        .clone();
    assert_eq!(second["evidence"], json!(links), "{second}");
    let second = second["id"].as_str().unwrap_or_default().to_owned();
    let no_notice = step(
        &app,
        Some(&admin),
        "acceptForPublicNotice(certificationId: $id, noticeDays: $d)",
        json!({ "id": second, "d": 0 }),
    )
    .await;
    assert_eq!(code(&no_notice), "BAD_USER_INPUT", "{no_notice}");
    let negative = step(
        &app,
        Some(&admin),
        "acceptForPublicNotice(certificationId: $id, noticeDays: $d)",
        json!({ "id": second, "d": -1 }),
    )
    .await;
    assert_eq!(
        negative["errors"][0]["message"], no_notice["errors"][0]["message"],
        "one range for every day count out of it"
    );
    step(
        &app,
        Some(&admin),
        "acceptForPublicNotice(certificationId: $id, noticeDays: $d)",
        json!({ "id": second, "d": 1 }),
    )
    .await;
    let objected = step(
        &app,
        traveler.as_deref(),
        "objectToCertification(certificationId: $id, text: $t)",
        json!({ "id": second, "t": "接待户名单未公开" }),
    )
    .await;
    assert_eq!(
        objected["objections"],
        json!([{ "text": "接待户名单未公开" }]),
        "{objected}"
    );
    // One objection per account.
    let again = step(
        &app,
        traveler.as_deref(),
        "objectToCertification(certificationId: $id, text: $t)",
        json!({ "id": second, "t": "再说一遍" }),
    )
    .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");
    // A notice keeps 200 objections at most (every reader gets them all):
    // 199 more on record, and the next account's is refused.
    {
        use sea_orm::ConnectionTrait;
        let db = app.service_db("inventory").await;
        for _ in 0..199 {
            db.execute_unprepared(&format!(
                "INSERT INTO certification_objections (certification_id, account_id, text, created_at)
                 VALUES ('{second}', '{}', '同上', now())",
                uuid::Uuid::now_v7()
            ))
            .await
            .expect("an objection on record");
        }
    }
    let late = app.register("late-objector@example.cn", "110105").await;
    let full = step(
        &app,
        Some(&late),
        "objectToCertification(certificationId: $id, text: $t)",
        json!({ "id": second, "t": "还有一条" }),
    )
    .await;
    assert_eq!(code(&full), "CONFLICT", "{full}");
    let anonymous = step(
        &app,
        None,
        "objectToCertification(certificationId: $id, text: $t)",
        json!({ "id": second, "t": "x" }),
    )
    .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    // Who objected: shown to the deciding admins, to nobody else.
    let who = "query($l: ID!) { certifications(listingId: $l, state: PUBLIC_NOTICE) { edges { node { objections { byAccountId } } } } }";
    let seen_by = |token: Option<String>| {
        let app = &app;
        let listing = listing.clone();
        async move {
            app.graphql_as(token.as_deref(), who, json!({ "l": listing }))
                .await["data"]["certifications"]["edges"][0]["node"]["objections"][0]["byAccountId"]
                .clone()
        }
    };
    assert!(seen_by(Some(admin.clone())).await.is_string());
    assert!(seen_by(None).await.is_null());
    assert!(seen_by(traveler.clone()).await.is_null());
    serve_notice(&app, &second).await;
    // The notice over, objections are closed (one came weeks after).
    let after = app.register("after-notice@example.cn", "110105").await;
    let closed = step(
        &app,
        Some(&after),
        "objectToCertification(certificationId: $id, text: $t)",
        json!({ "id": second, "t": "迟到的异议" }),
    )
    .await;
    assert_eq!(code(&closed), "CONFLICT", "{closed}");
    assert!(
        closed["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("objections are closed")),
        "{closed}"
    );
    let valid_until = (today + Duration::days(365)).to_string();
    let unresolved = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id, validUntil: $v)",
        json!({ "id": second, "v": valid_until }),
    )
    .await;
    assert_eq!(code(&unresolved), "BAD_USER_INPUT", "{unresolved}");
    let certified = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id, validUntil: $v, resolution: $t)",
        json!({ "id": second, "v": valid_until, "t": "名单已在村务公开栏补充公示" }),
    )
    .await;
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    assert_eq!(certified["validUntil"], valid_until);
    assert_eq!(certified_offers(&app).await, 1);

    // A booking made now carries the badge in its snapshot.
    let booking = TestApp::id_of(
        &app.create_booking(
            &homestay.room_type_id.to_string(),
            tomorrow(),
            1,
            "certified",
        )
        .await,
    );
    assert_eq!(held_as_certified(&app, &booking).await, true);

    // The public notice board, newest first, for anyone.
    let board = app
        .graphql_as(None, "{ certifications(regionCode: \"150400\") { edges { node { state decisionNote objections { text } } } } }", json!({}))
        .await;
    let states: Vec<&Value> = board["data"]["certifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{board}"))
        .iter()
        .map(|e| &e["node"]["state"])
        .collect();
    assert_eq!(states, [&json!("CERTIFIED"), &json!("REJECTED")], "{board}");
    // How many, on all pages: a page of one still counts both; by state.
    let counted = app
        .graphql_as(
            None,
            "{ all: certifications(regionCode: \"150400\", first: 1) { totalCount edges { node { id } } }
               certified: certifications(regionCode: \"150400\", state: CERTIFIED) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(counted["data"]["all"]["totalCount"], 2, "{counted}");
    assert_eq!(
        counted["data"]["all"]["edges"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(counted["data"]["certified"]["totalCount"], 1, "{counted}");

    // Revoked: the badge goes at once.
    let revoked = step(
        &app,
        Some(&admin),
        "revokeCertification(certificationId: $id, reason: $t)",
        json!({ "id": second, "t": "抽查发现未落实带贫机制" }),
    )
    .await;
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    assert_eq!(certified_offers(&app).await, 0);
    let again = step(
        &app,
        Some(&admin),
        "revokeCertification(certificationId: $id, reason: $t)",
        json!({ "id": second, "t": "again" }),
    )
    .await;
    assert_eq!(code(&again), "CONFLICT");
}

/// A listing certified, then certified again (a renewal before the first
/// expired): revoking the newer takes the badge, the older with it.
#[tokio::test]
async fn revoking_a_renewed_certification_takes_the_badge_with_the_earlier_one() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let (first, _) = certify_now(&app, &admin, &listing).await;
    let (renewal, certified) = certify_now(&app, &admin, &listing).await;
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    assert_eq!(certified_offers(&app).await, 1);

    let revoked = step(
        &app,
        Some(&admin),
        "revokeCertification(certificationId: $id, reason: $t)",
        json!({ "id": renewal, "t": "抽查发现材料造假" }),
    )
    .await;
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    assert_eq!(
        certified_offers(&app).await,
        0,
        "the earlier one kept the badge"
    );
    let board = app
        .graphql_as(
            None,
            "query($l: ID!) { certifications(listingId: $l) { edges { node { id state decisionNote } } } }",
            json!({ "l": listing }),
        )
        .await;
    let earlier = board["data"]["certifications"]["edges"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["node"]["id"] == first.as_str()))
        .unwrap_or_else(|| panic!("{board}"));
    assert_eq!(
        (&earlier["node"]["state"], &earlier["node"]["decisionNote"]),
        (&json!("REVOKED"), &json!("抽查发现材料造假")),
        "{board}"
    );
}

/// The admin who certified or revoked sees the badge follow at once in
/// the next search through the same gateway, however late the service's
/// `inventory.catalogue_changed` reaches it (here: seconds late).
#[tokio::test]
async fn the_badge_follows_in_the_next_search_before_the_announcement_arrives() {
    let mut settings = test_settings();
    settings.faults = "late".into();
    let app = spawn_app_with(settings).await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    // Cached: the answer a stale gateway would keep giving.
    assert_eq!(certified_offers(&app).await, 0);
    let (id, certified) = certify_now(&app, &admin, &listing).await;
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    assert_eq!(certified_offers(&app).await, 1, "the badge did not show");
    let revoke = "revokeCertification(certificationId: $id, reason: $t)";
    step(&app, Some(&admin), revoke, json!({ "id": id, "t": "抽查" })).await;
    assert_eq!(certified_offers(&app).await, 0, "the badge stayed");
}

#[tokio::test]
async fn a_certification_expires_by_the_calendar_and_a_route_can_be_certified_too() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let homestay = app.homestay(1).await;
    let listing = homestay.homestay_id.to_string();
    let (id, certified) = certify_now(&app, &admin, &listing).await;
    let three_years = shared::policy::three_years_after(china_today(chrono::Utc::now()));
    assert_eq!(
        certified["validUntil"],
        three_years.to_string(),
        "{certified}"
    );
    assert_eq!(certified_offers(&app).await, 1);

    // The calendar moves past the validity (written here, as three years
    // cannot pass in a test): EXPIRED, and no badge, with no sweeper.
    let db = app.service_db("inventory").await;
    let yesterday = china_today(chrono::Utc::now()) - Duration::days(1);
    for sql in [
        "UPDATE certifications SET valid_until = $1",
        "UPDATE homestays SET certified_until = $1 WHERE certified_until IS NOT NULL",
    ] {
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [yesterday.into()],
        ))
        .await
        .expect("moved");
    }
    // Written behind inventory's back, the change reaches cached searches
    // with the next catalogue event (a real day passing changes the date in
    // the cache's key): any calendar change will do.
    let touch = app
        .graphql_as(
            Some(&admin),
            "mutation($rt: ID!, $from: Date!, $to: Date!) { setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, price: \"380.00\") }",
            json!({ "rt": homestay.room_type_id.to_string(), "from": tomorrow().to_string(),
                    "to": (tomorrow() + Duration::days(1)).to_string() }),
        )
        .await;
    assert!(touch["errors"].is_null(), "{touch}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while certified_offers(&app).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired badge stayed in search"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let board = app
        .graphql_as(
            None,
            "{ certifications(state: EXPIRED) { totalCount edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        board["data"]["certifications"]["edges"][0]["node"]["id"],
        id.as_str(),
        "{board}"
    );
    assert_eq!(board["data"]["certifications"]["totalCount"], 1, "{board}");

    // A route: certified, found with certifiedOnly.
    let route = app
        .graphql_as(
            Some(&admin),
            "mutation { createRoute(input: { hostName: \"合作社\", regionCode: \"150430\", titleZh: \"敖汉 两日\", titleEn: \"Aohan, two days\",
                itinerary: [{ day: 1, title: \"兴隆洼\", regionCodes: [\"150430\"] }], pricePerPerson: \"800\" }) { routeId } }",
            json!({}),
        )
        .await["data"]["createRoute"]["routeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, certified) = certify_now(&app, &admin, &route).await;
    assert_eq!(certified["listingKind"], "ROUTE", "{certified}");
    let read = app
        .graphql_as(
            Some(&admin),
            "query($id: ID!) { route(id: $id) { certified certifiedUntil } }",
            json!({ "id": route }),
        )
        .await;
    assert_eq!(
        read["data"]["route"],
        json!({ "certified": true, "certifiedUntil": three_years.to_string() }),
        "{read}"
    );
}

/// The board shows the certifications of listings on sale, and every one
/// in public notice (公示 is public by its nature); those of a listing off
/// sale are its region's admins' to see, as the listing itself is.
#[tokio::test]
async fn the_board_keeps_a_listing_off_sale_to_its_admins_except_in_public_notice() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let elsewhere = app.region_admin("guizhou@example.cn", "520000").await;
    let traveler = app.register("reader@example.cn", "110105").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let publish = |on: bool| {
        let (app, admin, listing) = (&app, &admin, &listing);
        async move {
            let body = app
                .graphql_as(
                    Some(admin),
                    "mutation($l: ID!, $p: Boolean!) { publishListing(listingId: $l, published: $p) { published } }",
                    json!({ "l": listing, "p": on }),
                )
                .await;
            assert_eq!(body["data"]["publishListing"]["published"], on, "{body}");
        }
    };
    publish(false).await;
    let id = apply(&app, &admin, &listing).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Who reads, and whether they see a certification of a listing off sale.
    let readers = [
        (None, false),
        (Some(traveler.clone()), false),
        (Some(elsewhere.clone()), false),
        (Some(admin.clone()), true),
    ];
    for (token, shown) in readers.clone() {
        assert_eq!(
            on_board(&app, token.as_deref(), &listing, &id).await,
            shown,
            "APPLIED, off sale: {token:?}"
        );
        // An objection tells no more than the board: one not shown there is
        // not found, not "APPLIED" (an exploratory run read its state so).
        if token.is_some() {
            let objected = step(
                &app,
                token.as_deref(),
                "objectToCertification(certificationId: $id, text: $t)",
                json!({ "id": id, "t": "接待户名单未公开" }),
            )
            .await;
            let code = &objected["errors"][0]["extensions"]["code"];
            let expected = if shown { "CONFLICT" } else { "NOT_FOUND" };
            assert_eq!(code, expected, "{token:?}: {objected}");
        }
    }
    let notice = "acceptForPublicNotice(certificationId: $id, noticeDays: $d)";
    step(&app, Some(&admin), notice, json!({ "id": id, "d": 1 })).await;
    for (token, _) in readers.clone() {
        assert!(
            on_board(&app, token.as_deref(), &listing, &id).await,
            "in public notice, to all: {token:?}"
        );
    }
    serve_notice(&app, &id).await;
    let certified = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id)",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    for (token, shown) in readers.clone() {
        assert_eq!(
            on_board(&app, token.as_deref(), &listing, &id).await,
            shown,
            "CERTIFIED, off sale: {token:?}"
        );
        // Nor does an admin's step taken by someone who is not its admin:
        // to another region's admin a certification not on their board is
        // not found, not FORBIDDEN (which named its region); a traveler is
        // refused as on any admin's step, whatever the id (which says
        // nothing of it).
        if let Some(token) = token.as_deref().filter(|_| !shown) {
            let revoked = step(
                &app,
                Some(token),
                "revokeCertification(certificationId: $id, reason: $t)",
                json!({ "id": id, "t": "越权" }),
            )
            .await;
            let expected = if token == elsewhere {
                "NOT_FOUND"
            } else {
                "FORBIDDEN"
            };
            assert_eq!(code(&revoked), expected, "{revoked}");
        }
    }
    publish(true).await;
    // On the board, another region's admin is told it is not theirs.
    let revoked = step(
        &app,
        Some(&elsewhere),
        "revokeCertification(certificationId: $id, reason: $t)",
        json!({ "id": id, "t": "越权" }),
    )
    .await;
    assert_eq!(code(&revoked), "FORBIDDEN", "{revoked}");
    for (token, _) in readers.clone() {
        assert!(
            on_board(&app, token.as_deref(), &listing, &id).await,
            "on sale, to all: {token:?}"
        );
    }
}

/// Whether the certification `id` of `listing` is on the board `token`
/// reads, asked by listing and by region (and their counts agree).
async fn on_board(app: &TestApp, token: Option<&str>, listing: &str, id: &str) -> bool {
    let mut seen = Vec::new();
    for query in [
        "query($l: ID) { certifications(listingId: $l) { totalCount edges { node { id } } } }",
        "{ certifications(regionCode: \"150430\") { totalCount edges { node { id } } } }",
    ] {
        let vars = if query.contains("listingId") {
            json!({ "l": listing })
        } else {
            json!({})
        };
        let body = app.graphql_as(token, query, vars).await;
        let found = common::edges(&body, "certifications");
        assert_eq!(
            body["data"]["certifications"]["totalCount"],
            found.len(),
            "the count agrees with the page: {body}"
        );
        seen.push(found.iter().any(|e| e["node"]["id"] == id));
    }
    assert_eq!(seen[0], seen[1], "by listing and by region alike");
    seen[0]
}

/// A revocation of a listing's certificate and the certification of its
/// renewal at once: the listing ends certified until the renewal's date.
/// Each step recomputed the listing's badge from what it saw: the one
/// committing last had seen the other's change not yet made, and the
/// listing was left uncertified, or certified until the revoked
/// certificate's date (an exploratory run then counted a booking's spend
/// as certified with no valid certificate).
#[tokio::test]
async fn a_revocation_and_a_renewal_at_once_leave_the_renewal_in_force() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let (first, _) = certify_now(&app, &admin, &listing).await;
    let renewal = apply(&app, &admin, &listing).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let notice = "acceptForPublicNotice(certificationId: $id, noticeDays: $d)";
    step(&app, Some(&admin), notice, json!({ "id": renewal, "d": 1 })).await;
    serve_notice(&app, &renewal).await;
    let until = china_today(chrono::Utc::now()) + Duration::days(400);
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM homestays WHERE id = '{listing}' FOR NO KEY UPDATE"),
    )
    .await;
    let (revoked, certified) = held
        .race(
            step(
                &app,
                Some(&admin),
                "revokeCertification(certificationId: $id, reason: $t)",
                json!({ "id": first, "t": "抽查发现材料造假" }),
            ),
            step(
                &app,
                Some(&admin),
                "certifyListing(certificationId: $id, validUntil: $v)",
                json!({ "id": renewal, "v": until.to_string() }),
            ),
        )
        .await;
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    let read = badge(&app, &admin, &listing).await;
    assert_eq!(
        read["data"]["homestay"],
        json!({ "certified": true, "certifiedUntil": until.to_string() }),
        "{read}"
    );
}

/// A revocation while another step holds the listing's other certificate
/// (here the test, as a renewal's certify or a mistaken second revoke does
/// while it waits for the listing): the revocation waits for it and takes
/// it too, so the listing loses its badge. It passed such a certificate
/// over, answered REVOKED, and the listing stayed certified by the other.
#[tokio::test]
async fn a_revocation_waits_for_a_certificate_another_step_holds_and_takes_it_too() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let (first, _) = certify_now(&app, &admin, &listing).await;
    let (renewal, _) = certify_now(&app, &admin, &listing).await;
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("SELECT id FROM certifications WHERE id = '{renewal}' FOR UPDATE"),
    )
    .await;
    let (revoked, ()) = tokio::join!(
        step(
            &app,
            Some(&admin),
            "revokeCertification(certificationId: $id, reason: $t)",
            json!({ "id": first, "t": "抽查未落实带贫机制" }),
        ),
        async {
            held.until_waiting(1, true).await;
            held.release().await;
        }
    );
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    let read = badge(&app, &admin, &listing).await;
    assert_eq!(
        read["data"]["homestay"],
        json!({ "certified": false, "certifiedUntil": null }),
        "{read}"
    );
}

/// A certificate that lapsed stays EXPIRED, with its own note, when a later
/// one of the listing is revoked (it was rewritten REVOKED with the
/// revocation's reason, though revoking it was refused as EXPIRED).
#[tokio::test]
async fn revoking_a_certificate_leaves_an_earlier_lapsed_one_expired() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let (lapsed, _) = certify_now(&app, &admin, &listing).await;
    let db = app.service_db("inventory").await;
    db.execute_unprepared(&format!(
        "UPDATE certifications SET valid_until = CURRENT_DATE - 2 WHERE id = '{lapsed}'"
    ))
    .await
    .expect("lapsed");
    let (current, _) = certify_now(&app, &admin, &listing).await;
    let revoked = step(
        &app,
        Some(&admin),
        "revokeCertification(certificationId: $id, reason: $t)",
        json!({ "id": current, "t": "撤销新证" }),
    )
    .await;
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    let board = app
        .graphql_as(
            Some(&admin),
            "query($l: ID!) { certifications(listingId: $l) { edges { node { id state decisionNote } } } }",
            json!({ "l": listing }),
        )
        .await;
    let earlier = board["data"]["certifications"]["edges"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["node"]["id"] == lapsed.as_str()))
        .unwrap_or_else(|| panic!("{board}"));
    assert_eq!(
        (&earlier["node"]["state"], &earlier["node"]["decisionNote"]),
        (&json!("EXPIRED"), &Value::Null),
        "{board}"
    );
}

/// Accepts and rejections of one application at once: each step that
/// goes through answers the state it made, not one another admin's step
/// made just after (the answer was read after the commit: an accept
/// answered REJECTED, 2 races in 8 in an exploratory run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_answers_the_state_it_made_though_another_follows_at_once() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let accept = "acceptForPublicNotice(certificationId: $id, noticeDays: $d)";
    let reject = "rejectCertification(certificationId: $id, reason: $t)";
    for _ in 0..20 {
        let id = apply(&app, &admin, &listing).await["id"]
            .as_str()
            .unwrap_or_else(|| panic!("applied"))
            .to_owned();
        let accepts = (0..3).map(|_| step(&app, Some(&admin), accept, json!({ "id": id, "d": 1 })));
        let rejects = (0..3).map(|_| {
            step(
                &app,
                Some(&admin),
                reject,
                json!({ "id": id, "t": "材料不全" }),
            )
        });
        let (accepted, rejected) = tokio::join!(
            futures::future::join_all(accepts),
            futures::future::join_all(rejects)
        );
        for (answers, made) in [(accepted, "PUBLIC_NOTICE"), (rejected, "REJECTED")] {
            for answer in answers.iter().filter(|a| a["errors"].is_null()) {
                assert_eq!(answer["state"], made, "{answer}");
            }
        }
        // Whatever the order, it ends rejected (a notice may be rejected).
        let state = step(
            &app,
            Some(&admin),
            reject,
            json!({ "id": id, "t": "材料不全" }),
        )
        .await;
        assert!(
            state["state"] == "REJECTED" || common::code(&state) == "CONFLICT",
            "{state}"
        );
    }
}

/// A booking whose take waits on a revocation committing (the test holds
/// the homestay's row, its badge cleared, until the take waits on it)
/// keeps the listing as it is after: not certified. Its snapshot was the
/// one read before the wait, and certified spend counted a booking made
/// after the badge was gone (a refund rule changed meanwhile the same).
#[tokio::test]
async fn a_booking_taken_while_a_revocation_commits_is_not_certified() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let homestay = app.homestay(1).await;
    let listing = homestay.homestay_id.to_string();
    certify_now(&app, &admin, &listing).await;
    let held = common::LockHeld::begin(
        app.service_db("inventory").await,
        &format!("UPDATE homestays SET certified_until = NULL WHERE id = '{listing}'"),
    )
    .await;
    let room_type = homestay.room_type_id.to_string();
    let (created, ()) = tokio::join!(
        app.create_booking(&room_type, tomorrow(), 1, "during-revocation"),
        async {
            held.until_waiting(1, true).await;
            held.release().await;
        }
    );
    let booking = TestApp::id_of(&created);
    assert_eq!(held_as_certified(&app, &booking).await, false);
}

/// Whether `booking`, once held, keeps its listing as certified.
async fn held_as_certified(app: &TestApp, booking: &str) -> Value {
    app.wait_for_status(booking, "AWAITING_PAYMENT").await;
    let snapshot = app
        .graphql(
            "query($id: ID!) { booking(id: $id) { listing { certified } } }",
            json!({ "id": booking }),
        )
        .await;
    let certified = &snapshot["data"]["booking"]["listing"]["certified"];
    assert!(certified.is_boolean(), "{snapshot}");
    certified.clone()
}

/// Every decision sent again as it was (a retry after a lost answer)
/// answers what it recorded; with another reason, CONFLICT as before. A
/// retried revocation, rejection, certification or acceptance was a
/// CONFLICT ("the certification is REVOKED") though it had gone through.
#[tokio::test]
async fn a_decision_sent_again_answers_what_it_recorded() {
    let app = spawn_app().await;
    let admin = app.region_admin("chifeng@example.cn", "150400").await;
    let listing = app.homestay(1).await.homestay_id.to_string();
    let (first, certified) = certify_now(&app, &admin, &listing).await;
    assert_eq!(certified["state"], "CERTIFIED", "{certified}");
    let again = step(
        &app,
        Some(&admin),
        "certifyListing(certificationId: $id)",
        json!({ "id": first }),
    )
    .await;
    assert_eq!(again, certified, "a certify sent again");
    let revoke = "revokeCertification(certificationId: $id, reason: $t)";
    let reason = json!({ "id": first, "t": "抽查未落实带贫机制" });
    let revoked = step(&app, Some(&admin), revoke, reason.clone()).await;
    assert_eq!(revoked["state"], "REVOKED", "{revoked}");
    assert_eq!(step(&app, Some(&admin), revoke, reason).await, revoked);
    let other = step(
        &app,
        Some(&admin),
        revoke,
        json!({ "id": first, "t": "另一个原因" }),
    )
    .await;
    assert_eq!(code(&other), "CONFLICT", "{other}");

    let second = apply(&app, &admin, &listing).await["id"].clone();
    let notice = "acceptForPublicNotice(certificationId: $id, noticeDays: $d)";
    let accepted = step(&app, Some(&admin), notice, json!({ "id": second, "d": 7 })).await;
    assert_eq!(accepted["state"], "PUBLIC_NOTICE", "{accepted}");
    let resent = step(&app, Some(&admin), notice, json!({ "id": second, "d": 7 })).await;
    assert_eq!(resent, accepted, "an acceptance sent again");
    let longer = step(&app, Some(&admin), notice, json!({ "id": second, "d": 10 })).await;
    assert_eq!(code(&longer), "CONFLICT", "{longer}");
    // Sent again the next day (an answer lost at 23:59, retried after
    // midnight): what it recorded, not a CONFLICT. No test waits for
    // midnight: the acceptance is moved a day back in inventory's row.
    let id = second.as_str().expect("an id");
    app.service_db("inventory")
        .await
        .execute_unprepared(&format!(
            "UPDATE certifications SET accepted_on = accepted_on - 1,
                 notice_ends_on = notice_ends_on - 1 WHERE id = '{id}'"
        ))
        .await
        .expect("accepted yesterday");
    let ends = accepted["noticeEndsOn"]
        .as_str()
        .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
        .expect("its notice's end");
    let next_day = step(&app, Some(&admin), notice, json!({ "id": second, "d": 7 })).await;
    assert_eq!(next_day["state"], "PUBLIC_NOTICE", "{next_day}");
    assert_eq!(
        next_day["noticeEndsOn"],
        (ends - Duration::days(1)).to_string(),
        "{next_day}"
    );
    let reject = "rejectCertification(certificationId: $id, reason: $t)";
    let why = json!({ "id": second, "t": "材料不全" });
    let rejected = step(&app, Some(&admin), reject, why.clone()).await;
    assert_eq!(rejected["state"], "REJECTED", "{rejected}");
    assert_eq!(step(&app, Some(&admin), reject, why).await, rejected);
}
