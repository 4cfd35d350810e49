//! Access tokens (JWT, HS256) and refresh tokens (opaque, random, stored hashed, rotated).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use courier_engine::store::{NewRefreshToken, Store};
use courier_engine::{Timestamp, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The `iss` of every access token.
pub const ISSUER: &str = "courier";
/// The `aud` of every access token: it says what the token is for, so that no other
/// JWT signed with the same secret passes for an access token.
pub const AUDIENCE: &str = "courier-api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// A freshly issued pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The JWT.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Keys from the shared secret.
    pub fn new(secret: &str, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            access_ttl,
            refresh_ttl,
        }
    }

    /// The user an access token names and when it expires (seconds since the epoch), if
    /// it is valid and unexpired.
    pub fn verify_access(&self, token: &str) -> Result<(UserId, i64), ApiError> {
        // Only HS256 (so `none` and other algorithms are refused), and every claim checked.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::unauthorized("invalid or expired access token"))?;
        let user = data
            .claims
            .sub
            .parse::<i64>()
            .map(UserId)
            .map_err(|_| ApiError::unauthorized("invalid access token"))?;
        Ok((user, data.claims.exp))
    }

    fn access_token(&self, user: UserId) -> Result<String, ApiError> {
        let now = Timestamp::now().as_millis() / 1000;
        let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user.to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + ttl,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    fn next_refresh(&self, user: UserId, family_id: String) -> (String, NewRefreshToken) {
        let refresh_token = random_token();
        let now = Timestamp::now().as_millis();
        let refresh_ms = i64::try_from(self.refresh_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let row = NewRefreshToken {
            user_id: user.0,
            family_id,
            token_hash: digest(&refresh_token),
            expires_at: now + refresh_ms,
            created_at: now,
        };
        (refresh_token, row)
    }

    fn pair(&self, user: UserId, refresh_token: String) -> Result<TokenPair, ApiError> {
        Ok(TokenPair {
            access_token: self.access_token(user)?,
            refresh_token,
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// Issues the pair of a new login: its refresh token starts a new family.
    pub async fn issue(&self, store: &dyn Store, user: UserId) -> Result<TokenPair, ApiError> {
        let (refresh_token, row) = self.next_refresh(user, random_token());
        store.insert_refresh_token(row).await?;
        self.pair(user, refresh_token)
    }

    /// Spends a refresh token for a new pair of the same family. Reusing a spent token
    /// revokes its whole family: whoever holds a copy (a thief, or the victim) must log in.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        refresh_token: &str,
    ) -> Result<(UserId, TokenPair), ApiError> {
        let refused = || ApiError::unauthorized("invalid or expired refresh token");
        let row = store
            .refresh_token(&digest(refresh_token))
            .await?
            .ok_or_else(refused)?;
        let now = Timestamp::now();
        if row.revoked_at.is_some() || row.expires_at <= now.as_millis() {
            return Err(refused());
        }
        let user = UserId(row.user_id);
        let (next_token, next) = self.next_refresh(user, row.family_id.clone());
        let rotated =
            row.spent_at.is_none() && store.rotate_refresh_token(row.id, next, now).await?;
        if !rotated {
            tracing::warn!(
                user = row.user_id,
                "refresh token reused: revoking its family"
            );
            store.revoke_token_family(&row.family_id, now).await?;
            return Err(refused());
        }
        Ok((user, self.pair(user, next_token)?))
    }

    /// Revokes the family of a refresh token (logout). Unknown tokens are ignored.
    pub async fn revoke(&self, store: &dyn Store, refresh_token: &str) -> Result<(), ApiError> {
        if let Some(row) = store.refresh_token(&digest(refresh_token)).await? {
            store
                .revoke_token_family(&row.family_id, Timestamp::now())
                .await?;
        }
        Ok(())
    }
}
