//! Who may use the relay: the tokens it accepts, each with what it allows. An empty set leaves
//! the relay open.
//!
//! The set can be swapped while the relay runs ([`AccessHandle::replace`]): new connections are
//! checked against the new set at once, and every session whose token is no longer in it is
//! ended with a reason its client is told.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::Token;

/// What a token allows. `Default` allows everything the relay's own limits allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Public ports its tunnels may have (within the relay's range); `None`: any.
    pub ports: Option<RangeInclusive<u16>>,
    /// Tunnels (public ports, leased ones included) all its sessions may hold at once.
    pub max_tunnels: Option<usize>,
    /// Visitors at once per tunnel, below the relay's own limit.
    pub max_visitors: Option<u32>,
    /// Whether it may offer and claim file transfers.
    pub transfers: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            ports: None,
            max_tunnels: None,
            max_visitors: None,
            transfers: true,
        }
    }
}

/// A token the relay accepts, with the name it is known by in logs (never the secret) and
/// what it allows.
#[derive(Debug)]
pub struct NamedToken {
    /// Shown in logs and metrics, and in messages to the token's own clients.
    pub name: String,
    /// The secret.
    pub token: Token,
    /// What the token allows.
    pub scope: Scope,
}

impl NamedToken {
    /// A token named `name` that allows everything.
    pub fn new(name: impl Into<String>, token: Token) -> Self {
        NamedToken {
            name: name.into(),
            token,
            scope: Scope::default(),
        }
    }

    /// The same token, allowing only `scope`.
    pub fn with_scope(self, scope: Scope) -> Self {
        NamedToken { scope, ..self }
    }
}

/// The tokens a relay accepts, found by key id.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: HashMap<[u8; 8], Arc<NamedToken>>,
}

impl Access {
    /// Anyone may connect.
    pub fn open() -> Self {
        Self::default()
    }

    /// Clients must hold `token`.
    pub fn single(token: Token) -> Self {
        Self::from_tokens([NamedToken::new("default", token)])
    }

    /// Clients must hold one of `tokens`.
    pub fn from_tokens(tokens: impl IntoIterator<Item = NamedToken>) -> Self {
        let tokens = tokens
            .into_iter()
            .map(|t| (t.token.key_id(), Arc::new(t)))
            .collect();
        Access { tokens }
    }

    /// Whether no token is required.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is accepted (the relay is open).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token a proof names, if the relay knows it.
    pub(crate) fn find(&self, key_id: &[u8; 8]) -> Option<Arc<NamedToken>> {
        self.tokens.get(key_id).cloned()
    }

    /// Whether a client admitted with `token` (`None`: admitted while the relay was open) may
    /// still be served under this set.
    fn admits(&self, token: Option<&NamedToken>) -> bool {
        match token {
            Some(t) => self.tokens.contains_key(&t.token.key_id()),
            None => self.is_open(),
        }
    }
}

/// Swaps the token set of a running relay; from [`RelayServer::access_handle`](super::RelayServer::access_handle).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessHandle {
    current: Arc<watch::Sender<Arc<Access>>>,
}

impl AccessHandle {
    pub(super) fn new(initial: Access) -> Self {
        AccessHandle {
            current: Arc::new(watch::Sender::new(Arc::new(initial))),
        }
    }

    /// Makes `access` the relay's token set. Sessions whose token is not in it are ended (their
    /// clients are told why); the others, and their scopes, are untouched. Replacing a set with
    /// an empty one opens the relay to anyone.
    pub fn replace(&self, access: Access) {
        self.current.send_replace(Arc::new(access));
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<Access> {
        self.current.borrow().clone()
    }

    /// Why a client admitted with `token` is being turned out, in words for that client.
    pub(super) fn revocation_reason(token: Option<&NamedToken>) -> String {
        match token {
            Some(t) => format!(
                "access revoked: the relay no longer accepts token '{}'",
                t.name
            ),
            None => "access revoked: the relay now requires a token".to_string(),
        }
    }

    /// Completes when a client admitted with `token` is no longer admitted by the set in
    /// force; never, while it is.
    pub(super) async fn revoked(&self, token: Option<&NamedToken>) {
        let mut changes = self.current.subscribe();
        loop {
            if !changes.borrow_and_update().admits(token) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str) -> Token {
        Token::new(secret).expect("token")
    }

    #[tokio::test]
    async fn only_sessions_whose_token_left_the_set_are_revoked() {
        let handle = AccessHandle::new(Access::from_tokens([
            NamedToken::new("a", token("aaaaaaaaaaaaaaaaaaaa")),
            NamedToken::new("b", token("bbbbbbbbbbbbbbbbbbbb")),
        ]));
        let a = handle
            .current()
            .find(&token("aaaaaaaaaaaaaaaaaaaa").key_id());
        let b = handle
            .current()
            .find(&token("bbbbbbbbbbbbbbbbbbbb").key_id());
        let (a, b) = (a.expect("a"), b.expect("b"));
        let a_gone = handle.revoked(Some(&a));
        let b_gone = handle.revoked(Some(&b));
        tokio::pin!(a_gone, b_gone);
        handle.replace(Access::from_tokens([NamedToken::new(
            "b renamed",
            token("bbbbbbbbbbbbbbbbbbbb"),
        )]));
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut a_gone)
            .await
            .expect("a is revoked");
        let b_still = tokio::time::timeout(std::time::Duration::from_millis(50), &mut b_gone);
        assert!(b_still.await.is_err(), "b keeps its session");
        // A client of an open relay loses its session once the relay requires tokens.
        let open = AccessHandle::new(Access::open());
        let anyone = open.revoked(None);
        tokio::pin!(anyone);
        open.replace(Access::single(token("cccccccccccccccccccc")));
        tokio::time::timeout(std::time::Duration::from_secs(5), anyone)
            .await
            .expect("open-relay client revoked");
    }
}
