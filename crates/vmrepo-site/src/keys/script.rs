//! `vmrepo keys boot-script`: the POSIX sh script an image runs at boot
//! (rc.local) and from cron to fetch the signed key list and install it as
//! `~/.ssh/authorized_keys` of root and star.
//!
//! It uses only what Scientific Linux 5 has: `curl` or `wget` (whichever is
//! there, with time-outs, the download cut at [`MAX_LIST_BYTES`]),
//! `openssl dgst -sha256 -verify` against the RSA public key embedded in
//! the script (or read from [`DEFAULT_PUBKEY`]), `grep`, `tr`, `mktemp`.
//! Every line must look like a key line; each account's file is replaced
//! by a rename (a temporary file in the same `.ssh` folder, mode 600, owned
//! by the account). On any failure the old list stays, the reason goes to
//! syslog (`logger -t vmrepo-keys`) and standard error, and the script
//! exits 1. Its second line is [`MARKER`], by which `inspect` knows it.

use vmrepo_repo::{Error, ErrorKind, Result};

/// The line that marks the script.
pub const MARKER: &str = "# vmrepo keys boot-script";
/// Where the script reads the RSA public key when none is embedded.
pub const DEFAULT_PUBKEY: &str = "/etc/vmrepo/keys.pub.pem";
/// The largest list the script downloads.
pub const MAX_LIST_BYTES: u64 = 1 << 20;
/// The largest signature it downloads (a 16384-bit RSA signature is 2 KiB).
pub const MAX_SIG_BYTES: u64 = 4096;
/// The accounts served by default.
pub const DEFAULT_USERS: [&str; 2] = ["root", "star"];

/// What the script is made of.
#[derive(Clone, Debug, Default)]
pub struct ScriptOptions {
    /// The list's URL; `URL.sig` is its signature.
    pub url: String,
    /// The RSA public key to embed (a PEM `PUBLIC KEY` block), or `None`
    /// to read [`DEFAULT_PUBKEY`] on the image.
    pub pubkey_pem: Option<String>,
    /// The accounts (default [`DEFAULT_USERS`]).
    pub users: Vec<String>,
    /// FOR TESTS ONLY: each account's home is `HOME_ROOT/USER` instead of
    /// its passwd entry's, and files are not given to the account (chown).
    /// `vmrepo keys boot-script --test-home-root` (hidden) sets it.
    pub test_home_root: Option<String>,
}

/// A URL the script may hold between single quotes: `http://` or
/// `https://`, printable ASCII without spaces or quotes, up to 2048.
fn check_url(url: &str) -> Result<()> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > "https://".len()
        && url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic() && !b"'\"\\`$".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--url {:?}: an http:// or https:// URL without spaces or quotes is expected",
                trunc(url)
            ),
        ))
    }
}

fn trunc(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A user name as useradd takes it: a lower-case letter or `_`, then
/// letters, digits, `_`, `-`, up to 32.
fn check_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--user {:?}: a user name is a lower-case letter or '_', then lower-case letters, digits, '_' and '-' (up to 32)",
                trunc(user)
            ),
        ))
    }
}

/// A PEM `PUBLIC KEY` block and nothing else (so that it cannot end the
/// here-document it is put in); returned with one line break at its end.
fn check_pem(pem: &str) -> Result<String> {
    let lines: Vec<&str> = pem.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect();
    let ok = lines.len() >= 3
        && lines.first() == Some(&"-----BEGIN PUBLIC KEY-----")
        && lines.last() == Some(&"-----END PUBLIC KEY-----")
        && lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.len() <= 76 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    if ok {
        Ok(format!("{}\n", lines.join("\n")))
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            "--pubkey: one PEM PUBLIC KEY block is expected (key generate --rsa's NAME.rsa.pub.pem)",
        ))
    }
}

