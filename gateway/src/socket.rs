//! What a WebSocket connection may do. The socket is for subscriptions:
//! queries and mutations go over HTTP, where every request is rate-limited
//! and checked (aliases, one password a request) before it runs — over the
//! socket they would skip all of that. And a connection lives no longer than
//! the access token it was opened with: a revoked client, a demoted admin or
//! a traveler whose token expired keeps no pushes by holding a socket open.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};
use shared::ids::AccountId;
use std::sync::Arc;

/// Put in a WebSocket connection's data: its operations are subscriptions.
#[derive(Debug, Clone, Copy)]
pub struct OverWebSocket;

/// Refuses anything but subscriptions on a WebSocket connection, and a
/// subscription of more than one root field anywhere.
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
        // A subscription has one root field (GraphQL's "single root field"
        // rule): two would be two streams pushed as one. Written directly:
        // async-graphql starts no stream for one selected through a
        // fragment, and the subscription would complete with nothing said.
        if doc.operations.iter().any(|(_, op)| {
            let roots = &op.node.selection_set.node.items;
            op.node.ty == OperationType::Subscription
                && (roots.len() != 1
                    || !matches!(
                        roots[0].node,
                        async_graphql::parser::types::Selection::Field(_)
                    ))
        }) {
            return Err(crate::error::refused(
                "a subscription selects exactly one root field, written out (not through a \
                 fragment); subscribe once for each",
            ));
        }
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

/// The close code a connection ends with when its token does (expired or
/// revoked): 4403, "Forbidden", after which the `graphql-ws` client
/// reconnects (with `connectionParams` read again: a fresh token). Not
/// 4401 "Unauthorized", which that client takes as fatal and never
/// retries, leaving every subscription dead at the token's first expiry.
pub const TOKEN_ENDED: u16 = 4403;

/// Why a socket whose token expired is closed, or refused at
/// `connection_init`.
pub const TOKEN_EXPIRED: &str =
    "the access token expired: reconnect with a fresh one (refreshToken)";

/// The close code a connection whose `connection_init` was refused (a bad
/// or expired token) ends with: 4403, "Forbidden", as graphql-transport-ws
/// recommends; async-graphql closes such a connection with 1002, which
/// clients read as a protocol error of their own.
pub const INIT_REFUSED: u16 = 4403;

/// The close code of a connection that sent no `connection_init` within
/// [`INIT_WITHIN`]: 4408, graphql-transport-ws's "Connection
/// initialisation timeout".
pub const INIT_TIMEOUT: u16 = 4408;

/// The close code of every socket when the gateway stops (1001, "going
/// away"): the client reconnects, to another replica or this one started
/// again, and catches up with `updatedSince`.
pub const GOING_AWAY: u16 = 1001;
/// Its reason.
pub const STOPPING: &str = "the gateway is stopping: reconnect and catch up";

/// The close code of a connection that simply ended (RFC 6455's "normal
/// closure").
pub const NORMAL_CLOSE: u16 = 1000;

/// How long a new connection has to send `connection_init`.
pub const INIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The most subscription connections one gateway holds open: past it an
/// upgrade is 503 (a held socket costs memory whether it subscribes or not).
pub const MAX_SOCKETS: usize = 4096;

/// The largest message (and frame) a subscription connection takes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// The close code of a connection that sent a message over
/// [`MAX_MESSAGE`] (RFC 6455's "message too big").
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Its reason.
pub const TOO_BIG: &str = "a message on this socket is 16 KiB at most";

/// The close code of a connection that sent text that is not UTF-8 (RFC
/// 6455's "invalid frame payload data").
pub const INVALID_TEXT: u16 = 1007;

/// The close code of a connection whose frames broke the WebSocket
/// protocol.
pub const PROTOCOL_ERROR: u16 = 1002;

