//! The heartbeat wire format: versioned, explicit, one message per frame, every
//! message authenticated when the cluster has a key.
//!
//! Every message is one line of printable ASCII: space-separated tokens, no tabs, no
//! control bytes, never a `\n`, never a trailing `\r` or space. It travels as the
//! payload of one chitchat frame (delimiter `\n`), so you can watch the protocol
//! with `nc`. Nothing is ever written from struct memory: every field is formatted
//! and parsed by the rules below.
//!
//! # Message layout (version 2)
//!
//! ```text
//! CHB 2 <type> <cluster> <node> <incarnation> <epoch> <seq> [<body fields>...] <mac>
//! ```
//!
//! | # | token         | format                                                    |
//! |---|---------------|-----------------------------------------------------------|
//! | 1 | magic         | the three bytes `CHB`                                     |
//! | 2 | version       | decimal; this crate speaks [`VERSION`] `2`                |
//! | 3 | type          | `register`, `register-ack`, `refuse`, `probe`, `probe-ack` or `leave` |
//! | 4 | cluster       | cluster id: 1 to 64 bytes of printable ASCII `!`..=`~`    |
//! | 5 | node          | node id: same rules as the cluster id                     |
//! | 6 | incarnation   | decimal `u64`: the node's run, grows on every restart     |
//! | 7 | epoch         | decimal `u64`: the master's run (its start time in ms), or `0` |
//! | 8 | seq           | decimal `u64`: the requester's sequence number            |
//! | … | body          | per type, below                                           |
//! | last | mac        | `-`, or 43 characters: the HMAC-SHA256 of every byte before the space that precedes it, in unpadded URL-safe base64 |
//!
//! Tokens are separated by exactly one space (0x20). Numbers are ASCII digits only,
//! no sign, at most the range of `u64` (leading zeros are accepted on input and never
//! produced). Whatever the type, the header names the *node* the exchange is about,
//! and the *master run* it is with:
//!
//! | type           | sent by | body fields                   | `incarnation`, `epoch`, `seq`                                  |
//! |----------------|---------|-------------------------------|----------------------------------------------------------------|
//! | `register`     | node    | `<addr> [<key>=<value>...]`   | its own; the epoch it last got from this master (`0`: none); a fresh seq |
//! | `register-ack` | master  | none                          | echo of the `register`; the master's epoch; echo               |
//! | `refuse`       | master  | `<reason> <known>`            | echo of the `register`; the master's epoch; echo               |
//! | `probe`        | master  | none                          | as the master knows the node; the master's epoch; a fresh seq  |
//! | `probe-ack`    | node    | none                          | its own (equal to the probe's); echo; echo                     |
//! | `leave`        | node    | none                          | its own; as in `register`; a fresh seq                         |
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
//! - `<reason>`: a [`RefuseReason`] token (`wrong-cluster`, `duplicate-id`,
//!   `stale-incarnation`, `too-far-ahead`, `bad-address`, `metadata-too-large`,
//!   `table-full`, `busy`); `<known>`: the incarnation the master holds for this
//!   node id, `0` if none (a node refused as stale takes a greater one).
//! - `<mac>`: see [Authentication](#authentication).
//!
//! No other token may follow the body: a new field is a new [`VERSION`].
//!
//! Examples (one frame each; the MAC shortened here to `…`):
//!
//! ```text
//! CHB 2 register prod node-7 1717171717000 0 1 10.0.0.7:7001 role=worker zone=eu%20west …
//! CHB 2 register-ack prod node-7 1717171717000 1717171700000 1 …
//! CHB 2 refuse prod node-7 1717171717000 1717171700000 1 stale-incarnation 1717171717999 …
//! CHB 2 probe prod node-7 1717171717000 1717171700000 42 …
//! CHB 2 probe-ack prod node-7 1717171717000 1717171700000 42 …
//! CHB 2 leave prod node-7 1717171717000 1717171700000 2 -
//! ```
//!
//! # Authentication
//! With a [`Keyring`], [`Message::encode`] ends the message with the HMAC-SHA256
//! (key: the keyring's signing key) of the bytes before the last space, and
//! [`decode`] refuses a message unless one of the keyring's keys verifies it
//! ([`WireError::Unauthenticated`], [`WireError::BadMac`]), before any field past
//! the version is looked at. Without a keyring, `encode` writes `-` and `decode`
//! does not check the token (a keyless side cannot verify, and says so once: see
//! [`Master::security_warning`](crate::Master::security_warning)).
//!
//! The MAC covers the type, so a message cannot be turned into another, and the
//! ids, incarnation, epoch and seq, so it cannot be moved to another node, run or
//! exchange. Replays of a whole message are what the sequence numbers are for: the
//! master accepts a node's `register` and `leave` once per incarnation and seq, the
//! node a master's `probe` once per epoch and seq ([`ReplayWindow`](crate::auth::ReplayWindow)), and each side
//! takes a reply only to the request it has outstanding.
//!
//! # Versions
//! Version 1 (no epoch, no MAC, `refuse` without `<known>`) is not read any more:
//! [`decode`] returns [`WireError::OldVersion`], which the receiver reports naming
//! the peer; upgrade every process of a cluster together.
//!
//! # Limits
//! The id and metadata bounds make the longest possible message 15 638 bytes,
//! under [`MAX_MESSAGE_LEN`] (16 KiB, a quarter of chitchat's default 64 KiB frame
//! limit); [`decode`] refuses anything longer before looking at it.
//!
//! # Choosing an incarnation
//! A node picks its incarnation once per run, and it must be greater than that of
//! any earlier run with the same node id: the start time in milliseconds since the
//! Unix epoch does, as does a counter kept on disk. A master refuses an incarnation
//! more than [`HeartbeatConfig::max_incarnation_skew`](crate::HeartbeatConfig) ahead
//! of its own clock, so a clock-based one is the safe choice.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use chitchat_heartbeat::auth::{Key, Keyring};
//! use chitchat_heartbeat::wire::{decode, Body, ClusterId, Message, Metadata, NodeId, WireError};
//!
//! let mut metadata = Metadata::new();
//! metadata.insert("zone", "eu west").unwrap();
//! let register = Message {
//!     cluster: ClusterId::new("prod").unwrap(),
//!     node: NodeId::new("node-7").unwrap(),
//!     incarnation: 3,
//!     epoch: 0,
//!     seq: 1,
//!     body: Body::Register { addr: "10.0.0.7:7001".parse().unwrap(), metadata },
//! };
//! let mut plain = BytesMut::new();
//! register.encode(None, &mut plain);
//! assert_eq!(&plain[..], b"CHB 2 register prod node-7 3 0 1 10.0.0.7:7001 zone=eu%20west -");
//! assert_eq!(decode(&plain, None).unwrap(), register);
//!
//! let keys = Keyring::single(Key::new(&[42; 32]).unwrap());
//! let mut signed = BytesMut::new();
//! register.encode(Some(&keys), &mut signed);
//! assert_eq!(decode(&signed, Some(&keys)).unwrap(), register);
//! assert_eq!(decode(&plain, Some(&keys)), Err(WireError::Unauthenticated));
//! ```

