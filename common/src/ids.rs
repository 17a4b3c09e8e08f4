//! Id newtypes. The original gim swapped a user id and a device id in one call; with distinct types
//! that mistake does not compile.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0
            }
        }
    };
}

id_type!(
    /// A tenant.
    AppId
);
id_type!(
    /// A user, unique within its app.
    UserId
);
id_type!(
    /// A registered device; globally unique, bound to one user at first sign-in.
    DeviceId
);
id_type!(
    /// A group, unique within its app.
    GroupId
);
id_type!(
    /// A connection on one conn node; unique per node process.
    ConnId
);
id_type!(
    /// A position in a user's or large group's message list; strictly increasing, never reused.
    Seq
);
id_type!(
    /// A message, the same across every copy of one send.
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_transparent_in_json_and_display() {
        assert_eq!(serde_json::to_string(&UserId(42)).unwrap(), "42");
        assert_eq!(serde_json::from_str::<DeviceId>("7").unwrap(), DeviceId(7));
        assert_eq!(AppId(3).to_string(), "3");
        assert_eq!(i64::from(Seq(9)), 9);
    }
}
