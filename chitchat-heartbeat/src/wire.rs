//! The heartbeat wire format: versioned, explicit, one message per frame.
//!
//! Every message is one line of printable ASCII: space-separated tokens, no tabs, no
//! control bytes, never a `\n`, never a trailing `\r` or space. It travels as the
//! payload of one chitchat frame (delimiter `\n`), so you can watch and even speak
//! the protocol with `nc`. Nothing is ever written from struct memory: every field is
//! formatted and parsed by the rules below.
//!
//! # Message layout
//!
//! ```text
//! CHB <version> <type> <cluster> <node> <incarnation> <seq> [<body fields>...]
//! ```
//!
//! | # | token         | format                                                    |
//! |---|---------------|-----------------------------------------------------------|
//! | 1 | magic         | the three bytes `CHB`                                     |
//! | 2 | version       | decimal; this crate speaks [`VERSION`] `1`                |
//! | 3 | type          | `register`, `register-ack`, `refuse`, `probe`, `probe-ack` or `leave` |
//! | 4 | cluster       | cluster id: 1 to 64 bytes of printable ASCII `!`..=`~`    |
//! | 5 | node          | node id: same rules as the cluster id                     |
//! | 6 | incarnation   | decimal `u64`: the node's run, grows on every restart     |
//! | 7 | seq           | decimal `u64`: the sender's sequence number               |
//!
//! Tokens are separated by exactly one space (0x20). Numbers are ASCII digits only,
//! no sign, at most the range of `u64` (leading zeros are accepted on input and never
//! produced). Whatever the type, the header names the *node* the exchange is about:
//! the master's replies echo the cluster, node, incarnation and seq of the message
//! they answer (see [`Message::reply`]).
//!
//! # Body of each message type
//!
//! | type           | sent by | body fields                   | header meaning                              |
//! |----------------|---------|-------------------------------|---------------------------------------------|
//! | `register`     | node    | `<addr> [<key>=<value>...]`   | the node's id, its incarnation, a fresh seq  |
//! | `register-ack` | master  | none                          | echo of the `register` accepted             |
//! | `refuse`       | master  | `<reason>`                    | echo of the `register` refused              |
//! | `probe`        | master  | none                          | the node probed, the incarnation the master knows, the probe seq |
//! | `probe-ack`    | node    | none                          | the node's own id and *current* incarnation, the probe's seq echoed |
//! | `leave`        | node    | none                          | the node leaving, its incarnation, a fresh seq |
//!
//! - `<addr>`: where the node answers probes, as `IP:PORT` (`[IPv6]:PORT`, with
//!   `%scope` for link-local addresses), as printed by [`Addr`]'s `Display`. The IPv6
//!   flow label is not carried.
//! - `<key>=<value>`: zero to [`MAX_METADATA_ENTRIES`] metadata entries, in
//!   ascending key order on output (any order on input, no key twice). Key (1 to
//!   [`MAX_METADATA_KEY_LEN`] bytes) and value (0 to [`MAX_METADATA_VALUE_LEN`]
//!   bytes) are UTF-8, percent-escaped: bytes `!`..=`~` other than `%` and `=` are
//!   written as themselves, every other byte as `%` and two hex digits (upper case
//!   on output, either case on input). So `zone=eu west` is `zone=eu%20west`.
//! - `<reason>`: `wrong-cluster`, `duplicate-id` or `stale-incarnation` (see
//!   [`RefuseReason`]).
//!
//! No other token may follow the body: a new field is a new [`VERSION`].
//!
//! Examples (one frame each):
//!
//! ```text
//! CHB 1 register prod node-7 1717171717000 1 10.0.0.7:7001 role=worker zone=eu%20west
//! CHB 1 register-ack prod node-7 1717171717000 1
//! CHB 1 refuse prod node-7 1717171717000 1 duplicate-id
//! CHB 1 probe prod node-7 1717171717000 42
//! CHB 1 probe-ack prod node-7 1717171717000 42
//! CHB 1 leave prod node-7 1717171717000 2
//! ```
//!
//! # Limits
//! The id and metadata bounds make the longest possible message 15 573 bytes,
//! under [`MAX_MESSAGE_LEN`] (16 KiB, a quarter of chitchat's default 64 KiB frame
//! limit); [`decode`] refuses anything longer before looking at it.
//!
//! # Choosing an incarnation
//! A node picks its incarnation once per run, and it must be greater than that of
//! any earlier run with the same node id: the start time in milliseconds since the
//! Unix epoch does, as does a counter kept on disk.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use chitchat_heartbeat::wire::{decode, Body, ClusterId, Message, Metadata, NodeId};
//!
//! let mut metadata = Metadata::new();
//! metadata.insert("zone", "eu west").unwrap();
//! let register = Message {
//!     cluster: ClusterId::new("prod").unwrap(),
//!     node: NodeId::new("node-7").unwrap(),
//!     incarnation: 3,
//!     seq: 1,
//!     body: Body::Register { addr: "10.0.0.7:7001".parse().unwrap(), metadata },
//! };
//! let mut out = BytesMut::new();
//! register.encode(&mut out);
//! assert_eq!(&out[..], b"CHB 1 register prod node-7 3 1 10.0.0.7:7001 zone=eu%20west");
//! assert_eq!(decode(&out).unwrap(), register);
//! ```

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use chitchat_core::Addr;

