//! Several broker addresses per connection (a cluster): the URI's authority
//! may list hosts separated by commas, `amqp://u:p@h1:5672,h2:5673/vhost`,
//! and the query may add more with `addresses=h3:5674,h4` (after those of
//! the authority). Every address shares the scheme, credentials, vhost and
//! query; each gets its own TLS server name (SNI and verification). A host
//! without a port takes the scheme's default (5672, 5671 for amqps).
//!
//! Which address a link tries (`Rotation`): the first connect goes through
//! the list in order and takes the first that answers; after a loss, the
//! next one after the address lost, in order and wrapping around, the lost
//! one last. In order, not shuffled: the log and the tests can tell what
//! happens, and an application that wants to spread its connections over
//! the nodes lists them in a different order per process. The usual backoff
//! runs between full rounds only (every address failed once in a row).

use super::address::{parse_uri, BrokerAddress};
use crate::error::{Error, Result};

/// Parses a URI that may list several hosts: one `BrokerAddress` per host,
/// in order.
pub fn parse_addresses(s: &str) -> Result<Vec<BrokerAddress>> {
    let uris = split_uri(s)?;
    let single = uris.len() == 1;
    let mut out = Vec::with_capacity(uris.len());
    for (i, (uri, entry)) in uris.iter().enumerate() {
        let a = parse_uri(uri).map_err(|e| {
            if single {
                e
            } else {
                // The entry is host[:port] only: no password to hide.
                Error::invalid(format!("address {} ('{entry}'): {}", i + 1, e.message))
            }
        })?;
        out.push(a);
    }
    Ok(out)
}

/// Splits `s` into one URI per address (with the address as written), or
/// returns `s` as it is when it names one host. Never echoes `s`.
pub(crate) fn split_uri(s: &str) -> Result<Vec<(String, String)>> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok(vec![(s.to_string(), String::new())]); // parse_uri says why
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !authority.contains('@') && tail.contains('@') {
        // An unencoded '/', '?' or '#' in the password cut the authority
        // short: never split (or echo) a piece of it; parse_uri refuses it.
        return Ok(vec![(s.to_string(), String::new())]);
    }
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (tail, extra) = take_addresses_param(tail);
    if !hosts.contains(',') && extra.is_none() {
        return Ok(vec![(s.to_string(), String::new())]);
    }
    let mut entries: Vec<String> = hosts.split(',').map(str::to_string).collect();
    if let Some(extra) = extra {
        if hosts.is_empty() {
            entries.clear();
        }
        entries.extend(extra.split(',').map(str::to_string));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let entry = entry.trim().to_string();
        if entry.is_empty() {
            return Err(Error::invalid(format!(
                "bad AMQP URI: address {} of the host list is empty (expected \
                 host[:port],host[:port],...)",
                i + 1
            )));
        }
        if entry.contains(['@', '/', '?', '#']) {
            return Err(Error::invalid(format!(
                "bad AMQP URI: address {} of the host list is not host[:port]",
                i + 1
            )));
        }
        out.push((format!("{scheme}://{userinfo}{entry}{tail}"), entry));
    }
    Ok(out)
}

/// Removes `addresses=...` from the query of `tail` (path, query,
/// fragment): the tail without it, and its value (percent-decoded).
fn take_addresses_param(tail: &str) -> (String, Option<String>) {
    let Some((path, query)) = tail.split_once('?') else {
        return (tail.to_string(), None);
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut kept = Vec::new();
    let mut value: Option<String> = None;
    for pair in query.split('&') {
        if pair.split('=').next() == Some("addresses") {
            let v = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            value = Some(match value {
                Some(before) => format!("{before},{v}"),
                None => v,
            });
        } else {
            kept.push(pair);
        }
    }
    let mut out = path.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, value)
}

/// Which address a link tries next (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rotation {
    len: usize,
    current: usize,
    /// Failed attempts in a row in this round.
    failed: usize,
}

impl Rotation {
    /// A rotation over `len` (at least 1) addresses, starting at `start`.
    pub fn new(len: usize, start: usize) -> Rotation {
        let len = len.max(1);
        Rotation {
            len,
            current: start % len,
            failed: 0,
        }
    }

    /// The address to try now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The current address answered.
    pub fn connected(&mut self) {
        self.failed = 0;
    }

    /// The connection to the current address was lost: a new round starts
    /// at the next address, the lost one last.
    pub fn lost(&mut self) {
        self.failed = 0;
        self.current = (self.current + 1) % self.len;
    }

