//! Typed identifiers: a UUIDv7 each, so they sort by creation time and one
//! kind of id can never be passed where another is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid id")]
pub struct BadId(pub String);

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Uuid::parse_str(s).map(Self).map_err(|_| BadId(s.to_owned()))
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    )*};
}

id_type!(
    /// A booking.
    BookingId,
    /// A host: household, cooperative or village collective.
    HostId,
    /// A homestay (民宿).
    HomestayId,
    /// A room type of a homestay.
    RoomTypeId,
    /// A route (线路).
    RouteId,
    /// A departure (团期) of a route.
    DepartureId,
    /// A payment intent.
    PaymentId,
    /// A refund.
    RefundId,
    /// A partnership between two regions.
    PartnershipId,
    /// An agreement (框架协议) of a partnership.
    AgreementId,
    /// A travel agency.
    AgencyId,
    /// A user account.
    AccountId,
);

impl BookingId {
    /// How the public welfare fund names the booking: `DK-` and the first
    /// ten hex digits of the SHA-256 of its id. Its owner can find their
    /// donation in the public ledger; nobody else learns the booking.
    pub fn public_reference(&self) -> String {
        use sha2::{Digest, Sha256};
        format!(
            "DK-{}",
            &hex::encode(Sha256::digest(self.0.as_bytes()))[..10]
        )
    }
}
