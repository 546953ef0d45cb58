//! The short chaos run of CI (`duikou chaos` with one kill, one RabbitMQ
//! restart and a fault-injecting bus, 200 bookings): every invariant holds
//! afterwards. It restarts the shared broker, so it runs alone, after the
//! rest (`scripts/test`'s second phase).

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts RabbitMQ: run alone (scripts/test does, after the rest)"]
async fn two_hundred_bookings_survive_a_killed_part_a_broker_restart_and_a_faulty_bus() {
    duikou::install_crypto();
    let settings = common::test_settings();
    let plan = duikou::chaos::Plan {
        bookings: 200,
        clients: 16,
        kills: 1,
        kill_every: Duration::from_secs(2),
        broker_restarts: 1,
        postgres_restarts: 0,
        faulty_bus: true,
        exe: env!("CARGO_BIN_EXE_duikou").into(),
        deadline: Duration::from_secs(170),
        parts: duikou::chaos::SEPARATE,
    };
    let report = duikou::chaos::run(settings, plan)
        .await
        .expect("the run completes");
    duikou::chaos::print(&report);
    assert_eq!(
        report.outcomes.values().sum::<usize>(),
        200,
        "every booking ended"
    );
    assert_eq!(
        (report.killed.len(), report.broker_restarts),
        (1, 1),
        "the faults happened"
    );
    assert!(report.outcomes.get("CONFIRMED").is_some_and(|n| *n > 0));
    assert!(report.passed, "an invariant failed: {:?}", report.findings);
}
