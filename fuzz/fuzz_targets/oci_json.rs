//! Any bytes as a manifest, an index or an image config: decoding returns Ok or Err
//! without panicking, and whatever decodes re-encodes canonically and decodes again to
//! the same canonical bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pybuild_oci::{ImageConfig, ImageIndex, ImageManifest, canonical_json, from_json};

fn round_trip<T>(what: &'static str, data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    if let Ok(value) = from_json::<T>(what, data) {
        let first = canonical_json(&value);
        let again: T = from_json(what, &first).expect("canonical JSON decodes again");
        assert_eq!(canonical_json(&again), first, "canonical {what} is stable");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ImageManifest>("manifest", data);
    round_trip::<ImageIndex>("index", data);
    round_trip::<ImageConfig>("config", data);
});
