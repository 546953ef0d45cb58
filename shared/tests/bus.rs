//! The messaging kernel against the real RabbitMQ and PostgreSQL.

mod common;

use common::{Kernel, Ping, Proxy, amqp_url, eventually};
use duikou_shared::ErrorCode;
use duikou_shared::bus::amqp::admin;
use duikou_shared::bus::{Bus, EventRouter, HandlerError, call_within};
use duikou_shared::envelope::Envelope;
use duikou_shared::rpcs::ListRegions;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_event_committed_while_the_broker_is_unreachable_is_delivered_after_it_returns() {
    let k = Kernel::new(5).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let bus = k.bus(&proxy.url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(k.recording_router(calls.clone()))
        .await
        .expect("subscribe");
    let (signal, cancel, tracker) = k.relay(bus.clone());

    proxy.cut();
    k.commit_pings(0..3).await;
    signal.committed();
    // While the broker is away the rows stay in the outbox and nothing is handled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(k.outbox_len().await, 3, "rows must wait in the outbox");
    assert_eq!(k.effects().await, (0, 0));

    proxy.restore();
    eventually(
        "the three events handled after the broker returned",
        WAIT,
        || async { (k.effects().await == (3, 3)).then_some(()) },
    )
    .await;
    assert_eq!(k.outbox_len().await, 0);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    bus.shutdown().await;
    bus.close().await;
    // Nothing may reconnect through the proxy and declare the exchange again.
    proxy.cut();
    drop(k);
}

#[tokio::test]
async fn a_handler_that_keeps_failing_ends_in_the_dead_letter_queue_after_the_delivery_limit() {
    let k = Kernel::new(3).await;
    let bus = k.bus(&amqp_url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let router = EventRouter::new("kernel.events").on::<Ping, _, _>(move |_, _| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(HandlerError::Retry("the database is on fire".into()))
        }
    });
    bus.subscribe(router).await.expect("subscribe");
    let env = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 7 });
    bus.publish(std::slice::from_ref(&env))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("publish");

    let dead = eventually("the event in the dead-letter queue", WAIT, || async {
        let dead = admin::drain(&amqp_url(), &k.dead_queue())
            .await
            .expect("drain");
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let body =
        Envelope::from_bytes(&dead[0].body).expect("the dead letter is the original envelope");
    assert_eq!(body.id, env.id, "nothing lost: the same event");
    assert_eq!(dead[0].reason.as_deref(), Some("delivery_limit"));
    // Delivered limit + 1 times: the first delivery and `limit` redeliveries.
    assert!(
        calls.load(Ordering::SeqCst) >= 3,
        "handled {} times",
        calls.load(Ordering::SeqCst)
    );
    k.cleanup(bus.as_ref()).await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_changes_state_once() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(k.recording_router(calls.clone()))
        .await
        .expect("subscribe");
    let env = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 1 });
    for r in bus.publish(&[env.clone(), env.clone()]).await {
        r.expect("publish");
    }
    eventually("both deliveries handled", WAIT, || async {
        (calls.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    assert_eq!(k.effects().await, (1, 1), "applied once");
    k.cleanup(bus.as_ref()).await;
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_with_its_reason_and_the_consumer_keeps_running() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(k.recording_router(calls.clone()))
        .await
        .expect("subscribe");
    let url = amqp_url();
    // Not JSON; an envelope of a type nobody handles; a ping missing its field.
    admin::publish_raw(&url, &k.config, "test.ping", b"{not json")
        .await
        .expect("raw 1");
    let mut unknown = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 2 });
    unknown.kind = "test.unknown".into();
    admin::publish_raw(&url, &k.config, "test.ping", &unknown.to_bytes())
        .await
        .expect("raw 2");
    let mut missing = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 3 });
    missing.payload = serde_json::json!({});
    admin::publish_raw(&url, &k.config, "test.ping", &missing.to_bytes())
        .await
        .expect("raw 3");
    // And a good one after them.
    let good = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 4 });
    bus.publish(&[good])
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("publish");

    eventually("the good event handled", WAIT, || async {
        (k.effects().await == (1, 1)).then_some(())
    })
    .await;
    let mut dead = Vec::new();
    let dead = eventually("three dead letters", WAIT, || {
        let q = k.dead_queue();
        let url = url.clone();
        let mut have = std::mem::take(&mut dead);
        async move {
            have.extend(admin::drain(&url, &q).await.expect("drain"));
            (have.len() >= 3).then_some(have)
        }
    })
    .await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("not an event envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no handler for event type `test.unknown`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("missing field `n`")),
        "{reasons:?}"
    );
    k.cleanup(bus.as_ref()).await;
}

