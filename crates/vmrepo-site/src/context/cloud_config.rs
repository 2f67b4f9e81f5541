//! The three files of a NoCloud seed: `meta-data` (instance-id,
//! local-hostname), `user-data` (`#cloud-config`: host name, the `root` and
//! `star` accounts, the STAR environment, the monthly root password) and
//! `network-config` (version 2: DHCP, or static addresses).

use base64::Engine as _;

use super::network::Static;
use super::nodes::Run;
use super::yaml::{self, Value, map, s, strs};

/// Where the seed of the monthly password lives in the guest.
pub const SEED_PATH: &str = crate::boot::DEFAULT_SEED_PATH;
/// Where the script that sets the month's root password is written: where
/// `vmrepo password boot-script` puts it in an image.
pub const SCRIPT_PATH: &str = crate::boot::SCRIPT_PATH;
/// The crontab that sets a running node's password when the month turns:
/// hourly on the first day of a month (local time), so that the month the
/// script computes (UTC) has turned whatever the node's time zone.
pub const CRON_PATH: &str = "/etc/cron.d/vmrepo-password";

/// What is known of the image the nodes run.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// The image's name (its file name without extension).
    pub name: String,
    /// Its SHA-256, when recorded (single-file images).
    pub sha256: Option<String>,
    /// The STAR library version, as in names (`sl08e`).
    pub lib: Option<String>,
}

/// The monthly root password set-up.
#[derive(Clone, Debug)]
pub struct Password {
    /// The script that sets the month's password from [`SEED_PATH`].
    pub script: String,
    /// The seed, when it is to travel in the user-data (else the image holds it).
    pub seed: Option<Vec<u8>>,
}

/// Everything the seeds are made from, beside the node's name.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub image: Image,
    /// The DNS domain: the fully qualified name is `NODE.DOMAIN`.
    pub domain: Option<String>,
    /// OpenSSH authorized_keys lines for root and star.
    pub keys: Vec<String>,
    pub password: Option<Password>,
    /// Whether star may use sudo without a password.
    pub star_sudo: bool,
    /// The admin's own `#cloud-config`, merged over ours.
    pub admin: Option<Value>,
    /// The interface: a name (`eth0`), or a glob matched by name (`e*`).
    pub interface: String,
}

/// The instance-id of `node` running `image`: unique per node and image.
pub fn instance_id(image: &Image, node: &str) -> String {
    match image.sha256.as_deref().and_then(|h| h.get(..16)) {
        Some(h) => format!("{node}-{h}"),
        None => format!("{node}-{}", image.name),
    }
}

/// `meta-data`.
pub fn meta_data(o: &Options, node: &str) -> String {
    let v = map([("instance-id", s(instance_id(&o.image, node))), ("local-hostname", s(node))]);
    yaml::to_string("", &v)
}

/// `user-data` for one node.
pub fn user_data(o: &Options, node: &str) -> String {
    let fqdn = o.domain.as_ref().map(|d| format!("{node}.{d}"));
    yaml::to_string("#cloud-config\n", &user_data_value(o, node, fqdn.as_deref()))
}

/// Why a user-data cannot be a jinja template for `--format ec2`.
#[derive(Debug)]
pub struct NotTemplatable;

/// `user-data` for EC2's launch of `run.count` copies: a cloud-init jinja
/// template whose host name comes from the copy's `ami-launch-index`
/// (copy 0 is the run's first node). All but the host name is kept from
/// jinja in a raw block.
///
/// # Errors
/// [`NotTemplatable`] when the text holds `endraw`, which would end the raw block.
pub fn user_data_ec2(o: &Options, run: &Run) -> Result<String, NotTemplatable> {
    let number =
        format!("{{{{ '%0{}d' | format(ds.meta_data.ami_launch_index | int + {}) }}}}", run.width, run.first);
    let host = format!("{}{number}{}", run.prefix, run.suffix);
    let fqdn = o.domain.as_ref().map(|d| format!("{host}.{d}"));
    let Value::Map(mut all) = user_data_value(o, &host, fqdn.as_deref()) else { unreachable!("a map") };
    // Only our own host name and fqdn stay outside the raw block: an
    // admin's value that replaced them is kept from jinja like the rest.
    let ours = |k: &str, v: &Value| match k {
        "hostname" => *v == s(&host),
        "fqdn" => fqdn.as_ref().is_some_and(|f| *v == s(f)),
        _ => false,
    };
    let split = all.iter().position(|(k, v)| !ours(&k.text, v)).unwrap_or(all.len());
    let rest = Value::Map(all.split_off(split));
    let header = "## template: jinja\n#cloud-config\n";
    let head = if all.is_empty() { header.to_string() } else { yaml::to_string(header, &Value::Map(all)) };
    let body = yaml::to_string("", &rest);
    if body.contains("endraw") {
        return Err(NotTemplatable);
    }
    Ok(format!("{head}{{% raw %}}\n{body}{{% endraw %}}\n"))
}

