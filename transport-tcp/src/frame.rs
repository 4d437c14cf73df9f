//! Framing (u32 little-endian length, then the bytes) and the few control
//! messages that rank 0 and the others exchange while the mesh forms.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection cleanly between two frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The length prefix exceeds the limit; nothing was allocated for it.
    #[error(
        "the peer announced a frame of {len} bytes, above the limit of {max} (max_frame_bytes)"
    )]
    TooLarge { len: u64, max: usize },
    /// The connection failed, or closed in the middle of a frame.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A heartbeat: a length prefix of `u32::MAX` with no bytes after it. Frame limits
/// stay below `u32::MAX`, so no frame has this prefix; it is never delivered.
pub(crate) const HEARTBEAT: [u8; 4] = u32::MAX.to_le_bytes();

/// Reassembles frames from whatever pieces the socket returns, so that a read that
/// times out in the middle of a frame loses nothing and the reader can tell how far
/// a stalled frame got. Skips heartbeats; refuses a length above the limit before
/// allocating anything for it, and grows a frame's buffer only as its bytes arrive.
pub(crate) struct FrameReader {
    max: usize,
    header: [u8; 4],
    header_got: usize,
    /// The frame being filled and its announced length, once the header is complete.
    body: Option<(Vec<u8>, usize)>,
}

impl FrameReader {
    pub(crate) fn new(max: usize) -> FrameReader {
        FrameReader {
            max,
            header: [0; 4],
            header_got: 0,
            body: None,
        }
    }

    /// Bytes received of the frame in progress and its total length (header
    /// included; 4 while the header itself is incomplete), or `None` between frames.
    pub(crate) fn in_progress(&self) -> Option<(usize, usize)> {
        match &self.body {
            Some((body, len)) => Some((4 + body.len(), 4 + len)),
            None if self.header_got > 0 => Some((self.header_got, 4)),
            None => None,
        }
    }

    /// Consumes `bytes`, handing each completed frame to `deliver`.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut deliver: impl FnMut(Vec<u8>),
    ) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            if let Some((body, len)) = &mut self.body {
                let take = (*len - body.len()).min(bytes.len());
                body.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if body.len() == *len {
                    if let Some((body, _)) = self.body.take() {
                        deliver(body);
                    }
                }
                continue;
            }
            let take = (4 - self.header_got).min(bytes.len());
            self.header[self.header_got..self.header_got + take].copy_from_slice(&bytes[..take]);
            self.header_got += take;
            bytes = &bytes[take..];
            if self.header_got < 4 {
                continue;
            }
            self.header_got = 0;
            if self.header == HEARTBEAT {
                continue;
            }
            let len = u32::from_le_bytes(self.header);
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= self.max)
                .ok_or(FrameError::TooLarge {
                    len: u64::from(len),
                    max: self.max,
                })?;
            if len == 0 {
                deliver(Vec::new());
            } else {
                self.body = Some((Vec::with_capacity(len.min(64 * 1024)), len));
            }
        }
        Ok(())
    }
}

/// Writes one frame. The caller has checked that `bytes` fits a u32 length.
pub(crate) fn write_frame(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a frame of {} bytes does not fit the u32 length prefix",
                bytes.len()
            ),
        )
    })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads one frame, rejecting a length above `max` before allocating anything for it.
pub(crate) fn read_frame(input: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match input.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    let len = u32::from_le_bytes(prefix);
    // The check comes first: a hostile or corrupt prefix must not make us reserve
    // up to 4 GiB of memory before the (absent) bytes would prove it wrong.
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= max)
        .ok_or(FrameError::TooLarge {
            len: u64::from(len),
            max,
        })?;
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Messages on the rank-0 links while the mesh forms, carried as ordinary frames
/// before the link is handed to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Rank k → rank 0: the address where rank k accepts links from higher ranks.
    Register { listen: SocketAddr },
    /// Rank 0 → all: every rank's listen address, indexed by rank.
    Table { addrs: Vec<SocketAddr> },
    /// Rank k → rank 0: rank k is linked to every other rank.
    Ready,
    /// Rank 0 → all: every rank is ready; the mesh is formed.
    Go,
    /// Rank 0 → all: formation failed, for this reason.
    Abort { reason: String },
}

const TAG_REGISTER: u8 = 1;
const TAG_TABLE: u8 = 2;
const TAG_READY: u8 = 3;
const TAG_GO: u8 = 4;
const TAG_ABORT: u8 = 5;

