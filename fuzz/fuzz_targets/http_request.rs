//! HTTP/1.1 request heads and bodies: a stream of pipelined requests, parsed one at a time with
//! small limits so the limit paths are reached quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::parse::{parse_request, wants_continue, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 512,
        max_headers: 8,
        max_body: 256,
    };
    let mut buf = data;
    loop {
        let _ = wants_continue(buf, &limits);
        match parse_request(buf, &limits) {
            Ok(Some((request, used))) => {
                assert!(used > 0 && used <= buf.len());
                assert!(request.headers.len() <= limits.max_headers);
                assert!(request.body.len() <= limits.max_body);
                assert!(request.path.starts_with('/') && !request.path.contains('\0'));
                let _ = (request.form(), request.cookie("a"), request.bearer_token());
                buf = &buf[used..];
            }
            Ok(None) => {
                assert!(buf.len() < limits.max_head.saturating_add(limits.max_body));
                break;
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 413 | 431 | 501 | 505));
                break;
            }
        }
    }
});
