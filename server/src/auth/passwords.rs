//! Password hashing with bcrypt, off the async threads.
//!
//! bcrypt reads at most 72 bytes of its input. Rather than truncate silently or refuse
//! long passphrases, every password is pre-hashed: bcrypt is given the base64 of its
//! SHA-256 (44 bytes), so every byte of a password up to the 128-character limit counts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

fn prehash(password: &str) -> String {
    STANDARD.encode(Sha256::digest(password.as_bytes()))
}

/// Hashes a password with the given cost on the blocking pool.
pub async fn hash(password: String, cost: u32) -> Result<String, ApiError> {
    let hashed =
        actix_web::rt::task::spawn_blocking(move || bcrypt::hash(prehash(&password), cost))
            .await
            .map_err(ApiError::internal)?;
    hashed.map_err(ApiError::internal)
}

/// A hash at the configured cost, made once, that unknown users are checked against so
/// their login takes as long as a wrong password (one bcrypt run, not two).
fn dummy_hash(cost: u32) -> &'static str {
    static DUMMY: std::sync::OnceLock<(u32, String)> = std::sync::OnceLock::new();
    let (made_at, hash) = DUMMY.get_or_init(|| {
        (
            cost,
            bcrypt::hash("courier-timing-equaliser", cost).unwrap_or_default(),
        )
    });
    if *made_at != cost {
        tracing::warn!(
            cost,
            made_at,
            "dummy hash cost differs from the configured cost"
        );
    }
    hash
}

/// Checks a password against a stored hash on the blocking pool. With no stored hash
/// (unknown user) a dummy hash is checked instead, so both cases take about as long.
pub async fn verify(password: String, stored: Option<String>, cost: u32) -> bool {
    let outcome = actix_web::rt::task::spawn_blocking(move || {
        let candidate = prehash(&password);
        match stored {
            Some(stored) => bcrypt::verify(&candidate, &stored).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&candidate, dummy_hash(cost));
                false
            }
        }
    })
    .await;
    outcome.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn long_passwords_differ_past_byte_72() {
        let base = "a".repeat(80);
        let stored = hash(format!("{base}1"), 4).await.unwrap();
        assert!(verify(format!("{base}1"), Some(stored.clone()), 4).await);
        assert!(!verify(format!("{base}2"), Some(stored), 4).await);
    }

    #[actix_rt::test]
    async fn unknown_users_never_verify() {
        assert!(!verify("anything".into(), None, 4).await);
    }
}
