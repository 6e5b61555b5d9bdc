//! What a master agrees to before it touches its table: which probe addresses it
//! dials ([`check_probe_addr`]: no reflection to third hosts or to itself) and how
//! many registrations one IP address may send per second ([`RateLimiter`]).
//! Sans-IO: addresses and `now` in, a verdict out.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chitchat_core::Addr;

/// A probe address the master refuses to dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Not an IP socket address (a Unix socket path).
    #[error("not an ip address")]
    NotIp,
    /// Port 0: nobody listens there.
    #[error("port 0")]
    PortZero,
    /// `0.0.0.0` or `::`: the master would dial itself.
    #[error("the unspecified address")]
    Unspecified,
    /// A loopback address, and the registration did not come from loopback: the
    /// master would dial its own local services.
    #[error("a loopback address, registered from a non-loopback host")]
    Loopback,
    /// A multicast address.
    #[error("a multicast address")]
    Multicast,
    /// The IPv4 broadcast address.
    #[error("a broadcast address")]
    Broadcast,
    /// Another host than the one the registration came from (allowed only with
    /// `allow_foreign_probe_addrs`).
    #[error("another host than the registering one ({source_ip})")]
    Foreign {
        /// The IP the registration came from.
        source_ip: IpAddr,
    },
}

/// Checks that `addr`, the probe address in a registration that came from
/// `source`, is one the master may dial: the same IP as `source` (unless
/// `allow_foreign`), and in every case not unspecified, multicast, broadcast, port
/// 0, or loopback when `source` is not loopback. IPv4-mapped IPv6 addresses count
/// as IPv4.
///
/// ```
/// use chitchat_heartbeat::policy::{check_probe_addr, AddrError};
///
/// let from = "10.0.0.7:50123".parse().unwrap();
/// assert_eq!(check_probe_addr(&"10.0.0.7:7001".parse().unwrap(), &from, false), Ok(()));
/// assert!(matches!(
///     check_probe_addr(&"10.0.0.8:7001".parse().unwrap(), &from, false),
///     Err(AddrError::Foreign { .. })
/// ));
/// assert_eq!(
///     check_probe_addr(&"127.0.0.1:22".parse().unwrap(), &from, true),
///     Err(AddrError::Loopback)
/// );
/// ```
///
/// # Errors
/// The [`AddrError`] that refuses it.
pub fn check_probe_addr(addr: &Addr, source: &Addr, allow_foreign: bool) -> Result<(), AddrError> {
    let addr = addr.as_inet().ok_or(AddrError::NotIp)?;
    let ip = canonical(addr.ip());
    if addr.port() == 0 {
        return Err(AddrError::PortZero);
    }
    if ip.is_unspecified() {
        return Err(AddrError::Unspecified);
    }
    if ip.is_multicast() {
        return Err(AddrError::Multicast);
    }
    if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(AddrError::Broadcast);
    }
    let source_ip = source.as_inet().map(|s| canonical(s.ip()));
    if ip.is_loopback() && !source_ip.is_some_and(|s| s.is_loopback()) {
        return Err(AddrError::Loopback);
    }
    match source_ip {
        Some(source_ip) if source_ip != ip && !allow_foreign => {
            Err(AddrError::Foreign { source_ip })
        }
        _ => Ok(()),
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Most addresses a [`RateLimiter`] tracks one by one: past it, addresses it has
/// not seen this second share one budget. 65 536 entries are a few MiB.
pub const RATE_LIMIT_ADDRESSES: usize = 65_536;

/// Counts registrations per IP address over one-second windows.
///
/// Bounded: at most [`RATE_LIMIT_ADDRESSES`] addresses are tracked; when that many
/// have registered within the current second, the others share one budget (a
/// flood from many addresses slows newcomers, and never grows memory). Every
/// address counts in the same window, which begins at the first registration after
/// the last one ended: when it ends the whole table is emptied at once, so a call
/// costs one lookup, never a walk over the table, however many addresses flood it.
/// Ordered by address, so nothing depends on a hash seed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use chitchat_heartbeat::policy::RateLimiter;
///
/// let mut limiter = RateLimiter::new(2);
/// let (ip, t0) = ("10.0.0.7".parse().unwrap(), Instant::now());
/// assert!(limiter.allow(ip, t0));
/// assert!(limiter.allow(ip, t0));
/// assert!(!limiter.allow(ip, t0));
/// assert!(limiter.allow(ip, t0 + Duration::from_secs(1)));
/// ```
#[derive(Clone, Debug)]
pub struct RateLimiter {
    per_second: u32,
    /// When the current window began (none yet: the next call begins one).
    window: Option<Instant>,
    /// Registrations in the current window, by address.
    counts: BTreeMap<IpAddr, u32>,
    /// Registrations in the current window from addresses that found the table full.
    overflow: u32,
    /// Table entries dropped when windows ended: the only walks over the table.
    #[cfg(test)]
    walked: usize,
}

impl RateLimiter {
    /// A limiter of `per_second` registrations per address and second.
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            window: None,
            counts: BTreeMap::new(),
            overflow: 0,
            #[cfg(test)]
            walked: 0,
        }
    }

    /// Counts one registration from `ip` at `now`; `false` if `ip` is over its
    /// budget for the current second (nothing is counted then).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_second == u32::MAX {
            return true;
        }
        let ended = self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if ended {
            #[cfg(test)]
            {
                self.walked += self.counts.len();
            }
            self.counts.clear();
            self.overflow = 0;
            self.window = Some(now);
        }
        let limit = self.per_second;
        let full = self.counts.len() >= RATE_LIMIT_ADDRESSES;
        let count = match self.counts.get_mut(&ip) {
            Some(count) => count,
            None if full => &mut self.overflow,
            None if limit == 0 => return false,
            None => self.counts.entry(ip).or_insert(0),
        };
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str, source: &str, foreign: bool) -> Result<(), AddrError> {
        check_probe_addr(&addr.parse().unwrap(), &source.parse().unwrap(), foreign)
    }

    #[test]
    fn the_registering_host_is_the_only_one_dialled_by_default() {
        assert_eq!(check("10.0.0.7:7001", "10.0.0.7:40000", false), Ok(()));
        assert_eq!(check("[::1]:7001", "[::1]:40000", false), Ok(()));
        assert_eq!(check("127.0.0.1:7001", "127.0.0.1:40000", false), Ok(()));
        assert_eq!(
            check("10.0.0.9:7001", "10.0.0.7:40000", false),
            Err(AddrError::Foreign {
                source_ip: "10.0.0.7".parse().unwrap()
            })
        );
        assert_eq!(
            check("127.0.0.2:7001", "127.0.0.1:40000", false),
            Err(AddrError::Foreign {
                source_ip: "127.0.0.1".parse().unwrap()
            })
        );
        assert_eq!(check("10.0.0.9:7001", "10.0.0.7:40000", true), Ok(()));
        // An IPv4-mapped source is its IPv4 address.
        assert_eq!(
            check("10.0.0.7:7001", "[::ffff:10.0.0.7]:40000", false),
            Ok(())
        );
    }

    #[test]
    fn addresses_never_dialled() {
        for (addr, source, expected) in [
            ("0.0.0.0:7001", "0.0.0.0:1", AddrError::Unspecified),
            ("[::]:7001", "10.0.0.7:1", AddrError::Unspecified),
            ("224.0.0.1:7001", "10.0.0.7:1", AddrError::Multicast),
            ("[ff02::1]:7001", "10.0.0.7:1", AddrError::Multicast),
            ("255.255.255.255:7001", "10.0.0.7:1", AddrError::Broadcast),
            ("127.0.0.1:22", "10.0.0.7:1", AddrError::Loopback),
            ("[::1]:22", "10.0.0.7:1", AddrError::Loopback),
            ("[::ffff:127.0.0.1]:22", "10.0.0.7:1", AddrError::Loopback),
            ("10.0.0.7:0", "10.0.0.7:1", AddrError::PortZero),
        ] {
            assert_eq!(check(addr, source, true), Err(expected), "{addr}");
        }
        let unix: Addr = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(
            check_probe_addr(&unix, &"10.0.0.7:1".parse().unwrap(), true),
            Err(AddrError::NotIp)
        );
    }

    #[test]
    fn each_address_has_its_own_budget_per_second() {
        let mut limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!((0..5).filter(|_| limiter.allow(a, t0)).count(), 3);
        assert_eq!((0..5).filter(|_| limiter.allow(b, t0)).count(), 3);
        let later = t0 + Duration::from_millis(999);
        assert!(!limiter.allow(a, later));
        assert!(limiter.allow(a, t0 + Duration::from_secs(1)));
        assert!(RateLimiter::new(u32::MAX).allow(a, t0));
        assert!(!RateLimiter::new(0).allow(a, t0));
    }

    /// Address number `i` of a flood (an IPv6 prefix holds any number of them).
    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1))
    }

    /// A limiter of 2 a second whose table `RATE_LIMIT_ADDRESSES` addresses filled
    /// at `t0`.
    fn full_limiter(t0: Instant) -> RateLimiter {
        let mut limiter = RateLimiter::new(2);
        for i in 0..RATE_LIMIT_ADDRESSES as u32 {
            assert!(limiter.allow(ip(i), t0));
        }
        limiter
    }

    #[test]
    fn a_flood_of_addresses_shares_one_budget_and_memory_stays_bounded() {
        let t0 = Instant::now();
        let mut limiter = full_limiter(t0);
        let extra: Vec<bool> = (0..5).map(|i| limiter.allow(ip(1 << 20 | i), t0)).collect();
        assert_eq!(extra, [true, true, false, false, false]);
        assert_eq!(limiter.tracked(), RATE_LIMIT_ADDRESSES);
        // A second later, the stale windows are dropped to make room.
        assert!(limiter.allow(ip(1 << 21), t0 + Duration::from_secs(1)));
        assert_eq!(limiter.tracked(), 1);
    }

    /// With the table full, each registration from yet another address must not
    /// walk the table: a flood of new addresses would make every one cost 65 536
    /// steps (a master at 100 % of a core on a few thousand registrations a second,
    /// and a large cluster's start quadratic). The table is walked once per window,
    /// when it ends.
    #[test]
    fn new_addresses_past_a_full_table_cost_no_walk_of_it() {
        let t0 = Instant::now();
        let mut limiter = full_limiter(t0);
        let newcomers = 1000;
        let allowed = (0..newcomers)
            .filter(|&i| limiter.allow(ip(1 << 20 | i), t0 + Duration::from_millis(500)))
            .count();
        assert_eq!(allowed, 2, "newcomers share one budget");
        assert_eq!(limiter.walked, 0, "no walk while the window lasts");
        assert!(limiter.allow(ip(1 << 21), t0 + Duration::from_secs(1)));
        assert_eq!(
            limiter.walked, RATE_LIMIT_ADDRESSES,
            "one walk when it ends"
        );
    }
}