#[tokio::test]
async fn an_rpc_to_a_service_that_is_not_running_fails_within_its_deadline() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let deadline = Duration::from_millis(300);
    let regions = |within: Duration| {
        let bus = bus.clone();
        async move {
            let started = Instant::now();
            let asked = ListRegions {
                parent_code: None,
                poverty_only: false,
            };
            let answer = call_within(bus.as_ref(), &asked, within).await;
            (answer, started.elapsed())
        }
    };

    // No queue at all: the broker returns the request at once.
    let (answer, waited) = regions(deadline).await;
    let err = answer.expect_err("nobody serves inventory");
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);
    assert!(waited < deadline + Duration::from_millis(200), "{waited:?}");

    // A queue whose consumers are gone: the caller gives up at the deadline.
    let router = duikou_shared::rpc::RpcRouter::new("inventory");
    let server = k.bus(&amqp_url()).await;
    server.serve(router).await.expect("serve");
    server.shutdown().await;
    server.close().await;
    let (answer, waited) = regions(deadline).await;
    let err = answer.expect_err("nobody consumes the queue");
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);
    assert!(err.message.contains("did not answer"), "{}", err.message);
    assert!(
        waited >= deadline && waited < deadline + Duration::from_millis(500),
        "{waited:?}"
    );

    // Once a call ran out unanswered, the next ones look first: nothing
    // consumes the queue, so they fail at once instead of each waiting out
    // a deadline of its own (a part killed made every request touching it
    // hang its whole deadline).
    let long = Duration::from_secs(30);
    for _ in 0..3 {
        let (answer, waited) = regions(long).await;
        let err = answer.expect_err("nobody consumes the queue");
        assert_eq!(err.code, ErrorCode::ServiceUnavailable);
        assert!(err.message.contains("not running"), "{}", err.message);
        assert!(waited < long / 4, "{waited:?}");
    }
    // A patient caller (a sweeper) still waits out its deadline.
    let (answer, waited) = duikou_shared::bus::patiently(regions(deadline)).await;
    let err = answer.expect_err("nobody consumes the queue");
    assert!(err.message.contains("did not answer"), "{}", err.message);
    assert!(waited >= deadline, "{waited:?}");

    // Served again: the call goes through, and so do the next.
    let router = duikou_shared::rpc::RpcRouter::new("inventory")
        .route::<ListRegions, _, _>(|_| async { Ok(duikou_shared::region::reference_regions()) });
    let server = k.bus(&amqp_url()).await;
    server.serve(router).await.expect("serve");
    for _ in 0..2 {
        let (answer, _) = regions(long).await;
        assert!(!answer.expect("answered").is_empty());
    }
    server.shutdown().await;
    server.close().await;
    k.cleanup(bus.as_ref()).await;
}

