//! The bearer token of the HTTP endpoints: read from `httpTokenFile`, or
//! made at first start in `<rootDir>/http-token` and reused afterwards.
//!
//! `/pods` and `/stats/summary` carry whole pod specs, environment values
//! among them, so they are never open by default: a local user who can
//! read the token file (root only, mode 0600) may read them, nobody else.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the generated token file under the root directory.
pub const GENERATED_FILE: &str = "http-token";

/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path} is a symbolic link; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("token file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "token file {path} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("token file {path} belongs to uid {owner}, not to this process (uid {uid})")]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("token file {path} is empty")]
    Empty { path: PathBuf },
    #[error("generating a token: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a token file, refusing a symlink (O_NOFOLLOW), anything but a
/// regular file, a file of another owner, and one that group or others
/// may read or write.
pub fn read(path: &Path) -> Result<String, TokenError> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        // open(2) with O_NOFOLLOW on a symlink fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(TokenError::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    // The checks are made on the opened file, so that a rename in between
    // cannot swap what is checked for what is read.
    let meta = f.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(TokenError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(TokenError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io(path))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

/// The token in `path`, made first if the file does not exist: created
/// with O_EXCL (never over an existing file or a dangling symlink) and
/// O_NOFOLLOW, mode 0600.
pub fn read_or_create(path: &Path) -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = hex::encode(bytes);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            let written = f
                .write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all());
            if let Err(e) = written {
                // A half-written token must not be reused next time.
                let _ = std::fs::remove_file(path);
                return Err(io(path)(e));
            }
            // The umask may only have narrowed 0600; the checks of read()
            // still apply (ownership, a file type no one swapped in).
            read(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(io(path)(e)),
    }
}

/// Whether `given` equals `expected`, in a time that does not depend on
/// where they first differ (only on their lengths), so that response times
/// do not reveal the token byte by byte.
pub fn equal(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(tag: &str) -> PathBuf {
        crate::test_support::temp_dir(&format!("token-{tag}"))
    }

    #[test]
    fn made_once_with_mode_0600_then_reused() {
        let d = tmp("reuse");
        let p = d.join(GENERATED_FILE);
        let a = read_or_create(&p).unwrap();
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_create(&p).unwrap(), a);
        // Another directory, another token.
        let d2 = tmp("reuse2");
        assert_ne!(read_or_create(&d2.join(GENERATED_FILE)).unwrap(), a);
        let _ = std::fs::remove_dir_all(d);
        let _ = std::fs::remove_dir_all(d2);
    }

    #[test]
    fn symlinks_and_exposed_files_are_refused() {
        let d = tmp("refuse");
        let target = d.join("elsewhere");
        std::fs::write(&target, "abc\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join(GENERATED_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_or_create(&link).unwrap_err();
        assert!(matches!(e, TokenError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A dangling symlink is not followed to create its target either.
        let dangling = d.join("dangling");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            read_or_create(&dangling).unwrap_err(),
            TokenError::Symlink { .. }
        ));
        assert!(!d.join("nowhere").exists());

        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&target).unwrap_err();
        assert!(matches!(e, TokenError::Exposed { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains(&target.display().to_string()), "{e}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&target).unwrap(), "abc");
        std::fs::write(&target, "\n").unwrap();
        assert!(matches!(read(&target), Err(TokenError::Empty { .. })));
        assert!(matches!(read(&d), Err(TokenError::NotAFile { .. })));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn comparison() {
        assert!(equal(b"s3cret", b"s3cret"));
        assert!(!equal(b"s3cres", b"s3cret"));
        assert!(!equal(b"s3cre", b"s3cret"));
        assert!(!equal(b"", b"s3cret"));
    }
}
