//! The model-set (and calibration) file parser: any text is a valid set or a `ModelError`; a
//! valid set hashes, and serialises back to a set that parses to the same hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecheck::models::ModelSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = ModelSet::parse(text, "fuzz") {
        let hash = set.hash();
        let again = serde_json::to_string(&set).expect("a parsed set serialises");
        let reparsed = ModelSet::parse(&again, "fuzz").expect("a serialised set parses");
        assert_eq!(reparsed.hash(), hash);
    }
});
