//! Who may talk to a holder: a peer with the holder's own effective UID (SO_PEERCRED) in the
//! holder's own user and PID namespaces. A cage is in namespaces of its own (bwrap always
//! unshares both), so even a same-UID cage is refused.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// A namespace, as the kernel names it: the device and inode of `/proc/PID/ns/KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ns {
    dev: u64,
    ino: u64,
}

fn ns(pid: &str, kind: &str) -> std::io::Result<Ns> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))?;
    Ok(Ns {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// This process's identity, against which peers are checked.
#[derive(Debug, Clone, Copy)]
pub struct Own {
    uid: u32,
    user: Ns,
    pid: Ns,
}

impl Own {
    pub fn read() -> std::io::Result<Own> {
        Ok(Own {
            uid: rustix::process::geteuid().as_raw(),
            user: ns("self", "user")?,
            pid: ns("self", "pid")?,
        })
    }
}

/// Whether the peer of `socket` may talk to this holder; `Err` says why not.
pub fn check(socket: impl AsFd, own: &Own) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(socket)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if cred.uid.as_raw() != own.uid {
        return Err(format!(
            "peer UID {} is not this holder's UID {}",
            cred.uid.as_raw(),
            own.uid
        ));
    }
    // A peer in a PID namespace this one cannot see has PID 0 here.
    let pid = cred.pid.as_raw_nonzero().get();
    if pid <= 0 {
        return Err("the peer's process is not visible here".into());
    }
    let pid = pid.to_string();
    for (kind, want) in [("user", own.user), ("pid", own.pid)] {
        match ns(&pid, kind) {
            Ok(got) if got == want => {}
            Ok(_) => return Err(format!("peer {pid} is in another {kind} namespace")),
            Err(e) => return Err(format!("cannot read peer {pid}'s {kind} namespace: {e}")),
        }
    }
    Ok(())
}
