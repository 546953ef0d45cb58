//! HTTP: GraphQL at `/graphql` (POST, and GET for queries only), GraphiQL at
//! `/`, `/healthz` (the process answers), `/readyz` (whether this replica
//! should take requests: its database and its link to the services; `?all`:
//! every service answers) and `/metrics` (Prometheus). Every
//! request carries an `x-request-id` (the client's, or a new one) in its log
//! span and its response. A bearer token, when sent, must be
//! valid: a bad one is refused with 401 before anything runs.
//!
//! GraphQL over HTTP as the spec has it: a client that accepts
//! `application/graphql-response+json` gets that media type, and a request
//! that cannot run at all (syntax, validation, too many aliases) gets 400;
//! with `application/json` (or no `Accept`) every answer is 200, as legacy
//! clients expect. Accepting neither is 406.

use crate::identity::Identity;
use crate::limits::Limiter;
use crate::schema::{DuikouSchema, Lang, build_schema};
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use shared::bus::Bus;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Largest request body accepted.
const MAX_BODY: usize = 256 * 1024;
/// Most aliases one document may use (each alias is another resolver run).
const MAX_ALIASES: usize = 30;
/// Most fields an operation runs at its root, fragments expanded (each is
/// a call to a service).
const MAX_ROOT_FIELDS: usize = 30;
/// The fields that check a password or a secret: one a request, so that
/// aliases cannot make one rate-limited request thirty guesses.
const SECRET_FIELDS: [&str; 4] = ["login", "register", "changePassword", "apiClientToken"];
/// Most errors an answer lists; the rest are counted in one more.
pub(crate) const MAX_ERRORS: usize = 100;
/// The media type of the GraphQL-over-HTTP spec.
const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
/// How long `/readyz` waits for each dependency.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the gateway shares besides its schema: the rate limiter, the Redis
/// connection (for readiness) and the catalogue cache.
#[derive(Clone)]
pub struct Infra {
    /// Requests per caller.
    pub limiter: Limiter,
    /// Redis, when configured.
    pub redis: Option<crate::guarded::Redis>,
    /// Catalogue reads (a pass-through without Redis).
    pub cache: crate::cache::Cache,
    /// How often a subscription socket is pinged (three of these without a
    /// word from its client, and it is closed as gone).
    pub ping_every: std::time::Duration,
    /// Cancelled when the process is asked to stop: `/readyz` answers 503
    /// (`"stopping"`) while requests are still served, so that a load
    /// balancer stops sending before the listener closes.
    pub draining: CancellationToken,
}

#[derive(Clone)]
struct Gateway {
    schema: DuikouSchema,
    identity: Option<Identity>,
    limiter: Limiter,
    bus: Option<Arc<dyn Bus>>,
    redis: Option<crate::guarded::Redis>,
    cache: crate::cache::Cache,
    documents: Documents,
    answers: Answers,
    /// Subscription connections that may still open, and when to close them.
    sockets: Sockets,
    draining: CancellationToken,
}

/// The gateway's subscription sockets: a slot each (at most
/// [`crate::socket::MAX_SOCKETS`]), closed with 1001 when it stops.
#[derive(Clone)]
pub struct Sockets {
    slots: Arc<tokio::sync::Semaphore>,
    per_account: crate::socket::PerAccount,
    stopping: CancellationToken,
    ping_every: std::time::Duration,
}

impl Sockets {
    /// Slots for [`crate::socket::MAX_SOCKETS`], closed on `stopping`,
    /// each pinged `ping_every`.
    pub fn new(stopping: CancellationToken, ping_every: std::time::Duration) -> Self {
        Sockets {
            slots: Arc::new(tokio::sync::Semaphore::new(crate::socket::MAX_SOCKETS)),
            per_account: crate::socket::PerAccount::default(),
            stopping,
            ping_every,
        }
    }

    /// Waits (up to two seconds) for every socket to have sent its close.
    async fn closed(&self) {
        let all = u32::try_from(crate::socket::MAX_SOCKETS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.slots.acquire_many(all),
        )
        .await;
    }
}

/// Whole answers to anonymous catalogue queries, by the catalogue's scope
/// (version and day) and the request: the public catalogue is read far more
/// often than it changes, and an answer made of catalogue reads only is
/// the same for every anonymous caller until the version moves.
#[derive(Clone)]
struct Answers(moka::sync::Cache<String, axum::body::Bytes>);

/// Answer bytes kept.
const ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// Top-level fields answered from catalogue reads alone (public, the same
/// for every anonymous caller, moved only by catalogue and hold events).
const CATALOGUE_FIELDS: &[&str] = &[
    "regions",
    "searchHomestays",
    "searchRoutes",
    "homestay",
    "route",
    "roomCalendar",
];

impl Answers {
    fn new() -> Answers {
        Answers(
            moka::sync::Cache::builder()
                .weigher(|key: &String, body: &axum::body::Bytes| {
                    u32::try_from(key.len() + body.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(ANSWER_BYTES)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        )
    }

    /// The key of an anonymous request whose operation is a query of
    /// catalogue fields only (plain fields at the top: no fragments), or
    /// None when its answer must be made afresh.
    fn key(
        scope: Option<String>,
        request: &async_graphql::Request,
        doc: &async_graphql::parser::types::ExecutableDocument,
        lang: Option<crate::schema::Lang>,
        wants: Wants,
    ) -> Option<String> {
        use async_graphql::parser::types::Selection;
        let scope = scope?;
        let operation = match (&doc.operations, request.operation_name.as_deref()) {
            (DocumentOperations::Single(op), _) => op,
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
            (DocumentOperations::Multiple(_), None) => return None,
        };
        if operation.node.ty != OperationType::Query {
            return None;
        }
        let items = &operation.node.selection_set.node.items;
        let named = |item: &async_graphql::Positioned<Selection>, names: &[&str]| matches!(&item.node, Selection::Field(f) if names.contains(&f.node.name.node.as_str()));
        // Catalogue fields (`__typename` beside them is fine; alone it is
        // not worth keeping).
        let catalogue_only = items
            .iter()
            .all(|item| named(item, CATALOGUE_FIELDS) || named(item, &["__typename"]));
        if !catalogue_only || !items.iter().any(|item| named(item, CATALOGUE_FIELDS)) {
            return None;
        }
        let mut hash = sha2::Sha256::new();
        use sha2::Digest;
        hash.update(request.query.as_bytes());
        hash.update([0]);
        hash.update(request.operation_name.as_deref().unwrap_or("").as_bytes());
        hash.update([0]);
        hash.update(serde_json::to_vec(&request.variables).ok()?);
        Some(format!(
            "{scope}:answer:{lang:?}:{wants:?}:{}",
            hex::encode(hash.finalize())
        ))
    }
}

/// Parsed queries by their text, those that passed the checks before
/// execution, at most [`DOCUMENT_BYTES`] as their text (the key) and their
/// names and values parsed weigh, none longer than [`MAX_KEPT_DOCUMENT`].
#[derive(Clone)]
struct Documents(moka::sync::Cache<String, Arc<async_graphql::parser::types::ExecutableDocument>>);

/// What the parsed documents kept may weigh, each name or value of their
/// text at [`BYTES_A_PART`] (values were not counted: 16 MiB of documents
/// of empty lists held 700 MB): a parsed document is far larger than its text (a
/// query of one-letter fields some 150 times), so text length let a few
/// dozen 256 KiB documents hold a gigabyte.
const DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// What a name or value of a query weighs parsed, at most (a field's
/// node, its name, its position and the lists that hold them; a value's
/// node, some 80 bytes).
const BYTES_A_PART: usize = 512;

/// The longest query text kept parsed (as a persisted query's): a longer
/// one is parsed at each request.
const MAX_KEPT_DOCUMENT: usize = crate::cache::MAX_PERSISTED_QUERY;

impl Documents {
    fn new() -> Documents {
        Documents(
            moka::sync::Cache::builder()
                // The text counts too: two names behind a comment or a
                // string of 250 KiB weighed a kilobyte, and 16 MiB of
                // such "kilobytes" held some 4 GiB of text.
                .weigher(|query: &String, _| {
                    let parts = crate::nesting::parts(query).max(1);
                    let parsed = parts.saturating_mul(BYTES_A_PART);
                    u32::try_from(parsed.saturating_add(query.len())).unwrap_or(u32::MAX)
                })
                .max_capacity(DOCUMENT_BYTES)
                .build(),
        )
    }

    /// The query parsed, or None when it does not parse.
    fn parse(&self, query: &str) -> Option<Arc<async_graphql::parser::types::ExecutableDocument>> {
        if let Some(doc) = self.0.get(query) {
            return Some(doc);
        }
        Some(Arc::new(async_graphql::parser::parse_query(query).ok()?))
    }

    /// Keeps `doc`, parsed from `query` and found fit to run.
    fn keep(&self, query: &str, doc: &Arc<async_graphql::parser::types::ExecutableDocument>) {
        if query.len() <= MAX_KEPT_DOCUMENT && !self.0.contains_key(query) {
            self.0.insert(query.to_owned(), doc.clone());
        }
    }
}

/// The gateway's routes over a schema.
pub fn router(
    schema: DuikouSchema,
    identity: Option<Identity>,
    infra: Infra,
    bus: Option<Arc<dyn Bus>>,
    sockets: Sockets,
) -> Router {
    let Infra {
        limiter,
        redis,
        cache,
        ping_every: _,
        draining,
    } = infra;
    crate::metrics::handle();
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/", get(graphiql))
        .route(
            "/graphql",
            // HEAD too is refused (axum would answer it with the GET
            // handler, which reads a body: a mutation ran).
            get(graphql_get)
                .head(other_method)
                .post(graphql)
                .options(graphql_options)
                .fallback(other_method),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        // A layer, not a route layer: a path nothing serves is counted too
        // (as "unmatched").
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        // A body that stops coming (a `Content-Length` of 100, 3 bytes
        // sent), or comes a byte at a time, fails instead of holding the
        // connection for as long as its client likes.
        .layer(axum::middleware::map_request(body_within_deadline))
        // A bug that panics answers INTERNAL, the GraphQL way, instead of
        // dropping the connection with no answer at all.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        // Said the GraphQL way, like every other refusal.
        .layer(axum::middleware::map_response(too_large))
        .layer(axum::middleware::from_fn(media_as_asked))
        // An answer depends on these request headers: a cache in front
        // must not give one caller's answer to another.
        .layer(axum::middleware::map_response(vary))
        .layer(cors())
        // Every request gets an id (the client's `x-request-id`, or a new
        // one), in its log span and echoed in the response.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::map_request(own_request_id))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                    })
                    // A 5xx here is a dependency failing (a 503 from
                    // `/readyz` every probe while this replica's links are
                    // down, or from `?all` while a service is), said at
                    // WARN; a panic is logged at ERROR where it is caught.
                    .on_failure(
                        tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN),
                    ),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(Gateway {
            schema,
            identity,
            limiter,
            bus,
            redis,
            cache,
            documents: Documents::new(),
            answers: Answers::new(),
            sockets,
            draining,
        })
}

/// The services `/readyz` asks.
const SERVICES: [&str; 4] = ["inventory", "booking", "payment", "partnership"];

/// `/readyz?all`: every service must answer too.
#[derive(serde::Deserialize)]
struct Readiness {
    all: Option<String>,
}

/// Whether this replica should take requests: 200 when the gateway's
/// database answers and a service answers a ping through the bus (its own
/// link to the broker works), 503 naming what failed, or `"stopping"`
/// once the process is asked to stop. Every service and Redis are named
/// (`"degraded": true` when one fails) but one of them failing takes no
/// replica out: every replica shares them, so a probe draining on one
/// would drain them all, and a partnership restart would take search and
/// booking down with it. `?all` asks for everything — every service
/// answering — for a start-up that waits for the whole system.
async fn readyz(
    State(gw): State<Gateway>,
    axum::extract::Query(readiness): axum::extract::Query<Readiness>,
) -> Response {
    let all = readiness
        .all
        .is_some_and(|v| !matches!(v.as_str(), "false" | "0"));
    // The three asked at once: one after another, a database down (2 s)
    // and the services (2 s) made the probe wait 4 s, past the timeout the
    // docs tell it to have.
    let database = async {
        match &gw.identity {
            Some(identity) => {
                match tokio::time::timeout(READY_DEADLINE, identity.db().ping()).await {
                    Ok(Ok(())) => "ok".to_owned(),
                    Ok(Err(e)) => format!("failing: {e}"),
                    Err(_) => "no answer in time".to_owned(),
                }
            }
            None => "not configured".to_owned(),
        }
    };
    let redis = async {
        match &gw.redis {
            Some(redis) => {
                let ping = redis
                    .run("the readiness check", |mut conn| async move {
                        redis::cmd("PING").query_async::<String>(&mut conn).await
                    })
                    .await;
                match ping {
                    Some(_) => "ok",
                    None => {
                        "failing: going on without it (each replica keeps its own rate limits, \
                         caches miss)"
                    }
                }
            }
            None => "not configured",
        }
    };
    let services = async {
        let mut services = serde_json::Map::new();
        match &gw.bus {
            Some(bus) => {
                let pings = SERVICES.map(|service| {
                    let bus = bus.clone();
                    async move {
                        let answer = bus
                            .call_raw(
                                service,
                                shared::rpc::PING,
                                serde_json::Value::Null,
                                READY_DEADLINE,
                            )
                            .await;
                        (service, answer)
                    }
                });
                for (service, answer) in futures::future::join_all(pings).await {
                    let state = match answer {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => format!("failing: {}", e.message),
                    };
                    services.insert(service.to_owned(), state.into());
                }
            }
            None => {
                services.insert("bus".into(), "not configured".into());
            }
        }
        services
    };
    let (database, redis, services) = tokio::join!(database, redis, services);
    let answering = services.values().filter(|v| *v == "ok").count();
    let stopping = gw.draining.is_cancelled();
    let ready = !stopping
        && database == "ok"
        && if all {
            answering == services.len()
        } else {
            answering > 0
        };
    let degraded = answering < services.len() || redis.starts_with("failing");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ready": ready, "degraded": degraded, "database": database,
                           "redis": redis, "services": services });
    if stopping {
        body["stopping"] = true.into();
    }
    (status, axum::Json(body)).into_response()
}

/// How the client wants GraphQL answers, from its `Accept` header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wants {
    /// `application/graphql-response+json`: status codes per the spec.
    GraphqlResponse,
    /// `application/json`, anything JSON, or no preference: always 200.
    Json,
    /// Neither: 406.
    Neither,
}

