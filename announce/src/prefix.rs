//! A VIP as a host prefix (`/32` or `/128`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A VIP announced as a host route: an IPv4 `/32` or an IPv6 `/128`.
///
/// Shorter prefixes are refused: on the VIP interface they would also route the rest of the
/// subnet into a device nobody reads, and a fabric spreading a whole prefix over hosts is
/// beyond what this crate promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPrefix(IpAddr);

impl HostPrefix {
    /// The host prefix of `addr`.
    pub fn new(addr: IpAddr) -> HostPrefix {
        HostPrefix(addr)
    }

    pub fn addr(self) -> IpAddr {
        self.0
    }

    /// 32 or 128.
    pub fn prefix_len(self) -> u8 {
        match self.0 {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    pub fn is_ipv6(self) -> bool {
        self.0.is_ipv6()
    }
}

impl fmt::Display for HostPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.prefix_len())
    }
}

/// Why a string is not a [`HostPrefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not an IP address.
    #[error(
        "{0:?} is not an IP address (expected e.g. \"10.0.0.100/32\" or \"2001:db8::100/128\")"
    )]
    NotAnAddress(String),
    /// A prefix length other than the host one.
    #[error(
        "{input:?}: only host prefixes are announced (/32 for IPv4, /128 for IPv6), not /{len}"
    )]
    NotHost {
        input: String,
        /// The prefix length as written.
        len: String,
    },
}

impl FromStr for HostPrefix {
    type Err = PrefixError;

    /// `"10.0.0.100"`, `"10.0.0.100/32"`, `"2001:db8::1"`, `"2001:db8::1/128"`.
    fn from_str(s: &str) -> Result<HostPrefix, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::NotAnAddress(s.to_string()))?;
        let p = HostPrefix(addr);
        match len {
            None => Ok(p),
            Some(l) if l.parse::<u8>().ok() == Some(p.prefix_len()) => Ok(p),
            Some(l) => Err(PrefixError::NotHost {
                input: s.to_string(),
                len: l.to_string(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn parses_host_prefixes_only() {
        let p: HostPrefix = "10.0.0.100/32".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.100/32");
        assert_eq!("10.0.0.100".parse::<HostPrefix>().unwrap(), p);
        let v6: HostPrefix = "2001:db8::100".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::100/128");
        assert!(v6.is_ipv6());
        assert_eq!(
            "10.0.0.0/24".parse::<HostPrefix>().unwrap_err().to_string(),
            "\"10.0.0.0/24\": only host prefixes are announced (/32 for IPv4, /128 for IPv6), not /24"
        );
        assert!(matches!(
            "2001:db8::1/32".parse::<HostPrefix>(),
            Err(PrefixError::NotHost { .. })
        ));
        assert!(matches!(
            "maas".parse::<HostPrefix>(),
            Err(PrefixError::NotAnAddress(_))
        ));
        assert!(matches!(
            "10.0.0.1/x".parse::<HostPrefix>(),
            Err(PrefixError::NotHost { .. })
        ));
    }
}
