//! SSH targets, identities' `ssh_keys` and the SSH rule keys: every check with its position.

use super::*;

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINVFKs7anlSsK9scTUksFHZX00PBcRkG60nyuRhaAn+A";
const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV8wRhYP4OTasSkxn2yPTUH3fGvn8vdTniM5y04vC1y alice@laptop";
const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7";

/// A policy in `dir` (key file `up.key` there, 0600) with an SSH target "web" whose extra keys
/// are `extra`; the target table starts at line 8, `extra` at line 15.
fn ssh_policy(dir: &Path, extra: &str) -> String {
    format!(
        r#"[gateway]
data_dir = "{dir}"
[[identity]]
name = "alice"
roles = ["ops"]
ssh_keys = ["{ALICE_KEY}"]

[[target]]
name = "web"
kind = "ssh"
listen = "127.0.0.1:2222"
upstream = "127.0.0.1:22"
user = "deploy"
host_key = "{HOST_KEY}"
{extra}"#,
        dir = dir.display()
    )
}

fn parse_in(dir: &Path, text: &str) -> Result<Policy, ConfigError> {
    parse(text, &dir.join("policy.toml"))
}

#[track_caller]
fn one_problem_in(dir: &Path, text: &str, line: usize, col: usize, needle: &str) {
    let e = match parse_in(dir, text) {
        Ok(_) => panic!("expected a problem, the policy parsed:\n{text}"),
        Err(e) => e,
    };
    let ps = e.problems();
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!((ps[0].line, ps[0].col), (line, col), "{:?}", ps[0].message);
    assert!(
        ps[0].message.contains(needle),
        "{:?} lacks {needle:?}",
        ps[0].message
    );
}

fn key_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    write_file(&dir.join("up.key"), 0o600);
    dir
}

#[test]
fn ssh_target_defaults_and_parsed_keys() {
    let dir = key_dir("ssh-defaults");
    let p = match parse_in(&dir, &ssh_policy(&dir, "key_file = \"up.key\"\n")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let t = p.target("web").unwrap();
    assert_eq!(t.kind, TargetKind::Ssh);
    assert_eq!(t.default, Action::Block);
    let ssh = t.ssh.as_ref().unwrap();
    assert_eq!(ssh.auth, SshUpstreamAuth::KeyFile(dir.join("up.key")));
    assert!(ssh.shell && !ssh.forwarding && !ssh.record_input);
    assert_eq!(ssh.max_recording_size, 1 << 30);
    assert_eq!(ssh.sftp, SftpAccess::Allow);
    assert_eq!(ssh.host_key.len(), 32);
    assert_eq!(p.identity("alice").unwrap().ssh_keys.len(), 1);
}

#[test]
fn ssh_target_switches_parse() {
    let dir = key_dir("ssh-switches");
    let extra = "key_file = \"up.key\"\nshell = \"deny\"\nshell_for = [\"role:ops\"]\nsftp = \"read-only\"\nforwarding = \"allow\"\nrecord_input = true\n";
    let p = parse_in(&dir, &ssh_policy(&dir, extra)).unwrap();
    let ssh = p.target("web").unwrap().ssh.clone().unwrap();
    assert!(!ssh.shell && ssh.forwarding && ssh.record_input);
    assert_eq!(ssh.sftp, SftpAccess::ReadOnly);
    assert!(ssh.shell_allowed(p.identity("alice").unwrap()));
}

#[test]
fn rejects_ssh_target_without_upstream_login() {
    let dir = key_dir("ssh-nologin");
    one_problem_in(
        &dir,
        &ssh_policy(&dir, ""),
        8,
        1,
        "needs a way to log in upstream",
    );
}

#[test]
fn rejects_key_file_open_to_others() {
    let dir = temp_dir("ssh-open-key");
    write_file(&dir.join("up.key"), 0o644);
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\n"),
        15,
        12,
        "chmod 600",
    );
}

#[test]
fn rejects_two_upstream_logins() {
    let dir = key_dir("ssh-twologins");
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\npassword_env = \"PW\"\n"),
        16,
        16,
        "keep only one",
    );
}

#[test]
fn rejects_non_ed25519_or_malformed_host_key() {
    let dir = key_dir("ssh-hostkey");
    let text = ssh_policy(&dir, "key_file = \"up.key\"\n").replace(HOST_KEY, "ssh-ed25519 AAAA!!");
    one_problem_in(&dir, &text, 14, 12, "not an OpenSSH public key");
    let text = ssh_policy(&dir, "key_file = \"up.key\"\n").replace(HOST_KEY, RSA_KEY);
    assert!(parse_in(&dir, &text).is_err());
}

#[test]
fn rejects_missing_host_key() {
    let dir = key_dir("ssh-nohostkey");
    let text = ssh_policy(&dir, "key_file = \"up.key\"\n")
        .replace(&format!("host_key = \"{HOST_KEY}\"\n"), "");
    one_problem_in(&dir, &text, 8, 1, "host_key");
}

