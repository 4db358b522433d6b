//! Eight processes put 1600 files into one store at once.
//!
//! Proves: namespace changes of concurrent processes are serializable and none is lost
//! (docs/DESIGN.md "Consistency model"; the log commit protocol [LOG-2], [LOG-9], [FENCE-1] never
//! refusing a live writer); what a finished command wrote is read back whole by other processes
//! (close-to-open); pack data is durable and indexed before it is referenced [STORE-1]; two
//! processes storing the same new chunk at once is harmless (docs/DESIGN.md "Data plane": some files
//! are identical across writers); and `fsck` finds every invariant intact (docs/DESIGN.md
//! "Invariants").

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::*;

const WRITERS: usize = 8;
const FILES: usize = 200;
/// Writers that use one `verfs put` per file instead of one put of their directory.
const ONE_BY_ONE: [usize; 2] = [6, 7];

#[test]
fn eight_writers_put_1600_files_and_all_read_back() {
    let _g = heavy();
    let seed = seed();
    eprintln!("put_many seed: {seed} (XPROC_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let st = TestStore::new();
    let verfs = verfs_bin();
    let root = st.root().to_str().unwrap().to_owned();

    // Local trees: w<i>/f<j>, some multi-chunk, every 25th identical across all writers.
    let mut expect: BTreeMap<String, String> = BTreeMap::new();
    let local = st.scratch_dir("local");
    for i in 0..WRITERS {
        let d = local.join(format!("w{i}"));
        fs::create_dir_all(&d).unwrap();
        for j in 0..FILES {
            let (fseed, len) = if j % 25 == 0 {
                (0xD00D_0000 + j as u64, 150_000)
            } else if j % 50 == 7 {
                (rng.gen(), rng.gen_range(200_000..400_000))
            } else {
                (rng.gen(), rng.gen_range(0..20_000))
            };
            let sha = write_random_file(&d.join(format!("f{j:03}")), fseed, len);
            expect.insert(format!("/w{i}/f{j:03}"), sha);
        }
    }

    let mut pool = Pool::new(st.scratch(), agent());
    let mut waiting = Vec::new();
    for i in 0..WRITERS {
        let src = local.join(format!("w{i}"));
        let mut script: Vec<Vec<String>> = Vec::new();
        let base = [
            verfs.to_str().unwrap().to_owned(),
            "-s".into(),
            root.clone(),
        ];
        let cmd = |rest: &[String]| {
            base.iter()
                .cloned()
                .chain(rest.iter().cloned())
                .collect::<Vec<_>>()
        };
        if ONE_BY_ONE.contains(&i) {
            script.push(cmd(&["mkdir".into(), format!("/w{i}")]));
            for j in 0..FILES {
                let f = src.join(format!("f{j:03}"));
                script.push(cmd(&[
                    "put".into(),
                    f.to_str().unwrap().into(),
                    format!("/w{i}/f{j:03}"),
                ]));
            }
        } else {
            script.push(cmd(&[
                "put".into(),
                src.to_str().unwrap().into(),
                format!("/w{i}"),
            ]));
        }
        let script_path = pool.dir().join(format!("script-{i}.json"));
        fs::write(&script_path, serde_json::to_vec(&script).unwrap()).unwrap();
        let go = pool.go_file();
        waiting.push(pool.spawn_agent(
            &format!("writer{i}"),
            &[
                "seq".as_ref(),
                "--go".as_ref(),
                go.as_os_str(),
                "--script".as_ref(),
                script_path.as_os_str(),
            ],
        ));
    }
    pool.go(&waiting);
    for f in pool.wait_all(Duration::from_secs(240)) {
        assert!(f.status.success(), "{}", f.describe());
        let cmds: Vec<_> = f.results.iter().filter(|v| v["event"] == "cmd").collect();
        assert!(!cmds.is_empty(), "{}", f.describe());
        for c in cmds {
            assert_eq!(c["code"], 0, "[{}] a command failed: {c}", f.name);
        }
    }

    // Every file back, through `get` of each tree, with nothing extra.
    let out = st.scratch_dir("out");
    let mut got = 0;
    for i in 0..WRITERS {
        let dst = out.join(format!("w{i}"));
        st.ok(&["get".as_ref(), format!("/w{i}").as_ref(), dst.as_os_str()]);
        let names: Vec<PathBuf> = fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names.len(), FILES, "/w{i} holds {} entries", names.len());
        for p in names {
            let key = format!("/w{i}/{}", p.file_name().unwrap().to_string_lossy());
            let want = expect
                .get(&key)
                .unwrap_or_else(|| panic!("unexpected file {key}"));
            assert_eq!(&sha256_file(&p), want, "content of {key}");
            got += 1;
        }
    }
    assert_eq!(got, WRITERS * FILES);

    // A sample through `cat` as well (a different read path: one file, to stdout).
    let keys: Vec<&String> = expect.keys().collect();
    for _ in 0..16 {
        let k = keys[rng.gen_range(0..keys.len())];
        assert_eq!(&sha256(&st.cat(k)), &expect[k], "cat {k}");
    }
    st.assert_fsck_clean();
}
