//! HTTP: GraphQL at `/graphql` (POST, and GET for queries only), GraphiQL at
//! `/`, `/healthz` and `/readyz`. A bearer token, when sent, must be valid:
//! a bad one is refused with 401 before anything runs.

use crate::identity::Identity;
use crate::limits::Limiter;
use crate::schema::{DuikouSchema, Lang, build_schema};
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use shared::bus::Bus;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest request body accepted.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
struct Gateway {
    schema: DuikouSchema,
    identity: Option<Identity>,
    limiter: Limiter,
}

/// The gateway's routes over a schema.
pub fn router(schema: DuikouSchema, identity: Option<Identity>, limiter: Limiter) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(Gateway {
            schema,
            identity,
            limiter,
        })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, axum::Json(body)).into_response();
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

/// Whether the request would run a mutation (refused over GET).
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false; // the executor reports the syntax error
    };
    match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op.node.ty == OperationType::Mutation,
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get(name)
            .is_some_and(|op| op.node.ty == OperationType::Mutation),
        (DocumentOperations::Multiple(ops), None) => {
            ops.values().any(|op| op.node.ty == OperationType::Mutation)
        }
    }
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
        return match GraphQLRequest::from_request(request, &()).await {
            Ok(q) => graphql(State(gw), ConnectInfo(peer), method, headers, q).await,
            Err(rejection) => rejection.into_response(),
        };
    }
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let identity = gw.identity.clone();
            GraphQLWebSocket::new(socket, gw.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    connection_principal(identity.as_ref(), &payload)
                })
                .serve()
        })
        .into_response()
}

/// The principal of a subscription connection, from `connection_init`'s
/// `Authorization` (or `authorization`, or `token`); none: anonymous.
fn connection_principal(
    identity: Option<&Identity>,
    payload: &serde_json::Value,
) -> async_graphql::Result<async_graphql::Data> {
    let mut data = async_graphql::Data::default();
    let token = ["Authorization", "authorization", "token"]
        .iter()
        .find_map(|k| payload.get(k).and_then(|v| v.as_str()))
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    if let Some(token) = token {
        let identity = identity.ok_or("no identity here")?;
        let principal = identity
            .verify(&token)
            .map_err(|e| async_graphql::Error::new(e.message))?;
        data.insert(principal);
    }
    Ok(data)
}

async fn graphql(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let mut request = request.into_inner();
    if method == Method::GET && is_mutation(&request) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_REQUEST",
            "mutations must be sent with POST",
        );
    }
    let mut who = format!("ip:{}", peer.ip());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    if let Some(token) = bearer {
        let Some(identity) = &gw.identity else {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "no identity here",
            );
        };
        match identity.verify(&token) {
            Ok(principal) => {
                who = format!("account:{}", principal.account_id);
                request = request.data(principal);
            }
            Err(e) => return error(StatusCode::UNAUTHORIZED, e.code.as_str(), &e.message),
        }
    }
    if let Some(lang) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(preferred_lang)
    {
        request = request.data(lang);
    }
    if let Err(wait) = gw.limiter.check(&who).await {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            &format!(
                "too many requests; try again in {} s",
                wait.as_secs().max(1)
            ),
        );
        if let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    GraphQLResponse::from(gw.schema.execute(request).await).into_response()
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
                .find_map(|p| p.trim().strip_prefix("q="))
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
    limiter: Limiter,
    listener: TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let push = crate::push::Push::start(&bus)
        .await
        .map_err(|e| std::io::Error::other(format!("subscribing to booking changes: {e}")))?;
    let app = router(
        build_schema(Some(bus), Some(identity.clone()), Some(push)),
        Some(identity),
        limiter,
    );
    let handle = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gateway stopped with an error");
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_language_we_have() {
        assert_eq!(preferred_lang("en-US,en;q=0.9"), Some(Lang::En));
        assert_eq!(preferred_lang("zh-CN,zh;q=0.9,en;q=0.8"), Some(Lang::Zh));
        assert_eq!(preferred_lang("fr-FR, en;q=0.5, zh;q=0.7"), Some(Lang::Zh));
        assert_eq!(preferred_lang("de, en;q=0"), None);
        assert_eq!(preferred_lang("*"), None);
    }
}
