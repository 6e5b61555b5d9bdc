//! Message authentication: the cluster [`Keyring`] that signs and verifies every
//! heartbeat message with HMAC-SHA256 (from `ring`), the key-file format, and the
//! [`ReplayWindow`] that accepts each sequence number once.
//!
//! A key is at least [`MIN_KEY_LEN`] random bytes shared by every process of the
//! cluster. The keyring's first key signs; every key verifies, so a key can be
//! rotated without downtime (the scheme of memberlist and Consul):
//!
//! 1. add the new key as the *second* line of every process's key file, restart
//!    them one by one (they sign with the old key, accept both);
//! 2. move the new key to the first line everywhere (they sign with the new key,
//!    still accept the old one);
//! 3. drop the old key.
//!
//! The [crate docs](crate#threat-model) say what the key protects and what it does
//! not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::{digest, hmac};

/// Fewest bytes a key may have: HMAC-SHA256's full strength needs 256 bits of
/// entropy, so 32 random bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Most bytes a key may have: more adds nothing to HMAC-SHA256 (longer keys are
/// hashed down to 32 bytes), and the bound keeps a wrong file from being read whole.
pub const MAX_KEY_LEN: usize = 256;

/// Most keys in a keyring: a rotation needs two; every message that fails
/// verification costs one HMAC per key, so the ring stays short.
pub const MAX_KEYS: usize = 8;

/// Bytes of a MAC: a whole HMAC-SHA256 tag, never truncated.
pub const MAC_LEN: usize = 32;

/// Characters of a MAC on the wire: [`MAC_LEN`] bytes in unpadded URL-safe base64.
pub const MAC_TOKEN_LEN: usize = 43;

/// Sequence numbers a [`ReplayWindow`] remembers below the highest one seen: a
/// message may arrive this far out of order (over two connections) and still count
/// once. 64 fits one machine word.
pub const REPLAY_WINDOW: u64 = 64;

/// Longest key file [`Keyring::load`] reads: [`MAX_KEYS`] lines of the longest hex
/// key, with room for comments.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Standard base64, padding optional: `head -c 32 /dev/urandom | base64` and the
/// same without `=`.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A key or key file that cannot be used. Each names the file and line when there
/// is one.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The key file is longer than a key file can be.
    #[error("key file {} is larger than {limit} bytes: not a key file", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The bound, in bytes.
        limit: u64,
    },
    /// A line is neither hex nor base64.
    #[error("{}line {line}: not a key in hex or base64", location(path))]
    Encoding {
        /// The file, if the keys came from one.
        path: Option<PathBuf>,
        /// The line, from 1.
        line: usize,
    },
    /// A key shorter than [`MIN_KEY_LEN`] or longer than [`MAX_KEY_LEN`] bytes.
    #[error("{}line {line}: a key of {len} bytes; keys have {MIN_KEY_LEN} to {MAX_KEY_LEN} random bytes (make one with `head -c 32 /dev/urandom | base64`)", location(path))]
    Length {
        /// The file, if the keys came from one.
        path: Option<PathBuf>,
        /// The line, from 1 (for a key given as bytes, 1).
        line: usize,
        /// The key's length in bytes.
        len: usize,
    },
    /// No key at all.
    #[error("{}no key: the first line holds the key that signs", location(path))]
    Empty {
        /// The file, if the keys came from one.
        path: Option<PathBuf>,
    },
    /// More than [`MAX_KEYS`] keys.
    #[error("{}{count} keys; a keyring holds at most {MAX_KEYS}", location(path))]
    TooMany {
        /// The file, if the keys came from one.
        path: Option<PathBuf>,
        /// How many keys were given.
        count: usize,
    },
}

fn location(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or(String::new(), |path| {
        format!("key file {}: ", path.display())
    })
}

