//! Identity and authorization through HTTP: accounts and tokens, forged and
//! revoked tokens refused, and every role kept to what it may see and do.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::{ADMIN, PASSWORD, TestApp, code, spawn_app_with, test_settings, tomorrow};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-signing-secret-of-forty-characters";
async fn app() -> TestApp {
    let mut settings = test_settings();
    settings.jwt_secret = Some(SECRET.to_owned().into());
    spawn_app_with(settings).await
}

async fn login(app: &TestApp, email: &str) -> Value {
    app.login(email).await
}

fn token(v: &Value) -> String {
    v["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {v}"))
        .to_owned()
}

const ME: &str = "{ me { email role homeRegionCode } }";

/// A token signed with `key`, with these claims over sensible defaults.
fn forge(key: &str, changes: Value) -> String {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "sub": uuid::Uuid::now_v7().to_string(), "role": "PLATFORM_ADMIN",
        "iss": "duikou", "aud": "duikou-api", "iat": now, "exp": now + 600
    });
    for (k, v) in changes.as_object().into_iter().flatten() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("encoded")
}

#[tokio::test]
async fn a_traveler_registers_logs_in_refreshes_once_per_token_and_logs_out() {
    let app = app().await;
    let me = app.graphql(ME, json!({})).await;
    assert_eq!(
        me["data"]["me"],
        json!({ "email": "traveler@example.cn", "role": "TRAVELER", "homeRegionCode": "110108" })
    );

    let again = app
        .graphql_as(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
            json!({ "i": { "email": "Traveler@Example.cn", "password": PASSWORD, "displayName": "李四", "homeRegionCode": "110108" } }),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");
    for (email, password, region) in [
        ("not-an-email", PASSWORD, "110108"),
        ("a@b.cn", "short", "110108"),
        ("a@b.cn", "          ", "110108"),
        (
            "a@b.cn",
            "\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}",
            "110108",
        ),
        ("a@b.cn", PASSWORD, "999999"),
        // Looks like the account registered above (a Cyrillic а).
        ("tr\u{430}veler@example.cn", PASSWORD, "110108"),
    ] {
        let bad = app
            .graphql_as(
                None,
                "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
                json!({ "i": { "email": email, "password": password, "displayName": "x", "homeRegionCode": region } }),
            )
            .await;
        assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    }
    // Typed full-width (a Chinese input method), it is the same address:
    // taken, and signed in to.
    let wide = app
        .graphql_as(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
            json!({ "i": { "email": "ｔｒａｖｅｌｅｒ＠ｅｘａｍｐｌｅ．ｃｎ", "password": PASSWORD, "displayName": "x", "homeRegionCode": "110108" } }),
        )
        .await;
    assert_eq!(code(&wide), "CONFLICT", "{wide}");
    assert!(login(&app, "ｔｒａｖｅｌｅｒ＠ｅｘａｍｐｌｅ．ｃｎ").await["accessToken"].is_string());
    let wrong = app
        .graphql_as(None, "mutation { login(email: \"traveler@example.cn\", password: \"wrong password!\") { accessToken } }", json!({}))
        .await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");

    let first = login(&app, "traveler@example.cn").await;
    assert_eq!(first["expiresIn"], 900);
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let second = app
        .graphql_as(None, refresh, json!({ "t": first["refreshToken"] }))
        .await;
    let second = &second["data"]["refreshToken"];
    let me = app.graphql_as(Some(&token(second)), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "traveler@example.cn");

    // The first refresh token was used: using it again (past the few
    // seconds another tab of the client may) revokes every session.
    app.exchanged_long_ago(&first["refreshToken"]).await;
    let reused = app
        .graphql_as(None, refresh, json!({ "t": first["refreshToken"] }))
        .await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    let after = app
        .graphql_as(None, refresh, json!({ "t": second["refreshToken"] }))
        .await;
    assert_eq!(
        code(&after),
        "UNAUTHENTICATED",
        "the second token went with the rest: {after}"
    );

    let third = login(&app, "traveler@example.cn").await;
    app.graphql_as(
        None,
        "mutation($t: String!) { logout(refreshToken: $t) }",
        json!({ "t": third["refreshToken"] }),
    )
    .await;
    let out = app
        .graphql_as(None, refresh, json!({ "t": third["refreshToken"] }))
        .await;
    assert_eq!(code(&out), "UNAUTHENTICATED");
}

#[tokio::test]
async fn changing_the_password_revokes_the_old_refresh_tokens() {
    let app = app().await;
    let session = login(&app, "traveler@example.cn").await;
    let same = app
        .graphql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { refreshToken } }",
            json!({ "c": PASSWORD, "n": PASSWORD }),
        )
        .await;
    assert_eq!(
        code(&same),
        "BAD_USER_INPUT",
        "no change, no new sessions: {same}"
    );
    let short = app
        .graphql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { refreshToken } }",
            json!({ "c": PASSWORD, "n": "short" }),
        )
        .await;
    assert!(
        short["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("newPassword:")),
        "the message names the argument: {short}"
    );
    let changed = app
        .graphql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { refreshToken } }",
            json!({ "c": PASSWORD, "n": "a brand new passphrase" }),
        )
        .await;
    assert!(changed["errors"].is_null(), "{changed}");
    let old = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": session["refreshToken"] }),
        )
        .await;
    assert_eq!(code(&old), "UNAUTHENTICATED");
    let new = app
        .graphql_as(None, "mutation { login(email: \"traveler@example.cn\", password: \"a brand new passphrase\") { accessToken } }", json!({}))
        .await;
    assert!(new["data"]["login"]["accessToken"].is_string(), "{new}");
}

/// A refresh rotating a token while the password changes: the rotation's
/// new token must be revoked with the rest. The test sets the interleaving
/// that lost it before the account lock: the rotation has taken its token
/// row and not yet written its new token when the revocation's `UPDATE`
/// starts (a transaction of the test holds the token row meanwhile). Without
/// the lock the revocation's snapshot misses the new token, which then
/// outlives the password change.
#[tokio::test]
async fn a_token_rotated_while_the_password_changes_is_revoked_too() {
    let app = app().await;
    let session = login(&app, "traveler@example.cn").await;
    let held = common::LockHeld::begin(
        app.service_db(gateway::identity::storage::DATABASE).await,
        "SELECT token_hash FROM refresh_tokens FOR UPDATE",
    )
    .await;
    let rotate = app.graphql_as(
        None,
        "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }",
        json!({ "t": session["refreshToken"] }),
    );
    let change = app.graphql(
        "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { refreshToken } }",
        json!({ "c": PASSWORD, "n": "a brand new passphrase" }),
    );
    // The rotation waits on its token row first, then the change.
    let (rotated, changed) = held.race(rotate, change).await;
    assert!(changed["errors"].is_null(), "{changed}");
    let rotated = &rotated["data"]["refreshToken"]["refreshToken"];
    assert!(rotated.is_string(), "{rotated}");
    let after = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": rotated }),
        )
        .await;
    assert_eq!(code(&after), "UNAUTHENTICATED", "{after}");
}

