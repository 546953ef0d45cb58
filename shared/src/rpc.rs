//! Typed RPC over the bus: the gateway (or a test) asks a service and waits
//! for one reply, within a deadline.
//!
//! A request type names its service and method and its reply type; a service
//! answers through an [`RpcRouter`] that decodes the request, runs the handler
//! and encodes `Result<Reply, AppError>`.

use crate::error::{AppError, ErrorCode};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// The method every [`RpcRouter`] answers with `"pong"`: readiness.
pub const PING: &str = "ping";

/// A request one service answers.
pub trait Rpc: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The service that answers it, e.g. `inventory`.
    const SERVICE: &'static str;
    /// The method name, unique within the service.
    const METHOD: &'static str;
    /// What comes back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

type Route = Box<
    dyn Fn(serde_json::Value) -> BoxFuture<'static, Result<serde_json::Value, AppError>>
        + Send
        + Sync,
>;

/// What a service checks before it answers [`PING`]: its own dependencies.
type Readiness = Box<dyn Fn() -> BoxFuture<'static, Result<(), AppError>> + Send + Sync>;

/// How long a service's readiness check may take before it answers that it
/// is not ready: inside the gateway's own 2 s wait for the ping, so that
/// its probe reads "its database did not answer in time" rather than the
/// service as silent (the two were both 2 s).
const READINESS_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1_500);

/// The RPC methods one service serves.
pub struct RpcRouter {
    service: &'static str,
    routes: HashMap<&'static str, Route>,
    readiness: Option<Readiness>,
}

impl RpcRouter {
    /// An empty router for `service`.
    pub fn new(service: &'static str) -> Self {
        RpcRouter {
            service,
            routes: HashMap::new(),
            readiness: None,
        }
    }

    /// Answers [`PING`] only while `db` answers too: a service that has lost
    /// its database is not ready, though the bus still reaches it.
    pub fn ready_with(mut self, db: sea_orm::DatabaseConnection) -> Self {
        self.readiness = Some(Box::new(move || {
            let db = db.clone();
            Box::pin(async move {
                match tokio::time::timeout(READINESS_DEADLINE, db.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(AppError::new(
                        ErrorCode::ServiceUnavailable,
                        format!("its database is failing: {e}"),
                    )),
                    Err(_) => Err(AppError::new(
                        ErrorCode::ServiceUnavailable,
                        "its database did not answer in time",
                    )),
                }
            })
        }));
        self
    }

    /// The service this router answers for.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Adds the handler for request type `R`.
    pub fn route<R, F, Fut>(mut self, handler: F) -> Self
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, AppError>> + Send + 'static,
    {
        debug_assert_eq!(
            R::SERVICE,
            self.service,
            "{} routed on the wrong service",
            R::METHOD
        );
        let handler = Arc::new(handler);
        self.routes.insert(
            R::METHOD,
            Box::new(move |body| {
                let handler = handler.clone();
                Box::pin(async move {
                    let req: R = serde_json::from_value(body).map_err(|e| {
                        AppError::bad_input(format!("malformed {} request: {e}", R::METHOD))
                    })?;
                    let reply = handler(req).await?;
                    serde_json::to_value(reply).map_err(AppError::internal)
                })
            }),
        );
        self
    }

    /// Runs the handler for `method`; an unknown method is BAD_USER_INPUT.
    pub async fn dispatch(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AppError> {
        match self.routes.get(method) {
            // A panicking handler answers INTERNAL instead of leaving its
            // caller to its deadline and its delivery unacked.
            Some(route) => {
                use futures::FutureExt;
                std::panic::AssertUnwindSafe(route(body))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        tracing::error!(
                            service = self.service,
                            method,
                            panic = crate::error::panic_message(panic.as_ref()),
                            "an RPC handler panicked"
                        );
                        Err(AppError::internal("the service failed to answer"))
                    })
            }
            // Every service answers `ping`: readiness probes reach each one.
            None if method == PING => {
                if let Some(ready) = &self.readiness {
                    ready().await?;
                }
                Ok(serde_json::Value::String("pong".into()))
            }
            None => Err(AppError::new(
                ErrorCode::BadUserInput,
                format!("{} has no method `{method}`", self.service),
            )),
        }
    }
}
