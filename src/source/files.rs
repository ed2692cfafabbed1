//! Reading manifest files: what the directory watcher and `kubelet-lite
//! check` share.
//!
//! Only regular files are manifests. A symlink is followed one level, to a
//! regular file (how ConfigMap-mounted manifest directories and
//! configuration managers lay files out). Anything else (a FIFO, a socket,
//! a device such as a symlink to /dev/zero) is refused at once with an
//! error naming the file: it is never read, and opening it never waits. A
//! file above [`MAX_MANIFEST_BYTES`] is refused too, so one stray file
//! cannot make the agent allocate without bound at every resync.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::manifest::{self, ManifestError, Parsed};

/// The largest manifest file read: 1 MiB. The API server refuses requests
/// of about 3 MiB (etcd's object limit is 1.5 MiB by default); a static
/// pod manifest is a few KiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why a manifest file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Removed between listing and reading (the next look sees it gone).
    #[error("no such file")]
    NotFound,
    #[error("is a directory")]
    Directory,
    #[error("is {0}, not a regular file: refused")]
    NotRegular(&'static str),
    #[error("is a symlink to a symlink ({0}): only one level of symlink is followed")]
    SymlinkChain(PathBuf),
    #[error("is a symlink to {0}, which does not exist")]
    Dangling(PathBuf),
    #[error("is {0} bytes, above the {MAX_MANIFEST_BYTES}-byte (1 MiB) limit of a manifest file")]
    TooLarge(u64),
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
}

impl ReadError {
    pub fn into_manifest_error(self, file: &Path) -> ManifestError {
        ManifestError {
            file: file.to_path_buf(),
            document: None,
            field: None,
            message: self.to_string(),
        }
    }
}

fn io(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(e),
    }
}

fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

fn check_type(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    if t.is_file() {
        Ok(())
    } else if t.is_dir() {
        Err(ReadError::Directory)
    } else {
        Err(ReadError::NotRegular(describe(t)))
    }
}

/// The file a manifest path names: itself, or the target of its symlink
/// (relative targets are relative to the link's directory).
fn target(path: &Path) -> Result<PathBuf, ReadError> {
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.file_type().is_symlink() {
        check_type(&meta)?;
        return Ok(path.to_path_buf());
    }
    let link = std::fs::read_link(path).map_err(io)?;
    let target = match path.parent() {
        Some(dir) => dir.join(&link),
        None => link,
    };
    let meta = std::fs::symlink_metadata(&target).map_err(|e| match io(e) {
        ReadError::NotFound => ReadError::Dangling(target.clone()),
        other => other,
    })?;
    if meta.file_type().is_symlink() {
        return Err(ReadError::SymlinkChain(target));
    }
    // Checked before opening: opening some devices has effects of its own
    // (a tape rewinds, a modem line is taken).
    check_type(&meta)?;
    Ok(target)
}

/// Reads a manifest file's bytes under the rules of this module.
pub fn read_manifest(path: &Path) -> Result<Vec<u8>, ReadError> {
    let target = target(path)?;
    // O_NOFOLLOW: the target was resolved above and must not have become a
    // symlink since. O_NONBLOCK: should it have become a FIFO, open(2)
    // returns at once instead of waiting for a writer; fstat then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&target)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ReadError::SymlinkChain(target.clone()),
            Some(libc::ENXIO) => ReadError::NotRegular("a socket"),
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    check_type(&meta)?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    read_capped(file)
}

/// Reads at most one byte past the limit: a file that grew after fstat is
/// still refused, never read whole.
fn read_capped(file: File) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > MAX_MANIFEST_BYTES {
        return Err(ReadError::TooLarge(len));
    }
    Ok(bytes)
}

/// The manifest files of `dir`, in name order (the order in which the
/// first definition of a pod wins). Directories, also behind a symlink, are
/// skipped as the kubelet skips them; every other entry is listed, so that
/// reading it reports what is wrong with it.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(super::is_manifest_name))
        .map(|e| e.path())
        .filter(|p| !std::fs::metadata(p).is_ok_and(|m| m.is_dir()))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and parses one manifest file.
pub fn load(file: &Path, node: &str) -> Result<Parsed, ReadError> {
    let bytes = read_manifest(file)?;
    Ok(manifest::parse_bytes(file, &bytes, node))
}

