//! Static addresses from a CSV file with the header `node,address,gateway,dns`:
//! `address` with its prefix length (`10.0.0.11/24`, `2001:db8::11/64`),
//! `gateway` an address of the same family or empty, `dns` addresses
//! separated by `;` or empty. A node may have several rows (an IPv4 and an
//! IPv6 address); `#` starts a comment line. Every address is parsed with
//! `std::net`, so nothing but an address reaches the network-config.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use vmrepo_repo::{Error, ErrorKind, Result};

use super::nodes::{Node, check_label};

/// The largest CSV file read.
pub const MAX_CSV: u64 = 16 << 20;
/// The most rows read.
pub const MAX_ROWS: usize = 200_000;
/// The most DNS servers a row may list.
const MAX_DNS: usize = 8;

/// One address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A node's static set-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Static {
    pub addresses: Vec<Cidr>,
    pub gateway4: Option<IpAddr>,
    pub gateway6: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// The rows of a CSV, by node.
pub type Table = BTreeMap<String, Static>;

/// Reads the CSV at `path`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] with the file and line: a wrong header, a
/// bad node name, address, prefix, gateway or DNS server, a gateway of the
/// other family or given twice for a node.
pub fn read(path: &Path) -> Result<Table> {
    use std::io::Read;
    let f = vmrepo_repo::fsutil::open_regular(path, true)?;
    let mut bytes = Vec::new();
    f.take(MAX_CSV + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > MAX_CSV {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: larger than {MAX_CSV} bytes", path.display()),
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, format!("{}: not UTF-8 text", path.display())))?;
    parse(text).map_err(|(line, m)| {
        Error::new(ErrorKind::InvalidInput, format!("{} line {line}: {m}", path.display()))
    })
}

/// Parses CSV text; the error is the line and the problem.
///
/// # Errors
/// As [`read`].
pub fn parse(text: &str) -> std::result::Result<Table, (usize, String)> {
    let mut table = Table::new();
    let mut header = false;
    let mut rows = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if !header {
            if cells != ["node", "address", "gateway", "dns"] {
                return Err((n, format!("the header must be node,address,gateway,dns, not {line:?}")));
            }
            header = true;
            continue;
        }
        rows += 1;
        if rows > MAX_ROWS {
            return Err((n, format!("more than {MAX_ROWS} rows")));
        }
        let [node, address, gateway, dns] = cells[..] else {
            return Err((n, format!("{} cells, expected 4 (node,address,gateway,dns)", cells.len())));
        };
        check_label(node).map_err(|m| (n, m))?;
        let cidr = cidr(address).map_err(|m| (n, m))?;
        let entry = table.entry(node.to_string()).or_default();
        if entry.addresses.contains(&cidr) {
            return Err((n, format!("{node} has {cidr} twice")));
        }
        entry.addresses.push(cidr);
        if !gateway.is_empty() {
            let gw: IpAddr =
                gateway.parse().map_err(|_| (n, format!("the gateway {gateway:?} is not an address")))?;
            if gw.is_ipv4() != cidr.addr.is_ipv4() {
                return Err((n, format!("the gateway {gw} is not of the family of {cidr}")));
            }
            let slot = if gw.is_ipv4() { &mut entry.gateway4 } else { &mut entry.gateway6 };
            if slot.is_some_and(|g| g != gw) {
                return Err((
                    n,
                    format!("{node} has two {} gateways", if gw.is_ipv4() { "IPv4" } else { "IPv6" }),
                ));
            }
            *slot = Some(gw);
        }
        for d in dns.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let d: IpAddr = d.parse().map_err(|_| (n, format!("the DNS server {d:?} is not an address")))?;
            if !entry.dns.contains(&d) {
                if entry.dns.len() >= MAX_DNS {
                    return Err((n, format!("more than {MAX_DNS} DNS servers for {node}")));
                }
                entry.dns.push(d);
            }
        }
    }
    if !header {
        return Err((1, "no header node,address,gateway,dns".into()));
    }
    Ok(table)
}

fn cidr(s: &str) -> std::result::Result<Cidr, String> {
    let (a, p) =
        s.split_once('/').ok_or_else(|| format!("the address {s:?} has no prefix length (/24, /64)"))?;
    let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = Some(p)
        .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|&p| p <= max)
        .ok_or_else(|| format!("the prefix length {p:?} of {s} is not 0 to {max}"))?;
    Ok(Cidr { addr, prefix })
}

