//! The SSH connection relay fed arbitrary payload sequences from both sides, interleaved with
//! transmits, decisions, caller closes, keepalives, read-only SFTP and mask filters on channels
//! and idle flushes of what the mask filters hold (see `proto::ssh::relay_script` for the script
//! format). Panics on a broken flow-control invariant (the window bookkeeping of length-changing
//! filtered output included) or an undecodable payload sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::relay_script::run;

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