/// Replies go out on a channel that confirms nothing: lapin keeps every
/// confirm dropped before the broker acked it until `wait_for_confirms`,
/// which nothing calls, so on a confirming channel each reply served grew
/// the serving process for as long as the channel lived (a review of the
/// bus found it; lapin's `ReturnedMessages::dropped_confirms`). Also after
/// the channel is opened again.
#[tokio::test]
async fn rpc_replies_go_out_on_a_channel_that_keeps_no_confirms() {
    let k = Kernel::new(5).await;
    let server = k.bus(&amqp_url()).await;
    let router = duikou_shared::rpc::RpcRouter::new("inventory")
        .route::<ListRegions, _, _>(|_| async { Ok(duikou_shared::region::reference_regions()) });
    server.serve(router).await.expect("serve");
    let caller = k.bus(&amqp_url()).await;
    for round in 0..4 {
        if round == 2 {
            server.close_reply_channel().await;
        }
        let regions = call_within(
            caller.as_ref(),
            &ListRegions {
                parent_code: None,
                poverty_only: false,
            },
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
        assert!(!regions.is_empty());
    }
    assert!(!server.replies_confirmed().await.expect("the reply channel"));
    server.shutdown().await;
    server.close().await;
    k.cleanup(caller.as_ref()).await;
}

/// A request for a service no test here runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct AskPartnership;
impl duikou_shared::rpc::Rpc for AskPartnership {
    const SERVICE: &'static str = "partnership";
    const METHOD: &'static str = "ask";
    type Reply = ();
}

#[tokio::test]
async fn concurrent_rpcs_to_running_and_missing_services_each_get_their_own_answer() {
    // The broker returns the requests for the missing service; lapin may
    // hand such a return to another request's confirmation, which must not
    // make an answered call fail (readiness pings all services at once).
    let k = Kernel::new(5).await;
    let client = k.bus(&amqp_url()).await;
    let server = k.bus(&amqp_url()).await;
    let router = duikou_shared::rpc::RpcRouter::new("inventory")
        .route::<ListRegions, _, _>(|_| async { Ok(duikou_shared::region::reference_regions()) });
    server.serve(router).await.expect("serve");
    let deadline = Duration::from_secs(5);
    for _ in 0..10 {
        let answered = (0..8).map(|_| {
            call_within(
                client.as_ref(),
                &ListRegions {
                    parent_code: None,
                    poverty_only: false,
                },
                deadline,
            )
        });
        let missing = (0..8).map(|_| call_within(client.as_ref(), &AskPartnership, deadline));
        let started = Instant::now();
        let (answered, missing) = futures::join!(
            futures::future::join_all(answered),
            futures::future::join_all(missing)
        );
        for r in answered {
            assert!(!r.expect("inventory answers").is_empty());
        }
        for r in missing {
            let err = r.expect_err("nobody serves partnership");
            assert_eq!(err.code, ErrorCode::ServiceUnavailable);
            assert!(err.message.contains("not running"), "{}", err.message);
        }
        assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
    }
    server.shutdown().await;
    server.close().await;
    k.cleanup(client.as_ref()).await;
}

#[tokio::test]
async fn an_rpc_is_answered_by_competing_consumers_with_typed_errors() {
    let k = Kernel::new(5).await;
    let client = k.bus(&amqp_url()).await;
    let served = Arc::new(AtomicUsize::new(0));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let bus = k.bus(&amqp_url()).await;
        let s = served.clone();
        let router = duikou_shared::rpc::RpcRouter::new("inventory").route::<ListRegions, _, _>(
            move |req| {
                let s = s.clone();
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    if req.poverty_only {
                        return Err(duikou_shared::AppError::bad_input("no poverty today"));
                    }
                    Ok(duikou_shared::region::reference_regions())
                }
            },
        );
        bus.serve(router).await.expect("serve");
        servers.push(bus);
    }
    let calls: Vec<_> = (0..20)
        .map(|_| {
            call_within(
                client.as_ref(),
                &ListRegions {
                    parent_code: None,
                    poverty_only: false,
                },
                Duration::from_secs(5),
            )
        })
        .collect();
    for r in futures::future::join_all(calls).await {
        assert!(!r.expect("answered").is_empty());
    }
    let err = call_within(
        client.as_ref(),
        &ListRegions {
            parent_code: None,
            poverty_only: true,
        },
        Duration::from_secs(5),
    )
    .await
    .expect_err("typed error");
    assert_eq!(err.code, ErrorCode::BadUserInput);
    assert_eq!(err.message, "no poverty today");
    assert_eq!(served.load(Ordering::SeqCst), 21);
    for s in &servers {
        s.shutdown().await;
        s.close().await;
    }
    k.cleanup(client.as_ref()).await;
}

#[tokio::test]
async fn an_event_no_queue_is_bound_for_is_a_publish_failure() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let env = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 1 });
    let results = bus.publish(&[env]).await;
    assert!(
        matches!(&results[0], Err(duikou_shared::bus::BusError::Unroutable(key)) if key == "test.ping"),
        "{results:?}"
    );
    k.cleanup(bus.as_ref()).await;
}

