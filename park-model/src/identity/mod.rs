//! Who may do what: roles, the permissions each role carries, scopes (operator → park →
//! building, and enterprise within a park), grants of a role at a scope, and the
//! [`Principal`] a request acts as.
//!
//! Pure: the APIs of the edge and the hub load a principal from a session or a token and ask
//! it [`Principal::can`]; nothing here reads a clock, a file or a socket. Software
//! permissions are separate from door access groups, which decide who opens a door with a
//! card.
//!
//! - [`password`]: Argon2id verifiers and the password policy.
//! - [`totp`]: time-based one-time passwords (RFC 6238) and recovery codes.
//! - [`secret`]: random tokens and their stored hashes, keyed digests of card numbers,
//!   AES-256-GCM sealing of personal data, masking for display.
//! - [`lockout`]: the growing delay after repeated failed logins.
//! - [`web`]: the checks every browser-facing API makes (Host, Origin, cookies, CSRF).

pub mod lockout;
pub mod password;
pub mod secret;
pub mod totp;
pub mod web;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role a user is granted at a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    OperatorAdmin,
    ParkManager,
    Finance,
    Leasing,
    SecurityOfficer,
    FacilityEngineer,
    Inspector,
    EnterpriseAdmin,
    EnterpriseUser,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::OperatorAdmin,
        Role::ParkManager,
        Role::Finance,
        Role::Leasing,
        Role::SecurityOfficer,
        Role::FacilityEngineer,
        Role::Inspector,
        Role::EnterpriseAdmin,
        Role::EnterpriseUser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::OperatorAdmin => "operator_admin",
            Role::ParkManager => "park_manager",
            Role::Finance => "finance",
            Role::Leasing => "leasing",
            Role::SecurityOfficer => "security_officer",
            Role::FacilityEngineer => "facility_engineer",
            Role::Inspector => "inspector",
            Role::EnterpriseAdmin => "enterprise_admin",
            Role::EnterpriseUser => "enterprise_user",
        }
    }

    /// What the role may do wherever it is granted.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        let list: &[Permission] = match self {
            Role::OperatorAdmin => &Permission::ALL,
            Role::ParkManager => &[
                TelemetryRead,
                EventsRead,
                CredentialsEdit,
                PlatesReview,
                UsersManage,
                PersonalRead,
                AuditRead,
                EnterpriseRead,
                MasterDataEdit,
                LeasingManage,
                // So that the park's manager can make an enterprise's admin, who holds it.
                EnterpriseBilling,
            ],
            Role::Finance => &[TelemetryRead, EventsRead, EnterpriseRead, BillingManage],
            Role::Leasing => &[TelemetryRead, EnterpriseRead, LeasingManage],
            Role::SecurityOfficer => &[
                TelemetryRead,
                EventsRead,
                EnterpriseRead,
                DoorsOpen,
                CredentialsEdit,
                PlatesReview,
                AlarmsAct,
                AuditRead,
            ],
            Role::FacilityEngineer => &[
                TelemetryRead,
                EventsRead,
                PointsWrite,
                DoorsOpen,
                PlatesReview,
                AlarmsAct,
                RulesEdit,
            ],
            Role::Inspector => &[TelemetryRead],
            Role::EnterpriseAdmin => {
                &[EnterpriseRead, UsersManage, PersonalRead, EnterpriseBilling]
            }
            Role::EnterpriseUser => &[EnterpriseRead],
        };
        PermissionSet::of(list)
    }

    /// Whether every account holding the role must log in with a second factor.
    pub fn requires_second_factor(self) -> bool {
        matches!(self, Role::OperatorAdmin | Role::Finance)
    }

    /// Whether the role may be granted at `scope`: enterprise roles only at an enterprise,
    /// every other role only at the operator, a park or a building.
    pub fn fits(self, scope: &Scope) -> bool {
        let enterprise_role = matches!(self, Role::EnterpriseAdmin | Role::EnterpriseUser);
        enterprise_role == matches!(scope, Scope::Enterprise { .. })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// What a route needs. Every route of both APIs names one of these, or none when it is
/// public (`/health`, `/ready`, logging in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Devices, points, history, live values, alarms and rules as they are, doors and lots
    /// as they are, the store and the uplink's state, metrics.
    #[serde(rename = "telemetry.read")]
    TelemetryRead,
    /// Access and parking logs and the cars inside.
    #[serde(rename = "events.read")]
    EventsRead,
    #[serde(rename = "points.write")]
    PointsWrite,
    #[serde(rename = "doors.open")]
    DoorsOpen,
    /// Credentials and parking passes.
    #[serde(rename = "credentials.edit")]
    CredentialsEdit,
    #[serde(rename = "plates.review")]
    PlatesReview,
    /// Acknowledge, shelve, unshelve and comment.
    #[serde(rename = "alarms.act")]
    AlarmsAct,
    #[serde(rename = "rules.edit")]
    RulesEdit,
    /// Users, their grants and departments.
    #[serde(rename = "users.manage")]
    UsersManage,
    /// Phone and ID numbers unmasked.
    #[serde(rename = "personal.read")]
    PersonalRead,
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Enrollment tokens, revocations, the edges' certificates.
    #[serde(rename = "edges.manage")]
    EdgesManage,
    /// An enterprise's own people, passes, bills and requests.
    #[serde(rename = "enterprise.read")]
    EnterpriseRead,
    /// Bill runs, payments and refunds: finance's own, so that nobody without it (a park
    /// manager) can make someone finance.
    #[serde(rename = "billing.manage")]
    BillingManage,
    /// The park's master data: enterprises, people, access groups and the rest of the
    /// directory (credentials' status is `credentials.edit`).
    #[serde(rename = "master.edit")]
    MasterDataEdit,
    /// Leads, lease contracts and their review: the leasing team's.
    #[serde(rename = "leasing.manage")]
    LeasingManage,
    /// An enterprise's own bills paid online and its invoice requests.
    #[serde(rename = "enterprise.billing")]
    EnterpriseBilling,
}

