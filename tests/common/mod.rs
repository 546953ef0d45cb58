//! The end-to-end harness: the real application on port 0 against the local
//! PostgreSQL and RabbitMQ, with databases and queues of the test's own that
//! are removed when the test ends (also when it fails).

#![allow(dead_code)]

pub mod ws;

use chrono::{Duration as Days, NaiveDate, Utc};
use duikou::{App, Part};
use serde_json::{Value, json};
use shared::auth::Principal;
use shared::bus::call;
use shared::config::Settings;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{CreateHomestay, HomestayCreated, NewRoomType, SetRoomCalendar};
use std::time::{Duration, Instant};

pub fn postgres_url() -> String {
    std::env::var("DUIKOU_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("DUIKOU_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn amqp_url() -> String {
    std::env::var("DUIKOU_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Settings for a test of its own: unique database and queue prefixes.
pub fn test_settings() -> Settings {
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    Settings {
        postgres_url: Some(postgres_url().into()),
        amqp_url: Some(amqp_url().into()),
        redis_url: Some(redis_url().into()),
        // Tests poll quickly; tests/limits.rs turns the limit on.
        rate_limit: 0,
        gateway_addr: "127.0.0.1:0".into(),
        db_prefix: format!("t_{id}_"),
        bus_prefix: format!("t.{id}."),
        demo_data: Some(false),
        db_max_connections: 5,
        admin_email: Some(ADMIN.into()),
        admin_password: Some(PASSWORD.to_owned().into()),
        ..Settings::default()
    }
}

pub struct TestApp {
    /// The access token `graphql` sends: a traveler from 海淀区 registered
    /// when the app started.
    pub token: Option<String>,
    pub app: App,
    /// Other processes' worth of parts, when the test runs them separately.
    pub parts: Vec<App>,
    pub url: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    /// Queues declared by parts running as child processes, removed too.
    pub extra_queues: Vec<String>,
    /// Set by a test that unbalances the ledger on purpose; otherwise the
    /// harness checks, when the test ends, that every posting of the test's
    /// ledger sums to zero.
    pub ledger_tampered: bool,
}

/// Settings for the embedded default: no servers, SQLite files in a
/// directory of the test's own, the in-process bus, the demo data.
pub fn embedded_settings() -> Settings {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Settings {
        gateway_addr: "127.0.0.1:0".into(),
        data_dir: std::env::temp_dir().join(format!("duikou-embedded-{id}")),
        rate_limit: 0,
        demo_data: Some(true),
        admin_email: Some(ADMIN.into()),
        admin_password: Some(PASSWORD.to_owned().into()),
        ..Settings::default()
    }
}

/// The embedded mode for a test of its own, without the demo catalogue:
/// the twin of [`test_settings`] for tests that run in both modes.
pub fn embedded_test_settings() -> Settings {
    Settings {
        demo_data: Some(false),
        ..embedded_settings()
    }
}

/// Runs one test body (an `async fn(Settings)`) twice: on the real servers
/// and embedded (SQLite files, the in-process bus, no server) — the same
/// test in both modes. `in_both_modes!(name);` makes the tests
/// `name::on_the_real_servers` and `name::embedded_on_sqlite`.
#[macro_export]
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_real_servers() {
                super::$name($crate::common::test_settings()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_on_sqlite() {
                super::$name($crate::common::embedded_test_settings()).await
            }
        }
    };
}

/// Starts everything in one process.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_parts(settings, &[Part::All]).await
}

/// Every part, each as if in a process of its own (inventory first, the
/// gateway last).
pub const SEPARATELY: [Part; 5] = [
    Part::Inventory,
    Part::Booking,
    Part::Payment,
    Part::Partnership,
    Part::Gateway,
];

/// Starts each part as if in a process of its own (own bus connection and
/// pools); the last part must run the gateway.
pub async fn spawn_parts(settings: Settings, parts: &[Part]) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        shared::telemetry::init("pretty");
    }
    let mut started = Vec::new();
    for part in parts {
        started.push(
            App::start(settings.clone(), *part)
                .await
                .expect("the part starts"),
        );
    }
    let app = started.pop().expect("at least one part");
    let addr = app.gateway_addr.expect("the last part runs the gateway");
    let mut test = TestApp {
        token: None,
        app,
        parts: started,
        url: format!("http://{addr}/graphql"),
        http: reqwest::Client::new(),
        settings,
        extra_queues: Vec::new(),
        ledger_tampered: false,
    };
    test.token = Some(test.register("traveler@example.cn", "110108").await);
    test
}

