//! Table-driven tests of the command classifier, evasions, properties, and a cross-check with bash.
use super::*;

fn flags_of(names: &[&str]) -> CommandFlags {
    let mut f = CommandFlags::empty();
    for n in names {
        match CommandFlags::from_name(n) {
            Some(x) => f.insert(x),
            None => panic!("no flag {n}"),
        }
    }
    f
}

/// (line, normalized form of each command in order, union of all commands' flags).
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

const KNOWN: &[Case] = &[
    // --- plain commands, blanks, comments ---
    ("ls", &["ls"], &[]),
    ("ls -la /tmp", &["ls -la /tmp"], &[]),
    ("  ls \t  -l   ", &["ls -l"], &[]),
    ("", &[], &[]),
    ("   \n\n  ", &[], &[]),
    ("# only a comment; rm -rf /", &[], &[]),
    ("ls # comment; rm -rf /", &["ls"], &[]),
    ("ls #\nrm x", &["ls", "rm x"], &[]),
    ("echo a#b", &["echo 'a#b'"], &[]),
    ("systemctl restart app", &["systemctl restart app"], &[]),
    ("cat /var/log/syslog", &["cat /var/log/syslog"], &[]),
    ("rm -- -rf", &["rm -- -rf"], &[]),
    ("echo a=b", &["echo a=b"], &[]),
    ("echo -n", &["echo -n"], &[]),
    ("echo if then fi", &["echo if then fi"], &[]),
    ("echo { }", &["echo { }"], &[]),
    ("[ -f /etc/passwd ]", &["[ -f /etc/passwd ]"], &[]),
    ("true\r", &["$'true\\r'"], &[]),
    // --- separators ---
    ("a; b", &["a", "b"], &[]),
    ("a;b;c", &["a", "b", "c"], &[]),
    ("a && b || c", &["a", "b", "c"], &[]),
    ("a&&b", &["a", "b"], &[]),
    ("a &&\n b", &["a", "b"], &[]),
    ("a ||\n\n b", &["a", "b"], &[]),
    ("a | b", &["a", "b"], &["piped"]),
    ("a |& b", &["a", "b"], &["piped"]),
    ("a |\n b | c", &["a", "b", "c"], &["piped"]),
    ("a & b", &["a", "b"], &["background"]),
    ("a &", &["a"], &["background"]),
    ("a\nb\n", &["a", "b"], &[]),
    ("a;", &["a"], &[]),
    ("ls;rm x&", &["ls", "rm x"], &["background"]),
    // --- groups and keywords ---
    ("(a; b)", &["a", "b"], &["in_subshell"]),
    (
        "( cd /tmp && rm x )",
        &["cd /tmp", "rm x"],
        &["in_subshell"],
    ),
    ("{ a; b; }", &["a", "b"], &[]),
    ("{ a\n}", &["a"], &[]),
    ("{ a; b; } > /tmp/out", &["a", "b"], &["writes_file"]),
    ("( ( ls ) )", &["ls"], &["in_subshell"]),
    ("! true", &["true"], &[]),
    ("time ls", &["ls"], &[]),
    ("time -p ls -l", &["ls -l"], &[]),
    ("if true; then ls; fi", &["true", "ls"], &[]),
    (
        "if a; then b; elif c; then d; else e; fi",
        &["a", "b", "c", "d", "e"],
        &[],
    ),
    ("if a\nthen\n b\nfi", &["a", "b"], &[]),
    ("while true; do sleep 1; done", &["true", "sleep 1"], &[]),
    ("until false; do x; done", &["false", "x"], &[]),
    ("for f in a b; do rm $f; done", &["rm $f"], &["dynamic"]),
    (
        "for f in $(ls); do echo $f; done",
        &["ls", "echo $f"],
        &["dynamic", "substitution"],
    ),
    ("for f; do echo; done", &["echo"], &[]),
    (
        "for i in 1 2\ndo\necho $i\ndone",
        &["echo $i"],
        &["dynamic"],
    ),
    (
        "if true; then ls; fi > /tmp/out",
        &["true", "ls"],
        &["writes_file"],
    ),
    (
        "while read l; do echo $l; done < /etc/passwd",
        &["read l", "echo $l"],
        &["dynamic", "reads_file"],
    ),
    ("{ if true; then :; fi }", &["true", ":"], &[]),
    (
        "if ! grep -q x f; then echo no; fi",
        &["grep -q x f", "echo no"],
        &[],
    ),
    // --- quoting: words are de-quoted ---
    (
        "sys\"temctl\" restart 'app'",
        &["systemctl restart app"],
        &[],
    ),
    ("'ls' \"-l\"", &["ls -l"], &[]),
    ("r\\m -rf /", &["rm -rf /"], &[]),
    ("\\r\\m -rf /", &["rm -rf /"], &[]),
    ("echo 'a b'", &["echo 'a b'"], &[]),
    ("echo a\\ b", &["echo 'a b'"], &[]),
    ("echo \"a;b\"", &["echo 'a;b'"], &[]),
    ("echo 'a; rm -rf /'", &["echo 'a; rm -rf /'"], &[]),
    (
        "echo 'a && rm -rf /' | cat",
        &["echo 'a && rm -rf /'", "cat"],
        &["piped"],
    ),
    ("echo \"it's\"", &["echo 'it'\\''s'"], &[]),
    ("echo \"a\\\"b\"", &["echo 'a\"b'"], &[]),
    ("echo \"\\$HOME\"", &["echo '$HOME'"], &[]),
    ("echo \\$HOME", &["echo '$HOME'"], &[]),
    ("echo '$HOME'", &["echo '$HOME'"], &[]),
    ("echo \"a\\nb\"", &["echo 'a\\nb'"], &[]),
    ("echo \"a\\\\b\"", &["echo 'a\\b'"], &[]),
    ("echo 'a\nrm -rf /'", &["echo $'a\\nrm -rf /'"], &[]),
    ("echo \"a\nb\"", &["echo $'a\\nb'"], &[]),
    ("echo \"\"", &["echo ''"], &[]),
    ("echo ''", &["echo ''"], &[]),
    ("echo \"a\"'b'c", &["echo abc"], &[]),
    ("echo a\\\nb", &["echo ab"], &[]),
    ("ls \\\n -l", &["ls -l"], &[]),
    ("l\\\ns", &["ls"], &[]),
    ("echo \"a\\\nb\"", &["echo ab"], &[]),
    ("echo 'a\\\nb'", &["echo $'a\\\\\\nb'"], &[]),
    ("echo $", &["echo '$'"], &[]),
    ("echo \"$\"", &["echo '$'"], &[]),
    ("echo a$ b", &["echo 'a$' b"], &[]),
    ("'if' x", &["'if' x"], &[]),
    ("\"FOO=bar\" ls", &["'FOO=bar' ls"], &[]),
    ("ls FOO=bar", &["ls FOO=bar"], &[]),
    // --- ANSI-C quoting is decoded ---
    ("$'\\x72m' -rf /", &["rm -rf /"], &[]),
    ("$'\\162\\155' -rf /", &["rm -rf /"], &[]),
    ("$'\\u0072m' x", &["rm x"], &[]),
    ("echo $'a\\tb'", &["echo $'a\\tb'"], &[]),
    ("echo $'\\u00e9'", &["echo é"], &[]),
    ("echo $'\\101'", &["echo A"], &[]),
    ("echo $'\\''", &["echo ''\\'''"], &[]),
    ("echo $'\\q'", &["echo '\\q'"], &[]),
    ("echo $'\\x'", &["echo '\\x'"], &[]),
    ("echo \"$'x'\"", &["echo '$'\\''x'\\'''"], &[]),
    // --- unicode look-alikes are other words ---
    ("ｌｓ -l", &["ｌｓ -l"], &[]),
    ("rm\u{a0}-rf /", &["rm\u{a0}-rf /"], &[]),
    ("ѕudo rm x", &["ѕudo rm x"], &[]),
    // --- expansions make a command dynamic ---
    ("echo $HOME", &["echo $HOME"], &["dynamic"]),
    ("echo ${HOME}", &["echo ${HOME}"], &["dynamic"]),
    ("echo ${1:-x}", &["echo ${1:-x}"], &["dynamic"]),
    ("echo \"$HOME\"/x", &["echo $HOME/x"], &["dynamic"]),
    ("echo \"$HOME x\"", &["echo $HOME' x'"], &["dynamic"]),
    ("$CMD -rf /", &["$CMD -rf /"], &["dynamic"]),
    ("ls $IFS", &["ls $IFS"], &["dynamic"]),
    (
        "cat${IFS}/etc/passwd",
        &["cat${IFS}/etc/passwd"],
        &["dynamic"],
    ),
    (
        "echo $1 $@ $# $? $$ $!",
        &["echo $1 $@ $# $? $$ $!"],
        &["dynamic"],
    ),
    ("echo $((1+2))", &["echo $((1+2))"], &["dynamic"]),
    (
        "echo $(( (1+2)*3 ))",
        &["echo $(( (1+2)*3 ))"],
        &["dynamic"],
    ),
    ("echo $\"hello\"", &["echo hello"], &["dynamic"]),
    (
        "echo $(date)",
        &["date", "echo $(date)"],
        &["dynamic", "substitution"],
    ),
    (
        "echo `date`",
        &["date", "echo `date`"],
        &["dynamic", "substitution"],
    ),
    (
        "echo \"$(date)\"",
        &["date", "echo $(date)"],
        &["dynamic", "substitution"],
    ),
    (
        "echo \"`date`\"",
        &["date", "echo `date`"],
        &["dynamic", "substitution"],
    ),
    (
        "$(echo rm) -rf /",
        &["echo rm", "$(echo rm) -rf /"],
        &["dynamic", "substitution"],
    ),
    (
        "cat $(ls /etc | head -1)",
        &["ls /etc", "head -1", "cat $(ls /etc | head -1)"],
        &["dynamic", "substitution", "piped"],
    ),
    (
        "echo $(echo $(id))",
        &["id", "echo $(id)", "echo $(echo $(id))"],
        &["dynamic", "substitution"],
    ),
    (
        "echo `echo \\`id\\``",
        &["id", "echo `id`", "echo `echo \\`id\\``"],
        &["dynamic", "substitution"],
    ),
    (
        "echo $(ls; rm x)",
        &["ls", "rm x", "echo $(ls; rm x)"],
        &["dynamic", "substitution"],
    ),
    ("echo $( )", &["echo $( )"], &["dynamic"]),
    (
        "echo $(echo ')')",
        &["echo ')'", "echo $(echo ')')"],
        &["dynamic", "substitution"],
    ),
    (
        "echo $(# x\nls)",
        &["ls", "echo $(# x\nls)"],
        &["dynamic", "substitution"],
    ),
    (
        "diff <(ls a) <(ls b)",
        &["ls a", "ls b", "diff <(ls a) <(ls b)"],
        &["dynamic", "substitution", "process_subst"],
    ),
    (
        "tee >(gzip > f) < x",
        &["gzip", "tee >(gzip > f)"],
        &[
            "dynamic",
            "substitution",
            "process_subst",
            "writes_file",
            "reads_file",
        ],
    ),
    // --- globs, braces, tilde ---
    ("ls *.log", &["ls *.log"], &["glob"]),
    ("ls file?.txt", &["ls file?.txt"], &["glob"]),
    ("ls [abc]", &["ls [abc]"], &["glob"]),
    ("ls '*.log'", &["ls '*.log'"], &[]),
    ("ls \\*", &["ls '*'"], &[]),
    (
        "ls \"/var/log/my app\"/*.log",
        &["ls '/var/log/my app/'*.log"],
        &["glob"],
    ),
    ("echo {a,b}", &["echo {a,b}"], &["glob"]),
    ("echo x{1..3}", &["echo x{1..3}"], &["glob"]),
    ("echo {}", &["echo {}"], &[]),
    (
        "/usr/bin/sys*ctl restart app",
        &["/usr/bin/sys*ctl restart app"],
        &["glob", "dynamic"],
    ),
    ("ls ~", &["ls ~"], &["tilde"]),
    ("cat ~/.ssh/id_rsa", &["cat ~/.ssh/id_rsa"], &["tilde"]),
    ("cat ~root/x", &["cat ~root/x"], &["tilde"]),
    ("echo a~b", &["echo 'a~b'"], &[]),
    ("echo '~'", &["echo '~'"], &[]),
    ("~/bin/deploy", &["~/bin/deploy"], &["tilde", "dynamic"]),
    // --- redirections ---
    ("ls > /tmp/x", &["ls"], &["writes_file"]),
    ("ls >> x", &["ls"], &["writes_file"]),
    ("ls >| x", &["ls"], &["writes_file"]),
    ("ls &> out", &["ls"], &["writes_file"]),
    ("ls &>> out", &["ls"], &["writes_file"]),
    ("ls >&out", &["ls"], &["writes_file"]),
    ("ls 3<>file", &["ls"], &["writes_file"]),
    ("ls>x", &["ls"], &["writes_file"]),
    ("ls 2>/dev/null", &["ls"], &[]),
    ("ls >/dev/null 2>&1", &["ls"], &[]),
    ("ls 2>&1 | grep x", &["ls", "grep x"], &["piped"]),
    ("ls 1>&2", &["ls"], &[]),
    ("ls 2>&-", &["ls"], &[]),
    ("cat < /etc/passwd", &["cat"], &["reads_file"]),
    ("< /etc/passwd cat", &["cat"], &["reads_file"]),
    ("> /etc/passwd", &[""], &["writes_file"]),
    ("ls > $F", &["ls"], &["writes_file", "dynamic"]),
    ("cat <<< 'hello'", &["cat"], &[]),
    (
        "cat <<< $(id)",
        &["id", "cat"],
        &["dynamic", "substitution"],
    ),
    ("echo a2>x", &["echo a2"], &["writes_file"]),
    ("echo 2 >x", &["echo 2"], &["writes_file"]),
    // --- here-documents: the body is data ---
    ("cat <<'EOF'\n$(rm -rf /)\nEOF", &["cat"], &[]),
    ("cat <<\"EOF\"\n`id`\nEOF\nls", &["cat", "ls"], &[]),
    ("cat <<EOF\nhello world\nEOF\nls", &["cat", "ls"], &[]),
    ("cat <<-EOF\n\thello\n\tEOF\nls", &["cat", "ls"], &[]),
    (
        "cat <<EOF; ls\nrm -rf /\nEOF\npwd",
        &["cat", "ls", "pwd"],
        &[],
    ),
    ("cat <<A <<B\na\nA\nb\nB", &["cat"], &[]),
    ("cat <<E > /tmp/f\nx\nE", &["cat"], &["writes_file"]),
    // --- assignments ---
    ("FOO=bar ls", &["FOO=bar ls"], &["env_assign"]),
    (
        "LD_PRELOAD=/tmp/x.so systemctl restart app",
        &["LD_PRELOAD=/tmp/x.so systemctl restart app"],
        &["env_assign"],
    ),
    ("A=1", &["A=1"], &["env_assign"]),
    ("A=", &["A=''"], &["env_assign"]),
    ("A='x y' B=2 cmd", &["A='x y' B=2 cmd"], &["env_assign"]),
    ("PATH+=:/tmp ls", &["PATH+=:/tmp ls"], &["env_assign"]),
    (
        "FOO=$(id) ls",
        &["id", "FOO=$(id) ls"],
        &["env_assign", "dynamic", "substitution"],
    ),
    ("FOO=~/x ls", &["FOO=~/x ls"], &["env_assign", "tilde"]),
    ("A=1 B=2", &["A=1 B=2"], &["env_assign"]),
    // --- wrappers ---
    (
        "sudo systemctl restart app",
        &["sudo systemctl restart app", "systemctl restart app"],
        &["via_wrapper"],
    ),
    (
        "sudo -u root -- rm -rf /",
        &["sudo -u root -- rm -rf /", "rm -rf /"],
        &["via_wrapper"],
    ),
    (
        "sudo -nu deploy ls",
        &["sudo -nu deploy ls", "ls"],
        &["via_wrapper"],
    ),
    (
        "sudo --user=deploy -H ls",
        &["sudo --user=deploy -H ls", "ls"],
        &["via_wrapper"],
    ),
    ("sudo -i", &["sudo -i"], &[]),
    ("sudo -l", &["sudo -l"], &[]),
    (
        "sudo FOO=1 ls",
        &["sudo FOO=1 ls", "FOO=1 ls"],
        &["via_wrapper", "env_assign"],
    ),
    (
        "sudo sudo ls",
        &["sudo sudo ls", "sudo ls", "ls"],
        &["via_wrapper"],
    ),
    (
        "sudo ls > /etc/x",
        &["sudo ls", "ls"],
        &["via_wrapper", "writes_file"],
    ),
    (
        "doas -u root rm x",
        &["doas -u root rm x", "rm x"],
        &["via_wrapper"],
    ),
    ("env", &["env"], &[]),
    (
        "env -i PATH=/tmp ls",
        &["env -i PATH=/tmp ls", "PATH=/tmp ls"],
        &["via_wrapper", "env_assign"],
    ),
    ("env - ls", &["env - ls", "ls"], &["via_wrapper"]),
    (
        "env -u HOME -- ls",
        &["env -u HOME -- ls", "ls"],
        &["via_wrapper"],
    ),
    (
        "nohup ./run.sh &",
        &["nohup ./run.sh", "./run.sh"],
        &["via_wrapper", "background"],
    ),
    (
        "timeout 5 curl x",
        &["timeout 5 curl x", "curl x"],
        &["via_wrapper"],
    ),
    (
        "timeout -s KILL 5 curl x",
        &["timeout -s KILL 5 curl x", "curl x"],
        &["via_wrapper"],
    ),
    (
        "timeout --signal=KILL -k 1 5s curl x",
        &["timeout --signal=KILL -k 1 5s curl x", "curl x"],
        &["via_wrapper"],
    ),
    (
        "nice -n 10 make",
        &["nice -n 10 make", "make"],
        &["via_wrapper"],
    ),
    (
        "nice -10 make",
        &["nice -10 make", "make"],
        &["via_wrapper"],
    ),
    ("nice -- make", &["nice -- make", "make"], &["via_wrapper"]),
    (
        "ionice -c3 du -sh /",
        &["ionice -c3 du -sh /", "du -sh /"],
        &["via_wrapper"],
    ),
    (
        "stdbuf -oL tail -f x",
        &["stdbuf -oL tail -f x", "tail -f x"],
        &["via_wrapper"],
    ),
    (
        "setsid -f ./daemon",
        &["setsid -f ./daemon", "./daemon"],
        &["via_wrapper"],
    ),
    (
        "chroot /mnt ls",
        &["chroot /mnt ls", "ls"],
        &["via_wrapper"],
    ),
    ("chroot /mnt", &["chroot /mnt"], &["dynamic"]),
    (
        "busybox rm -rf /",
        &["busybox rm -rf /", "rm -rf /"],
        &["via_wrapper"],
    ),
    ("exec ls", &["exec ls", "ls"], &["via_wrapper"]),
    (
        "exec -a foo ls",
        &["exec -a foo ls", "ls"],
        &["via_wrapper"],
    ),
    ("exec > /tmp/log", &["exec"], &["writes_file"]),
    (
        "command -p rm x",
        &["command -p rm x", "rm x"],
        &["via_wrapper"],
    ),
    (
        "builtin echo hi",
        &["builtin echo hi", "echo hi"],
        &["via_wrapper"],
    ),
    (
        "/usr/bin/sudo /bin/rm x",
        &["/usr/bin/sudo /bin/rm x", "/bin/rm x"],
        &["via_wrapper"],
    ),
    ("xargs rm", &["xargs rm", "rm"], &["via_wrapper", "dynamic"]),
    ("xargs", &["xargs"], &["dynamic"]),
    (
        "find . | xargs -0 -n1 rm -f",
        &["find .", "xargs -0 -n1 rm -f", "rm -f"],
        &["via_wrapper", "dynamic", "piped"],
    ),
    (
        "xargs -I{} cp {} /tmp",
        &["xargs -I{} cp {} /tmp", "cp {} /tmp"],
        &["via_wrapper", "dynamic"],
    ),
    ("find / -name x -delete", &["find / -name x -delete"], &[]),
    (
        "find . -name '*.py' -exec grep x {} \\;",
        &["find . -name '*.py' -exec grep x {} ';'", "grep x {}"],
        &["via_wrapper", "dynamic"],
    ),
    (
        "find . -execdir rm {} +",
        &["find . -execdir rm {} +", "rm {}"],
        &["via_wrapper", "dynamic"],
    ),
    (
        "sh -c 'ls; rm -rf /tmp/x'",
        &["sh -c 'ls; rm -rf /tmp/x'", "ls", "rm -rf /tmp/x"],
        &["via_wrapper"],
    ),
    (
        "bash -c \"sudo systemctl restart app\"",
        &[
            "bash -c 'sudo systemctl restart app'",
            "sudo systemctl restart app",
            "systemctl restart app",
        ],
        &["via_wrapper"],
    ),
    (
        "bash -lc 'echo hi'",
        &["bash -lc 'echo hi'", "echo hi"],
        &["via_wrapper"],
    ),
    (
        "bash -o pipefail -c 'a | b'",
        &["bash -o pipefail -c 'a | b'", "a", "b"],
        &["via_wrapper", "piped"],
    ),
    (
        "/bin/sh -c 'id' x y",
        &["/bin/sh -c id x y", "id"],
        &["via_wrapper"],
    ),
    (
        "sh -c 'sh -c \"rm -rf /\"'",
        &["sh -c 'sh -c \"rm -rf /\"'", "sh -c 'rm -rf /'", "rm -rf /"],
        &["via_wrapper"],
    ),
    (
        "sh -c 'echo $1' _ x",
        &["sh -c 'echo $1' _ x", "echo $1"],
        &["via_wrapper", "dynamic"],
    ),
    ("bash script.sh", &["bash script.sh"], &["dynamic"]),
    ("bash", &["bash"], &["dynamic"]),
    (
        "curl -s x | sh",
        &["curl -s x", "sh"],
        &["dynamic", "piped"],
    ),
    ("bash -c \"$X\"", &["bash -c $X"], &["dynamic"]),
    ("zsh -c 'ls'", &["zsh -c ls"], &["dynamic"]),
    (
        "su -c 'rm -rf /' root",
        &["su -c 'rm -rf /' root", "rm -rf /"],
        &["via_wrapper"],
    ),
    (
        "su - root -c id",
        &["su - root -c id", "id"],
        &["via_wrapper"],
    ),
    ("su root", &["su root"], &["dynamic"]),
    (
        "eval 'rm -rf /'",
        &["eval 'rm -rf /'", "rm -rf /"],
        &["via_wrapper", "dynamic"],
    ),
    (
        "eval rm -rf /",
        &["eval rm -rf /", "rm -rf /"],
        &["via_wrapper", "dynamic"],
    ),
    ("eval $X", &["eval $X"], &["dynamic"]),
    ("source ./x.sh", &["source ./x.sh"], &["dynamic"]),
    (". ./x.sh", &[". ./x.sh"], &["dynamic"]),
    (
        "sudo env FOO=1 nice -n 5 sh -c id",
        &[
            "sudo env FOO=1 nice -n 5 sh -c id",
            "env FOO=1 nice -n 5 sh -c id",
            "FOO=1 nice -n 5 sh -c id",
            "FOO=1 sh -c id",
            "id",
        ],
        &["via_wrapper", "env_assign"],
    ),
    (
        "sudo $OPT ls",
        &["sudo $OPT ls", "$OPT ls"],
        &["via_wrapper", "dynamic"],
    ),
    (
        "echo $(cat <<EOF\nx\nEOF\n)",
        &["cat", "echo $(cat <<EOF\nx\nEOF\n)"],
        &["dynamic", "substitution"],
    ),
    (
        "(sudo ls) &",
        &["sudo ls", "ls"],
        &["via_wrapper", "in_subshell", "background"],
    ),
    (
        "echo $(sudo id)",
        &["sudo id", "id", "echo $(sudo id)"],
        &["via_wrapper", "substitution", "dynamic"],
    ),
];

