//! Credential rotation while running: the file the password came from (`--password-file` or
//! `--credentials`) is checked every few seconds. A changed password, or with `--credentials`
//! a new user (data-integrator's way: a second user with the same grants, then the first one
//! removed), is first tried against the brokers; only credentials they accept are published,
//! with a new generation number. Refused ones are logged in one line and tried again while the
//! file stays so; the current connections go on meanwhile.
//!
//! Each Kafka loop applies a published change to its own client: a new password with
//! `rd_kafka_sasl_set_credentials` (connections made after it, and the re-authentication brokers
//! ask for with `connections.max.reauth.ms`, use it); a new user by replacing the client, because
//! Kafka does not let a connection re-authenticate as another principal.
//!
//! Flags and environment variables cannot change under a running process, so only files are
//! watched. The password itself is never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{PasswordFile, Secret};

/// A SASL identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The SASL username.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

/// Tries credentials against the brokers: `Err` carries a one-line reason without the secret.
pub type Probe = Arc<dyn Fn(&Identity) -> Result<(), String> + Send + Sync>;

/// How often refused credentials are tried again while the file does not change.
const RETRY_REFUSED: Duration = Duration::from_secs(10);

/// The current identity and how many times it has changed.
#[derive(Debug)]
pub struct PasswordWatch {
    generation: AtomicU64,
    current: Mutex<Identity>,
}

impl PasswordWatch {
    /// A watch starting from `username` and `password`.
    pub fn new(username: &str, password: Secret) -> Self {
        PasswordWatch {
            generation: AtomicU64::new(0),
            current: Mutex::new(Identity {
                username: username.to_string(),
                password,
            }),
        }
    }

    /// Bumped on every change; loops compare it with the one they last applied.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current SASL username.
    pub fn username(&self) -> String {
        self.current.lock().expect("poisoned").username.clone()
    }

    /// The current password.
    pub fn password(&self) -> Secret {
        self.current.lock().expect("poisoned").password.clone()
    }

    /// The current identity.
    pub fn identity(&self) -> Identity {
        self.current.lock().expect("poisoned").clone()
    }

    /// Publishes `password` for the current user if it differs; true if it did.
    #[cfg(test)]
    pub fn update(&self, password: Secret) -> bool {
        let username = self.username();
        self.update_identity(Identity { username, password })
    }

    /// Publishes `identity` if it differs from the current one; true if it did.
    pub fn update_identity(&self, identity: Identity) -> bool {
        let mut cur = self.current.lock().expect("poisoned");
        if *cur == identity {
            return false;
        }
        *cur = identity;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Re-reads `file` every `every` until `stop`, and publishes what `probe` accepts. With
    /// `names_user`, the file's username is taken too (a `--credentials` file the username came
    /// from); otherwise only its password.
    pub async fn watch(
        self: Arc<Self>,
        file: PasswordFile,
        names_user: bool,
        every: Duration,
        probe: Probe,
        stop: CancellationToken,
    ) {
        let stamp = |f: &PasswordFile| -> Option<(SystemTime, u64)> {
            std::fs::metadata(f.path())
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut last = stamp(&file);
        // Credentials read from the file that the brokers refused, and when they were tried.
        let mut refused: Option<(Identity, Instant)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = stamp(&file);
            let candidate = if now != last {
                last = now;
                match file.read_identity(names_user) {
                    Ok((username, password)) => {
                        let username = username.unwrap_or_else(|| self.username());
                        Some(Identity { username, password })
                    }
                    // A half-written file is read again on the next change.
                    Err(e) => {
                        warn!(error = %e, "cannot re-read the credentials; keeping the current ones");
                        None
                    }
                }
            } else {
                match &refused {
                    Some((id, at)) if at.elapsed() >= RETRY_REFUSED => Some(id.clone()),
                    _ => None,
                }
            };
            let Some(candidate) = candidate else { continue };
            if candidate == self.identity() {
                refused = None;
                continue;
            }
            let first_try = refused.as_ref().is_none_or(|(id, _)| *id != candidate);
            let tried = candidate.clone();
            let check = probe.clone();
            let verdict = tokio::task::spawn_blocking(move || check(&tried))
                .await
                .unwrap_or_else(|_| Err("the credentials check panicked".into()));
            match verdict {
                Ok(()) => {
                    refused = None;
                    let before = self.username();
                    let user = candidate.username.clone();
                    if self.update_identity(candidate) {
                        if before == user {
                            info!(file = %file.path().display(), user = %user, generation = self.generation(), "password changed and accepted by the brokers: new connections use it");
                        } else {
                            info!(file = %file.path().display(), from = %before, to = %user, generation = self.generation(), "new user accepted by the brokers: the clients move to it");
                        }
                    }
                }
                Err(reason) => {
                    if first_try {
                        warn!(file = %file.path().display(), user = %candidate.username, current = %self.username(), "the brokers refuse the new credentials ({reason}); keeping the current connections, trying again every {} s", RETRY_REFUSED.as_secs());
                    }
                    refused = Some((candidate, Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bumps_the_generation_only_on_a_real_change() {
        let w = PasswordWatch::new("u", Secret::new("a"));
        assert!(!w.update(Secret::new("a")));
        assert_eq!(w.generation(), 0);
        assert!(w.update(Secret::new("b")));
        assert_eq!((w.generation(), w.password().expose()), (1, "b"));
    }

    #[tokio::test]
    async fn a_rewritten_password_file_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\n").unwrap();
        let w = Arc::new(PasswordWatch::new("u", Secret::new("first")));
        let stop = CancellationToken::new();
        let accept: Probe = Arc::new(|_| Ok(()));
        let task = tokio::spawn(w.clone().watch(
            PasswordFile::Plain(path.clone()),
            false,
            Duration::from_millis(20),
            accept,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&path, "second-longer\n").unwrap();
        for _ in 0..100 {
            if w.generation() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(
            (w.generation(), w.password().expose()),
            (1, "second-longer")
        );
    }

    #[tokio::test]
    async fn a_new_user_is_published_only_once_the_probe_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.yaml");
        let doc = |u: &str, p: &str| format!("kafka:\n  username: {u}\n  password: {p}\n");
        std::fs::write(&path, doc("old", "pw1")).unwrap();
        let w = Arc::new(PasswordWatch::new("old", Secret::new("pw1")));
        let stop = CancellationToken::new();
        // The brokers know `new` only with `good`.
        let probe: Probe = Arc::new(|id: &Identity| {
            if id.username == "new" && id.password.expose() != "good" {
                Err("SASL authentication error".into())
            } else {
                Ok(())
            }
        });
        let task = tokio::spawn(w.clone().watch(
            PasswordFile::Credentials(path.clone()),
            true,
            Duration::from_millis(20),
            probe,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        std::fs::write(&path, doc("new", "wrong-and-longer")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!((w.generation(), w.username()), (0, "old".to_string()));
        std::fs::write(&path, doc("new", "good")).unwrap();
        for _ in 0..100 {
            if w.generation() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(
            (
                w.generation(),
                w.username(),
                w.password().expose().to_string()
            ),
            (1, "new".to_string(), "good".to_string())
        );
    }
}
