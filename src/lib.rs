//! The `duikou` launcher: starts all parts in one process or one part alone,
//! over the same bus and the same messages either way.

pub mod bench;
pub mod bench_booking;
pub mod bench_cpu;
pub mod bench_holds;
pub mod bench_resources;
pub mod bench_search;
pub mod chaos;
pub mod check;

use anyhow::Context;
use shared::config::Settings;
use shared::runtime::Runtime;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A part of Duikou that `duikou serve` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Every part in one process.
    All,
    /// The public GraphQL API.
    Gateway,
    /// Catalogue, capacity and holds.
    Inventory,
    /// Bookings and the saga.
    Booking,
    /// Payments and the ledger.
    Payment,
    /// Partnerships and impact.
    Partnership,
}

impl Part {
    fn includes(self, other: Part) -> bool {
        self == Part::All || self == other
    }
}

/// A running Duikou (all of it or one part).
pub struct App {
    /// Settings, bus and background tasks.
    pub rt: Runtime,
    /// Where the gateway listens, when this process runs it.
    pub gateway_addr: Option<SocketAddr>,
    gateway: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Cancelled by [`App::drain`]: the gateway's `/readyz` says it is
    /// stopping.
    draining: CancellationToken,
    /// Demonstration accounts created by this start, to show once.
    pub demo_accounts: Option<gateway::identity::DemoAccounts>,
    /// Embedded, the lock on the data directory, held while this runs.
    _data_lock: Option<std::fs::File>,
}

/// The first step of a start ([`App::connect`]): settings checked, the
/// data directory locked (embedded) and the bus connected; no part started.
pub struct Connected {
    rt: Runtime,
    data_lock: Option<std::fs::File>,
}

/// Embedded, one process at a time on a data directory: each has its own
/// in-process bus, so a second would publish the same outbox rows to
/// itself and answer for bookings the first is holding. The lock is the
/// operating system's on `<data_dir>/duikou.lock`, let go when the process
/// ends however it ends.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("duikou.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another Duikou is running on {} (one process at a time on a data directory \
             without the servers; stop it, or set DUIKOU_DATA_DIR to another directory)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text
