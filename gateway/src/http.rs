//! HTTP: GraphQL at `/graphql` (POST, and GET for queries), GraphiQL at `/`,
//! `/healthz` and `/readyz`.

use crate::schema::{DuikouSchema, build_schema};
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQL;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use shared::bus::Bus;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest request body accepted.
const MAX_BODY: usize = 256 * 1024;

/// The gateway's routes over a schema.
pub fn router(schema: DuikouSchema) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route_service("/graphql", GraphQL::new(schema))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
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
    listener: TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let app = router(build_schema(Some(bus)));
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