/// The script.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a URL, user name or PEM block it cannot hold safely.
pub fn boot_script(opts: &ScriptOptions) -> Result<String> {
    check_url(&opts.url)?;
    let users: Vec<String> = if opts.users.is_empty() {
        DEFAULT_USERS.iter().map(|u| (*u).to_string()).collect()
    } else {
        opts.users.clone()
    };
    for u in &users {
        check_user(u)?;
    }
    let pem = opts.pubkey_pem.as_deref().map(check_pem).transpose()?;
    if let Some(root) = &opts.test_home_root
        && (root.is_empty() || !root.starts_with('/') || root.contains(['\'', '\n', '\\']))
    {
        return Err(Error::new(ErrorKind::InvalidInput, "--test-home-root: an absolute path without quotes"));
    }
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(MARKER);
    s.push('\n');
    s.push_str(&format!(
        "# Made by vmrepo {}. Fetches the signed SSH key list and installs it as\n\
         # ~/.ssh/authorized_keys of: {}. Run it at boot (rc.local) and from cron;\n\
         # on any failure the old list is kept, and the reason logged (vmrepo-keys).\n",
        env!("CARGO_PKG_VERSION"),
        users.join(" ")
    ));
    s.push_str(&format!("URL='{}'\n", opts.url));
    s.push_str(&format!("USERS='{}'\n", users.join(" ")));
    s.push_str(&format!("MAX_LIST={MAX_LIST_BYTES}\nMAX_SIG={MAX_SIG_BYTES}\n"));
    match &opts.test_home_root {
        Some(root) => s.push_str(&format!("TEST_HOME_ROOT='{root}'\n")),
        None => s.push_str("TEST_HOME_ROOT=\n"),
    }
    s.push_str(PRELUDE);
    match &pem {
        Some(pem) => {
            s.push_str("cat > \"$TMP/pub.pem\" <<'VMREPO_PUBLIC_KEY'\n");
            s.push_str(pem);
            s.push_str("VMREPO_PUBLIC_KEY\nPUB=\"$TMP/pub.pem\"\n");
        }
        None => s.push_str(&format!("PUB={DEFAULT_PUBKEY}\n")),
    }
    s.push_str(BODY);
    Ok(s)
}

/// Helpers: logging, the temporary folder, the download.
const PRELUDE: &str = r#"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export PATH
umask 077
log() {
    logger -t vmrepo-keys "$*" 2>/dev/null
    echo "vmrepo-keys: $*" >&2
}
fail() {
    log "$* (the old list is kept)"
    exit 1
}
TMP=`mktemp -d /tmp/vmrepo-keys.XXXXXX` || fail "cannot make a temporary folder"
trap 'rm -rf "$TMP"' 0
trap 'exit 1' 1 2 15
# fetch URL FILE MAX: the first MAX+1 bytes at most, then the size checked.
fetch() {
    if command -v curl >/dev/null 2>&1; then
        { curl -fsSL --proto =http,https --connect-timeout 10 --max-time 60 --max-filesize "$3" "$1"; echo $? > "$TMP/rc"; } | head -c `expr "$3" + 1` > "$2"
    elif command -v wget >/dev/null 2>&1; then
        { wget -q -T 20 -t 2 -O - "$1"; echo $? > "$TMP/rc"; } | head -c `expr "$3" + 1` > "$2"
    else
        fail "neither curl nor wget is installed"
    fi
    [ "`cat "$TMP/rc" 2>/dev/null`" = 0 ] || fail "cannot download $1"
    size=`wc -c < "$2"`
    [ "$size" -le "$3" ] || fail "$1 is larger than $3 bytes"
}
"#;

