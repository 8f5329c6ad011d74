//! Seccomp profiles compiled in Rust (seccompiler) into the raw BPF program bubblewrap reads
//! from its `--seccomp FD`. The filter is applied by bwrap just before it runs the command, so
//! its own setup (mounts, namespaces) is unaffected, and the payload can never undo it.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `TIOCSTI` (push a character into a terminal's input) and `TIOCLINUX` (console tricks).
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// Syscalls no agent needs and an escape would: kernel modules, kexec, reboot, tracing other
/// processes, kernel keyrings, BPF, perf, mounts and namespaces after setup, clock and swap
/// changes, and handle-based file access.
const DEFAULT_DENY: &[i64] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_syslog,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_quotactl,
    // The new mount API: a mount is a mount, whichever call makes it.
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // io_uring performs operations no seccomp filter sees.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `clone` flags that make a namespace: refused on `clone` (an argument filter) for the same
/// reason `unshare` is (a nested user namespace has every capability inside it).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// `personality` values programs really use (Docker's list: Linux, 32-bit, UNAME26, both,
/// and the query); anything else (e.g. turning address randomization off) is refused.
const PERSONALITY_ALLOWED: &[u64] = &[0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// The relaxed profile, by explicit per-cage intent: only what could harm the host kernel.
const RELAXED_DENY: &[i64] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown seccomp profile `{0}` (profiles: default, relaxed)")]
    UnknownProfile(String),
    #[error("seccomp profiles are not built for this CPU architecture")]
    Arch,
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
}

fn arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Arch)
    }
}

/// A profile's two BPF programs, as the bytes bubblewrap reads on `--add-seccomp-fd`: one
/// whose matches fail with EPERM, one whose matches fail with ENOSYS (`clone3`: its flags sit
/// in memory no filter can read, and ENOSYS makes the C library fall back to `clone`, whose
/// flags the first program checks). The kernel runs both; a refusal wins over an allow.
#[derive(Debug, Clone)]
pub struct SeccompPrograms {
    pub eperm: Vec<u8>,
    pub enosys: Vec<u8>,
}

fn rule(conditions: Vec<(u8, SeccompCmpOp, u64)>) -> Result<SeccompRule, SeccompError> {
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let conditions = conditions
        .into_iter()
        .map(|(arg, op, value)| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value))
        .collect::<Result<Vec<_>, _>>()
        .map_err(build)?;
    SeccompRule::new(conditions).map_err(build)
}

fn program(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<Vec<u8>, SeccompError> {
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(build)?;
    let program: BpfProgram = filter.try_into().map_err(build)?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// The BPF programs of a profile.
pub fn profile_bpf(profile: &str) -> Result<SeccompPrograms, SeccompError> {
    let deny = match profile {
        "default" => DEFAULT_DENY,
        "relaxed" => RELAXED_DENY,
        other => return Err(SeccompError::UnknownProfile(other.into())),
    };
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
        deny.iter().map(|nr| (*nr, Vec::new())).collect();
    let mut enosys: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    if profile == "default" {
        eperm.insert(
            libc::SYS_ioctl,
            vec![
                rule(vec![(1, SeccompCmpOp::Eq, TIOCSTI)])?,
                rule(vec![(1, SeccompCmpOp::Eq, TIOCLINUX)])?,
            ],
        );
        eperm.insert(
            libc::SYS_clone,
            NAMESPACE_FLAGS
                .iter()
                .map(|flag| rule(vec![(0, SeccompCmpOp::MaskedEq(*flag), *flag)]))
                .collect::<Result<_, _>>()?,
        );
        // One rule whose conditions all hold: the value is none of the allowed ones.
        eperm.insert(
            libc::SYS_personality,
            vec![rule(
                PERSONALITY_ALLOWED
                    .iter()
                    .map(|v| (0, SeccompCmpOp::Ne, *v))
                    .collect(),
            )?],
        );
        enosys.insert(libc::SYS_clone3, Vec::new());
    }
    Ok(SeccompPrograms {
        eperm: program(eperm, libc::EPERM)?,
        enosys: program(enosys, libc::ENOSYS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_compile_to_whole_bpf_instructions() {
        let default = profile_bpf("default").unwrap();
        let relaxed = profile_bpf("relaxed").unwrap();
        for p in [
            &default.eperm,
            &default.enosys,
            &relaxed.eperm,
            &relaxed.enosys,
        ] {
            assert!(!p.is_empty() && p.len().is_multiple_of(8));
        }
        assert!(relaxed.eperm.len() < default.eperm.len());
        assert!(relaxed.enosys.len() < default.enosys.len());
        assert!(matches!(
            profile_bpf("none"),
            Err(SeccompError::UnknownProfile(_))
        ));
    }
}