/// A login whose password is changed while it is being checked gets no
/// tokens: argon2 takes its time, and a refresh token issued from the old
/// password would outlive the change. The test holds the account's row
/// with the new hash written but not committed, so the login checks the
/// old one, then waits for the row; once the change commits, the login
/// finds another hash and is refused.
#[tokio::test]
async fn a_login_whose_password_changes_meanwhile_gets_no_tokens() {
    let app = app().await;
    let held = common::LockHeld::begin(
        app.service_db(gateway::identity::storage::DATABASE).await,
        "SELECT id FROM accounts WHERE email = 'traveler@example.cn' FOR UPDATE;
         UPDATE accounts SET password_hash = 'changed meanwhile' WHERE email = 'traveler@example.cn'",
    )
    .await;
    let login = app.graphql_as(
        None,
        "mutation($p: String!) { login(email: \"traveler@example.cn\", password: $p) { refreshToken } }",
        json!({ "p": PASSWORD }),
    );
    let (answer, ()) = tokio::join!(login, async {
        held.until_waiting(1, true).await;
        held.release().await;
    });
    assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused_with_401() {
    let app = app().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        json!({ "sub": uuid::Uuid::now_v7().to_string(), "role": "PLATFORM_ADMIN", "iss": "duikou", "aud": "duikou-api", "exp": Utc::now().timestamp() + 600 })
            .to_string(),
    );
    let none = format!("{header}.{payload}.");
    let cases = [
        ("alg none", none),
        (
            "another key",
            forge("another-secret-that-is-long-enough-to-use", json!({})),
        ),
        (
            "expired",
            forge(SECRET, json!({ "exp": Utc::now().timestamp() - 60 })),
        ),
        (
            "wrong audience",
            forge(SECRET, json!({ "aud": "someone-else" })),
        ),
        ("wrong issuer", forge(SECRET, json!({ "iss": "evil" }))),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let response = app
            .http
            .post(&app.url)
            .bearer_auth(&token)
            .json(&json!({ "query": ME }))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 401, "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(code(&body), "UNAUTHENTICATED", "{what}: {body}");
    }
    // The same claims signed with the right key pass: the refusals above are
    // about the token, not the claims.
    let good = forge(SECRET, json!({}));
    // Credentials that cannot be read are refused too, not run anonymously:
    // a header that is not text, and two headers (even if one is good).
    let unreadable = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("bytes");
    let bad_headers = [
        vec![unreadable],
        vec![
            reqwest::header::HeaderValue::from_str("garbage").expect("text"),
            reqwest::header::HeaderValue::from_str(&format!("Bearer {good}")).expect("text"),
        ],
        vec![
            reqwest::header::HeaderValue::from_str(&format!("Bearer {good}")).expect("text"),
            reqwest::header::HeaderValue::from_str("garbage").expect("text"),
        ],
    ];
    for values in bad_headers {
        let mut headers = reqwest::header::HeaderMap::new();
        for v in &values {
            headers.append(reqwest::header::AUTHORIZATION, v.clone());
        }
        let response = app
            .http
            .post(&app.url)
            .headers(headers)
            .json(&json!({ "query": ME }))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 401, "{values:?}");
    }
    let body = app
        .graphql_as(Some(&good), "{ regions { code } }", json!({}))
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// A refresh, a login or a logout sent with the access token an app still
/// holds — expired here — runs: each takes credentials of its own (an auth
/// link attaching the stale token to every request looped 401 → refresh →
/// 401, and could not log out). Anything else with it is 401, a sign-in
/// beside another field included.
#[tokio::test]
async fn signing_in_refreshing_and_logging_out_run_with_a_stale_access_token() {
    let app = app().await;
    let refresh_token = |v: &Value| {
        v["refreshToken"]
            .as_str()
            .expect("a refresh token")
            .to_owned()
    };
    let first = refresh_token(&login(&app, "traveler@example.cn").await);
    let stale = forge(SECRET, json!({ "exp": Utc::now().timestamp() - 60 }));
    let send = |query: &'static str, variables: Value| {
        let (app, stale) = (&app, stale.clone());
        async move {
            let response = app
                .http
                .post(&app.url)
                .bearer_auth(&stale)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .expect("answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, refreshed) = send(
        // Named, and sent without `operationName`, as plain clients do.
        "mutation Refresh($t: String!) { refreshToken(token: $t) { refreshToken } }",
        json!({ "t": first }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let second = refresh_token(&refreshed["data"]["refreshToken"]);
    let (status, signed_in) = send(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
        json!({ "e": "traveler@example.cn", "p": common::PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{signed_in}");
    assert!(
        signed_in["data"]["login"]["accessToken"].is_string(),
        "{signed_in}"
    );
    let (status, out) = send(
        "mutation($t: String!) { logout(refreshToken: $t) }",
        json!({ "t": second }),
    )
    .await;
    assert_eq!(
        (status, &out["data"]["logout"]),
        (200, &json!(true)),
        "{out}"
    );
    for (query, variables) in [
        (ME, json!({})),
        (
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } changePassword(currentPassword: $p, newPassword: \"another-password-2027\") { accessToken } }",
            json!({ "e": "traveler@example.cn", "p": common::PASSWORD }),
        ),
    ] {
        let (status, body) = send(query, variables).await;
        assert_eq!(status, 401, "{query}: {body}");
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    }
}

#[tokio::test]
async fn every_role_is_kept_to_its_own_bookings() {
    let app = app().await;
    let room_type = app.homestay(5).await.room_type_id.to_string();
    let mine = TestApp::id_of(&app.create_booking(&room_type, tomorrow(), 1, "k").await);
    app.wait_for_status(&mine, "AWAITING_PAYMENT").await;

    let other = app.register("other@example.cn", "110105").await;
    let booking = "query($id: ID!) { booking(id: $id) { id status } }";
    let theirs = app
        .graphql_as(Some(&other), booking, json!({ "id": mine }))
        .await;
    assert_eq!(code(&theirs), "FORBIDDEN", "{theirs}");
    let anonymous = app.graphql_as(None, booking, json!({ "id": mine })).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    for mutation in [
        "mutation($id: ID!) { cancelBooking(bookingId: $id, idempotencyKey: \"x\") { status } }",
        "mutation($id: ID!) { payBooking(bookingId: $id, paymentToken: \"tok_success\", idempotencyKey: \"x\") { status } }",
    ] {
        let refused = app
            .graphql_as(Some(&other), mutation, json!({ "id": mine }))
            .await;
        assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    }
    // Paid or awaiting payment, heard by the gateway or read, with a
    // token or a blank: one wording.
    let pay = "mutation($id: ID!, $t: String!) { payBooking(bookingId: $id, paymentToken: $t, idempotencyKey: \"x\") { status } }";
    let paid = app
        .paid_booking(&room_type, tomorrow(), "tok_success")
        .await;
    app.wait_for_status(&paid, "CONFIRMED").await;
    for (id, t) in [
        (&mine, "tok_success"),
        (&mine, " "),
        (&paid, "tok_success"),
        (&paid, " "),
    ] {
        let refused = app
            .graphql_as(Some(&other), pay, json!({ "id": id, "t": t }))
            .await;
        assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
        assert_eq!(
            refused["errors"][0]["message"], "only the booker pays a booking",
            "{refused}"
        );
    }
    // The same idempotency key from another traveler is another booking.
    let same_key = TestApp::id_of(
        &app.graphql_as(
            Some(&other),
            "mutation($i: CreateBookingInput!) { createBooking(input: $i, idempotencyKey: \"k\") { id } }",
            json!({ "i": {
                "roomTypeId": room_type, "checkIn": tomorrow().to_string(), "checkOut": (tomorrow() + chrono::Duration::days(1)).to_string(),
                "travelers": [{ "name": "李四", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
                "contact": { "name": "李四", "phone": "13900139000" } } }),
        )
        .await,
    );
    assert_ne!(same_key, mine);
    let list = "{ myBookings(first: 10) { edges { node { id } } pageInfo { hasNextPage } } }";
    let own = app.graphql_as(Some(&other), list, json!({})).await;
    assert_eq!(
        own["data"]["myBookings"]["edges"],
        json!([{ "node": { "id": same_key } }]),
        "{own}"
    );

    // Region admins: 赤峰市 sees the 敖汉旗 booking but may not cancel it; 北京市 sees nothing.
    let admin = token(&login(&app, ADMIN).await);
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let seen = app
        .graphql_as(Some(&chifeng), booking, json!({ "id": mine }))
        .await;
    assert_eq!(seen["data"]["booking"]["id"], mine, "{seen}");
    let cancel = app
        .graphql_as(Some(&chifeng), "mutation($id: ID!) { cancelBooking(bookingId: $id, idempotencyKey: \"c\") { status } }", json!({ "id": mine }))
        .await;
    assert_eq!(code(&cancel), "FORBIDDEN");
    let not_seen = app
        .graphql_as(Some(&beijing), booking, json!({ "id": mine }))
        .await;
    assert_eq!(code(&not_seen), "FORBIDDEN");
    // The region's list: 赤峰市 has it, 北京市 nothing; not for travelers.
    let region_list = "{ regionBookings(first: 10) { edges { node { id } } } }";
    let listed = app.graphql_as(Some(&chifeng), region_list, json!({})).await;
    assert!(
        listed["data"]["regionBookings"]["edges"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["node"]["id"] == mine.as_str())),
        "{listed}"
    );
    let none = app.graphql_as(Some(&beijing), region_list, json!({})).await;
    assert_eq!(none["data"]["regionBookings"]["edges"], json!([]), "{none}");
    assert_eq!(
        code(&app.graphql(region_list, json!({})).await),
        "FORBIDDEN"
    );
    // Only a platform admin grants roles.
    let self_grant = app
        .graphql_as(
            Some(&chifeng),
            "mutation { grantRole(email: \"chifeng@example.cn\", role: PLATFORM_ADMIN) { role } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&self_grant), "FORBIDDEN");
    // Nor does a platform admin take the role from themselves (the last
    // one would leave nobody to grant it back).
    let demoted = app
        .graphql_as(
            Some(&admin),
            "mutation($e: String!) { grantRole(email: $e, role: TRAVELER) { role } }",
            json!({ "e": common::ADMIN }),
        )
        .await;
    assert_eq!(code(&demoted), "CONFLICT", "{demoted}");
    let me = app
        .graphql_as(Some(&admin), "{ me { role } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["role"], "PLATFORM_ADMIN", "{me}");
    let platform = app
        .graphql_as(Some(&admin), booking, json!({ "id": mine }))
        .await;
    assert_eq!(platform["data"]["booking"]["status"], "AWAITING_PAYMENT");
    // An admin does not book.
    let admin_books = app
        .graphql_as(
            Some(&admin),
            "mutation($i: CreateBookingInput!) { createBooking(input: $i, idempotencyKey: \"a\") { id } }",
            json!({ "i": {
                "roomTypeId": room_type, "checkIn": tomorrow().to_string(), "checkOut": (tomorrow() + chrono::Duration::days(1)).to_string(),
                "travelers": [{ "name": "王五", "idType": "PASSPORT", "idNumber": "E12345678" }],
                "contact": { "name": "王五", "phone": "13700137000" } } }),
        )
        .await;
    assert_eq!(code(&admin_books), "FORBIDDEN", "{admin_books}");
}

#[tokio::test]
async fn public_reads_need_no_token_and_mutations_are_refused_over_get() {
    let app = app().await;
    let regions = app
        .graphql_as(
            None,
            "{ regions { code } welfareFund { balance { amount } } }",
            json!({}),
        )
        .await;
    assert!(regions["errors"].is_null(), "{regions}");
    let get = app
        .http
        .get(&app.url)
        .query(&[("query", "{ regions { code } }")])
        .send()
        .await
        .expect("answer");
    assert_eq!(get.status(), 200);
    let mutation = app
        .http
        .get(&app.url)
        .query(&[("query", "mutation { logout(refreshToken: \"x\") }")])
        .send()
        .await
        .expect("answer");
    assert_eq!(mutation.status(), 405);
}

/// The services check the principal themselves: a request that reaches them
/// past the gateway (anything that can publish to the broker) with a
/// traveler's or another region's principal is refused.
#[tokio::test]
async fn services_refuse_principals_without_the_right_even_past_the_gateway() {
    use shared::auth::{Principal, Role};
    use shared::bus::call;
    use shared::region::RegionCode;
    let app = common::spawn_app().await;
    let bus = app.app.rt.bus.as_ref();
    let who = |role: Role, scope: Option<&str>| Principal {
        account_id: shared::ids::AccountId::new(),
        role,
        home_region: RegionCode::parse("110108").ok(),
        agency_id: None,
        region_scope: scope.and_then(|s| RegionCode::parse(s).ok()),
    };
    let traveler = who(Role::Traveler, None);
    let refused = call(
        bus,
        &shared::rpcs::GetHostBalances {
            up_to: None,
            payable: true,
            by: traveler.clone(),
        },
    )
    .await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.code),
        Err(shared::ErrorCode::Forbidden)
    );
    let refused = call(
        bus,
        &shared::rpcs::RunPayouts {
            reference: "sneaky".into(),
            up_to: None,
            by: traveler,
        },
    )
    .await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.code),
        Err(shared::ErrorCode::Forbidden)
    );
    let pair = |by: Principal| shared::rpcs::CreatePartnership {
        sponsor: RegionCode::parse("110108").expect("code"),
        beneficiary: RegionCode::parse("150430").expect("code"),
        since: None,
        notes: None,
        demo: false,
        by,
    };
    let elsewhere = call(bus, &pair(who(Role::RegionAdmin, Some("522631")))).await;
    assert_eq!(
        elsewhere.map(|_| ()).map_err(|e| e.code),
        Err(shared::ErrorCode::Forbidden)
    );
    let chifeng = call(bus, &pair(who(Role::RegionAdmin, Some("150400")))).await;
    assert!(chifeng.is_ok(), "{chifeng:?}");
}

/// Payment judges who may see or pay a booking's money itself: its booker
/// and the admins of the listing's region see it, nobody else; only the
/// booker pays.
#[tokio::test]
async fn payment_shows_a_bookings_money_only_to_whom_the_booking_is() {
    use shared::auth::{Principal, Role};
    use shared::bus::call;
    use shared::region::RegionCode;
    let app = common::spawn_app().await;
    let created = app.homestay(1).await;
    let id = app
        .paid_booking(
            &created.room_type_id.to_string(),
            common::tomorrow(),
            "tok_success",
        )
        .await;
    app.wait_for_status(&id, "CONFIRMED").await;
    let bus = app.app.rt.bus.as_ref();
    let booking_id: shared::ids::BookingId = id.parse().expect("booking id");
    let booking = call(
        bus,
        &shared::rpcs::GetBooking {
            booking_id,
            viewer: Principal::platform(),
        },
    )
    .await
    .expect("booking");
    let booker = booking.booker.expect("booked by someone");
    let who = |account: shared::ids::AccountId, role: Role, scope: Option<&str>| Principal {
        account_id: account,
        role,
        home_region: RegionCode::parse("110108").ok(),
        agency_id: None,
        region_scope: scope.and_then(|s| RegionCode::parse(s).ok()),
    };
    let payments_seen_by = |viewer: Principal| async move {
        let money = call(
            bus,
            &shared::rpcs::GetBookingsMoney {
                booking_ids: vec![booking_id],
                viewer,
            },
        )
        .await
        .expect("answered");
        money[0].payments.len()
    };
    let fresh = shared::ids::AccountId::new;
    assert_eq!(
        payments_seen_by(who(booker.account_id, Role::Traveler, None)).await,
        1,
        "the booker"
    );
    assert_eq!(
        payments_seen_by(who(fresh(), Role::RegionAdmin, Some("150400"))).await,
        1,
        "赤峰's admin"
    );
    assert_eq!(
        payments_seen_by(who(fresh(), Role::Traveler, None)).await,
        0,
        "a stranger"
    );
    assert_eq!(
        payments_seen_by(who(fresh(), Role::RegionAdmin, Some("110108"))).await,
        0,
        "海淀's admin"
    );
    // Who pays is asked first: a blank token or key from a stranger (what
    // the gateway sends of a booking it heard) is refused as a good one.
    for (key, token) in [
        ("not-mine", "tok_success"),
        ("not-mine", " "),
        (" ", "tok_success"),
    ] {
        let paid_by_stranger = call(
            bus,
            &shared::rpcs::PayBooking {
                idempotency_key: key.into(),
                booking: booking.clone(),
                payment_token: token.into(),
                viewer: who(fresh(), Role::Traveler, None),
            },
        )
        .await;
        assert_eq!(
            paid_by_stranger
                .map(|_| ())
                .map_err(|e| (e.code, e.message)),
            Err((
                shared::ErrorCode::Forbidden,
                shared::rpcs::ONLY_THE_BOOKER_PAYS.to_owned()
            )),
            "{key:?} {token:?}"
        );
    }
}

/// An agency's API client token (the agency made by the platform admin).
async fn agency_token(app: &TestApp, admin: &str) -> (String, String) {
    let agency = app
        .graphql_as(
            Some(admin),
            "mutation { createAgency(name: \"京城旅行社\", homeRegionCode: \"110105\", commissionBasisPoints: 500) { id } }",
            json!({}),
        )
        .await["data"]["createAgency"]["id"]
        .as_str()
        .expect("agency")
        .to_owned();
    let creds = app
        .graphql_as(
            Some(admin),
            "mutation($a: ID!) { createApiClient(agencyId: $a, name: \"system\") { clientId clientSecret } }",
            json!({ "a": agency }),
        )
        .await["data"]["createApiClient"]
        .clone();
    let issued = app
        .graphql_as(
            None,
            "mutation($c: String!, $s: String!) { apiClientToken(clientId: $c, clientSecret: $s) { accessToken } }",
            json!({ "c": creds["clientId"], "s": creds["clientSecret"] }),
        )
        .await;
    (
        agency,
        issued["data"]["apiClientToken"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned(),
    )
}

#[tokio::test]
async fn each_role_is_refused_every_read_and_change_outside_its_reach_and_nothing_moves() {
    let app = app().await;
    let admin = token(&login(&app, ADMIN).await);
    let homestay = app.homestay(3).await; // in 敖汉旗 (150430, under 赤峰市 150400)
    let room_type = homestay.room_type_id.to_string();
    let booking = app
        .paid_booking(
            &room_type,
            tomorrow() + chrono::Duration::days(9),
            "tok_success",
        )
        .await;
    app.wait_for_status(&booking, "CONFIRMED").await;

    let traveler = app.token.clone().expect("the test traveler");
    let other = app.register("other@example.cn", "110105").await;
    let (_, agency) = agency_token(&app, &admin).await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    let beijing = app.region_admin("beijing@example.cn", "110000").await;
    let roles = [
        ("traveler", &traveler),
        ("another traveler", &other),
        ("an agency", &agency),
        ("赤峰's admin", &chifeng),
        ("北京's admin", &beijing),
    ];
    let day = tomorrow().to_string();
    let next_day = (tomorrow() + chrono::Duration::days(1)).to_string();
    let vars = json!({ "b": booking, "rt": room_type, "h": homestay.homestay_id.to_string(),
                       "from": day, "to": next_day });
    // (what, the operation, the roles refused; everyone else may). All
    // declare the same variables and use the ones they need.
    let head = "($b: ID!, $rt: ID!, $h: ID!, $from: Date!, $to: Date!)";
    let checks: &[(&str, &str, &[&str])] = &[
        (
            "read the booking",
            "query booking(id: $b) { id }",
            &["another traveler", "an agency", "北京's admin"],
        ),
        (
            "quote its cancellation",
            "query cancellationQuote(bookingId: $b) { refund { amount } }",
            &["another traveler", "an agency", "北京's admin"],
        ),
        (
            "trace its money",
            "query bookingImpact(bookingId: $b) { paid { amount } }",
            &["another traveler", "an agency", "北京's admin"],
        ),
        (
            "cancel it",
            "mutation cancelBooking(bookingId: $b, idempotencyKey: \"x\") { status }",
            &[
                "another traveler",
                "an agency",
                "赤峰's admin",
                "北京's admin",
            ],
        ),
        (
            "pay it again",
            "mutation payBooking(bookingId: $b, paymentToken: \"tok_success\", idempotencyKey: \"x\") { status }",
            &[
                "another traveler",
                "an agency",
                "赤峰's admin",
                "北京's admin",
            ],
        ),
        (
            "refund it",
            "mutation refundPayment(bookingId: $b, amount: \"1.00\", reason: \"x\", idempotencyKey: \"x\") { status }",
            &[
                "traveler",
                "another traveler",
                "an agency",
                "赤峰's admin",
                "北京's admin",
            ],
        ),
        (
            "create an agency",
            "mutation createAgency(name: \"x\", homeRegionCode: \"110105\", commissionBasisPoints: 1) { id }",
            &["traveler", "an agency", "赤峰's admin"],
        ),
        (
            "grant a role",
            "mutation grantRole(email: \"other@example.cn\", role: PLATFORM_ADMIN) { role }",
            &[
                "traveler",
                "another traveler",
                "an agency",
                "赤峰's admin",
                "北京's admin",
            ],
        ),
        (
            "run payouts",
            "mutation runPayouts(reference: \"x\") { reference }",
            &["traveler", "an agency", "赤峰's admin"],
        ),
        (
            "read host balances",
            "query hostBalances { amount { amount } }",
            &["traveler", "an agency"],
        ),
        (
            "read the reconciliation log",
            "query reconciliationLog { edges { cursor } }",
            &["traveler", "an agency", "赤峰's admin"],
        ),
        (
            "list agencies",
            "query agencies { totalCount }",
            &["traveler", "an agency", "赤峰's admin"],
        ),
        (
            "revoke a client",
            "mutation revokeApiClient(clientId: \"dk_x\") { clientId }",
            &["traveler", "an agency", "赤峰's admin"],
        ),
        (
            "list a homestay in 敖汉旗",
            "mutation createHomestay(input: { hostName: \"x\", regionCode: \"150430\", name: \"x\", roomType: { name: \"x\", beds: 1, maxGuests: 1, rooms: 1 } }) { homestayId }",
            &["traveler", "an agency", "北京's admin"],
        ),
        (
            "add a host in 敖汉旗",
            "mutation createHost(name: \"x\", regionCode: \"150430\") { id }",
            &["traveler", "an agency", "北京's admin"],
        ),
        (
            "change its calendar",
            "mutation setRoomCalendar(roomTypeId: $rt, from: $from, to: $to, rooms: 0, price: \"1.00\")",
            &["traveler", "an agency", "北京's admin"],
        ),
        (
            "add a room type",
            "mutation addRoomType(homestayId: $h, roomType: { name: \"x\", beds: 1, maxGuests: 1, rooms: 1 }) { id }",
            &["traveler", "an agency", "北京's admin"],
        ),
        (
            "apply to certify it",
            "mutation applyForCertification(listingId: $h, statement: \"x\") { id }",
            &["traveler", "an agency", "北京's admin"],
        ),
        (
            "pair regions neither side of which is its own",
            "mutation createPartnership(input: { sponsorRegionCode: \"440105\", beneficiaryRegionCode: \"511133\" }) { id }",
            &["traveler", "an agency", "赤峰's admin", "北京's admin"],
        ),
        (
            "list the region's bookings",
            "query regionBookings { edges { cursor } }",
            &["traveler", "an agency"],
        ),
    ];
    for (what, operation, refused) in checks {
        let (kind, field) = operation.split_once(' ').expect("kind and field");
        // Declare just the variables the operation uses.
        let used: Vec<&str> = ["b", "rt", "h", "from", "to"]
            .into_iter()
            .filter(|v| field.contains(&format!("${v}")))
            .collect();
        let declared: Vec<String> = head
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .filter(|d| used.iter().any(|u| d.starts_with(&format!("${u}:"))))
            .map(str::to_owned)
            .collect();
        let query = if declared.is_empty() {
            format!("{kind} {{ {field} }}")
        } else {
            format!("{kind}({}) {{ {field} }}", declared.join(", "))
        };
        let anonymous = app.graphql_as(None, &query, vars.clone()).await;
        assert_eq!(
            code(&anonymous),
            "UNAUTHENTICATED",
            "anonymous may not {what}: {anonymous}"
        );
        for (role, token) in roles {
            if !refused.contains(&role) {
                continue;
            }
            let body = app.graphql_as(Some(token), &query, vars.clone()).await;
            assert_eq!(code(&body), "FORBIDDEN", "{role} may not {what}: {body}");
            assert!(
                body["data"].is_null()
                    || body["data"]
                        .as_object()
                        .is_some_and(|d| d.values().all(Value::is_null)),
                "{role} got data for {what}: {body}"
            );
        }
    }
    // Nothing moved: the booking stands, paid once, nothing refunded, the
    // night still sells, no agency or role was added.
    let after = app
        .graphql_as(
            Some(&traveler),
            "query($b: ID!) { booking(id: $b) { status refunded { amount } refunds { id } } }",
            json!({ "b": booking }),
        )
        .await;
    assert_eq!(
        after["data"]["booking"],
        json!({ "status": "CONFIRMED", "refunded": { "amount": "0.00" }, "refunds": [] }),
        "{after}"
    );
    let listed = app
        .graphql_as(Some(&admin), "{ agencies { totalCount } }", json!({}))
        .await;
    assert_eq!(listed["data"]["agencies"]["totalCount"], 1, "{listed}");
    let me = app.graphql_as(Some(&other), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["role"], "TRAVELER", "{me}");
    let calendar = app
        .graphql_as(
            None,
            "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { rooms } }",
            json!({ "rt": room_type, "from": day, "to": next_day }),
        )
        .await;
    assert_eq!(
        calendar["data"]["roomCalendar"],
        json!([{ "rooms": 3 }]),
        "{calendar}"
    );
}

/// Who may do something is asked before what they sent is read: a
/// traveler or an agency sending a malformed id, region or amount to an
/// admin's operation is told it is the admins' (FORBIDDEN), not what is
/// wrong with the input (BAD_USER_INPUT) — which those who may are told.
#[tokio::test]
async fn who_may_is_asked_before_the_input_is_read() {
    let app = app().await;
    let admin = token(&login(&app, ADMIN).await);
    let traveler = app.token.clone().expect("the test traveler");
    let (_, agency) = agency_token(&app, &admin).await;
    let chifeng = app.region_admin("chifeng@example.cn", "150400").await;
    // A pair whose bookings 赤峰's admin sees (敖汉旗 is its beneficiary).
    let pair = app
        .graphql_as(
            Some(&admin),
            "mutation { createPartnership(input: { sponsorRegionCode: \"110105\", beneficiaryRegionCode: \"150430\" }) { id } }",
            json!({}),
        )
        .await;
    let pair = pair["data"]["createPartnership"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a pair: {pair}"))
        .to_owned();
    let room_type = "roomType: { name: \"x\", beds: 1, maxGuests: 1, rooms: 1 }";
    // Each with something malformed in it; the admins' unless said.
    let admins: Vec<String> = vec![
        "query { hosts(regionCode: \"zz\") { edges { cursor } } }".into(),
        "query { regionListings(regionCode: \"zz\") { edges { cursor } } }".into(),
        "query { regionBookings(first: 0) { edges { cursor } } }".into(),
        format!("mutation {{ createHomestay(input: {{ regionCode: \"zz\", name: \"x\", {room_type} }}) {{ __typename }} }}"),
        "mutation { updateHomestay(homestayId: \"x\", input: { name: \"y\" }) { __typename } }".into(),
        "mutation { setRoomCalendar(roomTypeId: \"x\", from: \"2027-01-01\", to: \"2027-01-02\", price: \"abc\") }".into(),
        "mutation { createHost(name: \"x\", regionCode: \"zz\") { __typename } }".into(),
        format!("mutation {{ addRoomType(homestayId: \"x\", {room_type}) {{ __typename }} }}"),
        "mutation { updateRoomType(roomTypeId: \"x\", input: { name: \"y\" }) { __typename } }".into(),
        "mutation { publishListing(listingId: \"x\") { __typename } }".into(),
        "mutation { createRoute(input: { regionCode: \"zz\", titleZh: \"x\", itinerary: [], pricePerPerson: \"abc\" }) { __typename } }".into(),
        "mutation { updateRoute(routeId: \"x\", input: { titleZh: \"y\" }) { __typename } }".into(),
        "mutation { addDeparture(routeId: \"x\", startsOn: \"2027-01-01\", seats: 1) { __typename } }".into(),
        "mutation { updateDeparture(departureId: \"x\", seats: 1) { __typename } }".into(),
        "mutation { cancelDeparture(departureId: \"x\", reason: \"r\") { __typename } }".into(),
        "mutation { publishRoute(routeId: \"x\") { __typename } }".into(),
        "mutation { applyForCertification(listingId: \"x\", statement: \"s\") { __typename } }".into(),
        "mutation { acceptForPublicNotice(certificationId: \"x\") { __typename } }".into(),
        "mutation { certifyListing(certificationId: \"x\") { __typename } }".into(),
        "mutation { rejectCertification(certificationId: \"x\", reason: \"r\") { __typename } }".into(),
        "mutation { revokeCertification(certificationId: \"x\", reason: \"r\") { __typename } }".into(),
        "mutation { createPartnership(input: { sponsorRegionCode: \"zz\", beneficiaryRegionCode: \"zz\" }) { __typename } }".into(),
        "mutation { updatePartnership(input: { partnershipId: \"x\", notes: \"n\" }) { __typename } }".into(),
        "mutation { recordAgreement(input: { partnershipId: \"x\", title: \"t\", signedOn: \"2026-01-01\", startsOn: \"2026-01-01\", endsOn: \"2026-12-31\" }) { __typename } }".into(),
        "mutation { withdrawAgreement(agreementId: \"x\", reason: \"r\") { __typename } }".into(),
        "mutation { withdrawPartnership(partnershipId: \"x\", reason: \"r\") { __typename } }".into(),
        "query { cancellationQuote(bookingId: \"x\", forHost: true) { refund { amount } } }".into(),
        "mutation { cancelBooking(bookingId: \"x\", idempotencyKey: \"k\", forHost: \"a flood\") { __typename } }".into(),
        format!("query {{ partnership(id: \"{pair}\") {{ credits(year: 2026, first: 0) {{ totalCount }} }} }}"),
    ];
    // (the operation, who is refused, one who may and is told of the input)
    type Check<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let mut checks: Vec<Check> = admins
        .into_iter()
        .map(|q| {
            (
                q,
                vec![
                    ("a traveler", traveler.as_str()),
                    ("an agency", agency.as_str()),
                ],
                chifeng.as_str(),
            )
        })
        .collect();
    // An agency's own: those in no agency are refused before the id.
    checks.push((
        "query { agency(id: \"x\") { __typename } }".into(),
        vec![
            ("a traveler", traveler.as_str()),
            ("赤峰's admin", chifeng.as_str()),
        ],
        agency.as_str(),
    ));
    for (query, refused, may) in &checks {
        let anonymous = app.graphql_as(None, query, json!({})).await;
        assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{query}: {anonymous}");
        for (who, token) in refused {
            let body = app.graphql_as(Some(token), query, json!({})).await;
            assert_eq!(code(&body), "FORBIDDEN", "{who}, {query}: {body}");
            let said = body["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(said.starts_with("only "), "{who}, {query}: {body}");
        }
        let body = app.graphql_as(Some(may), query, json!({})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{query}: {body}");
    }
}

/// The WebSocket is for subscriptions, and lives no longer than its token:
/// a query or a mutation sent over it is refused (over HTTP it would be
/// rate-limited and checked), and the socket closes when the token it was
/// opened with expires — a revoked or demoted caller keeps no pushes.
#[tokio::test]
async fn a_websocket_runs_subscriptions_only_and_closes_when_its_token_expires() {
    use common::ws::{connect, init, next, send};
    let app = app().await;
    let mut ws = connect(&app).await;
    let ack = init(&mut ws, app.token.as_deref().expect("token")).await;
    assert_eq!(
        ack.map(|a| a["type"].clone()),
        Some(json!("connection_ack"))
    );
    for (id, query) in [
        ("q", "{ me { email } }"),
        ("m", "mutation { logout(refreshToken: \"x\") }"),
    ] {
        send(
            &mut ws,
            json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
        )
        .await;
        let refused = loop {
            let message = next(&mut ws).await.expect("an answer");
            if message["type"] != "complete" {
                break message;
            }
        };
        assert_eq!(refused["id"], id, "{refused}");
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{query}: {refused}"
        );
    }

    let short = forge(
        SECRET,
        json!({ "role": "TRAVELER", "exp": Utc::now().timestamp() + 2 }),
    );
    let mut ws = connect(&app).await;
    let ack = init(&mut ws, &short).await;
    assert_eq!(
        ack.map(|a| a["type"].clone()),
        Some(json!("connection_ack"))
    );
    send(
        &mut ws,
        json!({ "id": "feed", "type": "subscribe", "payload": { "query": "subscription { bookingsUpdated { id } }" } }),
    )
    .await;
    let expired = "the access token expired: reconnect with a fresh one (refreshToken)";
    assert_eq!(
        common::ws::close_within(&mut ws, std::time::Duration::from_secs(15)).await,
        Some((4403, expired.to_owned())),
        "the socket outlived its token by 13 s, or closed without saying why"
    );
    // Expired a moment ago (within HTTP's leeway for clocks): refused at
    // `connection_init`, not acknowledged and closed in the same instant;
    // and one expired long ago. Both in the words of a socket whose token
    // expires (the second said to "use your refresh token", as HTTP does).
    for ago in [1, 60] {
        let stale = forge(
            SECRET,
            json!({ "role": "TRAVELER", "exp": Utc::now().timestamp() - ago }),
        );
        let mut ws = connect(&app).await;
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {stale}") } }),
        )
        .await;
        assert_eq!(
            common::ws::close_within(&mut ws, std::time::Duration::from_secs(5)).await,
            Some((4403, expired.to_owned())),
            "expired {ago} s ago"
        );
    }
}

/// The refresh tokens that expired are deleted, those of accounts that
/// never sign in again too (an account's were deleted only as it was
/// issued another, so each sign-in of a dormant account stayed a row for
/// ever); live ones stay, and the expired one is refused still, as a
/// sign-in that has ended (it was "unknown refresh token", as a forged one
/// is, once its row was gone).
#[tokio::test]
async fn refresh_tokens_that_expired_are_deleted() {
    use sea_orm::ConnectionTrait;
    let app = app().await;
    let dormant = login(&app, "traveler@example.cn").await;
    login(&app, ADMIN).await;
    let db = app.service_db(gateway::identity::storage::DATABASE).await;
    let count = |sql: &'static str| common::count_of(&db, sql, vec![]);
    db.execute_unprepared(
        "UPDATE refresh_tokens SET expires_at = now() - interval '2 days'
         WHERE account_id = (SELECT id FROM accounts WHERE email = 'traveler@example.cn')",
    )
    .await
    .expect("expired");
    let expired = "SELECT COUNT(*) AS n FROM refresh_tokens WHERE expires_at < now()";
    let live = "SELECT COUNT(*) AS n FROM refresh_tokens WHERE expires_at >= now()";
    let (before, others) = (count(expired).await, count(live).await);
    assert!(
        before >= 1 && others >= 1,
        "{before} expired, {others} live"
    );
    let identity = gateway::identity::Identity::new(db.clone(), Some(SECRET), 15, 10)
        .await
        .expect("identity");
    let deleted = identity.prune_refresh_tokens(1_000).await.expect("pruned");
    assert_eq!(u64::try_from(before).ok(), Some(deleted));
    assert_eq!((count(expired).await, count(live).await), (0, others));
    let refused = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": dormant["refreshToken"] }),
        )
        .await;
    common::assert_error(
        &refused,
        "UNAUTHENTICATED",
        gateway::identity::SIGN_IN_ENDED,
    );
}

/// A gateway deletes expired refresh tokens on its own: the first prune a
/// revocation poll after it starts, and a backlog bigger than a batch (a
/// thousand) batch after batch at the polls that follow, not an hour apart
/// (`Identity::watch_revocations`; the test above calls the prune itself).
/// Two gateways run here, each of which may prune first: without the
/// batches that follow, the two first prunes leave 500 of the 2,500.
#[tokio::test]
async fn a_gateway_prunes_a_backlog_of_expired_refresh_tokens_batch_after_batch() {
    use sea_orm::ConnectionTrait;
    let app = app().await;
    let db = app.service_db(gateway::identity::storage::DATABASE).await;
    db.execute_unprepared(
        "INSERT INTO refresh_tokens (token_hash, account_id, expires_at, created_at)
         SELECT 'backlog-' || n, a.id, now() - interval '2 days', now() - interval '32 days'
         FROM accounts a, generate_series(1, 2500) n WHERE a.email = 'traveler@example.cn'",
    )
    .await
    .expect("a backlog of expired tokens");
    let another = duikou::App::start(app.settings.clone(), duikou::Part::Gateway)
        .await
        .expect("a gateway starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = common::count_of(
            &db,
            "SELECT COUNT(*) AS n FROM refresh_tokens WHERE token_hash LIKE 'backlog-%'",
            vec![],
        )
        .await;
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} expired refresh tokens left a minute after a gateway started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    another.stop().await;
}

/// A logout ends its session whichever of its refresh tokens it is given:
/// one already refreshed (an app refreshing in the background as its user
/// logs out) ends the token that replaced it. A logged-out token presented
/// again is merely dead, not a leak: the account's other sessions go on
/// (before, the first case ended nothing, and the second every session).
#[tokio::test]
async fn a_logout_ends_its_session_whichever_token_and_no_other() {
    let app = app().await;
    let logout = "mutation($t: String!) { logout(refreshToken: $t) }";
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let (phone, laptop) = (
        login(&app, "traveler@example.cn").await,
        login(&app, "traveler@example.cn").await,
    );
    let refreshed = app
        .graphql_as(None, refresh, json!({ "t": phone["refreshToken"] }))
        .await["data"]["refreshToken"]
        .clone();
    let out = app
        .graphql_as(None, logout, json!({ "t": phone["refreshToken"] }))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let gone = app
        .graphql_as(None, refresh, json!({ "t": refreshed["refreshToken"] }))
        .await;
    assert_eq!(code(&gone), "UNAUTHENTICATED", "the session ended: {gone}");
    // Presented again after its logout (a retry), it ends nothing more.
    let tablet = login(&app, "traveler@example.cn").await;
    let out = app
        .graphql_as(None, logout, json!({ "t": tablet["refreshToken"] }))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let again = app
        .graphql_as(None, refresh, json!({ "t": tablet["refreshToken"] }))
        .await;
    assert_eq!(code(&again), "UNAUTHENTICATED", "{again}");
    let laptop = app
        .graphql_as(None, refresh, json!({ "t": laptop["refreshToken"] }))
        .await;
    assert!(
        laptop["data"]["refreshToken"]["accessToken"].is_string(),
        "the laptop's session goes on: {laptop}"
    );
}

/// Two tabs refreshing one token at once (the account's row held, so both
/// are in flight together): each gets a pair of its own in the same
/// sign-in, and both go on (the second ended every session of the
/// account). Presented again past the grace, the token has leaked as
/// before; within it, after a logout of the sign-in, it ends nothing else.
#[tokio::test]
async fn two_tabs_refreshing_one_token_at_once_both_go_on_and_a_late_reuse_is_a_leak() {
    let app = app().await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let logout = "mutation($t: String!) { logout(refreshToken: $t) }";
    let first = login(&app, "traveler@example.cn").await;
    let held = common::LockHeld::begin(
        app.service_db("gateway").await,
        "SELECT id FROM accounts WHERE email = 'traveler@example.cn' FOR UPDATE",
    )
    .await;
    let tab = || app.graphql_as(None, refresh, json!({ "t": first["refreshToken"] }));
    let (one, two) = held.race(tab(), tab()).await;
    let mut next = Vec::new();
    for answer in [&one, &two] {
        let pair = &answer["data"]["refreshToken"];
        assert!(
            pair["refreshToken"].is_string(),
            "both tabs go on: {answer}"
        );
        let me = app.graphql_as(Some(&token(pair)), ME, json!({})).await;
        assert_eq!(me["data"]["me"]["email"], "traveler@example.cn", "{me}");
        next.push(pair["refreshToken"].clone());
    }
    assert_ne!(next[0], next[1], "each tab has a pair of its own");
    // Each tab's own token rotates on as any does.
    for t in &next {
        let on = app.graphql_as(None, refresh, json!({ "t": t })).await;
        assert!(
            on["data"]["refreshToken"]["refreshToken"].is_string(),
            "{on}"
        );
    }

    // Within the grace, after the sign-in was logged out: refused, and
    // another sign-in of the account goes on.
    let other = login(&app, "traveler@example.cn").await;
    let phone = login(&app, "traveler@example.cn").await;
    let rotated = app
        .graphql_as(None, refresh, json!({ "t": phone["refreshToken"] }))
        .await["data"]["refreshToken"]
        .clone();
    let out = app
        .graphql_as(None, logout, json!({ "t": rotated["refreshToken"] }))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let late = app
        .graphql_as(None, refresh, json!({ "t": phone["refreshToken"] }))
        .await;
    assert_eq!(code(&late), "UNAUTHENTICATED", "{late}");
    let goes_on = app
        .graphql_as(None, refresh, json!({ "t": other["refreshToken"] }))
        .await;
    let other = goes_on["data"]["refreshToken"].clone();
    assert!(other["refreshToken"].is_string(), "{goes_on}");

    // Past the grace (its exchange moved back a minute), the first token
    // presented again has leaked: every session ends.
    app.exchanged_long_ago(&first["refreshToken"]).await;
    let leaked = app
        .graphql_as(None, refresh, json!({ "t": first["refreshToken"] }))
        .await;
    assert_eq!(code(&leaked), "UNAUTHENTICATED", "{leaked}");
    let ended = app
        .graphql_as(None, refresh, json!({ "t": other["refreshToken"] }))
        .await;
    assert_eq!(
        code(&ended),
        "UNAUTHENTICATED",
        "every session ended: {ended}"
    );
}

/// One client firing twenty requests at once, each refreshing the same
/// token: a few pairs (one token gets ten live tokens at most), the rest
/// refused — and another sign-in of the account, its oldest, goes on. Each
/// resend added a live token, and past the account's hundred the other
/// sign-ins' were deleted ("unknown refresh token"). The tabs' own
/// refreshes do not use up one tab's grace (a cap on the sign-in's live
/// tokens refused its resend).
#[tokio::test]
async fn a_burst_of_refreshes_of_one_token_pushes_no_other_sign_in_out() {
    use sea_orm::ConnectionTrait;
    use sha2::Digest;
    let app = app().await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }";
    let other = login(&app, "traveler@example.cn").await;
    // Eighty-five newer sign-ins of the account beside it.
    let hash = hex::encode(sha2::Sha256::digest(
        other["refreshToken"].as_str().expect("a token").as_bytes(),
    ));
    app.service_db("gateway")
        .await
        .execute_unprepared(&format!(
            "INSERT INTO refresh_tokens (token_hash, account_id, expires_at, created_at, session)
             SELECT md5(random()::text) || g, account_id, expires_at,
                    created_at + g * interval '1 millisecond', gen_random_uuid()
             FROM refresh_tokens, generate_series(1, 85) g WHERE token_hash = '{hash}'"
        ))
        .await
        .expect("sign-ins added");
    let busy = login(&app, "traveler@example.cn").await;
    let burst: Vec<Value> = futures::future::join_all(
        (0..20).map(|_| app.graphql_as(None, refresh, json!({ "t": busy["refreshToken"] }))),
    )
    .await;
    let paired = burst
        .iter()
        .filter(|b| b["data"]["refreshToken"]["refreshToken"].is_string())
        .count();
    assert_eq!(paired, 10, "{burst:?}");
    let refused = burst.iter().find(|b| b["errors"].is_array());
    assert!(
        refused.is_some_and(|b| code(b) == "UNAUTHENTICATED"
            && b.to_string().contains("refresh one call at a time")),
        "{refused:?}"
    );
    let goes_on = app
        .graphql_as(None, refresh, json!({ "t": other["refreshToken"] }))
        .await;
    assert!(
        goes_on["data"]["refreshToken"]["refreshToken"].is_string(),
        "the other sign-in goes on: {goes_on}"
    );
    // Each tab goes on with its pair, the first before the others; then
    // the first's resend: its own pair still (counting every token of the
    // sign-in since its exchange, or at all, refused it).
    let tabs: Vec<&str> = burst
        .iter()
        .filter_map(|b| b["data"]["refreshToken"]["refreshToken"].as_str())
        .collect();
    for tab in &tabs {
        let next = app.graphql_as(None, refresh, json!({ "t": tab })).await;
        assert!(
            next["data"]["refreshToken"]["refreshToken"].is_string(),
            "{next}"
        );
    }
    let resent = app.graphql_as(None, refresh, json!({ "t": tabs[0] })).await;
    assert!(
        resent["data"]["refreshToken"]["refreshToken"].is_string(),
        "the first tab's resend: {resent}"
    );
}

/// A logout given what is not a refresh token of this platform (the access
/// token, one cut short or changed, anything) says so and ends nothing: it
/// answered true, and an integration took its user for signed out while
/// the session went on for 30 days.
#[tokio::test]
async fn a_logout_given_no_refresh_token_of_ours_says_so() {
    let app = app().await;
    let logout = "mutation($t: String!) { logout(refreshToken: $t) }";
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { refreshToken } }";
    let signed_in = login(&app, "traveler@example.cn").await;
    let token = signed_in["refreshToken"].as_str().expect("a refresh token");
    let changed = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { '1' } else { '0' }
    );
    let access = signed_in["accessToken"].as_str().expect("an access token");
    for wrong in [access, &token[..token.len() - 1], &changed, "garbage"] {
        let out = app.graphql_as(None, logout, json!({ "t": wrong })).await;
        assert_eq!(code(&out), "BAD_USER_INPUT", "{wrong}: {out}");
        assert!(
            out["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nothing was logged out")),
            "{out}"
        );
    }
    // One of the shapes issued before tokens were sealed, unknown, cannot
    // be told from one that ended long ago: true, as before.
    let unsealed = format!("{}.{}", uuid::Uuid::now_v7().simple(), "A".repeat(43));
    let out = app.graphql_as(None, logout, json!({ "t": unsealed })).await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let out = app.graphql_as(None, refresh, json!({ "t": token })).await;
    let token = out["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("the session goes on");
    // Its own token logs out, and again (a retry) still answers true.
    for _ in 0..2 {
        let out = app.graphql_as(None, logout, json!({ "t": token })).await;
        assert_eq!(out["data"]["logout"], true, "{out}");
    }
}

/// Logging out ends one session; logging out everywhere ends every
/// session of the account, its access tokens included (a lost phone).
/// Tokens it ended, presented later, end nothing more.
#[tokio::test]
async fn logging_out_everywhere_ends_every_session_of_the_account() {
    let app = app().await;
    let logout = "mutation($t: String!, $e: Boolean!) { logout(refreshToken: $t, everywhere: $e) }";
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let (laptop, phone) = (
        login(&app, "traveler@example.cn").await,
        login(&app, "traveler@example.cn").await,
    );
    let out = app
        .graphql_as(
            None,
            logout,
            json!({ "t": laptop["refreshToken"], "e": false }),
        )
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    // The phone's session goes on.
    let phone = app
        .graphql_as(None, refresh, json!({ "t": phone["refreshToken"] }))
        .await["data"]["refreshToken"]
        .clone();
    let me = app.graphql_as(Some(&token(&phone)), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "traveler@example.cn", "{me}");

    let tablet = login(&app, "traveler@example.cn").await;
    let out = app
        .graphql_as(
            None,
            logout,
            json!({ "t": tablet["refreshToken"], "e": true }),
        )
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    // Its answer lost on a bad network, the app asks again: refused, and
    // told that what it asked for is done.
    let retried = app
        .graphql_as(
            None,
            logout,
            json!({ "t": tablet["refreshToken"], "e": true }),
        )
        .await;
    assert_eq!(code(&retried), "UNAUTHENTICATED", "{retried}");
    assert!(
        retried["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("if you just logged out everywhere, that is done")),
        "{retried}"
    );
    for session in [&phone, &tablet] {
        let me = app.graphql_as(Some(&token(session)), ME, json!({})).await;
        assert_eq!(code(&me), "UNAUTHENTICATED", "{me}");
        let again = app
            .graphql_as(None, refresh, json!({ "t": session["refreshToken"] }))
            .await;
        assert_eq!(code(&again), "UNAUTHENTICATED", "{again}");
    }
    let back = login(&app, "traveler@example.cn").await;
    // The old tokens end nothing more: one that went with everything is
    // merely old, not leaked, and logs nobody out everywhere.
    let old = app
        .graphql_as(None, refresh, json!({ "t": tablet["refreshToken"] }))
        .await;
    assert_eq!(code(&old), "UNAUTHENTICATED", "{old}");
    let dead = app
        .graphql_as(
            None,
            logout,
            json!({ "t": phone["refreshToken"], "e": true }),
        )
        .await;
    assert_eq!(code(&dead), "UNAUTHENTICATED", "{dead}");
    let me = app.graphql_as(Some(&token(&back)), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "traveler@example.cn", "{me}");
    let on = app
        .graphql_as(None, refresh, json!({ "t": back["refreshToken"] }))
        .await;
    assert!(
        on["data"]["refreshToken"]["accessToken"].is_string(),
        "{on}"
    );
    // The lost phone: someone refreshed its token first (`on` stands for
    // the thief), and its owner logs out everywhere with the token it has.
    // That token has leaked — presented to refreshToken it would end every
    // session — and logging out everywhere with it does the same (it was
    // UNAUTHENTICATED and ended nothing: the thief's session went on).
    let lost = app
        .graphql_as(
            None,
            logout,
            json!({ "t": back["refreshToken"], "e": true }),
        )
        .await;
    assert_eq!(lost["data"]["logout"], true, "{lost}");
    let thief = app
        .graphql_as(
            None,
            refresh,
            json!({ "t": on["data"]["refreshToken"]["refreshToken"] }),
        )
        .await;
    assert_eq!(code(&thief), "UNAUTHENTICATED", "{thief}");
}

/// Changes the password of `token`'s account to "a brand new passphrase";
/// the new token pair.
async fn new_password(app: &TestApp, token: &str) -> Value {
    let changed = app
        .graphql_as(
            Some(token),
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { accessToken refreshToken } }",
            json!({ "c": PASSWORD, "n": "a brand new passphrase" }),
        )
        .await;
    assert!(changed["errors"].is_null(), "{changed}");
    changed["data"]["changePassword"].clone()
}

/// A new password, a new role or a revoked API client stops the access
/// tokens issued before it at once, not when they expire; a refresh gets
/// a token of the new role. Granting the role an account has stops
/// nothing.
#[tokio::test]
async fn a_new_password_role_or_revoked_client_stops_earlier_access_tokens_at_once() {
    let app = app().await;
    let me = |token: String| {
        let app = &app;
        async move { app.graphql_as(Some(&token), ME, json!({})).await }
    };
    let revoked = |body: &Value| {
        code(body) == "UNAUTHENTICATED"
            && body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked"))
    };

    // A new password: the session's token stops; the change's works.
    let before = token(&login(&app, "traveler@example.cn").await);
    assert_eq!(me(before.clone()).await["data"]["me"]["role"], "TRAVELER");
    let after = token(&new_password(&app, &before).await);
    let refused = me(before).await;
    assert!(revoked(&refused), "{refused}");
    assert_eq!(me(after).await["data"]["me"]["role"], "TRAVELER");

    // A new role: the admin's token stops; a refresh carries the new role.
    app.region_admin("chifeng@example.cn", "150400").await;
    let session = login(&app, "chifeng@example.cn").await;
    assert_eq!(
        me(token(&session)).await["data"]["me"]["role"],
        "REGION_ADMIN"
    );
    let platform = app.admin_token().await;
    // The same role again changes nothing, and stops nothing.
    let again = app
        .graphql_as(
            Some(&platform),
            "mutation { grantRole(email: \"chifeng@example.cn\", role: REGION_ADMIN, regionCode: \"150400\") { role } }",
            json!({}),
        )
        .await;
    assert_eq!(
        again["data"]["grantRole"]["role"], "REGION_ADMIN",
        "{again}"
    );
    assert_eq!(
        me(token(&session)).await["data"]["me"]["role"],
        "REGION_ADMIN"
    );
    let demoted = app
        .graphql_as(
            Some(&platform),
            "mutation { grantRole(email: \"chifeng@example.cn\", role: TRAVELER) { role } }",
            json!({}),
        )
        .await;
    assert_eq!(
        demoted["data"]["grantRole"]["role"], "TRAVELER",
        "{demoted}"
    );
    let refused = me(token(&session)).await;
    assert!(revoked(&refused), "{refused}");
    let refreshed = app
        .graphql_as(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": session["refreshToken"] }),
        )
        .await;
    let now = me(token(&refreshed["data"]["refreshToken"])).await;
    assert_eq!(now["data"]["me"]["role"], "TRAVELER", "{now}");

    // A revoked API client: its token stops.
    let (agency, client) = agency_token(&app, &platform).await;
    assert_eq!(me(client.clone()).await["data"]["me"]["role"], "AGENCY");
    let clients = app
        .graphql_as(
            Some(&platform),
            "query($a: ID!) { agency(id: $a) { apiClients { clientId } } }",
            json!({ "a": agency }),
        )
        .await;
    let gone = app
        .graphql_as(
            Some(&platform),
            "mutation($c: String!) { revokeApiClient(clientId: $c) { revokedAt } }",
            json!({ "c": clients["data"]["agency"]["apiClients"][0]["clientId"] }),
        )
        .await;
    assert!(
        gone["data"]["revokeApiClient"]["revokedAt"].is_string(),
        "{gone}"
    );
    let refused = me(client).await;
    assert!(revoked(&refused), "{refused}");
}

/// A revocation made through one gateway replica stops the token on the
/// others: on one already running within a few of its polls, on one
/// started afterwards from its first request; and a WebSocket opened
/// with the token on another replica closes.
#[tokio::test]
async fn a_revocation_through_one_gateway_stops_the_token_on_every_replica() {
    let mut settings = test_settings();
    settings.jwt_secret = Some(SECRET.to_owned().into());
    let mut app = spawn_app_with(settings.clone()).await;
    let replica = |settings: shared::config::Settings| async move {
        let started = duikou::App::start(settings, duikou::Part::Gateway)
            .await
            .expect("another gateway starts");
        let url = format!(
            "http://{}/graphql",
            started.gateway_addr.expect("it serves")
        );
        (started, url)
    };
    let (second, second_url) = replica(settings.clone()).await;
    app.parts.push(second);
    let old = token(&login(&app, "traveler@example.cn").await);
    let me_at = |url: String, token: String| {
        let app = &app;
        async move { app.graphql_at(&url, Some(&token), ME, json!({})).await }
    };
    assert_eq!(
        me_at(second_url.clone(), old.clone()).await["data"]["me"]["role"],
        "TRAVELER"
    );
    let mut ws = common::ws::connect_to(&second_url).await;
    let ack = common::ws::init(&mut ws, &old).await;
    assert_eq!(
        ack.map(|a| a["type"].clone()),
        Some(json!("connection_ack"))
    );
    common::ws::send(
        &mut ws,
        json!({ "id": "feed", "type": "subscribe", "payload": { "query": "subscription { bookingsUpdated { id } }" } }),
    )
    .await;

    // The password changes through the first gateway.
    new_password(&app, &old).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = me_at(second_url.clone(), old.clone()).await;
        if code(&answer) == "UNAUTHENTICATED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second gateway still takes the revoked token: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        common::ws::closed_within(&mut ws, std::time::Duration::from_secs(15)).await,
        Some(4403),
        "the socket outlived its revoked token, or closed without saying why"
    );
    let (third, third_url) = replica(settings).await;
    let refused = me_at(third_url, old).await;
    app.parts.push(third);
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");
}

/// A refresh token used, then presented again, has leaked and ends every
/// session — also after a role change in between (which stops access
/// tokens alone, and made every used refresh token count as merely old:
/// the thief's rotated token lived on, with the new role).
#[tokio::test]
async fn a_used_refresh_token_presented_after_a_role_change_still_ends_every_session() {
    let app = app().await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    app.register("erin@example.cn", "150400").await;
    let stolen = login(&app, "erin@example.cn").await;
    let thief = app
        .graphql_as(None, refresh, json!({ "t": stolen["refreshToken"] }))
        .await["data"]["refreshToken"]
        .clone();
    assert!(thief["refreshToken"].is_string(), "{thief}");
    let granted = app
        .graphql_as(
            Some(&app.admin_token().await),
            "mutation { grantRole(email: \"erin@example.cn\", role: REGION_ADMIN, regionCode: \"150400\") { role } }",
            json!({}),
        )
        .await;
    assert_eq!(
        granted["data"]["grantRole"]["role"], "REGION_ADMIN",
        "{granted}"
    );
    // Erin's own client presents the token the thief used first.
    app.exchanged_long_ago(&stolen["refreshToken"]).await;
    let reused = app
        .graphql_as(None, refresh, json!({ "t": stolen["refreshToken"] }))
        .await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    let thiefs = app
        .graphql_as(None, refresh, json!({ "t": thief["refreshToken"] }))
        .await;
    assert_eq!(
        code(&thiefs),
        "UNAUTHENTICATED",
        "the thief's went too: {thiefs}"
    );
}

/// Two platform admins demoting each other at once: one wins, the other
/// is no longer an admin when its turn comes (both won, and the platform
/// had none). The accounts' rows are held so both requests are in flight
/// together; and a start with DUIKOU_ADMIN_EMAIL makes its account an
/// admin again if the platform has none left.
#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_and_a_start_restores_a_lost_admin() {
    let app = app().await;
    let admin = app.admin_token().await;
    app.register("carol@example.cn", "110105").await;
    let grant = "mutation($e: String!, $r: Role!) { grantRole(email: $e, role: $r) { role } }";
    let made = app
        .graphql_as(
            Some(&admin),
            grant,
            json!({ "e": "carol@example.cn", "r": "PLATFORM_ADMIN" }),
        )
        .await;
    assert_eq!(
        made["data"]["grantRole"]["role"], "PLATFORM_ADMIN",
        "{made}"
    );
    let carol = token(&login(&app, "carol@example.cn").await);

    let db = app.service_db("gateway").await;
    let held = common::LockHeld::begin(
        db.clone(),
        "SELECT id FROM accounts WHERE email IN ('admin@duikou.test', 'carol@example.cn') FOR UPDATE",
    )
    .await;
    let demote = |by: String, email: &'static str| {
        let app = &app;
        async move {
            app.graphql_as(Some(&by), grant, json!({ "e": email, "r": "TRAVELER" }))
                .await
        }
    };
    let (first, second) = held
        .race(
            demote(admin.clone(), "carol@example.cn"),
            demote(carol.clone(), ADMIN),
        )
        .await;
    let answers = [&first, &second];
    let won = answers
        .iter()
        .filter(|a| a["data"]["grantRole"]["role"] == "TRAVELER")
        .count();
    assert_eq!(won, 1, "one demotion wins: {first} {second}");
    assert!(
        answers.iter().any(|a| code(a) == "FORBIDDEN"),
        "the other is refused: {first} {second}"
    );

    // Lost by hand: the next start gives the bootstrap account the role back.
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("UPDATE accounts SET role = 'TRAVELER' WHERE role = 'PLATFORM_ADMIN'")
        .await
        .expect("no admin left");
    // A start configured with another password is not the account's owner
    // (someone may have registered the email before it was configured):
    // the account stays as it is.
    let mut stranger = app.settings.clone();
    stranger.admin_password = Some("not the account's password".to_owned().into());
    let refused = duikou::App::start(stranger, duikou::Part::Gateway)
        .await
        .expect("a gateway starts");
    let me = app
        .graphql_as(Some(&token(&login(&app, ADMIN).await)), ME, json!({}))
        .await;
    assert_eq!(me["data"]["me"]["role"], "TRAVELER", "{me}");
    refused.stop().await;
    let again = duikou::App::start(app.settings.clone(), duikou::Part::Gateway)
        .await
        .expect("a gateway starts");
    let me = app
        .graphql_as(Some(&token(&login(&app, ADMIN).await)), ME, json!({}))
        .await;
    assert_eq!(me["data"]["me"]["role"], "PLATFORM_ADMIN", "{me}");
    again.stop().await;
}

