//! Process attestation: which local process is at the other end of a loopback TCP
//! connection, and whether it belongs to a session's process tree. Read from `/proc` with
//! plain file reads (Linux):
//!
//! 1. `/proc/net/tcp` and `/proc/net/tcp6` list the sockets of this network namespace. The
//!    one whose local address is the connection's remote end, and whose remote address is
//!    this end, is the peer's socket: it gives the owner's uid and the socket's inode.
//! 2. `/proc/PID/fd/*` links to `socket:[INODE]` for every socket a process holds. A server
//!    can read these for processes of its own user (all of them as root).
//! 3. `/proc/PID/stat` gives a process's parent (field 4) and its start time (field 22, clock
//!    ticks since boot): a pid with another start time is another process.
//!
//! A session opened over loopback is bound to the process that holds the client end of the
//! opening connection (the *root*); a connection to the session's listener is admitted when
//! a process of the root's tree (the root or a descendant) holds its client end. Parsing is
//! pure and tested on fixed text; the `/proc` walks come after it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A process, told apart from a later one reusing its pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot.
    pub start: u64,
}

/// The owner and inode of a socket, from `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    pub uid: u32,
    pub inode: u64,
}

/// Which local processes a session's listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The process that opened the session and its descendants.
    Process { root: ProcessId },
    /// Any process whose socket belongs to this user.
    User { uid: u32 },
    /// Any local process.
    Unbound,
}

/// Why the process that opened a connection could not be identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unidentified {
    #[error("the request did not come over this machine's loopback interface")]
    NotLoopback,
    #[error(
        "its socket is not listed in /proc/net/tcp (no /proc on this system, or the client is \
         in another network namespace)"
    )]
    NoSocket,
    #[error(
        "no process this server can see holds its socket (the client runs as another user and \
         the server is not root, or the client is in another pid namespace)"
    )]
    NoProcess,
    #[error("unrelated processes share its socket")]
    Ambiguous,
}

/// What attestation found about a connection to a session's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// A process outside the session's tree (or another user) holds the client end.
    Foreign,
    /// The session's root process has exited.
    RootGone,
    /// The client's socket could not be found.
    Unknown,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Admitted => "admitted",
            Self::Foreign => "the peer process is not part of the session",
            Self::RootGone => "the session's process has exited",
            Self::Unknown => "the peer's socket could not be found",
        })
    }
}

// ---- parsing (pure) ----

/// `a.b.c.d` for an IPv4-mapped IPv6 address; any other address as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr.ip()), addr.port())
}

/// Whether `ip` is a loopback address (IPv4-mapped ones included).
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// An address as `/proc/net/tcp{,6}` writes it: the address as 32-bit words in the kernel's
/// byte order, in hex, then `:` and the port in hex.
fn decode_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(canonical(ip), port))
}

/// One socket line: local and remote addresses, owner uid and inode.
fn parse_tcp_line(line: &str) -> Option<(SocketAddr, SocketAddr, SocketOwner)> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = decode_addr(fields.next()?)?;
    let remote = decode_addr(fields.next()?)?;
    // st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode
    let rest: Vec<&str> = fields.take(7).collect();
    let uid = rest.get(4)?.parse().ok()?;
    let inode = rest.get(6)?.parse().ok()?;
    Some((local, remote, SocketOwner { uid, inode }))
}

/// In a `/proc/net/tcp{,6}` table, the socket whose local end is `client` and whose remote
/// end is `server`, if a process still owns it (inode 0 means none does).
fn find_socket(table: &str, client: SocketAddr, server: SocketAddr) -> Option<SocketOwner> {
    let (client, server) = (canonical_addr(client), canonical_addr(server));
    table
        .lines()
        .skip(1)
        .filter_map(parse_tcp_line)
        .find(|(local, remote, owner)| *local == client && *remote == server && owner.inode != 0)
        .map(|(_, _, owner)| owner)
}

/// Parent pid and start time from `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses: fields are counted after the
/// last `)`.
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().take(20).collect();
    // `rest` starts at field 3 (state): field 4 is index 1, field 22 index 19.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// The holder every other holder descends from (itself included), if there is one.
