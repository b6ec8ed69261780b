//! Writing a file only its owner can read, atomically: the container token and the
//! credentials file both hold secrets, and a reader must never see half of one.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SecureRandom as _;

/// Writes `contents` to `path` through a 0600 temporary file in the same directory, then
/// renames it into place. The parent directory is created (0755) when missing.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_private_file_if(path, contents, || true).map(|_| ())
}

/// The directory `path` lives in, created (0755, with its parents) when missing.
pub(crate) fn parent_dir(path: &Path) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
    }
    Ok(dir)
}

/// [`write_private_file`], but the rename happens only if `still_current()` says so right
/// before it (the file was not replaced since it was read); `Ok(false)` when it did not.
pub(crate) fn write_private_file_if(
    path: &Path,
    contents: &[u8],
    still_current: impl FnOnce() -> bool,
) -> std::io::Result<bool> {
    let dir = parent_dir(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    let _ = ring::rand::SystemRandom::new().fill(&mut suffix);
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(suffix)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask cannot widen 0600, but a 0600 request may be narrowed; make it exact.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        if !still_current() {
            return Ok(false);
        }
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every filesystem can sync a directory.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&tmp);
    }
    result
}