/// Ten wrong passwords for one email within 15 minutes, from whatever
/// addresses, refuse its logins (RATE_LIMITED) until the window has passed,
/// the right password too; another email is not touched, and a login that
/// succeeds starts the count again. (Only the address was counted: a
/// guesser with many addresses had every guess the hasher could make.)
#[tokio::test]
async fn ten_wrong_passwords_for_one_email_stop_its_logins_for_a_while() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app_with(test_settings()).await;
    app.register("guessed@example.com", "110108").await;
    app.register("bystander@example.com", "110108").await;
    let login = |email: &'static str, password: &'static str| {
        app.graphql_as(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
            json!({ "e": email, "p": password }),
        )
    };
    for _ in 0..9 {
        let wrong = login("guessed@example.com", "not-the-password").await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED", "{wrong}");
    }
    // A success forgets them: ten more are needed.
    assert!(app.login("guessed@example.com").await["accessToken"].is_string());
    for _ in 0..10 {
        let wrong = login("Guessed@Example.com", "not-the-password").await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED", "{wrong}");
    }
    let refused = login("guessed@example.com", PASSWORD).await;
    assert_eq!(code(&refused), "RATE_LIMITED", "{refused}");
    assert!(app.login("bystander@example.com").await["accessToken"].is_string());
    // An unknown email counts alike: nothing tells it apart.
    for _ in 0..10 {
        login("nobody@example.com", "not-the-password").await;
    }
    let unknown = login("nobody@example.com", "not-the-password").await;
    assert_eq!(code(&unknown), "RATE_LIMITED", "{unknown}");
    // Thirty at once: each is counted before it is checked, so ten are
    // checked at most (a first version counted after the hash: a burst had
    // most of thirty checked).
    app.register("burst@example.com", "110108").await;
    let burst =
        futures::future::join_all((0..30).map(|_| login("burst@example.com", "not-the-password")))
            .await;
    let checked = burst
        .iter()
        .filter(|b| code(b) == "UNAUTHENTICATED")
        .count();
    assert!(checked <= 10, "{checked} of 30 checked");
    assert_eq!(
        code(&login("burst@example.com", PASSWORD).await),
        "RATE_LIMITED"
    );
    // Guessing with a stolen access token counts too.
    let token = app.register("stolen@example.com", "110108").await;
    let change = || {
        app.graphql_as(
            Some(&token),
            "mutation { changePassword(currentPassword: \"a-wrong-guess\", newPassword: \"another-one-2026\") { accessToken } }",
            json!({}),
        )
    };
    for _ in 0..10 {
        let wrong = change().await;
        assert_eq!(code(&wrong), "FORBIDDEN", "{wrong}");
    }
    let refused = change().await;
    assert_eq!(code(&refused), "RATE_LIMITED", "{refused}");
    // Fifteen minutes on, it may try again.
    app.service_db("gateway")
        .await
        .execute_unprepared("UPDATE login_failures SET since = since - INTERVAL '16 minutes'")
        .await
        .expect("time passed");
    assert!(app.login("guessed@example.com").await["accessToken"].is_string());
}

