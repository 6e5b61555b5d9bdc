//! Node metadata: bounded key/value labels, and their percent-escaped form on the
//! wire.

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};

/// Most metadata entries in a `register`: enough for role, zone, version and a few
/// labels; metadata is a description, not a payload.
pub const MAX_METADATA_ENTRIES: usize = 16;

/// Longest metadata key, in bytes before escaping.
pub const MAX_METADATA_KEY_LEN: usize = 64;

/// Longest metadata value, in bytes before escaping.
pub const MAX_METADATA_VALUE_LEN: usize = 256;

/// A metadata entry that cannot be added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Keys have at least one byte.
    #[error("metadata key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_METADATA_KEY_LEN`].
    #[error("metadata key of {len} bytes exceeds the {limit}-byte limit")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// [`MAX_METADATA_KEY_LEN`].
        limit: usize,
    },
    /// The value is longer than [`MAX_METADATA_VALUE_LEN`].
    #[error("metadata value of {len} bytes exceeds the {limit}-byte limit")]
    ValueTooLong {
        /// The value's length in bytes.
        len: usize,
        /// [`MAX_METADATA_VALUE_LEN`].
        limit: usize,
    },
    /// There are already [`MAX_METADATA_ENTRIES`] entries.
    #[error("more than {limit} metadata entries")]
    TooManyEntries {
        /// [`MAX_METADATA_ENTRIES`].
        limit: usize,
    },
}

/// Key/value labels a node registers with (role, zone, version...), bounded so a
/// `register` always fits in a frame. Keys are unique and kept in ascending order.
///
/// ```
/// use chitchat_heartbeat::wire::{Metadata, MetadataError};
///
/// let mut metadata = Metadata::new();
/// metadata.insert("zone", "eu-west").unwrap();
/// assert_eq!(metadata.get("zone"), Some("eu-west"));
/// assert_eq!(metadata.insert("", "x"), Err(MetadataError::EmptyKey));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Sets `key` to `value`, returning the value it replaces.
    ///
    /// # Errors
    /// A [`MetadataError`] when the key or value breaks a bound, or the key is new
    /// and there are already [`MAX_METADATA_ENTRIES`]; the metadata is then unchanged.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>, MetadataError> {
        let (key, value) = (key.into(), value.into());
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if key.len() > MAX_METADATA_KEY_LEN {
            return Err(MetadataError::KeyTooLong {
                len: key.len(),
                limit: MAX_METADATA_KEY_LEN,
            });
        }
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(MetadataError::ValueTooLong {
                len: value.len(),
                limit: MAX_METADATA_VALUE_LEN,
            });
        }
        if self.0.len() >= MAX_METADATA_ENTRIES && !self.0.contains_key(&key) {
            return Err(MetadataError::TooManyEntries {
                limit: MAX_METADATA_ENTRIES,
            });
        }
        Ok(self.0.insert(key, value))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of every key and value, before escaping: what a master bounds per row
    /// (`HeartbeatConfig::max_metadata_len`).
    ///
    /// ```
    /// use chitchat_heartbeat::wire::Metadata;
    ///
    /// let mut metadata = Metadata::new();
    /// metadata.insert("zone", "eu-west").unwrap();
    /// assert_eq!(metadata.size(), 4 + 7);
    /// ```
    pub fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Appends ` key=value` for every entry, percent-escaped, in key order.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        for (key, value) in &self.0 {
            dst.put_u8(b' ');
            escape(key.as_bytes(), dst);
            dst.put_u8(b'=');
            escape(value.as_bytes(), dst);
        }
    }
}
/// Bytes written as themselves inside a metadata key or value.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b'%' && byte != b'='
}

fn escape(text: &[u8], dst: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text {
        if is_plain(byte) {
            dst.put_u8(byte);
        } else {
            dst.put_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        }
    }
}

fn unescape(text: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = hex_value(*bytes.next()?)?;
            let low = hex_value(*bytes.next()?)?;
            out.push((high << 4) | low);
        } else if is_plain(byte) {
            out.push(byte);
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

pub(crate) fn parse_entry(entry: &[u8]) -> Option<(String, String)> {
    let eq = entry.iter().position(|&b| b == b'=')?;
    Some((unescape(&entry[..eq])?, unescape(&entry[eq + 1..])?))
}