/// What `Accept` prefers, by its quality values: a type it gives `q=0` is
/// refused (it was dropped, and a header refusing JSON read as none), the
/// highest `q` wins, and at equal `q` GraphQL's own media type.
fn wants(headers: &HeaderMap) -> Wants {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Wants::Json;
    };
    let (mut best, mut listed) = (None::<(u16, Wants)>, false);
    for entry in accept.split(',') {
        let mut params = entry.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        listed = true;
        // In thousandths, as the RFC writes it (at most three decimals).
        let quality = params
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim().eq_ignore_ascii_case("q").then(|| value.trim())
            })
            .next()
            .map_or(Some(1000), |q| {
                q.parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .map(|q| (q * 1000.0).round() as u16)
            })
            .unwrap_or(0);
        let this = match media.as_str() {
            GRAPHQL_RESPONSE => Wants::GraphqlResponse,
            "application/json" | "application/*" | "*/*" => Wants::Json,
            _ => continue,
        };
        let better = best.is_none_or(|(q, was)| {
            quality > q || (quality == q && this == Wants::GraphqlResponse && was != this)
        });
        if quality > 0 && better {
            best = Some((quality, this));
        }
    }
    match best {
        Some((_, wanted)) => wanted,
        None if !listed => Wants::Json,
        None => Wants::Neither,
    }
}

/// Aliases written in the document (operations and fragments, each once).
fn alias_count(doc: &ExecutableDocument) -> usize {
    let mut written = Runs::new(doc, &|f| f.alias.is_some(), true);
    let in_fragments: usize = doc
        .fragments
        .values()
        .map(|f| written.set(&f.node.selection_set.node, false))
        .sum();
    in_fragments + written.operations(false).sum::<usize>()
}

/// How many times fields that check a secret ([`SECRET_FIELDS`]) run.
fn secret_field_count(doc: &ExecutableDocument) -> usize {
    Runs::new(
        doc,
        &|f| SECRET_FIELDS.contains(&f.name.node.as_str()),
        true,
    )
    .operations(true)
    .sum()
}

/// The most fields (`__typename` aside) an operation may run, fragments
/// counted each time they are spread: twice the complexity limit. Within
/// that limit every field costs at least 1, but for a list asked one item
/// at a time (its own field costs nothing there), so no query
/// async-graphql would run comes near it.
pub(crate) const MAX_FIELDS_RUN: usize = 2 * crate::schema::MAX_COMPLEXITY;

/// Why a document is refused for the fields it would run, if it is: more
/// than [`MAX_FIELDS_RUN`], counted with each fragment's count taken once.
/// Checked before async-graphql looks at the document, whose own walks
/// (its recursion depth check, validation, complexity) follow every spread
/// of every fragment anew: fragments that each spread the one before twice
/// made a 1 KB query take minutes of a worker before being refused as too
/// complex.
///
/// Also refused: a document whose every operation together, written out
/// with each spread replaced by its fragment, is more than
/// [`MAX_SELECTIONS_WALKED`] selections — `__typename`, spreads and inline
/// fragments included, which the count of fields run leaves out (those
/// walks follow them too: fragments doubling `__typename` alone at each of
/// 29 levels ran 1 field and were walked 2^29 times over).
pub(crate) fn too_many_fields(doc: &ExecutableDocument) -> Option<String> {
    let fields = Runs::new(doc, &|f| f.name.node.as_str() != "__typename", true)
        .operations(true)
        .max()
        .unwrap_or(0);
    if fields > MAX_FIELDS_RUN {
        return Some(format!(
            "the query is too complex: it runs {fields} fields (a fragment counts each time it \
             is spread); at most {MAX_FIELDS_RUN}"
        ));
    }
    let walked = Runs::new(doc, &|_| true, true)
        .with_spreads()
        .operations(true)
        .fold(0usize, usize::saturating_add);
    (walked > MAX_SELECTIONS_WALKED).then(|| {
        format!(
            "the query is too large: written out, a fragment each time it is spread, it has \
             {walked} selections (`__typename` and spreads included); at most \
             {MAX_SELECTIONS_WALKED}"
        )
    })
}

/// The most selections a document may have written out (see
/// [`too_many_fields`]): room for a `__typename` and a spread beside every
/// field a query may run.
pub(crate) const MAX_SELECTIONS_WALKED: usize = 4 * MAX_FIELDS_RUN;

/// The lists of introspection whose length the complexity limit does not
/// see (it counts a list without `first` once, whatever it holds: the
/// schema's some hundred and fifty types, each type's fields).
const INTROSPECTION_LISTS: [&str; 4] = ["fields", "interfaces", "possibleTypes", "inputFields"];

/// Every list of introspection: each holds some of the schema's hundred
/// and fifty types, their fields or their arguments.
const INTROSPECTION_ALL_LISTS: [&str; 8] = [
    "types",
    "fields",
    "args",
    "inputFields",
    "interfaces",
    "enumValues",
    "possibleTypes",
    "directives",
];

/// How many lists of introspection ([`INTROSPECTION_ALL_LISTS`]) a request
/// may run, fragments counted as spread: GraphiQL's query runs nine.
/// Aliases of `types` or `fields` inside one `__schema` multiplied the
/// answer as aliases of `__schema` did (29 of them: 5.3 MB, 4.5 s).
const MAX_INTROSPECTION_LISTS_RUN: usize = 12;

/// How deep introspection may nest [`INTROSPECTION_LISTS`] (as graphql-js's
/// `MaxIntrospectionDepthRule`): GraphiQL's and the code generators'
/// introspection query nests them one deep.
const MAX_INTROSPECTION_LISTS: usize = 2;

/// Why a document is refused for the introspection it asks, if it is:
/// `__schema` more than once, more than [`MAX_INTROSPECTION_LISTS_RUN`] of
/// its lists, or [`INTROSPECTION_LISTS`] nested deeper than
/// [`MAX_INTROSPECTION_LISTS`]. Thirty aliases of `__schema`, each nesting
/// a type's fields five deep, answered 2.6 MB for 1.4 s of a gateway's CPU,
/// anonymously, ten times a second within the rate limit. Walks the
/// document as written out: call it after [`too_many_fields`], which
/// bounds that walk.
pub(crate) fn too_much_introspection(doc: &ExecutableDocument) -> Option<String> {
    let schemas = Runs::new(doc, &|f| f.name.node.as_str() == "__schema", true)
        .operations(true)
        .max()
        .unwrap_or(0);
    if schemas > 1 {
        return Some(format!(
            "the query asks for `__schema` {schemas} times (a fragment counts each time it is \
             spread); once per request"
        ));
    }
    let mut open = HashSet::new();
    let (lists, deepest) = doc
        .operations
        .iter()
        .map(|(_, op)| introspection_lists(doc, &op.node.selection_set.node, false, 0, &mut open))
        .fold((0, 0), |(n, d), (m, e)| (n.max(m), d.max(e)));
    if lists > MAX_INTROSPECTION_LISTS_RUN {
        return Some(format!(
            "the query runs {lists} lists of introspection (`types`, `fields`, `args`, …; a \
             fragment counts each time it is spread); at most {MAX_INTROSPECTION_LISTS_RUN}"
        ));
    }
    (deepest > MAX_INTROSPECTION_LISTS).then(|| {
        format!(
            "the query nests `fields`, `interfaces`, `possibleTypes` or `inputFields` of \
             introspection {deepest} deep; at most {MAX_INTROSPECTION_LISTS}: ask for the \
             types further down by name, each with a `__type(name:)` of its own"
        )
    })
}

