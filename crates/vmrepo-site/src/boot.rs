//! What an image runs at each boot to set root's password for the month:
//! a POSIX sh script ([`password_script`]), and the two ways to run it at
//! boot, an rc.local line (SL4/SL5 era) and a systemd unit.
//!
//! The script computes exactly what `vmrepo password` prints for the month
//! (UTC) with tools an old image has (`date`, `md5sum`, `base64` or
//! `openssl base64`, `od`, `awk`, `sha256sum` or `openssl dgst`), and sets
//! it with `chpasswd` (`passwd --stdin` exists only on Red Hat systems).
//! The seed is read from a root-only file and never leaves the shell: it is
//! given to processes on pipes only (never in their arguments), and neither
//! it nor the password is echoed or logged. The HMAC scheme is built from
//! SHA-256 (RFC 2104) rather than with `openssl dgst -hmac KEY`, which
//! would put the seed in a process's arguments, visible in `ps`.

use crate::password::Scheme;

/// Where the script is installed in an image.
pub const SCRIPT_PATH: &str = "/usr/local/sbin/vmrepo-password-boot";
/// The systemd unit that runs it.
pub const UNIT_PATH: &str = "/etc/systemd/system/vmrepo-password.service";
/// The default seed file in an image.
pub const DEFAULT_SEED_PATH: &str = "/etc/vmrepo/password-seed";
/// The first words of the script's marker line, which `vmrepo inspect`
/// recognises: `# vmrepo password boot-script scheme=spec`.
pub const MARKER: &str = "# vmrepo password boot-script scheme=";

/// The name of a scheme in the marker and on the command line.
#[must_use]
pub fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Spec => "spec",
        Scheme::Hmac => "hmac",
    }
}

/// `s` quoted for sh: in single quotes, a quote as `'\''`.
#[must_use]
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The POSIX sh script that sets root's password for the current month
/// (UTC) from the seed in `seed_path` (its first line, as `vmrepo password
/// --seed-file` reads it), with `chpasswd`. It refuses, leaving the password
/// as it is, logging to syslog and stderr and exiting 1, when the seed file
/// is not a regular file owned by root and readable by root only, or holds
/// a seed `vmrepo password` refuses.
#[must_use]
pub fn password_script(scheme: Scheme, seed_path: &str) -> String {
    let name = scheme_name(scheme);
    let mut s = String::with_capacity(4096);
    s.push_str(&format!(
        "#!/bin/sh\n\
{MARKER}{name}\n\
# Sets root's password for this month (UTC) from the seed in the file below.\n\
# Whoever starts the image gets the same password with\n\
#   vmrepo password --scheme {name} --seed-file <a copy of the seed>\n\
# Written by vmrepo; see its docs/site.md. The seed and the password are never\n\
# echoed, logged, nor given to a command in its arguments.\n\
set -eu\n\
umask 077\n\
LC_ALL=C\n\
export LC_ALL\n\
PATH=${{PATH:-/usr/sbin:/usr/bin:/sbin:/bin}}\n\
seed_file={seed}\n\
tag=vmrepo-password\n\
say() {{\n\
\x20   logger -t \"$tag\" -- \"$1\" 2>/dev/null || :\n\
\x20   printf '%s: %s\\n' \"$tag\" \"$1\" >&2\n\
}}\n\
refuse() {{\n\
\x20   say \"$seed_file: $1; root's password is left as it is\"\n\
\x20   exit 1\n\
}}\n\
\n\
# The seed file: a regular file (not a link), owned by root, readable by root only.\n\
[ -f \"$seed_file\" ] && [ ! -h \"$seed_file\" ] || refuse \"not a regular file\"\n\
set -f\n\
# shellcheck disable=SC2046\n\
set -- $(ls -lnd \"$seed_file\")\n\
set +f\n\
case ${{1:-}} in\n\
-r[w-]-------|-r[w-]-------.) ;;\n\
*) refuse \"its mode is ${{1:-unknown}}: others than root could read it (chmod 600)\" ;;\n\
esac\n\
[ \"${{3:-}}\" = 0 ] || refuse \"it is not owned by root (chown root)\"\n\
\n\
# The seed: the first line, its line break (and a CR before it) removed.\n\
seed=\n\
IFS= read -r seed <\"$seed_file\" || [ -n \"$seed\" ] || refuse \"the seed is empty\"\n\
cr=$(printf '\\r')\n\
seed=${{seed%\"$cr\"}}\n\
case $seed in\n\
'') refuse \"the seed is empty\" ;;\n\
*\"$cr\"*) refuse \"the seed holds a line break\" ;;\n\
*%*) refuse \"the seed holds '%', which date(1) would read in the specification's command\" ;;\n\
esac\n\
[ \"${{#seed}}\" -le 4096 ] || refuse \"the seed is longer than 4096 bytes\"\n\
n=$(head -n 1 \"$seed_file\" | tr -d '\\r\\n' | wc -c)\n\
[ \"$n\" -eq \"${{#seed}}\" ] || refuse \"the seed holds a NUL byte\"\n\
\n\
month=$(date -u +%y%m)\n\
case $month in\n\
[0-9][0-9][0-1][0-9]) ;;\n\
*) say \"date -u +%y%m printed no month; root's password is left as it is\"; exit 1 ;;\n\
esac\n",
        seed = sh_quote(seed_path),
    ));
    match scheme {
        Scheme::Spec => s.push_str(SPEC_PART),
        Scheme::Hmac => s.push_str(HMAC_PART),
    }
    s.push_str(
        "\n\
if printf 'root:%s\\n' \"$pw\" | chpasswd; then\n\
\x20   say \"root's password set for month $month\"\n\
else\n\
\x20   say \"chpasswd failed; root's password is left as it is\"\n\
\x20   exit 1\n\
fi\n",
    );
    s
}

