//! Who may hold a connection: a cap per peer address, so that one stranger's idle sockets
//! cannot take every slot, and the slot accounting the listeners share. Each listener also
//! has a cap of its own (`Server::listener_cap`), so a flood of one port leaves slots for the
//! others, and a connection that sends no byte within `first_byte_timeout` is closed long
//! before the header timeout of one that is mid-request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Open connections per peer address unless `--max-connections-per-ip` says otherwise.
pub const DEFAULT_PER_IP: usize = 512;
/// How long a new connection may stay silent unless `--first-byte-timeout-s` says otherwise.
pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(3);

/// Open connections by peer address, capped per address.
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
    /// When the log last said an address was over its cap (at most once a second).
    said: Mutex<Option<Instant>>,
}

/// One connection's place in its address's count; given back on drop.
pub struct IpSlot {
    of: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(cap: usize) -> Arc<PerIp> {
        Arc::new(PerIp { open: Mutex::new(HashMap::new()), cap: cap.max(1), said: Mutex::new(None) })
    }

    /// A slot for one more connection from `ip`, or `None` when it holds its cap already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_default();
        if *n >= self.cap {
            drop(open);
            let mut said = self.said.lock();
            if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%ip, cap = self.cap, "refused a connection: this address holds its cap of open connections");
                *said = Some(Instant::now());
            }
            return None;
        }
        *n += 1;
        Some(IpSlot { of: self.clone(), ip })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The slots of one listener: all of them when it is the only one, else three quarters of the
/// process's connections, so a flood of one port leaves a quarter to the others.
pub fn listener_cap(total: usize, listeners: usize) -> usize {
    if listeners <= 1 {
        total.max(1)
    } else {
        (total * 3 / 4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_slots_back() {
        let p = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let s1 = p.take(a).unwrap();
        let _s2 = p.take(a).unwrap();
        assert!(p.take(a).is_none(), "the third from one address");
        assert!(p.take(b).is_some(), "another address is not affected");
        drop(s1);
        assert_eq!(p.open_from(a), 1);
        assert!(p.take(a).is_some());
        assert_eq!((listener_cap(4096, 1), listener_cap(4096, 3)), (4096, 3072));
    }
}
