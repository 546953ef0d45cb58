//! graphql-transport-ws from the client's side: connect, init with a
//! token, send, and read the next message with a deadline.

use super::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(app: &TestApp) -> Socket {
    connect_to(&app.url).await
}

/// Connects to the gateway whose GraphQL endpoint is `url` (http://…).
pub async fn connect_to(url: &str) -> Socket {
    connect_speaking(url, "graphql-transport-ws").await
}

/// Connects to the gateway at `url` offering the subprotocol `protocol`.
pub async fn connect_speaking(url: &str, protocol: &str) -> Socket {
    upgrade(url, protocol).await.0
}

/// The socket and the gateway's answer to an upgrade offering `protocols`
/// (comma-separated).
pub async fn upgrade(
    url: &str,
    protocols: &str,
) -> (
    Socket,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let url = url.replace("http://", "ws://");
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().expect("header"));
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded")
}

pub async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .expect("sent");
}

/// The next JSON message, or None when the socket closed or nothing came
/// within 20 s. One deadline for the call: the gateway's pings (every 20 s
/// by default) are skipped without granting more time, else a push that
/// never comes would be waited for forever.
pub async fn next(ws: &mut Socket) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

pub async fn init(ws: &mut Socket, token: &str) -> Option<Value> {
    send(ws, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    next(ws).await
}

/// A connection authenticated with `token` (acknowledged) with one
/// subscription `id` running `query` with `variables`.
pub async fn subscribed(
    app: &TestApp,
    token: &str,
    id: &str,
    query: &str,
    variables: Value,
) -> Socket {
    let mut ws = connect(app).await;
    let ack = init(&mut ws, token).await;
    assert_eq!(
        ack.as_ref().map(|a| a["type"].clone()),
        Some(json!("connection_ack")),
        "{ack:?}"
    );
    send(
        &mut ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }),
    )
    .await;
    ws
}

/// The close code the server closes the socket with within `within`,
/// whatever else it sends meanwhile: 1006 when it closes without a close
/// frame, None when it does not close in time.
pub async fn closed_within(ws: &mut Socket, within: Duration) -> Option<u16> {
    close_within(ws, within).await.map(|(code, _)| code)
}

/// [`closed_within`], with the reason the close frame gave.
pub async fn close_within(ws: &mut Socket, within: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_))) => return Some((1006, String::new())),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}
