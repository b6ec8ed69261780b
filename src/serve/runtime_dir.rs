//! Where the agent socket and the container token files go when no path is given.
//!
//! Root (and a service whose unit creates the directory for it, such as systemd's
//! `RuntimeDirectory=spiffe-aws-agent`) uses `/run/spiffe-aws-agent`. Any other user cannot
//! create a directory in `/run`, so a user with a per-user runtime directory
//! (`$XDG_RUNTIME_DIR`, `/run/user/UID` in a login session) gets
//! `$XDG_RUNTIME_DIR/spiffe-aws-agent` instead; without one, the system path stays and a
//! failure to create it says which flag or key to set ([`denied_hint`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The runtime directory of root and of system services.
pub const SYSTEM_RUNTIME_DIR: &str = "/run/spiffe-aws-agent";
/// The agent socket's file name in the runtime directory.
pub const AGENT_SOCKET_NAME: &str = "agent.sock";
/// The container tokens' base name in the runtime directory (role `R`: `container-token.R`).
pub const CONTAINER_TOKEN_NAME: &str = "container-token";

/// The runtime directory for a process with effective uid `euid` and `XDG_RUNTIME_DIR`
/// `xdg`: the per-user one for a non-root user who has an absolute one, else the system one.
pub fn choose(euid: u32, xdg: Option<OsString>) -> PathBuf {
    match xdg.map(PathBuf::from) {
        Some(dir) if euid != 0 && dir.is_absolute() => dir.join("spiffe-aws-agent"),
        _ => PathBuf::from(SYSTEM_RUNTIME_DIR),
    }
}

/// This process's runtime directory (see [`choose`]).
pub fn default_dir() -> PathBuf {
    choose(effective_uid(), std::env::var_os("XDG_RUNTIME_DIR"))
}

/// The agent socket when `--agent-socket` or `[agent_socket]` names no path.
pub fn default_agent_socket() -> PathBuf {
    default_dir().join(AGENT_SOCKET_NAME)
}

/// The container token base when `--container-token-file` or `token_file` is not given.
pub fn default_container_token_file() -> PathBuf {
    default_dir().join(CONTAINER_TOKEN_NAME)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What to add to "cannot create/bind PATH: permission denied": which setting moves the
/// file (`setting`, e.g. `--agent-socket PATH ([agent_socket] path)`), and the per-user
/// runtime directory. Empty for any other error, or a path outside the system directory.
pub fn denied_hint(path: &Path, source: &std::io::Error, setting: &str) -> String {
    if source.kind() != std::io::ErrorKind::PermissionDenied {
        return String::new();
    }
    if path.starts_with(SYSTEM_RUNTIME_DIR) {
        format!(
            " ({SYSTEM_RUNTIME_DIR} is for root or a service whose unit creates it: as another user, set XDG_RUNTIME_DIR to move the default to $XDG_RUNTIME_DIR/spiffe-aws-agent, or pass {setting})"
        )
    } else {
        format!(" (choose a directory this user may write with {setting})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_users_without_a_runtime_dir_use_the_system_dir() {
        let system = PathBuf::from(SYSTEM_RUNTIME_DIR);
        assert_eq!(choose(0, Some("/run/user/0".into())), system);
        assert_eq!(choose(0, None), system);
        assert_eq!(choose(1000, None), system);
        // Relative or empty: not a runtime directory.
        assert_eq!(choose(1000, Some("".into())), system);
        assert_eq!(choose(1000, Some("run/user/1000".into())), system);
    }

    #[test]
    fn other_users_use_their_runtime_dir() {
        assert_eq!(
            choose(1000, Some("/run/user/1000".into())),
            PathBuf::from("/run/user/1000/spiffe-aws-agent")
        );
    }

    #[test]
    fn the_hint_names_the_setting_only_when_access_was_denied() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let hint = denied_hint(
            Path::new("/run/spiffe-aws-agent/agent.sock"),
            &denied,
            "--agent-socket PATH",
        );
        assert!(hint.contains("XDG_RUNTIME_DIR"), "{hint}");
        assert!(hint.contains("--agent-socket PATH"), "{hint}");
        let hint = denied_hint(Path::new("/srv/a.sock"), &denied, "--agent-socket PATH");
        assert!(
            hint.contains("--agent-socket PATH") && !hint.contains("XDG"),
            "{hint}"
        );
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(denied_hint(Path::new("/run/x"), &other, "--x"), "");
    }
}
