//! Eight processes race for one name.
//!
//! Proves docs/DESIGN.md "Consistency model": namespace changes are serializable and "two processes
//! racing to create one name: exactly one wins, the other gets EEXIST"; a rename is decided under
//! the log lock (layout 6.2 step 3: the closure validates against the up-to-date state), so of
//! eight processes moving one source exactly one succeeds and the entry exists exactly once.

use std::time::Duration;

use crate::*;

const RACERS: usize = 8;
const ROUNDS: usize = 4;

/// Start `args_of(i)` for every racer at the same instant; return their outputs.
fn race(st: &TestStore, args_of: impl Fn(usize) -> Vec<String>) -> Vec<Finished> {
    let mut pool = Pool::new(st.scratch(), agent());
    let root = st.root().to_str().unwrap().to_owned();
    let waiting: Vec<usize> = (0..RACERS)
        .map(|i| {
            let mut args = vec!["-s".to_owned(), root.clone()];
            args.extend(args_of(i));
            pool.spawn_at_go(&format!("racer{i}"), &verfs_bin(), &args)
        })
        .collect();
    pool.go(&waiting);
    pool.wait_all(Duration::from_secs(120))
}

fn winners(outs: &[Finished], loser_msg: &str) -> Vec<usize> {
    let mut won = Vec::new();
    for (i, f) in outs.iter().enumerate() {
        if f.status.success() {
            won.push(i);
        } else {
            assert_eq!(f.status.code(), Some(1), "{}", f.describe());
            assert!(
                f.stderr.contains(loser_msg),
                "loser without {loser_msg:?}:\n{}",
                f.describe()
            );
        }
    }
    won
}

#[test]
fn mkdir_race_has_exactly_one_winner() {
    let _g = heavy();
    let st = TestStore::new();
    for round in 0..ROUNDS {
        let name = format!("m{round}");
        let outs = race(&st, |_| vec!["mkdir".into(), format!("/{name}")]);
        let won = winners(&outs, "File exists");
        assert_eq!(
            won.len(),
            1,
            "round {round}: winners {won:?}\n{}",
            describe_all(&outs)
        );
        let n = st.ls("/").iter().filter(|e| **e == name).count();
        assert_eq!(n, 1, "/{name} listed {n} times");
    }
    assert_eq!(st.ls("/").len(), ROUNDS);
    st.assert_fsck_clean();
}

#[test]
fn rename_race_has_exactly_one_winner() {
    let _g = heavy();
    let st = TestStore::new();
    let local = st.scratch().join("src-file");
    for round in 0..ROUNDS {
        let dir = format!("/mv{round}");
        let sha = write_random_file(&local, round as u64, 100_000);
        st.ok(&["mkdir", &dir]);
        st.ok(&[
            "put".as_ref(),
            local.as_os_str(),
            format!("{dir}/src").as_ref(),
        ]);
        let outs = race(&st, |i| {
            vec!["mv".into(), format!("{dir}/src"), format!("{dir}/dst-{i}")]
        });
        let won = winners(&outs, "No such file or directory");
        assert_eq!(
            won.len(),
            1,
            "round {round}: winners {won:?}\n{}",
            describe_all(&outs)
        );
        assert_eq!(
            st.ls(&dir),
            vec![format!("dst-{}", won[0])],
            "entries of {dir}"
        );
        assert_eq!(sha256(&st.cat(&format!("{dir}/dst-{}", won[0]))), sha);
    }
    st.assert_fsck_clean();
}

fn describe_all(outs: &[Finished]) -> String {
    outs.iter()
        .map(Finished::describe)
        .collect::<Vec<_>>()
        .join("\n")
}