/// In `set`, with `depth` of [`INTROSPECTION_LISTS`] above it: how many of
/// [`INTROSPECTION_ALL_LISTS`] run under `__schema` or `__type` (fragments
/// counted each time they are spread), and the deepest nesting of
/// [`INTROSPECTION_LISTS`]; one walk (a cycle, refused by validation later,
/// stops).
fn introspection_lists<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    inside: bool,
    depth: usize,
    open: &mut HashSet<&'a str>,
) -> (usize, usize) {
    set.items.iter().fold((0, depth), |(runs, deepest), s| {
        let (more, below) = match &s.node {
            Selection::Field(f) => {
                let name = f.node.name.node.as_str();
                let inside = inside || matches!(name, "__schema" | "__type");
                let depth = depth + usize::from(inside && INTROSPECTION_LISTS.contains(&name));
                let (n, d) =
                    introspection_lists(doc, &f.node.selection_set.node, inside, depth, open);
                let here = usize::from(inside && INTROSPECTION_ALL_LISTS.contains(&name));
                (n.saturating_add(here), d)
            }
            Selection::InlineFragment(f) => {
                introspection_lists(doc, &f.node.selection_set.node, inside, depth, open)
            }
            Selection::FragmentSpread(f) => {
                let name = f.node.fragment_name.node.as_str();
                match doc.fragments.get(name) {
                    Some(fragment) if open.insert(name) => {
                        let found = introspection_lists(
                            doc,
                            &fragment.node.selection_set.node,
                            inside,
                            depth,
                            open,
                        );
                        open.remove(name);
                        found
                    }
                    _ => (0, depth),
                }
            }
        };
        (runs.saturating_add(more), deepest.max(below))
    })
}

/// How many root fields the largest operation runs: each is a call to a
/// service, where one request's cost multiplies.
fn root_field_count(doc: &ExecutableDocument) -> usize {
    Runs::new(doc, &|_| true, false)
        .operations(true)
        .max()
        .unwrap_or(0)
}

/// Counts the fields of a document that match `counted` as they run:
/// async-graphql runs a field once per time it is written in the
/// operation as spread, so a fragment spread twice in one selection runs
/// its fields twice (they are not merged before running). Each fragment's
/// count is taken once; a cycle (refused later by validation) counts 0.
struct Runs<'a> {
    doc: &'a ExecutableDocument,
    counted: &'a dyn Fn(&Field) -> bool,
    /// Into the selections of fields too, or the root's only.
    deep: bool,
    /// Each fragment spread and inline fragment counts 1 besides its
    /// fields.
    spreads: bool,
    fragments: HashMap<&'a str, usize>,
    open: HashSet<&'a str>,
}

impl<'a> Runs<'a> {
    fn new(doc: &'a ExecutableDocument, counted: &'a dyn Fn(&Field) -> bool, deep: bool) -> Self {
        Self {
            doc,
            counted,
            deep,
            spreads: false,
            fragments: HashMap::new(),
            open: HashSet::new(),
        }
    }

    /// Counting spreads and inline fragments too.
    fn with_spreads(mut self) -> Self {
        self.spreads = true;
        self
    }

    /// Each operation's count; `spread`: with the fragments it spreads.
    fn operations(&mut self, spread: bool) -> impl Iterator<Item = usize> {
        let doc = self.doc;
        doc.operations
            .iter()
            .map(|(_, op)| self.set(&op.node.selection_set.node, spread))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// A selection's count; `spread`: with the fragments it spreads.
    fn set(&mut self, set: &'a SelectionSet, spread: bool) -> usize {
        set.items.iter().fold(0usize, |n, s| {
            n.saturating_add(match &s.node {
                Selection::Field(f) => {
                    let below = if self.deep {
                        self.set(&f.node.selection_set.node, spread)
                    } else {
                        0
                    };
                    usize::from((self.counted)(&f.node)).saturating_add(below)
                }
                Selection::InlineFragment(f) => usize::from(self.spreads)
                    .saturating_add(self.set(&f.node.selection_set.node, spread)),
                Selection::FragmentSpread(f) if spread => usize::from(self.spreads)
                    .saturating_add(self.fragment(f.node.fragment_name.node.as_str())),
                Selection::FragmentSpread(_) => usize::from(self.spreads),
            })
        })
    }

    fn fragment(&mut self, name: &'a str) -> usize {
        if let Some(n) = self.fragments.get(name) {
            return *n;
        }
        if !self.open.insert(name) {
            return 0;
        }
        let doc = self.doc;
        let n = doc
            .fragments
            .get(name)
            .map_or(0, |f| self.set(&f.node.selection_set.node, true));
        self.open.remove(name);
        self.fragments.insert(name, n);
        n
    }
}

/// An answer of one error the GraphQL way, counted by its code
/// (`duikou_graphql_errors_total`: every refusal made here, before the
/// executor, as the executor's own errors are).
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    crate::metrics::graphql_error(code);
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_ACCEPTABLE {
        return response;
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    response
}

/// A 413 from the body limit (or from reading a chunked body past it),
/// with a code and a message instead of plain text.
async fn too_large(response: Response) -> Response {
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // One the handler made already (a chunked body read past the limit)
    // is answered and counted once.
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || ours {
        return response;
    }
    too_large_error()
}

/// The longest `x-request-id` taken from a client.
const REQUEST_ID_MAX: usize = 128;

/// Drops a client's `x-request-id` that is not a short token (at most
/// [`REQUEST_ID_MAX`] of letters, digits and `-._:`), so that a new one is
/// made: the id goes into every log line and every RPC's headers, and one
/// of 200 KB made RabbitMQ close the gateway's connection (a frame too
/// large), ending every call and subscription in flight.
async fn own_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let fits = |v: &axum::http::HeaderValue| {
        let v = v.as_bytes();
        !v.is_empty()
            && v.len() <= REQUEST_ID_MAX
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(b))
    };
    let headers = request.headers_mut();
    let mut given = headers.get_all("x-request-id").iter();
    let keep = matches!((given.next(), given.next()), (Some(v), None) if fits(v));
    if !keep {
        headers.remove("x-request-id");
    }
    request
}

/// Browser apps on any origin may call the API: it is authorised by a
/// bearer token in a header, never by a cookie, so another origin's page
/// gets nothing a script could not get without a browser.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::header::RETRY_AFTER;
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    // Whatever headers the page sends (a client's name, a trace context):
    // mirrored, since `*` would not cover `Authorization`.
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers([request_id, RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(3600))
}

/// Says which request headers the answer depends on (`Vary`).
async fn vary(mut response: Response) -> Response {
    response.headers_mut().append(
        header::VARY,
        axum::http::HeaderValue::from_static("accept, accept-language, authorization"),
    );
    response
}

/// 413, the GraphQL way.
fn too_large_error() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BAD_USER_INPUT",
        &format!(
            "the request body is larger than {} KiB; send large lists in several requests",
            MAX_BODY / 1024
        ),
    )
}

/// Whether reading a body failed on [`MAX_BODY`] (`http-body-util`'s
/// `LengthLimitError`, somewhere in the chain).
fn past_the_limit(e: &std::io::Error) -> bool {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .any(|e| e.to_string() == "length limit exceeded")
}

/// The answer to a request whose handling panicked: 500 with INTERNAL.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(
        panic = shared::error::panic_message(panic.as_ref()),
        "a request panicked"
    );
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the gateway failed to answer; the request may be retried",
    )
}

/// The operation of `doc` the request runs: the only one (named or not,
/// `operationName` given or not), or the one it names; None when it names
/// none there or leaves the choice among several open.
fn chosen<'d>(
    request: &async_graphql::Request,
    doc: &'d async_graphql::parser::types::ExecutableDocument,
) -> Option<&'d async_graphql::Positioned<async_graphql::parser::types::OperationDefinition>> {
    match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Whether the request would run a mutation (refused over GET): the one it
/// runs, or, the choice left open, any of them.
fn is_mutation(
    request: &async_graphql::Request,
    doc: &async_graphql::parser::types::ExecutableDocument,
) -> bool {
    match chosen(request, doc) {
        Some(op) => op.node.ty == OperationType::Mutation,
        None => match &doc.operations {
            DocumentOperations::Multiple(ops) => {
                ops.values().any(|op| op.node.ty == OperationType::Mutation)
            }
            DocumentOperations::Single(_) => false,
        },
    }
}

/// The mutations that take credentials of their own, not the bearer's.
const SIGN_IN: [&str; 5] = [
    "login",
    "register",
    "refreshToken",
    "logout",
    "apiClientToken",
];

/// Whether the operation `request` runs is a mutation of [`SIGN_IN`]
/// fields only: one an app sends with the stale access token it still
/// holds (an auth link attaches it to every request), which must not be
/// refused for that token — a refresh refused for an expired access token
/// looped, and a logout never went through.
fn signs_in_only(
    request: &async_graphql::Request,
    doc: &async_graphql::parser::types::ExecutableDocument,
) -> bool {
    use async_graphql::parser::types::Selection;
    let Some(op) = chosen(request, doc) else {
        return false;
    };
    op.node.ty == OperationType::Mutation
        && op.node.selection_set.node.items.iter().all(|s| {
            matches!(&s.node, Selection::Field(f) if SIGN_IN.contains(&f.node.name.node.as_str()))
        })
}

