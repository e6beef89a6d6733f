//! Signing keys for the tokens Homeroom issues. The directory stores them and their
//! rotation status; choosing which key signs is the broker's job.

use crate::codec::{col, col_json, to_json};
use crate::error::{DirectoryError, db};
use crate::{Directory, SigningKey};
use sqlx::any::AnyRow;

fn key_from_row(row: &AnyRow) -> Result<SigningKey, DirectoryError> {
    Ok(SigningKey {
        kid: col(row, "kid")?,
        alg: col(row, "alg")?,
        private_pem: col(row, "private_pem")?,
        public_jwk: col_json(row, "public_jwk")?,
        created_at: col(row, "created_at")?,
        status: col(row, "status")?,
    })
}

impl Directory {
    /// Stores a new key. An existing `kid` is a [`DirectoryError::Conflict`].
    pub async fn insert_signing_key(&self, key: &SigningKey) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at, status)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_pem)
        .bind(to_json(&key.public_jwk)?)
        .bind(key.created_at)
        .bind(&key.status)
        .execute(&self.pool)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("signing key {}", key.kid)))?;
        Ok(())
    }

    /// Every key, oldest first.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, DirectoryError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(key_from_row).collect()
    }

    /// Sets a key's status (`current`, `next`, `previous`, `retired`).
    /// [`DirectoryError::NotFound`] for an unknown kid.
    pub async fn set_signing_key_status(
        &self,
        kid: &str,
        status: &str,
    ) -> Result<(), DirectoryError> {
        let done = sqlx::query("UPDATE signing_keys SET status = $2 WHERE kid = $1")
            .bind(kid)
            .bind(status)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::NotFound {
                what: format!("signing key {kid}"),
            });
        }
        Ok(())
    }
}
