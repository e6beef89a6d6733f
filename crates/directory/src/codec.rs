//! Conversions between Rust values and the portable column types: booleans are BIGINT
//! 0/1, lists and JSON are TEXT. Owns nothing; used by every query module.

use crate::error::DirectoryError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A boolean as stored (0/1).
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Serialises a list or JSON value for a TEXT column.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, DirectoryError> {
    serde_json::to_string(value)
        .map_err(|e| DirectoryError::Invalid(format!("cannot encode as JSON: {e}")))
}

/// Reads a column, naming it in the error.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, DirectoryError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name)
        .map_err(|e| DirectoryError::Corrupt(format!("column {name}: {e}")))
}

/// Reads a 0/1 BIGINT column as a boolean.
pub(crate) fn col_flag(row: &AnyRow, name: &str) -> Result<bool, DirectoryError> {
    Ok(col::<i64>(row, name)? != 0)
}

/// Reads a JSON TEXT column.
pub(crate) fn col_json<T: DeserializeOwned>(row: &AnyRow, name: &str) -> Result<T, DirectoryError> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text).map_err(|e| DirectoryError::Corrupt(format!("column {name}: {e}")))
}

/// Trims and lower-cases an email address or domain: the form every lookup uses.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}