mod ids;
mod metadata;

use std::fmt::{self, Write as _};

use bytes::{BufMut, BytesMut};
use chitchat_core::Addr;

pub use self::ids::{ClusterId, IdError, NodeId, MAX_ID_LEN};
pub use self::metadata::{
    Metadata, MetadataError, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN,
};
use crate::auth::{Keyring, MAC_TOKEN_LEN};

/// First token of every message: tells a heartbeat message from anything else that
/// reaches the port.
pub const MAGIC: &str = "CHB";

/// The protocol version this crate writes and the only one it reads.
pub const VERSION: u32 = 2;

/// Longest message [`decode`] accepts, in bytes. The worst case [`Message::encode`]
/// can produce (every metadata byte escaped to three, the longest ids, numbers and
/// address, a MAC) is 15 638 bytes; 16 KiB is a quarter of the default frame limit,
/// so a heartbeat frame never trips it.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// The MAC token of a message sent without a key.
const NO_MAC: &[u8] = b"-";

/// Why the master refused a `register`: the node decides from it whether to retry,
/// take a new incarnation, or give up on that master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The node belongs to another cluster (see [`Message::check_cluster`]). Final.
    WrongCluster,
    /// Another live node holds this id with the same incarnation at another address.
    /// The node takes a new incarnation and registers again.
    DuplicateId,
    /// The master knows a newer incarnation of this node. The node takes one greater
    /// than the known one and registers again.
    StaleIncarnation,
    /// The incarnation is too far ahead of the master's clock. The node retries
    /// later (its clock runs ahead, or it was given a wrong incarnation).
    TooFarAhead,
    /// The probe address is one the master does not dial (another host's, loopback,
    /// unspecified, multicast, broadcast). Final: a configuration error.
    BadAddress,
    /// The metadata is over the master's per-node bound. Final.
    MetadataTooLarge,
    /// The master's table is full. The node retries later.
    TableFull,
    /// Too many registrations from the node's IP address just now. The node retries
    /// later.
    Busy,
}