/// graphql-transport-ws's close of a connection that sent a message it
/// cannot read ("4400: <error>"; async-graphql sends 1002).
pub const INVALID_MESSAGE: u16 = 4400;
/// graphql-transport-ws's close of a subscribe before `connection_ack`
/// ("4401: Unauthorized"; async-graphql sends 1011).
pub const UNAUTHORIZED: u16 = 4401;
/// graphql-transport-ws's close of a subscribe whose id is running
/// already ("4409: Subscriber for <id> already exists"; async-graphql
/// replaced the running one).
pub const SUBSCRIBER_EXISTS: u16 = 4409;

/// What a connection's client did that decides how it is closed (a
/// message over the size limit; with graphql-transport-ws, a subscribe
/// under an id that is running or a message that is not the protocol's),
/// and which of async-graphql's messages the protocol does not send. Kept
/// as the messages pass, both ways, in the order async-graphql handles them.
#[derive(Default)]
pub struct Conduct {
    /// The connection speaks graphql-transport-ws (not the older
    /// subscriptions-transport-ws, which has no such codes).
    transport_ws: bool,
    ids: std::sync::Mutex<Ids>,
    /// The close the client's messages ended the connection with.
    ended: std::sync::Mutex<Option<(u16, String)>>,
    /// The code of the refusal of the client's `connection_init`.
    refusal: std::sync::Mutex<Option<String>>,
    /// When the client last sent anything (a pong included) that was read.
    heard: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The subscriptions of a connection, by id.
#[derive(Default)]
struct Ids {
    /// Running.
    running: std::collections::HashSet<String>,
    /// Completed by the client while running, each count a `complete`
    /// async-graphql answers with one of its own: graphql-transport-ws has
    /// none (the client knows), and a client that subscribed again under
    /// the id would read it as the end of the new subscription.
    echoes: std::collections::HashMap<String, usize>,
}

/// The part of a protocol message that says what it is about.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

/// graphql-transport-ws's messages from a client; async-graphql also takes
/// the older protocol's (`start`, `stop`, `connection_terminate`) on it.
const CLIENT_MESSAGES: [&str; 5] = ["connection_init", "subscribe", "complete", "ping", "pong"];

impl Conduct {
    /// For a connection speaking `protocol`.
    pub fn new(
        protocol: Option<async_graphql::http::WebSocketProtocols>,
    ) -> std::sync::Arc<Conduct> {
        std::sync::Arc::new(Conduct {
            transport_ws: protocol == Some(async_graphql::http::WebSocketProtocols::GraphQLWS),
            ..Conduct::default()
        })
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the connection with `code` and `reason` (the client's message
    /// goes no further, and nothing after it).
    fn end(&self, code: u16, reason: String) -> bool {
        *self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((code, reason));
        false
    }

    /// Whether the client's message `read` goes on to async-graphql: not a
    /// subscribe under a running id, nor (graphql-transport-ws) anything
    /// but one of the protocol's messages, a JSON object (async-graphql
    /// also reads the older protocol's, and an array whose first item is
    /// the type): the connection ends there. Text and binary frames alike,
    /// as async-graphql reads both. A frame that cannot be read ends it too,
    /// with its code.
    /// Notes that the client is there: something it sent was read.
    fn heard(&self) {
        *self
            .heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::time::Instant::now());
    }

    fn admit(&self, read: &Result<axum::extract::ws::Message, axum::Error>) -> bool {
        use axum::extract::ws::Message;
        self.heard();
        let bytes: &[u8] = match read {
            Err(e) => {
                let (code, reason) = unreadable(e);
                self.end(code, reason);
                // async-graphql's loop ends at the error.
                return true;
            }
            Ok(Message::Text(text)) if self.transport_ws => text.as_bytes(),
            Ok(Message::Binary(bytes)) if self.transport_ws => bytes,
            Ok(_) => return true,
        };
        // What is not JSON is async-graphql's to refuse (4400).
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return true;
        };
        let (kind, id) = match &message {
            serde_json::Value::Object(fields) => (fields.get("type"), fields.get("id")),
            _ => (None, None),
        };
        let Some(kind) = kind
            .and_then(|k| k.as_str())
            .filter(|k| CLIENT_MESSAGES.contains(k))
        else {
            return self.end(
                INVALID_MESSAGE,
                "Invalid message received: an object whose type is connection_init, \
                 subscribe, complete, ping or pong"
                    .to_owned(),
            );
        };
        let id = match id {
            None => return true,
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(_) => {
                return self.end(
                    INVALID_MESSAGE,
                    "Invalid message received: an id is a string".to_owned(),
                );
            }
        };
        let mut ids = self.ids();
        match kind {
            "subscribe" if !ids.running.insert(id.clone()) => {
                drop(ids);
                self.end(
                    SUBSCRIBER_EXISTS,
                    format!("Subscriber for {id} already exists"),
                )
            }
            "complete" => {
                if ids.running.remove(&id) {
                    *ids.echoes.entry(id).or_default() += 1;
                }
                true
            }
            _ => true,
        }
    }

