//! Per-route policy: mode (required / optional / off) and role/scope requirements.
//!
//! A requirement names a claim path whose value is either an array of strings (`roles`,
//! `realm_access.roles`) or a space-separated string (`scope`), a list of values and a match mode
//! (any-of / all-of). All requirements of a route must hold; failing one gives 403
//! `insufficient_scope`.

use super::error::{AuthReason, ConfigError};
use super::identity::{claim_contains, ClaimPath, Identity};
pub use super::settings::{AuthMode, MatchMode};
use super::settings::{ClaimRequirementSettings, RouteAuthSettings};

/// One compiled requirement.
#[derive(Debug, Clone)]
pub struct ClaimRequirement {
    path: ClaimPath,
    values: Vec<String>,
    match_mode: MatchMode,
}

impl ClaimRequirement {
    /// Compiles a requirement.
    pub fn new(s: &ClaimRequirementSettings) -> Result<Self, ConfigError> {
        let path = ClaimPath::parse(&s.claim)
            .ok_or_else(|| ConfigError::BadSetting(format!("claim path {:?}", s.claim)))?;
        Ok(ClaimRequirement {
            path,
            values: s.values.clone(),
            match_mode: s.match_mode,
        })
    }

    /// True if `identity` satisfies it. An empty value list is always satisfied.
    pub fn satisfied_by(&self, identity: &Identity) -> bool {
        if self.values.is_empty() {
            return true;
        }
        let Some(v) = identity.claim(&self.path) else {
            return false;
        };
        match self.match_mode {
            MatchMode::AnyOf => self.values.iter().any(|w| claim_contains(v, w)),
            MatchMode::AllOf => self.values.iter().all(|w| claim_contains(v, w)),
        }
    }
}

/// A route's compiled authentication policy.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// Required / optional / off.
    pub mode: AuthMode,
    requirements: Vec<ClaimRequirement>,
}

impl RoutePolicy {
    /// Compiles route settings.
    pub fn new(s: &RouteAuthSettings) -> Result<Self, ConfigError> {
        let requirements = s
            .require
            .iter()
            .map(ClaimRequirement::new)
            .collect::<Result<_, _>>()?;
        Ok(RoutePolicy {
            mode: s.mode,
            requirements,
        })
    }

    /// A policy with a mode and no role/scope requirement.
    pub fn with_mode(mode: AuthMode) -> Self {
        RoutePolicy {
            mode,
            requirements: Vec::new(),
        }
    }

    /// Checks the role/scope requirements.
    pub(crate) fn check(&self, identity: &Identity) -> Result<(), AuthReason> {
        if self.requirements.iter().all(|r| r.satisfied_by(identity)) {
            Ok(())
        } else {
            Err(AuthReason::InsufficientScope)
        }
    }
}
