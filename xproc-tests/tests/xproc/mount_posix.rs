//! POSIX file semantics through a mount that the shell tests do not reach: mmap, files larger
//! than 4 GiB with holes (`SEEK_DATA`/`SEEK_HOLE`), `fallocate` (allocate, punch hole),
//! `copy_file_range` sharing chunks, special files (FIFO, socket, device node), `security.*`
//! xattrs, and `EIO` naming a damaged record.
//!
//! Proves the README "Mount" operations table with real processes: each step runs in a Python
//! process (the syscalls themselves, no emulation) and is checked again through a second mount or
//! the CLI, so what one process did is what another sees.

use std::fs;
use std::path::Path;

use crate::*;

fn py_ok(script: &str, args: &[&Path]) -> String {
    let mut a = vec!["-c".to_owned(), script.to_owned()];
    a.extend(args.iter().map(|p| p.to_string_lossy().into_owned()));
    ext_ok("python3", &a).stdout_str()
}

const MMAP_PY: &str = r#"
import mmap, os, sys
p = sys.argv[1]
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.ftruncate(fd, 3 * 4096 + 100)
m = mmap.mmap(fd, 3 * 4096 + 100, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for i in range(len(m)):
    m[i] = (i * 7) % 251
m[5000:5005] = b"HELLO"
m.flush()
m.close()
os.close(fd)
# Read back through a fresh mapping.
fd = os.open(p, os.O_RDONLY)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
print(len(m), bytes(m[5000:5005]).decode(), m[4096], m[12387])
m.close()
os.close(fd)
"#;

#[test]
fn mount_posix_mmap_read_write() {
    require_fuse!();
    let st = TestStore::new();
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    let out = py_ok(MMAP_PY, &[&m1.join("mapped")]);
    let want_at = |i: usize| (i * 7) % 251;
    assert_eq!(
        out.trim(),
        format!("12388 HELLO {} {}", want_at(4096), want_at(12387)),
        "read back through mmap"
    );
    // Written through the mapping of mount 1, seen byte for byte through mount 2 and the CLI.
    let mut want: Vec<u8> = (0..12388).map(|i| want_at(i) as u8).collect();
    want[5000..5005].copy_from_slice(b"HELLO");
    assert_eq!(fs::read(m2.join("mapped")).unwrap(), want);
    assert_eq!(st.cat("/mapped"), want);
}

const BIG_SPARSE_PY: &str = r#"
import os, sys
p = sys.argv[1]
G = 1 << 30
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"head", 0)
os.pwrite(fd, b"beyond-4GiB" * 1000, 4 * G + 12345)
os.ftruncate(fd, 5 * G)
os.fsync(fd)
os.close(fd)
fd = os.open(p, os.O_RDONLY)
st = os.fstat(fd)
print("size", st.st_size)
print("blocks_small", st.st_blocks * 512 < 64 << 20)
print("read", os.pread(fd, 11, 4 * G + 12345).decode())
print("zeros", os.pread(fd, 8, 2 * G) == b"\0" * 8)
print("data0", os.lseek(fd, 0, os.SEEK_DATA))
hole = os.lseek(fd, 0, os.SEEK_HOLE)
print("hole_after_head", 0 < hole <= 4 * G)
data = os.lseek(fd, hole, os.SEEK_DATA)
print("data_again", hole < data <= 4 * G + 12345)
print("hole_at_end", os.lseek(fd, 4 * G + 12345 + 11000, os.SEEK_HOLE) <= 5 * G)
try:
    os.lseek(fd, 5 * G - 1 - 4096 * 1024 + 4096 * 1024, os.SEEK_DATA)
    print("enxio", False)
except OSError as e:
    print("enxio", e.errno == 6)
os.close(fd)
"#;

