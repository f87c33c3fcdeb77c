//! The wrapper programs `policy::command` looks through (`sudo`, `env`, `sh -c`, `xargs`, …): their
//! options, so the wrapped command can be found after them, and what each one runs.

use super::{
    assignment_flags, assignment_of, basename, render_assignment, Arg, CommandFlags, Inherit,
    Parser, Unknown, R,
};

/// Options of a wrapper program, so that the wrapped command can be found after them. An option
/// not listed makes the line unknown: we can't tell where the command starts.
#[derive(Default)]
struct OptSpec {
    /// Short options without an argument.
    flag: &'static str,
    /// Short options with an argument (the rest of the word, or the next word).
    arg: &'static str,
    /// Short options whose optional argument can only be the rest of the word (`xargs -i`).
    opt_arg: &'static str,
    long_flag: &'static [&'static str],
    long_arg: &'static [&'static str],
    /// `-N` (digits) is an option (`nice -10`).
    numeric: bool,
}

const SUDO: OptSpec = OptSpec {
    flag: "AbBeEHiKklnPsSvV",
    arg: "CDghprtTUu",
    opt_arg: "",
    long_flag: &[
        "askpass",
        "background",
        "bell",
        "edit",
        "preserve-env",
        "set-home",
        "login",
        "remove-timestamp",
        "reset-timestamp",
        "list",
        "non-interactive",
        "preserve-groups",
        "shell",
        "stdin",
        "validate",
        "version",
        "help",
    ],
    long_arg: &[
        "close-from",
        "chdir",
        "chroot",
        "group",
        "host",
        "prompt",
        "role",
        "type",
        "command-timeout",
        "other-user",
        "user",
    ],
    numeric: false,
};

const fn short(flag: &'static str, arg: &'static str) -> OptSpec {
    OptSpec {
        flag,
        arg,
        opt_arg: "",
        long_flag: &[],
        long_arg: &[],
        numeric: false,
    }
}

/// Where the operands start in `args`, and the short option letters seen.
fn skip_options(args: &[Arg], spec: &OptSpec) -> R<(usize, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let t = a.text.as_str();
        if !t.starts_with('-') || t == "-" {
            break;
        }
        if !a.is_static() {
            return Err(Unknown::Unsupported(
                "option of a wrapper not known statically",
            ));
        }
        if t == "--" {
            i += 1;
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            if spec.long_flag.contains(&name) {
                i += 1;
            } else if spec.long_arg.contains(&name) {
                i += if inline { 1 } else { 2 };
            } else {
                return Err(Unknown::Unsupported("unrecognised option of a wrapper"));
            }
            continue;
        }
        let cluster = t.as_bytes().get(1..).unwrap_or(&[]);
        if spec.numeric && cluster.iter().all(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        let mut next_is_arg = false;
        for (j, &c) in cluster.iter().enumerate() {
            seen.push(c);
            if spec.flag.as_bytes().contains(&c) {
                continue;
            }
            if spec.arg.as_bytes().contains(&c) {
                next_is_arg = j + 1 == cluster.len();
                break;
            }
            if spec.opt_arg.as_bytes().contains(&c) {
                break;
            }
            return Err(Unknown::Unsupported("unrecognised option of a wrapper"));
        }
        i += if next_is_arg { 2 } else { 1 };
    }
    Ok((i.min(args.len()), seen))
}

/// `NAME=value` as `env` and `sudo` take it before the command.
fn is_env_word(a: &Arg) -> bool {
    a.text.find('=').is_some_and(|eq| eq > 0)
}

