//! Facts about this host and process, gathered once for the pure deciders in `kaged-config`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use kaged_config::Facts;

/// The effective UID of this process (owner of `/proc/self`), without unsafe code.
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The login name of `uid` from /etc/passwd (falls back to `$USER`, then the number).
pub fn user_name(uid: u32) -> String {
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id: u32 = fields.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        });
    from_passwd
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

pub fn gather() -> Facts {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k == "HOME" || k.starts_with("KAGED_") || k.starts_with("XDG_"))
        .collect();
    let uid = current_uid();
    let mut facts = Facts {
        uid,
        user_name: Some(user_name(uid)),
        env,
        existing_dirs: Default::default(),
    };
    facts.existing_dirs = facts
        .user_data_candidates()
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    facts
}
