//! Identifiers. Each is a newtype over `String` so a tenant id cannot be passed where a
//! client id is expected. Reference ids ([`RefId`]) are random (80 bits of a ULID's
//! randomness plus its time part) so a neighbour's cannot be guessed.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A district (or school) served by this Homeroom.
    TenantId
);
string_id!(
    /// An upstream provider configured in a tenant (e.g. `google`, `demo-idp`).
    ProviderId
);
string_id!(
    /// A downstream app's OAuth client id.
    ClientId
);
string_id!(
    /// A Homeroom account.
    AccountId
);
string_id!(
    /// The reference id of one login attempt: shown to the student, stamped on every
    /// audit event and response header, and the key of the troubleshooter's trace.
    RefId
);

impl AccountId {
    /// A fresh, time-ordered account id.
    pub fn generate() -> Self {
        Self(format!(
            "acc_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ))
    }
}

impl RefId {
    /// A fresh reference id, short enough to read out over the phone.
    pub fn generate() -> Self {
        Self(format!("HR-{}", ulid::Ulid::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_ids_are_unique_and_prefixed() {
        let a = RefId::generate();
        let b = RefId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("HR-"));
        assert_eq!(a.as_str().len(), 29);
    }
}
