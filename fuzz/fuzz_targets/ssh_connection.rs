//! The SSH connection relay fed arbitrary payload sequences from both sides, interleaved with
//! transmits, decisions, caller closes and keepalives (see `proto::ssh::relay_script` for the
//! script format). Panics on a broken flow-control invariant or an undecodable payload sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::relay_script::run;

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