/// The specification's pipeline, `date '+%y%m SEED=...' | md5sum | base64 |
/// sed`, with the line `date` would print made by the shell's printf (so
/// the seed is on a pipe, not in date's arguments) and the month in UTC.
const SPEC_PART: &str = r#"
# The specification's scheme: date '+%y%m SEED=...' | md5sum | base64 | sed,
# the line date would print written by the shell instead (the seed stays off
# any command line), the month in UTC as vmrepo password computes it.
if command -v base64 >/dev/null 2>&1; then b64=base64; else b64='openssl base64'; fi
pw=$(printf '%s SEED=%s\n' "$month" "$seed" | md5sum | $b64 | sed 's|\(...........\).*|\1|')
[ "${#pw}" -eq 11 ] || { say "md5sum or base64 failed; root's password is left as it is"; exit 1; }
"#;

/// HMAC-SHA-256(seed, YYMM || counter) from SHA-256 itself (RFC 2104), the
/// bytes below 248 taken modulo 62 into `[A-Za-z0-9]` until 20 are kept,
/// as `vmrepo_site::password` does.
const HMAC_PART: &str = r#"
# HMAC-SHA-256(seed, YYMM || counter) per RFC 2104, from SHA-256 itself (no
# key on openssl's command line); each byte below 248, modulo 62, is one of
# A-Z a-z 0-9, until 20 characters are kept.
sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | awk '{ print $1 }'
    else
        openssl dgst -sha256 | awk '{ print $NF }'
    fi
}
hexfns='function hv(s,  i, v) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
function xor(a, b,  r, p) { r = 0; p = 1; while (a > 0 || b > 0) { if (a % 2 != b % 2) r += p; a = int(a / 2); b = int(b / 2); p *= 2 } return r }'
if [ "${#seed}" -gt 64 ]; then
    keyhex=$(printf '%s' "$seed" | sha256)
else
    keyhex=$(printf '%s' "$seed" | od -An -v -tx1 | tr -d ' \n')
fi
# The key XOR ipad and XOR opad, as printf escapes (\ooo), one per line.
pads=$(printf '%s\n' "$keyhex" | awk "$hexfns"'
{ for (i = 0; i < 64; i++) { b = (2 * i < length($0)) ? hv(substr($0, 2 * i + 1, 2)) : 0
      ip = ip sprintf("\\%03o", xor(b, 54)); op = op sprintf("\\%03o", xor(b, 92)) } }
END { print ip; print op }')
ipad=${pads%
*}
opad=${pads#*
}
[ "${#ipad}" -eq 256 ] && [ "${#opad}" -eq 256 ] || { say "awk failed; root's password is left as it is"; exit 1; }
pw=
counter=0
while [ "${#pw}" -lt 20 ]; do
    [ "$counter" -lt 256 ] || { say "no password after 256 blocks; root's password is left as it is"; exit 1; }
    c=$(printf '\\%03o' "$counter")
    inner=$({ printf "$ipad"; printf '%s' "$month"; printf "$c"; } | sha256)
    innerx=$(printf '%s\n' "$inner" | awk "$hexfns"'{ for (i = 1; i < length($0); i += 2) printf "\\%03o", hv(substr($0, i, 2)) }')
    block=$({ printf "$opad"; printf "$innerx"; } | sha256)
    [ "${#block}" -eq 64 ] || { say "SHA-256 failed; root's password is left as it is"; exit 1; }
    more=$(printf '%s\n' "$block" | awk -v need=$((20 - ${#pw})) "$hexfns"'
{
        a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        for (i = 1; i < length($0) && need > 0; i += 2) { b = hv(substr($0, i, 2)); if (b < 248) { printf "%s", substr(a, b % 62 + 1, 1); need-- } } }')
    pw=$pw$more
    counter=$((counter + 1))
done
"#;

/// The line an rc.local runs the installed script with; a failure does not
/// stop the rest of rc.local.
#[must_use]
pub fn rc_local_line() -> String {
    format!("{SCRIPT_PATH} || :  # vmrepo password boot-script: root's password for the month\n")
}

/// The systemd unit that runs the installed script once at each boot,
/// before logins are allowed.
#[must_use]
pub fn systemd_unit(scheme: Scheme) -> String {
    format!(
        "[Unit]\n\
Description=Set root's password for this month (vmrepo password boot-script scheme={})\n\
Documentation=man:chpasswd(8)\n\
After=local-fs.target\n\
Before=sshd.service ssh.service systemd-user-sessions.service\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart={SCRIPT_PATH}\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        scheme_name(scheme)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_its_scheme_and_quotes_its_seed_path() {
        let s = password_script(Scheme::Hmac, "/etc/it's seed");
        assert!(s.starts_with("#!/bin/sh\n# vmrepo password boot-script scheme=hmac\n"));
        assert!(s.contains(r"seed_file='/etc/it'\''s seed'"));
        assert!(s.contains("chpasswd") && !s.contains("--stdin"));
        assert!(password_script(Scheme::Spec, DEFAULT_SEED_PATH).contains("scheme=spec\n"));
        assert!(systemd_unit(Scheme::Spec).contains(&format!("ExecStart={SCRIPT_PATH}\n")));
    }
}
