//! The link handshake: hello exchange, then mutual HMAC-SHA256 challenge-response.
//!
//! Wire format (all integers little-endian):
//!
//! ```text
//! hello   = magic[8] version:u16 size:u32 rank:u32 nonce[32] cluster_len:u8 cluster[cluster_len]
//!           count:u8 { name_len:u8 name[name_len] value:u64 }[count]      (agreed settings)
//! proof   = HMAC-SHA256(secret, LABEL cluster_len cluster size prover_rank verifier_rank
//!                               prover_nonce verifier_nonce)          (32 bytes)
//! verdict = 0x01 proof   (accepted, acceptor's proof follows)  |  0x00 (rejected)
//!         | 0x02         (authenticated, but the agreed settings differ)
//!
//! connector -> acceptor : hello
//! acceptor  -> connector: hello          (only after the connector's magic matched)
//! connector -> acceptor : proof
//! acceptor  -> connector: verdict
//! ```
//!
//! The MAC binds both ranks, in prover/verifier order, and both fresh nonces, so
//! a proof cannot be reflected back to its sender or replayed on another
//! connection. The acceptor proves itself only after it has verified the
//! connector, so it never computes a MAC for a party that lacks the secret.
//! Future versions keep `magic version` as the prefix so mismatches stay diagnosable.
//!
//! The agreed settings (frame limit, heartbeat, peer timeout, and what the layers
//! above add, such as the protocol version and fan-out) are compared only once the
//! connector has proved the secret, so a stranger cannot make a rank fail with a
//! made-up disagreement; a real one fails formation on every rank, naming both values.
//!
//! This authenticates the peers; it does not encrypt or integrity-protect the
//! frames that follow (see the crate docs).

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Agreed, MAX_AGREED_NAME_BYTES, MAX_AGREED_VALUES, MAX_CLUSTER_ID_BYTES};
use crate::error::{Disagreement, HandshakeError};
use crate::secret::Secret;

/// The first bytes a herald link speaks; anything else is not a herald node.
pub const WIRE_MAGIC: [u8; 8] = *b"HRLDLINK";
/// Version of the link protocol (handshake, formation messages, framing).
pub const WIRE_VERSION: u16 = 2;

const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const LABEL: &[u8] = b"herald-tcp link proof v1";
const VERDICT_ACCEPT: u8 = 1;
const VERDICT_REJECT: u8 = 0;
const VERDICT_DISAGREE: u8 = 2;

/// Who this rank is, as the handshake presents it.
pub(crate) struct Identity<'a> {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) cluster_id: &'a str,
    pub(crate) secret: &'a Secret,
    /// Settings both ends must share.
    pub(crate) agreed: &'a [Agreed],
}

/// The connecting side: we dialled `expected_peer`'s listener.
pub(crate) fn connect_side(
    stream: &mut (impl Read + Write),
    me: &Identity<'_>,
    expected_peer: u32,
) -> Result<(), HandshakeError> {
    let my_nonce = fresh_nonce()?;
    stream.write_all(&encode_hello(me, &my_nonce))?;
    let peer = read_hello(stream)?;
    check_common(me, &peer)?;
    if peer.rank != expected_peer {
        return Err(HandshakeError::UnexpectedRank {
            expected: format!("rank {expected_peer}"),
            found: peer.rank,
        });
    }
    stream.write_all(&proof(me, me.rank, peer.rank, &my_nonce, &peer.nonce))?;
    match read_array::<1>(stream)?[0] {
        VERDICT_ACCEPT => {}
        VERDICT_REJECT => return Err(HandshakeError::Rejected),
        VERDICT_DISAGREE => {
            return Err(disagreement(me, &peer).unwrap_or_else(|| {
                HandshakeError::Malformed("the peer disagrees, but sent the same settings".into())
            }));
        }
        other => return Err(HandshakeError::Malformed(format!("verdict byte {other}"))),
    }
    let their_proof = read_array::<PROOF_LEN>(stream)?;
    verify(me, peer.rank, me.rank, &peer.nonce, &my_nonce, &their_proof)
}