impl RefuseReason {
    /// Every reason, in declaration order.
    pub const ALL: [RefuseReason; 8] = [
        RefuseReason::WrongCluster,
        RefuseReason::DuplicateId,
        RefuseReason::StaleIncarnation,
        RefuseReason::TooFarAhead,
        RefuseReason::BadAddress,
        RefuseReason::MetadataTooLarge,
        RefuseReason::TableFull,
        RefuseReason::Busy,
    ];

    /// The token on the wire, e.g. `stale-incarnation`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefuseReason::WrongCluster => "wrong-cluster",
            RefuseReason::DuplicateId => "duplicate-id",
            RefuseReason::StaleIncarnation => "stale-incarnation",
            RefuseReason::TooFarAhead => "too-far-ahead",
            RefuseReason::BadAddress => "bad-address",
            RefuseReason::MetadataTooLarge => "metadata-too-large",
            RefuseReason::TableFull => "table-full",
            RefuseReason::Busy => "busy",
        }
    }

    /// Whether retrying with the same settings can never succeed.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RefuseReason::WrongCluster | RefuseReason::BadAddress | RefuseReason::MetadataTooLarge
        )
    }

    /// Position in [`ALL`](Self::ALL), for counting by reason.
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_token(token: &[u8]) -> Option<Self> {
        RefuseReason::ALL
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
#[non_exhaustive]
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
        /// The incarnation the master holds for this node id; 0 if none.
        known: u64,
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
/// The wire version and the MAC are not fields: [`encode`](Self::encode) writes
/// [`VERSION`] and signs, [`decode`] checks both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The cluster of the node concerned; the master refuses other clusters.
    pub cluster: ClusterId,
    /// The node the exchange is about (sender of node messages, target of master ones).
    pub node: NodeId,
    /// The node's run: tells a restarted node from its previous life.
    pub incarnation: u64,
    /// The master's run: tells a restarted master from its previous life, and the
    /// probes of one master from another's.
    pub epoch: u64,
    /// Matches a reply to its request, and makes each request unique: set by the
    /// requester, echoed by the replier.
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
    /// delimiter, ending with the MAC from `keys`' signing key (or `-` without
    /// keys). Always shorter than [`MAX_MESSAGE_LEN`], free of `\n` and not ending
    /// in `\r`, so the framer accepts it.
    pub fn encode(&self, keys: Option<&Keyring>, dst: &mut BytesMut) {
        let start = dst.len();
        dst.reserve(128 + self.node.as_str().len() + self.cluster.as_str().len());
        // Writing to a BytesMut never fails.
        let _ = write!(
            dst,
            "{MAGIC} {VERSION} {} {} {} {} {} {}",
            self.body.name(),
            self.cluster,
            self.node,
            self.incarnation,
            self.epoch,
            self.seq
        );
        match &self.body {
            Body::Register { addr, metadata } => {
                let _ = write!(dst, " {addr}");
                metadata.encode(dst);
            }
            Body::Refuse { reason, known } => {
                let _ = write!(dst, " {reason} {known}");
            }
            Body::RegisterAck | Body::Probe | Body::ProbeAck | Body::Leave => {}
        }
        sign(start, keys, dst);
    }

    /// The message encoded into a new buffer (see [`encode`](Self::encode)).
    pub fn to_bytes(&self, keys: Option<&Keyring>) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(keys, &mut out);
        out
    }

    /// A message with this one's header (cluster, node, incarnation, epoch, seq)
    /// and `body`: how a node answers a probe, and (with the master's epoch set
    /// after) how the master answers a registration.
    ///
    /// ```
    /// use chitchat_heartbeat::wire::{decode, Body};
    ///
    /// let probe = decode(b"CHB 2 probe prod n1 3 9 42 -", None).unwrap();
    /// let ack = probe.reply(Body::ProbeAck);
    /// assert_eq!((ack.incarnation, ack.epoch, ack.seq), (3, 9, 42));
    /// ```
    pub fn reply(&self, body: Body) -> Message {
        Message {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            incarnation: self.incarnation,
            epoch: self.epoch,
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
    /// let probe = decode(b"CHB 2 probe staging n1 3 9 42 -", None).unwrap();
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
    /// The master's epoch.
    Epoch,
    /// The sequence number.
    Seq,
    /// The address of a `register`.
    Addr,
    /// A metadata entry of a `register` (syntax, escaping, UTF-8, bounds, repeated key).
    Metadata,
    /// The reason of a `refuse`.
    Reason,
    /// The known incarnation of a `refuse`.
    Known,
    /// The MAC token (missing, or neither `-` nor a MAC).
    Mac,
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
            WireField::Epoch => "epoch",
            WireField::Seq => "sequence number",
            WireField::Addr => "address",
            WireField::Metadata => "metadata",
            WireField::Reason => "refuse reason",
            WireField::Known => "known incarnation",
            WireField::Mac => "mac",
            WireField::Trailing => "trailing data",
        })
    }
}

