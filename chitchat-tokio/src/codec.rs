//! chitchat's framing as a tokio-util codec, for code that already speaks
//! `Framed`: the same CRLF, EOF-mode and limit rules as the engine, because it is
//! the same [`Framer`].

use std::io;

use bytes::{Bytes, BytesMut};
use chitchat_core::{EncodeError, FrameConfig, FrameError, Framer};
use tokio_util::codec::{Decoder, Encoder};

/// A tokio-util [`Decoder`] and [`Encoder`] over chitchat's [`Framer`].
///
/// ```
/// use chitchat_core::{Delimiter, FrameConfig};
/// use chitchat_tokio::FrameCodec;
/// use futures::{SinkExt, StreamExt};
/// use tokio_util::codec::Framed;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), chitchat_tokio::CodecError> {
/// let (ours, theirs) = tokio::io::duplex(1024);
/// let mut ours = Framed::new(ours, FrameCodec::new(FrameConfig::new(Delimiter::Byte(b'\n'))));
/// let mut theirs = Framed::new(theirs, FrameCodec::default());
///
/// ours.send("hello").await?;
/// assert_eq!(theirs.next().await.unwrap()?, "hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    framer: Framer,
}

impl FrameCodec {
    /// A codec with this delimiter and limit.
    pub fn new(config: FrameConfig) -> Self {
        FrameCodec {
            framer: Framer::new(config),
        }
    }
}

impl Default for FrameCodec {
    /// Newline-delimited, with the default 64 KiB limit.
    fn default() -> Self {
        FrameCodec::new(FrameConfig::default())
    }
}

/// Why a [`FrameCodec`] stream or sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The incoming bytes broke the framing rules.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// An outgoing payload cannot be framed (nothing of it was written).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The underlying I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.framer.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.framer.decode_eof(src)?)
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(self.framer.encode(item.as_ref(), dst)?)
    }
}