/// The accepting side: someone dialled our listener. Returns the peer's verified rank,
/// which is always above ours (lower ranks accept, higher ranks connect).
pub(crate) fn accept_side(
    stream: &mut (impl Read + Write),
    me: &Identity<'_>,
) -> Result<u32, HandshakeError> {
    // Say nothing until the peer has shown it speaks herald: a scanner learns nothing.
    if read_array::<8>(stream)? != WIRE_MAGIC {
        return Err(HandshakeError::NotHerald);
    }
    let my_nonce = fresh_nonce()?;
    stream.write_all(&encode_hello(me, &my_nonce))?;
    let peer = read_hello_after_magic(stream)?;
    check_common(me, &peer)?;
    if peer.rank <= me.rank || peer.rank >= me.size {
        return Err(HandshakeError::UnexpectedRank {
            expected: format!("a rank in {}..{}", me.rank + 1, me.size),
            found: peer.rank,
        });
    }
    let their_proof = read_array::<PROOF_LEN>(stream)?;
    if let Err(err) = verify(me, peer.rank, me.rank, &peer.nonce, &my_nonce, &their_proof) {
        // Tell an honest-but-misconfigured peer why; the byte reveals nothing else.
        let _ = stream.write_all(&[VERDICT_REJECT]);
        return Err(err);
    }
    if let Some(err) = disagreement(me, &peer) {
        let _ = stream.write_all(&[VERDICT_DISAGREE]);
        return Err(err);
    }
    let mut answer = vec![VERDICT_ACCEPT];
    answer.extend_from_slice(&proof(me, me.rank, peer.rank, &my_nonce, &peer.nonce));
    stream.write_all(&answer)?;
    Ok(peer.rank)
}

/// A peer's hello, parsed but not yet checked against ours.
struct Hello {
    size: u32,
    rank: u32,
    nonce: [u8; NONCE_LEN],
    cluster_id: Vec<u8>,
    agreed: Vec<(String, u64)>,
}

fn encode_hello(me: &Identity<'_>, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let cluster = me.cluster_id.as_bytes();
    let mut out = Vec::with_capacity(8 + 2 + 8 + NONCE_LEN + 1 + cluster.len());
    out.extend_from_slice(&WIRE_MAGIC);
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    out.extend_from_slice(&me.size.to_le_bytes());
    out.extend_from_slice(&me.rank.to_le_bytes());
    out.extend_from_slice(nonce);
    // MeshConfig::validate caps the cluster id at 255 bytes.
    out.push(cluster.len().min(MAX_CLUSTER_ID_BYTES) as u8);
    out.extend_from_slice(&cluster[..cluster.len().min(MAX_CLUSTER_ID_BYTES)]);
    // MeshConfig::validate caps the count and the name lengths.
    let agreed = &me.agreed[..me.agreed.len().min(MAX_AGREED_VALUES)];
    out.push(agreed.len() as u8);
    for value in agreed {
        let name = &value.name.as_bytes()[..value.name.len().min(MAX_AGREED_NAME_BYTES)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&value.value.to_le_bytes());
    }
    out
}

