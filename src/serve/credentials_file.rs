//! Keeps one profile of the shared credentials file (`~/.aws/credentials`, or
//! `AWS_SHARED_CREDENTIALS_FILE`) current, for tools that read nothing else.
//!
//! The file is the user's: every other profile, comment, blank line and line ending stays
//! byte-for-byte. Inside our profile only `aws_access_key_id`, `aws_secret_access_key` and
//! `aws_session_token` are replaced (other keys such as `region` stay), plus one comment
//! line of our own, `# expires … (written by spiffe-aws-agent)`, so a person reading the file
//! knows when the keys go stale. A comment rather than a key because every INI parser the
//! SDKs use skips comments, while unknown keys are only ignored by most.
//!
//! Writes are atomic (a 0600 temporary file in the same directory, fsync, rename), so a
//! client never reads half a file, and the result is always mode 0600. A symbolic link or
//! anything but a regular file at the path is refused (the agent would otherwise rewrite
//! whatever the link points at). Nothing is written while the role has no usable credentials.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::bounded_file::{self, FileError, Links};
use crate::credentials::{CredentialStore, RoleCredentials, Unavailable};

const KEYS: [&str; 3] = [
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];
const MARKER_PREFIX: &str = "# expires ";
const MARKER_SUFFIX: &str = " (written by spiffe-aws-agent)";
/// The largest credentials file read: real ones are a few KiB.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// First retry delay after a failed write; doubles (with jitter) up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why the credentials file could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsFileError {
    #[error("invalid credentials-file profile name {profile:?}: it must be non-empty, without surrounding spaces, and must not contain '[', ']', or control characters such as newlines")]
    InvalidProfile { profile: String },
    #[error("the {what} contains a control character (such as a line break) and cannot be written to an INI file")]
    InvalidValue { what: &'static str },
    #[error("no role named {role:?} is configured for the credentials file")]
    UnknownRole { role: String },
    #[error("cannot read the credentials file {path}: {source}")]
    Read { path: PathBuf, source: FileError },
    #[error("the credentials file {path} is not UTF-8 text; fix or move it")]
    NotUtf8 { path: PathBuf },
    #[error("cannot write the credentials file {path}: {source} (check the directory exists and is writable)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the credentials file {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the credentials file {path} kept being replaced by another program while it was updated; try again")]
    Contended { path: PathBuf },
    #[error("the credentials-file writer stopped before writing")]
    NeverWritten,
    #[error("the credentials-file writer task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// `AWS_SHARED_CREDENTIALS_FILE` when set (a leading `~/` is expanded, as the SDKs do), else
/// `$HOME/.aws/credentials`; `None` when neither can be determined.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), home.as_ref()) {
            return Some(home.join(rest));
        }
        return Some(p);
    }
    home.map(|h| h.join(".aws").join("credentials"))
}

/// Checks that `profile` can be written as `[profile]` and read back as the same name.
pub fn validate_profile(profile: &str) -> Result<(), CredentialsFileError> {
    let bad = profile.is_empty()
        || profile.trim() != profile
        || profile
            .chars()
            .any(|c| c == '[' || c == ']' || c.is_control());
    if bad {
        return Err(CredentialsFileError::InvalidProfile {
            profile: profile.to_owned(),
        });
    }
    Ok(())
}

/// Writes `creds` into `[profile]` of the credentials file at `path`, atomically, keeping
/// everything else in the file as it was. Creates the file (and its directory) if missing.
pub fn write_profile(
    path: &Path,
    profile: &str,
    creds: &RoleCredentials,
) -> Result<(), CredentialsFileError> {
    validate_profile(profile)?;
    let c = &creds.credentials;
    let values = [
        ("access key id", c.access_key_id.as_str()),
        ("secret access key", c.secret_access_key.as_str()),
        ("session token", c.session_token.as_str()),
    ];
    for (what, v) in values {
        // A line break would start a new line (a new key, a new section); other control
        // characters have no business in a credential and confuse INI readers.
        if v.chars().any(char::is_control) {
            return Err(CredentialsFileError::InvalidValue { what });
        }
    }
    let marker = format!(
        "{MARKER_PREFIX}{}{MARKER_SUFFIX}",
        super::http::aws_time(c.expiration)
    );
    rewrite(path, |existing| {
        Some(update_profile(
            existing,
            profile,
            [values[0].1, values[1].1, values[2].1],
            &marker,
        ))
    })
    .map(|_| ())
}