/// The download, the checks, the installation.
const BODY: &str = r#"[ -s "$PUB" ] || fail "no public key at $PUB"
command -v openssl >/dev/null 2>&1 || fail "openssl is not installed"
fetch "$URL" "$TMP/list" "$MAX_LIST"
fetch "$URL.sig" "$TMP/sig" "$MAX_SIG"
verified=`openssl dgst -sha256 -verify "$PUB" -signature "$TMP/sig" "$TMP/list" 2>&1`
[ $? -eq 0 ] && [ "$verified" = "Verified OK" ] || fail "$URL: the signature does not verify"
# Only key lines: printable text, each line a known key type and its base64.
[ `tr -d '\n -~\200-\377' < "$TMP/list" | wc -c` -eq 0 ] || fail "$URL: control characters in the list"
bad=`grep -c -v -E '^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ecdsa-sha2-nistp256@openssh.com|sk-ssh-ed25519@openssh.com) [A-Za-z0-9+/]+=*( .*)?$' "$TMP/list"`
[ "$bad" = 0 ] || fail "$URL: $bad lines are not key lines"
if [ -s "$TMP/list" ] && [ "`tail -c 1 "$TMP/list" | od -An -c | tr -d ' '`" != '\n' ]; then
    fail "$URL: the list does not end with a line break"
fi
status=0
for user in $USERS; do
    if [ -n "$TEST_HOME_ROOT" ]; then
        home="$TEST_HOME_ROOT/$user"
    else
        home=`getent passwd "$user" 2>/dev/null | cut -d: -f6`
        [ -n "$home" ] || home=`awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd`
    fi
    if [ -z "$home" ] || [ ! -d "$home" ] || [ -L "$home/.ssh" ] || [ -L "$home/.ssh/authorized_keys" ]; then
        log "$user: no home folder, or a link as .ssh or authorized_keys: not installed"
        status=1
        continue
    fi
    if [ ! -d "$home/.ssh" ]; then
        mkdir -m 700 "$home/.ssh" || { log "$user: cannot make $home/.ssh"; status=1; continue; }
        [ -n "$TEST_HOME_ROOT" ] || chown "$user:" "$home/.ssh"
    fi
    new=`mktemp "$home/.ssh/.authorized_keys.XXXXXX"` || { log "$user: cannot write in $home/.ssh"; status=1; continue; }
    if cat "$TMP/list" > "$new" && chmod 600 "$new" && { [ -n "$TEST_HOME_ROOT" ] || chown "$user:" "$new"; } && mv -f "$new" "$home/.ssh/authorized_keys"; then
        log "$user: installed `grep -c . "$TMP/list"` keys from $URL"
    else
        rm -f "$new"
        log "$user: cannot install $home/.ssh/authorized_keys (the old list is kept)"
        status=1
    fi
done
exit $status
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_arguments_are_refused() {
        let ok =
            ScriptOptions { url: "https://vm.example.org/keys/authorized_keys".into(), ..Default::default() };
        let s = boot_script(&ok).unwrap();
        assert!(s.starts_with(&format!("#!/bin/sh\n{MARKER}\n")));
        assert!(s.contains("USERS='root star'") && s.contains(&format!("PUB={DEFAULT_PUBKEY}")));
        for url in ["ftp://x/y", "https://x/'; rm -rf /", "https://x/$(id)", "https://x/ y", "https://"] {
            let o = ScriptOptions { url: url.into(), ..Default::default() };
            assert_eq!(boot_script(&o).unwrap_err().kind(), ErrorKind::InvalidInput, "{url}");
        }
        for user in ["Root", "a b", "x;id", "", "-r"] {
            let o = ScriptOptions { users: vec![user.into()], ..ok.clone() };
            assert!(boot_script(&o).is_err(), "{user}");
        }
        let pem = "-----BEGIN PUBLIC KEY-----\nMIIB\nVMREPO_PUBLIC_KEY\n-----END PUBLIC KEY-----\n";
        let o = ScriptOptions { pubkey_pem: Some(pem.into()), ..ok.clone() };
        assert!(boot_script(&o).is_err());
        let o = ScriptOptions {
            pubkey_pem: Some("-----BEGIN PUBLIC KEY-----\r\nMIIB\r\n-----END PUBLIC KEY-----\r\n".into()),
            ..ok
        };
        assert!(
            boot_script(&o)
                .unwrap()
                .contains("<<'VMREPO_PUBLIC_KEY'\n-----BEGIN PUBLIC KEY-----\nMIIB\n-----END")
        );
    }
}
