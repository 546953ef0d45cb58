//! The gateway: Duikou's one public door. GraphQL over HTTP and WebSocket
//! (subscriptions) in front of the services, which it reaches only by RPC.

pub mod cache;
pub mod error;
pub mod guarded;
pub mod http;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod nesting;
pub mod nulls;
pub mod order;
pub mod push;
pub mod schema;
pub mod socket;

pub use http::{router, serve};
pub use schema::{DuikouSchema, build_schema};
