//! Fuzz target for the heartbeat wire decoder: `decode` never panics, whatever the
//! bytes, and whatever it accepts survives its own round trip (encode, then decode
//! again gives the same message) as a payload the framer accepts.
#![no_main]

use bytes::BytesMut;
use chitchat_core::{FrameConfig, Framer};
use chitchat_heartbeat::wire::{decode, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode(data) else {
        return;
    };
    let mut encoded = BytesMut::new();
    message.encode(&mut encoded);
    assert!(encoded.len() < MAX_MESSAGE_LEN, "encoded past the limit");
    Framer::new(FrameConfig::default())
        .check_payload(&encoded)
        .expect("the framer accepts every encoded message");
    assert_eq!(
        decode(&encoded),
        Ok(message),
        "round trip changed the message"
    );
});
