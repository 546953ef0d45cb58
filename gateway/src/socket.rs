//! What a WebSocket connection may do. The socket is for subscriptions:
//! queries and mutations go over HTTP, where every request is rate-limited
//! and checked (aliases, one password a request) before it runs — over the
//! socket they would skip all of that. And a connection lives no longer than
//! the access token it was opened with: a revoked client, a demoted admin or
//! a traveler whose token expired keeps no pushes by holding a socket open.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};
use std::sync::Arc;

/// Put in a WebSocket connection's data: its operations are subscriptions.
#[derive(Debug, Clone, Copy)]
pub struct OverWebSocket;

/// Refuses anything but subscriptions on a WebSocket connection.
pub struct SubscriptionsOnly;

impl ExtensionFactory for SubscriptionsOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SubscriptionsOnlyExtension)
    }
}

struct SubscriptionsOnlyExtension;

#[async_trait::async_trait]
impl Extension for SubscriptionsOnlyExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let on_socket = ctx.data_opt::<OverWebSocket>().is_some();
        if on_socket
            && doc
                .operations
                .iter()
                .any(|(_, op)| op.node.ty != OperationType::Subscription)
        {
            return Err(crate::error::refused(
                "over the WebSocket only subscriptions run; send queries and mutations over HTTP",
            ));
        }
        Ok(doc)
    }
}

/// The token a connection was opened with: whose, and what it says.
pub type Opened = Option<(shared::ids::AccountId, crate::identity::Token)>;

/// The close code a connection ends with when its token does (4401,
/// graphql-transport-ws's "Unauthorized"): the client reconnects with a
/// fresh token, where 1006 (no close frame) would look like a network fault.
pub const TOKEN_ENDED: u16 = 4401;

/// The close code a connection whose `connection_init` was refused (a bad
/// or expired token) ends with: 4403, "Forbidden", as graphql-transport-ws
/// recommends; async-graphql closes such a connection with 1002, which
/// clients read as a protocol error of their own.
pub const INIT_REFUSED: u16 = 4403;

/// `message` as the client gets it: the close that follows a refused
/// `connection_init` (`refused`) carries [`INIT_REFUSED`] and its reason.
pub fn outgoing(message: axum::extract::ws::Message, refused: bool) -> axum::extract::ws::Message {
    use axum::extract::ws::{CloseFrame, Message};
    match message {
        Message::Close(Some(frame)) if refused && frame.code == 1002 => {
            Message::Close(Some(CloseFrame {
                code: INIT_REFUSED,
                reason: frame.reason,
            }))
        }
        other => other,
    }
}

/// Resolves when the connection's token expires or is revoked (seen on
/// this gateway, checked every second), with the reason to close with:
/// never while no token was given (an anonymous connection sees only what
/// anyone may).
pub async fn token_ended(
    mut opened: tokio::sync::watch::Receiver<Opened>,
    identity: Option<crate::identity::Identity>,
) -> &'static str {
    let Ok(Some((account, token))) = opened.wait_for(Option::is_some).await.map(|o| *o) else {
        return std::future::pending().await;
    };
    let left = (token.expires - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let revoked = async {
        let Some(identity) = identity else {
            return std::future::pending().await;
        };
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        while !identity.is_revoked(account, token.generation) {
            every.tick().await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(left) => {
            tracing::debug!("a WebSocket's token expired; closing it");
            "the access token expired: reconnect with a fresh one (refreshToken)"
        }
        () = revoked => {
            tracing::info!(%account, "a WebSocket's token was revoked; closing it");
            "the access token was revoked: log in again, then reconnect"
        }
    }
}

/// The most subscriptions one connection may run at once.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// A connection's subscription slots (in its data): each running
/// subscription holds one until it ends.
#[derive(Clone)]
pub struct Slots(Arc<tokio::sync::Semaphore>);

impl Default for Slots {
    fn default() -> Self {
        Slots(Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIPTIONS)))
    }
}

impl Slots {
    /// A slot for one more subscription, or the refusal: a client opening
    /// subscriptions without end would grow the gateway's memory and wake
    /// every one of them on every booking event.
    pub fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit, async_graphql::Error> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            crate::error::gql(shared::AppError::new(
                shared::ErrorCode::RateLimited,
                format!(
                    "at most {MAX_SUBSCRIPTIONS} subscriptions on one connection; \
                     complete some, or use bookingsUpdated for a whole feed"
                ),
            ))
        })
    }
}