fn user_data_value(o: &Options, host: &str, fqdn: Option<&str>) -> Value {
    let mut v = map([("hostname", s(host))]);
    if let Some(f) = fqdn {
        v.push("fqdn", s(f));
    }
    v.push("preserve_hostname", Value::Bool(false));
    v.push("manage_etc_hosts", Value::Bool(true));
    v.push("disable_root", Value::Bool(false));
    v.push("ssh_pwauth", Value::Bool(o.password.is_some()));
    v.push("groups", strs(&["star"]));
    let mut root = map([("name", s("root")), ("lock_passwd", Value::Bool(false))]);
    let mut star = map([
        ("name", s("star")),
        ("gecos", s("STAR")),
        ("primary_group", s("star")),
        ("homedir", s("/home/star")),
        ("shell", s("/bin/bash")),
        ("lock_passwd", Value::Bool(true)),
    ]);
    if !o.keys.is_empty() {
        root.push("ssh_authorized_keys", strs(&o.keys));
        star.push("ssh_authorized_keys", strs(&o.keys));
    }
    if o.star_sudo {
        star.push("sudo", s("ALL=(ALL) NOPASSWD:ALL"));
    }
    v.push("users", Value::Seq(vec![root, star]));
    let mut files = Vec::new();
    if let Some(lib) = &o.image.lib {
        let level = star_level(lib);
        let sh = format!(
            "# The STAR environment of {}: its library version (vmrepo context).\nSTAR_LEVEL={level}\nexport STAR_LEVEL\n",
            o.image.name
        );
        let csh = format!(
            "# The STAR environment of {}: its library version (vmrepo context).\nsetenv STAR_LEVEL {level}\n",
            o.image.name
        );
        files.push(file("/etc/profile.d/star.sh", "0644", s(sh)));
        files.push(file("/etc/profile.d/star.csh", "0644", s(csh)));
    }
    let mut runcmd = Vec::new();
    let mut bootcmd = Vec::new();
    if let Some(p) = &o.password {
        if let Some(seed) = &p.seed {
            let mut f = file(SEED_PATH, "0600", s(base64::engine::general_purpose::STANDARD.encode(seed)));
            f.push("encoding", s("b64"));
            files.push(f);
        }
        files.push(file(SCRIPT_PATH, "0700", s(p.script.clone())));
        let cron = format!(
            "# vmrepo context: root's password for the new month on a running node\n5 * 1 * * root {SCRIPT_PATH}\n"
        );
        files.push(file(CRON_PATH, "0644", s(cron)));
        // The first boot: after write_files. Every later boot: bootcmd (the
        // file is there by then; write_files and runcmd run once an instance).
        runcmd.push(strs(&[SCRIPT_PATH]));
        bootcmd.push(s(format!("if [ -x {SCRIPT_PATH} ]; then {SCRIPT_PATH} || :; fi")));
    }
    if !files.is_empty() {
        v.push("write_files", Value::Seq(files));
    }
    if !bootcmd.is_empty() {
        v.push("bootcmd", Value::Seq(bootcmd));
    }
    if !runcmd.is_empty() {
        v.push("runcmd", Value::Seq(runcmd));
    }
    if let Some(admin) = &o.admin {
        yaml::merge(&mut v, admin.clone());
    }
    v
}

fn file(path: &str, mode: &str, content: Value) -> Value {
    map([("path", s(path)), ("owner", s("root:root")), ("permissions", s(mode)), ("content", content)])
}

/// STAR's spelling of a library version: `sl08e` is `SL08e`.
pub fn star_level(lib: &str) -> String {
    match lib.strip_prefix("sl") {
        Some(rest) => format!("SL{rest}"),
        None => lib.to_string(),
    }
}

/// `network-config` (version 2): DHCP, or the node's static addresses.
pub fn network_config(o: &Options, net: Option<&Static>) -> String {
    let mut eth = if o.interface.contains(['*', '?', '[']) {
        map([("match", map([("name", s(&*o.interface))]))])
    } else {
        map([])
    };
    match net {
        None => eth.push("dhcp4", Value::Bool(true)),
        Some(st) => {
            eth.push("addresses", strs(&st.addresses.iter().map(ToString::to_string).collect::<Vec<_>>()));
            let mut routes = Vec::new();
            if let Some(g) = st.gateway4 {
                routes.push(map([("to", s("0.0.0.0/0")), ("via", s(g.to_string()))]));
            }
            if let Some(g) = st.gateway6 {
                routes.push(map([("to", s("::/0")), ("via", s(g.to_string()))]));
            }
            if !routes.is_empty() {
                eth.push("routes", Value::Seq(routes));
            }
            // cloud-init (22.4) fails on nameservers without addresses:
            // the search domain goes only with servers.
            if !st.dns.is_empty() {
                let mut ns = map([]);
                ns.push("addresses", strs(&st.dns.iter().map(ToString::to_string).collect::<Vec<_>>()));
                if let Some(d) = &o.domain {
                    ns.push("search", strs(&[d]));
                }
                eth.push("nameservers", ns);
            }
        }
    }
    let key = if o.interface.contains(['*', '?', '[']) { "id0" } else { o.interface.as_str() };
    let v = map([("version", Value::Int(2)), ("ethernets", Value::Map(vec![(key.into(), eth)]))]);
    yaml::to_string("", &v)
}
