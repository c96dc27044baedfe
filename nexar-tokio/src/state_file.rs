//! Files holding secrets: the seed's state file (`Config::state_file`, `nexar seed
//! --state-file`), the core's snapshot written on every `Event::SeedStateChanged` and read
//! back when the seed restarts, and the join ticket file (`nexar seed --ticket-file`,
//! read by workers through `NEXAR_JOIN_FILE` or `--join-file`).
//!
//! The snapshot holds the join secret and the seed from which the seed's identity and CA
//! keys derive; the ticket holds the join secret. Another local user must neither read
//! them nor plant what a restarted seed trusts, so:
//! - each write goes to a fresh temporary file in the target's directory, created
//!   exclusively under an unpredictable name (a file or symlink planted in advance is
//!   never opened), made 0600 on the open handle, flushed to disk, and renamed over the
//!   target: a crash leaves the old content or the new one, never half of each;
//! - a read refuses a file that is not owned by this process's user or that group or
//!   others may read or write, naming the file and the reason.
//!
//! The writes are a few hundred bytes, made from the driver task itself.

use std::io::{Read, Write};
use std::path::Path;

/// Why a private file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The OS refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is there but others could have read or written it.
    #[error("{0}")]
    Insecure(String),
}

/// Read a private file, if there is one (`Ok(None)` when it does not exist); refuse it if
/// it is not ours alone.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The metadata of the handle we read from, not of the path: no race with a swap.
    check_private(&file.metadata()?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = current_uid()?;
    if meta.uid() != me {
        return Err(ReadError::Insecure(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ReadError::Insecure(format!(
            "mode {mode:03o} lets group or others read or write it; chmod 600 it"
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata) -> Result<(), ReadError> {
    Ok(())
}

/// This process's effective uid, without `unsafe`: POSIX gives a new file the creator's
/// effective uid as owner, so create one (unnamed, in the temporary directory) and look.
#[cfg(unix)]
fn current_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(tempfile::tempfile()?.metadata()?.uid())
}

/// Replace the file at `path` with `bytes`, atomically, readable by its owner only.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".nexar-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable once the directory is flushed.
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.state");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some(&b"two"[..]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A symlink planted where the old code put its temporary file (and at a target
    /// that does not exist yet) is not followed: what it points to is untouched.
    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let path = dir.path().join("seed.state");
        std::os::unix::fs::symlink(&victim, dir.path().join("seed.state.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("seed.tmp")).unwrap();
        write(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }

    /// A target that is a symlink is replaced by a regular file, not written through.
    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let path = dir.path().join("ticket");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    /// An existing file that others may read keeps neither its mode nor its content.
    #[cfg(unix)]
    #[test]
    fn a_world_readable_file_is_replaced_by_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.state");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        write(&path, b"new").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_read_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.state");
        write(&path, b"state").unwrap();
        for mode in [0o644, 0o604, 0o640, 0o620, 0o602, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match read(&path) {
                Err(ReadError::Insecure(why)) => assert!(why.contains("mode"), "{why}"),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read(&path).unwrap().as_deref(), Some(&b"state"[..]));
        }
    }

    /// Owned by another user (only root can arrange it; elsewhere the test has nothing to
    /// test and says so on stderr).
    #[cfg(unix)]
    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.state");
        write(&path, b"state").unwrap();
        let me = std::fs::metadata(&path).unwrap().uid();
        if me != 0 {
            eprintln!("not root: cannot chown, ownership check not exercised");
            return;
        }
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        match read(&path) {
            Err(ReadError::Insecure(why)) => assert!(why.contains("owned by uid 65534"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