/// GET: a WebSocket upgrade for subscriptions, or a query.
async fn graphql_get(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    use axum::extract::{FromRequest, FromRequestParts, ws::WebSocketUpgrade};
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade {
        let method = request.method().clone();
        let headers = request.headers().clone();
        // GraphQL over HTTP names it `operationName` in the query string;
        // async-graphql's GET reading knows only `operation_name`.
        let axum::extract::Query(named) = axum::extract::Query::<
            std::collections::HashMap<String, String>,
        >::try_from_uri(request.uri())
        .unwrap_or_default();
        let q = GraphQLRequest::from_request(request, &())
            .await
            .map(|mut q| {
                if q.0.operation_name.is_none() {
                    q.0.operation_name = named.get("operationName").cloned();
                }
                q
            });
        return graphql(State(gw), ConnectInfo(peer), method, headers, q).await;
    }
    let ip = crate::limits::caller_ip(peer.ip());
    if let Err(wait) = gw.limiter.check(&format!("ip:{ip}")).await {
        return rate_limited(wait);
    }
    let (mut parts, _body) = request.into_parts();
    // The protocol async-graphql picks (the first it knows of those
    // offered), which its GraphQLProtocol does not show.
    let spoken = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|offered| {
            offered.split(',').find_map(|p| {
                p.trim()
                    .parse::<async_graphql::http::WebSocketProtocols>()
                    .ok()
            })
        });
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        // No protocol offered that async-graphql speaks: said, not an empty 400.
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "subscriptions speak graphql-transport-ws: offer it in the \
                 Sec-WebSocket-Protocol header",
            );
        }
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    // The upgrade's id (set by the layer, echoed in the 101) goes with
    // every RPC the connection's subscriptions make, as a request's does.
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Names and texts in the language the upgrade asked for, as over HTTP.
    let lang = parts
        .headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(preferred_lang);
    let stopping = gw.sockets.stopping.clone();
    let ping_every = gw.sockets.ping_every;
    let Ok(slot) = gw.sockets.slots.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "too many subscription connections are open; try again in a minute",
        );
    };
    // The protocol answered is the one served: async-graphql picks the
    // first the client offers, axum the first of its own list.
    ws.protocols(spoken.map(|p| p.sec_websocket_protocol()))
        // A subscribe is a few hundred bytes: a socket message is held to
        // a fraction of a request body (the default took 64 MiB, before
        // any login).
        .max_message_size(crate::socket::MAX_MESSAGE)
        .max_frame_size(crate::socket::MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let identity = gw.identity.clone();
            let watching = identity.clone();
            let (bus, cache) = (gw.bus.clone(), gw.cache.clone());
            let limiter = gw.limiter.clone();
            let per_account = gw.sockets.per_account.clone();
            let (opened, opened_with) = tokio::sync::watch::channel(None);
            let (initialised, initialising) = tokio::sync::watch::channel(false);
            // The server's messages go through a channel, so that the socket
            // is still ours to close with a reason when the token ends.
            let (mut socket_out, socket_in) = socket.split();
            let conduct = crate::socket::Conduct::new(spoken);
            let refusing = conduct.clone();
            let socket_in = crate::socket::incoming(socket_in, conduct.clone());
            let (out, mut outgoing) = futures::channel::mpsc::channel(16);
            let serve =
                GraphQLWebSocket::new_with_pair(out, socket_in, gw.schema.clone(), protocol)
                    .on_connection_init(move |payload| async move {
                        let refuse = |e| {
                            refusing.refuse(&e);
                            e
                        };
                        let principal = connection_principal(identity.as_ref(), &payload, &opened)
                            .map_err(refuse)?;
                        let held = principal
                            .as_ref()
                            .map(|p| per_account.hold(p.account_id))
                            .transpose()
                            .map_err(refuse)?;
                        let mut data = async_graphql::Data::default();
                        data.insert(crate::socket::OverWebSocket);
                        if let Some(lang) = lang {
                            data.insert(lang);
                        }
                        data.insert(crate::socket::Slots::default());
                        // Each subscribe reads a booking: counted as a request.
                        data.insert(limiter);
                        if let Some(held) = held {
                            data.insert(held);
                        }
                        if let Some(bus) = &bus {
                            crate::schema::loaders::attach(
                                &mut data,
                                bus,
                                &cache,
                                principal.as_ref(),
                            );
                        }
                        if let Some(principal) = principal {
                            data.insert(principal);
                        }
                        initialised.send_replace(true);
                        Ok(data)
                    })
                    .serve();
            shared::telemetry::with_request_id(request_id, async move {
                let closed = std::sync::atomic::AtomicBool::new(false);
                let ended = {
                    let forward = async {
                        // A ping now and then: a client gone without a
                        // close (a phone off the network, a NAT that forgot
                        // the flow) answers none, and is found out by
                        // `crate::socket::silent` below.
                        let mut pings = tokio::time::interval_at(
                            tokio::time::Instant::now() + ping_every,
                            ping_every,
                        );
                        // After a stall, one ping, not the missed ones at once.
                        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            let message = tokio::select! {
                                message = outgoing.next() => match message {
                                    Some(message) => message,
                                    None => break,
                                },
                                _ = pings.tick() => axum::extract::ws::Message::Ping(Default::default()),
                            };
                            let Some(message) = crate::socket::outgoing(message, &conduct) else {
                                continue;
                            };
                            if matches!(message, axum::extract::ws::Message::Close(_)) {
                                closed.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            if socket_out.send(message).await.is_err() {
                                // The client is gone: async-graphql, parked
                                // on a full channel, must not wait for ever
                                // holding the slot and the subscriptions.
                                outgoing.close();
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        // Ended by async-graphql without a close of its own
                        // (the older protocol's refused init or its
                        // `connection_terminate`): closed all the same, not
                        // dropped (clients see 1006, a network fault).
                        ((), ()) = futures::future::join(serve, forward) => conduct.close().or_else(|| {
                            let closed = closed.load(std::sync::atomic::Ordering::SeqCst);
                            (!closed).then(|| match conduct.refusal() {
                                Some(_) => (crate::socket::INIT_REFUSED, "Forbidden".to_owned()),
                                None => (crate::socket::NORMAL_CLOSE, String::new()),
                            })
                        }),
                        reason = crate::socket::token_ended(opened_with, watching) => {
                            Some((crate::socket::TOKEN_ENDED, reason.to_owned()))
                        }
                        reason = crate::socket::init_overdue(initialising) => {
                            Some((crate::socket::INIT_TIMEOUT, reason.to_owned()))
                        }
                        reason = crate::socket::silent(&conduct, ping_every) => {
                            Some((crate::socket::GOING_AWAY, reason))
                        }
                        () = stopping.cancelled() => {
                            Some((crate::socket::GOING_AWAY, crate::socket::STOPPING.to_owned()))
                        }
                    }
                };
                if let Some((code, reason)) = ended {
                    let close = axum::extract::ws::CloseFrame {
                        code,
                        reason: crate::socket::close_reason(&reason).into(),
                    };
                    // Within a bound: a client that stopped reading (its
                    // window full of pongs) would hold the task, the
                    // descriptor and the slot for ever.
                    let _ = tokio::time::timeout(
                        crate::socket::CLOSE_WITHIN,
                        socket_out.send(axum::extract::ws::Message::Close(Some(close))),
                    )
                    .await;
                }
                drop(slot);
            })
        })
        .into_response()
}

/// The principal of a subscription connection, from `connection_init`'s
/// `Authorization` (or `authorization`, `token`, `authToken`, or any of
/// them under `headers`, as Apollo's clients send it). Every subscription
/// is someone's, so a connection without a token is refused (4403): an
/// anonymous socket could do nothing but hold a slot.
fn connection_principal(
    identity: Option<&Identity>,
    payload: &serde_json::Value,
    opened: &tokio::sync::watch::Sender<crate::socket::Opened>,
) -> async_graphql::Result<Option<shared::auth::Principal>> {
    const HOW: &str = "connection_init: the payload is an object with your access token, \
                       { \"Authorization\": \"Bearer <accessToken>\" }";
    if !(payload.is_null() || payload.is_object()) {
        return Err(crate::error::bad_input(HOW));
    }
    const KEYS: [&str; 4] = ["Authorization", "authorization", "token", "authToken"];
    let given = [payload, &payload["headers"]]
        .into_iter()
        .find_map(|place| KEYS.iter().find_map(|k| place.get(k).map(|v| (k, v))));
    let token = match given {
        None => {
            return Err(crate::error::gql(shared::AppError::new(
                shared::ErrorCode::Unauthenticated,
                HOW,
            )));
        }
        Some((_, serde_json::Value::String(t))) => bearer_token(t),
        Some((key, _)) => {
            return Err(crate::error::bad_input(format!(
                "connection_init: {key} is a string, \"Bearer <accessToken>\""
            )));
        }
    };
    let identity = identity.ok_or("no identity here")?;
    // Expired, it is refused as a socket whose token expires is closed:
    // in the same words, saying to reconnect.
    let (principal, token) = identity
        .verify_until(&token)
        .map_err(|e| match e.message.as_str() {
            crate::identity::ACCESS_TOKEN_EXPIRED => shared::AppError::new(
                shared::ErrorCode::Unauthenticated,
                crate::socket::TOKEN_EXPIRED,
            ),
            _ => e,
        })
        .map_err(crate::error::gql)?;
    // HTTP gives an expiring token a few seconds' leeway (clocks differ);
    // a socket lives until the token expires, so one within them would be
    // acknowledged and closed in the same instant — a reconnect that looks
    // like a success, again and again.
    if token.expires <= chrono::Utc::now() {
        return Err(crate::error::gql(shared::AppError::new(
            shared::ErrorCode::Unauthenticated,
            crate::socket::TOKEN_EXPIRED,
        )));
    }
    opened.send_replace(Some((principal.account_id, token)));
    Ok(Some(principal))
}

/// Whether a request's variables or its query (the character itself, or
/// written `\u0000` in a string) hold the NUL character.
fn holds_nul(request: &async_graphql::Request) -> bool {
    fn in_value(value: &async_graphql::Value) -> bool {
        match value {
            async_graphql::Value::String(s) => s.contains('\0'),
            async_graphql::Value::List(items) => items.iter().any(in_value),
            async_graphql::Value::Object(fields) => fields.values().any(in_value),
            _ => false,
        }
    }
    request.query.contains('\0')
        || request.query.contains("\\u0000")
        || request.variables.values().any(in_value)
}

/// Answers on `/graphql` that are JSON — the gateway's own refusals, made
/// in its handler or in a layer (a 413, a 405) — in the media type the
/// client asked for, as the executor's answers are (the 405 and the 413
/// came as `application/json` to a client taking only the other).
async fn media_as_asked(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wants = (request.uri().path() == "/graphql").then(|| wants(request.headers()));
    let mut response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if wants == Some(Wants::GraphqlResponse) && json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(GRAPHQL_RESPONSE),
        );
    }
    response
}