#[test]
fn rejects_postgres_keys_on_ssh_targets_and_ssh_keys_on_postgres_targets() {
    let dir = key_dir("ssh-crosskeys");
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\ndatabase = \"app\"\n"),
        16,
        12,
        "PostgreSQL target key",
    );
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\nupstream_pool = 4\n"),
        16,
        17,
        "`upstream_pool` is a PostgreSQL target key",
    );
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\nupstream_pool_idle = \"5m\"\n"),
        16,
        22,
        "`upstream_pool_idle` is a PostgreSQL target key",
    );
    one_problem_in(
        &dir,
        &ssh_policy(
            &dir,
            "key_file = \"up.key\"\nupstream_pool_lifetime = \"1h\"\n",
        ),
        16,
        26,
        "`upstream_pool_lifetime` is a PostgreSQL target key",
    );
    one_problem(
        &format!("{BASE}[[target]]\nname = \"db2\"\nlisten = \"127.0.0.1:6433\"\nupstream = \"h:5432\"\ndatabase = \"a\"\nuser = \"u\"\nupstream_tls = \"disable\"\nsftp = \"deny\"\n"),
        25,
        8,
        "SSH target key",
    );
}

#[test]
fn max_recording_size_takes_a_size_or_bytes() {
    let dir = key_dir("ssh-recsize");
    for (value, bytes) in [
        ("\"64KiB\"", 64 << 10),
        ("\"2GiB\"", 2 << 30),
        ("4096", 4096),
    ] {
        let extra = format!("key_file = \"up.key\"\nmax_recording_size = {value}\n");
        let p = parse_in(&dir, &ssh_policy(&dir, &extra)).unwrap();
        let ssh = p.target("web").unwrap().ssh.clone().unwrap();
        assert_eq!(ssh.max_recording_size, bytes, "{value}");
    }
}

#[test]
fn rejects_max_recording_size_out_of_range_or_malformed() {
    let dir = key_dir("ssh-badrecsize");
    for value in ["0", "-1", "4095", "\"2TiB\"", "\"lots\"", "\"\""] {
        let extra = format!("key_file = \"up.key\"\nmax_recording_size = {value}\n");
        one_problem_in(
            &dir,
            &ssh_policy(&dir, &extra),
            16,
            22,
            "`max_recording_size` must be a size between 4KiB and 1TiB",
        );
    }
    one_problem(
        &format!("{BASE}[[target]]\nname = \"db2\"\nlisten = \"127.0.0.1:6433\"\nupstream = \"h:5432\"\ndatabase = \"a\"\nuser = \"u\"\nupstream_tls = \"disable\"\nmax_recording_size = \"1MiB\"\n"),
        25,
        22,
        "SSH target key",
    );
}

#[test]
fn rejects_bad_switch_values() {
    let dir = key_dir("ssh-badswitch");
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\nsftp = \"sometimes\"\n"),
        16,
        8,
        "\"read-only\"",
    );
    one_problem_in(
        &dir,
        &ssh_policy(&dir, "key_file = \"up.key\"\nshell_for = [\"alice\"]\n"),
        16,
        13,
        "only matters with `shell = \"deny\"`",
    );
}

#[test]
fn rejects_malformed_and_shared_ssh_keys() {
    let text = format!("{GW}[[identity]]\nname = \"a\"\nssh_keys = [\"ssh-ed25519 nope\"]\n");
    one_problem(&text, 5, 13, "not an OpenSSH public key");
    let text = format!(
        "{GW}[[identity]]\nname = \"a\"\nssh_keys = [\"{ALICE_KEY}\"]\n[[identity]]\nname = \"b\"\nssh_keys = [\"{ALICE_KEY}\"]\n"
    );
    one_problem(&text, 8, 13, "already listed for identity \"a\"");
}

#[test]
fn ssh_rule_keys_parse_and_flags_accept_both_vocabularies() {
    let rules = format!(
        "{BASE}[[rule]]\nname = \"r1\"\nwho = [\"*\"]\ncommands = ['^systemctl restart app$']\nprograms = [\"systemctl\"]\nflags = [\"dynamic\", \"unknown\"]\naction = \"allow\"\n"
    );
    let p = ok(&rules);
    let r = p.rules.iter().find(|r| r.name == "r1").unwrap();
    assert_eq!(r.commands.len(), 1);
    assert_eq!(r.programs, vec!["systemctl".to_string()]);
    assert!(r
        .command_flags
        .contains(crate::policy::command::CommandFlags::DYNAMIC));
    assert!(r.command_unknown && r.is_ssh_only() && !r.is_sql_only());
}

#[test]
fn rejects_bad_ssh_rule_keys_and_mixed_rules() {
    let rule = |body: &str| {
        format!("{BASE}[[rule]]\nname = \"r1\"\nwho = [\"*\"]\naction = \"allow\"\n{body}")
    };
    one_problem(
        &rule("commands = ['(']\n"),
        22,
        13,
        "not a valid regular expression",
    );
    one_problem(&rule("programs = [\"/bin/rm\"]\n"), 22, 13, "basename");
    one_problem(&rule("flags = [\"sometimes\"]\n"), 22, 10, "(SSH commands)");
    one_problem(
        &rule("sql = [\"select\"]\nprograms = [\"ls\"]\n"),
        18,
        1,
        "mixes SQL conditions",
    );
}
