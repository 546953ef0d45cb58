//! The benchmarks themselves, on the real servers, small: they report
//! figures (never asserted here), but what they count must be right — the
//! contention run ends with exactly as many bookings confirmed as there are
//! rooms, and its CPU split accounts for the whole machine.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contention_bench_confirms_exactly_the_rooms_there_are_and_splits_the_whole_cpu() {
    let run = duikou::bench_booking::contention(common::test_settings(), 40, 3, false)
        .await
        .expect("the bench runs");
    assert_eq!(run.outcomes.get("CONFIRMED"), Some(&3), "{run:?}");
    assert_eq!(run.confirmed_in_database, 3, "{run:?}");
    assert_eq!(run.sold_exactly_the_rooms().ok(), Some(3), "{run:?}");
    // Turned away by the hold (REJECTED) or, once a stay was refused, at
    // the create itself; nothing else.
    let refused = |outcome| run.outcomes.get(outcome).copied().unwrap_or(0);
    assert_eq!(
        refused("REJECTED") + refused(duikou::bench_booking::REFUSED_AT_CREATE),
        37,
        "{run:?}"
    );
    assert!(
        refused("REJECTED") >= 1,
        "the first refusal is the hold's: {run:?}"
    );
    assert_eq!(run.outcomes.values().sum::<u64>(), 40, "{run:?}");
    assert!(run.created_seconds <= run.settled_seconds, "{run:?}");
    // Every group rounded to a tenth: the sum is 100 give or take that.
    let total: f64 = run.cpu_percent.values().sum();
    assert!((total - 100.0).abs() < 0.5, "{run:?}");
    for group in ["duikou", "bench clients", "postgresql", "idle", "other"] {
        assert!(run.cpu_percent.contains_key(group), "{group}: {run:?}");
    }
}