impl Permission {
    pub const ALL: [Permission; 17] = [
        Permission::TelemetryRead,
        Permission::EventsRead,
        Permission::PointsWrite,
        Permission::DoorsOpen,
        Permission::CredentialsEdit,
        Permission::PlatesReview,
        Permission::AlarmsAct,
        Permission::RulesEdit,
        Permission::UsersManage,
        Permission::PersonalRead,
        Permission::AuditRead,
        Permission::EdgesManage,
        Permission::EnterpriseRead,
        Permission::BillingManage,
        Permission::MasterDataEdit,
        Permission::LeasingManage,
        Permission::EnterpriseBilling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TelemetryRead => "telemetry.read",
            Permission::EventsRead => "events.read",
            Permission::PointsWrite => "points.write",
            Permission::DoorsOpen => "doors.open",
            Permission::CredentialsEdit => "credentials.edit",
            Permission::PlatesReview => "plates.review",
            Permission::AlarmsAct => "alarms.act",
            Permission::RulesEdit => "rules.edit",
            Permission::UsersManage => "users.manage",
            Permission::PersonalRead => "personal.read",
            Permission::AuditRead => "audit.read",
            Permission::EdgesManage => "edges.manage",
            Permission::EnterpriseRead => "enterprise.read",
            Permission::BillingManage => "billing.manage",
            Permission::MasterDataEdit => "master.edit",
            Permission::LeasingManage => "leasing.manage",
            Permission::EnterpriseBilling => "enterprise.billing",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownPermission(s.to_string()))
    }
}

