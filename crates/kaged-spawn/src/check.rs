//! `kaged cage-check`'s I/O: observe each destination inside the cage, as it was built, and
//! judge it with `kaged_cage::Expect` (see there for why).

use std::path::Path;

use kaged_cage::{Expect, FileId, Observed};
use nix::sys::stat::{SFlag, lstat};

fn observe(path: &Path) -> Option<Observed> {
    let st = lstat(path).ok()?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let is_symlink = kind == SFlag::S_IFLNK;
    // Through the path: a final link was refused above, so these see the destination itself.
    let read_only = !is_symlink
        && nix::sys::statvfs::statvfs(path)
            .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let is_tmpfs = !is_symlink
        && nix::sys::statfs::statfs(path)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let is_empty_dir = kind == SFlag::S_IFDIR
        && std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
    Some(Observed {
        id: FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        is_symlink,
        read_only,
        is_tmpfs,
        is_empty_dir,
    })
}

/// Check a cage as built: its whole mount table (`mounts`: the points kaged made;
/// `host_mounts`: the host's own below system directories), then every `--expect` (the first
/// failure is the answer).
pub fn cage_check(
    expects: &[String],
    mounts: &[String],
    host_mounts: &[String],
) -> Result<(), String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read the cage's mount table: {e}"))?;
    let problem = |e: kaged_cage::CheckError| e.to_string();
    kaged_cage::judge_mounts(
        &kaged_cage::mount_points(&table).map_err(problem)?,
        mounts,
        host_mounts,
    )
    .map_err(problem)?;
    for spec in expects {
        let expect: Expect = spec.parse().map_err(problem)?;
        expect
            .judge(observe(Path::new(expect.path())).as_ref())
            .map_err(problem)?;
    }
    Ok(())
}
