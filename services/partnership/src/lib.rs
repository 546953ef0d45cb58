//! Partnership: sponsor↔beneficiary region pairs, agreements and the impact
//! every confirmed booking feeds. It learns of bookings only from events.

pub mod messaging;
pub mod startup;
pub mod storage;

pub use startup::start;

/// This service's name on the bus and its database.
pub const SERVICE: &str = "partnership";
