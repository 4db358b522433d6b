#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (verfs_fuzz::target("metapage").expect("registered").run)(data)
});
