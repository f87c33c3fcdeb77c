//! Rule matching. STUB: replaced by the policy engine.
use crate::config::{Action, Identity, Policy, Target};
use crate::policy::kinds::{KindSet, Statement};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub rule: Option<String>,
    pub message: Option<String>,
}

pub fn decide(
    _policy: &Policy,
    _identity: &Identity,
    _target: &Target,
    _stmt: &Statement,
    _kinds: KindSet,
    _text: &str,
) -> Decision {
    Decision { action: Action::Block, rule: None, message: None }
}

pub fn session_read_only(target: &Target, identity: &Identity) -> bool {
    target.read_only || target.read_only_for.iter().any(|w| w.matches(identity))
}
