//! Payment: payment intents, the provider adapter and its sandbox, the
//! double-entry ledger and the public welfare fund.

pub mod domain;
pub mod messaging;
pub mod provider;
pub mod startup;
pub mod storage;

pub use startup::start;

/// This service's name on the bus and its database.
pub const SERVICE: &str = "payment";
