//! Accounts, per the specification's security recommendations: whether
//! `root` has a password (never the hash itself), the `star` account, and
//! the SSH keys that let people in.

use serde::Serialize;

use crate::guest::{ExtFs, Kind};

/// Users listed at most.
const MAX_USERS: usize = 10_000;
/// Home folders searched for authorized_keys at most.
const MAX_HOMES: usize = 256;

/// One line of /etc/passwd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: String,
    pub shell: String,
    /// The password field of passwd itself (`x` when shadowed).
    pub passwd_field: String,
}

/// /etc/passwd.
#[derive(Clone, Debug, Default)]
pub struct Passwd {
    pub users: Vec<User>,
}

impl Passwd {
    pub fn read(root: &ExtFs) -> Passwd {
        let Some(text) = root.read_text("/etc/passwd") else { return Passwd::default() };
        let users = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7).then(|| User {
                    name: f[0].to_string(),
                    uid: f[2].parse().unwrap_or(u32::MAX),
                    home: f[5].to_string(),
                    shell: f[6].to_string(),
                    passwd_field: f[1].to_string(),
                })
            })
            .take(MAX_USERS)
            .collect();
        Passwd { users }
    }
}

/// The state of a password, never the password or its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Password {
    /// A password hash is set.
    Set,
    /// Empty: anyone can log in without a password.
    Empty,
    /// Locked or no login (`!`, `!!`, `*`).
    Locked,
    /// The account has no entry in /etc/shadow.
    Unknown,
}

/// A file of SSH keys that let someone log in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthorizedKeys {
    pub path: String,
    pub keys: usize,
}

/// Accounts as the specification asks about them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accounts {
    pub root_account: bool,
    pub root_password: Password,
    pub star_account: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub star_password: Option<Password>,
    pub users: usize,
    pub authorized_keys: Vec<AuthorizedKeys>,
}

impl Accounts {
    /// The authorized_keys files and their keys, for people:
    /// `/root/.ssh/authorized_keys (2 keys)`, or `none`.
    pub fn keys_summary(&self) -> String {
        if self.authorized_keys.is_empty() {
            return "none".to_string();
        }
        self.authorized_keys
            .iter()
            .map(|k| format!("{} ({} key{})", k.path, k.keys, if k.keys == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn classify(field: &str) -> Password {
    if field.is_empty() {
        Password::Empty
    } else if field.starts_with('!') || field.starts_with('*') {
        Password::Locked
    } else {
        Password::Set
    }
}

pub fn detect(root: &ExtFs, passwd: &Passwd) -> Accounts {
    let shadow = root.read_text("/etc/shadow").unwrap_or_default();
    let password = |user: &str| -> Password {
        if let Some(f) = shadow
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user}:")).map(|r| r.split(':').next().unwrap_or("")))
        {
            return classify(f);
        }
        match passwd.users.iter().find(|u| u.name == user) {
            Some(u) if u.passwd_field != "x" => classify(&u.passwd_field),
            _ => Password::Unknown,
        }
    };
    let root_account = passwd.users.iter().any(|u| u.name == "root");
    let star_account = passwd.users.iter().any(|u| u.name == "star");
    let mut homes: Vec<String> = vec!["/root".into()];
    homes.extend(passwd.users.iter().map(|u| u.home.clone()).filter(|h| h.starts_with('/') && h != "/"));
    homes.sort();
    homes.dedup();
    let mut authorized_keys = Vec::new();
    for h in homes.iter().take(MAX_HOMES) {
        for f in ["authorized_keys", "authorized_keys2"] {
            let p = format!("{}/.ssh/{f}", h.trim_end_matches('/'));
            if root.stat(&p).is_some_and(|(_, k)| k == Kind::File) {
                let keys = root
                    .read_text(&p)
                    .map(|t| {
                        t.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count()
                    })
                    .unwrap_or(0);
                authorized_keys.push(AuthorizedKeys { path: p, keys });
            }
        }
    }
    Accounts {
        root_account,
        root_password: if root_account { password("root") } else { Password::Unknown },
        star_account,
        star_password: star_account.then(|| password("star")),
        users: passwd.users.len(),
        authorized_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_states() {
        assert_eq!(classify(""), Password::Empty);
        assert_eq!(classify("!!"), Password::Locked);
        assert_eq!(classify("*"), Password::Locked);
        assert_eq!(classify("!$6$abc"), Password::Locked);
        assert_eq!(classify("$6$salt$hash"), Password::Set);
    }
}
