//! Who may use the relay: the tokens it accepts. An empty set leaves the relay open.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Token;

/// A token the relay accepts, with the name it is known by in logs (never the secret).
#[derive(Debug)]
pub struct NamedToken {
    /// Shown in logs and metrics.
    pub name: String,
    /// The secret.
    pub token: Token,
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
        Self::from_tokens([NamedToken {
            name: "default".into(),
            token,
        }])
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

    /// The token a proof names, if the relay knows it.
    pub(crate) fn find(&self, key_id: &[u8; 8]) -> Option<Arc<NamedToken>> {
        self.tokens.get(key_id).cloned()
    }
}
