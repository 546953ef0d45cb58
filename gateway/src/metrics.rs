//! `/metrics` in the Prometheus text format: HTTP requests by route and
//! status with their latencies, GraphQL errors by `extensions.code`, and
//! (recorded where RPCs are made, `shared::bus::call_within`) RPC calls by
//! service, method and outcome with their latencies.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

/// The process's recorder: installed once, shared by every gateway the
/// process runs (tests run several).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                // Shown from the start at 0: an alert on `increase()` sees
                // nothing of a counter's first step from absent to 1 (the
                // first reset or outage, often the only one, went unseen).
                // Not the services' own counters, which a gateway in a
                // process of its own never counts: a 0 there would mislead.
                for alarm in [
                    "duikou_revocation_reads_failed_total",
                    "duikou_catalogue_changes_total",
                    "duikou_redis_failures_total",
                    "duikou_redis_skipped_total",
                    "duikou_sqlite_connections_reset_total",
                ] {
                    metrics::counter!(alarm).absolute(0);
                }
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no metrics recorder; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Counts and times every HTTP request by its route and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only the methods Duikou answers are labels of their own: a client
    // inventing a method per request must not invent a series per request.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("duikou_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("duikou_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts a GraphQL error by its code.
pub fn graphql_error(code: &str) {
    metrics::counter!("duikou_graphql_errors_total", "code" => code.to_owned()).increment(1);
}