    /// Whether the server's `message` goes to the client: nothing more of
    /// a subscription the client completed — what it still had on its way
    /// and async-graphql's `complete` answering the client's (everything of
    /// it is ahead of a new subscription under the id, on one channel). A
    /// subscription the server completes frees its id (before the client
    /// can learn of it).
    fn sends(&self, message: &axum::extract::ws::Message) -> bool {
        let axum::extract::ws::Message::Text(text) = message else {
            return true;
        };
        if !self.transport_ws {
            return true;
        }
        let mut ids = self.ids();
        if ids.echoes.is_empty() && !text.as_str().contains("\"complete\"") {
            return true;
        }
        let Ok(Probe { kind, id: Some(id) }) = serde_json::from_str::<Probe>(text.as_str()) else {
            return true;
        };
        if let Some(echoes) = ids.echoes.get_mut(&id) {
            if kind == "complete" {
                *echoes -= 1;
                if *echoes == 0 {
                    ids.echoes.remove(&id);
                }
            }
            return false;
        }
        if kind == "complete" {
            ids.running.remove(&id);
        }
        true
    }

    /// Records that the client's `connection_init` was refused with `e`
    /// (whose code the older protocol's `connection_error` carries).
    pub fn refuse(&self, e: &async_graphql::Error) {
        let code = e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .and_then(|code| match code {
                async_graphql::Value::String(code) => Some(code.clone()),
                _ => None,
            })
            .unwrap_or_else(|| shared::ErrorCode::BadUserInput.as_str().to_owned());
        *self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(code);
    }

    /// The code of the refusal of the client's `connection_init`, if it was
    /// refused.
    pub fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The close the connection ends with when the client's messages ended
    /// it (none when they simply stopped).
    pub fn close(&self) -> Option<(u16, String)> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The client's messages, as the socket reads them, past [`Conduct`]: an
/// error ends them (as it ends async-graphql's loop), and so does a
/// subscribe under a running id or another protocol's message.
pub fn incoming<S>(
    messages: S,
    conduct: std::sync::Arc<Conduct>,
) -> impl futures::Stream<Item = Result<axum::extract::ws::Message, axum::Error>>
where
    S: futures::Stream<Item = Result<axum::extract::ws::Message, axum::Error>>,
{
    use futures::StreamExt;
    messages.take_while(move |read| futures::future::ready(conduct.admit(read)))
}

/// The close of a connection whose frame could not be read: 1009 for one
/// over the size limit, 1007 for text that is not UTF-8, 1002 (a protocol
/// error) otherwise (a connection gone is past any close, sent or not).
fn unreadable(e: &axum::Error) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error;
    match std::error::Error::source(e).and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::Capacity(_)) => (MESSAGE_TOO_BIG, TOO_BIG.to_owned()),
        Some(Error::Utf8(_)) => (INVALID_TEXT, "a text message is UTF-8".to_owned()),
        _ => (
            PROTOCOL_ERROR,
            format!("the message could not be read: {e}"),
        ),
    }
}

