//! The directories arcad keeps its files in, and its socket's mode. Another local user must not be
//! able to prepare them: a directory that user created first (the development defaults live in
//! world-writable `/var/tmp`), or one they can write, lets them swap the database, read the
//! development key or plant a symbolic link where arcad chmods its socket.
//!
//! Rules (docs/operations.md, "Directories arcad uses"):
//! - A directory arcad uses for its own files (the state directory, the socket's directory, the
//!   development key's directory, and `/var/tmp/arca-dev` when a default path is in use) must be
//!   a real directory (not a symbolic link), owned by arcad's user, that neither group nor
//!   others can write. A missing one is created with the given mode.
//! - Every directory above it (and above a configured key file) must be owned by root or by
//!   arcad's user, and writable by group or others only with the sticky bit (`/var/tmp`,
//!   `/tmp`), where nobody can rename or remove what another user made.
//! - The socket's mode is set through a descriptor of the socket itself (`O_PATH|O_NOFOLLOW`),
//!   never by a path that could name a link planted in its place.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why arcad refuses a directory or its socket. Each names the path, as one line.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("refusing {0}: it is a symbolic link; arcad keeps its files only in a real directory it owns")]
    Symlink(PathBuf),
    #[error("refusing {0}: it is not a directory")]
    NotDirectory(PathBuf),
    #[error("refusing {path}: it is owned by uid {owner}, not by arcad's uid {euid}; another user may have created it first (remove it, or choose another path)")]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("refusing {path}: group or others can write it (mode {mode:04o}); if it is arcad's own, run: chmod go-w {path}")]
    Writable { path: PathBuf, mode: u32 },
    #[error("refusing {path}: the directory {above} above it is owned by uid {owner}, neither root nor arcad's uid {euid}")]
    AboveOwner {
        path: PathBuf,
        above: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("refusing {path}: group or others can write the directory {above} above it (mode {mode:04o}) and it has no sticky bit")]
    AboveWritable {
        path: PathBuf,
        above: PathBuf,
        mode: u32,
    },
    #[error("refusing socket {path}: {why}")]
    Socket { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PathError + '_ {
    move |source| PathError::Io {
        path: path.to_owned(),
        source,
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

const STICKY: u32 = 0o1000;

/// Makes sure `dir` is a directory arcad may keep its files in, creating it (and missing
/// parents) with `mode` if absent. With `mode` 0700 the directory is also made private.
/// The directories above are checked before anything is created, so a refusal creates nothing.
pub fn own_dir(dir: &Path, mode: u32) -> Result<(), PathError> {
    check_above(dir)?;
    if !exists(dir)? {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(io(dir))?;
    }
    check_own(dir)?;
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if mode & 0o077 == 0 && meta.mode() & 0o077 != 0 {
        // Ours, and nobody else can write it or what is above it: tightening it is safe.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io(dir))?;
    }
    Ok(())
}

/// `own_dir` without creating anything (for `--check-config`): a missing directory is fine as
/// long as what is above it may hold it.
pub fn check_own_dir(dir: &Path) -> Result<(), PathError> {
    check_above(dir)?;
    if exists(dir)? {
        check_own(dir)?;
    }
    Ok(())
}

fn exists(p: &Path) -> Result<bool, PathError> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(p)(e)),
    }
}