    /// An attempt on the current address failed: moves to the next; true
    /// when that completed a round (every address failed once in a row),
    /// when the caller backs off. The next round starts where this one did.
    pub fn failed(&mut self) -> bool {
        self.current = (self.current + 1) % self.len;
        self.failed += 1;
        if self.failed >= self.len {
            self.failed = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(s: &str) -> Vec<String> {
        parse_addresses(s)
            .unwrap()
            .iter()
            .map(|a| format!("{}:{}", a.uri.authority.host, a.uri.authority.port))
            .collect()
    }

    #[test]
    fn host_lists_in_the_authority_and_the_query() {
        assert_eq!(hosts("amqp://u:p@h1:5672/v"), ["h1:5672"]);
        assert_eq!(
            hosts("amqp://u:p@h1:31801,127.0.0.1:31802,h3/v?heartbeat=5"),
            ["h1:31801", "127.0.0.1:31802", "h3:5672"]
        );
        assert_eq!(
            hosts("amqp://u:p@h1:1/%2f?heartbeat=5&addresses=h2:2,h3:3"),
            ["h1:1", "h2:2", "h3:3"]
        );
        assert_eq!(
            hosts("amqps://u:p@h1,[::1]:5/v?addresses=h3%3A3&tls_insecure_skip_verify=true"),
            ["h1:5671", "::1:5", "h3:3"]
        );
        let all = parse_addresses("amqp://bob:s3cret@a:1,b:2/vh?heartbeat=7").unwrap();
        for a in &all {
            assert_eq!(a.uri.vhost, "vh");
            assert_eq!(a.uri.authority.userinfo.username, "bob");
            assert_eq!(a.uri.authority.userinfo.password, "s3cret");
            assert_eq!(a.uri.query.heartbeat, Some(7));
            assert!(!a.display.contains("s3cret"));
        }
        assert_eq!(all[1].display, "amqp://bob@b:2/vh");
        // A ',' in the (encoded or not) password is no separator.
        assert_eq!(hosts("amqp://u:a,b@h:1/v"), ["h:1"]);
    }

    #[test]
    fn tls_host_lists_verify_each_host_by_its_own_name() {
        let all = parse_addresses(
            "amqps://u:p@node-a.example:5671,node-b.example/v?tls_insecure_skip_verify=false",
        )
        .unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|a| format!("{:?}", a.tls.as_ref().unwrap()))
            .collect();
        assert!(names[0].contains("node-a.example"), "{}", names[0]);
        assert!(names[1].contains("node-b.example"), "{}", names[1]);
        assert_eq!(all[1].uri.authority.port, 5671);
    }

    #[test]
    fn bad_host_lists_are_clear_errors() {
        for (bad, says) in [
            (
                "amqp://u:pw@h1,,h2/v",
                "address 2 of the host list is empty",
            ),
            ("amqp://u:pw@h1,/v", "address 2 of the host list is empty"),
            ("amqp://u:pw@,h1/v", "address 1 of the host list is empty"),
            (
                "amqp://u:pw@h1/v?addresses=",
                "address 2 of the host list is empty",
            ),
            ("amqp://u:pw@h1:1,h2:99999/v", "address 2 ('h2:99999')"),
            ("amqp://u:pw@h1:1,h2:x/v", "address 2 ('h2:x')"),
            ("amqp://u:pw@h1/v?addresses=x:pw@h2", "not host[:port]"),
            ("amqp://u:pw@h1,h2/v?colour=red", "unknown query parameter"),
        ] {
            let e = parse_addresses(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {}", e.message);
            assert!(!e.message.contains(":pw"), "{}", e.message);
        }
        // An unencoded '/' in the password: no piece of it is taken for a host.
        for bad in ["amqp://u:ZQa,b/c@h1,h2/v", "amqp://u:ZQa,b?c@h1,h2/v"] {
            let e = parse_addresses(bad).unwrap_err();
            assert!(!e.message.contains("ZQ"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn rotation_takes_the_first_that_answers_and_moves_on_after_a_loss() {
        let mut r = Rotation::new(3, 0);
        assert_eq!(r.current(), 0);
        assert!(!r.failed()); // 0 down
        assert_eq!(r.current(), 1);
        r.connected();
        r.lost(); // 1 lost: 2, 0, then 1
        assert_eq!(r.current(), 2);
        assert!(!r.failed());
        assert_eq!(r.current(), 0);
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        assert!(r.failed(), "three in a row: a full round, back off");
        assert_eq!(r.current(), 2, "the next round starts where this one did");
        r.connected();
        r.lost();
        assert_eq!(r.current(), 0);
        // One address: every failure is a round, as before lists existed.
        let mut one = Rotation::new(1, 0);
        assert!(one.failed());
        one.lost();
        assert_eq!(one.current(), 0);
        assert_eq!(Rotation::new(2, 5).current(), 1);
        assert_eq!(Rotation::new(0, 0).current(), 0);
    }
}
