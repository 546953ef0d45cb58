//! Configuration: `DUIKOU_*` environment variables over an optional TOML
//! file. Secrets (URLs with passwords, the admin password) are wrapped so
//! they never print, not even in `Debug`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bus::BusConfig;
use crate::money::SplitRates;

/// Everything the launcher and the services read from the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// PostgreSQL server; each service uses its own database on it. None: SQLite.
    pub postgres_url: Option<SecretString>,
    /// RabbitMQ. None: the in-process bus.
    pub amqp_url: Option<SecretString>,
    /// Redis. None: the in-process rate limiter.
    pub redis_url: Option<SecretString>,
    /// Where the gateway listens.
    pub gateway_addr: String,
    /// Where embedded mode keeps its SQLite files.
    pub data_dir: PathBuf,
    /// Database names are `<db_prefix><service>`.
    pub db_prefix: String,
    /// Prefix on exchange and queue names.
    pub bus_prefix: String,
    /// Connections per service database pool.
    #[serde(deserialize_with = "whole")]
    pub db_max_connections: u32,
    /// Default RPC deadline in milliseconds.
    #[serde(deserialize_with = "whole")]
    pub rpc_timeout_ms: u64,
    /// Unacked deliveries per consumer.
    #[serde(deserialize_with = "whole")]
    pub prefetch: u16,
    /// Redeliveries of a failing message before it is dead-lettered (it is
    /// delivered this many times plus the first).
    #[serde(deserialize_with = "whole")]
    pub delivery_limit: u32,
    /// How long a hold lasts before the booking expires, in seconds.
    #[serde(deserialize_with = "whole")]
    pub hold_seconds: i64,
    /// How long past its deadline inventory keeps an unpaid hold before its
    /// own sweeper releases it (booking's expiry normally comes first).
    #[serde(deserialize_with = "whole")]
    pub hold_grace_seconds: i64,
    /// How long past its deadline booking keeps a booking whose payment is
    /// in flight (begun in time, the provider's answer not recorded yet),
    /// for the payment to settle; 0 expires every booking at its deadline.
    /// At most three quarters of `hold_grace_seconds` is used: inventory's
    /// own sweeper releases the hold then (booking's expiry still decides,
    /// keeping a booking whose capture is on its way).
    #[serde(deserialize_with = "whole")]
    pub payment_wait_seconds: i64,
    /// A booking still PENDING this many seconds after its hold request asks again.
    #[serde(deserialize_with = "whole")]
    pub pending_retry_seconds: i64,
    /// Hold requests per booking before it is rejected as unanswered.
    #[serde(deserialize_with = "whole")]
    pub hold_attempts: i32,
    /// For how long, in milliseconds, booking answers a create SOLD_OUT at
    /// once when inventory has just refused the same stay as sold out
    /// (unless a release of the listing came since); 0 sends every create
    /// to inventory.
    #[serde(deserialize_with = "whole")]
    pub sold_out_memory_ms: u64,
    /// Platform fee in basis points (300 = 3 %).
    #[serde(deserialize_with = "whole")]
    pub platform_fee_bp: u32,
    /// Welfare fund share in basis points (100 = 1 %).
    #[serde(deserialize_with = "whole")]
    pub fund_bp: u32,
    /// How long the sandbox provider takes for `tok_slow`, in milliseconds.
    #[serde(deserialize_with = "whole")]
    pub sandbox_slow_ms: u64,
    /// A payment still PROCESSING this many seconds after its last change is
    /// reconciled with the provider.
    #[serde(deserialize_with = "whole")]
    pub reconcile_after_seconds: i64,
    /// Key that signs access tokens (≥ 32 characters). None: one generated
    /// once and kept in the gateway's database, shared by its replicas.
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of an access token, in minutes.
    #[serde(deserialize_with = "whole")]
    pub access_token_minutes: i64,
    /// For how many seconds a refresh token just exchanged may be exchanged
    /// again (two tabs, or an app's parallel requests, refreshing one token
    /// at once): each such call gets a pair of its own in the same sign-in.
    /// Past it, a token presented again has leaked and ends every session.
    /// 0: no grace.
    #[serde(deserialize_with = "whole")]
    pub refresh_reuse_seconds: i64,
    /// How often the gateway pings a subscription socket, in seconds; a
    /// socket that has sent nothing (not even the pong every client sends
    /// back) for three of these is closed as gone.
    #[serde(deserialize_with = "whole")]
    pub socket_ping_seconds: u64,
    /// Seconds a stopping gateway goes on serving with `/readyz` answering
    /// 503, before it closes its listener: set it to a little more than
    /// the load balancer's probe period. 0 (the default): closed at once.
    #[serde(deserialize_with = "whole")]
    pub drain_seconds: u64,
    /// Requests a caller (account, or IP without a token) may send per
    /// window; 0 turns the limit off.
    #[serde(deserialize_with = "whole")]
    pub rate_limit: u32,
    /// The rate limit's window, in seconds.
    #[serde(deserialize_with = "whole")]
    pub rate_limit_window_seconds: u64,
    /// Bootstrap platform admin.
    pub admin_email: Option<String>,
    /// Bootstrap platform admin's password.
    pub admin_password: Option<SecretString>,
    /// `pretty` or `json`.
    pub log_format: String,
    /// Load the demonstration catalogue when a catalogue is empty on start.
    /// Unset: yes in embedded mode, no with real servers (see [`Settings::demo`]).
    #[serde(rename = "demo")]
    pub demo_data: Option<bool>,
    /// Also create the demonstration accounts (known password) outside
    /// embedded mode; set by `duikou seed --demo`.
    #[serde(skip)]
    pub seed_demo_accounts: bool,
    /// Faults to inject into the bus (`duplicate,reorder,delay`, `all`, `late`): tests and
    /// chaos runs only.
    pub faults: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            postgres_url: None,
            amqp_url: None,
            redis_url: None,
            gateway_addr: "127.0.0.1:8000".into(),
            data_dir: PathBuf::from("data"),
            db_prefix: "duikou_".into(),
            bus_prefix: String::new(),
            db_max_connections: 10,
            rpc_timeout_ms: 5_000,
            prefetch: 32,
            delivery_limit: 5,
            hold_seconds: 15 * 60,
            hold_grace_seconds: 60,
            payment_wait_seconds: 45,
            pending_retry_seconds: 30,
            hold_attempts: 5,
            sold_out_memory_ms: 2_000,
            platform_fee_bp: 300,
            fund_bp: 100,
            sandbox_slow_ms: 2_000,
            reconcile_after_seconds: 60,
            jwt_secret: None,
            rate_limit: 600,
            rate_limit_window_seconds: 60,
            access_token_minutes: 15,
            refresh_reuse_seconds: 10,
            socket_ping_seconds: 20,
            drain_seconds: 0,
            admin_email: None,
            admin_password: None,
            log_format: "pretty".into(),
            demo_data: None,
            seed_demo_accounts: false,
            faults: String::new(),
        }
    }
}