impl Parser<'_, '_> {
    /// If the command at `index` (whose words are `argv`) runs another command, lists that one.
    pub(super) fn unwrap(&mut self, argv: &[Arg], index: usize) -> R<()> {
        let Some(first) = argv.first().filter(|a| a.is_static()) else {
            return Ok(());
        };
        let prog = basename(&first.text).to_owned();
        let rest = argv.get(1..).unwrap_or(&[]);
        let dynamic = CommandFlags::DYNAMIC;
        let none = CommandFlags::empty();
        match prog.as_str() {
            "sudo" => {
                let (k, seen) = skip_options(rest, &SUDO)?;
                if seen.contains(&b'e') || rest.iter().any(|a| a.text == "--edit") {
                    return Err(Unknown::Unsupported("sudo -e"));
                }
                self.wrapped_with_env(index, &prog, rest.get(k..).unwrap_or(&[]), none)
            }
            "doas" => {
                let (k, _) = skip_options(rest, &short("nsL", "uC"))?;
                self.wrapped_with_env(index, &prog, rest.get(k..).unwrap_or(&[]), none)
            }
            "env" => {
                let spec = OptSpec {
                    long_flag: &["ignore-environment", "null", "debug"],
                    long_arg: &["unset", "chdir"],
                    ..short("i0v", "uC")
                };
                let (mut k, _) = skip_options(rest, &spec)?;
                // `env -` is `env -i`.
                while rest.get(k).is_some_and(|a| a.text == "-") {
                    k += 1;
                }
                self.wrapped_with_env(index, &prog, rest.get(k..).unwrap_or(&[]), none)
            }
            "nohup" | "builtin" => {
                let (k, _) = skip_options(rest, &OptSpec::default())?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "timeout" => {
                let spec = OptSpec {
                    long_flag: &["preserve-status", "foreground", "verbose"],
                    long_arg: &["signal", "kill-after"],
                    ..short("v", "sk")
                };
                let (k, _) = skip_options(rest, &spec)?;
                // The first operand is the duration.
                self.wrapped(index, &prog, rest.get(k + 1..).unwrap_or(&[]), &[], none)
            }
            "nice" => {
                let spec = OptSpec {
                    long_arg: &["adjustment"],
                    numeric: true,
                    ..short("", "n")
                };
                let (k, _) = skip_options(rest, &spec)?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "ionice" => {
                let (k, _) = skip_options(rest, &short("t", "cn"))?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "stdbuf" => {
                let spec = OptSpec {
                    long_arg: &["input", "output", "error"],
                    ..short("", "ioe")
                };
                let (k, _) = skip_options(rest, &spec)?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "setsid" => {
                let spec = OptSpec {
                    long_flag: &["ctty", "fork", "wait"],
                    ..short("cfw", "")
                };
                let (k, _) = skip_options(rest, &spec)?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "chroot" => {
                let spec = OptSpec {
                    long_flag: &["skip-chdir"],
                    long_arg: &["userspec", "groups"],
                    ..OptSpec::default()
                };
                let (k, _) = skip_options(rest, &spec)?;
                let cmd = rest.get(k + 1..).unwrap_or(&[]);
                if cmd.is_empty() {
                    // Runs `${SHELL} -i`, reading commands from stdin.
                    self.flag_command(index, dynamic);
                }
                self.wrapped(index, &prog, cmd, &[], none)
            }
            "busybox" => match rest.first() {
                Some(a) if !a.text.starts_with('-') => self.wrapped(index, &prog, rest, &[], none),
                _ => Ok(()),
            },
            "exec" => {
                let (k, _) = skip_options(rest, &short("cl", "a"))?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "command" => {
                let (k, _) = skip_options(rest, &short("pvV", ""))?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "time" => {
                let spec = OptSpec {
                    long_flag: &["portability", "verbose", "quiet", "append"],
                    long_arg: &["format", "output"],
                    ..short("pvqa", "fo")
                };
                let (k, _) = skip_options(rest, &spec)?;
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], none)
            }
            "xargs" => {
                let spec = OptSpec {
                    flag: "0prtx",
                    arg: "adEILnPs",
                    opt_arg: "eil",
                    long_flag: &[
                        "null",
                        "interactive",
                        "no-run-if-empty",
                        "verbose",
                        "exit",
                        "open-tty",
                        "show-limits",
                    ],
                    long_arg: &[
                        "arg-file",
                        "delimiter",
                        "eof",
                        "replace",
                        "max-lines",
                        "max-args",
                        "max-procs",
                        "max-chars",
                        "process-slot-var",
                    ],
                    numeric: false,
                };
                let (k, _) = skip_options(rest, &spec)?;
                // Arguments come from stdin.
                self.flag_command(index, dynamic);
                self.wrapped(index, &prog, rest.get(k..).unwrap_or(&[]), &[], dynamic)
            }
            "find" => {
                let mut k = 0;
                while let Some(a) = rest.get(k) {
                    k += 1;
                    if matches!(a.text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                        let cmd = rest.get(k..).unwrap_or(&[]);
                        let len = cmd
                            .iter()
                            .position(|w| w.text == ";" || w.text == "+")
                            .unwrap_or(cmd.len());
                        // `{}` is replaced by file names.
                        self.wrapped(index, &prog, cmd.get(..len).unwrap_or(&[]), &[], dynamic)?;
                        k += len;
                    }
                }
                Ok(())
            }
            "sh" | "bash" | "dash" | "ash" | "rbash" => self.shell(index, &prog, rest),
            "zsh" | "ksh" | "ksh93" | "mksh" | "pdksh" | "yash" | "posh" | "fish" | "csh"
            | "tcsh" => {
                // A different grammar: what it runs can't be read with this one.
                self.flag_command(index, dynamic);
                Ok(())
            }
            "su" => self.su(index, rest),
            "eval" => {
                self.flag_command(index, dynamic);
                let args = match rest.first() {
                    Some(a) if a.is_plain("--") => rest.get(1..).unwrap_or(&[]),
                    _ => rest,
                };
                if args.iter().all(Arg::is_static) {
                    // "The args are read and concatenated together into a single command."
                    let text = args
                        .iter()
                        .map(|a| a.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    self.shell_string(index, &prog, &text)?;
                }
                Ok(())
            }
            // Builtins whose effect on later commands can't be read from the line: code run on a
            // signal or exit, aliases, builtins turned off, the command hash, shell options.
            "trap" | "alias" | "enable" | "hash" | "shopt" => {
                self.flag_command(index, dynamic);
                Ok(())
            }
            // Builtins that set variables (and so what later commands find in PATH, LD_PRELOAD…);
            // `-f` works on functions.
            "export" | "declare" | "typeset" | "readonly" | "local" => {
                self.flag_command(index, CommandFlags::ENV_ASSIGN);
                self.ctx.env_changed = true;
                if rest
                    .iter()
                    .any(|a| a.text.starts_with('-') && a.text.contains('f'))
                {
                    self.flag_command(index, dynamic);
                }
                Ok(())
            }
            "source" | "." => {
                self.flag_command(index, dynamic);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `NAME=value` words then the command (`env`, `sudo`, `doas`).
    fn wrapped_with_env(
        &mut self,
        index: usize,
        prog: &str,
        args: &[Arg],
        flags: CommandFlags,
    ) -> R<()> {
        let n = args.iter().take_while(|a| is_env_word(a)).count();
        let (env, cmd) = args.split_at(n);
        self.wrapped(index, prog, cmd, env, flags)
    }

    /// Lists `argv` as run by the command at `index` (the wrapper `prog`), with its flags and
    /// redirections.
    fn wrapped(
        &mut self,
        index: usize,
        prog: &str,
        argv: &[Arg],
        env: &[Arg],
        flags: CommandFlags,
    ) -> R<()> {
        let Some(outer) = self.ctx.commands.get(index) else {
            return Ok(());
        };
        if argv.is_empty() {
            return Ok(());
        }
        let mut flags = flags.union(outer.flags).union(CommandFlags::VIA_WRAPPER);
        let redirections = outer.redirections.clone();
        let mut assignments = outer.assignments.clone();
        let mut rendered = self
            .ctx
            .rendered_assignments
            .get(index)
            .cloned()
            .unwrap_or_default();
        for a in env {
            assignments.push(assignment_of(a));
            rendered.push(render_assignment(a));
            flags.insert(assignment_flags(a));
        }
        self.emit(
            argv,
            assignments,
            rendered,
            redirections,
            flags,
            Some(prog.to_owned()),
        )
    }

    /// Parses `text` as the command string the command at `index` (`prog`) runs.
    fn shell_string(&mut self, index: usize, prog: &str, text: &str) -> R<()> {
        let Some(outer) = self.ctx.commands.get(index) else {
            return Ok(());
        };
        let inherit = Inherit {
            flags: outer.flags.union(CommandFlags::VIA_WRAPPER),
            wrapper: Some(prog.to_owned()),
            redirections: outer.redirections.clone(),
        };
        self.nested(text, inherit)
    }

    /// `sh`/`bash` options (bash(1), OPTIONS and INVOCATION): `-c STRING` is parsed; a script
    /// file or commands from stdin are dynamic.
    fn shell(&mut self, index: usize, prog: &str, args: &[Arg]) -> R<()> {
        let mut command_mode = false;
        let mut i = 0;
        while let Some(a) = args.get(i) {
            let t = a.text.as_str();
            if !(t.starts_with('-') || t.starts_with('+')) || t == "+" {
                break;
            }
            if !a.is_static() {
                return Err(Unknown::Unsupported("shell option not known statically"));
            }
            i += 1;
            if t == "--" || t == "-" {
                break;
            }
            if let Some(long) = t.strip_prefix("--") {
                match long {
                    "norc" | "noprofile" | "login" | "posix" | "restricted" | "verbose"
                    | "noediting" | "debugger" | "pretty-print" => {}
                    "rcfile" | "init-file" => {
                        // Runs the file's commands.
                        self.flag_command(index, CommandFlags::DYNAMIC);
                        i += 1;
                    }
                    _ => return Err(Unknown::Unsupported("unrecognised shell option")),
                }
                continue;
            }
            for &c in t.as_bytes().get(1..).unwrap_or(&[]) {
                match c {
                    b'c' => command_mode = true,
                    b'o' | b'O' => i += 1,
                    b'a' | b'b' | b'e' | b'f' | b'h' | b'i' | b'k' | b'l' | b'm' | b'n' | b'p'
                    | b'r' | b's' | b't' | b'u' | b'v' | b'x' | b'B' | b'C' | b'E' | b'H'
                    | b'P' | b'T' => {}
                    _ => return Err(Unknown::Unsupported("unrecognised shell option")),
                }
            }
        }
        match args.get(i) {
            Some(a) if command_mode && a.is_static() => self.shell_string(index, prog, &a.text),
            Some(_) if command_mode => {
                self.flag_command(index, CommandFlags::DYNAMIC);
                Ok(())
            }
            None if command_mode => Err(Unknown::Syntax),
            // A script file, or commands read from stdin.
            _ => {
                self.flag_command(index, CommandFlags::DYNAMIC);
                Ok(())
            }
        }
    }

    /// `su [options] [-] [user [args]]` (util-linux): `-c STRING` is run by the user's shell.
    fn su(&mut self, index: usize, args: &[Arg]) -> R<()> {
        let mut command = None;
        let mut i = 0;
        while let Some(a) = args.get(i) {
            i += 1;
            let t = a.text.as_str();
            if !t.starts_with('-') || t == "-" {
                continue;
            }
            if !a.is_static() {
                return Err(Unknown::Unsupported("su option not known statically"));
            }
            if t == "--" {
                break;
            }
            let (name, inline) = match t.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (t, None),
            };
            match name {
                "-c" | "--command" | "-C" | "--session-command" => {
                    command = match inline {
                        Some(_) if name == "-c" || name == "-C" => {
                            return Err(Unknown::Unsupported("su -c= form"))
                        }
                        Some(v) => Some((v.to_owned(), true)),
                        None => {
                            let v = args.get(i);
                            i += 1;
                            v.map(|v| (v.text.clone(), v.is_static()))
                        }
                    };
                }
                "-s"
                | "--shell"
                | "-g"
                | "--group"
                | "-G"
                | "--supp-group"
                | "-w"
                | "--whitelist-environment" => {
                    if name == "-s" || name == "--shell" {
                        self.flag_command(index, CommandFlags::DYNAMIC);
                    }
                    if inline.is_none() {
                        i += 1;
                    }
                }
                "-l" | "--login" | "-m" | "-p" | "--preserve-environment" | "-P" | "--pty" => {}
                _ => return Err(Unknown::Unsupported("unrecognised su option")),
            }
        }
        match command {
            Some((text, true)) => self.shell_string(index, "su", &text),
            _ => {
                self.flag_command(index, CommandFlags::DYNAMIC);
                Ok(())
            }
        }
    }
}
