//! Credentials read from files, and their rotation: the files of `--admin-token-file` and
//! `--redis-password-file` are read again every second, and a changed credential replaces the
//! old one without a restart (a Kubernetes Secret update replaces the mounted file). Of the
//! admin credential only its BLAKE3 hash is kept; a presented credential is hashed and compared
//! in constant time (which also hides the length).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

/// How often the credential file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The current admin credential (its hash).
pub struct AdminCredential {
    expected: RwLock<blake3::Hash>,
}

impl AdminCredential {
    pub fn new(credential: &[u8]) -> Self {
        AdminCredential {
            expected: RwLock::new(blake3::hash(credential)),
        }
    }

    /// Whether `presented` is the current credential.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        // blake3::Hash compares in constant time.
        blake3::hash(presented) == *self.expected.read()
    }

    /// Replaces the credential; whether it changed.
    fn replace(&self, credential: &[u8]) -> bool {
        let hash = blake3::hash(credential);
        let mut expected = self.expected.write();
        let changed = *expected != hash;
        *expected = hash;
        changed
    }
}

/// Reads a secret file without its trailing newlines (from `echo`, editors, Kubernetes
/// Secrets); an empty one is refused.
pub fn read_trimmed(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(bytes)
}

/// Reads an admin credential file: the trailing newline (from `echo`, editors, Kubernetes
/// Secrets) is not part of it; an empty one, or one holding whitespace (it could not be sent as
/// one bearer token), is refused with the reason.
pub fn read_admin_credential(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_trimmed(path)?;
    if bytes.iter().any(u8::is_ascii_whitespace) {
        return Err(
            "the credential holds whitespace (only a trailing newline is ignored)".to_owned(),
        );
    }
    Ok(bytes)
}

/// Reads `path` every [`RELOAD_INTERVAL`] and puts a changed credential in force. A file that
/// cannot be read or holds no usable credential keeps the current one (logged: an operator
/// mid-rotation must not lock every caller out).
pub async fn follow_file(credential: Arc<AdminCredential>, path: PathBuf) {
    let mut interval = tokio::time::interval(RELOAD_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match read_admin_credential(&path) {
            Ok(bytes) => {
                if credential.replace(&bytes) {
                    tracing::info!(file = %path.display(), "admin credential rotated");
                }
            }
            Err(reason) => {
                tracing::warn!(%reason, "admin credential file unusable; keeping the current credential");
            }
        }
    }
}

/// Reads a password file: the trailing newline is not part of it; it must be UTF-8 and not
/// empty.
pub fn read_password(path: &Path) -> Result<String, String> {
    String::from_utf8(read_trimmed(path)?).map_err(|_| "the password is not UTF-8".to_owned())
}

/// Reads the password file every [`RELOAD_INTERVAL`] and publishes a changed password to
/// `current` (the Redis connections re-authenticate with it, and new ones use it). An unusable
/// file keeps the current password. Ends when nobody listens any more.
pub async fn follow_password_file(current: tokio::sync::watch::Sender<String>, path: PathBuf) {
    let mut interval = tokio::time::interval(RELOAD_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if current.is_closed() {
            return;
        }
        match read_password(&path) {
            Ok(password) => {
                let changed = current.send_if_modified(|old| {
                    let changed = *old != password;
                    if changed {
                        *old = password;
                    }
                    changed
                });
                if changed {
                    tracing::info!(file = %path.display(), "Redis password rotated");
                }
            }
            Err(reason) => {
                tracing::warn!(%reason, "Redis password file unusable; keeping the current password");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AdminCredential;

    #[test]
    fn only_the_current_credential_is_accepted() {
        let credential = AdminCredential::new(b"first");
        assert!(credential.accepts(b"first"));
        assert!(!credential.accepts(b"firs"));
        assert!(credential.replace(b"second"));
        assert!(!credential.accepts(b"first"));
        assert!(credential.accepts(b"second"));
        assert!(!credential.replace(b"second"), "unchanged");
    }
}