/// Every part but `missing` (booking or payment), each as if in a process
/// of its own; the test runs that one as a child process
/// ([`spawn_child`]) to kill and restart it. Its queues are deleted with
/// the app's.
pub async fn spawn_without(settings: &Settings, missing: Part) -> TestApp {
    let name = match missing {
        Part::Booking => "booking",
        Part::Payment => "payment",
        other => panic!("{other:?} is not run as a child here"),
    };
    let parts: Vec<Part> = SEPARATELY.into_iter().filter(|p| *p != missing).collect();
    let mut app = spawn_parts(settings.clone(), &parts).await;
    let bus = settings.bus();
    app.extra_queues = vec![
        bus.queue(&format!("{name}.events")),
        bus.dead_queue(&format!("{name}.events")),
        bus.rpc_queue(name),
    ];
    app
}

/// The password every test account gets.
pub const PASSWORD: &str = "草原上的蒙古包-2026";
/// The bootstrap platform admin of every test app.
pub const ADMIN: &str = "admin@duikou.test";

impl TestApp {
    /// POSTs a GraphQL request as the test's traveler; the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(self.token.as_deref(), query, variables)
            .await
    }

    /// POSTs a GraphQL request with `token` (none: anonymous).
    pub async fn graphql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.graphql_at(&self.url, token, query, variables).await
    }

    /// [`graphql_as`](Self::graphql_as) to the gateway at `url` (another
    /// replica).
    pub async fn graphql_at(
        &self,
        url: &str,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Value {
        let mut request = self
            .http
            .post(url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Logs in; the `login` payload (accessToken, refreshToken, …).
    pub async fn login(&self, email: &str) -> Value {
        let body = self
            .graphql_as(
                None,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken expiresIn account { email role homeRegionCode } } }",
                json!({ "e": email, "p": PASSWORD }),
            )
            .await;
        body["data"]["login"].clone()
    }

    /// The sandbox provider taking refunds again (`up`), or none: each one
    /// asked of it goes unanswered and stays PENDING.
    pub async fn refund_provider(&self, up: bool) {
        use sea_orm::ConnectionTrait;
        let sql = if up {
            "ALTER TABLE sandbox_refunds DROP CONSTRAINT provider_down"
        } else {
            "ALTER TABLE sandbox_refunds ADD CONSTRAINT provider_down CHECK (false) NOT VALID"
        };
        self.service_db("payment")
            .await
            .execute_unprepared(sql)
            .await
            .expect(sql);
    }

    /// With the provider taking no refunds: an admin's refund of 100.00 of
    /// booking `id` under `key`, which stays PENDING. The admin's token.
    pub async fn pending_refund(&self, id: &str, key: &str) -> String {
        self.refund_provider(false).await;
        let admin = self.admin_token().await;
        let refund = self
            .graphql_as(
                Some(&admin),
                "mutation($b: ID!, $k: String!) { refundPayment(bookingId: $b, amount: \"100.00\",
                    reason: \"投诉\", idempotencyKey: $k) { status } }",
                json!({ "b": id, "k": key }),
            )
            .await;
        assert_eq!(
            refund["data"]["refundPayment"]["status"], "PENDING",
            "{refund}"
        );
        admin
    }

    /// The platform admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN).await["accessToken"]
            .as_str()
            .expect("the admin logs in")
            .to_owned()
    }

    /// A new account made REGION_ADMIN of `region`; its access token.
    pub async fn region_admin(&self, email: &str, region: &str) -> String {
        self.register(email, region).await;
        let granted = self
            .graphql_as(
                Some(&self.admin_token().await),
                "mutation($e: String!, $r: ID!) { grantRole(email: $e, role: REGION_ADMIN, regionCode: $r) { role } }",
                json!({ "e": email, "r": region }),
            )
            .await;
        assert_eq!(
            granted["data"]["grantRole"]["role"], "REGION_ADMIN",
            "{granted}"
        );
        self.login(email).await["accessToken"]
            .as_str()
            .expect("the region admin logs in")
            .to_owned()
    }

    /// Registers a traveler from `home_region`; returns the access token.
    pub async fn register(&self, email: &str, home_region: &str) -> String {
        let body = self
            .graphql_as(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                json!({ "input": { "email": email, "password": PASSWORD, "displayName": "张三", "homeRegionCode": home_region } }),
            )
            .await;
        body["data"]["register"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("registration failed: {body}"))
            .to_owned()
    }

    /// A homestay in 敖汉旗 with `rooms` rooms at 380 yuan for 60 nights from tomorrow.
    pub async fn homestay(&self, rooms: u32) -> HomestayCreated {
        homestay_on(self.app.rt.bus.as_ref(), rooms).await
    }

    /// createBooking for one traveler; returns the response body.
    pub async fn create_booking(
        &self,
        room_type: &str,
        check_in: NaiveDate,
        nights: i64,
        key: &str,
    ) -> Value {
        self.graphql(
            "mutation($input: CreateBookingInput!, $key: String!) {
                createBooking(input: $input, idempotencyKey: $key) { id status }
            }",
            json!({
                "key": key,
                "input": {
                    "roomTypeId": room_type,
                    "checkIn": check_in.to_string(),
                    "checkOut": (check_in + Days::days(nights)).to_string(),
                    "travelers": [{ "name": "张三", "idType": "RESIDENT_ID", "idNumber": "11010519491231002X" }],
                    "contact": { "name": "张三", "phone": "13800138000" },
                    "sponsorRegionCode": "110108"
                }
            }),
        )
        .await
    }

    /// Polls `duikou check` with no grace until every invariant (all
    /// nineteen) holds
    /// (outbox rows may be in flight a moment), within 20 s; panics with
    /// the findings otherwise.
    pub async fn until_invariants_hold(&self) {
        let settings = self.app.rt.settings.clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let findings = duikou::check::run(&settings, chrono::Duration::zero())
                .await
                .expect("checks run");
            if findings.iter().all(|f| f.holds) {
                // Every invariant said, in both modes (embedded left its
                // dead-letters line out).
                assert_eq!(findings.len(), 19, "{findings:#?}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{findings:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// [`create_booking`](Self::create_booking) retried until a booking
    /// part (a child process just started) answers, within 30 s; the id.
    pub async fn create_booking_once_up(
        &self,
        room_type: &str,
        check_in: NaiveDate,
        key: &str,
    ) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let body = self.create_booking(room_type, check_in, 1, key).await;
            if let Some(id) = body["data"]["createBooking"]["id"].as_str() {
                return id.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "booking never answered: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Polls (20 s at most) until partnership has heard of a confirmed
    /// booking of `gross` in `region`: its facts, which attribution reads.
    pub async fn wait_until_partnership_heard(&self, region: &str, gross: Fen) {
        self.wait_for_partnership_facts(region, |facts| {
            facts.iter().any(|f| f.captured.gross == gross)
        })
        .await;
    }

    /// Polls (20 s at most) until what partnership knows of the bookings
    /// confirmed in `region` since yesterday satisfies `enough`.
    pub async fn wait_for_partnership_facts(
        &self,
        region: &str,
        enough: impl Fn(&[partnership::domain::Facts]) -> bool,
    ) {
        let db = self.service_db("partnership").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (now, day) = (Utc::now(), Days::days(1));
            let facts = partnership::storage::facts_in(&db, region, false, now - day, now + day)
                .await
                .expect("facts");
            if enough(&facts) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "partnership never heard of the booking"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The gateway's `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url.replace("/graphql", "/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// A series' value in `/metrics`, summed over the lines that contain
    /// every one of `labels`.
    pub async fn metric(&self, series: &str, labels: &[&str]) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(series) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls the booking until its status is `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        self.wait_for_status_as(self.token.as_deref().unwrap_or_default(), id, status)
            .await
    }

    /// [`TestApp::wait_for_status`] as the holder of `token`.
    pub async fn wait_for_status_as(&self, token: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = self
                .graphql_as(
                    Some(token),
                    "query($id: ID!) { booking(id: $id) { id status total { amount currency } reason refusal expiresAt } }",
                    json!({ "id": id }),
                )
                .await;
            if body["data"]["booking"]["status"] == status {
                return body["data"]["booking"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "booking {id} never reached {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Every field of a booking the tests look at.
pub const BOOKING_FIELDS: &str = "id status reason refusal total { amount } refundDue { amount }
    refunded { amount } history { status cause }";

impl TestApp {
    /// What a booking says was booked: its room type, dates and rooms, or
    /// its departure; and the day it starts.
    pub async fn what_was_booked(&self, id: &str) -> Value {
        let body = self
            .graphql(
                "query($id: ID!) { booking(id: $id) {
                    roomTypeId checkIn checkOut rooms departureId startsOn } }",
                json!({ "id": id }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["booking"].clone()
    }

    /// A connection to one service's database (to look behind the API).
    pub async fn service_db(&self, service: &str) -> sea_orm::DatabaseConnection {
        shared::db::connect(&self.settings, service)
            .await
            .expect("the service database")
    }

    /// Moves the exchange of refresh token `token` a minute back, past the
    /// reuse grace: presented again now, it is a copy in other hands, not
    /// another tab of its client refreshing at the same moment.
    pub async fn exchanged_long_ago(&self, token: &Value) {
        use sea_orm::ConnectionTrait;
        use sha2::Digest;
        let token = token
            .as_str()
            .unwrap_or_else(|| panic!("no token: {token}"));
        let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let moved = self
            .service_db("gateway")
            .await
            .execute_unprepared(&format!(
                "UPDATE refresh_tokens SET revoked_at = revoked_at - interval '1 minute' \
                 WHERE token_hash = '{hash}' AND revoked_at IS NOT NULL"
            ))
            .await
            .expect("moved back")
            .rows_affected();
        assert_eq!(moved, 1, "{token} was not exchanged");
    }

    /// A change to a listing of 赤峰市 (`admin` administers it), the thing
    /// named by the variable `id_var`: an admin of Beijing gets
    /// FORBIDDEN, and `admin` NOT_FOUND for an id that names nothing.
    pub async fn only_its_region_and_only_what_exists(
        &self,
        admin: &str,
        mutation: &str,
        vars: Value,
        id_var: &str,
    ) {
        let beijing = self.region_admin("beijing@example.cn", "110000").await;
        let foreign = self
            .graphql_as(Some(&beijing), mutation, vars.clone())
            .await;
        assert_eq!(code(&foreign), "FORBIDDEN", "{foreign}");
        let mut unknown = vars;
        unknown[id_var] = json!(uuid::Uuid::now_v7().to_string());
        let missing = self.graphql_as(Some(admin), mutation, unknown).await;
        assert_eq!(code(&missing), "NOT_FOUND", "{missing}");
    }

    /// The `extensions.code` of the first error a request gets (panics
    /// with the body when there is none).
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let body = self.graphql(query, variables).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body}"))
            .to_owned()
    }

    /// Polls the booking until `done` holds for it; returns it.
    pub async fn wait_for_booking(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let query = format!("query($id: ID!) {{ booking(id: $id) {{ {BOOKING_FIELDS} }} }}");
        loop {
            let body = self.graphql(&query, json!({ "id": id })).await;
            let booking = &body["data"]["booking"];
            if done(booking) {
                return booking.clone();
            }
            assert!(
                Instant::now() < deadline,
                "booking {id}: {what} never happened: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The public welfare fund's balance, in yuan as the API prints it.
    pub async fn fund_balance(&self) -> String {
        let body = self
            .graphql("{ welfareFund { balance { amount } } }", json!({}))
            .await;
        body["data"]["welfareFund"]["balance"]["amount"]
            .as_str()
            .unwrap_or_else(|| panic!("no fund balance in {body}"))
            .to_owned()
    }

    /// A booking for one night on `check_in`, held and paid with `token`.
    /// A booking of one night `days` after tomorrow in a new one-room
    /// homestay (380.00), paid with `tok_success` and CONFIRMED.
    pub async fn confirmed_booking(&self, days: i64) -> String {
        let room_type = self.homestay(1).await.room_type_id.to_string();
        let id = self
            .paid_booking(&room_type, tomorrow() + Days::days(days), "tok_success")
            .await;
        self.wait_for_status(&id, "CONFIRMED").await;
        id
    }

    /// Moves a one-night stay's booking to check in on `day` in
    /// booking's row (PostgreSQL): no test can wait for a day to pass.
    pub async fn move_stay_to(&self, id: &str, day: NaiveDate) {
        use sea_orm::ConnectionTrait;
        self.service_db("booking")
            .await
            .execute_unprepared(&format!(
                "UPDATE bookings SET starts_on = '{day}',
                     item = jsonb_set(jsonb_set(item::jsonb, '{{check_in}}', '\"{day}\"'),
                                      '{{check_out}}', '\"{}\"')::text
                 WHERE id = '{id}'",
                day + chrono::Days::new(1)
            ))
            .await
            .expect("the stay moved");
    }

    /// A booking for tomorrow paid with `tok_lost_answer` under the key
    /// "pay": charged, the provider's answer lost (SERVICE_UNAVAILABLE), its
    /// payment PROCESSING until the reconciler asks.
    pub async fn charged_unanswered(&self) -> String {
        let room_type = self.homestay(1).await.room_type_id.to_string();
        let id = Self::id_of(&self.create_booking(&room_type, tomorrow(), 1, "lost").await);
        self.wait_for_status(&id, "AWAITING_PAYMENT").await;
        let paid = self.pay(&id, "tok_lost_answer", "pay").await;
        assert_eq!(
            paid["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
            "{paid}"
        );
        id
    }

    /// A booking of one night on `check_in` in a new one-room homestay
    /// (380.00), paid (`tok_success`) while booking's handlers wait (its
    /// inbox locked: they first record the event there; its RPCs do not),
    /// then cancelled by its booker before booking heard of the payment:
    /// answered as before payment. The lock, still held.
    pub async fn cancelled_before_its_capture_is_heard(
        &self,
        check_in: NaiveDate,
        key: &str,
    ) -> (String, LockHeld) {
        let room_type = self.homestay(1).await.room_type_id.to_string();
        let id = Self::id_of(&self.create_booking(&room_type, check_in, 1, key).await);
        self.wait_for_status(&id, "AWAITING_PAYMENT").await;
        let held = LockHeld::begin(
            self.service_db("booking").await,
            "LOCK TABLE inbox IN EXCLUSIVE MODE",
        )
        .await;
        let paid = self.pay(&id, "tok_success", key).await;
        assert_eq!(paid["data"]["payBooking"]["status"], "CAPTURED", "{paid}");
        held.until_waiting(1, true).await;
        let cancelled = self.cancel(&id, &format!("{key}-cancel")).await;
        assert_eq!(
            cancelled["data"]["cancelBooking"]["status"], "CANCELLED",
            "{cancelled}"
        );
        (id, held)
    }

    pub async fn paid_booking(&self, room_type: &str, check_in: NaiveDate, token: &str) -> String {
        let key = uuid::Uuid::now_v7().to_string();
        let id = Self::id_of(&self.create_booking(room_type, check_in, 1, &key).await);
        self.wait_for_status(&id, "AWAITING_PAYMENT").await;
        let paid = self.pay(&id, token, &key).await;
        assert!(paid["errors"].is_null(), "{paid}");
        id
    }
}

impl TestApp {
    /// The id of a createBooking answer (panics with the body otherwise).
    pub fn id_of(body: &Value) -> String {
        body["data"]["createBooking"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no booking in {body}"))
            .to_owned()
    }

    /// A booking's status.
    pub async fn status(&self, id: &str) -> String {
        let body = self
            .graphql(
                "query($id: ID!) { booking(id: $id) { status } }",
                json!({ "id": id }),
            )
            .await;
        body["data"]["booking"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls until the hold was answered: AWAITING_PAYMENT or REJECTED.
    pub async fn wait_until_held_or_rejected(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status(id).await;
            if status == "AWAITING_PAYMENT" || status == "REJECTED" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "booking {id} never got an answer to its hold ({status})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Records a partnership between two regions (as a platform admin).
    pub async fn pair(&self, sponsor: &str, beneficiary: &str) -> shared::rpcs::PartnershipView {
        call(self.app.rt.bus.as_ref(), &pairing(sponsor, beneficiary))
            .await
            .expect("partnership created")
    }

    /// Polls until the booking's history has a step whose cause starts
    /// with `cause`; the booking as then read ([`BOOKING_FIELDS`]).
    pub async fn wait_for_cause(&self, id: &str, cause: &str) -> Value {
        self.wait_for_booking(id, &format!("a step \"{cause}…\""), |b| {
            b["history"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["cause"].as_str().is_some_and(|c| c.starts_with(cause)))
        })
        .await
    }

    /// Booking `id`'s payment row held (FOR UPDATE), so that payment
    /// changes it (a refund, a capture) only once released.
    pub async fn payment_row_held(&self, id: &str) -> LockHeld {
        LockHeld::begin(
            self.service_db("payment").await,
            &format!("SELECT id FROM payments WHERE booking_id = '{id}' FOR UPDATE"),
        )
        .await
    }

    /// Publishes `env` on the app's bus, as the service it names would.
    pub async fn publish(&self, env: shared::envelope::Envelope) {
        for sent in self.app.rt.bus.publish(&[env]).await {
            sent.expect("published");
        }
    }

    /// Publishes payment's news that booking `id` was paid `yuan` (split
    /// by the default rates), as payment would.
    pub async fn publish_captured(&self, id: &str, yuan: i64) {
        use shared::money::{Fen, Split, SplitRates};
        let booking_id = shared::ids::BookingId(id.parse().expect("a booking id"));
        let captured = shared::events::PaymentCaptured {
            booking_id,
            payment_id: shared::ids::PaymentId::new(),
            split: Split::of(Fen::yuan(yuan), SplitRates::default()),
        };
        self.publish(shared::envelope::Envelope::new(
            "payment",
            booking_id.0,
            &captured,
        ))
        .await;
    }

    /// Publishes inventory's grant of booking `id`'s hold, for a total of
    /// `yuan`, at a homestay of 敖汉旗 (150430).
    pub async fn publish_granted(&self, id: &str, yuan: i64) {
        let booking_id = shared::ids::BookingId(id.parse().expect("a booking id"));
        let granted = shared::events::HoldGranted {
            booking_id,
            total: shared::money::Fen::yuan(yuan),
            listing: shared::events::ListingSnapshot {
                title: "测试民宿".into(),
                title_en: None,
                host_id: shared::ids::HostId::new(),
                region_code: shared::region::RegionCode::parse("150430").expect("a region"),
                certified: false,
                cancellation_policy: Default::default(),
                starts_on: None,
                listing_id: None,
            },
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
        };
        self.publish(shared::envelope::Envelope::new(
            "inventory",
            booking_id.0,
            &granted,
        ))
        .await;
    }

    /// payBooking with a test token; the whole response body.
    pub async fn pay(&self, id: &str, token: &str, key: &str) -> Value {
        self.graphql(
            "mutation($id: ID!, $token: String!, $key: String!) {
                payBooking(bookingId: $id, paymentToken: $token, idempotencyKey: $key) {
                    status amount { amount } split { host { amount } platform { amount } fund { amount } agency { amount } } } }",
            json!({ "id": id, "token": token, "key": key }),
        )
        .await
    }

    /// Polls (20 s at most) until `service`'s inbox holds `n` events of
    /// `kind`: it has handled them.
    pub async fn until_heard(&self, service: &str, kind: &str, n: i64) {
        let db = self.service_db(service).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let heard = try_count_of(
                &db,
                "SELECT COUNT(*) AS n FROM inbox WHERE kind = $1",
                vec![kind.into()],
            )
            .await
            .unwrap_or_default();
            if heard >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service} heard {heard} {kind}, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// cancelBooking; the whole response body.
    pub async fn cancel(&self, id: &str, key: &str) -> Value {
        self.graphql(
            &format!("mutation($id: ID!, $key: String!) {{ cancelBooking(bookingId: $id, idempotencyKey: $key) {{ {BOOKING_FIELDS} }} }}"),
            json!({ "id": id, "key": key }),
        )
        .await
    }

    /// Every stay or departure paid so far as if under way (its first day
    /// long past): its host's share is payable in a payout run, as it is
    /// once a stay has begun.
    pub async fn stays_under_way(&self) {
        use sea_orm::ConnectionTrait;
        self.service_db("payment")
            .await
            .execute_unprepared("UPDATE payments SET starts_on = '2000-01-01'")
            .await
            .expect("stays under way");
    }

    /// Free rooms of a room type on each of `nights` nights from tomorrow.
    pub async fn available(&self, room_type: &str, nights: i64) -> Value {
        let body = self
            .graphql(
                "query($rt: ID!, $from: Date!, $to: Date!) { roomCalendar(roomTypeId: $rt, from: $from, to: $to) { available } }",
                json!({ "rt": room_type, "from": tomorrow().to_string(), "to": (tomorrow() + Days::days(nights)).to_string() }),
            )
            .await;
        let nights = body["data"]["roomCalendar"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Value::Array(nights.iter().map(|n| n["available"].clone()).collect())
    }

    /// Polls until the free rooms from tomorrow are `expected`, night by night.
    pub async fn wait_for_available(&self, room_type: &str, expected: Value) {
        let nights = expected.as_array().map_or(0, Vec::len) as i64;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.available(room_type, nights).await;
            if now == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "free rooms stayed {now}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let settings = self.settings.clone();
        if settings.postgres_url.is_none() {
            // Embedded: everything lives in the data directory.
            for app in std::iter::once(&self.app).chain(&self.parts) {
                app.rt.halt();
            }
            let check_ledger = !self.ledger_tampered && !std::thread::panicking();
            let unbalanced = std::thread::spawn({
                let settings = settings.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    if check_ledger {
                        rt.block_on(ledger_sum(&settings))
                    } else {
                        None
                    }
                }
            })
            .join();
            if let Err(e) = std::fs::remove_dir_all(&settings.data_dir) {
                eprintln!("cleanup: {} not removed: {e}", settings.data_dir.display());
            }
            if let Ok(Some(sum)) = unbalanced {
                panic!("the test's ledger postings sum to {sum} fen, not zero");
            }
            return;
        }
        let bus = settings.bus();
        let mut queues = self.extra_queues.clone();
        let check_ledger = !self.ledger_tampered && !std::thread::panicking();
        for app in std::iter::once(&self.app).chain(&self.parts) {
            // First stop the consumers: a consumer whose queue vanishes
            // under it would otherwise declare the queue again.
            app.rt.halt();
            queues.extend(app.rt.bus.declared_queues());
        }
        // Clean up on a thread of its own: Drop cannot await, and this also
        // runs when the test failed.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // Every test's ledger, whatever it did, sums to zero.
                let unbalanced = if check_ledger {
                    ledger_sum(&settings).await
                } else {
                    None
                };
                if let Err(e) = shared::bus::amqp::admin::delete(&amqp_url(), &bus, &queues).await {
                    eprintln!("cleanup: queues {queues:?} not deleted: {e}");
                }
                if let Err(e) = duikou::bench_search::drop_redis_keys(&settings).await {
                    eprintln!("cleanup: Redis keys not deleted: {e}");
                }
                for service in ["inventory", "booking", "payment", "partnership", "gateway"] {
                    let name = shared::db::database_name(&settings, service);
                    if let Err(e) = shared::db::drop_database(&postgres_url(), &name).await {
                        eprintln!("cleanup: database {name} not dropped: {e}");
                    }
                }
                unbalanced
            })
        });
        if let Ok(Some(sum)) = cleaned.join() {
            panic!("the test's ledger postings sum to {sum} fen, not zero");
        }
    }
}

/// The sum of every posting in the payment ledger when it is not zero.
async fn ledger_sum(settings: &Settings) -> Option<i64> {
    use sea_orm::ConnectionTrait;
    let db = shared::db::connect(settings, "payment").await.ok()?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS n FROM ledger_entries",
        ))
        .await
        .ok()??;
    let _ = db.close().await;
    let sum: i64 = row.try_get("", "n").ok()?;
    (sum != 0).then_some(sum)
}

/// `duikou serve <part>` as a process of its own, on the test's databases
/// and queues (SIGKILL it by dropping it, or with `kill`).
pub fn spawn_child(settings: &Settings, part: &str) -> tokio::process::Child {
    spawn_child_with(settings, part, &[])
}

/// [`spawn_child`] with more `DUIKOU_*` settings for the child.
pub fn spawn_child_with(
    settings: &Settings,
    part: &str,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duikou"));
    command
        .args(["serve", part])
        .env("DUIKOU_POSTGRES_URL", postgres_url())
        .env("DUIKOU_AMQP_URL", amqp_url())
        .env("DUIKOU_DB_PREFIX", &settings.db_prefix)
        .env("DUIKOU_BUS_PREFIX", &settings.bus_prefix)
        .env("DUIKOU_DEMO", "false")
        .env("DUIKOU_HOLD_SECONDS", settings.hold_seconds.to_string())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    if std::env::var("TEST_LOG").is_err() {
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }
    command.spawn().expect("the part starts as a process")
}

/// The edges of the connection `field` in a response (panics, showing the
/// response, when there are none).
pub fn edges(body: &Value, field: &str) -> Vec<Value> {
    body["data"][field]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no {field} edges in {body}"))
}

/// The `n` of the one row `sql` reads from `db` (`SELECT COUNT(*) AS n …`),
/// with `$1`, `$2`, … bound to `values`.
pub async fn count_of<C: sea_orm::ConnectionTrait>(
    db: &C,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> i64 {
    try_count_of(db, sql, values)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`count_of`] for a loop that polls: a read that fails (a database busy
/// or restarting) is tried again by the loop, not the test's end.
pub async fn try_count_of<C: sea_orm::ConnectionTrait>(
    db: &C,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<i64, sea_orm::DbErr> {
    db.query_one_raw(sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .await?
    .ok_or_else(|| sea_orm::DbErr::RecordNotFound("no row".to_owned()))?
    .try_get::<i64>("", "n")
}

/// The `extensions.code` of a response's first error ("none" without one).
pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

/// Asserts that `body`'s first error has `code` and a message containing
/// `says`.
pub fn assert_error(body: &Value, code: &str, says: &str) {
    assert_eq!(self::code(body), code, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(says)),
        "{body}"
    );
}

/// A platform admin's request to pair two regions (codes as written).
pub fn pairing(sponsor: &str, beneficiary: &str) -> shared::rpcs::CreatePartnership {
    let code = |c: &str| shared::region::RegionCode::parse(c).expect("region code");
    shared::rpcs::CreatePartnership {
        sponsor: code(sponsor),
        beneficiary: code(beneficiary),
        since: None,
        notes: None,
        demo: false,
        by: Principal::platform(),
    }
}

pub fn tomorrow() -> NaiveDate {
    Utc::now().date_naive() + Days::days(1)
}

/// A homestay in 敖汉旗 with `rooms` rooms at 380 yuan for 60 nights from
/// tomorrow, created through `bus` (the inventory's, or any that reaches it).
pub async fn homestay_on(bus: &dyn shared::bus::Bus, rooms: u32) -> HomestayCreated {
    let created = call(
        bus,
        &CreateHomestay {
            idempotency_key: None,
            host_name: "敖汉旗测试牧户".into(),
            host_id: None,
            region_code: RegionCode::parse("150430").expect("code"),
            name: "测试蒙古包".into(),
            // No English names: English readers see the Chinese.
            name_en: String::new(),
            room_type: NewRoomType {
                name: "双床".into(),
                name_en: String::new(),
                beds: 2,
                max_guests: 2,
                rooms,
            },
            details: Default::default(),
            cancellation_policy: None,
            unpublished: false,
            by: Principal::platform(),
        },
    )
    .await
    .expect("homestay created");
    call(
        bus,
        &SetRoomCalendar {
            room_type_id: created.room_type_id,
            from: tomorrow(),
            to: tomorrow() + Days::days(60),
            rooms: None,
            price: Some(Fen::yuan(380)),
            closed: Some(false),
            min_stay: Some(1),
            by: Principal::platform(),
        },
    )
    .await
    .expect("calendar set");
    created
}

/// An operation of `levels` fragments on `on`, each spreading the one
/// before twice, under `field`: 2^levels fields as it would run, in some
/// 30 bytes a level.
pub fn doubling_fragments(
    operation: &str,
    field: &str,
    on: &str,
    leaf: &str,
    levels: usize,
) -> String {
    let mut query =
        format!("{operation} {{ {field} {{ ...F{levels} }} }} fragment F0 on {on} {{ {leaf} }}");
    for level in 1..=levels {
        let below = level - 1;
        query.push_str(&format!(
            " fragment F{level} on {on} {{ ...F{below} ...F{below} }}"
        ));
    }
    query
}

/// A transaction of the test's own holding rows locked (PostgreSQL), and how
/// to see the application's requests wait for it: a race set up step by
/// step instead of hoped for.
pub struct LockHeld {
    db: sea_orm::DatabaseConnection,
    txn: sea_orm::DatabaseTransaction,
    pid: i32,
}

impl LockHeld {
    /// Begins on `db` and runs `lock` (a `SELECT … FOR UPDATE`).
    pub async fn begin(db: sea_orm::DatabaseConnection, lock: &str) -> LockHeld {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let txn = db.begin().await.expect("begin");
        let pid: i32 = txn
            .query_one_raw(sea_orm::Statement::from_string(
                txn.get_database_backend(),
                "SELECT pg_backend_pid() AS pid",
            ))
            .await
            .expect("pid")
            .expect("a row")
            .try_get("", "pid")
            .expect("pid");
        txn.execute_unprepared(lock).await.expect("rows locked");
        LockHeld { db, txn, pid }
    }

    /// Polls (20 s at most) until `n` connections to the database wait for
    /// a lock: those this transaction blocks (`on_holder`), or any.
    pub async fn until_waiting(&self, n: i64, on_holder: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting = count_of(
                &self.db,
                "SELECT COUNT(*) AS n FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND backend_type = 'client backend'
                   AND (NOT $2 OR $1 = ANY (pg_blocking_pids(pid)))",
                vec![self.pid.into(), on_holder.into()],
            )
            .await;
            if waiting >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} requests never waited for a lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `sql` in this transaction, as the request it stands in for
    /// would go on (and may be made to wait, or fail).
    pub async fn run(&self, sql: &str) -> Result<(), sea_orm::DbErr> {
        use sea_orm::ConnectionTrait;
        self.txn.execute_unprepared(sql).await.map(|_| ())
    }

    /// Commits, letting the waiting requests go on.
    pub async fn release(self) {
        self.txn.commit().await.expect("rows released");
    }

    /// Ends the connections waiting on this transaction's locks, as a
    /// PostgreSQL restart ends them (SQLSTATE 57P01).
    pub async fn terminate_waiting(&self) {
        use sea_orm::ConnectionTrait;
        self.db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE $1 = ANY (pg_blocking_pids(pid))",
                [self.pid.into()],
            ))
            .await
            .expect("terminated");
    }

    /// The race set up: `first` starts and waits on this transaction's
    /// lock, then `second` starts and waits too (on either), then the lock
    /// goes; both answers.
    pub async fn race<A, B>(self, first: A, second: B) -> (A::Output, B::Output)
    where
        A: std::future::Future,
        B: std::future::Future,
    {
        tokio::join!(first, async {
            self.until_waiting(1, true).await;
            let (second, ()) = tokio::join!(second, async {
                self.until_waiting(2, false).await;
                self.release().await;
            });
            second
        })
    }
}

impl TestApp {
    /// Sends `request` to its service's queue twice under one correlation
    /// id, as the broker redelivers a request whose replica stopped before
    /// acking it, and gives back both replies (`{"Ok": …}` / `{"Err": …}`),
    /// in the order they came.
    #[allow(dead_code)]
    pub async fn rpc_delivered_twice<R: shared::rpc::Rpc>(&self, request: &R) -> Vec<Value> {
        use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable};
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let replies = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("reply queue")
            .name()
            .clone();
        let queue = self.settings.bus().rpc_queue(R::SERVICE);
        let call = uuid::Uuid::now_v7().to_string();
        let body = serde_json::to_vec(request).expect("json");
        for _ in 0..2 {
            let mut headers = FieldTable::default();
            let deadline = Utc::now().timestamp_millis() + 30_000;
            headers.insert("x-deadline-ms".into(), AMQPValue::LongLongInt(deadline));
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default()
                        .with_type(R::METHOD.into())
                        .with_correlation_id(call.as_str().into())
                        .with_reply_to(replies.clone())
                        .with_headers(headers),
                )
                .await
                .expect("published");
        }
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while answers.len() < 2 {
            assert!(Instant::now() < deadline, "replies so far: {answers:?}");
            match channel
                .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get")
            {
                Some(reply) => answers
                    .push(serde_json::from_slice(&reply.delivery.data).expect("a JSON reply")),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let _ = conn.close(0, "done".into()).await;
        answers
    }
}