fn common_root(holders: &[u32], parent_of: &HashMap<u32, u32>) -> Option<u32> {
    let descends = |mut pid: u32, ancestor: u32| {
        // Bounded: a parent map read while processes come and go could hold a cycle.
        for _ in 0..4096 {
            if pid == ancestor {
                return true;
            }
            match parent_of.get(&pid) {
                Some(&p) if p != pid && p != 0 => pid = p,
                _ => return false,
            }
        }
        false
    };
    holders
        .iter()
        .copied()
        .find(|&root| holders.iter().all(|&h| descends(h, root)))
}

/// The processes of `root`'s tree: `root` first, then its descendants. A child's start time
/// is never before its parent's; a process that claims a parent started after it does not
/// descend from it (the parent's pid was reused).
fn tree(root: ProcessId, processes: &[(u32, u32, u64)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    for &(pid, ppid, start) in processes {
        children.entry(ppid).or_default().push((pid, start));
    }
    let mut out = vec![root.pid];
    let mut seen: HashSet<u32> = HashSet::from([root.pid]);
    let mut next = vec![(root.pid, root.start)];
    while let Some((pid, start)) = next.pop() {
        for &(child, child_start) in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if child_start >= start && seen.insert(child) {
                out.push(child);
                next.push((child, child_start));
            }
        }
    }
    out
}

// ---- /proc ----

/// The client end of the loopback connection from `client` to `server`.
pub fn socket_owner(client: SocketAddr, server: SocketAddr) -> Option<SocketOwner> {
    let tables = if canonical(client.ip()).is_ipv4() {
        ["/proc/net/tcp", "/proc/net/tcp6"]
    } else {
        ["/proc/net/tcp6", "/proc/net/tcp"]
    };
    tables.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        find_socket(&text, client, server)
    })
}

fn stat(pid: u32) -> Option<(u32, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in `/proc`: (pid, parent pid, start time).
fn processes() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let (ppid, start) = stat(pid)?;
        Some((pid, ppid, start))
    })
    .collect()
}

/// The effective uid a process runs as (the owner of its `/proc` directory).
fn process_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// Whether `pid` holds the socket whose fd links read `target` (`socket:[INODE]`).
fn holds(pid: u32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target))
}

/// Whether `process` still runs (the same process, not a later one with its pid).
pub fn alive(process: ProcessId) -> bool {
    stat(process.pid).is_some_and(|(_, start)| start == process.start)
}

/// The process that opened the connection from `client` to `server`, and its socket's
/// owner: the holder of the client end from which every other holder descends (a process
/// that forked after connecting shares the socket with its child).
pub fn identify(
    client: SocketAddr,
    server: SocketAddr,
) -> Result<(ProcessId, SocketOwner), Unidentified> {
    if !is_loopback(client.ip()) {
        return Err(Unidentified::NotLoopback);
    }
    let owner = socket_owner(client, server).ok_or(Unidentified::NoSocket)?;
    let target = format!("socket:[{}]", owner.inode);
    let all = processes();
    // The processes of the socket's owner first (a stat each, against reading every fd of
    // every process); the others only if none of those holds it (a process that changed
    // user after connecting).
    let (mine, others): (Vec<u32>, Vec<u32>) = all
        .iter()
        .map(|&(pid, _, _)| pid)
        .partition(|&pid| process_uid(pid) == Some(owner.uid));
    let mut holders: Vec<u32> = mine
        .into_iter()
        .filter(|&pid| holds(pid, &target))
        .collect();
    if holders.is_empty() {
        holders = others
            .into_iter()
            .filter(|&pid| holds(pid, &target))
            .collect();
    }
    if holders.is_empty() {
        return Err(Unidentified::NoProcess);
    }
    let parent_of: HashMap<u32, u32> = all.iter().map(|&(pid, ppid, _)| (pid, ppid)).collect();
    let root = common_root(&holders, &parent_of).ok_or(Unidentified::Ambiguous)?;
    let start = all
        .iter()
        .find(|&&(pid, _, _)| pid == root)
        .map(|&(_, _, start)| start)
        .ok_or(Unidentified::NoProcess)?;
    Ok((ProcessId { pid: root, start }, owner))
}