async fn graphql(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    // The multipart form of the upload spec, which the extractor reads:
    // the schema takes no file, and a form is what a page on another
    // origin may post without asking first.
    if headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().to_ascii_lowercase().starts_with(b"multipart/"))
    {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "no file is uploaded here: send the request as application/json",
        );
    }
    let mut request = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => return unreadable(rejection.0),
    };
    let wants = wants(&headers);
    if wants == Wants::Neither {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "BAD_USER_INPUT",
            "accept application/graphql-response+json or application/json",
        );
    }
    // Who asks, and whether they may, before any work for the request
    // (storing a persisted query, parsing).
    let ip = crate::limits::caller_ip(peer.ip());
    // Credentials that cannot be read (not text, or two headers) are still
    // credentials: refused with 401 like a bad token, never run anonymously.
    let mut given = headers.get_all(header::AUTHORIZATION).iter();
    // An empty one is none: clients send `Authorization: ""` (or a bare
    // `Bearer `) when nobody is signed in.
    let bearer = given
        .next()
        .and_then(|first| match (first.to_str(), given.next()) {
            (Ok(value), None) => Some(bearer_token(value)).filter(|t| !t.is_empty()),
            _ => Some(String::new()),
        });
    // A token refused: 401 — unless the request signs in, refreshes or
    // logs out (see `signs_in_only`), which runs without it.
    let mut refused_token = None;
    let principal = match bearer {
        None => None,
        Some(token) => {
            let verified = match &gw.identity {
                Some(identity) => identity.verify(&token),
                None => Err(shared::AppError::new(
                    shared::ErrorCode::Unauthenticated,
                    "no identity here",
                )),
            };
            match verified {
                Ok(principal) => Some(principal),
                Err(e) => {
                    // A bad token is still counted, against its address.
                    if let Err(wait) = gw.limiter.check(&format!("ip:{ip}")).await {
                        return rate_limited(wait);
                    }
                    refused_token = Some(e);
                    None
                }
            }
        }
    };
    let limited = match (&principal, &refused_token) {
        (Some(p), _) => match gw.limiter.check(&format!("account:{}", p.account_id)).await {
            Ok(()) => gw.limiter.check_ip_ceiling(&ip).await,
            wait => wait,
        },
        // Counted against the address already.
        (None, Some(_)) => Ok(()),
        (None, None) => gw.limiter.check(&format!("ip:{ip}")).await,
    };
    if let Err(wait) = limited {
        return rate_limited(wait);
    }
    if let Err(refused) = persisted_query(&gw.cache, &gw.documents, &mut request, wants).await {
        return refused;
    }
    if request.query.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the request has no query; send JSON {\"query\": \"…\", \"variables\": {…}}",
        );
    }
    // PostgreSQL keeps no NUL in text: one in any argument would end as
    // INTERNAL wherever the text reaches a database, so none is taken.
    if holds_nul(&request) {
        let status = match wants {
            Wants::GraphqlResponse => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        return error(
            status,
            "BAD_USER_INPUT",
            "no text of a request (its query, variables or arguments) may hold the NUL character (U+0000)",
        );
    }
    // Before any parsing: deep nesting would overflow the parser's stack.
    if let Some(message) = crate::nesting::refusal(&request.query) {
        let status = match wants {
            Wants::GraphqlResponse => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        return error(status, "BAD_USER_INPUT", &message);
    }
    // Parsed here for the checks before execution and handed to the
    // executor (clients repeat the same queries: parsed ones are kept); a
    // syntax error is left to the executor, which reports it the GraphQL way.
    let doc = gw.documents.parse(&request.query);
    if let Some(e) = refused_token
        && !doc.as_ref().is_some_and(|doc| signs_in_only(&request, doc))
    {
        return error(StatusCode::UNAUTHORIZED, e.code.as_str(), &e.message);
    }
    if let Some(doc) = &doc {
        if method != Method::POST && is_mutation(&request, doc) {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_USER_INPUT",
                "mutations must be sent with POST",
            );
        }
        // A document refused before it runs: 400 for clients that take the
        // GraphQL-over-HTTP media type, 200 as ever for the others.
        let status = match wants {
            Wants::GraphqlResponse => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        let aliases = alias_count(doc);
        if aliases > MAX_ALIASES {
            return error(
                status,
                "BAD_USER_INPUT",
                &format!("the query uses {aliases} aliases; at most {MAX_ALIASES} are allowed"),
            );
        }
        if let Some(message) = too_many_fields(doc).or_else(|| too_much_introspection(doc)) {
            return error(status, "BAD_USER_INPUT", &message);
        }
        // Variables as the spec coerces them, once the cheap refusals
        // are made (it walks the document), into the copy of the parsed
        // document the executor takes.
        let sent = as_sent(doc, &mut request);
        request.set_parsed_query(sent);
        if let Some(message) = missing_variable(doc, &request, input_fields(&gw.schema)) {
            return error(status, "BAD_USER_INPUT", &message);
        }
        let roots = root_field_count(doc);
        if roots > MAX_ROOT_FIELDS {
            return error(
                status,
                "BAD_USER_INPUT",
                &format!(
                    "the operation runs {roots} fields at its root (a fragment counts each \
                     time it is spread); at most {MAX_ROOT_FIELDS} are allowed"
                ),
            );
        }
        match secret_field_count(doc) {
            0 => {}
            1 => {
                // A guess counts against its address whoever sends it: a
                // token (a throwaway account's) must not buy it the
                // account's allowance instead (counted above as well).
                if principal.is_some()
                    && let Err(wait) = gw.limiter.check(&format!("ip:{ip}")).await
                {
                    return rate_limited(wait);
                }
            }
            _ => {
                return error(
                    status,
                    "BAD_USER_INPUT",
                    "one password or client secret a request: send login, register, \
                     changePassword and apiClientToken in requests of their own",
                );
            }
        }
        // Kept only once it passed: a refused document is parsed again
        // should it come again, and never held.
        gw.documents.keep(&request.query, doc);
    }
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(preferred_lang);
    // An anonymous catalogue query may have been answered already.
    let answer_key = match (&principal, &doc) {
        (None, Some(doc)) => Answers::key(gw.cache.scope(), &request, doc, lang, wants),
        _ => None,
    };
    if let Some(key) = &answer_key {
        if let Some(body) = gw.answers.0.get(key) {
            metrics::counter!("duikou_cache_total", "method" => "answer", "outcome" => "local")
                .increment(1);
            return answered(body, wants);
        }
        metrics::counter!("duikou_cache_total", "method" => "answer", "outcome" => "miss")
            .increment(1);
    }
    if let Some(bus) = &gw.bus {
        crate::schema::loaders::attach(&mut request.data, bus, &gw.cache, principal.as_ref());
    }
    // A query asks each service the same thing once, however many of its
    // fields ask it.
    if doc.as_ref().is_some_and(|d| !is_mutation(&request, d)) {
        request = request.data(crate::schema::AskedOnce::default());
    }
    if let Some(principal) = principal {
        request = request.data(principal);
    }
    request = request.data(gw.cache.clone());
    if let Some(lang) = lang {
        request = request.data(lang);
    }
    // The request's id (set by the layer) goes with every RPC it makes.
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let operation = request.operation_name.clone();
    // Read by `@skip`/`@include` (otherwise not worth a copy).
    let variables = if request.query.contains("@skip") || request.query.contains("@include") {
        request.variables.clone()
    } else {
        async_graphql::Variables::default()
    };
    let mut response =
        shared::telemetry::with_request_id(request_id, gw.schema.execute(request)).await;
    if let Some(doc) = &doc {
        crate::order::in_query_order(doc, operation.as_deref(), &variables, &mut response.data);
    }
    // Every root field skipped (`@include(if: false)`): an empty answer,
    // not `data: null` without an error.
    if response.data == async_graphql::Value::Null && response.errors.is_empty() {
        response.data = async_graphql::Value::Object(Default::default());
    }
    // Kept only when whole: an error may be passing (a service away).
    if let Some(key) = answer_key
        && response.errors.is_empty()
        && let Ok(body) = serde_json::to_vec(&response)
    {
        let body = axum::body::Bytes::from(body);
        gw.answers.0.insert(key, body.clone());
        return answered(body, wants);
    }
    // A date that does not parse is said once (see `priced_twice`).
    if response
        .errors
        .iter()
        .any(|e| e.path.is_empty() && refuses_a_date(&e.message))
    {
        response
            .errors
            .retain(|e| !(e.path.is_empty() && priced_twice(&e.message)));
    }
    // A field selected twice (two fragments) fails twice, alike: said once.
    let mut said = std::collections::HashSet::new();
    response.errors.retain(|e| {
        // Where: the path, or for a request error its place in the text.
        let at = if e.path.is_empty() {
            serde_json::to_string(&e.locations)
        } else {
            serde_json::to_string(&e.path)
        };
        said.insert((at.unwrap_or_default(), e.message.clone()))
    });
    // A small request can be wrong in thousands of places (20,000 repeated
    // variable definitions answered 5.5 MB of errors): the first hundred
    // say what to mend.
    if response.errors.len() > MAX_ERRORS {
        let left_out = response.errors.len() - MAX_ERRORS;
        response.errors.truncate(MAX_ERRORS);
        response.errors.push(async_graphql::ServerError::new(
            left_out_message(left_out),
            None,
        ));
    }
    for e in &mut response.errors {
        // Explained before it is cut: a syntax error's reason comes last in
        // the parser's words, past the cut on a long one-line query.
        let code = with_code(e);
        shorten(&mut e.message);
        crate::metrics::graphql_error(&code);
    }

    // A request error (syntax, validation, limits) has no data and errors
    // without a path: the spec's 400 for clients that asked for it.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    // A request that did not run answers no `data` at all (§7.1.2), as the
    // gateway's own refusals do.
    let mut http = if request_error {
        axum::Json(json!({ "errors": response.errors })).into_response()
    } else {
        GraphQLResponse::from(response).into_response()
    };
    let media = match wants {
        Wants::GraphqlResponse => GRAPHQL_RESPONSE,
        _ => "application/json",
    };
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(media),
    );
    if wants == Wants::GraphqlResponse && request_error {
        *http.status_mut() = StatusCode::BAD_REQUEST;
    }
    http
}

/// A variable of a non-null type that the request leaves out (with no
/// default) or sends null (default or not), or an Int variable past 32 bits
/// ([`ints_fit`]): a request error, refused before anything runs (the executor reported it as the first field using it
/// failing, with a path, and a 200 where the spec's media type asks 400).
fn missing_variable(
    doc: &async_graphql::parser::types::ExecutableDocument,
    request: &async_graphql::Request,
    inputs: &InputFields,
) -> Option<String> {
    let operation = crate::order::operation(doc, request.operation_name.as_deref())?;
    operation
        .variable_definitions
        .iter()
        .find_map(|definition| {
            let definition = &definition.node;
            if definition.var_type.node.nullable {
                return None;
            }
            let name = definition.name.node.as_str();
            // A default stands in for a variable left out, not for one
            // sent null (§6.4.1).
            match request.variables.get(name) {
                None if definition.default_value.is_none() => Some(no_value(name)),
                Some(async_graphql::Value::Null) => Some(format!(
                    "variable ${name} is null, but its type {} needs a value",
                    definition.var_type.node
                )),
                _ => None,
            }
        })
        .or_else(|| {
            operation
                .variable_definitions
                .iter()
                .find_map(|definition| {
                    let definition = &definition.node;
                    let name = definition.name.node.as_str();
                    let value = request.variables.get(name)?;
                    (!ints_fit(&definition.var_type.node, value, inputs)).then(|| {
                        format!(
                            "variable ${name}: an Int is a whole number from {} to {}",
                            i32::MIN,
                            i32::MAX
                        )
                    })
                })
        })
}

/// The fields of each input object type of the schema, and their types.
type InputFields =
    std::collections::HashMap<String, Vec<(String, async_graphql::parser::types::Type)>>;