/// The broker acks publishes in bulk (`multiple`), and lapin then hands a
/// `basic.return` to whichever confirmation it completes first: each result
/// must still belong to its own event.
#[tokio::test]
async fn in_a_mixed_batch_only_the_events_no_queue_is_bound_for_fail() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let router = EventRouter::new("kernel.events")
        .on::<Ping, _, _>(|_, _| async { Ok::<(), HandlerError>(()) });
    bus.subscribe(router).await.expect("subscribe");
    let batch: Vec<Envelope> = (0..200)
        .map(|n| {
            if n % 2 == 0 {
                Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n })
            } else {
                Envelope::new("test", uuid::Uuid::now_v7(), &common::Pong { n })
            }
        })
        .collect();
    for _ in 0..5 {
        let results = bus.publish(&batch).await;
        for (env, result) in batch.iter().zip(&results) {
            match (env.kind.as_str(), result) {
                ("test.ping", Ok(())) => {}
                ("test.pong", Err(duikou_shared::bus::BusError::Unroutable(key)))
                    if key == "test.pong" => {}
                (kind, other) => panic!("{kind}: {other:?}"),
            }
        }
    }
    k.cleanup(bus.as_ref()).await;
}

/// A relay round on PostgreSQL deletes its batch as it reads it; what the
/// broker refused must be back in the outbox as it was (same seq, same
/// age), and what it took must be gone, so nothing is lost or sent twice.
#[tokio::test]
async fn a_relay_round_keeps_the_events_the_broker_refused_in_their_place() {
    use duikou_shared::outbox::{OutboxSignal, Relay, enqueue};
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe(k.recording_router(calls.clone()))
        .await
        .expect("subscribe");
    // ping 0, a pong no queue is bound for, ping 1.
    let events = vec![
        Envelope::new("test", uuid::Uuid::now_v7(), &common::Ping { n: 0 }),
        Envelope::new("test", uuid::Uuid::now_v7(), &common::Pong { n: 0 }),
        Envelope::new("test", uuid::Uuid::now_v7(), &common::Ping { n: 1 }),
    ];
    let txn = k.db.begin().await.expect("begin");
    enqueue(&txn, &events).await.expect("enqueue");
    txn.commit().await.expect("commit");
    let rows = |k: &Kernel| {
        let db = k.db.clone();
        async move {
            db.query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT seq, kind, CAST(created_at AS TEXT) AS at FROM outbox ORDER BY seq",
            ))
            .await
            .expect("outbox")
            .iter()
            .map(|r| {
                (
                    r.try_get::<i64>("", "seq").expect("seq"),
                    r.try_get::<String>("", "kind").expect("kind"),
                    r.try_get::<String>("", "at").expect("at"),
                )
            })
            .collect::<Vec<_>>()
        }
    };
    let before = rows(&k).await;
    assert_eq!(before.len(), 3);

    let bus_dyn: Arc<dyn Bus> = bus.clone();
    let relay = Relay::new(k.db.clone(), bus_dyn, OutboxSignal::default());
    let round = relay.relay_once().await;
    assert!(
        round.is_err(),
        "the refused pong is the round's error: {round:?}"
    );
    assert_eq!(
        rows(&k).await,
        vec![before[1].clone()],
        "only the pong stays, with its own seq and age"
    );
    eventually("both pings handled", WAIT, || async {
        (k.effects().await == (2, 2)).then_some(())
    })
    .await;
    // The next rounds pass over the pong for a while (it stays, in its
    // place), so it cannot hold up what comes behind it.
    assert!(matches!(relay.relay_once().await, Ok(0)));
    assert_eq!(rows(&k).await, vec![before[1].clone()]);

    // A relay taking one row a round, a pong at the head of the outbox:
    // the ping behind it still goes out.
    let behind = vec![
        Envelope::new("test", uuid::Uuid::now_v7(), &common::Pong { n: 1 }),
        Envelope::new("test", uuid::Uuid::now_v7(), &common::Ping { n: 2 }),
    ];
    let txn = k.db.begin().await.expect("begin");
    enqueue(&txn, &behind).await.expect("enqueue");
    txn.commit().await.expect("commit");
    let bus_dyn: Arc<dyn Bus> = bus.clone();
    let one_at_a_time = Relay::new(k.db.clone(), bus_dyn, OutboxSignal::default()).with_batch(1);
    for _ in 0..3 {
        let _ = one_at_a_time.relay_once().await;
    }
    eventually("the ping behind the pongs handled", WAIT, || async {
        (k.effects().await == (3, 3)).then_some(())
    })
    .await;
    let kinds: Vec<String> = rows(&k)
        .await
        .into_iter()
        .map(|(_, kind, _)| kind)
        .collect();
    assert_eq!(kinds.len(), 2, "both pongs wait: {kinds:?}");
    k.cleanup(bus.as_ref()).await;
}