/// An address and a password typed composed (é) or decomposed (e + U+0301,
/// as some keyboards and pastes send them) are one address and one
/// password: a traveler registered one way logs in the other, and the
/// other spelling registers no second account that looks the same. (Both
/// were compared byte by byte: "wrong email or password", and a twin.)
#[tokio::test]
async fn an_address_and_a_password_typed_decomposed_are_the_same() {
    let app = common::spawn_app().await;
    let (email, password) = ("renée.müller@example.de", "Crème-brûlée-Ñandú-2026");
    let decomposed = |s: &str| -> String {
        use unicode_normalization::UnicodeNormalization;
        s.nfd().collect()
    };
    assert_ne!(decomposed(email), email);
    let register = "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }";
    let first = app
        .graphql_as(
            None,
            register,
            json!({ "i": { "email": email, "password": password, "displayName": "Renée", "homeRegionCode": "110108" } }),
        )
        .await;
    assert!(
        first["data"]["register"]["accessToken"].is_string(),
        "{first}"
    );
    let login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { account { email } } }";
    let decomposed_login = app
        .graphql_as(
            None,
            login,
            json!({ "e": decomposed(email), "p": decomposed(password) }),
        )
        .await;
    assert_eq!(
        decomposed_login["data"]["login"]["account"]["email"], email,
        "{decomposed_login}"
    );
    let twin = app
        .graphql_as(
            None,
            register,
            json!({ "i": { "email": decomposed(email), "password": password, "displayName": "Renée", "homeRegionCode": "110108" } }),
        )
        .await;
    assert_eq!(code(&twin), "CONFLICT", "{twin}");

    // An address stored decomposed before addresses were composed (set so
    // here): still found by login and grantRole, and still taken.
    use sea_orm::ConnectionTrait;
    let old = "zoë@example.nl";
    let registered = app
        .graphql_as(
            None,
            register,
            json!({ "i": { "email": old, "password": password, "displayName": "Zoë", "homeRegionCode": "110108" } }),
        )
        .await;
    assert!(registered["errors"].is_null(), "{registered}");
    app.service_db("gateway")
        .await
        .execute_unprepared(&format!(
            "UPDATE accounts SET email = '{}' WHERE email = '{old}'",
            decomposed(old)
        ))
        .await
        .expect("stored decomposed");
    let found = app
        .graphql_as(None, login, json!({ "e": old, "p": password }))
        .await;
    assert!(found["data"]["login"].is_object(), "{found}");
    let taken = app
        .graphql_as(
            None,
            register,
            json!({ "i": { "email": old, "password": password, "displayName": "Zoë", "homeRegionCode": "110108" } }),
        )
        .await;
    assert_eq!(code(&taken), "CONFLICT", "{taken}");
    let admin = app.admin_token().await;
    let granted = app
        .graphql_as(
            Some(&admin),
            "mutation($e: String!) { grantRole(email: $e, role: REGION_ADMIN, regionCode: \"150430\") { role } }",
            json!({ "e": old }),
        )
        .await;
    assert_eq!(
        granted["data"]["grantRole"]["role"], "REGION_ADMIN",
        "{granted}"
    );
}