/// [`InputFields`] of `schema`, read once from its SDL.
fn input_fields(schema: &DuikouSchema) -> &'static InputFields {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    static FIELDS: std::sync::OnceLock<InputFields> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| {
        let Ok(document) = async_graphql::parser::parse_schema(schema.sdl()) else {
            return InputFields::new();
        };
        document
            .definitions
            .into_iter()
            .filter_map(|definition| match definition {
                TypeSystemDefinition::Type(t) => match t.node.kind {
                    TypeKind::InputObject(input) => Some((
                        t.node.name.node.to_string(),
                        input
                            .fields
                            .into_iter()
                            .map(|f| (f.node.name.node.to_string(), f.node.ty.node))
                            .collect(),
                    )),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    })
}

/// Whether the Ints of `value`, a variable of type `ty`, fit an Int (32
/// bits), inside input objects too: async-graphql takes a larger one as
/// valid and fails only the field that uses it, after the mutations before
/// it have run.
fn ints_fit(
    ty: &async_graphql::parser::types::Type,
    value: &async_graphql::Value,
    inputs: &InputFields,
) -> bool {
    use async_graphql::Value;
    use async_graphql::parser::types::BaseType;
    match (&ty.base, value) {
        (BaseType::Named(name), Value::Number(n)) if name.as_str() == "Int" => {
            n.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
        }
        (BaseType::Named(name), Value::Object(fields)) => {
            inputs.get(name.as_str()).is_none_or(|declared| {
                declared.iter().all(|(field, ty)| {
                    fields
                        .get(field.as_str())
                        .is_none_or(|v| ints_fit(ty, v, inputs))
                })
            })
        }
        (BaseType::List(item), Value::List(values)) => {
            values.iter().all(|v| ints_fit(item, v, inputs))
        }
        (BaseType::List(item), single) => ints_fit(item, single, inputs),
        _ => true,
    }
}

/// The document as the spec runs it with the variables sent (§6.4.1):
/// a variable left out takes its default (async-graphql left `@include(if:
/// $w)` and `@skip` reading a defaulted `$w` left out as false), and an
/// argument given a variable left out without a default is no argument at
/// all, so the argument's own default applies (async-graphql read it as
/// null: "Expected input type BookingOrder, found null" for `orderBy: $o`).
fn as_sent(
    doc: &async_graphql::parser::types::ExecutableDocument,
    request: &mut async_graphql::Request,
) -> async_graphql::parser::types::ExecutableDocument {
    use async_graphql::parser::types::{
        DocumentOperations, OperationDefinition, Selection, SelectionSet,
    };
    use std::collections::HashSet;
    let mut doc = doc.clone();
    let Some(operation) = crate::order::operation(&doc, request.operation_name.as_deref()) else {
        return doc;
    };
    let mut left_out = HashSet::new();
    for definition in &operation.variable_definitions {
        let name = &definition.node.name.node;
        if request.variables.contains_key(name) {
            continue;
        }
        // The default as written (`default_value()` makes null the
        // default of a nullable variable without one).
        match &definition.node.default_value {
            Some(default) => {
                request.variables.insert(name.clone(), default.node.clone());
            }
            None => {
                left_out.insert(name.clone());
            }
        }
    }
    if left_out.is_empty() {
        return doc;
    }
    // Every operation of a document is validated, and another one's
    // arguments, definitions and fragments must stay as written: the
    // document is cut to the operation that runs and the fragments it
    // spreads (async-graphql runs that one alone anyway).
    if let DocumentOperations::Multiple(ops) = &mut doc.operations {
        let run = request
            .operation_name
            .clone()
            .or_else(|| ops.keys().next().map(|n| n.to_string()));
        ops.retain(|name, _| Some(name.as_str()) == run.as_deref());
        let mut reached = HashSet::new();
        let mut to_visit: Vec<&SelectionSet> =
            ops.values().map(|op| &op.node.selection_set.node).collect();
        while let Some(set) = to_visit.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => to_visit.push(&field.node.selection_set.node),
                    Selection::InlineFragment(inline) => {
                        to_visit.push(&inline.node.selection_set.node);
                    }
                    Selection::FragmentSpread(spread) => {
                        let name = &spread.node.fragment_name.node;
                        if reached.insert(name.clone())
                            && let Some(fragment) = doc.fragments.get(name)
                        {
                            to_visit.push(&fragment.node.selection_set.node);
                        }
                    }
                }
            }
        }
        doc.fragments.retain(|name, _| reached.contains(name));
    }
    // One walk of what runs: the arguments given a variable left out go
    // (`dropped` says whose), and the variables still referred to anywhere
    // are `used`; a definition whose every use went is dropped too
    // ("Variable "$first" is not used" otherwise).
    let mut walk = Coercion {
        left_out: &left_out,
        dropped: HashSet::new(),
        used: HashSet::new(),
    };
    let mut ops: Vec<&mut async_graphql::Positioned<OperationDefinition>> =
        match &mut doc.operations {
            DocumentOperations::Single(op) => vec![op],
            DocumentOperations::Multiple(ops) => ops.values_mut().collect(),
        };
    for op in &mut ops {
        walk.directives(&op.node.directives);
        walk.set(&mut op.node.selection_set.node);
    }
    for fragment in doc.fragments.values_mut() {
        walk.directives(&fragment.node.directives);
        walk.set(&mut fragment.node.selection_set.node);
    }
    for op in ops {
        op.node.variable_definitions.retain(|d| {
            let name = &d.node.name.node;
            !walk.dropped.contains(name) || walk.used.contains(name)
        });
    }
    doc
}

/// [`as_sent`]'s walk of a document.
struct Coercion<'a> {
    /// Variables the request left out, without a default.
    left_out: &'a std::collections::HashSet<async_graphql::Name>,
    /// Those whose arguments were dropped.
    dropped: std::collections::HashSet<async_graphql::Name>,
    /// Those still referred to.
    used: std::collections::HashSet<async_graphql::Name>,
}

impl Coercion<'_> {
    fn set(&mut self, set: &mut async_graphql::parser::types::SelectionSet) {
        use async_graphql::parser::types::Selection;
        for selection in &mut set.items {
            match &mut selection.node {
                Selection::Field(field) => {
                    field.node.arguments.retain(|(_, value)| match &value.node {
                        async_graphql_value::Value::Variable(v) if self.left_out.contains(v) => {
                            self.dropped.insert(v.clone());
                            false
                        }
                        value => {
                            mentioned(value, &mut self.used);
                            true
                        }
                    });
                    self.directives(&field.node.directives);
                    self.set(&mut field.node.selection_set.node);
                }
                Selection::InlineFragment(inline) => {
                    self.directives(&inline.node.directives);
                    self.set(&mut inline.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => self.directives(&spread.node.directives),
            }
        }
    }

    fn directives(
        &mut self,
        list: &[async_graphql::Positioned<async_graphql::parser::types::Directive>],
    ) {
        for directive in list {
            for (_, value) in &directive.node.arguments {
                mentioned(&value.node, &mut self.used);
            }
        }
    }
}

/// Adds the variables `value` refers to to `used`.
fn mentioned(
    value: &async_graphql_value::Value,
    used: &mut std::collections::HashSet<async_graphql::Name>,
) {
    match value {
        async_graphql_value::Value::Variable(v) => {
            used.insert(v.clone());
        }
        async_graphql_value::Value::List(items) => {
            for v in items {
                mentioned(v, used);
            }
        }
        async_graphql_value::Value::Object(fields) => {
            for v in fields.values() {
                mentioned(v, used);
            }
        }
        _ => {}
    }
}

/// What a required variable sent without a value is told.
fn no_value(name: &str) -> String {
    format!(
        "variable ${name} has no value: declare it in the operation and give it in \
         \"variables\" (or a default)"
    )
}

/// A body that is not a GraphQL request: 400 with BAD_USER_INPUT and what
/// was wrong, said the GraphQL way (not the extractor's plain text).
fn unreadable(e: async_graphql::ParseRequestError) -> Response {
    use async_graphql::ParseRequestError as E;
    let message = match e {
        E::PayloadTooLarge => return too_large_error(),
        E::UnsupportedBatch => {
            "batched requests (a JSON array) are not accepted; send one operation per request"
                .to_owned()
        }
        // JSON that does not parse (a brace missing, a number no type holds
        // such as 1e400): where, in serde's words, which name the place.
        // serde's own words for JSON of the wrong shape name the library's
        // types ("untagged enum BatchRequest"), not the client's mistake.
        E::InvalidRequest(e) => match not_json(e.as_ref()) {
            Some(why) => format!("the body is not valid JSON: {why}"),
            None => "the body is not a GraphQL request; send JSON \
                 {\"query\": \"…\", \"variables\": {…}} with a string query"
                .to_owned(),
        },
        // Past the limit in a body sent in chunks (no `Content-Length`):
        // the same 413 as a declared length past it.
        E::Io(e) if past_the_limit(&e) => return too_large_error(),
        E::Io(e) => format!("the request could not be read: {e}"),
        other => format!("the request could not be read: {other}"),
    };
    error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message)
}

/// serde_json's account of a body that is not JSON at all (a syntax error
/// or an early end), None for JSON of the wrong shape.
fn not_json(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let e = e.downcast_ref::<serde_json::Error>()?;
    (e.is_syntax() || e.is_eof()).then(|| e.to_string())
}

/// `OPTIONS /graphql`: what may be sent. The CORS layer answers every
/// OPTIONS before it (`Access-Control-Allow-Methods: GET,POST`); without a
/// handler of its own, axum added an `Allow` offering HEAD, which is 405.
async fn graphql_options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::ALLOW, "GET, POST, OPTIONS")],
    )
        .into_response()
}

/// Any method but GET and POST on `/graphql`.
async fn other_method() -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "BAD_USER_INPUT",
        "send GraphQL with POST (or queries with GET)",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
    response
}

/// A kept answer, with the media type the client asked for.
fn answered(body: axum::body::Bytes, wants: Wants) -> Response {
    let media = match wants {
        Wants::GraphqlResponse => GRAPHQL_RESPONSE,
        _ => "application/json",
    };
    (
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(media),
        )],
        body,
    )
        .into_response()
}

