//! Fuzz target for the heartbeat wire decoder (version 2): `decode` never panics,
//! with or without a keyring, whatever the bytes; whatever it accepts survives its
//! own round trip (encode, then decode again gives the same message) as a payload
//! the framer accepts; a message signed with the key verifies, and the same message
//! with any byte changed does not.
#![no_main]

use chitchat_core::{FrameConfig, Framer};
use chitchat_heartbeat::wire::{decode, MAX_MESSAGE_LEN};
use chitchat_heartbeat::{Key, Keyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::single(Key::new(&[7; 32]).expect("a 32-byte key"));
    // Garbage and forgeries are refused without a panic.
    let _ = decode(data, Some(&keys));
    let Ok(message) = decode(data, None) else {
        return;
    };
    for ring in [None, Some(&keys)] {
        let encoded = message.to_bytes(ring);
        assert!(encoded.len() < MAX_MESSAGE_LEN, "encoded past the limit");
        Framer::new(FrameConfig::default())
            .check_payload(&encoded)
            .expect("the framer accepts every encoded message");
        assert_eq!(
            decode(&encoded, ring),
            Ok(message.clone()),
            "round trip changed the message"
        );
    }
    // Flip one byte of the signed form, chosen by the input: no longer authentic.
    let mut signed = message.to_bytes(Some(&keys)).to_vec();
    let at = data.len() % signed.len();
    signed[at] ^= 0x01;
    assert!(
        decode(&signed, Some(&keys)).is_err(),
        "an altered message verified"
    );
});