/// First token of every message: tells a heartbeat message from anything else that
/// reaches the port.
pub const MAGIC: &str = "CHB";

/// The protocol version this crate writes and the only one it reads.
pub const VERSION: u32 = 1;

/// Longest cluster or node id, in bytes: room for a host name label or a UUID with a
/// prefix, short enough that a probe stays a few dozen bytes.
pub const MAX_ID_LEN: usize = 64;

/// Most metadata entries in a `register`: enough for role, zone, version and a few
/// labels; metadata is a description, not a payload.
pub const MAX_METADATA_ENTRIES: usize = 16;

/// Longest metadata key, in bytes before escaping.
pub const MAX_METADATA_KEY_LEN: usize = 64;

/// Longest metadata value, in bytes before escaping.
pub const MAX_METADATA_VALUE_LEN: usize = 256;

/// Longest message [`decode`] accepts, in bytes. The worst case [`Message::encode`]
/// can produce (every metadata byte escaped to three) is 15 573 bytes; 16 KiB is a
/// quarter of the default frame limit, so a heartbeat frame never trips it.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

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
}

/// Why the master refused a `register`. The node should not retry unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The node belongs to another cluster (see [`Message::check_cluster`]).
    WrongCluster,
    /// Another live node holds this id with the same incarnation at another address.
    DuplicateId,
    /// The master knows a newer incarnation of this node: this run is outdated.
    StaleIncarnation,
}

impl RefuseReason {
    /// The token on the wire: `wrong-cluster`, `duplicate-id`, `stale-incarnation`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefuseReason::WrongCluster => "wrong-cluster",
            RefuseReason::DuplicateId => "duplicate-id",
            RefuseReason::StaleIncarnation => "stale-incarnation",
        }
    }

    fn from_token(token: &[u8]) -> Option<Self> {
        [
            RefuseReason::WrongCluster,
            RefuseReason::DuplicateId,
            RefuseReason::StaleIncarnation,
        ]
        .into_iter()
        .find(|reason| reason.as_str().as_bytes() == token)
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message says, beyond the header every message has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Node to master: "I exist, probe me there".
    Register {
        /// Where the node answers probes.
        addr: Addr,
        /// Labels shown in the master's membership table.
        metadata: Metadata,
    },
    /// Master to node: the registration is accepted (also sent again for a repeat).
    RegisterAck,
    /// Master to node: the registration is refused.
    Refuse {
        /// Why.
        reason: RefuseReason,
    },
    /// Master to node: "are you there?".
    Probe,
    /// Node to master: "yes", with the node's current incarnation in the header.
    ProbeAck,
    /// Node to master: the node shuts down gracefully and must not be probed again.
    Leave,
}

impl Body {
    /// The type token on the wire, e.g. `probe-ack`.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Register { .. } => "register",
            Body::RegisterAck => "register-ack",
            Body::Refuse { .. } => "refuse",
            Body::Probe => "probe",
            Body::ProbeAck => "probe-ack",
            Body::Leave => "leave",
        }
    }
}