/// One cluster key: at least [`MIN_KEY_LEN`] random bytes, ready to sign.
///
/// The bytes are not kept: only ring's HMAC state, and a fingerprint (a hash of the
/// key, which tells keys apart in logs and reveals nothing of them).
///
/// ```
/// use chitchat_heartbeat::auth::{Key, KeyError};
///
/// let key = Key::new(&[7u8; 32]).unwrap();
/// assert_eq!(key.fingerprint().len(), 16);
/// assert!(matches!(Key::new(b"password"), Err(KeyError::Length { len: 8, .. })));
/// ```
#[derive(Clone)]
pub struct Key {
    hmac: hmac::Key,
    /// SHA-256 of a label and the key: equality and the fingerprint.
    digest: [u8; 32],
}

impl Key {
    /// A key from its raw bytes.
    ///
    /// # Errors
    /// [`KeyError::Length`] unless it has [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Key, KeyError> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&bytes.len()) {
            return Err(KeyError::Length {
                path: None,
                line: 1,
                len: bytes.len(),
            });
        }
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"chitchat-heartbeat key fingerprint\0");
        context.update(bytes);
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(context.finish().as_ref());
        Ok(Key {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            digest: fingerprint,
        })
    }

    /// A key written as hex (an even number of hex digits, either case) or as
    /// base64 (standard alphabet, padding optional). A line of hex digits only is
    /// read as hex.
    ///
    /// ```
    /// use chitchat_heartbeat::auth::Key;
    ///
    /// let hex = "00".repeat(32);
    /// let base64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; // 32 zero bytes
    /// assert_eq!(Key::parse(&hex).unwrap(), Key::parse(base64).unwrap());
    /// ```
    ///
    /// # Errors
    /// [`KeyError::Encoding`] or [`KeyError::Length`] (line 1).
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let bytes = decode_key(text.trim()).ok_or(KeyError::Encoding {
            path: None,
            line: 1,
        })?;
        Key::new(&bytes)
    }

    /// The first 8 bytes of the key's fingerprint, in hex: tells which key a
    /// process signs with, without showing the key.
    pub fn fingerprint(&self) -> String {
        self.digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.fingerprint())
    }
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    let is_hex = !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let digit = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
        return text
            .as_bytes()
            .chunks(2)
            .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect();
    }
    KEY_BASE64.decode(text).ok()
}

/// The keys of a cluster: the first signs every message sent, any of them verifies
/// a message received. Cheap to clone (shared).
///
/// The key file that [`load`](Self::load) reads holds one key per line, each the
/// hex or base64 of [`MIN_KEY_LEN`] or more random bytes; the first line signs.
/// Empty lines and lines starting with `#` are skipped. Make a key with
/// `head -c 32 /dev/urandom | base64`.
///
/// ```
/// use chitchat_heartbeat::auth::Keyring;
///
/// let file = "# cluster prod\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n".to_owned()
///     + &"11".repeat(32);
/// let ring = Keyring::parse(&file).unwrap();
/// assert_eq!(ring.keys().len(), 2);
/// assert_eq!(ring.signing_key(), &ring.keys()[0]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Arc<[Key]>,
}

impl Keyring {
    /// A keyring of these keys; the first signs.
    ///
    /// # Errors
    /// [`KeyError::Empty`] or [`KeyError::TooMany`].
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyError> {
        match keys.len() {
            0 => Err(KeyError::Empty { path: None }),
            count if count > MAX_KEYS => Err(KeyError::TooMany { path: None, count }),
            _ => Ok(Keyring { keys: keys.into() }),
        }
    }

    /// A keyring of one key.
    pub fn single(key: Key) -> Keyring {
        Keyring {
            keys: Arc::new([key]),
        }
    }