/// The directory itself: real, arcad's, and not writable by group or others.
fn check_own(dir: &Path) -> Result<(), PathError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if meta.file_type().is_symlink() {
        return Err(PathError::Symlink(dir.to_owned()));
    }
    if !meta.is_dir() {
        return Err(PathError::NotDirectory(dir.to_owned()));
    }
    let euid = euid();
    if meta.uid() != euid {
        return Err(PathError::Owner {
            path: dir.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PathError::Writable {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Every existing directory above `path`, as written and as resolved (a link in the path leads
/// elsewhere): owned by root or arcad's user, and writable by others only with the sticky bit.
/// A symbolic link on the way must be root's or arcad's too: its owner could point it anywhere.
pub fn check_above(path: &Path) -> Result<(), PathError> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map_err(io(path))?.join(path)
    };
    let euid = euid();
    let owner_ok = |above: &Path, uid: u32| {
        if uid == 0 || uid == euid {
            Ok(())
        } else {
            Err(PathError::AboveOwner {
                path: path.to_owned(),
                above: above.to_owned(),
                owner: uid,
                euid,
            })
        }
    };
    let dir_ok = |above: &Path, meta: &std::fs::Metadata| {
        owner_ok(above, meta.uid())?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & STICKY == 0 {
            return Err(PathError::AboveWritable {
                path: path.to_owned(),
                above: above.to_owned(),
                mode,
            });
        }
        Ok(())
    };
    let mut nearest: Option<&Path> = None;
    for above in absolute.ancestors().skip(1) {
        let meta = match std::fs::symlink_metadata(above) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(above)(e)),
        };
        nearest.get_or_insert(above);
        if meta.file_type().is_symlink() {
            owner_ok(above, meta.uid())?;
        } else {
            dir_ok(above, &meta)?;
        }
    }
    // Where the links lead: the resolved directories, each checked like the others.
    if let Some(n) = nearest {
        let real = std::fs::canonicalize(n).map_err(io(n))?;
        for above in real.ancestors() {
            let meta = std::fs::metadata(above).map_err(io(above))?;
            dir_ok(above, &meta)?;
        }
    }
    Ok(())
}

/// Sets the mode of the socket arcad just bound at `path` without following a link: the path
/// is opened with `O_PATH|O_NOFOLLOW` (which opens a link itself rather than its target), the
/// descriptor must be a socket owned by arcad's user, and the mode is set through
/// `/proc/self/fd`, i.e. on that very inode. (`fchmod` on the listening socket's own descriptor
/// would not do: it changes the socket object, not the file that `connect` checks.)
pub fn set_socket_mode(path: &Path, mode: u32) -> Result<(), PathError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    let meta = f.metadata().map_err(io(path))?;
    let refuse = |why: String| PathError::Socket {
        path: path.to_owned(),
        why,
    };
    if !meta.file_type().is_socket() {
        return Err(refuse(
            "it is no longer the socket arcad bound (replaced, or a link)".into(),
        ));
    }
    if meta.uid() != euid() {
        return Err(refuse(format!("it is owned by uid {}", meta.uid())));
    }
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_refuses_writable_or_linked() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        own_dir(&base.join("keys"), 0o700).unwrap();
        assert_eq!(mode_of(&base.join("keys")), 0o700);
        assert_eq!(mode_of(&base), 0o700);

        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = own_dir(&base, 0o755).unwrap_err();
        assert!(matches!(e, PathError::Writable { mode: 0o777, .. }), "{e}");
        assert!(e.to_string().contains(&base.display().to_string()));
        // Above a directory, a writable one refuses it too, unless it has the sticky bit.
        let e = own_dir(&base.join("state"), 0o700).unwrap_err();
        assert!(matches!(e, PathError::AboveWritable { .. }), "{e}");
        assert!(!base.join("state").exists(), "nothing created on refusal");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        own_dir(&base.join("state"), 0o700).unwrap();

        let link = t.path().join("link");
        std::os::unix::fs::symlink(base.join("keys"), &link).unwrap();
        let e = own_dir(&link, 0o700).unwrap_err();
        assert!(matches!(e, PathError::Symlink(_)), "{e}");
        assert!(check_own_dir(&t.path().join("missing/state")).is_ok());

        // Another user's link above the directory: refused, though it leads somewhere safe.
        if euid() == 0 {
            let theirs = t.path().join("theirs");
            std::os::unix::fs::symlink(&base, &theirs).unwrap();
            std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = own_dir(&theirs.join("state2"), 0o700).unwrap_err();
            assert!(
                matches!(e, PathError::AboveOwner { owner: 65534, .. }),
                "{e}"
            );
            assert!(!base.join("state2").exists());
        }
    }

    #[test]
    fn socket_mode_never_follows_a_link() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = t.path().join("s.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = set_socket_mode(&link, 0o666).unwrap_err();
        assert!(matches!(e, PathError::Socket { .. }), "{e}");
        assert_eq!(mode_of(&target), 0o600);

        let sock = t.path().join("real.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        set_socket_mode(&sock, 0o666).unwrap();
        assert_eq!(mode_of(&sock), 0o666);
    }
}