/// A close frame's reason as it may be sent: a control frame carries at
/// most 125 bytes, two of them the code (RFC 6455 §5.5), so a longer
/// reason is cut — sent whole, the frame is malformed and clients see 1006
/// instead of the code — after its last whole word that fits (or at a
/// character boundary, for text without spaces), and ends with "…".
pub fn close_reason(reason: &str) -> String {
    const MOST: usize = 123;
    const MORE: &str = "…";
    if reason.len() <= MOST {
        return reason.to_owned();
    }
    let mut end = MOST - MORE.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &reason[..end];
    let kept = match kept.rfind(' ') {
        Some(space) if space > MOST / 2 => kept[..space].trim_end_matches([',', ';', ':']),
        _ => kept,
    };
    format!("{kept}{MORE}")
}

/// Resolves, with the reason to close with, once the client has sent
/// nothing — no message, no pong to the pings sent every `ping_every` —
/// for three of them: gone without a close (a phone off the network, a
/// NAT that forgot the flow), it would otherwise hold its slot, its
/// account's share of sockets and its subscriptions until its token
/// expired.
pub async fn silent(conduct: &Conduct, ping_every: std::time::Duration) -> String {
    let began = tokio::time::Instant::now();
    let patience = ping_every.saturating_mul(3);
    loop {
        tokio::time::sleep(ping_every).await;
        let heard = conduct
            .heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(began);
        if heard.elapsed() >= patience {
            tracing::debug!("a WebSocket answered no ping; closing it");
            return format!(
                "nothing heard for {} s, not even a pong: reconnect",
                patience.as_secs()
            );
        }
    }
}

/// How long a closing socket waits for its close frame to be taken.
pub const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves, with the reason to close with, when the connection has not
/// been initialised within [`INIT_WITHIN`]; never once it has, nor once its
/// `connection_init` was refused (the sender is dropped with the refusal,
/// whose own close — 4403 and why — must not race a 4408 here).
pub async fn init_overdue(mut initialised: tokio::sync::watch::Receiver<bool>) -> &'static str {
    let in_time = tokio::time::timeout(INIT_WITHIN, initialised.wait_for(|done| *done))
        .await
        .is_ok();
    if in_time {
        std::future::pending::<()>().await;
    }
    "Connection initialisation timeout"
}

/// `message` as the client gets it, if it gets it: the close that
/// follows a refused `connection_init` carries [`INIT_REFUSED`] and its
/// reason, every error carries `extensions.code`, as over HTTP
/// (async-graphql leaves request errors — syntax, validation, variables —
/// without one, and the older protocol's `connection_error` loses the
/// refusal's), and async-graphql's answer to a client's `complete` is not
/// sent (graphql-transport-ws has none).
pub fn outgoing(
    message: axum::extract::ws::Message,
    conduct: &Conduct,
) -> Option<axum::extract::ws::Message> {
    use axum::extract::ws::{CloseFrame, Message};
    if !conduct.sends(&message) {
        return None;
    }
    let refusal = conduct.refusal();
    let refused = refusal.is_some();
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: close_reason(reason).into(),
        }))
    };
    Some(match message {
        Message::Close(Some(frame)) if refused && frame.code == 1002 => {
            close(INIT_REFUSED, frame.reason.as_str())
        }
        // graphql-transport-ws's own codes where async-graphql sends the
        // generic ones.
        Message::Close(Some(frame)) if conduct.transport_ws && frame.code == 1002 => {
            close(INVALID_MESSAGE, frame.reason.as_str())
        }
        Message::Close(Some(frame)) if conduct.transport_ws && frame.code == 1011 => {
            close(UNAUTHORIZED, "Unauthorized")
        }
        Message::Close(Some(frame)) if frame.reason.len() > 123 => {
            Message::Close(Some(CloseFrame {
                code: frame.code,
                reason: close_reason(frame.reason.as_str()).into(),
            }))
        }
        Message::Text(text) if text.as_str().contains("\"message\"") => {
            let given = refusal.filter(|_| text.as_str().contains("\"connection_error\""));
            match with_codes(text.as_str(), given.as_deref()) {
                Some(coded) => Message::Text(coded.into()),
                None => Message::Text(text),
            }
        }
        other => other,
    })
}

