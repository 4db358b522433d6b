//! Unit tests of the metadata state and transactions.

use verfs_coordination::txlog::{Lsn, StateMachine};

use super::*;
use crate::error::Error;
use crate::ids::{ChunkId, InodeNo, PackId};

fn commit(
    s: &mut MetaState,
    f: impl FnOnce(&mut Tx<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let payload = {
        let mut tx = Tx::new(s);
        f(&mut tx)?;
        tx.finish()
    };
    s.apply(Lsn(1), &payload).map_err(Error::Internal)?;
    Ok(())
}

#[test]
fn namespace_ops_keep_link_counts() {
    let mut s = MetaState::empty();
    commit(&mut s, |tx| tx.mkdir_p("/a/b", 0o755).map(|_| ())).unwrap();
    let root = s.inode(InodeNo::ROOT).unwrap().unwrap().clone();
    assert_eq!(root.nlink, 3);
    commit(&mut s, |tx| {
        let at = tx.entry("/a/f")?;
        tx.write_file(
            &at,
            "/a/f",
            Inode::new(InodeNo(0), FileKind::File, 0o644),
            vec![],
        )
        .map(|_| ())
    })
    .unwrap();
    commit(&mut s, |tx| {
        let ino = tx.resolve("/a/f")?;
        let to = tx.entry("/a/b/g")?;
        tx.link(ino, "/a/f", &to, "/a/b/g")
    })
    .unwrap();
    let f = s
        .lookup(s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap(), b"f")
        .unwrap()
        .unwrap();
    assert_eq!(s.inode(f).unwrap().unwrap().nlink, 2);
    // rmdir of a non-empty dir fails, mkdir of an existing name fails.
    let err = commit(&mut s, |tx| {
        let at = tx.entry("/a/b")?;
        tx.remove(&at, "/a/b", true)
    });
    assert!(matches!(err, Err(Error::NotEmpty { .. })));
    let err = commit(&mut s, |tx| {
        let at = tx.entry("/a")?;
        tx.create(&at, "/a", Inode::new(InodeNo(0), FileKind::Dir, 0o755))
            .map(|_| ())
    });
    assert!(matches!(err, Err(Error::Exists { .. })));
    // Moving a directory into itself fails.
    let err = commit(&mut s, |tx| {
        let from = tx.entry("/a")?;
        let to = tx.entry("/a/b/a")?;
        tx.rename(&from, "/a", &to, "/a/b/a")
    });
    let err = err.unwrap_err();
    // rename(2) answers EINVAL (the fs crate maps InvalidPath so).
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    // ... and so does exchanging it with an entry of its own subtree (renameat2 EXCHANGE).
    let err = commit(&mut s, |tx| {
        let a = tx.entry("/a")?;
        let b = tx.entry("/a/b")?;
        tx.exchange(&a, "/a", &b, "/a/b")
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    commit(&mut s, |tx| {
        let at = tx.entry("/a")?;
        tx.remove_tree(&at, "/a")
    })
    .unwrap();
    assert_eq!(s.inode_count() as usize, 1);
    assert_eq!(s.inode(InodeNo::ROOT).unwrap().unwrap().nlink, 2);
}

#[test]
fn checkpoint_roundtrip_preserves_state() {
    let mut s = MetaState::empty();
    commit(&mut s, |tx| {
        tx.mkdir_p("/x/y", 0o700)?;
        let at = tx.entry("/x/y/z")?;
        let id = ChunkId(42);
        tx.add_chunk(
            id,
            ChunkEntry {
                pack: PackId(7),
                raw_len: 10,
            },
        )?;
        tx.write_file(
            &at,
            "/x/y/z",
            Inode::new(InodeNo(0), FileKind::File, 0o600),
            vec![Extent {
                file_off: 0,
                chunk: id,
                chunk_off: 0,
                len: 10,
            }],
        )
        .map(|_| ())
    })
    .unwrap();
    let bytes = s.encode_checkpoint();
    let t = MetaState::decode_checkpoint(&bytes).unwrap();
    assert_eq!(t.to_ops(), s.to_ops());
    assert_eq!(t.next_ino, s.next_ino);
}

#[test]
fn path_of_finds_a_path_of_any_named_inode() {
    let mut s = MetaState::empty();
    commit(&mut s, |tx| tx.mkdir_p("/a/b", 0o755).map(|_| ())).unwrap();
    let b = s
        .lookup(s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap(), b"b")
        .unwrap()
        .unwrap();
    assert_eq!(s.path_of(b).as_deref(), Some(&b"/a/b"[..]));
    assert_eq!(s.path_of(InodeNo::ROOT).as_deref(), Some(&b"/"[..]));
    assert_eq!(s.path_of(InodeNo(999_999)), None);
}
