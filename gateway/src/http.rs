//! HTTP: GraphQL at `/graphql` (POST, and GET for queries only), GraphiQL at
//! `/`, `/healthz` and `/readyz`. A bearer token, when sent, must be valid:
//! a bad one is refused with 401 before anything runs.

use crate::identity::Identity;
use crate::schema::{DuikouSchema, build_schema};
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
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
}

/// The gateway's routes over a schema.
pub fn router(schema: DuikouSchema, identity: Option<Identity>) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphql).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(Gateway { schema, identity })
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

async fn graphql(
    State(gw): State<Gateway>,
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
            Ok(principal) => request = request.data(principal),
            Err(e) => return error(StatusCode::UNAUTHORIZED, e.code.as_str(), &e.message),
        }
    }
    GraphQLResponse::from(gw.schema.execute(request).await).into_response()
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
    listener: TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let app = router(
        build_schema(Some(bus), Some(identity.clone())),
        Some(identity),
    );
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gateway stopped with an error");
        }
    });
    Ok((addr, handle))
}