/// A server message with a code given to each error that had none (`given`,
/// or the one its message and path say), the errors past the first
/// hundred counted in one more; None when there was nothing to change.
fn with_codes(text: &str, given: Option<&str>) -> Option<String> {
    let mut message: serde_json::Value = serde_json::from_str(text).ok()?;
    let payload = message.get_mut("payload")?;
    // `next`/`data`: { data, errors: [...] }; `error`: [...] (or one).
    let one_error = payload.get("message").is_some();
    // As over HTTP: the first hundred errors say what to mend.
    let mut added = false;
    if let Some(list) = error_list(payload).filter(|l| l.len() > crate::http::MAX_ERRORS) {
        let left_out = list.len() - crate::http::MAX_ERRORS;
        list.truncate(crate::http::MAX_ERRORS);
        list.push(serde_json::json!({ "message": crate::http::left_out_message(left_out) }));
        added = true;
    }
    let errors: Vec<&mut serde_json::Value> = if one_error {
        vec![payload]
    } else {
        error_list(payload)
            .map(|errors| errors.iter_mut().collect())
            .unwrap_or_default()
    };
    for error in errors {
        let Some(error) = error.as_object_mut() else {
            continue;
        };
        // Counted as over HTTP (`duikou_graphql_errors_total`), coded
        // already or not.
        if let Some(code) = error
            .get("extensions")
            .and_then(|x| x.get("code"))
            .and_then(|c| c.as_str())
        {
            crate::metrics::graphql_error(code);
            continue;
        }
        // Judged by async-graphql's own words, then said plainly.
        let text = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
        let has_path = error
            .get("path")
            .and_then(|p| p.as_array())
            .is_some_and(|p| !p.is_empty());
        let code = given.unwrap_or_else(|| crate::http::missing_code(text, has_path));
        crate::metrics::graphql_error(code);
        if let Some(explained) = crate::http::explained(text) {
            error.insert("message".to_owned(), explained.into());
        }
        match error
            .entry("extensions")
            .or_insert_with(|| serde_json::json!({}))
        {
            serde_json::Value::Object(x) => {
                x.insert("code".to_owned(), code.into());
            }
            other => *other = serde_json::json!({ "code": code }),
        }
        added = true;
    }
    added.then(|| message.to_string())
}

/// The errors of a `next` payload (`{ data, errors }`) or an `error` one
/// (a list).
fn error_list(payload: &mut serde_json::Value) -> Option<&mut Vec<serde_json::Value>> {
    match payload {
        serde_json::Value::Array(errors) => Some(errors),
        serde_json::Value::Object(o) => match o.get_mut("errors") {
            Some(serde_json::Value::Array(errors)) => Some(errors),
            _ => None,
        },
        _ => None,
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
            TOKEN_EXPIRED
        }
        () = revoked => {
            tracing::info!(%account, "a WebSocket's token was revoked; closing it");
            "the access token was revoked: log in again, then reconnect"
        }
    }
}

/// The most subscriptions one connection may run at once.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// The most sockets one account holds open on one gateway: a client needs
/// one or a few (a feed, a tab or two); past that, 4403.
pub const MAX_SOCKETS_PER_ACCOUNT: usize = 32;

/// The sockets each account holds open on this gateway.
#[derive(Clone, Default)]
pub struct PerAccount(Arc<std::sync::Mutex<std::collections::HashMap<AccountId, usize>>>);

/// One account's socket, counted while it is held (in the connection's
/// data, so it is dropped, and uncounted, when the connection ends).
pub struct Held {
    counts: PerAccount,
    account: AccountId,
}