#[tokio::test]
async fn shutdown_lets_a_handler_in_flight_commit_and_ack() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let started = Arc::new(AtomicUsize::new(0));
    let db = k.db.clone();
    let s = started.clone();
    let router = EventRouter::new("kernel.events").on::<Ping, _, _>(move |env, ping| {
        let (db, s) = (db.clone(), s.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(txn) = duikou_shared::outbox::begin_once(&db, &env).await? else {
                return Ok(());
            };
            use sea_orm::ConnectionTrait;
            txn.execute_raw(duikou_shared::outbox::stmt(
                sea_orm::DbBackend::Postgres,
                "INSERT INTO effects (n, times) VALUES ($1, 1)",
                vec![ping.n.into()],
            ))
            .await?;
            txn.commit().await?;
            Ok::<(), HandlerError>(())
        }
    });
    bus.subscribe(router).await.expect("subscribe");
    bus.publish(&[Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 9 })])
        .await;
    eventually("the handler started", WAIT, || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    bus.shutdown().await;
    assert_eq!(
        k.effects().await,
        (1, 1),
        "the handler in flight finished before shutdown returned"
    );
    // Acked: nothing is left in the queue for a next consumer.
    let left = admin::drain(&amqp_url(), &k.queue()).await.expect("drain");
    assert!(left.is_empty(), "{} message(s) left unacked", left.len());
    k.cleanup(bus.as_ref()).await;
}

/// Answers with the request id the service sees.
#[derive(serde::Serialize, serde::Deserialize)]
struct WhoAsks;
impl duikou_shared::rpc::Rpc for WhoAsks {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "who_asks";
    type Reply = Option<String>;
}

#[tokio::test]
async fn an_rpc_carries_the_public_request_id_to_the_service() {
    use duikou_shared::telemetry::{request_id, with_request_id};
    let k = Kernel::new(5).await;
    let client = k.bus(&amqp_url()).await;
    let server = k.bus(&amqp_url()).await;
    let router = duikou_shared::rpc::RpcRouter::new("inventory")
        .route::<WhoAsks, _, _>(|_| async { Ok(request_id()) });
    server.serve(router).await.expect("serve");
    let deadline = Duration::from_secs(5);
    let asked = with_request_id(
        Some("req-42".into()),
        call_within(client.as_ref(), &WhoAsks, deadline),
    )
    .await;
    assert_eq!(asked.expect("answered"), Some("req-42".to_owned()));
    let unasked = call_within(client.as_ref(), &WhoAsks, deadline).await;
    assert_eq!(unasked.expect("answered"), None, "no request, no id");
    server.shutdown().await;
    server.close().await;
    k.cleanup(client.as_ref()).await;
}

/// A type a service no longer consumes: declaring its queue again removes
/// the binding an earlier version left (new events of that type reach no
/// queue), and what was already queued is acknowledged unread, not
/// dead-lettered as an unknown type.
#[tokio::test]
async fn a_retired_event_type_is_unbound_and_what_was_queued_is_dropped_quietly() {
    let k = Kernel::new(1).await;
    let pings = Arc::new(AtomicUsize::new(0));
    let old = k.bus(&amqp_url()).await;
    let router = EventRouter::new("kernel.events")
        .on::<Ping, _, _>(|_, _| async { Ok::<(), HandlerError>(()) })
        .on::<common::Pong, _, _>(|_, _| async { Ok::<(), HandlerError>(()) });
    old.subscribe(router).await.expect("subscribe");
    old.shutdown().await;
    old.close().await;

    // Queued while no one consumes, under the old binding.
    let bus = k.bus(&amqp_url()).await;
    let pong = || Envelope::new("test", uuid::Uuid::now_v7(), &common::Pong { n: 1 });
    for result in bus.publish(&[pong()]).await {
        result.expect("routed by the old binding");
    }
    let p = pings.clone();
    let router = EventRouter::new("kernel.events")
        .on::<Ping, _, _>(move |_, _| {
            p.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), HandlerError>(()) }
        })
        .retired::<common::Pong>();
    bus.subscribe(router).await.expect("subscribe again");

    let results = bus.publish(&[pong()]).await;
    assert!(
        matches!(&results[0], Err(duikou_shared::bus::BusError::Unroutable(key)) if key == "test.pong"),
        "the old binding is gone: {results:?}"
    );
    let ping = Envelope::new("test", uuid::Uuid::now_v7(), &Ping { n: 2 });
    for result in bus.publish(&[ping]).await {
        result.expect("ping routed");
    }
    let queue = k.config.queue("kernel.events");
    eventually(
        "the queued pong acked and the ping handled",
        WAIT,
        || async {
            let left = admin::message_count(&amqp_url(), &queue).await.ok()??;
            (left == 0 && pings.load(Ordering::SeqCst) == 1).then_some(())
        },
    )
    .await;
    let dead = admin::message_count(&amqp_url(), &k.config.dead_queue("kernel.events"))
        .await
        .expect("dead queue");
    assert_eq!(dead, Some(0), "a retired type is not an unknown one");
    k.cleanup(bus.as_ref()).await;
}

