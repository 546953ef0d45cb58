//! Partnership: sponsor↔beneficiary region pairs, agreements with yearly
//! targets, and the impact every booking feeds. It learns of bookings and
//! money only from events.

pub mod domain;
pub mod messaging;
pub mod report;
pub mod startup;
pub mod storage;

pub use startup::start;

/// This service's name on the bus and its database.
pub const SERVICE: &str = "partnership";
