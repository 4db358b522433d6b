//! A fuzz runner that needs no nightly toolchain: mutates the seeds (and inputs that reached new
//! outcomes) of one target for a time budget, and saves any input that panics.
//!
//! Blind compared with libFuzzer (no coverage feedback: "new" means a new error message shape),
//! but it runs anywhere `cargo build` does. Usage:
//! `stable-fuzz TARGET SECONDS [ARTIFACT_DIR]`, or `stable-fuzz --list`,
//! `stable-fuzz TARGET --replay FILE...` to rerun saved inputs (a libFuzzer crash file too),
//! or `stable-fuzz TARGET --write-seeds DIR` to write the seed corpus libFuzzer starts from.

use std::collections::HashSet;
use std::panic;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn mutate(rng: &mut SmallRng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let n = b.len();
        match rng.gen_range(0..10) {
            0 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] = rng.gen();
            }
            2 if n > 0 => b.truncate(rng.gen_range(0..n)),
            3 => {
                let k = rng.gen_range(1..64);
                let at = rng.gen_range(0..=n);
                let ins: Vec<u8> = (0..k).map(|_| rng.gen()).collect();
                b.splice(at..at, ins);
            }
            4 if n > 0 => {
                let i = rng.gen_range(0..n);
                let j = rng.gen_range(i..=n.min(i + 64));
                b.drain(i..j);
            }
            // An "interesting" integer over a 1/2/4/8-byte field: lengths and counts live there.
            5 if n >= 8 => {
                let w = [1usize, 2, 4, 8][rng.gen_range(0..4)];
                let i = rng.gen_range(0..=n - w);
                let v: u64 = [
                    0,
                    1,
                    0x7f,
                    0x80,
                    0xff,
                    0xffff,
                    0x7fff_ffff,
                    0xffff_ffff,
                    u64::MAX,
                    u64::MAX - 1,
                    1 << 20,
                    1 << 30,
                ][rng.gen_range(0..12)];
                b[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            6 if !pool.is_empty() => {
                // Splice a piece of another input in.
                let o = &pool[rng.gen_range(0..pool.len())];
                if !o.is_empty() {
                    let i = rng.gen_range(0..o.len());
                    let j = rng.gen_range(i..=o.len());
                    let at = rng.gen_range(0..=n);
                    b.splice(at..at, o[i..j].iter().copied());
                }
            }
            7 if n > 0 => {
                let i = rng.gen_range(0..n);
                let j = rng.gen_range(i..=n);
                let copy = b[i..j].to_vec();
                let at = rng.gen_range(0..=n);
                b.splice(at..at, copy);
            }
            8 => b.extend(std::iter::repeat_n(0u8, rng.gen_range(1..100))),
            _ if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] = b[i].wrapping_add(rng.gen_range(1..=4)).wrapping_sub(2);
            }
            _ => b.push(rng.gen()),
        }
    }
    b.truncate(1 << 20);
    b
}

fn outcome_key(r: &std::thread::Result<()>) -> Option<String> {
    match r {
        Ok(()) => None,
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for t in verfs_fuzz::TARGETS {
            println!("{}", t.name);
        }
        return;
    }
    let Some(t) = args.first().and_then(|n| verfs_fuzz::target(n)) else {
        eprintln!(
            "usage: stable-fuzz TARGET SECONDS [ARTIFACT_DIR] | --list | TARGET --replay FILE..."
        );
        std::process::exit(2);
    };
    if args.get(1).map(String::as_str) == Some("--write-seeds") {
        // Seed corpus for libFuzzer: the target's valid encodings, one file each.
        let dir = PathBuf::from(args.get(2).expect("--write-seeds DIR"));
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, s) in (t.seeds)().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).expect("write seed");
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--replay") {
        for f in &args[2..] {
            let data = std::fs::read(f).expect("read input");
            (t.run)(&data);
            println!("{f}: ok");
        }
        return;
    }
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let artifacts = PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| format!("artifacts/{}", t.name)),
    );
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    // Quiet panics: the runner reports them itself.
    panic::set_hook(Box::new(|_| {}));
    let mut pool: Vec<Vec<u8>> = (t.seeds)();
    pool.push(Vec::new());
    let mut seen_lens: HashSet<usize> = pool.iter().map(Vec::len).collect();
    let mut crashes: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut execs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &pool[rng.gen_range(0..pool.len())];
            let input = mutate(&mut rng, base, &pool);
            let r = panic::catch_unwind(|| (t.run)(&input));
            execs += 1;
            if let Some(msg) = outcome_key(&r) {
                // One artifact per crash site, not per message: digits and quoted text vary.
                let key: String = msg
                    .split('"')
                    .step_by(2)
                    .collect::<String>()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(80)
                    .collect();
                if crashes.insert(key.clone()) && crashes.len() <= 50 {
                    std::fs::create_dir_all(&artifacts).expect("artifact dir");
                    let f = artifacts.join(format!("crash-{:016x}", rand::random::<u64>()));
                    std::fs::write(&f, &input).expect("save crash");
                    eprintln!("CRASH {}: {key}\n  saved {}", t.name, f.display());
                }
            } else if pool.len() < 4096 && seen_lens.insert(input.len() % 4096) {
                // No coverage signal here: keep inputs of new lengths to diversify the pool.
                pool.push(input);
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{}: {execs} execs in {el:.0} s ({:.0}/s), seed {seed}, {} distinct crash(es)",
        t.name,
        execs as f64 / el,
        crashes.len()
    );
    if !crashes.is_empty() {
        std::process::exit(1);
    }
}