/// A wrong virtual host (or user, or password) is not a broker that is
/// still starting: after a short grace the first connection fails and
/// says what to check, instead of waiting forever.
#[tokio::test]
async fn a_broker_that_refuses_the_connection_is_an_error_not_a_hang() {
    let url = amqp_url();
    let base = url.rfind('/').map_or(url.as_str(), |i| &url[..i]);
    let wrong = format!(
        "{base}/duikou-no-such-vhost-{}",
        uuid::Uuid::now_v7().simple()
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        duikou_shared::bus::amqp::AmqpBus::connect(
            &wrong,
            duikou_shared::bus::BusConfig::default(),
        ),
    )
    .await;
    let Ok(Err(refused)) = outcome else {
        panic!(
            "expected a refusal within a minute, got {:?}",
            outcome.map(|r| r.is_ok())
        );
    };
    let message = refused.to_string();
    assert!(
        message.contains("refused") && message.contains("virtual host"),
        "{message}"
    );
}

/// A URL lapin cannot read is said at once, not waited out as a broker
/// that is away (lapin reports it as an I/O error).
#[tokio::test]
async fn an_amqp_url_that_cannot_be_read_is_an_error_at_once() {
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        duikou_shared::bus::amqp::AmqpBus::connect(
            "amqp//guest@localhost",
            duikou_shared::bus::BusConfig::default(),
        ),
    )
    .await;
    let Ok(Err(refused)) = outcome else {
        panic!(
            "expected an error at once, got {:?}",
            outcome.map(|r| r.is_ok())
        );
    };
    assert!(refused.to_string().contains("AMQP URL"), "{refused}");
}

