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
pub mod keyed;
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

/// A fingerprint of these contracts (a hash of this crate's sources, made
/// when it is built): binaries built from different contracts tell their
/// cached views apart by it.
pub const CONTRACTS: &str = env!("DUIKOU_CONTRACTS_FINGERPRINT");

#[cfg(test)]
mod tests {
    #[test]
    fn the_contracts_have_a_fingerprint() {
        assert_eq!(super::CONTRACTS.len(), 12);
        assert!(
            super::CONTRACTS
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