/// The first setting the peer's hello disagrees on, as an error naming both values.
fn disagreement(me: &Identity<'_>, peer: &Hello) -> Option<HandshakeError> {
    for mine in me.agreed {
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
        .find(|(name, _)| !me.agreed.iter().any(|a| a.name == *name))?;
    Some(HandshakeError::Disagreement(Box::new(Disagreement {
        peer: peer.rank,
        name: extra.0.clone(),
        ours: "nothing".into(),
        theirs: extra.1.to_string(),
        flag: "the same herald build and settings".into(),
    })))
}

fn read_hello(stream: &mut impl Read) -> Result<Hello, HandshakeError> {
    if read_array::<8>(stream)? != WIRE_MAGIC {
        return Err(HandshakeError::NotHerald);
    }
    read_hello_after_magic(stream)
}

fn read_hello_after_magic(stream: &mut impl Read) -> Result<Hello, HandshakeError> {
    let theirs = u16::from_le_bytes(read_array(stream)?);
    if theirs != WIRE_VERSION {
        return Err(HandshakeError::Version {
            ours: WIRE_VERSION,
            theirs,
        });
    }
    let size = u32::from_le_bytes(read_array(stream)?);
    let rank = u32::from_le_bytes(read_array(stream)?);
    let nonce = read_array::<NONCE_LEN>(stream)?;
    let cluster_len = usize::from(read_array::<1>(stream)?[0]);
    let mut cluster_id = vec![0u8; cluster_len];
    stream.read_exact(&mut cluster_id)?;
    let count = usize::from(read_array::<1>(stream)?[0]);
    if count > MAX_AGREED_VALUES {
        return Err(HandshakeError::Malformed(format!(
            "{count} agreed settings, at most {MAX_AGREED_VALUES} allowed"
        )));
    }
    let mut agreed = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(read_array::<1>(stream)?[0]);
        let mut name = vec![0u8; len];
        stream.read_exact(&mut name)?;
        let value = u64::from_le_bytes(read_array(stream)?);
        agreed.push((String::from_utf8_lossy(&name).into_owned(), value));
    }
    Ok(Hello {
        size,
        rank,
        nonce,
        cluster_id,
        agreed,
    })
}

fn check_common(me: &Identity<'_>, peer: &Hello) -> Result<(), HandshakeError> {
    if peer.cluster_id != me.cluster_id.as_bytes() {
        return Err(HandshakeError::ClusterMismatch {
            ours: me.cluster_id.to_owned(),
            theirs: String::from_utf8_lossy(&peer.cluster_id).into_owned(),
        });
    }
    if peer.size != me.size {
        return Err(HandshakeError::SizeMismatch {
            ours: me.size,
            theirs: peer.size,
        });
    }
    Ok(())
}

fn proof_mac(
    me: &Identity<'_>,
    prover: u32,
    verifier: u32,
    prover_nonce: &[u8; NONCE_LEN],
    verifier_nonce: &[u8; NONCE_LEN],
) -> Hmac<Sha256> {
    // Any key length is valid for HMAC, so this constructor cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(me.secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    let cluster = me.cluster_id.as_bytes();
    mac.update(LABEL);
    mac.update(&[cluster.len().min(MAX_CLUSTER_ID_BYTES) as u8]);
    mac.update(cluster);
    mac.update(&me.size.to_le_bytes());
    mac.update(&prover.to_le_bytes());
    mac.update(&verifier.to_le_bytes());
    mac.update(prover_nonce);
    mac.update(verifier_nonce);
    mac
}

fn proof(
    me: &Identity<'_>,
    prover: u32,
    verifier: u32,
    prover_nonce: &[u8; NONCE_LEN],
    verifier_nonce: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    proof_mac(me, prover, verifier, prover_nonce, verifier_nonce)
        .finalize()
        .into_bytes()
        .into()
}

fn verify(
    me: &Identity<'_>,
    prover: u32,
    verifier: u32,
    prover_nonce: &[u8; NONCE_LEN],
    verifier_nonce: &[u8; NONCE_LEN],
    received: &[u8; PROOF_LEN],
) -> Result<(), HandshakeError> {
    // verify_slice compares in constant time.
    proof_mac(me, prover, verifier, prover_nonce, verifier_nonce)
        .verify_slice(received)
        .map_err(|_| HandshakeError::BadProof)
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

fn read_array<const N: usize>(stream: &mut impl Read) -> Result<[u8; N], HandshakeError> {
    let mut out = [0u8; N];
    stream.read_exact(&mut out)?;
    Ok(out)
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
