//! Framing (u32 little-endian length, then the bytes) and herald-tcp's own
//! control messages: the hello of every connection, and what rank 0 and the
//! others exchange while the mesh forms and when a process joins.

use std::io;
use std::net::SocketAddr;

use crate::handshake::Hello;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length prefix exceeds the limit; nothing was allocated for it.
    #[error(
        "the peer announced a frame of {len} bytes, above the limit of {max} (max_frame_bytes)"
    )]
    TooLarge { len: u64, max: usize },
    /// The connection failed, or closed in the middle of a frame.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reassembles records from whatever pieces the socket returns, so that nothing
/// is lost between reads and the reader can tell how far a stalled record got.
/// Refuses a length above the limit before allocating anything for it, and grows
/// a record's buffer only as its bytes arrive.
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

/// herald-tcp's own messages, sealed as [`Kind::Control`](crate::seal::Kind) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Both ends, first: who the sender is and the settings it runs with.
    Hello(Hello),
    /// Rank k → rank 0: the address where rank k accepts connections.
    Register { listen: SocketAddr },
    /// Rank 0 → all: every rank's listen address, indexed by rank; the job has formed.
    Table { addrs: Vec<SocketAddr> },
    /// Rank 0 → all: formation failed, for this reason.
    Abort { reason: String },
    /// Rank k → rank 0: where does `rank` listen? (a rank that joined after the table)
    Lookup { rank: u32 },
    /// Rank 0 → rank k: `rank` listens at `addr`, or nowhere any more (`None`).
    Address { rank: u32, addr: Option<SocketAddr> },
    /// Rank 0 → a joiner: the rank it was given (it finds others' addresses by [`Control::Lookup`]).
    Admit { rank: u32 },
}

const TAG_HELLO: u8 = 1;
const TAG_REGISTER: u8 = 2;
const TAG_TABLE: u8 = 3;
const TAG_ABORT: u8 = 4;
const TAG_LOOKUP: u8 = 5;
const TAG_ADDRESS: u8 = 6;
const TAG_ADMIT: u8 = 7;

impl Control {
    /// Encodes the message as record bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Control::Hello(hello) => {
                out.push(TAG_HELLO);
                hello.encode(&mut out);
            }
            Control::Register { listen } => {
                out.push(TAG_REGISTER);
                put_str(&mut out, &listen.to_string());
            }
            Control::Table { addrs } => {
                out.push(TAG_TABLE);
                put_addrs(&mut out, addrs);
            }
            Control::Abort { reason } => {
                out.push(TAG_ABORT);
                put_str(&mut out, reason);
            }
            Control::Lookup { rank } => {
                out.push(TAG_LOOKUP);
                out.extend_from_slice(&rank.to_le_bytes());
            }
            Control::Address { rank, addr } => {
                out.push(TAG_ADDRESS);
                out.extend_from_slice(&rank.to_le_bytes());
                put_str(&mut out, &addr.map(|a| a.to_string()).unwrap_or_default());
            }
            Control::Admit { rank } => {
                out.push(TAG_ADMIT);
                out.extend_from_slice(&rank.to_le_bytes());
            }
        }
        out
    }

    /// Decodes record bytes; the error says what was wrong with them.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Control, String> {
        let mut input = Input(bytes);
        let message = match input.u8()? {
            TAG_HELLO => Control::Hello(Hello::decode(&mut input)?),
            TAG_REGISTER => Control::Register {
                listen: input.addr()?,
            },
            TAG_TABLE => Control::Table {
                addrs: input.addrs()?,
            },
            TAG_ABORT => Control::Abort {
                reason: input.string()?,
            },
            TAG_LOOKUP => Control::Lookup { rank: input.u32()? },
            TAG_ADDRESS => {
                let rank = input.u32()?;
                let text = input.string()?;
                let addr = if text.is_empty() {
                    None
                } else {
                    Some(
                        text.parse()
                            .map_err(|_| format!("{text:?} is not a socket address"))?,
                    )
                };
                Control::Address { rank, addr }
            }
            TAG_ADMIT => Control::Admit { rank: input.u32()? },
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

fn put_addrs(out: &mut Vec<u8>, addrs: &[SocketAddr]) {
    // Tables hold one entry per rank, and ranks are u32.
    out.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
    for addr in addrs {
        put_str(out, &addr.to_string());
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
pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl Input<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], String> {
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

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
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

    fn addrs(&mut self) -> Result<Vec<SocketAddr>, String> {
        let count = self.u32()?;
        // Each address takes at least 3 bytes: a count larger than that is a lie.
        if count as usize > self.0.len() / 3 {
            return Err(format!(
                "{count} addresses announced in {} bytes",
                self.0.len()
            ));
        }
        (0..count).map(|_| self.addr()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(parts: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for part in parts {
            wire.extend_from_slice(&(part.len() as u32).to_le_bytes());
            wire.extend_from_slice(part);
        }
        wire
    }

    #[test]
    fn the_frame_reader_reassembles_any_split() {
        let wire = records(&[b"hello", b"", &[9u8; 300]]);
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
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_allocating() {
        let mut reader = FrameReader::new(16);
        assert!(matches!(
            reader.feed(&1000u32.to_le_bytes(), |_| {}),
            Err(FrameError::TooLarge { len: 1000, max: 16 })
        ));
        let mut reader = FrameReader::new(16);
        assert!(matches!(
            reader.feed(&u32::MAX.to_le_bytes(), |_| {}),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn control_messages_round_trip_and_garbage_fails() {
        let addrs: Vec<SocketAddr> =
            vec!["[::1]:7".parse().unwrap(), "10.0.0.1:9".parse().unwrap()];
        let messages = [
            Control::Hello(Hello {
                rank: 3,
                size: 9,
                cluster_id: "job".into(),
                agreed: vec![("fan-out".into(), 4)],
            }),
            Control::Register {
                listen: "127.0.0.1:5".parse().unwrap(),
            },
            Control::Table {
                addrs: addrs.clone(),
            },
            Control::Abort {
                reason: "rank 3 failed".into(),
            },
            Control::Lookup { rank: 12 },
            Control::Address {
                rank: 12,
                addr: Some(addrs[1]),
            },
            Control::Address {
                rank: 12,
                addr: None,
            },
            Control::Admit { rank: 4 },
        ];
        for message in messages {
            assert_eq!(Control::decode(&message.encode()).unwrap(), message);
        }
        assert!(Control::decode(&[]).is_err());
        assert!(Control::decode(&[99]).is_err());
        assert!(Control::decode(&[TAG_TABLE, 5, 0, 0, 0]).is_err());
        assert!(Control::decode(&[TAG_TABLE, 255, 255, 255, 255]).is_err());
        assert!(Control::decode(&[TAG_LOOKUP, 0, 0, 0, 0, 0]).is_err());
    }
}
