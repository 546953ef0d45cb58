//! Booking: bookings and the saga that takes each one from request to a
//! terminal state (DESIGN.md, "Booking saga").

pub mod domain;
pub mod messaging;
pub mod startup;
pub mod storage;

pub use startup::start;

/// This service's name on the bus and its database.
pub const SERVICE: &str = "booking";