/// A set of permissions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);

    pub fn of(list: &[Permission]) -> Self {
        PermissionSet(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn all() -> Self {
        Self::of(&Permission::ALL)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_subset_of(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn union(self, other: PermissionSet) -> Self {
        PermissionSet(self.0 | other.0)
    }

    pub fn intersection(self, other: PermissionSet) -> Self {
        PermissionSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// Parses names such as `["telemetry.read", "doors.open"]`.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, IdentityError> {
        let list = names
            .iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<Permission>, _>>()?;
        Ok(Self::of(&list))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }
}

/// Where a grant applies. A scope reaches everything below it: the operator every park, a
/// park its buildings and its enterprises. A building does not reach the enterprises
/// renting in it, and an enterprise reaches only itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Operator,
    Park { park: String },
    Building { park: String, building: String },
    Enterprise { park: String, enterprise: String },
}

impl Scope {
    pub fn park(park: &str) -> Scope {
        Scope::Park { park: park.into() }
    }

    pub fn building(park: &str, building: &str) -> Scope {
        Scope::Building {
            park: park.into(),
            building: building.into(),
        }
    }

    pub fn enterprise(park: &str, enterprise: &str) -> Scope {
        Scope::Enterprise {
            park: park.into(),
            enterprise: enterprise.into(),
        }
    }

    /// Whether a grant at `self` applies at `target`.
    pub fn covers(&self, target: &Scope) -> bool {
        match (self, target) {
            (Scope::Operator, _) => true,
            (Scope::Park { park }, Scope::Park { park: p })
            | (Scope::Park { park }, Scope::Building { park: p, .. })
            | (Scope::Park { park }, Scope::Enterprise { park: p, .. }) => park == p,
            (
                Scope::Building { park, building },
                Scope::Building {
                    park: p,
                    building: b,
                },
            ) => park == p && building == b,
            (
                Scope::Enterprise { park, enterprise },
                Scope::Enterprise {
                    park: p,
                    enterprise: e,
                },
            ) => park == p && enterprise == e,
            _ => false,
        }
    }

    /// The park the scope lies in, if any.
    pub fn park_id(&self) -> Option<&str> {
        match self {
            Scope::Operator => None,
            Scope::Park { park }
            | Scope::Building { park, .. }
            | Scope::Enterprise { park, .. } => Some(park),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Operator => f.write_str("operator"),
            Scope::Park { park } => write!(f, "park:{park}"),
            Scope::Building { park, building } => write!(f, "building:{park}/{building}"),
            Scope::Enterprise { park, enterprise } => write!(f, "enterprise:{park}/{enterprise}"),
        }
    }
}

/// Identifiers inside scopes: the same rule as the park's stable keys.
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for Scope {
    type Err = IdentityError;
    /// `operator`, `park:P`, `building:P/B` or `enterprise:P/E`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadScope(s.to_string());
        if s == "operator" {
            return Ok(Scope::Operator);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let pair = || -> Result<(String, String), IdentityError> {
            let (a, b) = rest.split_once('/').ok_or_else(bad)?;
            if valid_id(a) && valid_id(b) {
                Ok((a.into(), b.into()))
            } else {
                Err(bad())
            }
        };
        match kind {
            "park" if valid_id(rest) => Ok(Scope::Park { park: rest.into() }),
            "building" => pair().map(|(park, building)| Scope::Building { park, building }),
            "enterprise" => pair().map(|(park, enterprise)| Scope::Enterprise { park, enterprise }),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A role at a scope; written `ROLE@SCOPE` in JSON and on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

impl Grant {
    pub fn new(role: Role, scope: Scope) -> Result<Grant, IdentityError> {
        if !role.fits(&scope) {
            return Err(IdentityError::RoleDoesNotFit { role, scope });
        }
        Ok(Grant { role, scope })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.role, self.scope)
    }
}

impl Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Grant {
    type Err = IdentityError;
    /// `ROLE@SCOPE`, such as `facility_engineer@building:demo-park/b1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (role, scope) = s
            .split_once('@')
            .ok_or_else(|| IdentityError::BadGrant(s.to_string()))?;
        Grant::new(role.parse()?, scope.parse()?)
    }
}

/// The grants of an account with a second factor still to be set up act as nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// Not needed by the account's roles, or given at login.
    Satisfied,
    /// The account's roles need one and it has none yet: only enrolling one is allowed.
    EnrollmentRequired,
}

/// Who a request acts as: a user (through a session or a token) with the grants they hold
/// now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub grants: Vec<Grant>,
    /// An API token's subset of the owner's permissions; `None` for a session.
    pub restrict: Option<PermissionSet>,
    pub second_factor: SecondFactor,
}

impl Principal {
    /// The permissions that apply at `target`.
    pub fn permissions_at(&self, target: &Scope) -> PermissionSet {
        if self.second_factor == SecondFactor::EnrollmentRequired {
            return PermissionSet::EMPTY;
        }
        let held = self
            .grants
            .iter()
            .filter(|g| g.scope.covers(target))
            .fold(PermissionSet::EMPTY, |acc, g| {
                acc.union(g.role.permissions())
            });
        match self.restrict {
            Some(r) => held.intersection(r),
            None => held,
        }
    }

    pub fn can(&self, permission: Permission, target: &Scope) -> bool {
        self.permissions_at(target).contains(permission)
    }

    /// The permissions held anywhere (for tokens: the most a token may carry).
    pub fn permissions_anywhere(&self) -> PermissionSet {
        let held = self.grants.iter().fold(PermissionSet::EMPTY, |acc, g| {
            acc.union(g.role.permissions())
        });
        match self.restrict {
            Some(r) => held.intersection(r),
            None => held,
        }
    }

    /// Whether some grant gives `permission` anywhere in `park` (the park itself, one of
    /// its buildings or enterprises); for lists that are then filtered row by row.
    pub fn can_somewhere_in(&self, permission: Permission, park: &str) -> bool {
        if self.second_factor == SecondFactor::EnrollmentRequired {
            return false;
        }
        if self.restrict.is_some_and(|r| !r.contains(permission)) {
            return false;
        }
        self.grants.iter().any(|g| {
            g.role.permissions().contains(permission)
                && (g.scope == Scope::Operator || g.scope.park_id() == Some(park))
        })
    }

    /// Whether this user may give `grant` to someone: they manage users at a scope that
    /// covers the grant's, and hold there every permission the granted role carries (so
    /// nobody hands out more than they have).
    pub fn may_grant(&self, grant: &Grant) -> bool {
        let here = self.permissions_at(&grant.scope);
        here.contains(Permission::UsersManage) && grant.role.permissions().is_subset_of(here)
    }

    /// Whether this user may change an account that holds `grants` (disable it, reset its
    /// password, change its grants): they could have granted every one of them.
    pub fn may_manage(&self, grants: &[Grant]) -> bool {
        grants.iter().all(|g| self.may_grant(g))
    }
}

/// Whether any of `grants` needs a second factor.
pub fn second_factor_required(grants: &[Grant]) -> bool {
    grants.iter().any(|g| g.role.requires_second_factor())
}

/// What a route of an API requires of its caller. Each API declares one for every route
/// in a single table; a route missing from the table is refused to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone, logged in or not (`/health`, `/ready`, logging in).
    Public,
    /// Any logged-in caller, even one whose account must still set up a second factor
    /// (who am I, log out, set up TOTP).
    Session,
    /// Any logged-in caller with no second factor outstanding (their own tokens and
    /// password).
    User,
    /// A caller holding the permission at the route's scope.
    Allowed(Permission),
}

