#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (verfs_fuzz::target("lock_table").expect("registered").run)(data)
});
