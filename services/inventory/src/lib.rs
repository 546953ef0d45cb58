//! Inventory: the catalogue (regions, hosts, homestays, room types, routes),
//! capacity and holds that never oversell, and certification.

pub mod domain;
pub mod messaging;
pub mod startup;
pub mod storage;

pub use startup::start;

/// This service's name on the bus and its database.
pub const SERVICE: &str = "inventory";
