//! The link handshake: a nonce exchange, mutual proof of the cluster secret, then
//! sealed hellos. Nothing about the job leaves a rank before the peer has proved
//! the secret.
//!
//! ```text
//! greeting = magic[8] version:u16le nonce[32]
//! proof(r) = HMAC-SHA256(secret, LABEL r connector_nonce acceptor_nonce)   r = 'C' | 'A'
//!
//! connector -> acceptor : greeting
//! acceptor  -> connector: greeting        (only after the connector's magic matched)
//! connector -> acceptor : proof('C')
//! acceptor  -> connector: 0x01 proof('A') (accepted)  |  0x00 (rejected, then close)
//! both, sealed          : Hello { rank, size, cluster id, agreed settings }
//! ```
//!
//! The greeting reveals only that a herald of some version listens. The proofs
//! are bound to both fresh nonces and to the role, so neither can be replayed on
//! another connection or reflected back to its sender; the acceptor proves itself
//! only once the connector has. Both directions' record keys are then derived from
//! the secret and both nonces ([`crate::seal`]), and everything after, starting
//! with the hellos, is sealed. Each end checks the other's hello (cluster id, job
//! size, rank, and the settings every rank must share) itself, so both name the
//! same disagreement. Future versions keep `magic version` as the prefix so
//! mismatches stay diagnosable.

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Agreed, MAX_AGREED_NAME_BYTES, MAX_AGREED_VALUES, MAX_CLUSTER_ID_BYTES};
use crate::error::{Disagreement, HandshakeError};
use crate::seal::LinkKeys;
use crate::secret::Secret;

/// The first bytes a herald link speaks; anything else is not a herald node.
pub const WIRE_MAGIC: [u8; 8] = *b"HRLDLINK";
/// Version of the link protocol (handshake, control messages, sealed records).
pub const WIRE_VERSION: u16 = 3;

const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
/// Length of a greeting: magic, version, nonce.
pub(crate) const GREETING_LEN: usize = 8 + 2 + NONCE_LEN;
const LABEL: &[u8] = b"herald-tcp link proof v3";
const VERDICT_ACCEPT: u8 = 1;
const VERDICT_REJECT: u8 = 0;

/// One end's progress through the unsealed part of the handshake.
pub(crate) struct Handshake {
    secret: Secret,
    connector: bool,
    my_nonce: [u8; NONCE_LEN],
    peer_nonce: Option<[u8; NONCE_LEN]>,
}

impl Handshake {
    /// The dialling end, and the greeting it sends first.
    pub(crate) fn connector(secret: &Secret) -> Result<(Handshake, Vec<u8>), HandshakeError> {
        let handshake = Handshake {
            secret: secret.clone(),
            connector: true,
            my_nonce: fresh_nonce()?,
            peer_nonce: None,
        };
        let greeting = handshake.greeting();
        Ok((handshake, greeting))
    }

    /// The accepting end; it says nothing until the connector's magic matched.
    pub(crate) fn acceptor(secret: &Secret) -> Result<Handshake, HandshakeError> {
        Ok(Handshake {
            secret: secret.clone(),
            connector: false,
            my_nonce: fresh_nonce()?,
            peer_nonce: None,
        })
    }