/// Lines that must be unknown, with the reason.
const UNKNOWN: &[(&str, Unknown)] = &[
    ("case x in a) ls;; esac", Unknown::Unsupported("case")),
    ("[[ -f x ]]", Unknown::Unsupported("[[")),
    (
        "(( x = 1 ))",
        Unknown::Unsupported("(( arithmetic command ))"),
    ),
    ("function f { ls; }", Unknown::Unsupported("function")),
    ("f() { ls; }", Unknown::Unsupported("function definition")),
    ("f () { ls; }", Unknown::Unsupported("function definition")),
    ("select x in a; do ls; done", Unknown::Unsupported("select")),
    ("coproc ls", Unknown::Unsupported("coproc")),
    (
        "for ((i=0;i<3;i++)); do ls; done",
        Unknown::Unsupported("for (( ))"),
    ),
    ("a[1]=x", Unknown::Unsupported("array assignment")),
    ("a[$(id)]=x ls", Unknown::Unsupported("array assignment")),
    ("a=(1 2)", Unknown::Syntax),
    ("echo 'unterminated", Unknown::Unterminated),
    ("echo \"unterminated", Unknown::Unterminated),
    ("echo $(ls", Unknown::Unterminated),
    ("echo `ls", Unknown::Unterminated),
    ("echo ${x", Unknown::Unterminated),
    ("echo $'x", Unknown::Unterminated),
    ("echo \\", Unknown::Unterminated),
    ("ls\0; rm -rf /", Unknown::NulByte),
    ("ls &&", Unknown::Unterminated),
    ("ls |", Unknown::Unterminated),
    ("; ls", Unknown::Syntax),
    ("ls ;; ls", Unknown::Syntax),
    ("&& ls", Unknown::Syntax),
    ("ls )", Unknown::Syntax),
    ("( ls", Unknown::Unterminated),
    ("()", Unknown::Syntax),
    ("{ ls }", Unknown::Unterminated),
    ("{ }", Unknown::Syntax),
    ("if true; then ls", Unknown::Unterminated),
    ("if true; then fi", Unknown::Syntax),
    ("fi", Unknown::Syntax),
    ("then ls", Unknown::Syntax),
    ("ls && done", Unknown::Syntax),
    ("ls | ! x", Unknown::Unsupported("!")),
    ("x=1 if true; then :; fi", Unknown::Syntax),
    (
        "echo ${x:-$(id)}",
        Unknown::Unsupported("complex parameter expansion"),
    ),
    (
        "echo ${x:-'a'}",
        Unknown::Unsupported("complex parameter expansion"),
    ),
    (
        "echo $((`id`))",
        Unknown::Unsupported("quoting or substitution in arithmetic"),
    ),
    (
        "echo $(($(id)))",
        Unknown::Unsupported("substitution in arithmetic"),
    ),
    (
        "echo $((ls) )",
        Unknown::Unsupported("$(( that is not arithmetic"),
    ),
    (
        "exec {fd}>file",
        Unknown::Unsupported("{varname} redirection"),
    ),
    ("echo $'\\0'", Unknown::NulByte),
    ("echo $'a\\x00b'", Unknown::NulByte),
    ("echo $'\\xff'", Unknown::NotUtf8),
    ("echo $'\\cA'", Unknown::Unsupported("\\c escape")),
    (
        "echo $'\\ud800'",
        Unknown::Unsupported("invalid \\u escape"),
    ),
    (
        "echo a<(ls)",
        Unknown::Unsupported("process substitution inside a word"),
    ),
    (
        "ls &\\\n& rm x",
        Unknown::Unsupported("line continuation inside an operator"),
    ),
    (
        "ls 2\\\n>/dev/null",
        Unknown::Unsupported("line continuation inside an operator"),
    ),
    (
        "echo $\\\nHOME",
        Unknown::Unsupported("line continuation after $"),
    ),
    (
        "cat <<EOF\n$(id)\nEOF",
        Unknown::Unsupported("expansion in a here-document"),
    ),
    (
        "cat <<EOF\n`id`\nEOF",
        Unknown::Unsupported("expansion in a here-document"),
    ),
    (
        "cat <<EOF\n\\$x\nEOF",
        Unknown::Unsupported("expansion in a here-document"),
    ),
    ("cat <<EOF\nhi", Unknown::Unterminated),
    ("cat <<EOF", Unknown::Unterminated),
    (
        "cat <<$X\nx\n$X",
        Unknown::Unsupported("here-document delimiter with expansion"),
    ),
    (
        "echo $(cat <<EOF)\nx\nEOF",
        Unknown::Unsupported("here-document inside a substitution"),
    ),
    (
        "cat <<EOF `id`\nx\nEOF",
        Unknown::Unsupported("backquotes on a line with a here-document"),
    ),
    (
        "echo \"`echo \\\"hi\\\"`\"",
        Unknown::Unsupported("escaped double quote in quoted backquotes"),
    ),
    ("sudo -e /etc/passwd", Unknown::Unsupported("sudo -e")),
    (
        "sudo --weird ls",
        Unknown::Unsupported("unrecognised option of a wrapper"),
    ),
    (
        "sudo -Z ls",
        Unknown::Unsupported("unrecognised option of a wrapper"),
    ),
    (
        "sudo -$O ls",
        Unknown::Unsupported("option of a wrapper not known statically"),
    ),
    (
        "env -S 'rm -rf /'",
        Unknown::Unsupported("unrecognised option of a wrapper"),
    ),
    ("bash -c", Unknown::Syntax),
    (
        "bash -Q x",
        Unknown::Unsupported("unrecognised shell option"),
    ),
    (
        "bash --weird -c ls",
        Unknown::Unsupported("unrecognised shell option"),
    ),
    ("sh -c 'ls; case x in esac'", Unknown::Unsupported("case")),
    ("sh -c 'echo \"unterminated'", Unknown::Unterminated),
    (
        "eval 'f() { ls; }'",
        Unknown::Unsupported("function definition"),
    ),
    ("su --weird", Unknown::Unsupported("unrecognised su option")),
    // found by the bash cross-check: a command name starting with `%` runs `fg`.
    ("ls; %1", Unknown::Unsupported("job specification")),
    ("'%a b'", Unknown::Unsupported("job specification")),
];

