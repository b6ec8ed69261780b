//! Reading a file the operator named, safely: only a regular file (a FIFO, a device or a
//! directory is refused instead of hanging or reading forever), at most a stated size, opened
//! without blocking so a FIFO swapped in after the check cannot stall the agent.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("it is not a regular file")]
    NotRegular,
    #[error("it is a symbolic link, which is refused here")]
    Symlink,
    #[error("it is larger than {max} bytes")]
    TooLarge { max: u64 },
}

/// How to open the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Follow symbolic links (certificates mounted from Kubernetes secrets are links).
    Follow,
    /// Refuse a symbolic link at the path itself (files holding secrets we own).
    Refuse,
}

/// Opens `path` for reading, non-blocking, and checks it is a regular file.
pub(crate) fn open_regular(path: &Path, links: Links) -> Result<File, FileError> {
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW on a link fails with ELOOP.
            if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) {
                FileError::Symlink
            } else {
                FileError::Io(e)
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(FileError::NotRegular);
    }
    Ok(file)
}

/// The contents of a regular file of at most `max` bytes.
pub(crate) fn read(path: &Path, max: u64, links: Links) -> Result<Vec<u8>, FileError> {
    read_open(open_regular(path, links)?, max)
}

/// The rest of `file`, at most `max` bytes.
pub(crate) fn read_open(file: File, max: u64) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_directories_links_and_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read(&fifo, 10, Links::Follow),
            Err(FileError::NotRegular)
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), 10, Links::Follow),
            Err(FileError::NotRegular)
        ));
        assert!(matches!(
            read(dir.path(), 10, Links::Follow),
            Err(FileError::NotRegular)
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        assert!(matches!(
            read(&big, 10, Links::Follow),
            Err(FileError::TooLarge { max: 10 })
        ));
        assert_eq!(read(&big, 11, Links::Follow).unwrap().len(), 11);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert_eq!(read(&link, 11, Links::Follow).unwrap().len(), 11);
        assert!(matches!(
            read(&link, 11, Links::Refuse),
            Err(FileError::Symlink)
        ));
    }
}
