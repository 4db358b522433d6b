//! The page directory: checked, cached page reads ([`PageStore`]) and new page files
//! ([`PageWriter`]). Layout and durability rules: `data-layout.md` 5.7a.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use verfs_coordination::fsutil;

use super::page::{page_len_at, Page, PagePtr, MAX_PAGE_LEN, PAGE_MAGIC};
use super::{TreeError, FILE_HEADER_LEN, FILE_MAGIC, FILE_VERSION};

/// Open page files kept at most; past this some handles are closed (reads reopen them).
const MAX_OPEN_FILES: usize = 256;
/// A writer hands the kernel its pages in writes of about this size.
const WRITE_BUFFER: usize = 1 << 20;

/// Counters of a [`PageStore`] since it was opened (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Pages asked for by any operation (cache hits included).
    pub page_reads: u64,
    /// Of those, pages read from a file (cache misses), each checked.
    pub disk_reads: u64,
}

/// What [`PageStore::verify_file`] found in one page file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCheck {
    /// Pages whose structure and crc hold.
    pub pages: u64,
    /// Where damage starts (0 for the file header), and why; the walk resumes at the next
    /// offset where a valid page starts.
    pub damaged: Vec<(u64, String)>,
}

/// One directory of page files, shared by all threads (`Send + Sync`). Every page read from a
/// file is checked (crc, structure, content hash equal to the pointer's) before it is cached or
/// returned.
pub struct PageStore {
    dir: PathBuf,
    cache: moka::sync::Cache<(u64, u64), Arc<Page>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    page_reads: AtomicU64,
    disk_reads: AtomicU64,
    /// The next write of pages by this process rebuilds the trees (`meta::state::compact`).
    rebuild: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStore").field("dir", &self.dir).finish()
    }
}

