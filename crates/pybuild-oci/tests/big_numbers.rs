//! Regression (fuzzing, `oci_json`): a config whose unknown field holds an integer
//! beyond 64 bits must decode, and its canonical encoding must be stable: the value is
//! normalized once (to the nearest double, as Go's and serde_json's decoders do) and
//! never drifts again on later re-encodings.

use pybuild_oci::{ImageConfig, canonical_json, from_json};

#[test]
fn config_extra_field_with_a_huge_integer_is_stable_after_one_pass() {
    let data = br#"{"c0onfigarchirecgg":4444444444444444400000000000000000000000000000001879	}"#;
    let value: ImageConfig = from_json("config", data).expect("decodes");
    let first = canonical_json(&value);
    let again: ImageConfig = from_json("config", &first).expect("decodes again");
    let second = canonical_json(&again);
    assert_eq!(
        String::from_utf8_lossy(&second),
        String::from_utf8_lossy(&first)
    );
}
