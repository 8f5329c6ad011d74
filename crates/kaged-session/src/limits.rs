//! How many sessions may run at once, per project and per operator.
//!
//! The edge counts the live sessions (starting, running or stopping) and asks before it starts
//! one more. A limit of 0 forbids starting any.

use std::fmt;

/// Caps on concurrently live sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub per_project: usize,
    pub per_operator: usize,
}

impl Limits {
    pub const DEFAULT_PER_PROJECT: usize = 16;
    pub const DEFAULT_PER_OPERATOR: usize = 32;

    /// Whether one more session may start, given how many are live now. The project is checked
    /// first: its error is the more useful one to act on.
    pub fn check(
        &self,
        running_in_project: usize,
        running_for_operator: usize,
    ) -> Result<(), LimitExceeded> {
        for (resource, limit, current) in [
            (Resource::Project, self.per_project, running_in_project),
            (Resource::Operator, self.per_operator, running_for_operator),
        ] {
            if current >= limit {
                return Err(LimitExceeded {
                    resource,
                    limit,
                    current,
                });
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_project: Self::DEFAULT_PER_PROJECT,
            per_operator: Self::DEFAULT_PER_OPERATOR,
        }
    }
}

/// What a limit applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Project,
    Operator,
}

impl Resource {
    /// The stable name used in API errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Starting one more session would go over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {resource} already has {current} live sessions and its limit is {limit}; stop one first"
)]
pub struct LimitExceeded {
    pub resource: Resource,
    pub limit: usize,
    pub current: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(
            Limits::default(),
            Limits {
                per_project: 16,
                per_operator: 32
            }
        );
    }

    #[test]
    fn allows_up_to_the_limit_and_no_further() {
        let limits = Limits {
            per_project: 2,
            per_operator: 3,
        };
        let cases = [
            ((0, 0), None),
            ((1, 2), None),
            ((2, 0), Some((Resource::Project, 2, 2))),
            ((0, 3), Some((Resource::Operator, 3, 3))),
            ((5, 9), Some((Resource::Project, 2, 5))), // project first
            ((1, 4), Some((Resource::Operator, 3, 4))),
        ];
        for ((project, operator), want) in cases {
            let want = want.map(|(resource, limit, current)| LimitExceeded {
                resource,
                limit,
                current,
            });
            assert_eq!(
                limits.check(project, operator).err(),
                want,
                "{project}/{operator}"
            );
        }
    }

    #[test]
    fn a_zero_limit_forbids_every_start() {
        let limits = Limits {
            per_project: 0,
            per_operator: 32,
        };
        assert!(limits.check(0, 0).is_err());
    }

    #[test]
    fn the_error_names_resource_limit_and_count() {
        let err = Limits::default().check(3, 32).unwrap_err();
        assert_eq!(err.resource.as_str(), "operator");
        assert_eq!(
            err.to_string(),
            "the operator already has 32 live sessions and its limit is 32; stop one first"
        );
        assert_eq!(Resource::Project.to_string(), "project");
    }
}