#[test]
fn mount_posix_sparse_file_larger_than_4gib() {
    require_fuse!();
    let st = TestStore::new();
    let m = Mount::new(&st, &[]);
    let out = py_ok(BIG_SPARSE_PY, &[&m.join("big")]);
    assert_eq!(
        out,
        "size 5368709120\nblocks_small True\nread beyond-4GiB\nzeros True\ndata0 0\n\
         hole_after_head True\ndata_again True\nhole_at_end True\nenxio True\n"
    );
    // Through the CLI: the same size.
    let stat = st.ok(&["stat", "/big"]).stdout_str();
    assert!(stat.contains("5368709120"), "{stat}");
    // Through another process's view of the store (this test process opens it with the engine;
    // `verfs cat` would stream 5 GiB): the bytes beyond 4 GiB are where they were written, with
    // zeros right around them, the head is intact, and the holes and the tail read as zeros.
    const G: u64 = 1 << 30;
    let store = verfs_engine::store::Store::open(
        st.root(),
        verfs_engine::store::OpenOptions::new("xproc 4 GiB check"),
    )
    .unwrap();
    let ino = store.stat("/big").unwrap().ino;
    let read = |off: u64, len: u32| store.read_at(ino, off, len).unwrap();
    let mut around = vec![0u8; 5];
    around.extend(b"beyond-4GiB".repeat(1000));
    around.extend([0u8; 5]);
    assert!(
        read(4 * G + 12345 - 5, 11010) == around,
        "the data beyond 4 GiB moved or changed"
    );
    assert_eq!(read(0, 8), b"head\0\0\0\0");
    assert_eq!(read(2 * G, 8), [0u8; 8]);
    assert_eq!(read(4 * G - 4, 8), [0u8; 8], "bytes at the 4 GiB boundary");
    assert_eq!(read(5 * G - 8, 8), [0u8; 8]);
    assert!(
        read(5 * G, 8).is_empty(),
        "read past the end returned bytes"
    );
    store.close().unwrap();
}

const FALLOCATE_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
KEEP_SIZE, PUNCH_HOLE, COLLAPSE = 1, 2, 8
def fallocate(fd, mode, off, n):
    if libc.fallocate(fd, mode, off, n) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
p = sys.argv[1]
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, bytes(range(256)) * 4096)          # 1 MiB
fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 100000, 300000)
print("size_after_punch", os.fstat(fd).st_size)
print("punched_zero", os.pread(fd, 300000, 100000) == b"\0" * 300000)
print("kept_before", os.pread(fd, 4, 99996) == (bytes(range(256)) * 4096)[99996:100000])
print("kept_after", os.pread(fd, 4, 400000) == (bytes(range(256)) * 4096)[400000:400004])
fallocate(fd, 0, 0, 3 << 20)
print("size_after_allocate", os.fstat(fd).st_size)
fallocate(fd, KEEP_SIZE, 0, 8 << 20)
print("size_keep", os.fstat(fd).st_size)
try:
    fallocate(fd, COLLAPSE, 0, 4096)
    print("collapse ok")
except OSError as e:
    print("collapse", e.errno == 95)
os.close(fd)
"#;

#[test]
fn mount_posix_fallocate_and_punch_hole() {
    require_fuse!();
    let st = TestStore::new();
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    let out = py_ok(FALLOCATE_PY, &[&m1.join("f")]);
    assert_eq!(
        out,
        "size_after_punch 1048576\npunched_zero True\nkept_before True\nkept_after True\n\
         size_after_allocate 3145728\nsize_keep 3145728\ncollapse True\n"
    );
    let mut want: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    want[100_000..400_000].fill(0);
    want.resize(3 << 20, 0);
    assert_eq!(sha256_file(&m2.join("f")), sha256(&want), "through mount 2");
}

fn stored_bytes(st: &TestStore) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&st.ok(&["status", "--json"]).stdout).unwrap();
    v["stored_bytes"].as_u64().unwrap()
}