/// A request delivered after its caller's deadline (a replica paused, or
/// far behind) is not run: the caller has told its client the call failed.
/// Published here as a caller would, with the deadline header, one past
/// and one ahead; only the second runs.
#[tokio::test]
async fn an_rpc_request_past_its_callers_deadline_is_not_run() {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let k = Kernel::new(5).await;
    let server = k.bus(&amqp_url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let router =
        duikou_shared::rpc::RpcRouter::new("inventory").route::<WhoAsks, _, _>(move |_| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
        });
    server.serve(router).await.expect("serve");
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let queue = k.config.rpc_queue("inventory");
    let now = chrono::Utc::now().timestamp_millis();
    for deadline in [now - 1_000, now + 60_000] {
        let mut headers = FieldTable::default();
        headers.insert("x-deadline-ms".into(), AMQPValue::LongLongInt(deadline));
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"null",
                lapin::BasicProperties::default()
                    .with_type("who_asks".into())
                    .with_headers(headers),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
    }
    // Both taken from the queue, in order, and the one in time has run.
    eventually("both requests delivered and one run", WAIT, || {
        let (runs, channel, queue) = (runs.clone(), channel.clone(), queue.clone());
        async move {
            let left = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .ok()?
                .message_count();
            (left == 0 && runs.load(Ordering::SeqCst) >= 1).then_some(())
        }
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the late one was run");
    let _ = conn.close(0, "done".into()).await;
    server.shutdown().await;
    server.close().await;
    k.cleanup(server.as_ref()).await;
}

/// Records one application of `0` in the test's `effects` table.
#[derive(serde::Serialize, serde::Deserialize)]
struct Apply(i64);
impl duikou_shared::rpc::Rpc for Apply {
    const SERVICE: &'static str = "inventory";
    const METHOD: &'static str = "apply";
    type Reply = ();
}

/// A request redelivered after the part serving it made its change but
/// stopped before answering and acking it (a replica killed between the
/// two) carries the same call id: a keyless create, committed through
/// `commit_once_in_time`, is refused then, CONFLICT, not made twice — an
/// admin's homestay would otherwise be made again. Shown here with
/// the same request published twice under one correlation id, as the
/// broker redelivers it; a request under another id is made.
#[tokio::test]
async fn a_request_redelivered_after_its_change_committed_is_not_made_twice() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
    let k = Kernel::new(5).await;
    let server = k.bus(&amqp_url()).await;
    let db = k.db.clone();
    let router = duikou_shared::rpc::RpcRouter::new("inventory").route::<Apply, _, _>(move |req| {
        let db = db.clone();
        async move {
            let txn = db.begin().await?;
            txn.execute_raw(duikou_shared::outbox::stmt(
                DbBackend::Postgres,
                "INSERT INTO effects (n, times) VALUES ($1, 1) \
                 ON CONFLICT (n) DO UPDATE SET times = effects.times + 1",
                vec![req.0.into()],
            ))
            .await?;
            duikou_shared::db::commit_once_in_time(txn).await
        }
    });
    server.serve(router).await.expect("serve");
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
    let queue = k.config.rpc_queue("inventory");
    let call = uuid::Uuid::now_v7();
    let other = uuid::Uuid::now_v7();
    for (n, id) in [(1, call), (1, call), (2, other)] {
        let mut headers = FieldTable::default();
        let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
        headers.insert("x-deadline-ms".into(), AMQPValue::LongLongInt(deadline));
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&Apply(n)).expect("json"),
                lapin::BasicProperties::default()
                    .with_type("apply".into())
                    .with_correlation_id(id.to_string().as_str().into())
                    .with_reply_to(replies.clone())
                    .with_headers(headers),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
    }
    let mut answers = Vec::new();
    let deadline = Instant::now() + WAIT;
    while answers.len() < 3 {
        assert!(Instant::now() < deadline, "answers so far: {answers:?}");
        match channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(reply) => {
                let body: serde_json::Value =
                    serde_json::from_slice(&reply.delivery.data).expect("reply json");
                let corr = reply.delivery.properties.correlation_id().clone();
                answers.push((corr.map(|c| c.to_string()), body));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(k.effects().await, (2, 2), "each call's change made once");
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, body)| body.pointer("/Err/code").and_then(|c| c.as_str()) == Some("CONFLICT"))
        .collect();
    assert_eq!(refused.len(), 1, "one copy refused: {answers:?}");
    assert_eq!(refused[0].0.as_deref(), Some(call.to_string().as_str()));
    let _ = conn.close(0, "done".into()).await;
    server.shutdown().await;
    server.close().await;
    k.cleanup(server.as_ref()).await;
}

/// A part that is stopping still hears the answers to its calls until its
/// bus closes: its sweepers and the handlers it lets finish call other
/// parts. (The reply listener stopped with the consumers; a booking
/// replica stopping took payment's unheard answer for "no payment in
/// flight" and expired bookings being paid.)
#[tokio::test]
async fn a_stopping_bus_still_hears_the_answers_to_its_calls() {
    let k = Kernel::new(5).await;
    let client = k.bus(&amqp_url()).await;
    let server = k.bus(&amqp_url()).await;
    let router = duikou_shared::rpc::RpcRouter::new("inventory").route::<ListRegions, _, _>(
        move |_| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(duikou_shared::region::reference_regions())
        },
    );
    server.serve(router).await.expect("serve");
    let call = call_within(
        client.as_ref(),
        &ListRegions {
            parent_code: None,
            poverty_only: false,
        },
        Duration::from_secs(3),
    );
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.shutdown().await;
    };
    let (answer, ()) = tokio::join!(call, stopping);
    assert!(!answer.expect("answered while stopping").is_empty());
    client.close().await;
    server.shutdown().await;
    server.close().await;
    k.cleanup(client.as_ref()).await;
}

