//! The SQL classifier on arbitrary UTF-8: must not panic, and every statement span must lie within
//! the input on character boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::sql::classify;

fuzz_target!(|sql: &str| {
    for statement in classify(sql) {
        assert!(
            sql.get(statement.span.clone()).is_some(),
            "span {:?} out of bounds",
            statement.span
        );
    }
});