impl Control {
    /// Encodes the message as frame bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Control::Register { listen } => {
                out.push(TAG_REGISTER);
                put_str(&mut out, &listen.to_string());
            }
            Control::Table { addrs } => {
                out.push(TAG_TABLE);
                // Callers only build tables of `size` entries, and size is a u32.
                out.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
                for addr in addrs {
                    put_str(&mut out, &addr.to_string());
                }
            }
            Control::Ready => out.push(TAG_READY),
            Control::Go => out.push(TAG_GO),
            Control::Abort { reason } => {
                out.push(TAG_ABORT);
                put_str(&mut out, reason);
            }
        }
        out
    }

    /// Decodes frame bytes; the error says what was wrong with them.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Control, String> {
        let mut input = Input(bytes);
        let message = match input.u8()? {
            TAG_REGISTER => Control::Register {
                listen: input.addr()?,
            },
            TAG_TABLE => {
                let count = input.u32()?;
                let mut addrs = Vec::new();
                for _ in 0..count {
                    addrs.push(input.addr()?);
                }
                Control::Table { addrs }
            }
            TAG_READY => Control::Ready,
            TAG_GO => Control::Go,
            TAG_ABORT => Control::Abort {
                reason: input.string()?,
            },
            tag => return Err(format!("unknown control message tag {tag}")),
        };
        if !input.0.is_empty() {
            return Err(format!(
                "{} trailing bytes after a control message",
                input.0.len()
            ));
        }
        Ok(message)
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Addresses and abort reasons are short; a longer reason is cut, not refused.
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// A cursor over untrusted bytes whose reads fail instead of panicking.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "message truncated: wanted {n} more bytes, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    fn string(&mut self) -> Result<String, String> {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(self.take(2)?);
        let bytes = self.take(usize::from(u16::from_le_bytes(raw)))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
    }

    fn addr(&mut self) -> Result<SocketAddr, String> {
        let text = self.string()?;
        text.parse()
            .map_err(|_| format!("{text:?} is not a socket address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_including_empty() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"").unwrap();
        let mut input = wire.as_slice();
        assert_eq!(read_frame(&mut input, 16).unwrap(), b"hello");
        assert_eq!(read_frame(&mut input, 16).unwrap(), b"");
        assert!(matches!(
            read_frame(&mut input, 16),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_or_allocating() {
        // Only the prefix is present: had the reader allocated and tried to fill
        // 4 GiB it would report a truncated frame, not TooLarge.
        let wire = u32::MAX.to_le_bytes();
        match read_frame(&mut wire.as_slice(), 1024) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (u64::from(u32::MAX), 1024));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_clean_closes() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abcdef").unwrap();
        for cut in 1..wire.len() {
            let result = read_frame(&mut &wire[..cut], 64);
            assert!(
                matches!(result, Err(FrameError::Io(_))),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn the_frame_reader_reassembles_any_split_and_skips_heartbeats() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        wire.extend_from_slice(&HEARTBEAT);
        write_frame(&mut wire, b"").unwrap();
        write_frame(&mut wire, &[9u8; 300]).unwrap();
        for piece in [1, 2, 3, 7, 64, wire.len()] {
            let mut reader = FrameReader::new(1024);
            let mut frames = Vec::new();
            for chunk in wire.chunks(piece) {
                reader.feed(chunk, |f| frames.push(f)).unwrap();
            }
            assert_eq!(frames, vec![b"hello".to_vec(), vec![], vec![9u8; 300]]);
            assert_eq!(reader.in_progress(), None);
        }
        let mut reader = FrameReader::new(1024);
        reader.feed(&wire[..10], |_| {}).unwrap();
        assert_eq!(
            reader.in_progress(),
            Some((1, 4)),
            "after hello, 1 header byte"
        );
        let mut reader = FrameReader::new(1024);
        reader.feed(&wire[..3], |_| {}).unwrap();
        assert_eq!(reader.in_progress(), Some((3, 4)));
        let mut reader = FrameReader::new(16);
        assert!(matches!(
            reader.feed(&1000u32.to_le_bytes(), |_| {}),
            Err(FrameError::TooLarge { len: 1000, max: 16 })
        ));
    }

    #[test]
    fn control_messages_round_trip_and_garbage_fails() {
        let messages = [
            Control::Register {
                listen: "127.0.0.1:5".parse().unwrap(),
            },
            Control::Table {
                addrs: vec!["[::1]:7".parse().unwrap(), "10.0.0.1:9".parse().unwrap()],
            },
            Control::Ready,
            Control::Go,
            Control::Abort {
                reason: "rank 3 failed".into(),
            },
        ];
        for message in messages {
            assert_eq!(Control::decode(&message.encode()).unwrap(), message);
        }
        assert!(Control::decode(&[]).is_err());
        assert!(Control::decode(&[99]).is_err());
        assert!(Control::decode(&[TAG_TABLE, 5, 0, 0, 0]).is_err());
        assert!(Control::decode(&[TAG_GO, 0]).is_err());
    }
}
