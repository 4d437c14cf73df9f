//! Tampering on a live link: a rank played by the test sends honest frames, then
//! alters its stream the way an attacker on the path could (a flipped bit, a
//! replayed, reordered or truncated record). The real rank delivers exactly the
//! honest frames, nothing from the tampering on, and reports the peer down.

mod common;

use std::net::TcpListener;
use std::thread;

use common::{config, recv};
use herald_tcp::{Mesh, MeshEvent, Secret};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Tamper {
    /// Flip one bit of the next record (length prefix included).
    FlipBit { bit: usize },
    /// Send one of the honest records again.
    Replay { which: usize },
    /// Seal two records and send them in the wrong order.
    Reorder,
    /// Send the start of the next record, then close.
    Truncate { keep: usize },
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (0usize..2048).prop_map(|bit| Tamper::FlipBit { bit }),
        (0usize..8).prop_map(|which| Tamper::Replay { which }),
        Just(Tamper::Reorder),
        (1usize..64).prop_map(|keep| Tamper::Truncate { keep }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn tampered_records_are_never_delivered_and_end_the_link(
        honest in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..5),
        attack in tamper(),
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let coordinator = listener.local_addr().expect("addr");
        let secret = Secret::random();
        let raw_config = config(1, 2, coordinator, &secret, "tamper");
        let raw = thread::spawn(move || Mesh::establish_raw(raw_config).expect("raw rank 1"));
        let (mesh, events) =
            Mesh::establish_with_listener(config(0, 2, coordinator, &secret, "tamper"), listener)
                .expect("rank 0");
        let mut links = raw.join().expect("raw thread");
        let (mut sender, receiver) = links[0].take().expect("link to rank 0").split();

        let mut sent = Vec::new();
        for frame in &honest {
            let record = sender.seal_frame(frame);
            sender.write_raw(&record).expect("honest record");
            sent.push(record);
        }
        match attack {
            Tamper::FlipBit { bit } => {
                let mut record = sender.seal_frame(b"the attacker's frame");
                let bit = bit % (record.len() * 8);
                record[bit / 8] ^= 1 << (bit % 8);
                sender.write_raw(&record).expect("flipped record");
            }
            Tamper::Replay { which } => {
                let again = sent[which % sent.len()].clone();
                sender.write_raw(&again).expect("replayed record");
            }
            Tamper::Reorder => {
                let first = sender.seal_frame(b"first");
                let second = sender.seal_frame(b"second");
                sender.write_raw(&second).expect("second record");
                sender.write_raw(&first).expect("first record");
            }
            Tamper::Truncate { keep } => {
                let record = sender.seal_frame(b"a frame cut short by the attacker");
                sender.write_raw(&record[..keep.min(record.len() - 1)]).expect("torn record");
            }
        }
        // The attacker hangs up (a stall instead would end the same way, after
        // the peer timeout).
        drop(sender);
        drop(receiver);

        for frame in &honest {
            match recv(&events, "an honest frame") {
                MeshEvent::Frame { from: 1, bytes } => prop_assert_eq!(&bytes, frame),
                other => prop_assert!(false, "expected an honest frame, got {:?}", other),
            }
        }
        match recv(&events, "the end of the tampered link") {
            MeshEvent::PeerDown { node: 1, .. } => {}
            other => prop_assert!(false, "expected PeerDown for rank 1, got {:?}", other),
        }
        prop_assert!(events.try_recv().is_err(), "something was delivered after the tampering");
        mesh.shutdown();
    }
}