/// A whole number, strictly: the `config` crate would read `2.6` as 3 and
/// `true` as 1 for a number of requests or seconds; a setting that is not
/// what it says is refused instead.
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i128;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<i128, E> {
            Ok(v)
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<i128, E> {
            i128::try_from(v).map_err(|_| E::custom("too large"))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i128, E> {
            v.parse()
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    let n = deserializer.deserialize_any(Whole)?;
    T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
}

/// Refuses a key of the file that names no setting (`hold_secnods`, an
/// upper-case `HOLD_SECONDS`, a `[duikou]` table): a file is written on
/// purpose, and a misspelt key would leave its setting at the default
/// unseen. (Environment variables cannot be held to this: `DUIKOU_CONFIG`
/// and the tests' own `DUIKOU_TEST_*` share the prefix.)
fn unknown_keys_refused(
    path: &Path,
    source: config::File<config::FileSourceFile, config::FileFormat>,
) -> Result<(), config::ConfigError> {
    let alone = config::Config::builder().add_source(source).build()?;
    let keys: serde_json::Map<String, serde_json::Value> = alone.try_deserialize()?;
    // Each key read alone: a key read as a setting is known whatever its
    // value (a value the file gets wrong is the whole load's to judge: a
    // variable may override it), and a wrong value elsewhere in the file
    // must not stop the reading before a misspelt key is reached.
    let unknown: Vec<String> = keys
        .into_iter()
        .filter(|(key, value)| {
            let mut passed_over = false;
            let one =
                serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
            let _: Result<Settings, _> = serde_ignored::deserialize(one, |_| passed_over = true);
            passed_over
        })
        .map(|(key, _)| key)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(config::ConfigError::Message(format!(
        "{}: no setting is called {} (keys are the variable names without DUIKOU_, in lower \
         case: hold_seconds = 600; docs/operations.md lists them)",
        path.display(),
        unknown.join(", ")
    )))
}

/// A setting's error as the config crate says it ("… for key
/// `hold_seconds` …"), with the variable that sets it named: the key is
/// the config file's spelling, the variable is what most set.
fn named(e: config::ConfigError) -> config::ConfigError {
    let text = e.to_string();
    let key = text
        .split_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key.to_owned());
    match key {
        Some(key) if !key.is_empty() => config::ConfigError::Message(format!(
            "{text} (DUIKOU_{} in the environment, or `{key}` in the config file)",
            key.to_uppercase()
        )),
        _ => e,
    }
}

/// A server's URL as it may be shown: scheme, host, port and path, never
/// its credentials.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl Settings {
    /// How long booking keeps an overdue booking whose payment is in
    /// flight, in seconds: `payment_wait_seconds`, at most three quarters
    /// of `hold_grace_seconds` (a booking confirmed as inventory's sweeper
    /// releases its hold would take the capacity again, or be cancelled
    /// and refunded if it was sold meanwhile).
    pub fn payment_wait_in_effect(&self) -> i64 {
        self.payment_wait_seconds
            .min(self.hold_grace_seconds.saturating_mul(3) / 4)
    }

    /// How often payment's reconciler looks (at stuck payments, and at the
    /// captures booking has handled since): every
    /// `reconcile_after_seconds`, at least once a second and at most every
    /// 30 s.
    pub fn reconcile_round(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.reconcile_after_seconds.clamp(1, 30)).unwrap_or(30),
        )
    }

    /// Reads the optional file, then `DUIKOU_*` variables over it
    /// (`DUIKOU_POSTGRES_URL` sets `postgres_url`).
    pub fn load(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
        Settings::load_from(file, None)
    }

    /// [`Settings::load`] with the variables given (`None`: the process's).
    /// Each value is read as text and converted by the setting it is for:
    /// parsing them first (`try_parsing`) read a password of digits,
    /// `0001234567890123`, as the number 1234567890123, and a JWT secret of
    /// forty digits as a float rounded to seventeen.
    fn load_from(
        file: Option<&Path>,
        variables: Option<HashMap<String, String>>,
    ) -> Result<Settings, config::ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let source = config::File::from(path).required(true);
            unknown_keys_refused(path, source.clone())?;
            builder = builder.add_source(source);
        }
        builder
            .add_source(
                config::Environment::with_prefix("DUIKOU")
                    .prefix_separator("_")
                    .source(variables),
            )
            .build()?
            .try_deserialize()
            .map_err(named)
    }

    /// Refuses settings no deployment should run with: an empty URL (a
    /// `DUIKOU_POSTGRES_URL=${UNSET}` would otherwise choose the mode), shares of a sale
    /// that leave the host nothing (fee + fund at most 70 %, leaving room
    /// for an agency's commission of up to 30 %).
    pub fn check(&self) -> Result<(), String> {
        // A typo would give coloured text where a collector reads JSON.
        if !["pretty", "json"]
            .iter()
            .any(|f| self.log_format.eq_ignore_ascii_case(f))
        {
            return Err(format!(
                "DUIKOU_LOG_FORMAT is {:?}: pretty or json",
                self.log_format
            ));
        }
        for (name, url) in [
            ("DUIKOU_POSTGRES_URL", &self.postgres_url),
            ("DUIKOU_AMQP_URL", &self.amqp_url),
            ("DUIKOU_REDIS_URL", &self.redis_url),
        ] {
            use secrecy::ExposeSecret;
            if url
                .as_ref()
                .is_some_and(|u| u.expose_secret().trim().is_empty())
            {
                return Err(format!(
                    "{name} is set but empty: give a URL, or unset it (see docs/operations.md)"
                ));
            }
        }
        if self.postgres_url.is_some() != self.amqp_url.is_some() {
            return Err(
                "DUIKOU_POSTGRES_URL and DUIKOU_AMQP_URL go together: set both (distributed) \
                        or neither (embedded: SQLite files and an in-process bus)"
                    .into(),
            );
        }
        // The example compose file's placeholders, kept by mistake: a
        // published signing key lets anyone sign an admin's token.
        for (name, value) in [
            ("DUIKOU_JWT_SECRET", self.jwt_secret()),
            (
                "DUIKOU_ADMIN_PASSWORD",
                self.admin_password.as_ref().map(|p| p.expose_secret()),
            ),
        ] {
            if value.is_some_and(|v| v.to_lowercase().contains("change-me")) {
                return Err(format!(
                    "{name} is still an example's placeholder (\"change-me…\"): set a secret of \
                     your own"
                ));
            }
        }
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return Err(
                "DUIKOU_ADMIN_EMAIL and DUIKOU_ADMIN_PASSWORD go together: set both \
                        (the bootstrap platform admin) or neither"
                    .into(),
            );
        }
        // In u64: two u32 near their maximum would wrap round to a small
        // sum and pass.
        if u64::from(self.platform_fee_bp) + u64::from(self.fund_bp) > 7_000 {
            return Err(format!(
                "DUIKOU_PLATFORM_FEE_BP ({}) and DUIKOU_FUND_BP ({}) may add up to 7000 basis points at most",
                self.platform_fee_bp, self.fund_bp
            ));
        }
        for (name, n) in [
            (
                "DUIKOU_DB_MAX_CONNECTIONS",
                u64::from(self.db_max_connections),
            ),
            ("DUIKOU_PREFETCH", u64::from(self.prefetch)),
            ("DUIKOU_DELIVERY_LIMIT", u64::from(self.delivery_limit)),
            (
                "DUIKOU_HOLD_ATTEMPTS",
                u64::try_from(self.hold_attempts).unwrap_or(0),
            ),
            (
                "DUIKOU_RECONCILE_AFTER_SECONDS",
                u64::try_from(self.reconcile_after_seconds).unwrap_or(0),
            ),
            (
                "DUIKOU_RATE_LIMIT_WINDOW_SECONDS",
                self.rate_limit_window_seconds,
            ),
        ] {
            if n == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        // 0 fails every call; past minutes a caller has long given up, and
        // far past it a deadline's date arithmetic overflows.
        if !(1..=600_000).contains(&self.rpc_timeout_ms) {
            return Err("DUIKOU_RPC_TIMEOUT_MS must be between 1 and 600000 (ten minutes)".into());
        }
        if !(0..=60).contains(&self.refresh_reuse_seconds) {
            return Err("DUIKOU_REFRESH_REUSE_SECONDS must be between 0 and 60".into());
        }
        if self.drain_seconds > 300 {
            return Err("DUIKOU_DRAIN_SECONDS must be between 0 and 300 (five minutes)".into());
        }
        if !(1..=3600).contains(&self.socket_ping_seconds) {
            return Err("DUIKOU_SOCKET_PING_SECONDS must be between 1 and 3600 (an hour)".into());
        }
        if self.hold_seconds < 1 || self.pending_retry_seconds < 1 {
            return Err(
                "DUIKOU_HOLD_SECONDS and DUIKOU_PENDING_RETRY_SECONDS must be at least 1".into(),
            );
        }
        // Past a year none of these means anything, and far past it the
        // date arithmetic they feed overflows.
        const YEAR: i64 = 366 * 24 * 3600;
        for (name, seconds) in [
            ("DUIKOU_HOLD_SECONDS", self.hold_seconds),
            ("DUIKOU_HOLD_GRACE_SECONDS", self.hold_grace_seconds),
            ("DUIKOU_PAYMENT_WAIT_SECONDS", self.payment_wait_seconds),
            ("DUIKOU_PENDING_RETRY_SECONDS", self.pending_retry_seconds),
            (
                "DUIKOU_RECONCILE_AFTER_SECONDS",
                self.reconcile_after_seconds,
            ),
            (
                "DUIKOU_ACCESS_TOKEN_MINUTES",
                self.access_token_minutes.saturating_mul(60),
            ),
        ] {
            if !(0..=YEAR).contains(&seconds) {
                return Err(format!("{name} must be between 0 and a year"));
            }
        }
        Ok(())
    }

    /// The bus tunables.
    pub fn bus(&self) -> BusConfig {
        BusConfig {
            prefix: self.bus_prefix.clone(),
            prefetch: self.prefetch,
            delivery_limit: self.delivery_limit,
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
        }
    }

    /// The split rates for a traveler's own booking.
    pub fn split_rates(&self) -> SplitRates {
        SplitRates {
            platform_bp: self.platform_fee_bp,
            fund_bp: self.fund_bp,
            agency_bp: 0,
        }
    }

    /// `embedded` or `distributed`, for the start-up summary.
    pub fn mode(&self) -> &'static str {
        if self.postgres_url.is_some() || self.amqp_url.is_some() {
            "distributed"
        } else {
            "embedded"
        }
    }

    /// Whether to load the demonstration data into empty catalogues:
    /// `DUIKOU_DEMO` when set, otherwise only in embedded mode — a
    /// distributed deployment starts empty unless asked (`duikou seed --demo`).
    pub fn demo(&self) -> bool {
        self.demo_data.unwrap_or(self.mode() == "embedded")
    }

    /// The Redis URL, if one is configured.
    pub fn redis(&self) -> Option<&str> {
        self.redis_url.as_ref().map(|s| s.expose_secret())
    }

    /// The configured token signing key.
    pub fn jwt_secret(&self) -> Option<&str> {
        self.jwt_secret.as_ref().map(|s| s.expose_secret())
    }

    /// The bootstrap admin's email and password, when both are set.
    pub fn bootstrap_admin(&self) -> Option<(&str, &str)> {
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(password)) => Some((email.as_str(), password.expose_secret())),
            _ => None,
        }
    }

    /// Where each server is, for the start-up summary: scheme, host, port
    /// and path, never a user or password.
    pub fn servers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.postgres() {
            Some(url) => out.push((
                "PostgreSQL",
                format!("{} (databases {}<service>)", redacted(url), self.db_prefix),
            )),
            None => out.push((
                "SQLite",
                // Joined, not formatted: an empty directory (the working
                // one) printed as if the files were under `/`.
                self.data_dir
                    .join(format!("{}<service>.db", self.db_prefix))
                    .display()
                    .to_string(),
            )),
        }
        match self.amqp() {
            Some(url) => out.push(("RabbitMQ", redacted(url))),
            None => out.push(("bus", "in-process".to_owned())),
        }
        match self.redis() {
            Some(url) => out.push(("Redis", redacted(url))),
            None => out.push(("limits", "in-process".to_owned())),
        }
        out
    }

    /// The AMQP URL, if one is configured.
    pub fn amqp(&self) -> Option<&str> {
        self.amqp_url.as_ref().map(|s| s.expose_secret())
    }

    /// The PostgreSQL URL, if one is configured.
    pub fn postgres(&self) -> Option<&str> {
        self.postgres_url.as_ref().map(|s| s.expose_secret())
    }

    /// The connections each service's pool opens at most: the setting on
    /// PostgreSQL; one on SQLite, which has one writer anyway (a second
    /// connection inside an open transaction would wait on itself).
    pub fn db_pool_size(&self) -> u32 {
        if self.postgres().is_some() {
            self.db_max_connections
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_placeholders_are_refused_as_secrets() {
        for (secret, password) in [
            (
                Some("change-me-to-a-long-random-secret-of-32-or-more"),
                None,
            ),
            (None, Some("Change-Me-Please")),
        ] {
            let settings = Settings {
                jwt_secret: secret.map(|s| s.to_owned().into()),
                admin_email: password.map(|_| "admin@example.com".to_owned()),
                admin_password: password.map(|p| p.to_owned().into()),
                ..Settings::default()
            };
            let refused = settings.check().expect_err("a placeholder");
            assert!(refused.contains("placeholder"), "{refused}");
        }
        let own = Settings {
            jwt_secret: Some("k".repeat(40).into()),
            ..Settings::default()
        };
        assert_eq!(own.check(), Ok(()));
    }

    #[test]
    fn secrets_never_print() {
        let settings = Settings {
            postgres_url: Some("postgres://app:hunter2@db:5432".to_owned().into()),
            amqp_url: Some("amqp://app:hunter2@mq:5672/%2f".to_owned().into()),
            admin_password: Some("hunter2".to_owned().into()),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        let summary = format!("{:?}", settings.servers());
        assert!(
            !summary.contains("hunter2") && !summary.contains("app@"),
            "{summary}"
        );
        assert!(summary.contains("postgres://db:5432"), "{summary}");
    }

    #[test]
    fn the_summary_names_the_sqlite_files_where_they_are() {
        let files = |dir: &str| {
            let settings = Settings {
                data_dir: PathBuf::from(dir),
                ..Settings::default()
            };
            settings.servers()[0].1.clone()
        };
        assert_eq!(files(""), "duikou_<service>.db");
        assert_eq!(files("data"), "data/duikou_<service>.db");
        assert_eq!(
            files("/var/lib/duikou/"),
            "/var/lib/duikou/duikou_<service>.db"
        );
    }

    fn from_toml(text: &str) -> Result<Settings, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
    }

    #[test]
    fn a_number_setting_is_a_whole_number_or_refused() {
        for fine in ["rate_limit = 5", "rate_limit = \"5\""] {
            assert_eq!(
                from_toml(fine).map(|s| s.rate_limit).ok(),
                Some(5),
                "{fine}"
            );
        }
        for bad in [
            "rate_limit = 2.6",
            "rate_limit_window_seconds = true",
            "hold_seconds = \"1e3\"",
            "rate_limit = -1",
            "prefetch = 70000",
        ] {
            assert!(from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bootstrap_admin_needs_both_its_email_and_password() {
        let email_only = Settings {
            admin_email: Some("boss@example.cn".into()),
            ..Settings::default()
        };
        assert!(
            email_only
                .check()
                .is_err_and(|e| e.contains("DUIKOU_ADMIN_PASSWORD"))
        );
        let password_only = Settings {
            admin_password: Some("a-long-password".to_owned().into()),
            ..Settings::default()
        };
        assert!(password_only.check().is_err());
    }

    #[test]
    fn variables_are_read_as_the_text_they_are() {
        let variables = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let digits = "1234567890123456789012345678901234567890";
        let read = Settings::load_from(
            None,
            variables(&[
                ("DUIKOU_ADMIN_PASSWORD", "0001234567890123"),
                ("DUIKOU_JWT_SECRET", digits),
                ("DUIKOU_DB_PREFIX", "007_"),
                ("DUIKOU_RATE_LIMIT", "5"),
                ("DUIKOU_DEMO", "false"),
            ]),
        )
        .expect("settings");
        assert_eq!(read.bootstrap_admin(), None, "no email given");
        assert_eq!(
            read.admin_password.as_ref().map(|p| p.expose_secret()),
            Some("0001234567890123")
        );
        assert_eq!(read.jwt_secret(), Some(digits));
        assert_eq!(read.db_prefix, "007_");
        assert_eq!((read.rate_limit, read.demo_data), (5, Some(false)));
        // Refused naming the variable (the config crate names the key).
        for bad in [("DUIKOU_RATE_LIMIT", "2.6"), ("DUIKOU_DEMO", "maybe")] {
            let refused = Settings::load_from(None, variables(&[bad]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(refused.contains(bad.0), "{bad:?}: {refused}");
        }
        let typo = Settings {
            log_format: "JSON ".into(),
            ..Settings::default()
        };
        assert!(typo.check().is_err_and(|e| e.contains("DUIKOU_LOG_FORMAT")));
    }

    #[test]
    fn a_file_key_that_names_no_setting_is_refused() {
        let dir = std::env::temp_dir().join(format!("duikou-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("written");
            path
        };
        let fine = file("fine.toml", "hold_seconds = 600\nrate_limit = 5\n");
        let read = Settings::load_from(Some(&fine), Some(HashMap::new())).expect("settings");
        assert_eq!((read.hold_seconds, read.rate_limit), (600, 5));
        // A bad value in the file that a variable overrides is no fault.
        let overridden = file("overridden.toml", "rate_limit = \"lots\"\n");
        let variables = HashMap::from([("DUIKOU_RATE_LIMIT".to_owned(), "7".to_owned())]);
        let read = Settings::load_from(Some(&overridden), Some(variables)).expect("settings");
        assert_eq!(read.rate_limit, 7);
        for (name, text) in [
            ("typo.toml", "hold_secnods = 30\n"),
            ("upper.toml", "HOLD_SECONDS = 0\n"),
            ("table.toml", "[duikou]\nhold_seconds = 0\n"),
        ] {
            let said = Settings::load_from(Some(&file(name, text)), Some(HashMap::new()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(said.contains("no setting is called"), "{name}: {said}");
        }
        // A misspelt key beside a bad value a variable overrides is still
        // named (the file's reading stopped at the bad value, and the typo
        // went unseen).
        let both = file(
            "both.toml",
            "hold_secnods = 30\nrate_limit = \"lots\"\nprefetch = 70000\n",
        );
        let variables = HashMap::from([
            ("DUIKOU_RATE_LIMIT".to_owned(), "7".to_owned()),
            ("DUIKOU_PREFETCH".to_owned(), "8".to_owned()),
        ]);
        let said = Settings::load_from(Some(&both), Some(variables))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(said.contains("no setting is called hold_secnods"), "{said}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_empty_url_or_a_setting_below_its_least_is_refused() {
        let empty = Settings {
            postgres_url: Some(String::new().into()),
            amqp_url: Some("amqp://mq:5672/%2f".to_owned().into()),
            ..Settings::default()
        };
        assert!(
            empty
                .check()
                .is_err_and(|e| e.contains("DUIKOU_POSTGRES_URL is set but empty"))
        );
        for (bad, name) in [
            (
                Settings {
                    hold_attempts: 0,
                    ..Settings::default()
                },
                "DUIKOU_HOLD_ATTEMPTS",
            ),
            (
                Settings {
                    reconcile_after_seconds: -3,
                    ..Settings::default()
                },
                "DUIKOU_RECONCILE_AFTER_SECONDS",
            ),
            (
                Settings {
                    rate_limit_window_seconds: 0,
                    ..Settings::default()
                },
                "DUIKOU_RATE_LIMIT_WINDOW_SECONDS",
            ),
            // Added as u32, 300 + 4294967000 wraps round to 4.
            (
                Settings {
                    platform_fee_bp: 300,
                    fund_bp: 4_294_967_000,
                    ..Settings::default()
                },
                "DUIKOU_FUND_BP",
            ),
        ] {
            assert!(bad.check().is_err_and(|e| e.contains(name)), "{name}");
        }
    }

    #[test]
    fn postgres_and_rabbitmq_go_together() {
        let postgres_only = Settings {
            postgres_url: Some("postgres://db:5432".to_owned().into()),
            ..Settings::default()
        };
        assert!(
            postgres_only
                .check()
                .is_err_and(|e| e.contains("DUIKOU_AMQP_URL"))
        );
        let rabbitmq_only = Settings {
            amqp_url: Some("amqp://mq:5672/%2f".to_owned().into()),
            ..Settings::default()
        };
        assert!(rabbitmq_only.check().is_err());
        let both = Settings {
            amqp_url: Some("amqp://mq:5672/%2f".to_owned().into()),
            ..postgres_only
        };
        assert!(both.check().is_ok());
    }

    #[test]
    fn durations_past_a_year_are_refused_before_they_overflow() {
        for bad in [
            Settings {
                hold_seconds: i64::MAX,
                ..Settings::default()
            },
            Settings {
                hold_grace_seconds: -1,
                ..Settings::default()
            },
            Settings {
                access_token_minutes: i64::MAX,
                ..Settings::default()
            },
            Settings {
                rpc_timeout_ms: u64::MAX,
                ..Settings::default()
            },
            Settings {
                rpc_timeout_ms: 0,
                ..Settings::default()
            },
            Settings {
                db_max_connections: 0,
                ..Settings::default()
            },
            Settings {
                prefetch: 0,
                ..Settings::default()
            },
            Settings {
                refresh_reuse_seconds: 61,
                ..Settings::default()
            },
            Settings {
                drain_seconds: 301,
                ..Settings::default()
            },
        ] {
            assert!(bad.check().is_err());
        }
        assert!(Settings::default().check().is_ok());
    }
}
