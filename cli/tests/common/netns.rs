//! Network namespaces for tests of several hosts on one machine: a hub namespace
//! with a bridge, and one namespace per rank joined to it by a veth pair, each rank
//! at 10.201.0.(rank+1); optionally a direct veth pair between two ranks that
//! carries only their traffic, so one link can be cut while the rest stay up.
//! Only addresses inside these namespaces are used. Removed on drop.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Distinguishes the namespace sets of one test process (tests run in parallel).
static SETS: AtomicU32 = AtomicU32::new(0);

/// One set of namespaces: a hub with a bridge and one namespace per rank.
pub struct Netns {
    tag: String,
    ranks: u32,
}

impl Netns {
    /// The namespaces for test `name`, or `None` (after printing why) where this
    /// machine cannot build them; panics instead when `HERALD_REQUIRE_NETNS` is
    /// set (scripts/test.sh sets it: CI runs as root with iproute2).
    pub fn for_test(name: &str, ranks: u32) -> Option<Netns> {
        match Netns::create(ranks) {
            Ok(net) => Some(net),
            Err(reason) if std::env::var_os("HERALD_REQUIRE_NETNS").is_some() => {
                panic!("HERALD_REQUIRE_NETNS is set but network namespaces are unusable: {reason}")
            }
            Err(reason) => {
                println!("SKIPPED {name}: {reason}");
                None
            }
        }
    }

    /// Builds the namespaces, or says why this machine cannot.
    pub fn create(ranks: u32) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root (network namespaces need it)".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("`ip` (iproute2) is not installed; scripts/test.sh installs it".into());
        }
        let set = SETS.fetch_add(1, Ordering::Relaxed);
        // Interface names must stay within 15 bytes: "h" + 4 + 1 + "d" + 2 ranks.
        let net = Netns {
            tag: format!(
                "h{:04}{}",
                std::process::id() % 10_000,
                char::from(b'a' + (set % 26) as u8)
            ),
            ranks,
        };
        let hub = net.hub();
        // Left over by a killed run with the same pid, if any.
        for rank in 0..ranks {
            let _ = net.ip(&["netns", "del", &net.rank_ns(rank)]);
        }
        let _ = net.ip(&["netns", "del", &hub]);
        net.ip(&["netns", "add", &hub])?;
        net.ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        net.ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for rank in 0..ranks {
            let ns = net.rank_ns(rank);
            let (inner, outer) = (format!("{}r{rank}", net.tag), net.outer(rank));
            net.ip(&["netns", "add", &ns])?;
            net.ip(&[
                "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns",
                &ns,
            ])?;
            net.ip(&["-n", &hub, "link", "set", &outer, "master", "br0"])?;
            net.ip(&["-n", &hub, "link", "set", &outer, "up"])?;
            net.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Netns::addr(rank)),
                "dev",
                &inner,
            ])?;
            net.ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            net.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Rank `rank`'s address (inside its namespace).
    pub fn addr(rank: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, 0, rank as u8 + 1)
    }

    /// The namespace rank `rank` runs in.
    pub fn rank_ns(&self, rank: u32) -> String {
        format!("{}-r{rank}", self.tag)
    }

    /// The command prefix that runs a program in rank `rank`'s namespace.
    pub fn wrap(&self, rank: u32) -> Vec<OsString> {
        ["ip", "netns", "exec", &self.rank_ns(rank)]
            .iter()
            .map(OsString::from)
            .collect()
    }

    /// Cuts a rank off from every other: its veth end on the bridge goes down.
    pub fn cut(&self, rank: u32) {
        self.ip(&["-n", &self.hub(), "link", "set", &self.outer(rank), "down"])
            .expect("set the veth down");
    }

    /// Gives ranks `a` and `b` a veth pair of their own that carries all traffic
    /// between their addresses (a /32 route each way), backed by a blackhole route
    /// of lower priority: once [`Netns::cut_direct`] takes the pair down, the two
    /// cannot reach each other at all, while both still reach everyone else over
    /// the bridge. Call before the job forms.
    pub fn direct_link(&self, a: u32, b: u32) -> Result<(), String> {
        let (ns_a, ns_b) = (self.rank_ns(a), self.rank_ns(b));
        let (dev_a, dev_b) = (self.direct(a, b), self.direct(b, a));
        self.ip(&[
            "-n", &ns_a, "link", "add", &dev_a, "type", "veth", "peer", "name", &dev_b, "netns",
            &ns_b,
        ])?;
        for (ns, dev, me, peer) in [(&ns_a, &dev_a, a, b), (&ns_b, &dev_b, b, a)] {
            let (me, peer) = (
                Netns::addr(me).to_string(),
                format!("{}/32", Netns::addr(peer)),
            );
            self.ip(&["-n", ns, "link", "set", dev, "up"])?;
            self.ip(&["-n", ns, "route", "add", &peer, "dev", dev, "src", &me])?;
            self.ip(&[
                "-n",
                ns,
                "route",
                "add",
                "blackhole",
                &peer,
                "metric",
                "100",
            ])?;
        }
        Ok(())
    }

    /// Cuts the link between ranks `a` and `b` made by [`Netns::direct_link`]:
    /// `ip link set ... down` on `a`'s end (which takes the pair down).
    pub fn cut_direct(&self, a: u32, b: u32) {
        self.ip(&[
            "-n",
            &self.rank_ns(a),
            "link",
            "set",
            &self.direct(a, b),
            "down",
        ])
        .expect("set the direct veth down");
    }

    /// Drops every packet between ranks `a` and `b` (a blackhole route to the
    /// other's address in each namespace), without closing anything: their
    /// connections see silence, and TCP delivers what was sent once
    /// [`Netns::unblock`] lifts it.
    pub fn block(&self, a: u32, b: u32) {
        for (ns, peer) in [(a, b), (b, a)] {
            let peer = format!("{}/32", Netns::addr(peer));
            self.ip(&["-n", &self.rank_ns(ns), "route", "add", "blackhole", &peer])
                .expect("add a blackhole route");
        }
    }

    /// Lifts [`Netns::block`].
    pub fn unblock(&self, a: u32, b: u32) {
        for (ns, peer) in [(a, b), (b, a)] {
            let peer = format!("{}/32", Netns::addr(peer));
            self.ip(&["-n", &self.rank_ns(ns), "route", "del", "blackhole", &peer])
                .expect("delete a blackhole route");
        }
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// The hub's end of a rank's veth pair.
    fn outer(&self, rank: u32) -> String {
        format!("{}b{rank}", self.tag)
    }

    /// Rank `from`'s end of the direct pair to rank `to`.
    fn direct(&self, from: u32, to: u32) -> String {
        format!("{}d{from}{to}", self.tag)
    }

    fn ip(&self, arguments: &[&str]) -> Result<(), String> {
        let output = Command::new("ip")
            .args(arguments)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ip {}: {}",
                arguments.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for rank in 0..self.ranks {
            let _ = self.ip(&["netns", "del", &self.rank_ns(rank)]);
        }
        let _ = self.ip(&["netns", "del", &self.hub()]);
    }
}