impl PageStore {
    /// Open (creating it if missing) the page directory `dir`, with a cache of decoded pages of
    /// about `cache_bytes`. Fails only if the directory cannot be created; creates nothing else.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<PageStore, TreeError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| TreeError::io(dir, e))?;
            fsutil::fsync_dir(&fsutil::parent_of(dir)).map_err(|e| TreeError::io(dir, e))?;
        }
        let cache = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_, p: &Arc<Page>| {
                // The bytes plus the slot table and the Arc/Vec headers.
                (p.bytes().len() + 16 * p.len() + 96).min(u32::MAX as usize) as u32
            })
            .build();
        Ok(PageStore {
            dir: dir.to_path_buf(),
            cache,
            files: Mutex::new(HashMap::new()),
            page_reads: AtomicU64::new(0),
            disk_reads: AtomicU64::new(0),
            rebuild: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/{id:016x}.mpg`.
    pub fn file_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.mpg"))
    }

    fn temp_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.mpg.tmp"))
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            page_reads: self.page_reads.load(Ordering::Relaxed),
            disk_reads: self.disk_reads.load(Ordering::Relaxed),
        }
    }

    /// The ids of the published page files (names `{16 lowercase hex}.mpg`), sorted. Temp files
    /// of writers (`.mpg.tmp`) are not listed.
    pub fn list_files(&self) -> Result<Vec<u64>, TreeError> {
        let rd = fs::read_dir(&self.dir).map_err(|e| TreeError::io(&self.dir, e))?;
        let mut ids = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| TreeError::io(&self.dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = parse_file_name(name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Ask that the next write of a state's pages by this process rebuild its trees from
    /// scratch (compaction, `meta::state::compact`).
    pub fn request_rebuild(&self) {
        self.rebuild.store(true, Ordering::SeqCst);
    }

    /// Was a rebuild requested? Clears the request.
    pub fn take_rebuild_request(&self) -> bool {
        self.rebuild.swap(false, Ordering::SeqCst)
    }

    /// Read the page `ptr` names, from the cache or from its file (then checked). `Corrupt`
    /// names the file and the page's offset.
    pub fn read_page(&self, ptr: &PagePtr) -> Result<Arc<Page>, TreeError> {
        self.page_reads.fetch_add(1, Ordering::Relaxed);
        let path = || self.file_path(ptr.file);
        ptr.check().map_err(|reason| TreeError::Corrupt {
            path: path(),
            offset: ptr.offset,
            reason,
        })?;
        if let Some(p) = self.cache.get(&(ptr.file, ptr.offset)) {
            check_matches(&p, ptr).map_err(|reason| TreeError::Corrupt {
                path: path(),
                offset: ptr.offset,
                reason,
            })?;
            return Ok(p);
        }
        self.disk_reads.fetch_add(1, Ordering::Relaxed);
        let file = self.handle(ptr.file)?;
        let page = read_checked(&file, &path(), ptr)?;
        let page = Arc::new(page);
        self.cache.insert((ptr.file, ptr.offset), page.clone());
        Ok(page)
    }

    /// The open handle of published file `id`, opening it (and checking its header) if needed.
    fn handle(&self, id: u64) -> Result<Arc<File>, TreeError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.get(&id) {
            return Ok(f.clone());
        }
        let path = self.file_path(id);
        let f = File::open(&path).map_err(|e| TreeError::io(&path, e))?;
        let mut h = [0u8; FILE_HEADER_LEN];
        match f.read_exact_at(&mut h, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(TreeError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("file is shorter than its {FILE_HEADER_LEN}-byte header"),
                })
            }
            Err(e) => return Err(TreeError::io(&path, e)),
        }
        check_file_header(&h, id).map_err(|reason| TreeError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if files.len() >= MAX_OPEN_FILES {
            // Which ones does not matter for correctness: a dropped handle is reopened on demand.
            let drop: Vec<u64> = files.keys().take(MAX_OPEN_FILES / 4).copied().collect();
            for k in drop {
                files.remove(&k);
            }
        }
        let f = Arc::new(f);
        files.insert(id, f.clone());
        Ok(f)
    }

    /// Walk every page of published file `id` by its own structure and crc (fsck, scrub):
    /// which pages hold and where damage starts. Reads the file once, in 1 MiB windows; changes
    /// nothing. Content hashes are not checked here (they live in the parents: see
    /// [`PageStore::visit_pages`] and [`PageStore::read_page`]).
    pub fn verify_file(&self, id: u64) -> Result<FileCheck, TreeError> {
        let path = self.file_path(id);
        let f = File::open(&path).map_err(|e| TreeError::io(&path, e))?;
        let size = f.metadata().map_err(|e| TreeError::io(&path, e))?.len();
        let mut win = Window {
            file: &f,
            size,
            start: 0,
            buf: Vec::new(),
        };
        let mut check = FileCheck::default();
        let header = win
            .get(0, FILE_HEADER_LEN)
            .map_err(|e| TreeError::io(&path, e))?;
        let header_ok = match <&[u8; FILE_HEADER_LEN]>::try_from(header) {
            Ok(h) => check_file_header(h, id),
            Err(_) => Err(format!(
                "file of {size} bytes is shorter than its {FILE_HEADER_LEN}-byte header"
            )),
        };
        if let Err(r) = header_ok {
            check.damaged.push((0, r));
        }
        let mut pos = FILE_HEADER_LEN as u64;
        while pos < size {
            let avail = win
                .get(pos, MAX_PAGE_LEN)
                .map_err(|e| TreeError::io(&path, e))?;
            let reason = match page_at(avail) {
                Ok(n) => {
                    check.pages += 1;
                    pos += n as u64;
                    continue;
                }
                Err(r) => r,
            };
            check.damaged.push((pos, reason));
            // Resynchronise on the next offset where a whole valid page starts.
            let mut q = pos + 1;
            let mut found = None;
            'search: while q < size {
                let avail = win
                    .get(q, MAX_PAGE_LEN)
                    .map_err(|e| TreeError::io(&path, e))?;
                let Some(i) = avail.windows(4).position(|w| w == PAGE_MAGIC) else {
                    q += avail.len().saturating_sub(3).max(1) as u64;
                    continue;
                };
                let cand = q + i as u64;
                let avail = win
                    .get(cand, MAX_PAGE_LEN)
                    .map_err(|e| TreeError::io(&path, e))?;
                if page_at(avail).is_ok() {
                    found = Some(cand);
                    break 'search;
                }
                q = cand + 1;
            }
            match found {
                Some(c) => pos = c,
                None => break,
            }
        }
        Ok(check)
    }
}

/// A valid page at the start of `avail`: its length.
fn page_at(avail: &[u8]) -> Result<usize, String> {
    match page_len_at(avail)? {
        None => Err("file ends inside a page (truncated)".into()),
        Some(n) => {
            let bytes = avail.get(..n).ok_or("file ends inside a page")?;
            Page::decode(bytes.to_vec()).map(|_| n)
        }
    }
}

/// A read window over a file, refilled as the walk moves on.
struct Window<'a> {
    file: &'a File,
    size: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// Up to `want` bytes at `pos` (fewer at the end of the file).
    fn get(&mut self, pos: u64, want: usize) -> io::Result<&[u8]> {
        let end = (pos + want as u64).min(self.size);
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let len = (self.size - pos.min(self.size)).min(want.max(WRITE_BUFFER) as u64);
            self.buf.resize(len as usize, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (end - self.start) as usize;
        Ok(self.buf.get(from..to).unwrap_or(&[]))
    }
}

fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".mpg")?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|&id| id != 0)
}

fn file_header(id: u64) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..8].copy_from_slice(FILE_MAGIC);
    h[8..12].copy_from_slice(&FILE_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check_file_header(h: &[u8; FILE_HEADER_LEN], id: u64) -> Result<(), String> {
    if &h[0..8] != FILE_MAGIC {
        return Err(format!("file magic is {:02x?}, not VERFSMP3", &h[0..8]));
    }
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if crc != crc32fast::hash(&h[..24]) {
        return Err("file header crc mismatch".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FILE_VERSION {
        return Err(format!(
            "page file format version {version}, but this verfs reads version {FILE_VERSION}"
        ));
    }
    if h[12..16] != [0; 4] || h[28..32] != [0; 4] {
        return Err("file header reserved bytes are not zero".into());
    }
    let hid = u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]);
    if hid != id {
        return Err(format!("file header names file {hid:016x}, not {id:016x}"));
    }
    Ok(())
}

/// A cached page answers a pointer only if it is the page the pointer means.
fn check_matches(p: &Page, ptr: &PagePtr) -> Result<(), String> {
    if p.bytes().len() != ptr.len as usize || p.hash() != ptr.hash {
        return Err(format!(
            "pointer expects a page of {} bytes with hash {:032x}, the page there has {} bytes and hash {:032x}",
            ptr.len,
            ptr.hash,
            p.bytes().len(),
            p.hash()
        ));
    }
    Ok(())
}

/// Read and check the page `ptr` names from `file` (at `path`).
fn read_checked(file: &File, path: &Path, ptr: &PagePtr) -> Result<Page, TreeError> {
    let corrupt = |reason: String| TreeError::Corrupt {
        path: path.to_path_buf(),
        offset: ptr.offset,
        reason,
    };
    // ptr.check() bounded len, so this allocation is at most MAX_PAGE_LEN.
    let mut buf = vec![0u8; ptr.len as usize];
    match file.read_exact_at(&mut buf, ptr.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(corrupt(format!(
                "file ends before the end of the {}-byte page the pointer names (truncated?)",
                ptr.len
            )))
        }
        Err(e) => return Err(TreeError::io(path, e)),
    }
    let page = Page::decode(buf).map_err(corrupt)?;
    check_matches(&page, ptr).map_err(corrupt)?;
    Ok(page)
}

/// One new page file being written (`{id:016x}.mpg.tmp` until [`PageWriter::finish`]). Its pages
/// are readable only by operations given this writer (so several `apply`s can chain in one
/// writer) until `finish` publishes the file; a root pointing into it must not be published
/// before that. Dropping an unfinished writer removes its temp file.
pub struct PageWriter {
    dir: PathBuf,
    file_id: u64,
    tmp: PathBuf,
    out: BufWriter<File>,
    end: u64,
    pages: u64,
    failed: Option<String>,
    published: bool,
}

impl PageWriter {
    /// Create a new temp page file with a random nonzero id and write its header (buffered).
    /// On error nothing is left behind.
    pub fn new(store: &PageStore) -> Result<PageWriter, TreeError> {
        let mut last_err = None;
        for _ in 0..16 {
            let id = rand::random::<u64>();
            if id == 0 || store.file_path(id).exists() {
                continue;
            }
            let tmp = store.temp_path(id);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    let mut w = PageWriter {
                        dir: store.dir.clone(),
                        file_id: id,
                        tmp,
                        out: BufWriter::with_capacity(WRITE_BUFFER, f),
                        end: 0,
                        pages: 0,
                        failed: None,
                        published: false,
                    };
                    w.append(&file_header(id))?;
                    return Ok(w);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last_err = Some(e);
                }
                Err(e) => return Err(TreeError::io(&tmp, e)),
            }
        }
        let e = last_err.unwrap_or_else(|| io::Error::other("no free page file id"));
        Err(TreeError::io(&store.dir, e))
    }

    /// The id the file will be published under.
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Pages written so far.
    pub fn pages_written(&self) -> u64 {
        self.pages
    }

    /// Bytes of the file so far (header included).
    pub fn bytes_written(&self) -> u64 {
        self.end
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), TreeError> {
        if let Some(cause) = &self.failed {
            return Err(TreeError::Poisoned {
                path: self.tmp.clone(),
                cause: cause.clone(),
            });
        }
        if let Err(e) = self.out.write_all(bytes) {
            self.failed = Some(e.to_string());
            return Err(TreeError::io(&self.tmp, e));
        }
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Append `page` (buffered) and return its pointer. A failure poisons the writer: no later
    /// write or finish succeeds, and dropping it removes the temp file.
    pub fn write(&mut self, page: &Page) -> Result<PagePtr, TreeError> {
        let ptr = PagePtr {
            file: self.file_id,
            offset: self.end,
            len: page.bytes().len() as u32,
            hash: page.hash(),
        };
        self.append(page.bytes())?;
        self.pages += 1;
        Ok(ptr)
    }

    /// Read back a page this writer wrote (checked like any read; not cached).
    pub(crate) fn read_own(&mut self, ptr: &PagePtr) -> Result<Arc<Page>, TreeError> {
        if ptr.offset + ptr.len as u64 > self.end {
            return Err(TreeError::Corrupt {
                path: self.tmp.clone(),
                offset: ptr.offset,
                reason: format!(
                    "pointer past the end ({}) of the file being written",
                    self.end
                ),
            });
        }
        if let Err(e) = self.out.flush() {
            self.failed = Some(e.to_string());
            return Err(TreeError::io(&self.tmp, e));
        }
        read_checked(self.out.get_ref(), &self.tmp, ptr).map(Arc::new)
    }

    /// Make the file durable and publish it: flush, fsync, rename to `{id:016x}.mpg`, fsync the
    /// directory. Returns the file id, or `None` if no page was written (then no file is left).
    /// Only after `Ok` may a root pointing into this file be published. On error before the
    /// rename the temp file is removed; if only the directory fsync failed, the file exists
    /// under its final name but may not survive a crash, and nothing may point into it (GC
    /// removes it as unreferenced).
    pub fn finish(mut self) -> Result<Option<u64>, TreeError> {
        if let Some(cause) = &self.failed {
            return Err(TreeError::Poisoned {
                path: self.tmp.clone(),
                cause: cause.clone(),
            });
        }
        if self.pages == 0 {
            // Drop removes the temp file.
            return Ok(None);
        }
        let tmp = self.tmp.clone();
        self.out.flush().map_err(|e| TreeError::io(&tmp, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| TreeError::io(&tmp, e))?;
        let final_path = self.dir.join(format!("{:016x}.mpg", self.file_id));
        fs::rename(&tmp, &final_path).map_err(|e| TreeError::io(&final_path, e))?;
        self.published = true;
        fsutil::fsync_dir(&self.dir).map_err(|e| TreeError::io(&self.dir, e))?;
        Ok(Some(self.file_id))
    }
}

impl Drop for PageWriter {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
