//! Duikou's shared kernel: the contracts between the services (events, RPC
//! messages, money, regions, ids, error codes) and the messaging machinery
//! every service uses (bus, outbox, inbox, config, telemetry, the runtime).

pub mod auth;
pub mod bus;
pub mod config;
pub mod db;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ids;
pub mod money;
pub mod outbox;
pub mod policy;
pub mod region;
pub mod rpc;
pub mod rpcs;
pub mod runtime;
pub mod stay;
pub mod telemetry;
pub mod text;

pub use error::{AppError, ErrorCode};
