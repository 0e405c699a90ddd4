//! `cargo +nightly fuzz run load_package`: any byte string given to the package loader
//! is a model or a typed error — a panic, abort or runaway allocation is a finding.
//! Seed it with saved packages (e.g. the `.ctm` files `contrail quickstart` writes)
//! copied into `fuzz/corpus/load_package/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((booster, manifest)) = contrail_gbdt::package::from_bytes(data, "fuzz.ctm") {
        // Whatever loads must save again and predict without panicking.
        let bytes = contrail_gbdt::package::to_bytes(&booster, &manifest).expect("resave");
        let again = contrail_gbdt::package::from_bytes(&bytes, "resaved.ctm").expect("reload");
        assert_eq!(again.0, booster);
        let x = vec![0.5; booster.n_features()];
        let _ = booster.predict_raw(&x, None);
    }
});