/// A frame that is not a valid heartbeat message, or not an authentic one. Nothing
/// was decoded; the receiver reports it naming the peer and closes that connection
/// only.
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
    /// A heartbeat message of an older version than [`VERSION`]: the peer runs an
    /// older release.
    #[error(
        "message of protocol version {version}, older than this side's {VERSION}: upgrade the peer"
    )]
    OldVersion {
        /// The version the message announced.
        version: u32,
    },
    /// A heartbeat message of a version this crate does not speak.
    #[error("unknown protocol version {version} (this side speaks {VERSION})")]
    UnknownVersion {
        /// The version the message announced.
        version: u32,
    },
    /// This side has a key and the message carries no MAC (`-`): the peer has no
    /// key.
    #[error("message without a mac, and this side requires one (the peer has no cluster key)")]
    Unauthenticated,
    /// The MAC does not verify with any key of this side's keyring: another key, or
    /// a forged or altered message.
    #[error(
        "message with a mac that no key of this side verifies (another cluster key, or forged)"
    )]
    BadMac,
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

impl WireError {
    /// Whether this is an authentication failure (no MAC, or a MAC that does not
    /// verify), as opposed to a malformed message.
    pub fn is_auth(&self) -> bool {
        matches!(self, WireError::Unauthenticated | WireError::BadMac)
    }
}

fn malformed(field: WireField) -> WireError {
    WireError::Malformed { field }
}