    /// Reads the keys of a key file's text (see the type docs).
    ///
    /// # Errors
    /// A [`KeyError`] naming the first bad line.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() || line_text.starts_with('#') {
                continue;
            }
            let line = i + 1;
            let bytes = decode_key(line_text).ok_or(KeyError::Encoding { path: None, line })?;
            let key = Key::new(&bytes).map_err(|_| KeyError::Length {
                path: None,
                line,
                len: bytes.len(),
            })?;
            keys.push(key);
        }
        Keyring::new(keys)
    }

    /// Reads a key file (see the type docs). Keep it readable by the service's user
    /// only (`chmod 600`): whoever reads it can speak for the cluster.
    ///
    /// # Errors
    /// A [`KeyError`] naming the file (and the line, for a bad key).
    pub fn load(path: impl AsRef<Path>) -> Result<Keyring, KeyError> {
        let path = path.as_ref();
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_KEY_FILE_LEN {
            return Err(KeyError::FileTooLarge {
                path: path.to_owned(),
                limit: MAX_KEY_FILE_LEN,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Keyring::parse(&text).map_err(|err| err.in_file(path))
    }

    /// The key that signs: the first.
    pub fn signing_key(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key, the signing one first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The MAC of `data` with the signing key, as its wire token.
    pub(crate) fn mac_token(&self, data: &[u8]) -> [u8; MAC_TOKEN_LEN] {
        let tag = hmac::sign(&self.signing_key().hmac, data);
        let mut token = [0u8; MAC_TOKEN_LEN];
        // 32 bytes always encode to exactly 43 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(tag.as_ref(), &mut token);
        token
    }

    /// Whether `token` is the MAC of `data` with one of the keys. The comparison is
    /// ring's, in constant time.
    pub(crate) fn verify_token(&self, data: &[u8], token: &[u8]) -> bool {
        if token.len() != MAC_TOKEN_LEN {
            return false;
        }
        let mut tag = [0u8; MAC_LEN + 2];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(token, &mut tag) else {
            return false;
        };
        if len != MAC_LEN {
            return false;
        }
        // Every key is tried, so the time taken does not tell which one matched.
        self.keys.iter().fold(false, |ok, key| {
            hmac::verify(&key.hmac, data, &tag[..MAC_LEN]).is_ok() | ok
        })
    }
}

impl KeyError {
    fn in_file(self, file: &Path) -> KeyError {
        let path = Some(file.to_owned());
        match self {
            KeyError::Encoding { line, .. } => KeyError::Encoding { path, line },
            KeyError::Length { line, len, .. } => KeyError::Length { path, line, len },
            KeyError::Empty { .. } => KeyError::Empty { path },
            KeyError::TooMany { count, .. } => KeyError::TooMany { path, count },
            other => other,
        }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("signing", &self.signing_key().fingerprint())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Accepts each sequence number once: the highest seen, and which of the
/// [`REPLAY_WINDOW`] numbers below it were seen. A number older than the window is
/// refused, even if it was never seen: the window is what bounds the memory.
///
/// ```
/// use chitchat_heartbeat::auth::ReplayWindow;
///
/// let mut window = ReplayWindow::default();
/// assert!(window.accept(10));
/// assert!(window.accept(8)); // out of order, within the window
/// assert!(!window.accept(10)); // seen
/// assert!(window.accept(100));
/// assert!(!window.accept(20)); // older than the window
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i`: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// A window that has seen `seq` and nothing else.
    pub fn starting_at(seq: u64) -> ReplayWindow {
        ReplayWindow {
            highest: seq,
            seen: 1,
        }
    }

    /// Whether [`accept`](Self::accept) would take `seq`, without marking it.
    pub fn is_new(&self, seq: u64) -> bool {
        if seq > self.highest || self.seen == 0 {
            return true;
        }
        let age = self.highest - seq;
        age < REPLAY_WINDOW && self.seen & (1 << age) == 0
    }

    /// Marks `seq` seen; `false` if it was seen already or is older than the window.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.is_new(seq) {
            return false;
        }
        if seq > self.highest || self.seen == 0 {
            let shift = seq - self.highest.min(seq);
            self.seen = if self.seen == 0 || shift >= REPLAY_WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
        true
    }

    /// The highest sequence number seen (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Result<Keyring, KeyError> {
        Keyring::parse(text)
    }

    #[test]
    fn hex_and_base64_with_or_without_padding_give_the_same_key() {
        let bytes: Vec<u8> = (0..32).collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let bare = padded.trim_end_matches('=');
        let key = Key::new(&bytes).unwrap();
        for text in [hex.as_str(), &hex.to_lowercase(), &padded, bare] {
            assert_eq!(Key::parse(text).unwrap(), key, "{text}");
        }
    }

    #[test]
    fn short_long_and_garbled_keys_name_their_line() {
        let short = "00".repeat(31);
        let long = "00".repeat(MAX_KEY_LEN + 1);
        let good = "00".repeat(32);
        assert!(matches!(
            ring(&format!("{good}\n{short}")),
            Err(KeyError::Length {
                line: 2,
                len: 31,
                ..
            })
        ));
        assert!(matches!(ring(&long), Err(KeyError::Length { line: 1, .. })));
        assert!(matches!(
            ring(&format!("# c\n\n{good}\nnot a key!")),
            Err(KeyError::Encoding { line: 4, .. })
        ));
        assert!(matches!(
            ring("# only a comment\n"),
            Err(KeyError::Empty { .. })
        ));
        let nine = [good.as_str(); 9].join("\n");
        assert!(matches!(
            ring(&nine),
            Err(KeyError::TooMany { count: 9, .. })
        ));
    }

    #[test]
    fn errors_read_as_one_sentence_with_the_file() {
        let path = std::env::temp_dir().join(format!("chb-key-{}", std::process::id()));
        std::fs::write(&path, "00\n").unwrap();
        let err = Keyring::load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "key file {}: line 1: a key of 1 bytes; keys have 32 to 256 random bytes \
                 (make one with `head -c 32 /dev/urandom | base64`)",
                path.display()
            )
        );
        let missing = Keyring::load("/nonexistent/chb.key").unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("cannot read key file /nonexistent/chb.key: "));
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let (a, b) = (Key::new(&[1; 32]).unwrap(), Key::new(&[2; 32]).unwrap());
        let old = Keyring::single(a.clone());
        let rotating = Keyring::new(vec![b.clone(), a.clone()]).unwrap();
        let new = Keyring::single(b);
        let signed_by_old = old.mac_token(b"hello");
        let signed_by_rotating = rotating.mac_token(b"hello");
        assert_eq!(signed_by_old.len(), MAC_TOKEN_LEN);
        assert!(rotating.verify_token(b"hello", &signed_by_old));
        assert!(new.verify_token(b"hello", &signed_by_rotating));
        assert!(!old.verify_token(b"hello", &signed_by_rotating));
        assert!(!rotating.verify_token(b"hellO", &signed_by_old));
        assert!(!rotating.verify_token(b"hello", &signed_by_old[..42]));
        assert!(!rotating.verify_token(b"hello", b"-"));
    }

    #[test]
    fn debug_shows_fingerprints_never_keys() {
        let ring = Keyring::single(Key::new(&[0xab; 32]).unwrap());
        let shown = format!("{ring:?}");
        assert!(shown.starts_with("Keyring { signing: \""), "{shown}");
        assert!(!shown.contains("abab"), "{shown}");
    }

    #[test]
    fn replay_window_accepts_each_number_once() {
        let mut window = ReplayWindow::default();
        assert!(window.accept(1));
        assert!(!window.accept(1));
        assert!(window.accept(3));
        assert!(window.accept(2));
        assert!(!window.accept(2));
        assert!(window.accept(3 + REPLAY_WINDOW - 1));
        assert!(!window.accept(2), "now older than the window");
        assert!(window.accept(u64::MAX));
        assert!(!window.accept(u64::MAX));
        let mut fresh = ReplayWindow::starting_at(5);
        assert!(!fresh.accept(5));
        assert!(fresh.accept(4));
        assert_eq!(fresh.highest(), 5);
        assert!(ReplayWindow::default().accept(0));
    }
}
