//! Decisions for SSH exec requests: (policy, identity, target, classified command line) ->
//! allow | approve | block. Pure and cheap like [`super::engine`].
//!
//! # Semantics
//!
//! * **Every simple command separately.** [`super::command::classify`] lists every simple command
//!   the line would run (pipelines, `&&`, substitutions, what `sudo`/`sh -c` wrap). Each is
//!   decided on its own; the line gets the most restrictive decision (`allow < approve < block`,
//!   first command on a tie). A line with no command at all (`""`, only comments) is allowed:
//!   the shell runs nothing.
//! * **Applicable rules.** For one command, a rule applies when all of these hold:
//!   - its `targets` is empty or names the target, and an entry of its `who` matches;
//!   - it has no SQL-only condition (`sql`, `tables`, SQL flags);
//!   - its `programs` is empty or contains the command's program (basename of argv\[0\]);
//!   - its `commands` is empty or one of its regexes finds a match in the command's normalized
//!     form (use `^…$` to anchor);
//!   - its command flags are empty or the command carries one of them.
//!
//!   The most restrictive applicable rule decides; among equals, the first in the file. If none
//!   applies, the target's `default` decides.
//! * **Dynamic is fail-closed.** A command flagged `dynamic` (its program or arguments are only
//!   known at run time: `$VAR`, `$(…)`, `eval`, `xargs`, …) is blocked unless an applicable rule
//!   names `dynamic` in its `flags` — then that rule (the most restrictive such one) decides.
//! * **Unknown is fail-closed.** A line the classifier did not fully understand is blocked unless
//!   a rule for the identity and target has `flags = ["unknown"]` (and no `programs` /
//!   `commands`, which can't be checked on such a line); the most restrictive such rule decides.

use crate::config::{Action, Identity, Policy, Rule, Target};
use crate::policy::command::{CommandFlags, CommandLine, SimpleCommand};
use crate::policy::engine::Decision;

/// Decides the command line `line` (classified from `text`) for `identity` on `target`.
pub fn decide_exec(
    policy: &Policy,
    identity: &Identity,
    target: &Target,
    line: &CommandLine,
) -> Decision {
    let for_us = |rule: &&Rule| {
        (rule.targets.is_empty() || rule.targets.contains(&target.name))
            && rule.who.iter().any(|w| w.matches(identity))
            && !rule.is_sql_only()
    };
    if let Some(why) = &line.unknown {
        let best =
            most_restrictive(
                policy.rules.iter().filter(for_us).filter(|r| {
                    r.command_unknown && r.programs.is_empty() && r.commands.is_empty()
                }),
            );
        return match best {
            Some(rule) => from_rule(rule, &format!("command line not understood ({why})")),
            None => Decision {
                action: Action::Block,
                rule: None,
                message: Some(format!(
                    "command line not understood by the gateway's classifier ({why}); blocked"
                )),
            },
        };
    }

    let mut result: Option<Decision> = None;
    for cmd in &line.commands {
        let decision = decide_command(policy.rules.iter().filter(for_us), target, identity, cmd);
        if result.as_ref().is_none_or(|r| decision.action > r.action) {
            result = Some(decision);
        }
    }
    result.unwrap_or(Decision {
        action: Action::Allow,
        rule: None,
        message: None,
    })
}

