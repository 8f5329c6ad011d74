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
];

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

/// The BPF program of a profile, as the bytes bubblewrap expects on its `--seccomp` fd.
pub fn profile_bpf(profile: &str) -> Result<Vec<u8>, SeccompError> {
    let deny = match profile {
        "default" => DEFAULT_DENY,
        "relaxed" => RELAXED_DENY,
        other => return Err(SeccompError::UnknownProfile(other.into())),
    };
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        deny.iter().map(|nr| (*nr, Vec::new())).collect();
    if profile == "default" {
        let ioctl_arg = |value| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                .and_then(|c| SeccompRule::new(vec![c]))
        };
        rules.insert(
            libc::SYS_ioctl,
            vec![
                ioctl_arg(TIOCSTI).map_err(build)?,
                ioctl_arg(TIOCLINUX).map_err(build)?,
            ],
        );
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_compile_to_whole_bpf_instructions() {
        let default = profile_bpf("default").unwrap();
        let relaxed = profile_bpf("relaxed").unwrap();
        assert!(!default.is_empty() && default.len().is_multiple_of(8));
        assert!(relaxed.len() < default.len());
        assert!(matches!(
            profile_bpf("none"),
            Err(SeccompError::UnknownProfile(_))
        ));
    }
}
