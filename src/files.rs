//! Files that survive a crash: written whole or not at all, readable by root only.
//!
//! A temporary file is created next to the target, exclusively (`O_EXCL`, and
//! `O_NOFOLLOW`: a link planted there is never followed), mode 0600; it is written and
//! synced, renamed over the target, and the directory is synced so the rename itself
//! survives a power loss.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;

/// Replaces `path` with `bytes`, atomically and durably, mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_private_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with what `write` writes (through a buffer, so a large file is never
/// held in memory whole), atomically and durably, mode 0600.
pub fn write_private_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a file name")?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a crashed earlier run of this same process id.
    let _ = fs::remove_file(&tmp);
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::new(f);
    let written = write(&mut w)
        .and_then(|()| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Makes `path` readable by its owner only, if it is not already; returns true when it
/// had to (the file was readable or writable by group or others).
pub fn restrict_to_owner(path: &Path) -> anyhow::Result<bool> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("swg-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_is_replaced_whole_with_mode_0600() {
        let d = dir("write");
        let p = d.join("f.json");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let d = dir("link");
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        let p = d.join("f.json");
        let tmp = d.join(format!(".f.json.{}.tmp", std::process::id()));
        // An attacker's link where the temporary file goes is removed, never written through.
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_private(&p, b"data").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"data");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn loose_permissions_are_restricted() {
        let d = dir("perm");
        let p = d.join("k");
        fs::write(&p, "x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(restrict_to_owner(&p).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!restrict_to_owner(&p).unwrap());
        let _ = fs::remove_dir_all(&d);
    }
}
