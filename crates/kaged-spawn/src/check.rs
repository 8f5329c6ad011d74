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

/// Check every `--expect` of a cage (the first failure is the answer).
pub fn cage_check(expects: &[String]) -> Result<(), String> {
    for spec in expects {
        let expect: Expect = spec.parse()?;
        expect.judge(observe(Path::new(expect.path())).as_ref())?;
    }
    Ok(())
}