fn describe(line: &CommandLine) -> String {
    format!(
        "{:?} unknown={:?}",
        line.commands
            .iter()
            .map(|c| (c.normalized.as_str(), c.flags.names().collect::<Vec<_>>()))
            .collect::<Vec<_>>(),
        line.unknown
    )
}

#[test]
fn classifies_table_of_known_lines() {
    assert!(
        KNOWN.len() + UNKNOWN.len() >= 150,
        "{}",
        KNOWN.len() + UNKNOWN.len()
    );
    let mut failures = Vec::new();
    for (line, normalized, flags) in KNOWN {
        let got = classify(line);
        let ok = got.unknown.is_none()
            && got
                .commands
                .iter()
                .map(|c| c.normalized.as_str())
                .eq(normalized.iter().copied())
            && got.flags() == flags_of(flags);
        if !ok {
            failures.push(format!(
                "{line:?}\n  want {normalized:?} {flags:?}\n  got  {}",
                describe(&got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn rejects_table_of_unknown_lines() {
    let mut failures = Vec::new();
    for (line, reason) in UNKNOWN {
        let got = classify(line);
        if got.unknown != Some(*reason) {
            failures.push(format!(
                "{line:?}\n  want {reason:?}\n  got  {}",
                describe(&got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn only(line: &str) -> SimpleCommand {
    let mut got = classify(line);
    assert!(got.is_known(), "{line:?}: {}", describe(&got));
    assert_eq!(got.commands.len(), 1, "{line:?}: {}", describe(&got));
    got.commands.remove(0)
}

#[test]
fn classifies_argv_program_and_parts() {
    let c = only("/usr/bin/systemctl 'restart' app");
    assert_eq!(c.argv, ["/usr/bin/systemctl", "restart", "app"]);
    assert_eq!(c.program, "systemctl");
    assert_eq!(c.wrapper, None);

    let c = only("LD_PRELOAD=/x.so PATH+=:/tmp ./bin/run a 2>/dev/null >>out <in");
    assert_eq!(c.program, "run");
    assert_eq!(
        c.assignments,
        [
            Assignment {
                name: "LD_PRELOAD".into(),
                value: "/x.so".into()
            },
            Assignment {
                name: "PATH".into(),
                value: ":/tmp".into()
            },
        ]
    );
    let redirs: Vec<_> = c
        .redirections
        .iter()
        .map(|r| (r.fd, r.op, r.target.as_str(), r.writes))
        .collect();
    assert_eq!(
        redirs,
        [
            (Some(2), RedirOp::Out, "/dev/null", false),
            (None, RedirOp::Append, "out", true),
            (None, RedirOp::In, "in", false),
        ]
    );

    let line = classify("sudo -u x FOO=1 rm -f /tmp/a > /tmp/log");
    let inner = &line.commands[1];
    assert_eq!(inner.argv, ["rm", "-f", "/tmp/a"]);
    assert_eq!(inner.wrapper.as_deref(), Some("sudo"));
    assert_eq!(inner.assignments[0].name, "FOO");
    assert_eq!(inner.redirections[0].target, "/tmp/log");
    assert!(inner
        .flags
        .contains(CommandFlags::VIA_WRAPPER | CommandFlags::WRITES_FILE));
    assert!(!line.commands[0].flags.contains(CommandFlags::VIA_WRAPPER));

    let line = classify("sh -c 'cat x' | bash -c 'wc -l'");
    let wrappers: Vec<_> = line.commands.iter().map(|c| c.wrapper.as_deref()).collect();
    assert_eq!(wrappers, [None, Some("sh"), None, Some("bash")]);

    let c = only("cat <<-'END'\n\tbody $(x)\n\tEND");
    assert_eq!(c.redirections[0].op, RedirOp::HereDoc);
    assert_eq!(c.redirections[0].target, "END");
    assert!(!c.redirections[0].writes);
}

#[test]
fn classifies_background_only_for_the_list_it_ends() {
    let line = classify("a; b & c");
    let bg: Vec<_> = line
        .commands
        .iter()
        .map(|c| c.flags.contains(CommandFlags::BACKGROUND))
        .collect();
    assert_eq!(bg, [false, true, false]);
    let line = classify("a && b & c | d");
    let bg: Vec<_> = line
        .commands
        .iter()
        .map(|c| c.flags.contains(CommandFlags::BACKGROUND))
        .collect();
    assert_eq!(bg, [true, true, false, false]);
}

#[test]
fn keeps_commands_found_before_giving_up() {
    let line = classify("rm -rf /; case x in esac");
    assert_eq!(line.unknown, Some(Unknown::Unsupported("case")));
    assert_eq!(line.commands[0].normalized, "rm -rf /");
}

#[test]
fn flag_names_round_trip() {
    for (name, flag) in CommandFlags::NAMES {
        assert_eq!(CommandFlags::from_name(name), Some(flag));
        assert_eq!(flag.names().collect::<Vec<_>>(), [name]);
    }
    assert_eq!(CommandFlags::from_name("dynamicx"), None);
}

#[test]
fn rejects_hostile_sizes() {
    let long = "a ".repeat(MAX_INPUT / 2 + 1);
    assert_eq!(classify(&long).unknown, Some(Unknown::TooLong));
    let many = "ls;".repeat(MAX_COMMANDS + 1);
    assert_eq!(classify(&many).unknown, Some(Unknown::TooManyCommands));
    let ok = "ls;".repeat(MAX_COMMANDS);
    assert!(classify(&ok).is_known());
    let deep = format!(
        "{}ls{}",
        "( ".repeat(MAX_DEPTH + 1),
        " )".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(classify(&deep).unknown, Some(Unknown::TooDeep));
    let deep = format!(
        "echo {}x{}",
        "$(echo ".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert_eq!(classify(&deep).unknown, Some(Unknown::TooDeep));
    let shallow = format!("echo {}x{}", "$(echo ".repeat(8), ")".repeat(8));
    assert!(classify(&shallow).is_known());
    assert_eq!(classify_bytes(b"ls \xff").unknown, Some(Unknown::NotUtf8));
    assert!(classify_bytes(b"ls").is_known());
}

/// Quotes nested `levels` times as `sh -c '…'`.
fn nest_sh(levels: usize, inner: &str) -> String {
    let mut s = inner.to_owned();
    for _ in 0..levels {
        s = format!("sh -c '{}'", s.replace('\'', "'\\''"));
    }
    s
}

#[test]
fn classifies_nested_shell_strings_up_to_the_caps() {
    let line = classify(&nest_sh(4, "rm -rf /"));
    assert!(line.is_known(), "{}", describe(&line));
    assert_eq!(
        line.commands.last().map(|c| c.normalized.as_str()),
        Some("rm -rf /")
    );
    assert_eq!(line.commands.len(), 5);
    // Each level doubles the quoting, so deep nesting runs into a cap, never into a wrong answer.
    let line = classify(&nest_sh(14, "rm -rf /"));
    assert!(line.unknown.is_some());
}

/// Deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

const PIECES: &[&str] = &[
    " ", " ", " ", "\t", "\n", ";", "&", "&&", "|", "||", "|&", "(", ")", "{", "}", "<", ">", ">>",
    "2>&1", "<<", "<<<", "'", "\"", "\\", "$", "$(", "`", "${", "$((", "))", "#", "*", "?", "[",
    "]", "~", "=", "a", "ls", "rm", "-rf", "x", "FOO=", "if", "then", "fi", "do", "done", "while",
    "for", "in", "case", "esac", "sudo", "sh", "-c", "env", "eval", "xargs", "find", "-exec",
    "\\;", "$'", "\\x41", "\\n", "\\\n", "é", "\u{a0}", "EOF", "\0", "!", "time", "--", "{a,b}",
    ",",
];

fn random_line(rng: &mut Rng, max: usize) -> String {
    let n = rng.below(max);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(PIECES[rng.below(PIECES.len())]);
    }
    s
}

#[test]
fn never_panics_and_stays_consistent_on_random_lines() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..30_000 {
        let s = random_line(&mut rng, 30);
        let (line, work) = classify_counting(&s);
        assert!(work <= WORK_FACTOR * s.len() + 4096, "{s:?}");
        assert!(line.commands.len() <= MAX_COMMANDS);
        for c in &line.commands {
            assert!(!c.argv.is_empty() || c.program.is_empty(), "{s:?}");
            assert_eq!(
                c.flags.contains(CommandFlags::VIA_WRAPPER),
                c.wrapper.is_some(),
                "{s:?} {}",
                describe(&line)
            );
        }
    }
    for _ in 0..5_000 {
        let n = rng.below(64);
        let bytes: Vec<u8> = (0..n)
            .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
            .collect();
        let _ = classify_bytes(&bytes);
        let _ = classify(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn normalized_form_reads_back_as_the_same_argv() {
    let mut rng = Rng(42);
    let mut checked = 0;
    for _ in 0..30_000 {
        let s = random_line(&mut rng, 12);
        let line = classify(&s);
        if !line.is_known() {
            continue;
        }
        for c in &line.commands {
            if c.flags.intersects(
                CommandFlags::DYNAMIC
                    | CommandFlags::GLOB
                    | CommandFlags::TILDE
                    | CommandFlags::VIA_WRAPPER,
            ) || c.argv.is_empty()
                || !c.redirections.is_empty()
            {
                continue;
            }
            let again = classify(&c.normalized);
            assert!(
                again.is_known() && !again.commands.is_empty(),
                "{s:?} -> {:?}: {}",
                c.normalized,
                describe(&again)
            );
            assert_eq!(
                again.commands[0].argv, c.argv,
                "{s:?} -> {:?}",
                c.normalized
            );
            assert_eq!(again.commands[0].normalized, c.normalized, "{s:?}");
            checked += 1;
        }
    }
    assert!(checked > 1_000, "only {checked} commands checked");
}

#[test]
fn classifies_long_almost_matching_inputs_in_linear_work() {
    let n = MAX_INPUT - 16;
    let inputs = [
        // Never-closed quotes after long runs.
        format!("echo {}'", "a".repeat(n)),
        format!("echo \"{}", "\\\"".repeat(n / 2 - 8)),
        "$(".repeat(n / 2),
        "`".repeat(n),
        "\\\n".repeat(n / 2),
        "a'b'".repeat(n / 4),
        "<<".repeat(n / 2),
        "{a,".repeat(n / 3),
        format!("cat <<E\n{}", "E \n".repeat(n / 3)),
        "sh -c ".repeat(n / 6),
        format!("eval {}", "x".repeat(n)),
        "ls;".repeat(n / 3),
        "$'\\x4".repeat(n / 6),
    ];
    for s in &inputs {
        let (_, work) = classify_counting(s);
        // Strings re-parsed after de-quoting are shorter than their source: one or two passes.
        assert!(
            work <= 2 * s.len() + 64,
            "work {work} for {} bytes",
            s.len()
        );
    }
    // Nested `sh -c` is the one construct that re-scans: bounded by depth.
    let s = nest_sh(10, "ls");
    let (_, work) = classify_counting(&s);
    assert!(work <= 11 * s.len(), "work {work} for {} bytes", s.len());
}

#[test]
fn never_panics_on_any_prefix_of_tricky_lines() {
    let lines = [
        "FOO=$(id) sudo -u root env -i A=1 sh -c 'cat <<\"E\" > /tmp/x\n$y\nE\nls' && echo `echo \\`x\\`` # c",
        "for f in $(ls *.log); do if [ -f \"$f\" ]; then gzip -9 \"$f\" 2>&1 | tee -a log; fi; done &",
        "echo $'\\x41\\u00e9\\101' \"${HOME}\" $((1+2)) <(ls) ~/x {a,b} a\\ b ｌｓ",
    ];
    for l in lines {
        for (i, _) in l.char_indices() {
            let _ = classify(&l[..i]);
        }
        assert!(classify(l).is_known(), "{l:?}: {}", describe(&classify(l)));
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check with the real bash.
//
// Two checks: (1) every line the classifier claims to understand is valid syntax for `bash -n`
// (which parses without running anything); (2) for straight-line lines of simple commands, the
// argv bash would pass matches ours. For (2) bash runs the line with PATH pointing nowhere, an
// empty environment, a scratch working directory, and a `command_not_found_handle` that prints
// its arguments NUL-separated: every external command becomes a harmless print. Lines naming a
// builtin or keyword, a path, or anything dynamic are not run.

use std::process::{Command, Stdio};

const BASH: &str = "/bin/bash";

fn bash_accepts(line: &str) -> bool {
    Command::new(BASH)
        .args(["-n", "-c", line])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bash_builtins_and_keywords() -> Vec<String> {
    let out = Command::new(BASH)
        .args(["-c", "compgen -b; compgen -k"])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The argv of every command bash starts for `line`, as `arg\0arg\0\x01` per command.
fn bash_argvs(line: &str, scratch: &std::path::Path) -> Vec<u8> {
    let script = format!(
        "command_not_found_handle() {{ printf '%s\\0' \"$@\"; printf '\\1'; }}\n\
         PATH=/nonexistent-portcullis-test\n{line}\n"
    );
    let out = Command::new(BASH)
        .arg("-c")
        .arg(script)
        .env_clear()
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    out.stdout
}

/// Our answer in the same shape, or `None` if the line is not a straight-line run of external
/// commands with static words (so it is not handed to bash to run).
fn our_argvs(line: &CommandLine, builtins: &[String]) -> Option<Vec<u8>> {
    let skip = CommandFlags::DYNAMIC
        | CommandFlags::GLOB
        | CommandFlags::TILDE
        | CommandFlags::VIA_WRAPPER
        | CommandFlags::ENV_ASSIGN
        | CommandFlags::BACKGROUND
        | CommandFlags::PIPED
        | CommandFlags::SUBSTITUTION
        | CommandFlags::PROCESS_SUBST;
    if !line.is_known() || line.commands.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for c in &line.commands {
        let name = c.argv.first()?;
        if c.flags.intersects(skip)
            || !c.redirections.is_empty()
            || name.contains('/')
            || name.is_empty()
            || builtins.iter().any(|b| b == name)
        {
            return None;
        }
        for a in &c.argv {
            out.extend_from_slice(a.as_bytes());
            out.push(0);
        }
        out.push(1);
    }
    Some(out)
}

/// Words for random straight-line lines: quoting, escapes, ANSI-C, continuations, comments. Only
/// the letters a, b, x and the program name `zzprog`, so no builtin can appear even if we read
/// a line wrongly.
const ARGV_PIECES: &[&str] = &[
    " ", " ", " ", "a", "b", "x", "'a b'", "\"a b\"", "\\ ", "\\'", "\"\\\"\"", "\"\\\\\"", "\\\\",
    "$'\\x41'", "$'\\n'", "$'a\\tb'", "$'\\''", "'", "\"", "\\\n", "\"it's\"", "''", "\"\"", "é",
    "#", "=", "\\#", "\\;", "\t", "a#", " #c\n", ";", "\n", " && ", "\\\"", "\"a\nb\"", "'a\nb'",
    "\"\\a\"", "\\$", "\"\\$\"", "$", "\"$\"", "\\*", "'*'", "\\~", ",", "%", "@", "+",
];

fn random_argv_line(rng: &mut Rng) -> String {
    let mut s = String::from("zzprog");
    for _ in 0..rng.below(10) {
        s.push_str(ARGV_PIECES[rng.below(ARGV_PIECES.len())]);
    }
    s
}

#[test]
fn agrees_with_real_bash_on_syntax_and_argv() {
    if !std::path::Path::new(BASH).exists() {
        panic!("{BASH} is needed for the cross-check");
    }
    let builtins = bash_builtins_and_keywords();
    assert!(builtins.iter().any(|b| b == "eval"), "{builtins:?}");
    let scratch = std::env::temp_dir().join(format!("portcullis-bash-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

    let mut lines: Vec<String> = KNOWN.iter().map(|(l, _, _)| (*l).to_owned()).collect();
    let mut rng = Rng(7);
    let mut random_known = 0;
    while random_known < 400 {
        let l = random_argv_line(&mut rng);
        if classify(&l).is_known() {
            random_known += 1;
            lines.push(l);
        }
    }

    let (mut syntax_checked, mut argv_checked) = (0, 0);
    let mut failures = Vec::new();
    for l in &lines {
        let ours = classify(l);
        assert!(ours.is_known(), "{l:?}");
        if !bash_accepts(l) {
            failures.push(format!(
                "bash -n rejects {l:?} which we classify as {}",
                describe(&ours)
            ));
        }
        syntax_checked += 1;
        // Conditionals and loops run only some of their commands.
        let conditional = ["||", "if", "while", "until", "for ", "!"]
            .iter()
            .any(|k| l.contains(k));
        if conditional {
            continue;
        }
        if let Some(want) = our_argvs(&ours, &builtins) {
            let got = bash_argvs(l, &scratch);
            if got != want {
                failures.push(format!(
                    "{l:?}: bash ran {:?}, we said {:?}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                ));
            }
            argv_checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        syntax_checked > 500 && argv_checked > 150,
        "{syntax_checked} {argv_checked}"
    );
}

#[test]
fn replays_fuzz_seeds_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/command_classify");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let line = classify_bytes(&bytes);
        assert!(line.is_known(), "{}", describe(&line));
        n += 1;
    }
    assert!(n >= 4);
}

#[test]
fn classifies_commands_after_a_variable_change_as_env_assign() {
    for line in [
        "PATH=/tmp; ls",
        "export LD_PRELOAD=/x.so\nls",
        "ls; A=1; rm x",
    ] {
        let got = classify(line);
        let last = got.commands.last().unwrap();
        assert!(last.flags.contains(CommandFlags::ENV_ASSIGN), "{line:?}");
        assert!(last.assignments.is_empty());
    }
    let got = classify("ls; A=1");
    assert!(!got.commands[0].flags.contains(CommandFlags::ENV_ASSIGN));
}
