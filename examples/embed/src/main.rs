//! Embedding herald-core: four "nodes" as plain threads joined by channels. Node 2
//! registers a callback globally; every node runs it once; node 2 hears when all have.
//! A real runtime swaps the channels for its network and runs invocations on its own
//! workers; the core neither knows nor cares.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;

use herald_core::{
    Config, DEFAULT_MAX_FRAME_BYTES, Node, NodeId, Output, Registration, RegistrationResult,
    encode_frames,
};

/// What a node's thread reacts to: the events the core takes as inputs.
enum Event {
    Frame(NodeId, Vec<u8>),
    Register(Registration),
    Stop,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    const NODES: u32 = 4;
    let (senders, receivers): (Vec<Sender<Event>>, Vec<Receiver<Event>>) =
        (0..NODES).map(|_| channel()).unzip();
    let (done, answers) = channel();
    let threads: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, inbox)| {
            let (peers, done) = (senders.clone(), done.clone());
            thread::spawn(move || run_node(NodeId(i as u32), NODES, inbox, peers, done))
        })
        .collect();

    let callback = Registration::new(b"libgreet.so:register_greeters".to_vec(), b"hi".to_vec());
    senders[2].send(Event::Register(callback))?;
    let result: RegistrationResult = answers.recv()?;
    println!("node 2 learned: {result}");

    for sender in &senders {
        sender.send(Event::Stop)?;
    }
    for thread in threads {
        thread.join().map_err(|_| "a node thread panicked")??;
    }
    Ok(())
}

/// One node's event loop: feed each event to the core, then carry out its outputs.
fn run_node(
    me: NodeId,
    nodes: u32,
    inbox: Receiver<Event>,
    peers: Vec<Sender<Event>>,
    done: Sender<RegistrationResult>,
) -> Result<(), Error> {
    let mut node = Node::new(Config::new(me, nodes)?);
    for event in inbox {
        match event {
            Event::Frame(from, bytes) => node.handle_frame(from, &bytes)?,
            Event::Register(registration) => drop(node.register(registration, None)?),
            Event::Stop => break,
        }
        while let Some(output) = node.poll_output() {
            match output {
                Output::Transmit { to, messages } => {
                    for frame in encode_frames(&messages, DEFAULT_MAX_FRAME_BYTES)? {
                        peers[to.0 as usize].send(Event::Frame(me, frame))?;
                    }
                }
                Output::Invoke(invocation) => {
                    // A real host runs this on a worker thread and reports back later.
                    let args = String::from_utf8_lossy(&invocation.registration.args);
                    println!("{me} runs registration {} ({args})", invocation.key.short());
                    node.invocation_finished(invocation.id, Ok(()))?;
                }
                Output::Completed { result, .. } => done.send(result)?,
                // This example launches no task, its channels never fail, and no
                // node joins: tasks, downs, fencing and views never come.
                _ => {}
            }
        }
    }
    Ok(())
}