impl Access {
    /// Whether `principal` (or nobody) may use a route with this requirement at `scope`.
    pub fn allows(self, principal: Option<&Principal>, scope: &Scope) -> bool {
        match (self, principal) {
            (Access::Public, _) => true,
            (_, None) => false,
            (Access::Session, Some(_)) => true,
            (Access::User, Some(p)) => p.second_factor == SecondFactor::Satisfied,
            (Access::Allowed(perm), Some(p)) => p.can(perm, scope),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Public => f.write_str("public"),
            Access::Session => f.write_str("session"),
            Access::User => f.write_str("user"),
            Access::Allowed(p) => write!(f, "{p}"),
        }
    }
}

/// An account as the hub sends it to the edge of a building where it holds a role: enough
/// to log in there with the hub unreachable, and nothing more (no password, no personal
/// data, only the grants that reach the building).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeAccount {
    pub id: String,
    pub username: String,
    pub display_name: String,
    /// The Argon2id verifier (see [`password`]).
    pub verifier: String,
    /// The TOTP secret in base32, when the account has a second factor.
    pub totp_secret: Option<String>,
    /// SHA-256 of each unused recovery code.
    pub recovery_hashes: Vec<String>,
    pub grants: Vec<Grant>,
    /// Counts "log out everywhere" and password changes: a change ends the account's
    /// sessions at the edge.
    pub epoch: i64,
}