    /// Consumes what the current step needs from the front of `input`, appends
    /// what to send to `output`, and returns the link's keys once the handshake is
    /// done. On an error, `output` may still hold bytes worth sending before the
    /// connection is closed (a rejection, or our greeting for a peer of another
    /// version, so that it can say what is wrong).
    pub(crate) fn advance(
        &mut self,
        input: &mut Vec<u8>,
        output: &mut Vec<u8>,
    ) -> Result<Option<LinkKeys>, HandshakeError> {
        if self.peer_nonce.is_none() {
            // Refuse a stranger on its first wrong byte, not after 42 of them.
            let seen = input.len().min(WIRE_MAGIC.len());
            if input[..seen] != WIRE_MAGIC[..seen] {
                return Err(HandshakeError::NotHerald);
            }
            // The version is judged as soon as it is in: a peer of another
            // version may send another greeting after it.
            if input.len() >= 10 {
                let theirs = u16::from_le_bytes([input[8], input[9]]);
                if theirs != WIRE_VERSION {
                    if !self.connector {
                        output.extend_from_slice(&self.greeting());
                    }
                    return Err(HandshakeError::Version {
                        ours: WIRE_VERSION,
                        theirs,
                    });
                }
            }
            if input.len() < GREETING_LEN {
                return Ok(None);
            }
            let greeting: Vec<u8> = input.drain(..GREETING_LEN).collect();
            if !self.connector {
                output.extend_from_slice(&self.greeting());
            }
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&greeting[10..]);
            self.peer_nonce = Some(nonce);
            if self.connector {
                output.extend_from_slice(&self.proof(true));
            }
        }
        if self.connector {
            let Some(&verdict) = input.first() else {
                return Ok(None);
            };
            match verdict {
                VERDICT_ACCEPT => {}
                VERDICT_REJECT => return Err(HandshakeError::Rejected),
                other => return Err(HandshakeError::Malformed(format!("verdict byte {other}"))),
            }
            if input.len() < 1 + PROOF_LEN {
                return Ok(None);
            }
            let proof: Vec<u8> = input.drain(..1 + PROOF_LEN).skip(1).collect();
            self.verify(false, &proof)?;
        } else {
            if input.len() < PROOF_LEN {
                return Ok(None);
            }
            let proof: Vec<u8> = input.drain(..PROOF_LEN).collect();
            if let Err(err) = self.verify(true, &proof) {
                // Tell an honest-but-misconfigured peer why; the byte reveals nothing else.
                output.push(VERDICT_REJECT);
                return Err(err);
            }
            output.push(VERDICT_ACCEPT);
            output.extend_from_slice(&self.proof(false));
        }
        Ok(Some(self.keys()))
    }

    /// Runs the whole handshake on a blocking stream (for tests that play a rank).
    /// Returns the keys and the bytes read past the handshake (the start of the
    /// peer's first record).
    pub(crate) fn run_blocking(
        mut self,
        stream: &mut (impl Read + Write),
        first: Vec<u8>,
    ) -> Result<(LinkKeys, Vec<u8>), HandshakeError> {
        stream.write_all(&first)?;
        let mut input = Vec::new();
        let mut buffer = [0u8; 256];
        loop {
            let mut output = Vec::new();
            let step = self.advance(&mut input, &mut output);
            stream.write_all(&output)?;
            if let Some(keys) = step? {
                return Ok((keys, input));
            }
            let n = stream.read(&mut buffer)?;
            if n == 0 {
                return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            input.extend_from_slice(&buffer[..n]);
        }
    }

    fn greeting(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GREETING_LEN);
        out.extend_from_slice(&WIRE_MAGIC);
        out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.my_nonce);
        out
    }

    /// The nonces in connector, acceptor order.
    fn nonces(&self) -> ([u8; NONCE_LEN], [u8; NONCE_LEN]) {
        let peer = self.peer_nonce.unwrap_or([0; NONCE_LEN]);
        if self.connector {
            (self.my_nonce, peer)
        } else {
            (peer, self.my_nonce)
        }
    }

    fn mac(&self, by_connector: bool) -> Hmac<Sha256> {
        // Any key length is valid for HMAC, so this constructor cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        let (connector, acceptor) = self.nonces();
        mac.update(LABEL);
        mac.update(if by_connector { b"C" } else { b"A" });
        mac.update(&connector);
        mac.update(&acceptor);
        mac
    }

    fn proof(&self, by_connector: bool) -> [u8; PROOF_LEN] {
        self.mac(by_connector).finalize().into_bytes().into()
    }

    fn verify(&self, by_connector: bool, received: &[u8]) -> Result<(), HandshakeError> {
        // verify_slice compares in constant time.
        self.mac(by_connector)
            .verify_slice(received)
            .map_err(|_| HandshakeError::BadProof)
    }

    fn keys(&self) -> LinkKeys {
        let (connector, acceptor) = self.nonces();
        LinkKeys::derive(&self.secret, &connector, &acceptor, self.connector)
    }
}

/// Who a rank says it is, in the first sealed message of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) cluster_id: String,
    pub(crate) agreed: Vec<(String, u64)>,
}

/// This rank as its hellos present it.
pub(crate) struct Identity {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) cluster_id: String,
    pub(crate) secret: Secret,
    /// Settings both ends must share.
    pub(crate) agreed: Vec<Agreed>,
}

/// Which rank a connection should lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// We dialled this rank.
    Rank(u32),
    /// Someone dialled us: any other rank of the job.
    AnyOther,
    /// A process asking to join: it has no rank yet.
    Joiner,
}

