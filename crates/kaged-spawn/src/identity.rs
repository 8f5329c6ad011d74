//! Who a cage runs as, gathered for `kaged_cage::run_as`: this process's effective UID, the
//! project root's owner, and `[sandbox] cage_user` looked up in the user database.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kaged_cage::{Identity, IdentityFacts, RunAs};
use nix::unistd::{Gid, Group, Uid, User};

/// This process's effective UID.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `cage_user` (a name or a numeric UID) on this host. A UID without an entry runs with the
/// group of the same number.
fn resolve(cage_user: &str) -> Option<Identity> {
    let found = match cage_user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .or(Some((uid, uid))),
        Err(_) => User::from_name(cage_user)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw())),
    };
    found.map(|(uid, gid)| Identity { uid, gid })
}

/// Who a cage over the project at `root` runs as (`None`: as this process, which is not
/// root), or why none can start.
pub fn run_as(root: &Path, cage_user: &str) -> Result<Option<RunAs>, String> {
    let daemon_euid = effective_uid();
    if daemon_euid != 0 {
        return Ok(None);
    }
    let meta = std::fs::metadata(root)
        .map_err(|e| format!("cannot read the project {}: {e}", root.display()))?;
    let facts = IdentityFacts {
        daemon_euid,
        root_uid: meta.uid(),
        root_gid: meta.gid(),
        root_mode: meta.mode() & 0o7777,
        owner_gid: User::from_uid(Uid::from_raw(meta.uid()))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw()),
        cage_user: cage_user.to_string(),
        cage_identity: resolve(cage_user),
    };
    kaged_cage::run_as(&facts).map_err(|e| e.to_string())
}

/// `uid (name)`, `gid (name)` for messages.
pub fn describe(id: Identity) -> String {
    let user = User::from_uid(Uid::from_raw(id.uid))
        .ok()
        .flatten()
        .map(|u| format!(" ({})", u.name))
        .unwrap_or_default();
    let group = Group::from_gid(Gid::from_raw(id.gid))
        .ok()
        .flatten()
        .map(|g| format!(" ({})", g.name))
        .unwrap_or_default();
    format!("uid {}{user}, gid {}{group}", id.uid, id.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_through_the_user_database() {
        assert_eq!(resolve("root"), Some(Identity { uid: 0, gid: 0 }));
        assert_eq!(resolve("0"), Some(Identity { uid: 0, gid: 0 }));
        assert_eq!(resolve("kaged-no-such-user"), None);
        // A UID nobody has: its own number as the group.
        assert_eq!(
            resolve("4000123"),
            Some(Identity {
                uid: 4_000_123,
                gid: 4_000_123
            })
        );
        assert!(describe(Identity { uid: 0, gid: 0 }).starts_with("uid 0 (root), gid 0"));
    }
}