/// One heartbeat message: the header fields every message carries, and its body.
/// The wire version is not a field: [`encode`](Self::encode) writes [`VERSION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The cluster of the node concerned; the master refuses other clusters.
    pub cluster: ClusterId,
    /// The node the exchange is about (sender of node messages, target of master ones).
    pub node: NodeId,
    /// The node's run: tells a restarted node from its previous life.
    pub incarnation: u64,
    /// Matches a reply to its request: set by the requester, echoed by the replier.
    pub seq: u64,
    /// The message type and its own fields.
    pub body: Body,
}

/// A message for another cluster: the master refuses the node with
/// [`RefuseReason::WrongCluster`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("message for cluster {found}, expected cluster {expected}")]
pub struct WrongCluster {
    /// The cluster the receiver belongs to.
    pub expected: ClusterId,
    /// The cluster the message names.
    pub found: ClusterId,
}

impl Message {
    /// Appends the message to `dst`: the payload of one frame, without the
    /// delimiter. Always shorter than [`MAX_MESSAGE_LEN`], free of `\n` and not
    /// ending in `\r`, so the framer accepts it.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(64 + self.node.0.len() + self.cluster.0.len());
        // Writing to a BytesMut never fails.
        let _ = write!(
            dst,
            "{MAGIC} {VERSION} {} {} {} {} {}",
            self.body.name(),
            self.cluster,
            self.node,
            self.incarnation,
            self.seq
        );
        match &self.body {
            Body::Register { addr, metadata } => {
                let _ = write!(dst, " {addr}");
                for (key, value) in metadata.iter() {
                    dst.put_u8(b' ');
                    escape(key.as_bytes(), dst);
                    dst.put_u8(b'=');
                    escape(value.as_bytes(), dst);
                }
            }
            Body::Refuse { reason } => {
                dst.put_u8(b' ');
                dst.extend_from_slice(reason.as_str().as_bytes());
            }
            Body::RegisterAck | Body::Probe | Body::ProbeAck | Body::Leave => {}
        }
    }

    /// A message with this one's header (cluster, node, incarnation, seq) and
    /// `body`: how the master acks, refuses and how a node answers a probe.
    ///
    /// ```
    /// use chitchat_heartbeat::wire::{Body, Message};
    /// # let probe = chitchat_heartbeat::wire::decode(b"CHB 1 probe prod n1 3 42").unwrap();
    /// let ack = probe.reply(Body::ProbeAck);
    /// assert_eq!((ack.seq, ack.incarnation), (42, 3));
    /// ```
    pub fn reply(&self, body: Body) -> Message {
        Message {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            body,
        }
    }

    /// Whether the message belongs to cluster `expected`. Not part of [`decode`]: a
    /// message of another cluster is well formed, and the master answers it with
    /// [`RefuseReason::WrongCluster`].
    ///
    /// ```
    /// use chitchat_heartbeat::wire::{decode, ClusterId};
    ///
    /// let probe = decode(b"CHB 1 probe staging n1 3 42").unwrap();
    /// let err = probe.check_cluster(&ClusterId::new("prod").unwrap()).unwrap_err();
    /// assert_eq!(err.found, "staging");
    /// ```
    ///
    /// # Errors
    /// [`WrongCluster`] naming both clusters.
    pub fn check_cluster(&self, expected: &ClusterId) -> Result<(), WrongCluster> {
        if &self.cluster == expected {
            Ok(())
        } else {
            Err(WrongCluster {
                expected: expected.clone(),
                found: self.cluster.clone(),
            })
        }
    }
}

/// A field of a message, as named by [`WireError::Malformed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireField {
    /// The version token.
    Version,
    /// The message type token (missing).
    Type,
    /// The cluster id.
    Cluster,
    /// The node id.
    Node,
    /// The incarnation number.
    Incarnation,
    /// The sequence number.
    Seq,
    /// The address of a `register`.
    Addr,
    /// A metadata entry of a `register` (syntax, escaping, UTF-8, bounds, repeated key).
    Metadata,
    /// The reason of a `refuse`.
    Reason,
    /// Tokens after the last field of the message type.
    Trailing,
}

impl fmt::Display for WireField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireField::Version => "version",
            WireField::Type => "message type",
            WireField::Cluster => "cluster id",
            WireField::Node => "node id",
            WireField::Incarnation => "incarnation",
            WireField::Seq => "sequence number",
            WireField::Addr => "address",
            WireField::Metadata => "metadata",
            WireField::Reason => "refuse reason",
            WireField::Trailing => "trailing data",
        })
    }
}