/// Checks that the table names exactly the nodes: each has a row, no row
/// names another node.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] listing the nodes without a row (the first
/// ten and how many), or the rows for unknown nodes.
pub fn check(table: &Table, nodes: &[Node], source: &str) -> Result<()> {
    let missing: Vec<&str> =
        nodes.iter().map(|n| n.name.as_str()).filter(|n| !table.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{source}: no row for {} node(s): {}", missing.len(), few(&missing)),
        ));
    }
    if table.len() > nodes.len() {
        let known: std::collections::HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let unknown: Vec<&str> = table.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{source}: rows for {} node(s) not in --nodes: {}", unknown.len(), few(&unknown)),
        ));
    }
    Ok(())
}

fn few(names: &[&str]) -> String {
    let shown = names.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 10 { format!("{shown}, ... ({} more)", names.len() - 10) } else { shown }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "node,address,gateway,dns\n";

    #[test]
    fn rows_and_families() {
        let t = parse(&format!(
            "{HEAD}rcas1,10.0.0.11/24,10.0.0.1,10.0.0.2;10.0.0.3\n# c\nrcas1,2001:db8::11/64,2001:db8::1,\nrcas2,10.0.0.12/24,,\n"
        ))
        .unwrap();
        let a = &t["rcas1"];
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(a.addresses[1].to_string(), "2001:db8::11/64");
        assert_eq!(a.gateway4.unwrap().to_string(), "10.0.0.1");
        assert_eq!(a.gateway6.unwrap().to_string(), "2001:db8::1");
        assert_eq!(a.dns.len(), 2);
        assert_eq!(t["rcas2"].gateway4, None);
    }

    #[test]
    fn refused_with_the_line() {
        for (body, part) in [
            ("rcas1,10.0.0.11,,", "no prefix"),
            ("rcas1,10.0.0.11/33,,", "0 to 32"),
            ("rcas1,10.0.0.11/+8,,", "0 to 32"),
            ("rcas1,2001:db8::1/129,,", "0 to 128"),
            ("rcas1,10.0.0.256/24,,", "not an IPv4"),
            ("rcas1,10.0.0.1/24,2001:db8::1,", "family"),
            ("rcas1,10.0.0.1/24,10.0.0.300,", "gateway"),
            ("rcas1,10.0.0.1/24,,8.8.8.8;x", "DNS server \"x\""),
            ("rcas1,10.0.0.1/24,,\nrcas1,10.0.0.1/24,,", "twice"),
            ("rcas1,10.0.0.1/24,10.0.0.2,\nrcas1,10.0.1.1/24,10.0.1.2,", "two IPv4"),
            ("RCAS1,10.0.0.1/24,,", "lower case"),
            ("rcas1,10.0.0.1/24", "2 cells"),
            ("rcas1,\"10.0.0.1/24\",,", "not an IPv4"),
        ] {
            let (line, m) = parse(&format!("{HEAD}{body}\n")).unwrap_err();
            assert!(m.contains(part), "{body:?}: {m}");
            assert!(line >= 2, "{body:?}");
        }
        assert!(parse("node,address\n").unwrap_err().1.contains("header"));
        assert!(parse("").unwrap_err().1.contains("no header"));
    }

    #[test]
    fn every_node_has_a_row_and_no_other() {
        let nodes = super::super::nodes::parse("rcas1..rcas3").unwrap();
        let t = parse(&format!("{HEAD}rcas1,10.0.0.1/24,,\n")).unwrap();
        let e = check(&t, &nodes, "net.csv").unwrap_err().to_string();
        assert!(e.contains("2 node(s): rcas2, rcas3"), "{e}");
        let t = parse(&format!(
            "{HEAD}rcas1,10.0.0.1/24,,\nrcas2,10.0.0.2/24,,\nrcas3,10.0.0.3/24,,\nweb1,10.0.0.4/24,,\n"
        ))
        .unwrap();
        let e = check(&t, &nodes, "net.csv").unwrap_err().to_string();
        assert!(e.contains("not in --nodes: web1"), "{e}");
    }
}