/// Parses one frame's payload (delimiter already removed) into a [`Message`]; with
/// `keys`, only if one of them verifies its MAC.
///
/// ```
/// use chitchat_heartbeat::wire::{decode, Body, WireError, WireField};
///
/// let probe = decode(b"CHB 2 probe prod node-7 3 9 42 -", None).unwrap();
/// assert_eq!((probe.body, probe.seq), (Body::Probe, 42));
/// assert_eq!(decode(b"CHB 1 probe prod node-7 3 42", None), Err(WireError::OldVersion { version: 1 }));
/// assert_eq!(
///     decode(b"CHB 2 probe prod node-7 -3 9 42 -", None),
///     Err(WireError::Malformed { field: WireField::Incarnation })
/// );
/// ```
///
/// # Errors
/// A [`WireError`] for the first fault found, checked in this order: length, magic,
/// version, MAC (with `keys`), then each field from left to right. Never panics,
/// whatever the bytes.
pub fn decode(frame: &[u8], keys: Option<&Keyring>) -> Result<Message, WireError> {
    if frame.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong {
            len: frame.len(),
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut head = frame.splitn(3, |&b| b == b' ');
    if head.next() != Some(MAGIC.as_bytes()) {
        return Err(WireError::BadMagic);
    }
    let version = head
        .next()
        .and_then(parse_decimal)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(malformed(WireField::Version))?;
    if version < VERSION {
        return Err(WireError::OldVersion { version });
    }
    if version != VERSION {
        return Err(WireError::UnknownVersion { version });
    }
    // The MAC is the last token; everything before its space is what it signs.
    let split = frame.iter().rposition(|&b| b == b' ');
    let (signed, mac) = match split {
        Some(at) if at > MAGIC.len() + 2 => (&frame[..at], &frame[at + 1..]),
        _ => return Err(malformed(WireField::Type)),
    };
    let is_mac = mac.len() == MAC_TOKEN_LEN
        && mac
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match keys {
        Some(_) if mac == NO_MAC => return Err(WireError::Unauthenticated),
        Some(keys) if !keys.verify_token(signed, mac) => {
            return Err(if is_mac {
                WireError::BadMac
            } else {
                malformed(WireField::Mac)
            })
        }
        None if mac != NO_MAC && !is_mac => return Err(malformed(WireField::Mac)),
        _ => {}
    }
    parse_fields(signed)
}

/// Ends the message that starts at `start` in `dst` with its MAC token.
fn sign(start: usize, keys: Option<&Keyring>, dst: &mut BytesMut) {
    let token = keys.map(|keys| keys.mac_token(&dst[start..]));
    dst.put_u8(b' ');
    match &token {
        Some(token) => dst.extend_from_slice(token),
        None => dst.extend_from_slice(NO_MAC),
    }
}

/// Appends a `probe` to `dst`, as [`Message::encode`] would, without building a
/// [`Message`]: the master sends one per node per round.
pub(crate) fn encode_probe(
    cluster: &ClusterId,
    node: &NodeId,
    incarnation: u64,
    epoch: u64,
    seq: u64,
    keys: Option<&Keyring>,
    dst: &mut BytesMut,
) {
    let start = dst.len();
    let _ = write!(
        dst,
        "{MAGIC} {VERSION} probe {cluster} {node} {incarnation} {epoch} {seq}"
    );
    sign(start, keys, dst);
}

/// Parses the signed part of a message whose magic and version are checked.
fn parse_fields(signed: &[u8]) -> Result<Message, WireError> {
    let mut tokens = signed.split(|&b| b == b' ').skip(2);
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
    let mut number = |field| {
        tokens
            .next()
            .and_then(parse_decimal)
            .ok_or(malformed(field))
    };
    let incarnation = number(WireField::Incarnation)?;
    let epoch = number(WireField::Epoch)?;
    let seq = number(WireField::Seq)?;
    let body = match kind {
        b"register" => {
            let addr = tokens
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<Addr>().ok())
                .ok_or(malformed(WireField::Addr))?;
            let mut metadata = Metadata::new();
            for entry in tokens.by_ref() {
                let (key, value) =
                    metadata::parse_entry(entry).ok_or(malformed(WireField::Metadata))?;
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
            let known = tokens
                .next()
                .and_then(parse_decimal)
                .ok_or(malformed(WireField::Known))?;
            Body::Refuse { reason, known }
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
        epoch,
        seq,
        body,
    })
}

fn id_token(token: Option<&[u8]>, field: WireField) -> Result<String, WireError> {
    token.and_then(ids::parse_id).ok_or(malformed(field))
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::auth::Key;

    fn id<T: FromStr>(text: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        text.parse().unwrap()
    }

    fn keys() -> Keyring {
        Keyring::single(Key::new(&[9; 32]).unwrap())
    }

    fn message(body: Body) -> Message {
        Message {
            cluster: id("prod"),
            node: id("node-7"),
            incarnation: 1_717_171_717_000,
            epoch: 5,
            seq: 42,
            body,
        }
    }

    fn encoded(message: &Message) -> Vec<u8> {
        message.to_bytes(None).to_vec()
    }

    fn all_bodies() -> Vec<Body> {
        let mut metadata = Metadata::new();
        metadata.insert("zone", "eu west").unwrap();
        metadata.insert("k=%", "é\n\r").unwrap();
        let mut bodies = vec![
            Body::Register {
                addr: "10.0.0.7:7001".parse().unwrap(),
                metadata,
            },
            Body::Register {
                addr: "[fe80::1%3]:7001".parse().unwrap(),
                metadata: Metadata::new(),
            },
            Body::RegisterAck,
            Body::Probe,
            Body::ProbeAck,
            Body::Leave,
        ];
        for reason in RefuseReason::ALL {
            bodies.push(Body::Refuse { reason, known: 7 });
        }
        bodies
    }

    #[test]
    fn every_message_type_round_trips_with_and_without_a_key() {
        let keys = keys();
        for body in all_bodies() {
            let message = message(body);
            for ring in [None, Some(&keys)] {
                let bytes = message.to_bytes(ring);
                assert!(!bytes.contains(&b'\n') && bytes.last() != Some(&b'\r'));
                assert_eq!(
                    decode(&bytes, ring),
                    Ok(message.clone()),
                    "{:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            // A keyless side reads signed messages without checking them.
            assert_eq!(decode(&message.to_bytes(Some(&keys)), None), Ok(message));
        }
    }

    #[test]
    fn layout_matches_the_documented_examples() {
        let cases: [(Body, &[u8]); 6] = [
            (
                Body::RegisterAck,
                b"CHB 2 register-ack prod node-7 1717171717000 5 42 -",
            ),
            (
                Body::Refuse {
                    reason: RefuseReason::StaleIncarnation,
                    known: 1_717_171_717_999,
                },
                b"CHB 2 refuse prod node-7 1717171717000 5 42 stale-incarnation 1717171717999 -",
            ),
            (Body::Probe, b"CHB 2 probe prod node-7 1717171717000 5 42 -"),
            (
                Body::ProbeAck,
                b"CHB 2 probe-ack prod node-7 1717171717000 5 42 -",
            ),
            (Body::Leave, b"CHB 2 leave prod node-7 1717171717000 5 42 -"),
            (
                Body::Register {
                    addr: "[::1]:7001".parse().unwrap(),
                    metadata: Metadata::new(),
                },
                b"CHB 2 register prod node-7 1717171717000 5 42 [::1]:7001 -",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(encoded(&message(body)), expected);
        }
    }

    #[test]
    fn the_mac_is_the_last_token_and_covers_everything_before_it() {
        let keys = keys();
        let bytes = message(Body::Probe).to_bytes(Some(&keys));
        let text = std::str::from_utf8(&bytes).unwrap();
        let (signed, mac) = text.rsplit_once(' ').unwrap();
        assert_eq!(signed, "CHB 2 probe prod node-7 1717171717000 5 42");
        assert_eq!(mac.len(), MAC_TOKEN_LEN);
        // Any change to a signed byte, or to the MAC, is refused.
        for i in 0..bytes.len() {
            let mut altered = bytes.to_vec();
            altered[i] = if altered[i] == b'7' { b'8' } else { b'7' };
            assert!(decode(&altered, Some(&keys)).is_err(), "byte {i}");
        }
        let other = Keyring::single(Key::new(&[8; 32]).unwrap());
        assert_eq!(decode(&bytes, Some(&other)), Err(WireError::BadMac));
        let unsigned = message(Body::Probe).to_bytes(None);
        assert_eq!(
            decode(&unsigned, Some(&keys)),
            Err(WireError::Unauthenticated)
        );
        let junk_mac = format!("{signed} not-a-mac");
        assert_eq!(
            decode(junk_mac.as_bytes(), Some(&keys)),
            Err(malformed(WireField::Mac))
        );
        assert_eq!(
            decode(junk_mac.as_bytes(), None),
            Err(malformed(WireField::Mac))
        );
    }

    #[test]
    fn the_probe_shortcut_encodes_like_a_message() {
        let keys = keys();
        let probe = message(Body::Probe);
        for ring in [None, Some(&keys)] {
            let mut out = BytesMut::from(&b"x"[..]);
            encode_probe(
                &probe.cluster,
                &probe.node,
                probe.incarnation,
                probe.epoch,
                probe.seq,
                ring,
                &mut out,
            );
            assert_eq!(&out[1..], &probe.to_bytes(ring)[..]);
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
            b"CHB 2 register prod node-7 1717171717000 5 42 10.0.0.7:7001 a%3Db=50%25%0A zone=eu%20west -"
        );
    }

    #[test]
    fn lower_case_escapes_and_leading_zeros_are_accepted() {
        let message = decode(b"CHB 02 register prod n 007 0 0 1.2.3.4:5 k=%c3%a9 -", None).unwrap();
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
            decode(&frame, None),
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
            epoch: u64::MAX,
            seq: u64::MAX,
            body: Body::Register {
                addr: addr.parse().unwrap(),
                metadata,
            },
        };
        let bytes = message.to_bytes(Some(&keys()));
        assert_eq!(bytes.len(), 15_638);
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes, Some(&keys())), Ok(message));
    }

    #[test]
    fn bad_magic() {
        for frame in [
            &b""[..],
            b"CHX 2 probe c n 1 1 1 -",
            b"chb 2 probe c n 1 1 1 -",
            b" CHB 2",
        ] {
            assert_eq!(decode(frame, None), Err(WireError::BadMagic), "{frame:?}");
        }
    }

    #[test]
    fn version_one_is_old_and_others_unknown() {
        assert_eq!(
            decode(b"CHB 1 register default n 1 1 10.0.0.1:7001", Some(&keys())),
            Err(WireError::OldVersion { version: 1 })
        );
        assert_eq!(
            decode(b"CHB 0 probe c n 1 1", None),
            Err(WireError::OldVersion { version: 0 })
        );
        assert_eq!(
            decode(b"CHB 3 anything at all", None),
            Err(WireError::UnknownVersion { version: 3 })
        );
        assert_eq!(
            WireError::OldVersion { version: 1 }.to_string(),
            "message of protocol version 1, older than this side's 2: upgrade the peer"
        );
    }

    #[test]
    fn malformed_version() {
        for frame in [
            &b"CHB"[..],
            b"CHB x probe",
            b"CHB  2",
            b"CHB 4294967296 probe",
        ] {
            assert_eq!(
                decode(frame, None),
                Err(malformed(WireField::Version)),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn unknown_type_names_the_token() {
        assert_eq!(
            decode(b"CHB 2 ping c n 1 1 1 -", None),
            Err(WireError::UnknownType {
                name: "ping".into()
            })
        );
        assert_eq!(
            decode(b"CHB 2 \xff c n 1 1 1 -", None),
            Err(WireError::UnknownType {
                name: "\u{fffd}".into()
            })
        );
        assert_eq!(decode(b"CHB 2", None), Err(malformed(WireField::Type)));
        assert_eq!(decode(b"CHB 2 -", None), Err(malformed(WireField::Type)));
    }

    #[test]
    fn malformed_ids() {
        let long = format!("CHB 2 probe {} n 1 1 1 -", "c".repeat(MAX_ID_LEN + 1));
        for frame in [
            &b"CHB 2 probe -"[..],
            b"CHB 2 probe  n 1 1 1 -",
            long.as_bytes(),
        ] {
            assert_eq!(decode(frame, None), Err(malformed(WireField::Cluster)));
        }
        for frame in [
            &b"CHB 2 probe c -"[..],
            b"CHB 2 probe c n\x01 1 1 1 -",
            b"CHB 2 probe c \xc3\xa9 1 1 1 -",
        ] {
            assert_eq!(decode(frame, None), Err(malformed(WireField::Node)));
        }
    }

    #[test]
    fn malformed_numbers() {
        for inc in ["", "-1", "+1", "1.0", "0x1", "18446744073709551616"] {
            let frame = format!("CHB 2 probe c n {inc} 1 1 -");
            assert_eq!(
                decode(frame.as_bytes(), None),
                Err(malformed(WireField::Incarnation)),
                "{inc:?}"
            );
        }
        assert_eq!(
            decode(b"CHB 2 probe c n 1 x 1 -", None),
            Err(malformed(WireField::Epoch))
        );
        assert_eq!(
            decode(b"CHB 2 probe c n 1 1 -", None),
            Err(malformed(WireField::Seq))
        );
        assert_eq!(
            decode(b"CHB 2 probe c n 1 1 x -", None),
            Err(malformed(WireField::Seq))
        );
        assert_eq!(
            decode(b"CHB 2 leave c n 1 1 1 -\r", None),
            Err(malformed(WireField::Mac))
        );
        assert_eq!(
            decode(b"CHB 2 probe c n 1 1 18446744073709551615 -", None)
                .unwrap()
                .seq,
            u64::MAX
        );
    }

    #[test]
    fn malformed_address() {
        for addr in ["", "localhost:80", "1.2.3.4", "1.2.3.4:99999", "\u{e9}"] {
            let frame = format!("CHB 2 register c n 1 1 1 {addr} -");
            assert_eq!(
                decode(frame.as_bytes(), None),
                Err(malformed(WireField::Addr)),
                "{addr:?}"
            );
        }
        assert_eq!(
            decode(b"CHB 2 register c n 1 1 1 -", None),
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
            let frame = format!("CHB 2 register c n 1 1 1 1.2.3.4:5 {entry} -");
            assert_eq!(
                decode(frame.as_bytes(), None),
                Err(malformed(WireField::Metadata)),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn malformed_refusals() {
        for frame in [
            &b"CHB 2 refuse c n 1 1 1 -"[..],
            b"CHB 2 refuse c n 1 1 1 busy-ish 0 -",
        ] {
            assert_eq!(decode(frame, None), Err(malformed(WireField::Reason)));
        }
        assert_eq!(
            decode(b"CHB 2 refuse c n 1 1 1 busy -", None),
            Err(malformed(WireField::Known))
        );
    }

    #[test]
    fn trailing_tokens_are_refused() {
        for frame in [
            &b"CHB 2 probe c n 1 1 1 extra -"[..],
            b"CHB 2 refuse c n 1 1 1 busy 0 x -",
        ] {
            assert_eq!(
                decode(frame, None),
                Err(malformed(WireField::Trailing)),
                "{frame:?}"
            );
        }
        assert_eq!(
            decode(b"CHB 2 probe c n 1 1 1 - ", None),
            Err(malformed(WireField::Mac))
        );
    }

    #[test]
    fn wrong_cluster_is_a_check_not_a_decode_error() {
        let probe = decode(b"CHB 2 probe staging n 1 1 1 -", None).unwrap();
        assert_eq!(probe.check_cluster(&id("staging")), Ok(()));
        let err = probe.check_cluster(&id("prod")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "message for cluster staging, expected cluster prod"
        );
    }

    #[test]
    fn reply_echoes_the_header() {
        let register = message(Body::Leave);
        let refuse = register.reply(Body::Refuse {
            reason: RefuseReason::WrongCluster,
            known: 0,
        });
        assert_eq!(
            (
                refuse.cluster,
                refuse.node,
                refuse.incarnation,
                refuse.epoch,
                refuse.seq
            ),
            (
                register.cluster,
                register.node,
                register.incarnation,
                register.epoch,
                register.seq
            )
        );
    }

    #[test]
    fn refuse_reasons_know_which_are_final() {
        let finals: Vec<_> = RefuseReason::ALL
            .into_iter()
            .filter(|r| r.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                RefuseReason::WrongCluster,
                RefuseReason::BadAddress,
                RefuseReason::MetadataTooLarge
            ]
        );
        for (i, reason) in RefuseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(
                RefuseReason::from_token(reason.as_str().as_bytes()),
                Some(reason)
            );
        }
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
                "unknown protocol version 9 (this side speaks 2)",
                "malformed sequence number",
            ]
        );
    }
}