/// A part serving a call that calls another part in turn gives up on it
/// before its own caller gives up: the caller hears which part did not
/// answer, not only that nothing did in time (a payout run asking a booking
/// that was down made the admin wait out the gateway's deadline for the
/// vaguer message).
#[tokio::test]
async fn a_call_made_while_serving_one_ends_before_its_caller_gives_up() {
    let k = Kernel::new(5).await;
    let client = k.bus(&amqp_url()).await;
    let middle = k.bus(&amqp_url()).await;
    let silent = k.bus(&amqp_url()).await;
    let slow = duikou_shared::rpc::RpcRouter::new("booking")
        .route::<duikou_shared::rpcs::GetRefundsAsked, _, _>(|_| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok(Vec::new())
        });
    silent.serve(slow).await.expect("serve booking");
    let asks_on: Arc<dyn Bus> = middle.clone();
    let router =
        duikou_shared::rpc::RpcRouter::new("inventory").route::<ListRegions, _, _>(move |_| {
            let bus = asks_on.clone();
            async move {
                duikou_shared::bus::call(bus.as_ref(), &duikou_shared::rpcs::GetRefundsAsked {})
                    .await
                    .map_err(|e| {
                        duikou_shared::AppError::bad_input(format!("booking did not answer: {e}"))
                    })?;
                Ok(Vec::new())
            }
        });
    middle.serve(router).await.expect("serve inventory");
    let started = Instant::now();
    let answer = call_within(
        client.as_ref(),
        &ListRegions {
            parent_code: None,
            poverty_only: false,
        },
        Duration::from_secs(2),
    )
    .await
    .expect_err("booking is silent");
    assert!(
        answer.message.starts_with("booking did not answer"),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    for bus in [&middle, &silent] {
        bus.shutdown().await;
        bus.close().await;
    }
    k.cleanup(client.as_ref()).await;
}

/// At a stop, background sweeps end their round while every part of the
/// process still answers: one round calling a part as the stop began got
/// its answer. (The bus stopped first: booking's expiry sweep, calling a
/// payment that no longer answered, expired a booking being paid, whose
/// capture was then refunded in full.)
#[tokio::test]
async fn a_sweep_ending_its_round_at_a_stop_is_still_answered() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let rt = duikou_shared::runtime::Runtime::with_bus(
        duikou_shared::config::Settings::default(),
        bus.clone(),
    );
    let router = duikou_shared::rpc::RpcRouter::new("inventory")
        .route::<ListRegions, _, _>(|_| async { Ok(duikou_shared::region::reference_regions()) });
    rt.bus.serve(router).await.expect("serve");
    let (answered, answer) = tokio::sync::oneshot::channel();
    let (cancel, bus_of_sweep) = (rt.cancel.clone(), rt.bus.clone());
    rt.tracker.spawn(async move {
        cancel.cancelled().await;
        // The round under way when the stop came.
        let request = ListRegions {
            parent_code: None,
            poverty_only: false,
        };
        let got = call_within(bus_of_sweep.as_ref(), &request, Duration::from_secs(2)).await;
        let _ = answered.send(got.map(|regions| regions.len()));
    });
    rt.shutdown().await;
    let got = answer.await.expect("the sweep ended its round");
    assert!(matches!(got, Ok(n) if n > 0), "{got:?}");
    drop(k);
}

/// A temporary queue's events (one process's pushes) are handled in the
/// order published, one after another, on RabbitMQ too.
#[tokio::test]
async fn an_ephemeral_queue_handles_its_events_in_the_order_published() {
    let k = Kernel::new(5).await;
    let bus = k.bus(&amqp_url()).await;
    let (router, seen) = common::ordered_pushes(format!("push.{}", uuid::Uuid::now_v7().simple()));
    bus.subscribe(router).await.expect("subscribe");
    let events = common::pings(3);
    for sent in bus.publish(&events).await {
        sent.expect("published");
    }
    eventually("three handled", WAIT, || async {
        (seen.lock().expect("seen").len() == 3).then_some(())
    })
    .await;
    assert_eq!(*seen.lock().expect("seen"), vec![0, 1, 2]);
    k.cleanup(bus.as_ref()).await;
}
