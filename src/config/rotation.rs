//! Password rotation while running: the file the password came from (`--password-file` or
//! `--credentials`) is checked every few seconds, and a changed password is published with a new
//! generation number. Each Kafka loop applies it to its own client with
//! `rd_kafka_sasl_set_credentials`, so connections made after the change (reconnects, and the
//! re-authentication brokers ask for with `connections.max.reauth.ms`) use the new password.
//!
//! Flags and environment variables cannot change under a running process, so only files are
//! watched. The password itself is never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{PasswordFile, Secret};

/// The current password and how many times it has changed.
#[derive(Debug)]
pub struct PasswordWatch {
    generation: AtomicU64,
    username: String,
    current: Mutex<Secret>,
}

impl PasswordWatch {
    /// A watch starting from `password`.
    pub fn new(username: &str, password: Secret) -> Self {
        PasswordWatch {
            generation: AtomicU64::new(0),
            username: username.to_string(),
            current: Mutex::new(password),
        }
    }

    /// Bumped on every change; loops compare it with the one they last applied.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The SASL username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The current password.
    pub fn password(&self) -> Secret {
        self.current.lock().expect("poisoned").clone()
    }

    /// Publishes `password` if it differs from the current one; true if it did.
    pub fn update(&self, password: Secret) -> bool {
        let mut cur = self.current.lock().expect("poisoned");
        if *cur == password {
            return false;
        }
        *cur = password;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Re-reads `file` every `every` until `stop`, publishing changes.
    pub async fn watch(
        self: Arc<Self>,
        file: PasswordFile,
        every: Duration,
        stop: CancellationToken,
    ) {
        let stamp = |f: &PasswordFile| -> Option<(SystemTime, u64)> {
            std::fs::metadata(f.path())
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut last = stamp(&file);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = stamp(&file);
            if now == last {
                continue;
            }
            last = now;
            match file.read() {
                Ok(pw) => {
                    if self.update(pw) {
                        info!(file = %file.path().display(), generation = self.generation(), "password changed: new connections use it");
                    }
                }
                // A half-written file is read again on the next change.
                Err(e) => warn!(error = %e, "cannot re-read the password; keeping the current one"),
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
        let task = tokio::spawn(w.clone().watch(
            PasswordFile::Plain(path.clone()),
            Duration::from_millis(20),
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
}