/// The accounts of one building, pushed by the hub whenever they change and on every
/// connection. `generation` only grows; an edge ignores a push older than the one it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountsPush {
    pub generation: u64,
    pub accounts: Vec<EdgeAccount>,
}

impl AccountsPush {
    /// The most accounts one push may carry, and the longest field, so that a push stays
    /// well inside one sync frame and a bad one is refused whole.
    pub const MAX_ACCOUNTS: usize = 5_000;

    /// Checks the push's bounds and every verifier's form.
    pub fn validate(&self) -> Result<(), String> {
        if self.accounts.len() > Self::MAX_ACCOUNTS {
            return Err(format!(
                "{} accounts, more than {}",
                self.accounts.len(),
                Self::MAX_ACCOUNTS
            ));
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.accounts {
            if !valid_username(&a.username) {
                return Err(format!("account {:?}: a bad username", a.id));
            }
            if !names.insert(a.username.to_lowercase()) {
                return Err(format!("username {:?} twice", a.username));
            }
            if a.id.is_empty() || a.id.len() > 64 || a.display_name.len() > 200 {
                return Err(format!("account {:?}: a field too long or empty", a.id));
            }
            if a.grants.is_empty() || a.grants.len() > 64 || a.recovery_hashes.len() > 32 {
                return Err(format!(
                    "account {:?}: bad grant or code counts",
                    a.username
                ));
            }
            if a.verifier.len() > 200 || !a.verifier.starts_with("$argon2id$") {
                return Err(format!(
                    "account {:?}: not an Argon2id verifier",
                    a.username
                ));
            }
            if let Some(t) = &a.totp_secret
                && totp::secret_from_text(t).is_none_or(|s| s.len() < 10 || s.len() > 64)
            {
                return Err(format!("account {:?}: a bad TOTP secret", a.username));
            }
        }
        Ok(())
    }
}

/// Usernames: 2 to 64 characters of letters, digits, `.`, `_`, `-` and `@`.
pub fn valid_username(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{0:?} is not a role (one of operator_admin, park_manager, finance, security_officer, facility_engineer, inspector, enterprise_admin, enterprise_user)"
    )]
    UnknownRole(String),
    #[error("{0:?} is not a permission")]
    UnknownPermission(String),
    #[error("{0:?} is not a scope (operator, park:P, building:P/B or enterprise:P/E)")]
    BadScope(String),
    #[error("{0:?} is not a grant (ROLE@SCOPE)")]
    BadGrant(String),
    #[error(
        "{role} cannot be granted at {scope}: enterprise roles go with an enterprise, the others with the operator, a park or a building"
    )]
    RoleDoesNotFit { role: Role, scope: Scope },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: &[&str]) -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "someone".into(),
            grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
            restrict: None,
            second_factor: SecondFactor::Satisfied,
        }
    }

    #[test]
    fn a_park_grant_reaches_its_buildings_and_enterprises_but_not_another_park() {
        let p = principal(&["park_manager@park:p1"]);
        assert!(p.can(Permission::TelemetryRead, &Scope::building("p1", "b1")));
        assert!(p.can(Permission::PersonalRead, &Scope::enterprise("p1", "acme")));
        assert!(!p.can(Permission::TelemetryRead, &Scope::building("p2", "b1")));
        assert!(!p.can(Permission::PointsWrite, &Scope::building("p1", "b1")));
    }

    #[test]
    fn an_enterprise_user_sees_only_its_own_enterprise() {
        let p = principal(&["enterprise_user@enterprise:p1/acme"]);
        assert!(p.can(Permission::EnterpriseRead, &Scope::enterprise("p1", "acme")));
        assert!(!p.can(
            Permission::EnterpriseRead,
            &Scope::enterprise("p1", "globex")
        ));
        assert!(!p.can(Permission::EnterpriseRead, &Scope::park("p1")));
        assert!(!p.can(Permission::TelemetryRead, &Scope::building("p1", "b1")));
    }

    #[test]
    fn a_building_grant_does_not_reach_the_park_or_a_neighbour() {
        let p = principal(&["facility_engineer@building:p1/b1"]);
        assert!(p.can(Permission::PointsWrite, &Scope::building("p1", "b1")));
        assert!(!p.can(Permission::PointsWrite, &Scope::building("p1", "b2")));
        assert!(!p.can(Permission::TelemetryRead, &Scope::park("p1")));
        assert!(p.can_somewhere_in(Permission::TelemetryRead, "p1"));
        assert!(!p.can_somewhere_in(Permission::TelemetryRead, "p2"));
    }

    #[test]
    fn a_token_carries_at_most_what_it_was_given() {
        let mut p = principal(&["facility_engineer@building:p1/b1"]);
        p.restrict = Some(PermissionSet::of(&[
            Permission::TelemetryRead,
            Permission::UsersManage,
        ]));
        let here = Scope::building("p1", "b1");
        assert!(p.can(Permission::TelemetryRead, &here));
        assert!(!p.can(Permission::PointsWrite, &here));
        // Restricting never adds: the engineer cannot manage users, token or not.
        assert!(!p.can(Permission::UsersManage, &here));
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        let manager = principal(&["park_manager@park:p1"]);
        assert!(manager.may_grant(&"inspector@building:p1/b1".parse().unwrap()));
        assert!(manager.may_grant(&"enterprise_admin@enterprise:p1/acme".parse().unwrap()));
        // Finance can see bills; a park manager cannot, so cannot make anyone finance.
        assert!(!manager.may_grant(&"facility_engineer@building:p1/b1".parse().unwrap()));
        assert!(!manager.may_grant(&"operator_admin@operator".parse().unwrap()));
        assert!(!manager.may_grant(&"inspector@building:p2/b1".parse().unwrap()));
        let tenant_admin = principal(&["enterprise_admin@enterprise:p1/acme"]);
        assert!(tenant_admin.may_grant(&"enterprise_user@enterprise:p1/acme".parse().unwrap()));
        assert!(!tenant_admin.may_grant(&"enterprise_user@enterprise:p1/globex".parse().unwrap()));
        assert!(!tenant_admin.may_manage(&["park_manager@park:p1".parse().unwrap()]));
    }

    #[test]
    fn enrollment_pending_means_no_permissions() {
        let mut p = principal(&["operator_admin@operator"]);
        p.second_factor = SecondFactor::EnrollmentRequired;
        assert!(p.permissions_at(&Scope::Operator).is_empty());
        assert!(!p.can_somewhere_in(Permission::TelemetryRead, "p1"));
    }

    #[test]
    fn roles_fit_their_scopes_and_text_forms_round_trip() {
        assert!("enterprise_user@park:p1".parse::<Grant>().is_err());
        assert!("finance@enterprise:p1/acme".parse::<Grant>().is_err());
        assert!("park_manager@park:p1/".parse::<Grant>().is_err());
        assert!("park_manager@park:../x".parse::<Grant>().is_err());
        for s in [
            "operator_admin@operator",
            "finance@park:p1",
            "security_officer@building:p1/b-2",
            "enterprise_admin@enterprise:p1/acme",
        ] {
            assert_eq!(s.parse::<Grant>().unwrap().to_string(), s);
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert!(Role::OperatorAdmin.requires_second_factor());
        assert!(Role::Finance.requires_second_factor());
        assert!(!Role::FacilityEngineer.requires_second_factor());
    }
}