/// A frame that is not a valid heartbeat message. Nothing was decoded; the engine
/// adds the peer address, reports it and closes that connection only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Longer than [`MAX_MESSAGE_LEN`]; not looked at.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// [`MAX_MESSAGE_LEN`].
        limit: usize,
    },
    /// Does not start with [`MAGIC`]: not a heartbeat message at all.
    #[error("not a heartbeat message (bad magic)")]
    BadMagic,
    /// A heartbeat message of a version this crate does not speak.
    #[error("unknown protocol version {version} (this side speaks {VERSION})")]
    UnknownVersion {
        /// The version the message announced.
        version: u32,
    },
    /// The type token is none of the known message types.
    #[error("unknown message type {name:?}")]
    UnknownType {
        /// The type token as received (lossily decoded, at most 32 bytes).
        name: String,
    },
    /// A field is missing or does not follow its format.
    #[error("malformed {field}")]
    Malformed {
        /// Which field.
        field: WireField,
    },
}

fn malformed(field: WireField) -> WireError {
    WireError::Malformed { field }
}

/// Parses one frame's payload (delimiter already removed) into a [`Message`].
///
/// ```
/// use chitchat_heartbeat::wire::{decode, Body, WireError, WireField};
///
/// let probe = decode(b"CHB 1 probe prod node-7 3 42").unwrap();
/// assert_eq!((probe.body, probe.seq), (Body::Probe, 42));
/// assert_eq!(decode(b"CHB 2 probe prod node-7 3 42"), Err(WireError::UnknownVersion { version: 2 }));
/// assert_eq!(
///     decode(b"CHB 1 probe prod node-7 -3 42"),
///     Err(WireError::Malformed { field: WireField::Incarnation })
/// );
/// ```
///
/// # Errors
/// A [`WireError`] for the first fault found, checked in this order: length, magic,
/// version, then each field from left to right. Never panics, whatever the bytes.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    if frame.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong {
            len: frame.len(),
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut tokens = frame.split(|&b| b == b' ');
    if tokens.next() != Some(MAGIC.as_bytes()) {
        return Err(WireError::BadMagic);
    }
    let version = tokens
        .next()
        .and_then(parse_decimal)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(malformed(WireField::Version))?;
    if version != VERSION {
        return Err(WireError::UnknownVersion { version });
    }
    let kind = tokens.next().ok_or(malformed(WireField::Type))?;
    let kind = match kind {
        b"register" | b"register-ack" | b"refuse" | b"probe" | b"probe-ack" | b"leave" => kind,
        _ => {
            let shown = &kind[..kind.len().min(32)];
            return Err(WireError::UnknownType {
                name: String::from_utf8_lossy(shown).into_owned(),
            });
        }
    };
    let cluster = id_token(tokens.next(), WireField::Cluster).map(ClusterId)?;
    let node = id_token(tokens.next(), WireField::Node).map(NodeId)?;
    let incarnation = tokens
        .next()
        .and_then(parse_decimal)
        .ok_or(malformed(WireField::Incarnation))?;
    let seq = tokens
        .next()
        .and_then(parse_decimal)
        .ok_or(malformed(WireField::Seq))?;
    let body = match kind {
        b"register" => {
            let addr = tokens
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<Addr>().ok())
                .ok_or(malformed(WireField::Addr))?;
            let mut metadata = Metadata::new();
            for entry in tokens.by_ref() {
                let (key, value) = parse_entry(entry).ok_or(malformed(WireField::Metadata))?;
                match metadata.insert(key, value) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => return Err(malformed(WireField::Metadata)),
                }
            }
            Body::Register { addr, metadata }
        }
        b"refuse" => {
            let reason = tokens
                .next()
                .and_then(RefuseReason::from_token)
                .ok_or(malformed(WireField::Reason))?;
            Body::Refuse { reason }
        }
        b"register-ack" => Body::RegisterAck,
        b"probe" => Body::Probe,
        b"probe-ack" => Body::ProbeAck,
        _ => Body::Leave,
    };
    if tokens.next().is_some() {
        return Err(malformed(WireField::Trailing));
    }
    Ok(Message {
        cluster,
        node,
        incarnation,
        seq,
        body,
    })
}