fn decide_command<'p>(
    rules: impl Iterator<Item = &'p Rule>,
    target: &Target,
    identity: &Identity,
    cmd: &SimpleCommand,
) -> Decision {
    let applicable: Vec<&Rule> = rules.filter(|r| matches(r, cmd)).collect();
    let what = if cmd.normalized.is_empty() {
        "an empty command".to_owned()
    } else {
        format!("'{}'", cmd.normalized)
    };
    if cmd.flags.contains(CommandFlags::DYNAMIC) {
        // Only a rule that names `dynamic` may decide what can't be known from the text; a
        // blocking rule still blocks.
        let explicit = most_restrictive(
            applicable
                .iter()
                .copied()
                .filter(|r| r.command_flags.contains(CommandFlags::DYNAMIC)),
        );
        let blocking =
            most_restrictive(applicable.iter().copied()).filter(|r| r.action == Action::Block);
        return match (blocking, explicit) {
            (Some(rule), _) | (None, Some(rule)) => from_rule(rule, &what),
            (None, None) => Decision {
                action: Action::Block,
                rule: None,
                message: Some(format!(
                    "{what} depends on values only known when it runs (variables, substitutions, eval); blocked"
                )),
            },
        };
    }
    match most_restrictive(applicable.into_iter()) {
        Some(rule) => from_rule(rule, &what),
        None => Decision {
            action: target.default,
            rule: None,
            message: (target.default != Action::Allow).then(|| {
                format!(
                    "no rule allows {what} on target '{}' for '{}' (default: {})",
                    target.name,
                    identity.name,
                    target.default.as_str()
                )
            }),
        },
    }
}

/// Whether the command conditions of `rule` hold for `cmd` (targets and `who` checked already).
fn matches(rule: &Rule, cmd: &SimpleCommand) -> bool {
    if !rule.programs.is_empty() && !rule.programs.contains(&cmd.program) {
        return false;
    }
    if !rule.commands.is_empty()
        && !rule
            .commands
            .iter()
            .any(|(_, re)| re.is_match(&cmd.normalized))
    {
        return false;
    }
    // `unknown` alone is about whole lines, not commands.
    if rule.command_unknown && rule.command_flags.is_empty() {
        return false;
    }
    rule.command_flags.is_empty() || cmd.flags.intersects(rule.command_flags)
}

/// The most restrictive rule; the first in file order on ties.
fn most_restrictive<'p>(rules: impl Iterator<Item = &'p Rule>) -> Option<&'p Rule> {
    let mut best: Option<&Rule> = None;
    for r in rules {
        if best.is_none_or(|b| r.action > b.action) {
            best = Some(r);
        }
    }
    best
}