impl PerAccount {
    /// Counts a socket for `account`, or refuses it past
    /// [`MAX_SOCKETS_PER_ACCOUNT`].
    pub fn hold(&self, account: AccountId) -> Result<Held, async_graphql::Error> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(account).or_insert(0);
        if *held >= MAX_SOCKETS_PER_ACCOUNT {
            return Err(crate::error::gql(shared::AppError::new(
                shared::ErrorCode::RateLimited,
                format!(
                    "at most {MAX_SOCKETS_PER_ACCOUNT} sockets an account: close some (one \
                     socket carries up to {MAX_SUBSCRIPTIONS} subscriptions)"
                ),
            )));
        }
        *held += 1;
        Ok(Held {
            counts: self.clone(),
            account,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&self.account) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.account);
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::{Conduct, close_reason};
    use axum::extract::ws::Message;

    fn text(message: serde_json::Value) -> Message {
        Message::Text(message.to_string().into())
    }

    /// Everything of a subscription the client completed stays back —
    /// what was on its way, and async-graphql's `complete` — and nothing
    /// of the one it opened again under the id does.
    #[test]
    fn a_completed_subscription_sends_nothing_more_and_its_id_is_free_at_once() {
        let conduct = Conduct::new(Some(async_graphql::http::WebSocketProtocols::GraphQLWS));
        let client = |m: serde_json::Value| conduct.admit(&Ok(text(m)));
        let next = || text(serde_json::json!({ "id": "1", "type": "next", "payload": {} }));
        let complete = || text(serde_json::json!({ "id": "1", "type": "complete" }));
        let subscribe = serde_json::json!({ "id": "1", "type": "subscribe", "payload": {} });
        assert!(client(subscribe.clone()));
        assert!(conduct.sends(&next()));
        assert!(client(serde_json::json!({ "id": "1", "type": "complete" })));
        assert!(client(subscribe.clone()), "the id is free again");
        assert!(!conduct.sends(&next()), "the first one's push");
        assert!(!conduct.sends(&complete()), "async-graphql's answer");
        assert!(conduct.sends(&next()), "the second one's push");
        assert!(conduct.sends(&complete()), "the second one's end");
        assert!(client(subscribe.clone()), "free once the server ended it");
        assert!(!client(subscribe), "but not while it runs");
        assert_eq!(conduct.close().map(|(code, _)| code), Some(4409));
    }

    #[test]
    fn only_the_protocols_messages_as_objects_go_on() {
        for message in [
            serde_json::json!(["subscribe", "1", { "query": "subscription { x }" }]),
            serde_json::json!({ "id": "1", "type": "start", "payload": {} }),
            serde_json::json!({ "type": "connection_terminate" }),
            serde_json::json!({ "id": 1, "type": "subscribe", "payload": {} }),
            serde_json::json!({ "type": 5 }),
        ] {
            let conduct = Conduct::new(Some(async_graphql::http::WebSocketProtocols::GraphQLWS));
            assert!(!conduct.admit(&Ok(text(message.clone()))), "{message}");
            assert_eq!(
                conduct.close().map(|(code, _)| code),
                Some(4400),
                "{message}"
            );
        }
    }

    /// A refused `connection_init` drops the sender: the refusal's own
    /// close (4403 and why) is the answer, never a 4408 racing it.
    #[tokio::test]
    async fn a_refused_init_is_not_called_overdue() {
        let (sender, initialised) = tokio::sync::watch::channel(false);
        drop(sender);
        let raced = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            super::init_overdue(initialised),
        )
        .await;
        assert!(raced.is_err(), "said overdue at once: {raced:?}");
    }

    #[test]
    fn a_close_reason_fits_a_control_frame_and_stays_text() {
        let long = "令牌已撤销".repeat(20);
        let cut = close_reason(&long);
        let kept = cut.strip_suffix('…').expect("marked as cut");
        assert!(cut.len() <= 123 && long.starts_with(kept), "{cut}");
        assert_eq!(close_reason("expired"), "expired");
        // Words are not cut in the middle (it read "… log in agai").
        let words = "the access token is not valid (it expired, its session ended, the \
                     password changed, or its API client was revoked); log in again";
        let cut = close_reason(words);
        assert!(cut.len() <= 123, "{cut}");
        let kept = cut.strip_suffix('…').expect("marked as cut");
        assert!(words[kept.len()..].starts_with(' '), "{cut}");
    }
}