/// its outer error already quotes (the database driver's, under sea-orm's)
/// is left out — `{:#}` printed the driver's message twice.
pub fn explained(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Installs the process-wide rustls crypto provider (STACK.md trap 1).
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl App {
    /// Starts `part` with `settings`. The gateway binds `settings.gateway_addr`
    /// (port 0 picks a free port; see [`App::gateway_addr`]).
    pub async fn start(settings: Settings, part: Part) -> anyhow::Result<App> {
        App::start_connected(App::connect(settings, part).await?, part).await
    }

    /// Checks the settings, locks the data directory (embedded) and
    /// connects the bus — waiting for RabbitMQ for as long as it is away.
    /// Nothing has started yet: a stop asked for meanwhile may drop it.
    pub async fn connect(settings: Settings, part: Part) -> anyhow::Result<Connected> {
        install_crypto();
        settings.check().map_err(anyhow::Error::msg)?;
        // Every part in one process, as `serve` and `seed` start it (a part
        // alone embedded is refused by `serve`; tests start parts side by
        // side in one process on purpose).
        let data_lock = match (settings.postgres(), part) {
            (None, Part::All) => Some(lock_data_dir(&settings.data_dir)?),
            _ => None,
        };
        let rt = Runtime::connect(settings)
            .await
            .context("connecting the bus")?;
        Ok(Connected { rt, data_lock })
    }

    /// Starts `part` on what [`App::connect`] made: migrations, seeding and
    /// the parts, to the end (a start cut short could leave demonstration
    /// data claimed and half seeded).
    pub async fn start_connected(connected: Connected, part: Part) -> anyhow::Result<App> {
        let Connected { rt, data_lock } = connected;
        // Services first, so the gateway's first request finds them.
        if part.includes(Part::Inventory) {
            inventory::start(&rt).await.context("starting inventory")?;
        }
        if part.includes(Part::Booking) {
            booking::start(&rt).await.context("starting booking")?;
        }
        if part.includes(Part::Payment) {
            payment::start(&rt).await.context("starting payment")?;
        }
        if part.includes(Part::Partnership) {
            partnership::start(&rt)
                .await
                .context("starting partnership")?;
        }
        // Every part here has subscribed: what their outboxes hold reaches
        // every queue it is for.
        rt.start_relays();
        let mut app = App {
            rt,
            gateway_addr: None,
            gateway: None,
            draining: CancellationToken::new(),
            demo_accounts: None,
            _data_lock: data_lock,
        };
        if part.includes(Part::Gateway) {
            let listener = TcpListener::bind(&app.rt.settings.gateway_addr)
                .await
                .with_context(|| {
                    format!("binding the gateway to {}", app.rt.settings.gateway_addr)
                })?;
            let identity = start_identity(&app.rt.settings).await?;
            // Known demo passwords only where nobody else can log in: the
            // embedded default on a loopback address, or when asked for
            // (`duikou seed --demo`). An embedded gateway listening beyond
            // this machine (the image's 0.0.0.0) would hand anyone the
            // demo region admin.
            let settings = &app.rt.settings;
            let loopback = listener.local_addr()?.ip().is_loopback();
            let embedded_demo = settings.demo() && settings.mode() == "embedded";
            if (embedded_demo && loopback) || (settings.demo() && settings.seed_demo_accounts) {
                app.demo_accounts = identity
                    .seed_demo_accounts()
                    .await
                    .map_err(|e| anyhow::anyhow!("seeding demo accounts: {}", e.message))?;
            } else if embedded_demo {
                tracing::warn!(
                    addr = %settings.gateway_addr,
                    "demo accounts not created: the gateway listens beyond this machine and \
                     their passwords are published; `duikou seed --demo` creates them on purpose"
                );
            }
            let settings = &app.rt.settings;
            let redis = match settings.redis() {
                Some(url) => Some(
                    redis::Client::open(url)
                        .context("the Redis URL")?
                        .get_connection_manager()
                        .await
                        .with_context(|| {
                            format!(
                                "connecting to Redis at {} (DUIKOU_REDIS_URL)",
                                shared::config::redacted(url)
                            )
                        })
                        .map(gateway::guarded::Redis::new)?,
                ),
                None => None,
            };
            let limiter = gateway::limits::Limiter::new(
                redis.clone(),
                &settings.db_prefix,
                settings.rate_limit,
                std::time::Duration::from_secs(settings.rate_limit_window_seconds),
            );
            let cancel = CancellationToken::new();
            let cache = gateway::cache::Cache::new(redis.clone(), &settings.db_prefix);
            let (addr, handle) = gateway::serve(
                app.rt.bus.clone(),
                identity,
                gateway::http::Infra {
                    limiter,
                    redis,
                    cache,
                    ping_every: std::time::Duration::from_secs(settings.socket_ping_seconds),
                    draining: app.draining.clone(),
                },
                listener,
                cancel.clone(),
            )
            .await?;
            app.gateway_addr = Some(addr);
            app.gateway = Some((cancel, handle));
        }
        Ok(app)
    }

    /// Tells the gateway, if this process runs it, to stop: it accepts no
    /// more, closes its subscription sockets (1001) and drains its requests
    /// ([`App::stop`] waits for it and stops the rest).
    pub fn stop_gateway(&self) {
        if let Some((cancel, _)) = &self.gateway {
            cancel.cancel();
        }
    }

    /// The first step of a stop behind a load balancer: the gateway's
    /// `/readyz` answers 503 (`"stopping"`) while it goes on serving for
    /// `within`, so that the balancer's next probes take this replica out
    /// before its listener closes (closed at once, connections it still
    /// sent here were refused). Nothing to wait for without a gateway.
    pub async fn drain(&self, within: std::time::Duration) {
        self.draining.cancel();
        if self.gateway.is_some() {
            tokio::time::sleep(within).await;
        }
    }

    /// Stops accepting requests, lets handlers in flight finish, stops.
    pub async fn stop(self) {
        if let Some((cancel, handle)) = self.gateway {
            cancel.cancel();
            let _ = handle.await;
        }
        self.rt.shutdown().await;
    }
}

/// The gateway's accounts and tokens: its database, migrated, and the
/// bootstrap admin from configuration.
async fn start_identity(settings: &Settings) -> anyhow::Result<gateway::identity::Identity> {
    use gateway::identity::{Identity, storage};
    let db = shared::db::connect_migrated::<storage::Migrator>(settings, storage::DATABASE).await?;
    let identity = Identity::new(
        db,
        settings.jwt_secret(),
        settings.access_token_minutes,
        settings.refresh_reuse_seconds,
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting identity: {}", e.message))?;
    if let Some((email, password)) = settings.bootstrap_admin() {
        identity
            .bootstrap_admin(email, password)
            .await
            .map_err(|e| anyhow::anyhow!("creating the bootstrap admin: {}", e.message))?;
    }
    Ok(identity)
}

/// Creates every service's database (if missing) and runs its migrations;
/// with RabbitMQ configured, also declares every service's event queue with
/// its bindings. A topic exchange delivers only to queues that exist, so
/// without this a service started after the others (a split deployment
/// brought up out of order) would never hear what was published before its
/// first start — `booking.confirmed` reaches inventory's queue and the
/// gateways', so the broker returns nothing and the outbox lets it go.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    use shared::outbox::OutboxSignal;
    install_crypto();
    // Embedded, not under a running process (its schema changed under it).
    let _data_lock = settings
        .postgres()
        .is_none()
        .then(|| lock_data_dir(&settings.data_dir))
        .transpose()?;
    let inventory_db = shared::db::connect(settings, inventory::SERVICE).await?;
    shared::db::migrate::<inventory::storage::Migrator>(&inventory_db).await?;
    let booking_db = shared::db::connect(settings, booking::SERVICE).await?;
    shared::db::migrate::<booking::storage::Migrator>(&booking_db).await?;
    let payment_db = shared::db::connect(settings, payment::SERVICE).await?;
    shared::db::migrate::<payment::storage::Migrator>(&payment_db).await?;
    let partnership_db = shared::db::connect(settings, partnership::SERVICE).await?;
    shared::db::migrate::<partnership::storage::Migrator>(&partnership_db).await?;
    let db = shared::db::connect(settings, gateway::identity::storage::DATABASE).await?;
    shared::db::migrate::<gateway::identity::storage::Migrator>(&db).await?;
    let Some(url) = settings.amqp() else {
        return Ok(());
    };
    // The databases are done; a broker that is not up within a minute is
    // an error, not a wait without end in a release step.
    let bus = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        shared::bus::amqp::AmqpBus::connect(url, settings.bus()),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "RabbitMQ did not answer within a minute; the databases are migrated, \
             the event queues not declared (run `duikou migrate` again)"
        )
    })?
    .context("connecting to RabbitMQ")?;
    // The routers the services consume with (no relay runs here).
    let routers = [
        inventory::messaging::Inventory {
            db: inventory_db,
            outbox: OutboxSignal::default(),
        }
        .events(),
        booking::startup::bookings(settings, booking_db, OutboxSignal::default()).events(),
        payment::startup::payments(settings, payment_db, OutboxSignal::default()).events(),
        partnership::messaging::Partnerships { db: partnership_db }.events(),
    ];
    let declared = async {
        for router in &routers {
            shared::bus::Bus::declare(&bus, router)
                .await
                .with_context(|| format!("declaring {}", router.queue()))?;
        }
        anyhow::Ok(())
    }
    .await;
    shared::bus::Bus::shutdown(&bus).await;
    shared::bus::Bus::close(&bus).await;
    declared
}

/// Resolves on Ctrl-C, or SIGTERM on Unix. The handlers are installed when
/// this is called, not when the future is first polled: a SIGTERM between
/// the call and the await (a process still starting) is kept for it, not
/// left to the default action, which ends the process at once.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            // Whichever could be installed (an installed handler that is
            // not awaited would swallow its signal).
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// An error whose text quotes its source, as sea-orm's do the driver's.
    #[derive(Debug)]
    struct Quoting(std::io::Error);
    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Connection Error: {}", self.0)
        }
    }
    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let e = anyhow::Error::new(Quoting(std::io::Error::other("file is not a database")))
            .context("starting inventory");
        assert_eq!(
            super::explained(&e),
            "starting inventory: Connection Error: file is not a database"
        );
        assert_eq!(format!("{e:#}").matches("not a database").count(), 2);
    }
}
