//! Restarts the shared RabbitMQ, so it runs alone after every other test
//! (`scripts/test` runs ignored tests serially in a second phase).

mod common;

use common::{Kernel, amqp_url, eventually};
use duikou_shared::bus::Bus;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// `what`, or a failure naming it after a minute: a step that hangs fails
/// the test instead of holding it until the harness kills it.
async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), step)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within a minute"))
}

/// `rabbitmqctl <arg>`, at most a minute: whether it succeeded.
fn rabbitmqctl(arg: &str) -> bool {
    Command::new("rabbitmqctl")
        .args(["--timeout", "60", arg])
        .status()
        .expect("rabbitmqctl runs")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared broker: run alone (scripts/test does)"]
async fn a_broker_restarted_mid_stream_loses_no_event_and_applies_each_once() {
    const EVENTS: i64 = 400;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let k = Kernel::new(10).await;
    let bus = k.bus(&amqp_url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(k.recording_router(calls))
        .await
        .expect("subscribe");
    let (signal, cancel, tracker) = k.relay(bus.clone());

    let k = Arc::new(k);
    let producer = {
        let (k, signal) = (k.clone(), signal.clone());
        tokio::spawn(async move {
            for batch in 0..(EVENTS / 10) {
                k.commit_pings(batch * 10..batch * 10 + 10).await;
                signal.committed();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Let part of the stream through, then take the broker down and up.
    eventually(
        "some events handled before the restart",
        Duration::from_secs(20),
        || async { (k.effects().await.0 > 20).then_some(()) },
    )
    .await;
    let restart = tokio::task::spawn_blocking(|| {
        assert!(rabbitmqctl("stop_app"), "rabbitmqctl stop_app failed");
        // Bounded, and a start that did not answer is confirmed with
        // `await_startup`. (The CI hangs once blamed on `start_app` were
        // handlers waiting on lapin for an ack: see `ack` in bus/amqp.rs.)
        assert!(
            rabbitmqctl("start_app") || rabbitmqctl("await_startup"),
            "RabbitMQ did not start again"
        );
    });
    within("the broker's restart", restart)
        .await
        .expect("restart");
    within("the producer", producer).await.expect("producer");

    eventually(
        "every event handled after the restart",
        Duration::from_secs(120),
        || async { (k.effects().await.0 == EVENTS).then_some(()) },
    )
    .await;
    assert_eq!(
        k.effects().await,
        (EVENTS, EVENTS),
        "each event applied exactly once"
    );
    // A batch published just before the broker went away has its confirms
    // lost: its events arrive (and are deduplicated) while the relay, having
    // seen no confirm, publishes again and only then deletes the rows.
    eventually(
        "nothing left behind in the outbox",
        Duration::from_secs(60),
        || async { (k.outbox_len().await == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        k.effects().await,
        (EVENTS, EVENTS),
        "the relay's second publish applied nothing twice"
    );
    cancel.cancel();
    tracker.close();
    within("the relay's stop", tracker.wait()).await;
    let k = Arc::try_unwrap(k).ok().expect("sole owner");
    within("the bus's shutdown", bus.shutdown()).await;
    within("the bus's close", k.cleanup(bus.as_ref())).await;
}
