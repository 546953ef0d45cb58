//! Who is asking: the principal the gateway authenticated, passed to the
//! services with every request that needs it, and the rules on what each
//! role may see.

use crate::ids::{AccountId, AgencyId};
use crate::region::RegionCode;
use serde::{Deserialize, Serialize};

/// A role, as in the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// A registered traveler.
    Traveler,
    /// A travel agency's API client or staff.
    Agency,
    /// Manages one region and everything under it.
    RegionAdmin,
    /// Runs the platform.
    PlatformAdmin,
}

impl Role {
    /// The name in tokens and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Traveler => "TRAVELER",
            Role::Agency => "AGENCY",
            Role::RegionAdmin => "REGION_ADMIN",
            Role::PlatformAdmin => "PLATFORM_ADMIN",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Traveler,
            Role::Agency,
            Role::RegionAdmin,
            Role::PlatformAdmin,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The account (for an API client: the client's account).
    pub account_id: AccountId,
    /// What it may do.
    pub role: Role,
    /// Where the traveler or agency is from (the sponsor side of bookings).
    pub home_region: Option<RegionCode>,
    /// The agency, for AGENCY.
    pub agency_id: Option<AgencyId>,
    /// The region administered, for REGION_ADMIN.
    pub region_scope: Option<RegionCode>,
}

/// Who made a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booker {
    /// The account that booked.
    pub account_id: AccountId,
    /// The agency it booked for, if any.
    pub agency_id: Option<AgencyId>,
}

impl Principal {
    /// The platform itself, as a platform admin with the nil account: what
    /// internal callers (the demo seed, benchmarks' seeding) act as. Every
    /// catalogue and partnership change names its principal; there is no
    /// way past the checks by leaving it out.
    pub fn platform() -> Principal {
        Principal {
            account_id: AccountId(uuid::Uuid::nil()),
            role: Role::PlatformAdmin,
            home_region: None,
            agency_id: None,
            region_scope: None,
        }
    }

    /// True for a platform admin.
    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// Refuses a principal who does not book (admins administer): bookings
    /// are made by travelers and agencies.
    pub fn may_book(&self) -> Result<(), crate::AppError> {
        match self.role {
            Role::Traveler | Role::Agency => Ok(()),
            _ => Err(crate::AppError::new(
                crate::ErrorCode::Forbidden,
                "bookings are made by travelers and agencies",
            )),
        }
    }

    /// Whether this principal administers some region (a region admin or a
    /// platform admin): who may ever change the catalogue, certify or
    /// record partnerships, before asking which region.
    pub fn may_administer(&self) -> bool {
        matches!(self.role, Role::RegionAdmin | Role::PlatformAdmin)
    }

    /// True when this principal administers `region`: a platform admin, or
    /// a region admin whose region contains it.
    pub fn administers(&self, region: RegionCode) -> bool {
        match self.role {
            Role::PlatformAdmin => true,
            Role::RegionAdmin => self.region_scope.is_some_and(|s| s.contains(region)),
            _ => false,
        }
    }

    /// True when this principal booked it: a booking made for an agency is
    /// the agency's (whichever of its staff or API clients made it, and no
    /// longer theirs once they leave it), any other is its booker's own
    /// (whatever role the account holds now).
    pub fn booked(&self, booker: &Booker) -> bool {
        match booker.agency_id {
            Some(theirs) => self.role == Role::Agency && self.agency_id == Some(theirs),
            None => booker.account_id == self.account_id,
        }
    }

    /// True when this principal booked it ([`Principal::booked`]) or is a
    /// platform admin: who may pay and cancel.
    pub fn owns(&self, booker: Option<&Booker>) -> bool {
        self.is_platform_admin() || booker.is_some_and(|b| self.booked(b))
    }

    /// Who may read a booking: its owner, and the admins of its listing's region.
    pub fn may_see(&self, booker: Option<&Booker>, listing_region: Option<RegionCode>) -> bool {
        self.owns(booker) || listing_region.is_some_and(|r| self.administers(r))
    }

    /// The booker a booking made by this principal records.
    pub fn as_booker(&self) -> Booker {
        Booker {
            account_id: self.account_id,
            agency_id: self.agency_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            account_id: AccountId::new(),
            role,
            home_region: None,
            agency_id: None,
            region_scope: None,
        }
    }

    #[test]
    fn each_role_sees_only_what_it_should() {
        let traveler = principal(Role::Traveler);
        let other = principal(Role::Traveler);
        let agency_id = AgencyId::new();
        let agency = Principal {
            agency_id: Some(agency_id),
            ..principal(Role::Agency)
        };
        let colleague = Principal {
            agency_id: Some(agency_id),
            ..principal(Role::Agency)
        };
        let chifeng = Principal {
            region_scope: RegionCode::parse("150400").ok(),
            ..principal(Role::RegionAdmin)
        };
        let aohan = RegionCode::parse("150430").ok();
        let haidian = RegionCode::parse("110108").ok();

        let own = traveler.as_booker();
        assert!(traveler.owns(Some(&own)));
        assert!(!other.owns(Some(&own)));
        assert!(
            !agency.owns(Some(&own)),
            "an agency does not own a traveler's booking"
        );
        let agency_booking = agency.as_booker();
        assert!(
            colleague.owns(Some(&agency_booking)),
            "the whole agency sees its bookings"
        );
        assert!(!traveler.owns(Some(&agency_booking)));
        assert!(chifeng.may_see(Some(&own), aohan));
        assert!(!chifeng.may_see(Some(&own), haidian));
        assert!(
            !chifeng.owns(Some(&own)),
            "a region admin reads, it does not cancel"
        );
        assert!(principal(Role::PlatformAdmin).owns(None));
        assert!(!traveler.owns(None));

        // Staff who leave the agency leave its bookings behind; a traveler
        // who joins one keeps their own.
        let left = Principal {
            account_id: colleague.account_id,
            ..principal(Role::Traveler)
        };
        let made_for_the_agency = colleague.as_booker();
        assert!(agency.owns(Some(&made_for_the_agency)));
        assert!(!left.owns(Some(&made_for_the_agency)));
        assert!(!left.may_see(Some(&made_for_the_agency), aohan));
        let joined = Principal {
            account_id: traveler.account_id,
            ..agency.clone()
        };
        assert!(joined.owns(Some(&own)));
        assert!(!agency.owns(Some(&own)));
    }
}
