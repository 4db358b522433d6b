//! Eight processes overwrite one path fifteen times each while a ninth reads it.
//!
//! Proves the content rule of docs/DESIGN.md "Consistency model": a file written and closed is seen
//! whole by any process that opens it afterwards, never a mix of two writers' blocks (a put
//! replaces the name atomically: "the name points at the old inode or the new one, never at a
//! mix", layout 6.3 step 2). Also that reads are never stale [LOG-9]: once the reader has seen
//! round r of writer w, it never sees an older round of w again, and the final content is the
//! last round of some writer (the globally last commit is some writer's last one).

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use crate::*;

const WRITERS: usize = 8;
const ROUNDS: usize = 15;
const SIZE: usize = 300 << 10;

fn tag(w: usize, r: usize) -> String {
    format!("w{w:02}-r{r:03}")
}

#[test]
fn concurrent_overwrites_of_one_path_are_never_mixed() {
    let _g = heavy();
    let st = TestStore::new();
    let verfs = verfs_bin();
    let root = st.root().to_str().unwrap().to_owned();
    let local = st.scratch_dir("versions");
    // sha256 -> (writer, round); writer 99 round 0 is the initial version.
    let mut versions: HashMap<String, (usize, usize)> = HashMap::new();
    let mut make = |w: usize, r: usize| {
        // Sizes differ a little, so a truncated or extended read is caught too.
        let data = tagged_content(&tag(w, r), (w * 1000 + r) as u64, SIZE + w * 4096 + r * 17);
        let p = local.join(tag(w, r));
        fs::write(&p, &data).unwrap();
        versions.insert(sha256(&data), (w, r));
        p
    };
    let initial = make(99, 0);
    st.ok(&["put".as_ref(), initial.as_os_str(), "/same".as_ref()]);

    let mut pool = Pool::new(st.scratch(), agent());
    let base = vec![
        verfs.to_str().unwrap().to_owned(),
        "-s".into(),
        root.clone(),
    ];
    let mut waiting = Vec::new();
    for w in 0..WRITERS {
        let script: Vec<Vec<String>> = (0..ROUNDS)
            .map(|r| {
                let p = make(w, r);
                let mut c = base.clone();
                c.extend(["put".into(), p.to_str().unwrap().into(), "/same".into()]);
                c
            })
            .collect();
        let sp = pool.dir().join(format!("script-{w}.json"));
        fs::write(&sp, serde_json::to_vec(&script).unwrap()).unwrap();
        let go = pool.go_file();
        waiting.push(pool.spawn_agent(
            &format!("writer{w}"),
            &[
                "seq".as_ref(),
                "--go".as_ref(),
                go.as_os_str(),
                "--script".as_ref(),
                sp.as_os_str(),
            ],
        ));
    }
    let stop = pool.dir().join("stop-reader");
    let kept = st.scratch_dir("reads");
    let mut cat = base.clone();
    cat.extend(["cat".into(), "/same".into()]);
    let rsp = pool.dir().join("script-reader.json");
    fs::write(&rsp, serde_json::to_vec(&vec![cat]).unwrap()).unwrap();
    let go = pool.go_file();
    let reader = pool.spawn_agent(
        "reader",
        &[
            "seq".as_ref(),
            "--go".as_ref(),
            go.as_os_str(),
            "--script".as_ref(),
            rsp.as_os_str(),
            "--repeat-until".as_ref(),
            stop.as_os_str(),
            "--keep-stdout".as_ref(),
            kept.as_os_str(),
        ],
    );
    waiting.push(reader);
    pool.go(&waiting);
    for w in 0..WRITERS {
        let f = pool.wait(w, Duration::from_secs(240));
        assert!(f.status.success(), "{}", f.describe());
        let cmds: Vec<_> = f.results.iter().filter(|v| v["event"] == "cmd").collect();
        assert_eq!(cmds.len(), ROUNDS, "{}", f.describe());
        for c in cmds {
            assert_eq!(c["code"], 0, "[{}] put failed: {c}", f.name);
        }
    }
    fs::write(&stop, b"").unwrap();
    let f = pool.wait(reader, Duration::from_secs(60));
    assert!(f.status.success(), "{}", f.describe());

    // Every read saw one whole version, and never an older round of a writer than before.
    let reads: Vec<_> = f.results.iter().filter(|v| v["event"] == "cmd").collect();
    let mut newest_seen: HashMap<usize, usize> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    for c in &reads {
        assert_eq!(c["code"], 0, "reader's cat failed: {c}");
        let sha = c["stdout_sha256"].as_str().unwrap();
        let Some(&(w, r)) = versions.get(sha) else {
            let data = fs::read(kept.join(c["i"].to_string())).unwrap();
            panic!(
                "read {} is not one whole version: {}",
                c["i"],
                describe_tags(&data)
            );
        };
        distinct.insert((w, r));
        let seen = newest_seen.entry(w).or_insert(r);
        assert!(
            r >= *seen,
            "stale read {}: {} after having seen round {seen}",
            c["i"],
            tag(w, r)
        );
        *seen = r;
    }
    eprintln!(
        "same_path: {} reads saw {} distinct versions",
        reads.len(),
        distinct.len()
    );
    assert!(
        reads.len() >= 2,
        "the reader ran only {} times",
        reads.len()
    );

    let last = st.cat("/same");
    let Some(&(w, r)) = versions.get(&sha256(&last)) else {
        panic!(
            "final content is not one whole version: {}",
            describe_tags(&last)
        );
    };
    assert_eq!(
        r,
        ROUNDS - 1,
        "final content {} is not a writer's last round",
        tag(w, r)
    );
    assert_ne!(w, 99);
    st.assert_fsck_clean();
}