/// Removes the credentials this agent wrote into `[profile]` (the three keys and the expiry
/// comment; the section and any other keys stay). Does nothing when the file or the profile
/// does not exist. Used when the identity behind them was withdrawn: they must not stay
/// readable until they expire.
pub fn clear_profile(path: &Path, profile: &str) -> Result<(), CredentialsFileError> {
    validate_profile(profile)?;
    rewrite(path, |existing| {
        let cleared = clear_profile_text(existing, profile);
        (cleared != existing).then_some(cleared)
    })
    .map(|_| ())
}

/// What to do with an existing file before the first write, for aws-spiffe-workload-helper's
/// `x509-credential-file` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preparation {
    /// `--replace`: start from an empty file (every other profile goes).
    pub replace: bool,
    /// `--force`: a file that cannot be loaded (not UTF-8 text, not a regular file, too
    /// large, a symbolic link) is removed instead of stopping the writer.
    pub force: bool,
}

/// Applies `prep` to the file at `path` (under the writers' lock): removes it when asked to
/// replace it, or when forced and it cannot be loaded. Returns whether it was removed.
pub fn prepare(path: &Path, prep: Preparation) -> Result<bool, CredentialsFileError> {
    if !prep.replace && !prep.force {
        return Ok(false);
    }
    let _lock = lock(path)?;
    let remove = prep.replace
        || matches!(
            read_existing(path),
            Err(CredentialsFileError::NotUtf8 { .. } | CredentialsFileError::Read { .. })
        );
    if !remove {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CredentialsFileError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// How many times a rewrite starts over when another writer replaced the file meanwhile.
const REWRITE_ATTEMPTS: usize = 5;

/// Reads the file, lets `edit` compute its new text (`None`: leave it), and replaces it
/// atomically: under an exclusive `flock` of its directory, so two agents never interleave, and only if nobody replaced the file since it was read
/// (another tool renaming a new file into place), else it starts over with what is there.
/// Returns whether the file was written.
fn rewrite(
    path: &Path,
    edit: impl Fn(&str) -> Option<String>,
) -> Result<bool, CredentialsFileError> {
    let _lock = lock(path)?;
    for _ in 0..REWRITE_ATTEMPTS {
        let (existing, seen) = read_existing(path)?;
        let Some(updated) = edit(&existing) else {
            return Ok(false);
        };
        let updated = zeroize::Zeroizing::new(updated);
        let written = super::private_file::write_private_file_if(path, updated.as_bytes(), || {
            fingerprint(path) == seen
        })
        .map_err(|source| CredentialsFileError::Write {
            path: path.to_owned(),
            source,
        })?;
        if written {
            return Ok(true);
        }
        tracing::debug!(path = %path.display(), "the credentials file changed while being updated; reading it again");
    }
    Err(CredentialsFileError::Contended {
        path: path.to_owned(),
    })
}

/// What identifies one version of the file: inode, size and modification time (`None`: no
/// file).
type Fingerprint = Option<(u64, u64, i64, i64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The file's text (empty when it does not exist) and its fingerprint.
fn read_existing(
    path: &Path,
) -> Result<(zeroize::Zeroizing<String>, Fingerprint), CredentialsFileError> {
    // A link at the path is refused: the agent would rewrite (and chmod) whatever file the
    // link's owner pointed it at. Anything but a regular file is refused too.
    let seen = fingerprint(path);
    let text = match bounded_file::read(path, MAX_FILE_BYTES, Links::Refuse) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| CredentialsFileError::NotUtf8 {
            path: path.to_owned(),
        })?,
        Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(CredentialsFileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok((zeroize::Zeroizing::new(text), seen))
}

/// Takes the writers' lock of `path`: an exclusive `flock` on its directory (created if
/// needed), which every spiffe-aws-agent writing a file there takes.
fn lock(path: &Path) -> Result<std::fs::File, CredentialsFileError> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let lock_err = |source| CredentialsFileError::Lock {
        path: path.to_owned(),
        source,
    };
    let dir =
        super::private_file::parent_dir(path).map_err(|source| CredentialsFileError::Write {
            path: path.to_owned(),
            source,
        })?;
    // The directory itself is locked: no lock file is left beside the user's credentials.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&dir)
        .map_err(lock_err)?;
    // SAFETY: flock on a file descriptor this function owns; blocking is fine here (the
    // writer runs on a blocking thread).
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(lock_err(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// What one line of an INI file is, as far as this module cares.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Section(&'a str),
    Key(String),
    Continuation,
    Comment,
    Blank,
    Other,
}

fn classify(line: &str) -> Line<'_> {
    // A UTF-8 byte-order mark before the first line is not part of it (editors on Windows
    // write one); it stays in the file untouched.
    let body = line
        .strip_prefix('\u{feff}')
        .unwrap_or(line)
        .trim_end_matches(['\n', '\r']);
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Line::Comment;
    }
    if body.starts_with([' ', '\t']) {
        return Line::Continuation;
    }
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some(end) = rest.rfind(']') {
            return Line::Section(rest[..end].trim());
        }
    }
    match trimmed.find(['=', ':']) {
        Some(i) => Line::Key(trimmed[..i].trim().to_ascii_lowercase()),
        None => Line::Other,
    }
}

/// The line ending `line` has ("" for a last line without one), where `line_end` is what
/// ends a line in its file (see `split_lines`): with `\n`, a lone `\r` is not an ending.
fn ending(line: &str, line_end: char) -> &str {
    if line_end == '\r' {
        if line.ends_with('\r') {
            "\r"
        } else {
            ""
        }
    } else if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// The file's line ending (CRLF, LF, or the old Mac CR alone) and its lines, each with its
/// ending.
fn split_lines(text: &str) -> (&'static str, Vec<&str>) {
    if text.contains('\n') {
        let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
        (nl, text.split_inclusive('\n').collect())
    } else if text.contains('\r') {
        ("\r", text.split_inclusive('\r').collect())
    } else {
        ("\n", text.split_inclusive('\n').collect())
    }
}

/// `text` with `[profile]`'s three credential keys set to `values` and its expiry comment
/// set to `marker`; all other bytes unchanged. Pure, so it is tested exhaustively.
pub(crate) fn update_profile(text: &str, profile: &str, values: [&str; 3], marker: &str) -> String {
    let (nl, lines) = split_lines(text);
    let kinds: Vec<Line<'_>> = lines.iter().map(|l| classify(l)).collect();

    // Which lines belong to the profile, which keys and marker it already has, and where
    // the missing ones go: after the last key of its first occurrence.
    let mut in_target = Vec::with_capacity(lines.len());
    let mut current = false;
    let mut first_section: Option<usize> = None;
    let mut insert_after: Option<usize> = None;
    let mut seen_first = false;
    let mut present = [false; 3];
    let mut has_marker = false;
    for (i, kind) in kinds.iter().enumerate() {
        if let Line::Section(name) = kind {
            let was_first_target = current && !seen_first && first_section.is_some();
            if was_first_target {
                seen_first = true;
            }
            current = *name == profile;
            if current && first_section.is_none() {
                first_section = Some(i);
                insert_after = Some(i);
            }
            in_target.push(false);
            continue;
        }
        in_target.push(current);
        if !current {
            continue;
        }
        match kind {
            Line::Key(k) => {
                if let Some(n) = KEYS.iter().position(|m| m == k) {
                    present[n] = true;
                }
                if !seen_first {
                    insert_after = Some(i);
                }
            }
            Line::Continuation if !seen_first => insert_after = Some(i),
            Line::Comment if is_marker(lines[i]) => has_marker = true,
            _ => {}
        }
    }

    let mut additions = String::new();
    if !has_marker {
        additions.push_str(marker);
        additions.push_str(nl);
    }
    for (n, key) in KEYS.iter().enumerate() {
        if !present[n] {
            additions.push_str(&format!("{key} = {}{nl}", values[n]));
        }
    }

    // What ends a line here is what `split_lines` split on: a lone `\r` in a file with `\n`
    // line breaks is part of its line, and text added after it needs a line break first.
    let line_end = if nl == "\r" { '\r' } else { '\n' };
    let mut out = String::with_capacity(text.len() + 2048);
    let mut dropping_continuation = false;
    for (i, line) in lines.iter().enumerate() {
        let managed = match &kinds[i] {
            Line::Key(k) if in_target[i] => KEYS.iter().position(|m| m == k),
            _ => None,
        };
        if let Some(n) = managed {
            out.push_str(&format!(
                "{} = {}{}",
                KEYS[n],
                values[n],
                ending(line, line_end)
            ));
            dropping_continuation = true;
        } else if dropping_continuation && kinds[i] == Line::Continuation {
            // The rest of an old multi-line value of a key we replaced.
        } else if in_target[i] && kinds[i] == Line::Comment && is_marker(line) {
            dropping_continuation = false;
            out.push_str(marker);
            out.push_str(ending(line, line_end));
        } else {
            dropping_continuation = false;
            out.push_str(line);
        }
        if Some(i) == insert_after && !additions.is_empty() {
            if !out.ends_with(line_end) {
                out.push_str(nl);
            }
            out.push_str(&additions);
        }
    }
    if first_section.is_none() {
        if !out.is_empty() {
            if !out.ends_with(line_end) {
                out.push_str(nl);
            }
            if !out.ends_with(&format!("{nl}{nl}")) && out != nl {
                out.push_str(nl);
            }
        }
        out.push('[');
        out.push_str(profile);
        out.push(']');
        out.push_str(nl);
        out.push_str(&additions);
    }
    out
}

/// `text` without the managed keys (and their continuation lines) and the expiry comment in
/// every `[profile]` section; all other bytes unchanged.
pub(crate) fn clear_profile_text(text: &str, profile: &str) -> String {
    let (_, lines) = split_lines(text);
    let mut out = String::with_capacity(text.len());
    let mut in_target = false;
    let mut dropping_continuation = false;
    for line in lines {
        let kind = classify(line);
        if let Line::Section(name) = &kind {
            in_target = *name == profile;
            dropping_continuation = false;
            out.push_str(line);
            continue;
        }
        let managed = in_target
            && match &kind {
                Line::Key(k) => KEYS.contains(&k.as_str()),
                Line::Comment => is_marker(line),
                _ => false,
            };
        if managed {
            dropping_continuation = matches!(kind, Line::Key(_));
        } else if dropping_continuation && kind == Line::Continuation {
            // The rest of a removed multi-line value.
        } else {
            dropping_continuation = false;
            out.push_str(line);
        }
    }
    out
}

fn is_marker(line: &str) -> bool {
    let t = line.trim();
    t.starts_with(MARKER_PREFIX) && t.ends_with(MARKER_SUFFIX)
}

/// Keeps `[profile]` in the file at `path` current with `role`'s credentials until
/// `shutdown` completes.
///
/// Writes at once when usable credentials exist, then whenever the store reports a change
/// and the role's credentials are new. While they are merely unavailable (a refresh is
/// failing) the file keeps the last good ones, which clients will see expire; when the store
/// drops them (the identity was withdrawn), they are removed from the file at once. A failed write is logged and
/// retried with backoff (1 s doubling to 60 s). Returns an error only for a bad profile
/// name or an unknown role, before anything is written.
pub async fn run(
    store: Arc<CredentialStore>,
    role: String,
    path: PathBuf,
    profile: String,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CredentialsFileError> {
    let (report, _) = tokio::sync::watch::channel(WriteState::Pending);
    run_reporting(store, role, path, profile, shutdown, report).await
}

/// What the last attempt to write the file did.
#[derive(Debug, Clone)]
pub enum WriteState {
    /// Nothing tried yet (no usable credentials so far).
    Pending,
    /// The credentials were written.
    Written,
    /// The last write failed (it is being retried).
    Failed(Arc<CredentialsFileError>),
}

/// [`run`], publishing the outcome of every write on `report` (how `update --once` knows
/// whether it wrote anything).
pub(crate) async fn run_reporting(
    store: Arc<CredentialStore>,
    role: String,
    path: PathBuf,
    profile: String,
    shutdown: impl Future<Output = ()> + Send,
    report: tokio::sync::watch::Sender<WriteState>,
) -> Result<(), CredentialsFileError> {
    validate_profile(&profile)?;
    if store.role_arn(&role).is_none() {
        return Err(CredentialsFileError::UnknownRole { role });
    }
    let mut changes = store.subscribe();
    let mut written: Option<Arc<RoleCredentials>> = None;
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    tokio::pin!(shutdown);
    loop {
        changes.mark_unchanged();
        let wait = match store.get(&role) {
            Ok(creds) if !written.as_ref().is_some_and(|w| Arc::ptr_eq(w, &creds)) => {
                let (p, prof, c) = (path.clone(), profile.clone(), Arc::clone(&creds));
                let result = tokio::task::spawn_blocking(move || write_profile(&p, &prof, &c))
                    .await
                    .unwrap_or_else(|e| Err(CredentialsFileError::Task(e)));
                match result {
                    Ok(()) => {
                        tracing::info!(
                            path = %path.display(),
                            profile = %profile,
                            access_key_id = %creds.credentials.access_key_id,
                            "updated the credentials file"
                        );
                        written = Some(creds);
                        backoff.reset();
                        report.send_replace(WriteState::Written);
                        None
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot update the credentials file");
                        report.send_replace(WriteState::Failed(Arc::new(e)));
                        Some(delay)
                    }
                }
            }
            Ok(_) => None,
            Err(Unavailable::UnknownRole(_)) => {
                return Err(CredentialsFileError::UnknownRole { role });
            }
            Err(e) if written.is_some() && store.peek(&role).is_none() => {
                // The store dropped the credentials (the identity was withdrawn or changed):
                // the file must not keep serving them until they expire.
                let (p, prof) = (path.clone(), profile.clone());
                let result = tokio::task::spawn_blocking(move || clear_profile(&p, &prof))
                    .await
                    .unwrap_or_else(|e| Err(CredentialsFileError::Task(e)));
                match result {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), profile = %profile, reason = %e, "removed the credentials from the credentials file");
                        written = None;
                        backoff.reset();
                        None
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot remove withdrawn credentials from the credentials file");
                        Some(delay)
                    }
                }
            }
            Err(e) => {
                tracing::debug!(reason = %e, "not updating the credentials file");
                None
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            changed = changes.changed() => {
                if changed.is_err() {
                    // The store is gone: nothing will change any more.
                    return Ok(());
                }
            }
            () = sleep_opt(wait) => {}
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::testing::{creds, store};
    use std::os::unix::fs::PermissionsExt as _;

    const V: [&str; 3] = ["AKNEW", "SKNEW", "TKNEW"];
    const M: &str = "# expires 2026-11-24T21:00:00Z (written by spiffe-aws-agent)";

    #[test]
    fn replaces_only_our_keys_and_keeps_everything_else() {
        let before = "\
# my credentials, do not lose this comment
[default]
aws_access_key_id = AKDEFAULT
aws_secret_access_key=SKDEFAULT

; another comment
[spiffe]
region = eu-west-1
AWS_ACCESS_KEY_ID = AKOLD
# expires 2020-01-01T00:00:00Z (written by spiffe-aws-agent)
aws_secret_access_key = SKOLD
aws_session_token = TKOLD
    continued-old-token
# a comment of the user's in our section

[other]
aws_session_token = TKOTHER
  not ours
";
        let after = update_profile(before, "spiffe", V, M);
        let expected = "\
# my credentials, do not lose this comment
[default]
aws_access_key_id = AKDEFAULT
aws_secret_access_key=SKDEFAULT

; another comment
[spiffe]
region = eu-west-1
aws_access_key_id = AKNEW
# expires 2026-11-24T21:00:00Z (written by spiffe-aws-agent)
aws_secret_access_key = SKNEW
aws_session_token = TKNEW
# a comment of the user's in our section

[other]
aws_session_token = TKOTHER
  not ours
";
        assert_eq!(after, expected);
        // Idempotent.
        assert_eq!(update_profile(&after, "spiffe", V, M), expected);
    }

    #[test]
    fn adds_missing_keys_after_the_last_key_of_the_section() {
        let before = "[spiffe]\nregion = us-east-1\n\n[x]\na = b\n";
        let after = update_profile(before, "spiffe", V, M);
        assert_eq!(
            after,
            format!("[spiffe]\nregion = us-east-1\n{M}\naws_access_key_id = AKNEW\naws_secret_access_key = SKNEW\naws_session_token = TKNEW\n\n[x]\na = b\n")
        );
    }

    #[test]
    fn appends_a_missing_section() {
        let block = format!("[spiffe]\n{M}\naws_access_key_id = AKNEW\naws_secret_access_key = SKNEW\naws_session_token = TKNEW\n");
        assert_eq!(update_profile("", "spiffe", V, M), block);
        assert_eq!(
            update_profile("[a]\nk = v\n", "spiffe", V, M),
            format!("[a]\nk = v\n\n{block}")
        );
        assert_eq!(
            update_profile("[a]\nk = v", "spiffe", V, M),
            format!("[a]\nk = v\n\n{block}")
        );
        assert_eq!(
            update_profile("[a]\nk = v\n\n", "spiffe", V, M),
            format!("[a]\nk = v\n\n{block}")
        );
        // A section whose name only starts like ours is another section.
        assert!(update_profile("[spiffe-dev]\nk = v\n", "spiffe", V, M).ends_with(&block));
        // A header with no newline at the end of the file.
        assert_eq!(
            update_profile("[spiffe]", "spiffe", V, M),
            format!("[spiffe]\n{M}\naws_access_key_id = AKNEW\naws_secret_access_key = SKNEW\naws_session_token = TKNEW\n")
        );
    }

    #[test]
    fn keeps_crlf_line_endings() {
        let before = "[a]\r\nk = v\r\n[spiffe]\r\naws_access_key_id = old\r\n";
        let after = update_profile(before, "spiffe", V, M);
        assert_eq!(
            after,
            format!("[a]\r\nk = v\r\n[spiffe]\r\naws_access_key_id = AKNEW\r\n{M}\r\naws_secret_access_key = SKNEW\r\naws_session_token = TKNEW\r\n")
        );
    }

    /// Found by fuzzing (`fuzz/`, target `credentials_file_ini`): in a file with `\n` line
    /// breaks a lone `\r` does not end a line, so keys added after such a line must start a
    /// new one; the expiry comment was glued to it, and added again by the next write.
    #[test]
    fn a_lone_cr_in_a_newline_file_does_not_end_a_line() {
        let after = update_profile("[spiffe]\r\nregion = x\r", "spiffe", V, M);
        assert_eq!(
            after,
            format!("[spiffe]\r\nregion = x\r\r\n{M}\r\naws_access_key_id = AKNEW\r\naws_secret_access_key = SKNEW\r\naws_session_token = TKNEW\r\n")
        );
        assert_eq!(update_profile(&after, "spiffe", V, M), after);
        // A managed key on such a line: the lone `\r` was taken for its ending, and the next
        // write turned the `\r\r\n` that resulted into `\r\n`.
        let after = update_profile("[spiffe]\r\naws_access_key_id = old\r", "spiffe", V, M);
        assert_eq!(
            after,
            format!("[spiffe]\r\naws_access_key_id = AKNEW\r\n{M}\r\naws_secret_access_key = SKNEW\r\naws_session_token = TKNEW\r\n")
        );
        assert_eq!(update_profile(&after, "spiffe", V, M), after);
        let after = update_profile("[a]\nk = v\r", "spiffe", V, M);
        assert_eq!(
            after,
            format!("[a]\nk = v\r\n\n[spiffe]\n{M}\naws_access_key_id = AKNEW\naws_secret_access_key = SKNEW\naws_session_token = TKNEW\n")
        );
        assert_eq!(update_profile(&after, "spiffe", V, M), after);
    }

    #[test]
    fn refuses_profile_names_that_are_not_section_names() {
        for bad in ["", "a]b", "a[b", "a\nb", "a\rb", " a", "a ", "a\u{0}"] {
            assert!(
                matches!(
                    validate_profile(bad),
                    Err(CredentialsFileError::InvalidProfile { .. })
                ),
                "{bad:?}"
            );
        }
        for good in ["default", "spiffe", "my profile", "a.b-c_d"] {
            assert!(validate_profile(good).is_ok(), "{good:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let s = store(&["app"]);
        let c = creds(&s, "app", "AK", Duration::from_secs(3600));
        let path = dir.path().join("credentials");
        assert!(write_profile(&path, "x]\n[default", &c).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn writes_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let original = "# keep\n[default]\naws_access_key_id = AKD\n";
        std::fs::write(&path, original).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = store(&["app"]);
        let c = creds(&s, "app", "ASIAFILE", Duration::from_secs(3600));
        write_profile(&path, "spiffe", &c).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(original), "{text}");
        assert!(text.contains("aws_access_key_id = ASIAFILE\n"));
        assert!(text.contains("aws_secret_access_key = secret-ASIAFILE\n"));
        assert!(text.contains("aws_session_token = token-ASIAFILE\n"));
        assert!(text.contains(&format!(
            "# expires {} (written",
            crate::serve::http::aws_time(c.credentials.expiration)
        )));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("credentials")],
            "no temporary file left"
        );
    }

    #[test]
    fn creates_a_missing_file_and_directory_and_refuses_links_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&["app"]);
        let c = creds(&s, "app", "ASIANEW", Duration::from_secs(3600));
        let path = dir.path().join(".aws").join("credentials");
        write_profile(&path, "spiffe", &c).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("[spiffe]\n"));

        let real = dir.path().join("real-credentials");
        std::fs::write(&real, "[a]\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = write_profile(&link, "spiffe", &c).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            "[a]\n",
            "target untouched"
        );
        let e = write_profile(dir.path(), "spiffe", &c).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn refuses_values_that_would_break_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&["app"]);
        let mut c = creds(&s, "app", "AK", Duration::from_secs(3600));
        c.credentials.session_token = zeroize::Zeroizing::new("SECRETVALUE\n[default]".to_owned());
        let err = write_profile(&dir.path().join("c"), "spiffe", &c).unwrap_err();
        assert!(matches!(err, CredentialsFileError::InvalidValue { .. }));
        assert!(!err.to_string().contains("SECRETVALUE"));
    }

    async fn wait_for_file(path: &Path, needle: &str) -> String {
        for _ in 0..500 {
            if let Ok(text) = std::fs::read_to_string(path) {
                if text.contains(needle) {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never contained {needle}", path.display());
    }

    #[tokio::test]
    async fn run_rewrites_on_change_and_not_while_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let s = store(&["app", "other"]);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            Arc::clone(&s),
            "app".into(),
            path.clone(),
            "spiffe".into(),
            async {
                let _ = rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!path.exists(), "written before credentials existed");

        // Credentials under the minimum lifetime are not written either.
        s.publish(
            "app",
            creds(&s, "app", "ASIASHORT", Duration::from_secs(60)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!path.exists(), "wrote credentials about to expire");

        s.publish(
            "app",
            creds(&s, "app", "ASIAONE", Duration::from_secs(3600)),
        );
        wait_for_file(&path, "ASIAONE").await;
        s.publish(
            "app",
            creds(&s, "app", "ASIATWO", Duration::from_secs(3600)),
        );
        let text = wait_for_file(&path, "ASIATWO").await;
        assert!(!text.contains("ASIAONE"));
        // Another role's change does not touch the file's content.
        s.publish(
            "other",
            creds(&s, "other", "ASIAOTHER", Duration::from_secs(3600)),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains("ASIAOTHER"));

        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_withdrawal_removes_the_credentials_from_the_file_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[spiffe]\nregion = eu-west-1\n[other]\nk = v\n").unwrap();
        let s = store(&["app"]);
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(
            Arc::clone(&s),
            "app".into(),
            path.clone(),
            "spiffe".into(),
            async {
                let _ = rx.await;
            },
        ));
        s.publish(
            "app",
            creds(&s, "app", "ASIAGONE", Duration::from_secs(3600)),
        );
        wait_for_file(&path, "ASIAGONE").await;
        let start = std::time::Instant::now();
        s.clear("app", crate::credentials::Status::Starting);
        for _ in 0..100 {
            if !std::fs::read_to_string(&path).unwrap().contains("ASIAGONE") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            text, "[spiffe]\nregion = eu-west-1\n[other]\nk = v\n",
            "{text}"
        );
        // New credentials are written again.
        s.publish(
            "app",
            creds(&s, "app", "ASIABACK", Duration::from_secs(3600)),
        );
        wait_for_file(&path, "ASIABACK").await;
    }

    #[test]
    fn clearing_removes_only_what_the_agent_wrote() {
        let before = "[a]\nk = v\n[spiffe]\nregion = x\n# expires 2026-01-01T00:00:00Z (written by spiffe-aws-agent)\naws_access_key_id = AK\naws_secret_access_key = SK\naws_session_token = TK\n  more-token\nother = 1\n";
        assert_eq!(
            clear_profile_text(before, "spiffe"),
            "[a]\nk = v\n[spiffe]\nregion = x\nother = 1\n"
        );
        assert_eq!(clear_profile_text(before, "none"), before);
    }

    #[test]
    fn byte_order_marks_and_cr_only_files_get_no_duplicate_profile() {
        let bom = "\u{feff}[default]\naws_access_key_id = OLD\n";
        let after = update_profile(bom, "default", V, M);
        assert!(after.starts_with('\u{feff}'), "the BOM stays");
        assert_eq!(after.matches("[default]").count(), 1, "{after:?}");
        assert!(after.contains("aws_access_key_id = AKNEW") && !after.contains("OLD"));
        let cr = "[default]\raws_access_key_id = OLD\r[x]\ry = 1\r";
        let after = update_profile(cr, "default", V, M);
        assert_eq!(after.matches("[default]").count(), 1, "{after:?}");
        assert!(!after.contains('\n'), "CR endings kept: {after:?}");
        assert!(after.contains("aws_access_key_id = AKNEW\r") && after.ends_with("[x]\ry = 1\r"));
    }

    #[test]
    fn control_characters_from_the_service_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&["app"]);
        for bad in ["TK\u{0}", "TK\u{1b}[31m", "TK\tX"] {
            let mut c = creds(&s, "app", "AK", Duration::from_secs(3600));
            c.credentials.session_token = zeroize::Zeroizing::new(bad.to_owned());
            let err = write_profile(&dir.path().join("c"), "spiffe", &c).unwrap_err();
            assert!(
                matches!(err, CredentialsFileError::InvalidValue { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn concurrent_writers_never_lose_a_profile() {
        // Several writers, each keeping its own profile of one file: every profile survives
        // every write.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let s = store(&["app"]);
        let c = creds(&s, "app", "AKCONC", Duration::from_secs(3600));
        std::thread::scope(|scope| {
            for w in 0..4 {
                let (path, c) = (&path, &c);
                scope.spawn(move || {
                    for _ in 0..50 {
                        write_profile(path, &format!("p{w}"), c).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for w in 0..4 {
            assert_eq!(text.matches(&format!("[p{w}]")).count(), 1, "{text}");
        }
    }

    #[test]
    fn a_file_replaced_while_being_updated_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[mine]\n").unwrap();
        let calls = std::cell::Cell::new(0);
        rewrite(&path, |existing| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                // Another tool renames a new version into place after we read ours.
                let tmp = dir.path().join("other-tool.tmp");
                std::fs::write(&tmp, "[mine]\n[theirs]\n").unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            Some(format!("{existing}[added]\n"))
        })
        .unwrap();
        assert_eq!(calls.get(), 2, "started over once");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[mine]\n[theirs]\n[added]\n",
            "their profile was kept"
        );
    }

    #[tokio::test]
    async fn run_retries_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        // The parent "directory" is a file: the first writes fail.
        let blocker = dir.path().join("aws");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("credentials");
        let s = store(&["app"]);
        s.publish(
            "app",
            creds(&s, "app", "ASIARETRY", Duration::from_secs(3600)),
        );
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _task = tokio::spawn(run(
            Arc::clone(&s),
            "app".into(),
            path.clone(),
            "spiffe".into(),
            async {
                let _ = rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&blocker).unwrap();
        wait_for_file(&path, "ASIARETRY").await;
    }

    #[tokio::test]
    async fn run_refuses_bad_arguments() {
        let s = store(&["app"]);
        let path = PathBuf::from("/nonexistent/credentials");
        let err = run(
            Arc::clone(&s),
            "nope".into(),
            path.clone(),
            "p".into(),
            std::future::pending(),
        )
        .await;
        assert!(matches!(err, Err(CredentialsFileError::UnknownRole { .. })));
        let err = run(s, "app".into(), path, "a]".into(), std::future::pending()).await;
        assert!(matches!(
            err,
            Err(CredentialsFileError::InvalidProfile { .. })
        ));
    }

    #[test]
    fn default_path_honours_the_environment() {
        // Read-only check of the current environment (tests run in parallel; no set_var).
        match (
            std::env::var_os("AWS_SHARED_CREDENTIALS_FILE"),
            std::env::var_os("HOME"),
        ) {
            (Some(p), _) if !p.is_empty() && !p.to_string_lossy().starts_with('~') => {
                assert_eq!(default_path(), Some(PathBuf::from(p)))
            }
            (None, Some(h)) if !h.is_empty() => {
                assert_eq!(
                    default_path(),
                    Some(PathBuf::from(h).join(".aws/credentials"))
                )
            }
            _ => {}
        }
    }

    #[test]
    fn prepare_replaces_or_forces_out_what_cannot_be_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[other]\naws_access_key_id = A\n").unwrap();
        // Neither flag: the file stays.
        assert!(!prepare(&path, Preparation::default()).unwrap());
        // --force keeps a loadable file.
        let force = Preparation {
            force: true,
            replace: false,
        };
        assert!(!prepare(&path, force).unwrap());
        assert!(path.exists());
        // --replace removes it: the writer then starts from nothing.
        let replace = Preparation {
            force: false,
            replace: true,
        };
        assert!(prepare(&path, replace).unwrap());
        assert!(!path.exists());
        // --force removes what the writer would refuse to load.
        std::fs::write(&path, b"\xff\xfe not text").unwrap();
        assert!(read_existing(&path).is_err());
        assert!(prepare(&path, force).unwrap());
        assert!(!path.exists());
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(prepare(&path, force).unwrap());
        assert!(std::fs::symlink_metadata(&path).is_err());
        // Nothing there: nothing to do.
        assert!(!prepare(&path, replace).unwrap());
    }
}