fn from_rule(rule: &Rule, what: &str) -> Decision {
    let message = match rule.action {
        Action::Allow => None,
        Action::Approve => Some(
            rule.message
                .clone()
                .unwrap_or_else(|| format!("{what} requires approval (rule '{}')", rule.name)),
        ),
        Action::Block => Some(
            rule.message
                .clone()
                .unwrap_or_else(|| format!("{what} blocked by rule '{}'", rule.name)),
        ),
    };
    Decision {
        action: rule.action,
        rule: Some(rule.name.clone()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::command::classify;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINVFKs7anlSsK9scTUksFHZX00PBcRkG60nyuRhaAn+A";

    fn policy(rules: &str, default: &str) -> Policy {
        let dir = std::env::temp_dir().join(format!("portcullis-sshpol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("up.key");
        if !key.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).mode(0o600);
            std::io::Write::write_all(&mut o.open(&key).unwrap(), b"x").unwrap();
        }
        let text = format!(
            r#"
[gateway]
data_dir = "{dir}"
[[identity]]
name = "alice"
roles = ["ci"]
[[identity]]
name = "bob"
[[target]]
name = "web"
kind = "ssh"
listen = "127.0.0.1:2222"
upstream = "127.0.0.1:22"
user = "deploy"
key_file = "up.key"
host_key = "{KEY}"
default = "{default}"
{rules}
"#,
            dir = dir.display()
        );
        crate::config::parse(&text, &dir.join("p.toml")).unwrap()
    }

    fn run(p: &Policy, who: &str, line: &str) -> Decision {
        decide_exec(
            p,
            p.identity(who).unwrap(),
            p.target("web").unwrap(),
            &classify(line),
        )
    }

    const RULES: &str = r#"
[[rule]]
name = "reads"
who = ["*"]
programs = ["ls", "cat", "uptime", "true"]
action = "allow"
[[rule]]
name = "restart"
who = ["role:ci"]
commands = ['^systemctl restart app$']
action = "approve"
approvers = ["bob"]
[[rule]]
name = "no-rm"
who = ["*"]
programs = ["rm"]
action = "block"
message = "rm is not allowed here"
"#;

    #[test]
    fn allows_listed_programs_and_pipelines_of_them() {
        let p = policy(RULES, "block");
        assert_eq!(run(&p, "alice", "ls -l /tmp").action, Action::Allow);
        assert_eq!(run(&p, "alice", "ls | cat && uptime").action, Action::Allow);
    }

    #[test]
    fn every_simple_command_must_be_allowed() {
        let p = policy(RULES, "block");
        let d = run(&p, "alice", "ls; touch /tmp/x");
        assert_eq!(d.action, Action::Block);
        assert!(d.message.unwrap().contains("'touch /tmp/x'"));
    }

    #[test]
    fn blocking_rule_wins_with_its_message_even_inside_wrappers() {
        let p = policy(RULES, "allow");
        let d = run(&p, "alice", "sudo rm -rf /");
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule.as_deref(), Some("no-rm"));
        assert_eq!(d.message.as_deref(), Some("rm is not allowed here"));
        assert_eq!(run(&p, "alice", "ls $(rm -rf /)").action, Action::Block);
    }

    #[test]
    fn approve_rule_matches_normalized_command_for_its_role_only() {
        let p = policy(RULES, "block");
        let d = run(&p, "alice", "systemctl 'restart' app");
        assert_eq!(d.action, Action::Approve);
        assert_eq!(d.rule.as_deref(), Some("restart"));
        assert_eq!(
            run(&p, "bob", "systemctl restart app").action,
            Action::Block
        );
        assert_eq!(
            run(&p, "alice", "systemctl restart app2").action,
            Action::Block
        );
    }

    #[test]
    fn dynamic_commands_are_blocked_unless_a_rule_names_dynamic() {
        let p = policy(RULES, "allow");
        let d = run(&p, "alice", "ls $HOME");
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule, None);
        let rules = format!(
            "{RULES}\n[[rule]]\nname = \"dyn\"\nwho = [\"alice\"]\nprograms = [\"ls\"]\nflags = [\"dynamic\"]\naction = \"allow\"\n"
        );
        let p = policy(&rules, "block");
        assert_eq!(run(&p, "alice", "ls $HOME").action, Action::Allow);
        assert_eq!(run(&p, "bob", "ls $HOME").action, Action::Block);
    }

    #[test]
    fn unknown_lines_are_blocked_unless_a_rule_has_the_unknown_flag() {
        let p = policy(RULES, "allow");
        let d = run(&p, "alice", "case x in x) ls;; esac");
        assert_eq!(d.action, Action::Block);
        assert!(d.message.unwrap().contains("not understood"));
        let rules = format!(
            "{RULES}\n[[rule]]\nname = \"odd\"\nwho = [\"alice\"]\nflags = [\"unknown\"]\naction = \"approve\"\napprovers = [\"bob\"]\n"
        );
        let p = policy(&rules, "block");
        assert_eq!(
            run(&p, "alice", "case x in x) ls;; esac").action,
            Action::Approve
        );
        // The unknown-only rule does not decide ordinary commands.
        assert_eq!(run(&p, "alice", "touch x").action, Action::Block);
    }

    #[test]
    fn target_default_decides_when_no_rule_applies() {
        let p = policy("", "allow");
        assert_eq!(run(&p, "bob", "touch x").action, Action::Allow);
        assert_eq!(run(&p, "bob", "").action, Action::Allow);
        let p = policy("", "approve");
        assert_eq!(run(&p, "bob", "touch x").action, Action::Approve);
    }

    #[test]
    fn sql_rules_do_not_decide_commands() {
        let rules =
            "[[rule]]\nname = \"sel\"\nwho = [\"*\"]\nsql = [\"select\"]\naction = \"allow\"\n";
        let p = policy(rules, "block");
        assert_eq!(run(&p, "alice", "ls").action, Action::Block);
    }
}