#[test]
fn mount_posix_copy_file_range_shares_chunks() {
    require_fuse!();
    let st = TestStore::new();
    let m = Mount::new(&st, &[]);
    let host = st.scratch_dir("host");
    let src = host.join("src");
    write_random_file(&src, seed(), 24 << 20);
    ext_ok("cp", &[&src, &m.join("a")]);
    let before = stored_bytes(&st);
    let out = py_ok(
        r#"
import os, sys
a = os.open(sys.argv[1], os.O_RDONLY)
b = os.open(sys.argv[2], os.O_CREAT | os.O_WRONLY, 0o644)
n, total = 1, 0
while n:
    n = os.copy_file_range(a, b, 8 << 20)
    total += n
os.close(a); os.close(b)
print(total)
"#,
        &[&m.join("a"), &m.join("b")],
    );
    assert_eq!(out.trim(), (24u64 << 20).to_string());
    assert_eq!(sha256_file(&m.join("b")), sha256_file(&src));
    let after = stored_bytes(&st);
    // The copy refers to the same chunks: at most a chunk or two at the edges are new.
    assert!(
        after < before + (2 << 20),
        "stored bytes grew from {before} to {after} for a 24 MiB copy_file_range"
    );
}

#[test]
fn mount_posix_special_files_and_security_xattrs() {
    require_fuse!();
    let st = TestStore::new();
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    py_ok(
        r#"
import os, socket, stat, sys
d = sys.argv[1]
os.umask(0)
os.mkfifo(os.path.join(d, "fifo"), 0o640)
s = socket.socket(socket.AF_UNIX); s.bind(os.path.join(d, "sock")); s.close()
os.mknod(os.path.join(d, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
os.mknod(os.path.join(d, "blk"), 0o600 | stat.S_IFBLK, os.makedev(7, 200))
os.mknod(os.path.join(d, "plain"), 0o644 | stat.S_IFREG)
os.setxattr(os.path.join(d, "plain"), "security.test", b"label")
"#,
        &[m1.path()],
    );
    let stat = |name: &str| {
        ext_ok(
            "stat",
            &["-c", "%F %a %t:%T", &m2.join(name).to_string_lossy()],
        )
        .stdout_str()
        .trim()
        .to_owned()
    };
    assert_eq!(stat("fifo"), "fifo 640 0:0");
    assert!(stat("sock").starts_with("socket "), "{}", stat("sock"));
    assert_eq!(stat("null"), "character special file 666 1:3");
    assert_eq!(stat("blk"), "block special file 600 7:c8");
    assert_eq!(stat("plain"), "regular empty file 644 0:0");
    // Device nodes cannot be opened on a default (nodev) mount ...
    let e = fs::read(m2.join("null")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // ... and work as devices on a `-o dev` mount: the null device reads EOF, takes writes.
    let m3 = Mount::new(&st, &["dev"]);
    assert_eq!(fs::read(m3.join("null")).unwrap(), b"");
    fs::write(m3.join("null"), b"discarded").unwrap();
    // A FIFO made through mount 1 carries data between two processes through mount 2.
    let out = sh_ok(&format!(
        "(echo through-the-fifo > {f} &) ; cat {f}",
        f = shq(m2.join("fifo"))
    ));
    assert_eq!(out.stdout_str(), "through-the-fifo\n");
    let x = ext_ok(
        "getfattr",
        &[
            "-n",
            "security.test",
            "--only-values",
            &m2.join("plain").to_string_lossy(),
        ],
    );
    assert_eq!(x.stdout, b"label");
}

#[test]
fn mount_posix_damaged_record_is_eio() {
    require_fuse!();
    let st = TestStore::new();
    let host = st.scratch_dir("host");
    write_random_file(&host.join("f"), seed(), 3 << 20);
    {
        let m = Mount::new(&st, &[]);
        ext_ok("cp", &[&host.join("f"), &m.join("f")]);
    }
    // Flip one byte in the middle of the pack's data.
    let packs: Vec<_> = fs::read_dir(st.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut bytes = fs::read(&packs[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&packs[0], &bytes).unwrap();
    let m = Mount::new(&st, &[]);
    let out = ext("cat", &[m.join("f")]);
    assert!(!out.success(), "reading a damaged file succeeded");
    assert!(
        out.stderr.contains("Input/output error"),
        "want EIO:\n{}",
        out.describe()
    );
    // The mount's log and fsck both name the damaged record's pack; the log also names the
    // file the read was for (its path in the store).
    let name = packs[0].file_name().unwrap().to_string_lossy().into_owned();
    let log = m.stderr();
    assert!(
        log.contains("I/O error") && log.contains(&name),
        "the mount's log does not name the pack {name}:\n{log}"
    );
    assert!(
        log.contains("file=/f") || log.contains("file=\"/f\""),
        "the mount's log does not name the file /f:\n{log}"
    );
    let fsck = st.run(&["fsck"]);
    assert!(!fsck.success());
    assert!(
        fsck.stdout_str().contains(&name),
        "fsck does not name the pack:\n{}",
        fsck.describe()
    );
}

// A full disk through the mount: the write or the close that cannot be stored fails with
// ENOSPC (never a silent loss), the mount keeps serving, files stored before are intact, the
// failed file's bytes are not kept, and after unmounting fsck is clean.
#[test]
fn mount_posix_enospc() {
    require_fuse!();
    let Some(st) = TestStore::on_tmpfs(12) else {
        return;
    };
    let host = st.scratch_dir("host");
    let keep = write_random_file(&host.join("keep"), seed(), 2 << 20);
    write_random_file(&host.join("big"), seed() ^ 1, 24 << 20);
    let mut m = Mount::new(&st, &[]);
    ext_ok("cp", &[&host.join("keep"), &m.join("keep")]);
    let out = ext("cp", &[&host.join("big"), &m.join("big")]);
    assert!(
        !out.success(),
        "a 24 MiB copy fit into 12 MiB:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("No space left on device"),
        "want ENOSPC:\n{}",
        out.describe()
    );
    // Still serving; the earlier file is whole.
    assert_eq!(sha256_file(&m.join("keep")), keep);
    // The failed file keeps nothing of the failed part: it exists (cp created it) and holds at
    // most what a commit stored before the disk filled, the same through the mount and the CLI at
    // once, readable without error (never ENOSPC on a read), a prefix of what was written.
    let want = fs::read(host.join("big")).unwrap();
    let seen = fs::metadata(m.join("big")).map(|md| md.len());
    let got = fs::read(m.join("big"));
    let cli = st.run(&["cat", "/big"]);
    eprintln!(
        "mount_posix_enospc: after the failed cp the mount shows {seen:?} bytes, reads {:?}, the CLI reads {}",
        got.as_ref().map(|g| g.len()),
        if cli.success() { format!("{} bytes", cli.stdout.len()) } else { cli.stderr.clone() }
    );
    let got = got.unwrap_or_else(|e| panic!("reading the failed file through the mount: {e}"));
    assert!(
        got.len() < want.len() && got[..] == want[..got.len()],
        "the mount shows {} bytes of the failed file: the failed part is kept, or garbage",
        got.len()
    );
    assert!(
        cli.success(),
        "the CLI cannot read the failed file:\n{}",
        cli.describe()
    );
    assert_eq!(
        (seen.unwrap(), got.len()),
        (cli.stdout.len() as u64, cli.stdout.len()),
        "the mount and the CLI disagree about the failed file's size"
    );
    assert!(
        got == cli.stdout,
        "the mount and the CLI read different bytes"
    );
    fs::remove_file(m.join("big")).unwrap();
    // Space comes back: a small file can be written again.
    fs::write(m.join("small"), b"after the full disk").unwrap();
    m.umount();
    st.assert_fsck_clean();
    assert_eq!(sha256(&st.cat("/keep")), keep);
    assert_eq!(st.cat("/small"), b"after the full disk");
}
