//! The codec through `Framed`: the framing cases of the core, end to end over an
//! in-process pipe.

use bytes::Bytes;
use chitchat_core::{Delimiter, EncodeError, FrameConfig, FrameError};
use chitchat_tokio::{CodecError, FrameCodec};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::codec::{Framed, FramedRead};

fn config(delimiter: Delimiter, max: usize) -> FrameConfig {
    let mut config = FrameConfig::new(delimiter);
    config.max_frame_len = max;
    config
}

/// Writes `input` in `chunk`-byte pieces then EOF; returns what `FramedRead` yields.
async fn read_all(input: &[u8], chunk: usize, config: FrameConfig) -> Vec<Result<Bytes, String>> {
    let (mut tx, rx): (DuplexStream, DuplexStream) = tokio::io::duplex(64);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        for piece in input.chunks(chunk.max(1)) {
            tx.write_all(piece).await.unwrap();
        }
        tx.shutdown().await.unwrap();
    });
    let mut reader = FramedRead::new(rx, FrameCodec::new(config));
    let mut out = Vec::new();
    while let Some(item) = reader.next().await {
        let failed = item.is_err();
        out.push(item.map_err(|e| e.to_string()));
        if failed {
            break; // FramedRead ends after an error
        }
    }
    writer.await.unwrap();
    out
}

fn ok(frames: &[&str]) -> Vec<Result<Bytes, String>> {
    frames
        .iter()
        .map(|f| Ok(Bytes::copy_from_slice(f.as_bytes())))
        .collect()
}

#[tokio::test]
async fn crlf_and_empty_frames_at_any_chunking() {
    for chunk in [1, 2, 3, 64] {
        let got = read_all(
            b"a\r\n\n\r\nb\r\r\n",
            chunk,
            config(Delimiter::Byte(b'\n'), 64),
        )
        .await;
        assert_eq!(got, ok(&["a", "", "", "b\r"]), "chunk {chunk}");
    }
}

#[tokio::test]
async fn eof_mode_yields_the_whole_stream_once() {
    let got = read_all(b"one\ntwo\r\n", 3, config(Delimiter::Eof, 64)).await;
    assert_eq!(got, ok(&["one\ntwo\r\n"]));
}

#[tokio::test]
async fn oversized_frame_is_an_error() {
    let got = read_all(b"ok\n123456789\n", 4, config(Delimiter::Byte(b'\n'), 8)).await;
    assert_eq!(got[0], Ok(Bytes::from_static(b"ok")));
    assert_eq!(got[1], Err(FrameError::TooLong { limit: 8 }.to_string()));
}

#[tokio::test]
async fn leftover_bytes_at_eof_are_an_error() {
    let got = read_all(b"whole\npart", 2, config(Delimiter::Byte(b'\n'), 64)).await;
    assert_eq!(got[0], Ok(Bytes::from_static(b"whole")));
    assert_eq!(got[1], Err(FrameError::Truncated { len: 4 }.to_string()));
}

#[tokio::test]
async fn sink_refuses_what_the_peer_could_not_read_back() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let mut ours = Framed::new(ours, FrameCodec::new(config(Delimiter::Byte(b'\n'), 4)));
    let err = ours.send(&b"a\nb"[..]).await.unwrap_err();
    assert!(matches!(
        err,
        CodecError::Encode(EncodeError::ContainsDelimiter { offset: 1 })
    ));
    let err = ours.send(&b"12345"[..]).await.unwrap_err();
    assert!(matches!(
        err,
        CodecError::Encode(EncodeError::TooLong { .. })
    ));
    ours.send(&b"fine"[..]).await.unwrap();
    drop(ours);
    let mut theirs = FramedRead::new(theirs, FrameCodec::default());
    assert_eq!(theirs.next().await.unwrap().unwrap(), "fine");
    assert!(
        theirs.next().await.is_none(),
        "nothing of the refused payloads was written"
    );
}