impl Identity {
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            rank: self.rank,
            size: self.size,
            cluster_id: self.cluster_id.clone(),
            agreed: self
                .agreed
                .iter()
                .map(|a| (a.name.clone(), a.value))
                .collect(),
        }
    }

    /// Checks a peer's hello against ours and what the connection should lead to.
    /// `size_known` is false for a joiner, which learns the size from the job.
    pub(crate) fn check(&self, peer: &Hello, expect: Expect) -> Result<(), HandshakeError> {
        if peer.cluster_id != self.cluster_id {
            return Err(HandshakeError::ClusterMismatch {
                ours: self.cluster_id.clone(),
                theirs: peer.cluster_id.clone(),
            });
        }
        match expect {
            Expect::Rank(rank) if peer.rank != rank => {
                return Err(HandshakeError::UnexpectedRank {
                    expected: format!("rank {rank}"),
                    found: peer.rank,
                });
            }
            Expect::AnyOther if peer.rank == self.rank => {
                return Err(HandshakeError::UnexpectedRank {
                    expected: format!("a rank other than {}", self.rank),
                    found: peer.rank,
                });
            }
            _ => {}
        }
        // Ranks started together must agree on the size; a rank that joined later
        // (its rank is at or above the other's size) knows a larger one.
        let joined_later = expect == Expect::Joiner
            || self.rank == JOINING
            || peer.rank >= self.size
            || self.rank >= peer.size;
        if !joined_later && peer.size != self.size {
            return Err(HandshakeError::SizeMismatch {
                ours: self.size,
                theirs: peer.size,
            });
        }
        match self.disagreement(peer) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The first setting the peer's hello disagrees on, as an error naming both values.
    fn disagreement(&self, peer: &Hello) -> Option<HandshakeError> {
        for mine in &self.agreed {
            let theirs = peer.agreed.iter().find(|(name, _)| *name == mine.name);
            if theirs.is_none_or(|(_, value)| *value != mine.value) {
                return Some(HandshakeError::Disagreement(Box::new(Disagreement {
                    peer: peer.rank,
                    name: mine.name.clone(),
                    ours: mine.value.to_string(),
                    theirs: theirs.map_or("nothing".into(), |(_, v)| v.to_string()),
                    flag: mine.flag.clone(),
                })));
            }
        }
        let extra = peer
            .agreed
            .iter()
            .find(|(name, _)| !self.agreed.iter().any(|a| a.name == *name))?;
        Some(HandshakeError::Disagreement(Box::new(Disagreement {
            peer: peer.rank,
            name: extra.0.clone(),
            ours: "nothing".into(),
            theirs: extra.1.to_string(),
            flag: "the same herald build and settings".into(),
        })))
    }
}

/// The rank a joining process presents before the job has given it one.
pub(crate) const JOINING: u32 = u32::MAX;

impl Hello {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rank.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        let cluster =
            &self.cluster_id.as_bytes()[..self.cluster_id.len().min(MAX_CLUSTER_ID_BYTES)];
        out.push(cluster.len() as u8);
        out.extend_from_slice(cluster);
        // MeshConfig::validate caps the count and the name lengths.
        let agreed = &self.agreed[..self.agreed.len().min(MAX_AGREED_VALUES)];
        out.push(agreed.len() as u8);
        for (name, value) in agreed {
            let name = &name.as_bytes()[..name.len().min(MAX_AGREED_NAME_BYTES)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(crate) fn decode(input: &mut crate::frame::Input<'_>) -> Result<Hello, String> {
        let rank = input.u32()?;
        let size = input.u32()?;
        let len = usize::from(input.u8()?);
        let cluster_id = String::from_utf8_lossy(input.take(len)?).into_owned();
        let count = usize::from(input.u8()?);
        if count > MAX_AGREED_VALUES {
            return Err(format!(
                "{count} agreed settings, at most {MAX_AGREED_VALUES} allowed"
            ));
        }
        let mut agreed = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(input.u8()?);
            let name = String::from_utf8_lossy(input.take(len)?).into_owned();
            let value = input.u64()?;
            agreed.push((name, value));
        }
        Ok(Hello {
            rank,
            size,
            cluster_id,
            agreed,
        })
    }
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], HandshakeError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|err| {
        HandshakeError::Io(io::Error::other(format!(
            "OS random number generator: {err}"
        )))
    })?;
    Ok(nonce)
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
