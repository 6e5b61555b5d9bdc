//! Properties of the wire format: every message survives encode → frame → decode,
//! the encoding is always a single valid frame, and no input makes `decode` panic.

use std::net::SocketAddr;

use bytes::BytesMut;
use chitchat_core::{FrameConfig, Framer};
use chitchat_heartbeat::wire::{
    decode, Body, ClusterId, Message, Metadata, NodeId, RefuseReason, MAX_MESSAGE_LEN,
    MAX_METADATA_ENTRIES,
};
use chitchat_heartbeat::{Key, Keyring};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    "[!-~]{1,64}"
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    // The IPv6 flow label is documented as not carried.
    any::<SocketAddr>().prop_map(|addr| match addr {
        SocketAddr::V6(mut v6) => {
            v6.set_flowinfo(0);
            SocketAddr::V6(v6)
        }
        v4 => v4,
    })
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    // Any chars, control and multi-byte ones included; 4 bytes at most each, so
    // 16 chars fit the 64-byte key bound and 64 the 256-byte value bound.
    prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(String::from_iter)
}

fn metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::vec((text(16), text(64)), 0..=MAX_METADATA_ENTRIES).prop_map(|entries| {
        let mut metadata = Metadata::new();
        for (key, value) in entries {
            if !key.is_empty() {
                metadata.insert(key, value).unwrap();
            }
        }
        metadata
    })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (addr(), metadata()).prop_map(|(addr, metadata)| Body::Register {
            addr: addr.into(),
            metadata
        }),
        Just(Body::RegisterAck),
        (
            prop::sample::select(RefuseReason::ALL.to_vec()),
            any::<u64>()
        )
            .prop_map(|(reason, known)| Body::Refuse { reason, known }),
        Just(Body::Probe),
        Just(Body::ProbeAck),
        Just(Body::Leave),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (id(), id(), any::<u64>(), any::<u64>(), any::<u64>(), body()).prop_map(
        |(cluster, node, incarnation, epoch, seq, body)| Message {
            cluster: ClusterId::new(cluster).unwrap(),
            node: NodeId::new(node).unwrap(),
            incarnation,
            epoch,
            seq,
            body,
        },
    )
}

fn keys() -> Keyring {
    Keyring::single(Key::new(&[3; 32]).unwrap())
}

fn encoded(message: &Message) -> BytesMut {
    message.to_bytes(None)
}

proptest! {
    #[test]
    fn decode_inverts_encode(message in message()) {
        let bytes = encoded(&message);
        prop_assert!(!bytes.contains(&b'\n'));
        prop_assert!(bytes.last() != Some(&b'\r'));
        prop_assert!(bytes.len() <= MAX_MESSAGE_LEN);
        prop_assert!(bytes.iter().all(|b| (0x20..0x7f).contains(b)), "printable ascii only");
        prop_assert_eq!(decode(&bytes, None), Ok(message));
    }

    #[test]
    fn signed_messages_verify_and_any_damage_is_refused(
        message in message(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let keys = keys();
        let bytes = message.to_bytes(Some(&keys));
        prop_assert!(bytes.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(decode(&bytes, Some(&keys)), Ok(message.clone()));
        let mut damaged = bytes.to_vec();
        let i = at.index(damaged.len());
        if damaged[i] != byte {
            damaged[i] = byte;
            prop_assert!(decode(&damaged, Some(&keys)).is_err());
        }
    }

    #[test]
    fn the_framer_carries_every_message_as_one_frame(messages in prop::collection::vec(message(), 1..5)) {
        let mut framer = Framer::new(FrameConfig::default());
        let mut stream = BytesMut::new();
        for message in &messages {
            framer.encode(&encoded(message), &mut stream).unwrap();
        }
        for message in &messages {
            let frame = framer.decode(&mut stream).unwrap().unwrap();
            prop_assert_eq!(&decode(&frame, None).unwrap(), message);
        }
        prop_assert!(stream.is_empty());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, None);
        let _ = decode(&bytes, Some(&keys()));
    }

    #[test]
    fn decode_never_panics_on_damaged_messages(
        message in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = encoded(&message).to_vec();
        for (at, byte, kind) in edits {
            match kind {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                1 => {
                    let i = at.index(bytes.len() + 1);
                    bytes.insert(i, byte);
                }
                _ => {
                    let len = at.index(bytes.len() + 1);
                    bytes.truncate(len);
                }
            }
        }
        // Whatever still decodes is a real message: it survives its own round trip.
        if let Ok(decoded) = decode(&bytes, None) {
            prop_assert_eq!(decode(&encoded(&decoded), None), Ok(decoded));
        }
    }
}