/// The kubelet's rule for a pod that two files define (same namespace and
/// name): the first file in name order keeps it; every later definition is
/// refused with an error that names both files. A file that failed
/// validation defines nothing, so it never claims a name: a valid file
/// defining the same pod after it runs the pod.
pub fn refuse_duplicate_pods(files: &mut [(PathBuf, Parsed)]) {
    let mut first: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for (file, parsed) in files.iter_mut() {
        let pods = std::mem::take(&mut parsed.pods);
        for pod in pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            match first.get(&key) {
                Some(owner) => parsed.errors.push(ManifestError {
                    file: file.clone(),
                    document: None,
                    field: Some("metadata.name".into()),
                    message: format!(
                        "pod {}/{} is already defined in {}: this definition is ignored",
                        key.0,
                        key.1,
                        owner.display()
                    ),
                }),
                None => {
                    first.insert(key, file.clone());
                    parsed.pods.push(pod);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::source::tests::{POD, tempdir};

    #[test]
    fn fifo_device_and_socket_are_refused_at_once() {
        let d = tempdir("files-special");
        let fifo = d.join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let zero = d.join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let sock = d.join("sock.yaml");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (path, want) in [
            (&fifo, "is a FIFO, not a regular file"),
            (&zero, "is a character device, not a regular file"),
            (&sock, "is a socket, not a regular file"),
        ] {
            let start = Instant::now();
            let err = read_manifest(path).unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(1));
            assert!(err.to_string().contains(want), "{path:?}: {err}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_are_followed_once() {
        let d = tempdir("files-links");
        std::fs::write(d.join("real"), POD.replace("NAME", "web")).unwrap();
        std::os::unix::fs::symlink("real", d.join("one.yaml")).unwrap();
        std::os::unix::fs::symlink("one.yaml", d.join("two.yaml")).unwrap();
        assert!(read_manifest(&d.join("one.yaml")).is_ok());
        let err = read_manifest(&d.join("two.yaml")).unwrap_err();
        assert!(matches!(err, ReadError::SymlinkChain(_)), "{err}");
        std::os::unix::fs::symlink("missing", d.join("dangling.yaml")).unwrap();
        // A dangling link is an error (a vanished file is not).
        let err = read_manifest(&d.join("dangling.yaml")).unwrap_err();
        assert!(matches!(err, ReadError::Dangling(_)), "{err}");
        assert!(matches!(
            read_manifest(&d.join("gone.yaml")),
            Err(ReadError::NotFound)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn size_cap() {
        let d = tempdir("files-size");
        let at = d.join("at.yaml");
        let mut text = POD.replace("NAME", "web").into_bytes();
        text.resize(usize::try_from(MAX_MANIFEST_BYTES).unwrap(), b'\n');
        std::fs::write(&at, &text).unwrap();
        assert!(read_manifest(&at).is_ok());
        text.push(b'\n');
        let over = d.join("over.yaml");
        std::fs::write(&over, &text).unwrap();
        let err = read_manifest(&over).unwrap_err();
        assert_eq!(
            err.into_manifest_error(&over).to_string(),
            format!(
                "{}: is 1048577 bytes, above the 1048576-byte (1 MiB) limit of a manifest file",
                over.display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn first_valid_definition_wins() {
        let load_text = |file: &str, text: &str| {
            let f = PathBuf::from(file);
            let p = manifest::parse_file(&f, text, "n1");
            (f, p)
        };
        let valid = POD.replace("NAME", "web");
        // a.yaml holds a valid `web` and an invalid second document: the
        // file defines nothing. b.yaml and c.yaml are valid: b runs `web`,
        // c is refused naming b.
        let invalid = format!(
            "{valid}---\n{}",
            POD.replace("NAME", "db")
                .replace("image: busybox", "image: ''")
        );
        let mut files = vec![
            load_text("/m/a.yaml", &invalid),
            load_text("/m/b.yaml", &valid),
            load_text("/m/c.yaml", &valid.replace("busybox", "busybox:1")),
        ];
        refuse_duplicate_pods(&mut files);
        assert!(files[0].1.pods.is_empty());
        assert!(
            files[0].1.errors[0]
                .to_string()
                .contains("(document 2): spec.containers[0].image")
        );
        assert_eq!(files[1].1.pods.len(), 1);
        assert!(files[1].1.errors.is_empty());
        assert!(files[2].1.pods.is_empty());
        assert_eq!(
            files[2].1.errors[0].to_string(),
            "/m/c.yaml: metadata.name: pod default/web-n1 is already defined in /m/b.yaml: this definition is ignored"
        );
    }
}
