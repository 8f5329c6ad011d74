//! Who a cage runs as. Cages never run as UID 0: a daemon that is root hands each cage an
//! unprivileged identity, decided here from facts the edge gathered.
//!
//! The rule: not root → the daemon's own user, as always. Root → the owner of the project root
//! when that is not root (the work belongs to them, and files the cage creates are theirs),
//! otherwise the configured cage user (`[sandbox] cage_user`, default `nobody`).

/// A user and group the cage runs as (no supplementary groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Why a cage runs as someone else than the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Because {
    /// The project root is owned by this user.
    ProjectOwner,
    /// The project root is owned by root: `[sandbox] cage_user`.
    CageUser,
}

impl Because {
    pub fn as_str(self) -> &'static str {
        match self {
            Because::ProjectOwner => "project_owner",
            Because::CageUser => "cage_user",
        }
    }
}

/// The identity a root daemon switches a cage to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub identity: Identity,
    pub because: Because,
    /// Whether the project root's permission bits let this identity create files in it (ACLs
    /// are not consulted). A cage that cannot write its workspace still runs, with a warning.
    pub workspace_writable: bool,
}

/// What the edge gathered for [`run_as`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFacts {
    /// The daemon's effective UID.
    pub daemon_euid: u32,
    /// The project root directory's owner, group and permission bits.
    pub root_uid: u32,
    pub root_gid: u32,
    pub root_mode: u32,
    /// The root owner's primary group in the user database, when the owner has an entry.
    pub owner_gid: Option<u32>,
    /// `[sandbox] cage_user` as configured (for messages).
    pub cage_user: String,
    /// `cage_user` resolved on this host; `None` when no such user exists.
    pub cage_identity: Option<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the project root is owned by root and cages never run as root, but the cage user `{0}` ([sandbox] cage_user) does not exist on this host; create it (sudo useradd --system --no-create-home {0}), set [sandbox] cage_user to an unprivileged user, or chown the project to the user who should own its files"
    )]
    UnknownCageUser(String),
    #[error(
        "the cage user `{0}` ([sandbox] cage_user) is root (UID or group 0) on this host, and cages never run as root; set [sandbox] cage_user to an unprivileged user such as \"nobody\""
    )]
    RootCageUser(String),
}

/// `None`: run as the daemon's own user (it is not root). `Some`: switch to this identity.
pub fn run_as(facts: &IdentityFacts) -> Result<Option<RunAs>, IdentityError> {
    if facts.daemon_euid != 0 {
        return Ok(None);
    }
    let cage_user = || match facts.cage_identity {
        None => Err(IdentityError::UnknownCageUser(facts.cage_user.clone())),
        Some(id) if id.uid == 0 || id.gid == 0 => {
            Err(IdentityError::RootCageUser(facts.cage_user.clone()))
        }
        Some(id) => Ok(id),
    };
    let (identity, because) = if facts.root_uid != 0 {
        // The owner's own group; never group 0 (root's group can read what root keeps from
        // others), in which case the cage user's group stands in.
        let gid = match facts.owner_gid.unwrap_or(facts.root_gid) {
            0 => cage_user()?.gid,
            gid => gid,
        };
        (
            Identity {
                uid: facts.root_uid,
                gid,
            },
            Because::ProjectOwner,
        )
    } else {
        (cage_user()?, Because::CageUser)
    };
    Ok(Some(RunAs {
        identity,
        because,
        workspace_writable: may_write(identity, facts),
    }))
}

/// Whether `id` (without supplementary groups) may create entries in the project root.
fn may_write(id: Identity, facts: &IdentityFacts) -> bool {
    let bits = if id.uid == facts.root_uid {
        facts.root_mode >> 6
    } else if id.gid == facts.root_gid {
        facts.root_mode >> 3
    } else {
        facts.root_mode
    };
    // Write and search.
    bits & 0o3 == 0o3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(euid: u32, root_uid: u32, root_gid: u32, mode: u32) -> IdentityFacts {
        IdentityFacts {
            daemon_euid: euid,
            root_uid,
            root_gid,
            root_mode: mode,
            owner_gid: None,
            cage_user: "nobody".into(),
            cage_identity: Some(Identity {
                uid: 65534,
                gid: 65534,
            }),
        }
    }

    fn id(uid: u32, gid: u32) -> Identity {
        Identity { uid, gid }
    }

    #[test]
    fn a_daemon_that_is_not_root_runs_cages_as_itself() {
        assert_eq!(run_as(&facts(1000, 1000, 1000, 0o755)), Ok(None));
        // Whoever owns the project: the daemon cannot switch, and is not root.
        assert_eq!(run_as(&facts(1000, 0, 0, 0o755)), Ok(None));
        let mut missing = facts(1000, 0, 0, 0o755);
        missing.cage_identity = None;
        assert_eq!(run_as(&missing), Ok(None));
    }

    #[test]
    fn root_runs_a_users_project_as_its_owner() {
        let mut f = facts(0, 1000, 1000, 0o755);
        let r = run_as(&f).unwrap().unwrap();
        assert_eq!(r.identity, id(1000, 1000));
        assert_eq!(r.because, Because::ProjectOwner);
        assert!(r.workspace_writable);
        // The owner's primary group wins over the directory's.
        f.owner_gid = Some(100);
        assert_eq!(run_as(&f).unwrap().unwrap().identity, id(1000, 100));
        // Never group 0: a directory left in root's group gets the cage user's group.
        let mut g = facts(0, 1000, 0, 0o700);
        assert_eq!(run_as(&g).unwrap().unwrap().identity, id(1000, 65534));
        g.owner_gid = Some(0);
        assert_eq!(run_as(&g).unwrap().unwrap().identity, id(1000, 65534));
        g.cage_identity = None;
        assert!(matches!(run_as(&g), Err(IdentityError::UnknownCageUser(_))));
        // An owner without write permission on their own directory is told so.
        let r = run_as(&facts(0, 1000, 1000, 0o555)).unwrap().unwrap();
        assert!(!r.workspace_writable);
    }

    #[test]
    fn root_runs_a_root_owned_project_as_the_cage_user() {
        let r = run_as(&facts(0, 0, 0, 0o755)).unwrap().unwrap();
        assert_eq!(r.identity, id(65534, 65534));
        assert_eq!(r.because, Because::CageUser);
        // 0755 root:root: the cage user can read but not write its workspace.
        assert!(!r.workspace_writable);
        assert!(
            run_as(&facts(0, 0, 0, 0o1777))
                .unwrap()
                .unwrap()
                .workspace_writable
        );
        // Group-writable for the cage user's group.
        assert!(
            run_as(&facts(0, 0, 65534, 0o770))
                .unwrap()
                .unwrap()
                .workspace_writable
        );
        assert!(
            !run_as(&facts(0, 0, 65534, 0o750))
                .unwrap()
                .unwrap()
                .workspace_writable
        );
    }

    #[test]
    fn a_missing_or_root_cage_user_refuses_with_the_fix() {
        let mut f = facts(0, 0, 0, 0o755);
        f.cage_identity = None;
        f.cage_user = "kaged-cage".into();
        let e = run_as(&f).unwrap_err();
        assert_eq!(e, IdentityError::UnknownCageUser("kaged-cage".into()));
        assert!(e.to_string().contains("useradd --system"), "{e}");
        // A name that is root on this host (e.g. a `toor` alias), or a root group.
        for root in [id(0, 0), id(0, 5), id(5, 0)] {
            f.cage_identity = Some(root);
            assert!(matches!(run_as(&f), Err(IdentityError::RootCageUser(_))));
        }
    }
}
