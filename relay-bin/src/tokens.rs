//! `relay --tokens FILE`: named tokens, each with an optional scope, from a TOML file that
//! SIGHUP re-reads.
//!
//! ```toml
//! [[token]]
//! name = "ci"                 # shown in logs, never the secret
//! secret = "at least 16 characters"
//! ports = "9000-9099"         # public ports its tunnels may have (default: any)
//! max_tunnels = 8             # tunnels all its sessions may hold at once (default: no limit)
//! max_visitors = 100          # visitors at once per tunnel (default: the relay's limit)
//! transfers = false           # may it offer and receive files (default: true)
//! ```
//!
//! Errors name the file, the line and the key, never a secret: the secret is read as a plain
//! TOML value and checked here, so no parser message can ever quote it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use relay_core::auth::Token;
use relay_core::server::{Access, AccessHandle, NamedToken, Scope};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// Kept as a raw value so that a malformed secret is never echoed by a parser error.
    secret: toml::Value,
    ports: Option<String>,
    max_tunnels: Option<usize>,
    max_visitors: Option<u32>,
    transfers: Option<bool>,
}

/// Parses a tokens file's text. `Err` says what is wrong, and where, without any secret.
pub fn parse(text: &str) -> Result<Access, String> {
    let file: TokensFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        });
        match line {
            Some(line) => format!("line {line}: {}", e.message().trim_end()),
            None => e.message().trim_end().to_string(),
        }
    })?;
    if file.token.is_empty() {
        // An empty set would open the relay to anyone: never by accident.
        return Err("no [[token]] defined; a tokens file must define at least one".into());
    }
    let mut tokens = Vec::with_capacity(file.token.len());
    let mut names = std::collections::HashMap::new();
    for entry in file.token {
        let token = entry_token(&entry)?;
        let name = entry.name;
        if let Some(other) = names.insert(token.key_id(), name.clone()) {
            return Err(format!(
                "tokens '{other}' and '{name}' have the same secret"
            ));
        }
        let ports = entry
            .ports
            .as_deref()
            .map(crate::parse_port_range)
            .transpose()
            .map_err(|e| format!("token '{name}': ports: {e}"))?;
        if entry.max_tunnels == Some(0) || entry.max_visitors == Some(0) {
            return Err(format!(
                "token '{name}': max_tunnels and max_visitors must be at least 1"
            ));
        }
        let scope = Scope {
            ports,
            max_tunnels: entry.max_tunnels,
            max_visitors: entry.max_visitors,
            transfers: entry.transfers.unwrap_or(true),
        };
        tokens.push(NamedToken::new(name, token).with_scope(scope));
    }
    Ok(Access::from_tokens(tokens))
}

fn entry_token(entry: &Entry) -> Result<Token, String> {
    let name = &entry.name;
    if name.trim().is_empty() {
        return Err("a token has an empty name".into());
    }
    let secret = entry
        .secret
        .as_str()
        .ok_or_else(|| format!("token '{name}': the secret must be a string"))?;
    Token::new(secret).map_err(|e| format!("token '{name}': {e}"))
}

/// Reads and parses a tokens file, warning when other users may read it.
pub fn load(path: &Path) -> anyhow::Result<Access> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokens file {}", path.display()))?;
    warn_if_readable_by_others(path);
    match parse(&text) {
        Ok(access) => Ok(access),
        Err(e) => bail!("tokens file {}: {e}", path.display()),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = %format_args!("{mode:03o}"),
            "the tokens file is readable by other users; restrict it with chmod 600"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Re-reads `path` on every SIGHUP and swaps the relay's tokens: sessions of removed tokens
/// end, the others are untouched. A file that fails to load keeps the old set, and says why.
#[cfg(unix)]
pub fn reload_on_hangup(path: PathBuf, access: AccessHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match load(&path) {
                Ok(tokens) => {
                    let count = tokens.len();
                    access.replace(tokens);
                    tracing::info!(tokens = count, "SIGHUP: tokens reloaded");
                }
                Err(e) => {
                    tracing::warn!("SIGHUP: keeping the tokens in force: {e:#}");
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[token]]
name = "ci"
secret = "ci-secret-0123456789"
ports = "9000-9099"
max_tunnels = 8
max_visitors = 100
transfers = false

[[token]]
name = "laptop"
secret = "laptop-secret-0123456789"
"#;

    #[test]
    fn a_good_file_gives_named_scoped_tokens() {
        let access = parse(GOOD).expect("valid");
        assert_eq!(access.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let bad = GOOD.replace("max_tunnels = 8", "max_tunnel = 8");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("max_tunnel"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        let e = parse("[[tokens]]\nname = \"x\"\n").unwrap_err();
        assert!(e.contains("tokens"), "{e}");
    }

    #[test]
    fn errors_never_quote_a_secret() {
        let cases = [
            GOOD.replace("\"ci-secret-0123456789\"", "4242424242424242424"),
            GOOD.replace("ci-secret-0123456789", "short-4242"),
            GOOD.replace("laptop-secret-0123456789", "ci-secret-0123456789"),
            GOOD.replace("ports = \"9000-9099\"", "ports = \"9099-9000\""),
            format!("{GOOD}\n[[token]]\nname = \"x\"\nsecret = \"4242-4242-4242-4242\"\nbogus = 1"),
        ];
        for case in &cases {
            let e = parse(case).unwrap_err();
            for secret in ["4242", "ci-secret", "laptop-secret"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn an_empty_file_never_opens_the_relay() {
        assert!(parse("").unwrap_err().contains("at least one"));
    }
}