/// Automatic persisted queries (Apollo's protocol): a request may send only
/// `extensions.persistedQuery.sha256Hash`; the query is looked up (unknown:
/// `PERSISTED_QUERY_NOT_FOUND`, and the client sends it again with the
/// query, which is then kept for a day). A hash that does not match its
/// query is BAD_USER_INPUT.
async fn persisted_query(
    cache: &crate::cache::Cache,
    documents: &Documents,
    request: &mut async_graphql::Request,
    wants: Wants,
) -> Result<(), Response> {
    use async_graphql::Value;
    use sha2::Digest;
    let refused = |code: &str, message: &str| {
        let status = match wants {
            Wants::GraphqlResponse => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        error(status, code, message)
    };
    let persisted = match request.extensions.0.get("persistedQuery") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(persisted)) => persisted,
        // Not ignored: the client meant a persisted query, and one sent
        // with its text would run unkept, unsaid.
        Some(_) => {
            return Err(refused(
                "BAD_USER_INPUT",
                "persistedQuery must be an object: {\"version\": 1, \"sha256Hash\": \"…\"}",
            ));
        }
    };
    let version = persisted.get("version");
    let hash = match (version, persisted.get("sha256Hash")) {
        (Some(Value::Number(v)), Some(Value::String(hash))) if v.as_u64() == Some(1) => {
            hash.to_ascii_lowercase()
        }
        _ => {
            return Err(refused(
                "BAD_USER_INPUT",
                "persistedQuery needs version 1 and a sha256Hash",
            ));
        }
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(
            "BAD_USER_INPUT",
            "persistedQuery.sha256Hash must be 64 hexadecimal digits",
        ));
    }
    if request.query.is_empty() {
        return match cache.persisted(&hash).await {
            Some(query) => {
                request.query = query;
                Ok(())
            }
            None => Err(refused(
                "PERSISTED_QUERY_NOT_FOUND",
                "PersistedQueryNotFound",
            )),
        };
    }
    if hex::encode(sha2::Sha256::digest(request.query.as_bytes())) != hash {
        return Err(refused(
            "BAD_USER_INPUT",
            "persistedQuery.sha256Hash is not the SHA-256 of the query",
        ));
    }
    // Kept only when it is a query (what does not parse is answered with
    // its syntax error, and sent whole again) of a sensible length, and
    // parsed only once the text passed the checks made before any parsing
    // (the request makes them next, and refuses it): nested thousands
    // deep, the parser's recursion would overflow the worker's stack.
    if request.query.len() <= crate::cache::MAX_PERSISTED_QUERY
        && crate::nesting::refusal(&request.query).is_none()
        && documents.parse(&request.query).is_some()
    {
        cache.persist(&hash, &request.query).await;
    }
    Ok(())
}

/// 429 with RATE_LIMITED and `Retry-After`.
fn rate_limited(wait: std::time::Duration) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        &crate::limits::too_many(wait),
    );
    let seconds = crate::limits::wait_seconds(wait);
    if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Whether a request error is the validator's refusal of a `Date`
/// argument or variable default.
fn refuses_a_date(message: &str) -> bool {
    (message.starts_with("Invalid value for argument")
        || message.starts_with("Invalid default value for argument"))
        && (message.ends_with("expected type \"Date\"")
            || message.ends_with("expected type \"Date!\""))
}

/// Whether a request error is a date's second report: the lists a
/// request's cost counts by their dates (`roomCalendar`,
/// `RoomType.calendar`, `Route.departures`) have complexity functions that
/// read the dates too, so one that does not parse fails there again
/// ("Failed to parse \"Date\": …", or "Expected input type \"Date\", found
/// 5.") beside the validator's refusal. Dropped only beside such a refusal,
/// and only for `Date`, whose validator parses as its reader does (every
/// date the complexity functions fail on, the validator refused too): an
/// `Int` past 32 bits passes the validator and is reported by the
/// complexity functions alone.
fn priced_twice(message: &str) -> bool {
    message.starts_with("Failed to parse \"Date\"")
        || message.starts_with("Expected input type \"Date\"")
}

/// Gives an error that has no `extensions.code` the one it should have: a
/// request error (syntax, validation, depth or complexity limits — no path)
/// is BAD_USER_INPUT, anything else INTERNAL. Returns the code.
fn with_code(e: &mut async_graphql::ServerError) -> String {
    let existing = e
        .extensions
        .as_ref()
        .and_then(|x| x.get("code"))
        .and_then(|v| match v {
            async_graphql::Value::String(s) => Some(s.clone()),
            _ => None,
        });
    if let Some(code) = existing {
        return code;
    }
    // Judged by async-graphql's own words, then said plainly.
    let code = missing_code(&e.message, !e.path.is_empty());
    if let Some(explained) = explained(&e.message) {
        e.message = explained;
    }
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    code.to_owned()
}

/// Longest error message sent, in characters: a message that quotes the
/// input (an email, a cursor, a token) stays readable when the input was
/// 100 KB.
const MAX_MESSAGE: usize = 500;

/// Cuts `message` to [`MAX_MESSAGE`] characters, marking the cut.
fn shorten(message: &mut String) {
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(at);
        message.push_str("… (cut)");
    }
}

/// async-graphql's refusal of a query over its limits, said with the
/// limit and what to do ("Query is too complex." told neither).
pub(crate) fn explained(message: &str) -> Option<String> {
    if let Some(said) = syntax_error(message) {
        return Some(said);
    }
    // A day or an instant that does not parse (`2027-02-30`, `2027-2-3`,
    // `yesterday`), given in the query, a variable or a variable's default:
    // the validator says only the type it expected.
    if message.starts_with("Invalid value for argument")
        || message.starts_with("Invalid default value for argument")
    {
        let years = crate::schema::types::DATE_YEARS;
        if message.ends_with("type \"Date\"") {
            return Some(format!(
                "{message}: a Date is a day that exists, written YYYY-MM-DD, in the years {} to {}",
                years.start(),
                years.end()
            ));
        }
        if message.ends_with("type \"DateTime\"") {
            return Some(format!(
                "{message}: a DateTime is an RFC 3339 date and time with its offset, e.g. \
                 2026-12-05T08:00:00+08:00 or 2026-12-05T00:00:00Z, in the years {} to {}",
                years.start(),
                years.end()
            ));
        }
    }
    // The parser's own bound, met by a fragment that spreads itself long
    // before any nesting a client means.
    if message.starts_with("The recursion depth of the query cannot be greater than") {
        return Some(
            "the query is nested too deep to read (32 levels of selections and fragments at \
             most): a fragment spreads itself, or fragments nest too deep"
                .to_owned(),
        );
    }
    // A variable declared without a default and sent without a value
    // ("Variable id is not defined." said it was not declared).
    if let Some(name) = message
        .strip_prefix("Variable ")
        .and_then(|rest| rest.strip_suffix(" is not defined."))
        .filter(|name| !name.contains(' '))
    {
        return Some(no_value(name));
    }
    match message {
        "Query is too complex." => Some(format!(
            "the query is too complex: at most {} (each field counts 1, and a list's fields \
             count once per item of its page); ask for fewer fields or smaller pages",
            crate::schema::MAX_COMPLEXITY
        )),
        "Query is nested too deep." => Some(format!(
            "the query is nested too deep: at most {} levels",
            crate::schema::MAX_DEPTH
        )),
        _ => None,
    }
}

/// The parser's syntax error — pest's picture: ` --> 1:330`, the line
/// quoted whole, a caret, then `= expected selection` — with the reason
/// first and the line cut to the place: a generated client's query is one
/// long line, and cut to [`MAX_MESSAGE`] the picture kept only the position.
fn syntax_error(message: &str) -> Option<String> {
    let (at, _) = message
        .trim_start()
        .strip_prefix("--> ")?
        .split_once('\n')?;
    let (line, column) = at.split_once(':')?;
    let column: usize = column.trim().parse().ok()?;
    let reason = message
        .lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix("= "))?;
    let quoted = message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{line} | ")))
        .unwrap_or_default();
    let before = column.saturating_sub(1);
    let from = before.saturating_sub(40);
    let mut near: String = quoted.chars().skip(from).take(before - from + 20).collect();
    if from > 0 {
        near.insert(0, '…');
    }
    if quoted.chars().count() > before + 20 {
        near.push('…');
    }
    let near = near.trim();
    Some(if near.is_empty() {
        format!("syntax error at line {line}, column {column}: {reason}, at the end of the query")
    } else {
        format!("syntax error at line {line}, column {column}: {reason}, near `{near}`")
    })
}

/// The error that stands for `left_out` errors past [`MAX_ERRORS`].
pub(crate) fn left_out_message(left_out: usize) -> String {
    format!("… and {left_out} more errors, left out")
}

/// The code of an error that came without one: a request error (syntax,
/// validation, depth or complexity limits — no path — or an argument that
/// does not parse) is BAD_USER_INPUT, anything else INTERNAL.
pub(crate) fn missing_code(message: &str, has_path: bool) -> &'static str {
    if !has_path || is_input_error(message) {
        "BAD_USER_INPUT"
    } else {
        "INTERNAL"
    }
}

/// Whether `message` is async-graphql's own refusal of an argument or a
/// variable (a date that does not exist, an Int out of range, a variable
/// missing or of the wrong type): the request's fault, reported at the
/// field it was for, so with a path. Our resolvers' errors carry codes.
fn is_input_error(message: &str) -> bool {
    [
        "Failed to parse \"",
        "Expected input type \"",
        "Variable ",
        "Invalid value for argument",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}

/// The language of names and texts an `Accept-Language` header prefers
/// among those we have (zh, en), by its quality values.
fn preferred_lang(header: &str) -> Option<Lang> {
    header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| {
                    let p = p.trim();
                    // The parameter's name is case-insensitive (RFC 9110).
                    (p.len() > 2 && p[..2].eq_ignore_ascii_case("q=")).then(|| &p[2..])
                })
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            let lang = match tag.split('-').next()? {
                "zh" => Lang::Zh,
                "en" => Lang::En,
                _ => return None,
            };
            (q > 0.0).then_some((lang, q))
        })
        .fold(None, |best: Option<(Lang, f32)>, (lang, q)| match best {
            Some((_, bq)) if bq >= q => best,
            _ => Some((lang, q)),
        })
        .map(|(lang, _)| lang)
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql")
            .finish(),
    )
}

/// Serves the gateway on `listener` until `cancel`; returns the bound address.
pub async fn serve(
    bus: Arc<dyn Bus>,
    identity: Identity,
    infra: Infra,
    listener: TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    // Revocations made before this replica started refuse their tokens
    // from its first request on.
    identity
        .read_revocations()
        .await
        .map_err(|e| std::io::Error::other(format!("reading token revocations: {}", e.message)))?;
    let push = crate::push::Push::start(&bus, infra.cache.clone())
        .await
        .map_err(|e| std::io::Error::other(format!("subscribing to booking changes: {e}")))?;
    let watching = identity.watch_revocations(cancel.clone());
    let schema = build_schema(Some(bus.clone()), Some(identity.clone()), Some(push));
    let sockets = Sockets::new(cancel.clone(), infra.ping_every);
    let app = router(schema, Some(identity), infra, Some(bus), sockets.clone());
    let handle = tokio::spawn(async move {
        serve_connections(listener, app, cancel).await;
        sockets.closed().await;
        watching.abort();
    });
    Ok((addr, handle))
}

/// How long a stop waits for the requests in hand to be answered.
const CONNECTIONS_END_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a request's body may take to arrive, from its headers.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A request body that must arrive whole within [`BODY_READ_TIMEOUT`] of
/// its request's headers. tower-http's body timeout restarts with every
/// frame: a byte every 20 s kept a request, and one of
/// [`MAX_CONNECTIONS`], for as long as its client liked.
struct WithinDeadline {
    body: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// Why a body was cut off (the client reads it in the 400's message).
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs())]
struct BodyTooSlow;