/// Whether the connection from `client` to a session listener at `server` may be served
/// under `binding`.
pub fn verdict(binding: Binding, client: SocketAddr, server: SocketAddr) -> Verdict {
    let root = match binding {
        Binding::Unbound => return Verdict::Admitted,
        Binding::User { uid } => {
            return match socket_owner(client, server) {
                None => Verdict::Unknown,
                Some(owner) if owner.uid == uid => Verdict::Admitted,
                Some(_) => Verdict::Foreign,
            }
        }
        Binding::Process { root } => root,
    };
    let Some(owner) = socket_owner(client, server) else {
        return Verdict::Unknown;
    };
    let all = processes();
    if !all
        .iter()
        .any(|&(pid, _, start)| pid == root.pid && start == root.start)
    {
        return Verdict::RootGone;
    }
    let target = format!("socket:[{}]", owner.inode);
    if tree(root, &all).into_iter().any(|pid| holds(pid, &target)) {
        Verdict::Admitted
    } else {
        Verdict::Foreign
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4740 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 91234 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 91235 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D432 0100007F:1F90 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
";

    #[cfg(target_endian = "little")]
    #[test]
    fn the_client_end_of_a_loopback_connection_is_found() {
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            find_socket(TCP, client, server),
            Some(SocketOwner {
                uid: 1000,
                inode: 91234
            })
        );
        // The server's own end is not the client's.
        assert_eq!(
            find_socket(TCP, server, client),
            Some(SocketOwner {
                uid: 0,
                inode: 91235
            })
        );
        // A socket in TIME_WAIT belongs to no process.
        let gone: SocketAddr = "127.0.0.1:54322".parse().unwrap();
        assert_eq!(find_socket(TCP, gone, server), None);
        // An IPv4-mapped address as a dual-stack listener reports it.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:54321".parse().unwrap();
        assert_eq!(
            find_socket(TCP, mapped, server).map(|o| o.inode),
            Some(91234)
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_addresses_decode_word_by_word() {
        assert_eq!(
            decode_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            decode_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(decode_addr("0100007F"), None);
        assert_eq!(decode_addr("0100007:1F90"), None);
        assert_eq!(decode_addr("zz00007F:1F90"), None);
        assert!(parse_tcp_line("   0: 0100007F:1F90 00000000:0000 0A").is_none());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (weird) name) S 17 4242 17 0 -1 4194304 102 0 0 0 0 0 0 0 20 0 1 0 142816 3133440 417";
        assert_eq!(parse_stat(line), Some((17, 142816)));
        assert_eq!(parse_stat("4242 (short) S 17"), None);
        assert_eq!(parse_stat("no parentheses"), None);
    }

    #[test]
    fn the_opener_is_the_holder_the_others_descend_from() {
        // 10 forked 11 after connecting; 11 forked 12.
        let parents = HashMap::from([(10, 1), (11, 10), (12, 11), (20, 1)]);
        assert_eq!(common_root(&[11, 10, 12], &parents), Some(10));
        assert_eq!(common_root(&[12], &parents), Some(12));
        // A socket passed to an unrelated process: no one opener.
        assert_eq!(common_root(&[10, 20], &parents), None);
        // A cycle in a torn read does not loop.
        let cycle = HashMap::from([(30, 31), (31, 30)]);
        assert_eq!(common_root(&[30, 32], &cycle), None);
    }

    #[test]
    fn a_tree_follows_children_not_reused_pids() {
        let root = ProcessId {
            pid: 10,
            start: 100,
        };
        let processes = [
            (10, 1, 100),
            (11, 10, 150),
            (12, 11, 160),
            (13, 1, 120),
            // Claims 12 as parent but started before it: 12's pid was reused.
            (14, 12, 90),
        ];
        let mut got = tree(root, &processes);
        got.sort_unstable();
        assert_eq!(got, vec![10, 11, 12]);
    }

    /// Against the real `/proc`: a connection this process makes is this process's, and
    /// is refused for a session rooted in a child process that is not its ancestor.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_identified_and_refused_for_another_tree() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_end, peer) = listener.accept().unwrap();
        let server = listener.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let (me, _) = identify(peer, server).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(
            verdict(Binding::Process { root: me }, peer, server),
            Verdict::Admitted
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let other = ProcessId {
            pid: child.id(),
            start: stat(child.id()).unwrap().1,
        };
        assert_eq!(
            verdict(Binding::Process { root: other }, peer, server),
            Verdict::Foreign
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            verdict(Binding::Process { root: other }, peer, server),
            Verdict::RootGone
        );
        assert!(!alive(other));
        assert!(alive(me));
        assert_eq!(
            identify("10.1.2.3:5000".parse().unwrap(), server),
            Err(Unidentified::NotLoopback)
        );
    }
}