fn id_token(token: Option<&[u8]>, field: WireField) -> Result<String, WireError> {
    let token = token.ok_or(malformed(field))?;
    check_id(token).map_err(|_| malformed(field))?;
    // check_id admits ASCII only, so this cannot fail.
    String::from_utf8(token.to_vec()).map_err(|_| malformed(field))
}

/// ASCII digits only (no sign, no space), within `u64`.
fn parse_decimal(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
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

fn parse_entry(entry: &[u8]) -> Option<(String, String)> {
    let eq = entry.iter().position(|&b| b == b'=')?;
    Some((unescape(&entry[..eq])?, unescape(&entry[eq + 1..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T: FromStr>(text: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        text.parse().unwrap()
    }

    fn message(body: Body) -> Message {
        Message {
            cluster: id("prod"),
            node: id("node-7"),
            incarnation: 1_717_171_717_000,
            seq: 42,
            body,
        }
    }

    fn encoded(message: &Message) -> Vec<u8> {
        let mut out = BytesMut::new();
        message.encode(&mut out);
        out.to_vec()
    }

    fn all_bodies() -> Vec<Body> {
        let mut metadata = Metadata::new();
        metadata.insert("zone", "eu west").unwrap();
        metadata.insert("k=%", "é\n\r").unwrap();
        vec![
            Body::Register {
                addr: "10.0.0.7:7001".parse().unwrap(),
                metadata,
            },
            Body::Register {
                addr: "[fe80::1%3]:7001".parse().unwrap(),
                metadata: Metadata::new(),
            },
            Body::RegisterAck,
            Body::Refuse {
                reason: RefuseReason::WrongCluster,
            },
            Body::Refuse {
                reason: RefuseReason::DuplicateId,
            },
            Body::Refuse {
                reason: RefuseReason::StaleIncarnation,
            },
            Body::Probe,
            Body::ProbeAck,
            Body::Leave,
        ]
    }

    #[test]
    fn every_message_type_round_trips() {
        for body in all_bodies() {
            let message = message(body);
            let bytes = encoded(&message);
            assert!(!bytes.contains(&b'\n') && bytes.last() != Some(&b'\r'));
            assert_eq!(
                decode(&bytes),
                Ok(message),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn layout_matches_the_documented_examples() {
        let cases: [(Body, &[u8]); 6] = [
            (
                Body::RegisterAck,
                b"CHB 1 register-ack prod node-7 1717171717000 42",
            ),
            (
                Body::Refuse {
                    reason: RefuseReason::DuplicateId,
                },
                b"CHB 1 refuse prod node-7 1717171717000 42 duplicate-id",
            ),
            (Body::Probe, b"CHB 1 probe prod node-7 1717171717000 42"),
            (
                Body::ProbeAck,
                b"CHB 1 probe-ack prod node-7 1717171717000 42",
            ),
            (Body::Leave, b"CHB 1 leave prod node-7 1717171717000 42"),
            (
                Body::Register {
                    addr: "[::1]:7001".parse().unwrap(),
                    metadata: Metadata::new(),
                },
                b"CHB 1 register prod node-7 1717171717000 42 [::1]:7001",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(encoded(&message(body)), expected);
        }
    }

    #[test]
    fn metadata_is_percent_escaped_in_key_order() {
        let mut metadata = Metadata::new();
        metadata.insert("zone", "eu west").unwrap();
        metadata.insert("a=b", "50%\n").unwrap();
        let message = message(Body::Register {
            addr: "10.0.0.7:7001".parse().unwrap(),
            metadata,
        });
        assert_eq!(
            encoded(&message),
            b"CHB 1 register prod node-7 1717171717000 42 10.0.0.7:7001 a%3Db=50%25%0A zone=eu%20west"
        );
    }

    #[test]
    fn lower_case_escapes_and_leading_zeros_are_accepted() {
        let message = decode(b"CHB 01 register prod n 007 0 1.2.3.4:5 k=%c3%a9").unwrap();
        assert_eq!(message.incarnation, 7);
        let Body::Register { metadata, .. } = message.body else {
            panic!("not a register")
        };
        assert_eq!(metadata.get("k"), Some("é"));
    }

    #[test]
    fn too_long_is_refused_before_parsing() {
        let frame = vec![b'x'; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            decode(&frame),
            Err(WireError::TooLong {
                len: MAX_MESSAGE_LEN + 1,
                limit: MAX_MESSAGE_LEN
            })
        );
    }

    #[test]
    fn the_largest_message_fits_the_limit() {
        let mut metadata = Metadata::new();
        for i in 0..MAX_METADATA_ENTRIES {
            let key = format!("{i:02}{}", "\u{1}".repeat(MAX_METADATA_KEY_LEN - 2));
            metadata
                .insert(key, "\u{1}".repeat(MAX_METADATA_VALUE_LEN))
                .unwrap();
        }
        let addr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";
        let message = Message {
            cluster: ClusterId::new("c".repeat(MAX_ID_LEN)).unwrap(),
            node: NodeId::new("n".repeat(MAX_ID_LEN)).unwrap(),
            incarnation: u64::MAX,
            seq: u64::MAX,
            body: Body::Register {
                addr: addr.parse().unwrap(),
                metadata,
            },
        };
        let bytes = encoded(&message);
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes), Ok(message));
    }

    #[test]
    fn bad_magic() {
        for frame in [
            &b""[..],
            b"CHX 1 probe c n 1 1",
            b"chb 1 probe c n 1 1",
            b" CHB 1",
        ] {
            assert_eq!(decode(frame), Err(WireError::BadMagic), "{frame:?}");
        }
    }

    #[test]
    fn unknown_version_carries_the_version_seen() {
        assert_eq!(
            decode(b"CHB 2 anything at all"),
            Err(WireError::UnknownVersion { version: 2 })
        );
        assert_eq!(
            decode(b"CHB 0 probe c n 1 1"),
            Err(WireError::UnknownVersion { version: 0 })
        );
    }

    #[test]
    fn malformed_version() {
        for frame in [
            &b"CHB"[..],
            b"CHB x probe",
            b"CHB  1",
            b"CHB 4294967296 probe",
        ] {
            assert_eq!(
                decode(frame),
                Err(malformed(WireField::Version)),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn unknown_type_names_the_token() {
        assert_eq!(
            decode(b"CHB 1 ping c n 1 1"),
            Err(WireError::UnknownType {
                name: "ping".into()
            })
        );
        assert_eq!(
            decode(b"CHB 1 \xff c n 1 1"),
            Err(WireError::UnknownType {
                name: "\u{fffd}".into()
            })
        );
        assert_eq!(decode(b"CHB 1"), Err(malformed(WireField::Type)));
    }

    #[test]
    fn malformed_ids() {
        let long = format!("CHB 1 probe {} n 1 1", "c".repeat(MAX_ID_LEN + 1));
        for frame in [&b"CHB 1 probe"[..], b"CHB 1 probe  n 1 1", long.as_bytes()] {
            assert_eq!(decode(frame), Err(malformed(WireField::Cluster)));
        }
        for frame in [
            &b"CHB 1 probe c"[..],
            b"CHB 1 probe c n\x01 1 1",
            b"CHB 1 probe c \xc3\xa9 1 1",
        ] {
            assert_eq!(decode(frame), Err(malformed(WireField::Node)));
        }
    }

    #[test]
    fn malformed_numbers() {
        for inc in ["", "-1", "+1", "1.0", "0x1", "18446744073709551616"] {
            let frame = format!("CHB 1 probe c n {inc} 1");
            assert_eq!(
                decode(frame.as_bytes()),
                Err(malformed(WireField::Incarnation)),
                "{inc:?}"
            );
        }
        assert_eq!(decode(b"CHB 1 probe c n 1"), Err(malformed(WireField::Seq)));
        assert_eq!(
            decode(b"CHB 1 probe c n 1 x"),
            Err(malformed(WireField::Seq))
        );
        assert_eq!(
            decode(b"CHB 1 leave c n 1 1\r"),
            Err(malformed(WireField::Seq))
        );
        assert_eq!(
            decode(b"CHB 1 probe c n 1 18446744073709551615")
                .unwrap()
                .seq,
            u64::MAX
        );
    }

    #[test]
    fn malformed_address() {
        for addr in ["", "localhost:80", "1.2.3.4", "1.2.3.4:99999", "\u{e9}"] {
            let frame = format!("CHB 1 register c n 1 1 {addr}");
            assert_eq!(
                decode(frame.as_bytes()),
                Err(malformed(WireField::Addr)),
                "{addr:?}"
            );
        }
        assert_eq!(
            decode(b"CHB 1 register c n 1 1"),
            Err(malformed(WireField::Addr))
        );
    }

    #[test]
    fn malformed_metadata() {
        let long_key = format!("{}=v", "k".repeat(MAX_METADATA_KEY_LEN + 1));
        let long_value = format!("k={}", "v".repeat(MAX_METADATA_VALUE_LEN + 1));
        let too_many = (0..=MAX_METADATA_ENTRIES)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(" ");
        for entry in [
            "novalue",
            "=v",
            "k=v=w",
            "k=%",
            "k=%4",
            "k=%zz",
            "k=%ff",
            "k=a b=c ",
            "k=1 k=2",
            long_key.as_str(),
            long_value.as_str(),
            too_many.as_str(),
        ] {
            let frame = format!("CHB 1 register c n 1 1 1.2.3.4:5 {entry}");
            assert_eq!(
                decode(frame.as_bytes()),
                Err(malformed(WireField::Metadata)),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn malformed_reason() {
        for frame in [&b"CHB 1 refuse c n 1 1"[..], b"CHB 1 refuse c n 1 1 busy"] {
            assert_eq!(decode(frame), Err(malformed(WireField::Reason)));
        }
    }

    #[test]
    fn trailing_tokens_are_refused() {
        for frame in [
            &b"CHB 1 probe c n 1 1 extra"[..],
            b"CHB 1 probe c n 1 1 ",
            b"CHB 1 refuse c n 1 1 duplicate-id x",
        ] {
            assert_eq!(
                decode(frame),
                Err(malformed(WireField::Trailing)),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn wrong_cluster_is_a_check_not_a_decode_error() {
        let probe = decode(b"CHB 1 probe staging n 1 1").unwrap();
        assert_eq!(probe.check_cluster(&id("staging")), Ok(()));
        let err = probe.check_cluster(&id("prod")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "message for cluster staging, expected cluster prod"
        );
    }

    #[test]
    fn reply_echoes_the_header() {
        let register = message(Body::Register {
            addr: "1.2.3.4:5".parse().unwrap(),
            metadata: Metadata::new(),
        });
        let refuse = register.reply(Body::Refuse {
            reason: RefuseReason::WrongCluster,
        });
        assert_eq!(
            (
                &refuse.cluster,
                &refuse.node,
                refuse.incarnation,
                refuse.seq
            ),
            (
                &register.cluster,
                &register.node,
                register.incarnation,
                register.seq
            )
        );
    }

    #[test]
    fn id_rules() {
        assert_eq!(NodeId::new(""), Err(IdError::Empty));
        assert_eq!(
            NodeId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, limit: 64 })
        );
        assert_eq!(
            ClusterId::new("a\u{e9}"),
            Err(IdError::BadByte {
                offset: 1,
                byte: 0xc3
            })
        );
        assert!(NodeId::new("x".repeat(64)).is_ok());
        assert!(NodeId::new("%=!~").is_ok());
    }

    #[test]
    fn metadata_bounds() {
        let mut metadata = Metadata::new();
        assert_eq!(
            metadata.insert("k".repeat(65), ""),
            Err(MetadataError::KeyTooLong { len: 65, limit: 64 })
        );
        assert_eq!(
            metadata.insert("k", "v".repeat(257)),
            Err(MetadataError::ValueTooLong {
                len: 257,
                limit: 256
            })
        );
        for i in 0..MAX_METADATA_ENTRIES {
            metadata.insert(format!("k{i}"), "v").unwrap();
        }
        assert_eq!(
            metadata.insert("one-more", "v"),
            Err(MetadataError::TooManyEntries { limit: 16 })
        );
        assert_eq!(metadata.insert("k0", "w"), Ok(Some("v".into())));
        assert_eq!(metadata.len(), MAX_METADATA_ENTRIES);
    }

    #[test]
    fn error_messages_are_lower_case() {
        let errors = [
            WireError::BadMagic.to_string(),
            WireError::UnknownVersion { version: 9 }.to_string(),
            malformed(WireField::Seq).to_string(),
        ];
        assert_eq!(
            errors,
            [
                "not a heartbeat message (bad magic)",
                "unknown protocol version 9 (this side speaks 1)",
                "malformed sequence number",
            ]
        );
    }
}
