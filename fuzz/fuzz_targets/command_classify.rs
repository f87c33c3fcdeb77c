//! The shell command classifier on arbitrary bytes: must not panic, must stay within its caps,
//! and every command it lists must be consistent (a wrapped command names its wrapper).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::command::{classify_bytes, CommandFlags, MAX_COMMANDS};

fuzz_target!(|line: &[u8]| {
    let classified = classify_bytes(line);
    assert!(classified.commands.len() <= MAX_COMMANDS);
    for c in &classified.commands {
        assert_eq!(
            c.flags.contains(CommandFlags::VIA_WRAPPER),
            c.wrapper.is_some()
        );
        assert!(!c.argv.is_empty() || c.program.is_empty());
    }
});