impl hyper::body::Body for WithinDeadline {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        // What has come is read first: only a body that keeps its reader
        // waiting sets the timer.
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))))
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// `request` with its body held to [`BODY_READ_TIMEOUT`] ([`WithinDeadline`]),
/// and without a `Content-Type` left empty: no type, as none (the body is
/// read as JSON whatever type it says; async-graphql's reader refused one
/// saying "").
async fn body_within_deadline(mut request: axum::extract::Request) -> axum::extract::Request {
    if request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().trim_ascii().is_empty())
    {
        request.headers_mut().remove(header::CONTENT_TYPE);
    }
    request.map(|body| {
        axum::body::Body::new(WithinDeadline {
            body,
            deadline: Box::pin(tokio::time::sleep(BODY_READ_TIMEOUT)),
        })
    })
}
/// Most connections open at once: past it the gateway accepts no more
/// until one closes (they wait in the kernel's backlog), so that clients
/// holding connections cannot take every file descriptor.
const MAX_CONNECTIONS: usize = 8192;
/// How long a client may take to send a request's headers (and, on a
/// kept-alive connection, to start its next request).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most a request's line and headers may take (hyper's default is
/// about 400 KB): past it, 431.
const MAX_HEADERS: usize = 64 * 1024;

/// Accepts connections and serves each (HTTP/1.1, upgrades to WebSocket)
/// until `cancel`, then lets those open finish their requests. What
/// `axum::serve` does, with limits it has no setting for: no more than
/// [`MAX_CONNECTIONS`], headers within [`HEADER_READ_TIMEOUT`].
async fn serve_connections(listener: TcpListener, app: Router, cancel: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    // HTTP/1 only: a server that also takes HTTP/2 first waits, with no
    // timeout, for the bytes that tell which a client speaks (a connection
    // sending nothing was held for ever, and 8,192 of them locked everyone
    // out); hyper's header timeout runs from the connection's first read,
    // before any byte has come.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADERS);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = async {
                let permit = open.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
        };
        let (Ok(permit), result) = accepted else {
            break;
        };
        let (stream, peer) = match result {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers and pushes are small writes, often several in a row on a
        // subscription socket: not held back waiting for the peer's ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), request)
            },
        );
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = cancel.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // On stop: the request in hand is answered, then it closes.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, "a connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    // Bounded: a client that sends its request slowly (half its headers,
    // a few bytes of its body) held the stop for its read timeout, 10 or
    // 30 s, long enough for a process manager to kill the gateway.
    if tokio::time::timeout(CONNECTIONS_END_WITHIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still open at the stop; left to end with the process"
        );
    }
}

/// The token of an `Authorization` value: after `Bearer ` (the scheme in
/// any case, RFC 7235), or the whole value.
fn bearer_token(value: &str) -> String {
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return String::new();
    }
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim().to_owned(),
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_read_by_its_quality_values() {
        let wants = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT,
                header::HeaderValue::from_str(accept).expect("a header"),
            );
            super::wants(&headers)
        };
        assert_eq!(wants("application/json;q=0"), Wants::Neither);
        assert_eq!(
            wants("application/json, application/graphql-response+json;q=0.9"),
            Wants::Json
        );
        assert_eq!(
            wants("application/graphql-response+json, application/json"),
            Wants::GraphqlResponse
        );
        assert_eq!(
            wants("application/json;q=0.5, application/graphql-response+json;Q=0.5"),
            Wants::GraphqlResponse
        );
        assert_eq!(wants("text/html, */*;q=0.8"), Wants::Json);
        assert_eq!(wants("text/html"), Wants::Neither);
        assert_eq!(wants(""), Wants::Json);
        assert_eq!(wants("application/json;q=2"), Wants::Neither);
    }

    #[test]
    fn a_syntax_error_says_why_first_and_quotes_only_the_place() {
        let fields: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
        let query = format!("{{ {fields} regions {{ code }} ");
        let Err(e) = async_graphql::parser::parse_query(&query) else {
            panic!("parsed")
        };
        let said = explained(&e.to_string()).expect("explained");
        assert!(
            said.starts_with("syntax error at line 1, column ") && said.contains("expected"),
            "{said}"
        );
        assert!(
            said.chars().count() < 200 && said.contains("code }"),
            "{said}"
        );
        let short = async_graphql::parser::parse_query("{ a(b: ) }").expect_err("refused");
        let said = explained(&short.to_string()).expect("explained");
        assert!(said.contains("near `{ a(b: ) }`"), "{said}");
        let ended = async_graphql::parser::parse_query("{\n  regions {\n    code\n  \n")
            .expect_err("refused");
        let said = explained(&ended.to_string()).expect("explained");
        assert!(said.ends_with("at the end of the query"), "{said}");
    }

    #[test]
    fn introspection_asks_the_schema_once_and_nests_its_lists_two_deep() {
        let refusal = |query: &str| {
            let doc = async_graphql::parser::parse_query(query).expect("parses");
            too_much_introspection(&doc)
        };
        // GraphiQL's introspection query, in short.
        let graphiql = "query IntrospectionQuery { __schema { queryType { name } types { ...FullType } } }
            fragment FullType on __Type { kind name fields(includeDeprecated: true) { name args { ...InputValue } type { ...TypeRef } }
              inputFields { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name } possibleTypes { ...TypeRef } }
            fragment InputValue on __InputValue { name type { ...TypeRef } }
            fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";
        assert_eq!(refusal(graphiql), None);
        assert_eq!(
            refusal("{ __type(name: \"Query\") { fields { type { fields { name } } } } }"),
            None
        );
        let twice = refusal("{ a: __schema { types { name } } b: __schema { types { name } } }");
        assert!(twice.is_some_and(|m| m.contains("2 times")));
        let spread = refusal("{ ...S ...S } fragment S on Query { __schema { types { name } } }");
        assert!(spread.is_some_and(|m| m.contains("2 times")));
        for deep in [
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }",
            "{ __type(name: \"Query\") { fields { type { interfaces { possibleTypes { name } } } } } }",
            "{ __schema { types { ...F } } } fragment F on __Type { fields { type { ...G } } } fragment G on __Type { inputFields { type { inputFields { name } } } }",
            "{ __schema { types { ... on __Type { fields { type { fields { type { fields { name } } } } } } } } }",
        ] {
            let refused = refusal(deep);
            assert!(
                refused.as_deref().is_some_and(|m| m.contains("3 deep")),
                "{deep}: {refused:?}"
            );
        }
        // Fields of the application's own types are no introspection.
        assert_eq!(refusal("{ regions { code } }"), None);
        // Aliases inside one `__schema`: each list counts.
        let aliased: String = (0..13)
            .map(|i| format!("t{i}: types {{ name }} "))
            .collect();
        let many = refusal(&format!("{{ __schema {{ {aliased} }} }}"));
        assert!(
            many.as_deref()
                .is_some_and(|m| m.contains("13 lists of introspection")),
            "{many:?}"
        );
        let spread = refusal(
            "{ __schema { ...T ...T ...T ...T ...T ...T ...T } } fragment T on __Schema { types { fields { name } } }",
        );
        assert!(
            spread.as_deref().is_some_and(|m| m.contains("14 lists")),
            "{spread:?}"
        );
    }

    #[test]
    fn retry_after_rounds_up_so_that_waiting_it_finds_room() {
        for (wait_ms, seconds) in [(1_500, "2"), (2_000, "2"), (10, "1"), (0, "1")] {
            let answer = rate_limited(std::time::Duration::from_millis(wait_ms));
            assert_eq!(
                answer.headers()[header::RETRY_AFTER],
                seconds,
                "{wait_ms} ms"
            );
        }
    }

    #[test]
    fn a_variable_left_out_takes_its_default_or_leaves_its_argument_out() {
        let query = "query($w: Boolean = true, $first: Int) { partnerships(first: $first) @include(if: $w) { totalCount } }";
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        let mut request = async_graphql::Request::new(query);
        let sent = as_sent(&doc, &mut request);
        assert_eq!(
            request.variables.get("w"),
            Some(&async_graphql::Value::Boolean(true))
        );
        let printed = format!("{:?}", sent.operations);
        assert!(!printed.contains("Variable(Name(\"first\"))"), "{printed}");
        assert!(printed.contains("Variable(Name(\"w\"))"), "{printed}");
    }

    #[test]
    fn a_document_of_several_operations_is_cut_to_the_one_that_runs() {
        let query = "query A($x: Int) { partnerships(first: $x) { ...P } }
                     query B($x: Int!) { myBookings(first: $x) { ...Q } }
                     fragment P on PartnershipConnection { totalCount }
                     fragment Q on BookingConnection { totalCount }";
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        let mut request = async_graphql::Request::new(query).operation_name("A");
        let sent = as_sent(&doc, &mut request);
        let names: Vec<String> = sent
            .operations
            .iter()
            .filter_map(|(n, _)| n.map(|n| n.to_string()))
            .collect();
        assert_eq!(names, ["A"]);
        assert_eq!(
            sent.fragments
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            ["P"]
        );
        // The original is untouched (it is shared by the parse cache).
        assert_eq!(doc.fragments.len(), 2);
    }

    #[test]
    fn the_executors_unclear_refusals_are_said_plainly() {
        let missing = explained("Variable id is not defined.").expect("explained");
        assert!(missing.contains("$id has no value"), "{missing}");
        let cycle = explained("The recursion depth of the query cannot be greater than `32`")
            .expect("explained");
        assert!(cycle.contains("a fragment spreads itself"), "{cycle}");
        assert_eq!(explained("Variable \"$id\" is not defined"), None);
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "abc"] {
            assert_eq!(bearer_token(value), "abc", "{value}");
        }
        assert_eq!(bearer_token("Bear"), "Bear");
        assert_eq!(bearer_token("Bearer 令牌"), "令牌");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut short = "regionCode `150400` is fine".to_owned();
        shorten(&mut short);
        assert_eq!(short, "regionCode `150400` is fine");
        let mut long = format!("regionCode `{}` is not a code", "草".repeat(100_000));
        shorten(&mut long);
        assert_eq!(
            long.chars().count(),
            MAX_MESSAGE + "… (cut)".chars().count()
        );
        assert!(long.ends_with("草… (cut)"));
    }

    #[test]
    fn accept_language_picks_the_best_language_we_have() {
        assert_eq!(preferred_lang("en-US,en;q=0.9"), Some(Lang::En));
        assert_eq!(preferred_lang("zh-CN,zh;q=0.9,en;q=0.8"), Some(Lang::Zh));
        assert_eq!(preferred_lang("fr-FR, en;q=0.5, zh;q=0.7"), Some(Lang::Zh));
        assert_eq!(preferred_lang("de, en;q=0"), None);
        assert_eq!(preferred_lang("*"), None);
        assert_eq!(preferred_lang("zh;q=0.9, en;Q=0.1"), Some(Lang::Zh));
    }
}
