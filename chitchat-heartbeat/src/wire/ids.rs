//! Cluster and node ids: short printable-ASCII names that need no escaping on the
//! wire.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// Longest cluster or node id, in bytes: room for a host name label or a UUID with a
/// prefix, short enough that a probe stays a few dozen bytes.
pub const MAX_ID_LEN: usize = 64;

/// An id string that is not a valid cluster or node id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Ids have at least one byte.
    #[error("id is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`].
    #[error("id of {len} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
        /// [`MAX_ID_LEN`].
        limit: usize,
    },
    /// A byte outside printable ASCII `!`..=`~` (space and non-ASCII included).
    #[error("id byte {byte:#04x} at offset {offset} is not printable ascii")]
    BadByte {
        /// Position of the byte in the id.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

fn check_id(id: &[u8]) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            len: id.len(),
            limit: MAX_ID_LEN,
        });
    }
    match id.iter().position(|b| !b.is_ascii_graphic()) {
        Some(offset) => Err(IdError::BadByte {
            offset,
            byte: id[offset],
        }),
        None => Ok(()),
    }
}

/// The id in `token`, if it follows the id rules.
pub(crate) fn parse_id(token: &[u8]) -> Option<String> {
    check_id(token).ok()?;
    // check_id admits ASCII only, so this cannot fail.
    String::from_utf8(token.to_vec()).ok()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) String);

        impl $name {
            /// Checks `id` against the id rules: 1 to [`MAX_ID_LEN`] bytes of
            /// printable ASCII (`!`..=`~`).
            ///
            /// # Errors
            /// An [`IdError`] saying which rule `id` breaks.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check_id(id.as_bytes())?;
                Ok($name(id))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(id: &str) -> Result<Self, IdError> {
                $name::new(id)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Lets maps keyed by the id be searched with a `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type! {
    /// The name of a node, unique in its cluster: 1 to [`MAX_ID_LEN`] bytes of
    /// printable ASCII, so it needs no escaping on the wire.
    ///
    /// ```
    /// use chitchat_heartbeat::wire::{IdError, NodeId};
    ///
    /// let id = NodeId::new("node-7").unwrap();
    /// assert_eq!(id, "node-7");
    /// assert_eq!(NodeId::new("node 7"), Err(IdError::BadByte { offset: 4, byte: b' ' }));
    /// ```
    NodeId
}

id_type! {
    /// The name of a cluster: a master only accepts nodes of its own cluster. Same
    /// rules as [`NodeId`].
    ///
    /// ```
    /// use chitchat_heartbeat::wire::ClusterId;
    ///
    /// let prod: ClusterId = "prod".parse().unwrap();
    /// assert_eq!(prod.as_str(), "prod");
    /// assert!("".parse::<ClusterId>().is_err());
    /// ```
    ClusterId
}
