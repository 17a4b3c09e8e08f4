//! TCP framing: every frame is a 2-byte big-endian unsigned length, then that many payload bytes.
//!
//! The decoder hands out each payload as a [`Bytes`] split off the connection's read buffer, so the
//! buffer is reused and no frame is copied. A length above the configured maximum is an error
//! *before* anything is reserved for it: a peer cannot make the server allocate what it claims.
//! The encoder refuses payloads that do not fit the 16-bit prefix instead of truncating them.
//!
//! | input                                  | result                                   |
//! |----------------------------------------|------------------------------------------|
//! | empty buffer, or one byte of header    | `Ok(None)`, wait for more                |
//! | full header, partial body              | `Ok(None)`, reserve the rest of the frame |
//! | several frames in one read             | one frame per `decode` call              |
//! | zero-length frame                      | `Ok(Some(empty))`: the session decides   |
//! | length prefix above the maximum        | `Err(FrameError::InboundTooLarge)`       |
//! | outbound payload above 65 535 bytes    | `Err(FrameError::OutboundTooLarge)`      |

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 2;
/// The largest payload a 2-byte prefix can describe; also the ceiling for the inbound maximum.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("inbound frame of {len} bytes exceeds the maximum of {max}")]
    InboundTooLarge { len: usize, max: usize },
    #[error("outbound frame of {len} bytes exceeds the protocol maximum of {MAX_FRAME_LEN}")]
    OutboundTooLarge { len: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Codec for gim's TCP frames. Cheap to construct; one per connection.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_inbound: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self {
            max_inbound: MAX_FRAME_LEN,
        }
    }
}

impl FrameCodec {
    /// A codec that rejects inbound frames longer than `max_inbound` bytes (clamped to 65 535).
    pub fn new(max_inbound: usize) -> Self {
        Self {
            max_inbound: max_inbound.min(MAX_FRAME_LEN),
        }
    }

    pub fn max_inbound(&self) -> usize {
        self.max_inbound
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u16::from_be_bytes([src[0], src[1]]) as usize;
        if len > self.max_inbound {
            return Err(FrameError::InboundTooLarge {
                len,
                max: self.max_inbound,
            });
        }
        let total = HEADER_LEN + len;
        if src.len() < total {
            // Bounded by max_inbound, which was checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(item.as_ref(), dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = u16::try_from(item.len())
            .map_err(|_| FrameError::OutboundTooLarge { len: item.len() })?;
        dst.reserve(HEADER_LEN + item.len());
        dst.put_u16(len);
        dst.put_slice(item);
        Ok(())
    }
}

/// Appends one frame to `dst`: the same rules as the encoder, for callers that batch several
/// frames into one write.
pub fn put_frame(dst: &mut BytesMut, payload: &[u8]) -> Result<(), FrameError> {
    FrameCodec::default().encode(payload, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn empty_buffer_waits() {
        let mut buf = BytesMut::new();
        assert!(FrameCodec::default().decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn partial_header_waits_and_keeps_bytes() {
        let mut buf = BytesMut::from(&[0x00][..]);
        assert!(FrameCodec::default().decode(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], &[0x00]);
    }

    #[test]
    fn partial_body_waits_then_completes() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0x00, 0x05, b'h', b'e'][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 7, "reserves the rest of the frame");
        buf.extend_from_slice(b"llo");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"hello"[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut codec = FrameCodec::default();
        let mut bytes = frame(b"one");
        bytes.extend(frame(b"two"));
        bytes.extend(frame(b"three"));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"two"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"three"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn frame_split_across_reads_at_every_point() {
        let bytes = frame(b"split me");
        for cut in 0..bytes.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
            buf.extend_from_slice(&bytes[cut..]);
            assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"split me"[..]);
        }
    }

    #[test]
    fn zero_length_frame_is_an_empty_payload() {
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x01, b'x'][..]);
        let mut codec = FrameCodec::default();
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 0);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"x"[..]);
    }

    #[test]
    fn inbound_above_maximum_is_rejected_without_allocating() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::with_capacity(2);
        buf.extend_from_slice(&[0xFF, 0xFF]);
        match codec.decode(&mut buf) {
            Err(FrameError::InboundTooLarge { len, max }) => {
                assert_eq!((len, max), (65_535, 1024));
            }
            other => panic!("expected InboundTooLarge, got {other:?}"),
        }
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for the claimed size"
        );
    }

    #[test]
    fn maximum_is_clamped_to_the_protocol_ceiling() {
        assert_eq!(FrameCodec::new(1 << 20).max_inbound(), MAX_FRAME_LEN);
    }

    #[test]
    fn inbound_exactly_at_maximum_is_accepted() {
        let mut codec = FrameCodec::new(3);
        let mut buf = BytesMut::from(&frame(b"abc")[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"abc"[..]);
    }

    #[test]
    fn outbound_above_65535_is_an_error_not_a_truncated_prefix() {
        let mut dst = BytesMut::new();
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        let err = FrameCodec::default()
            .encode(&big[..], &mut dst)
            .unwrap_err();
        assert!(matches!(err, FrameError::OutboundTooLarge { len } if len == 65_536));
        assert!(dst.is_empty(), "nothing written");
    }

    #[test]
    fn outbound_at_65535_is_encoded() {
        let mut dst = BytesMut::new();
        let big = vec![7u8; MAX_FRAME_LEN];
        FrameCodec::default().encode(&big[..], &mut dst).unwrap();
        assert_eq!(&dst[..2], &[0xFF, 0xFF]);
        assert_eq!(dst.len(), MAX_FRAME_LEN + 2);
    }

    proptest! {
        /// Any sequence of frames, fed through any split of reads, decodes to the same sequence.
        #[test]
        fn round_trips_through_arbitrary_read_splits(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let mut codec = FrameCodec::default();
            let mut wire = BytesMut::new();
            for p in &payloads {
                codec.encode(&p[..], &mut wire).unwrap();
            }
            let wire = wire.freeze();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let (mut pos, mut i) = (0, 0);
            while pos < wire.len() {
                let n = cuts[i % cuts.len()].min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                i += 1;
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f.to_vec());
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, payloads);
        }
    }
}
